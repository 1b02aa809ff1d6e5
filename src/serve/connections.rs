//! Accepting and keeping HTTP/1 connections, so that slow and idle
//! clients cannot hold the server.
//!
//! `axum::serve` has no header or idle timeout and no connection cap, so
//! the server drives hyper's connections itself:
//! - at most `serve.max_connections` are open; at the cap the accept loop
//!   waits for one to close (new clients queue in the kernel's backlog, as
//!   with Apache's `MaxRequestWorkers`);
//! - a watchdog per connection closes it when a request head is not
//!   complete `header_read_timeout` after the connection's start or the
//!   head's first byte (Apache's `RequestReadTimeout header=`), or when no
//!   request is in flight and no byte has moved for `keepalive_timeout`.
//!   hyper's own `header_read_timeout` is not used: it also runs while an
//!   idle keep-alive connection waits for its next request
//!   (`poll_read_head` in hyper's `proto/h1/conn.rs`), which would cut
//!   every idle connection at the header timeout;
//! - on shutdown the listener closes, every connection is asked to finish
//!   its request in flight and close (hyper's `graceful_shutdown`), and
//!   the server returns once all are closed.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

/// The timeouts and the cap, from `serve:`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_read: Duration,
    pub keepalive: Duration,
    pub max_connections: usize,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// A request head was not complete in time.
    Header,
    /// Idle keep-alive connection.
    Idle,
}

/// What one connection's watchdog knows; updated by the socket wrapper
/// ([`Watched`]) and the request service.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written.
    last_io: AtomicU64,
    /// Milliseconds after `start`, plus one, at which the request head
    /// being read began; 0 = no head being read.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
    /// Wakes the watchdog when its deadline may have moved earlier.
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            // A new connection must send its first head in time too.
            head_started: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn bytes_read(&self) {
        let now = self.now_ms();
        self.last_io.store(now, SeqCst);
        if self.in_flight.load(SeqCst) == 0
            && self
                .head_started
                .compare_exchange(0, now + 1, SeqCst, SeqCst)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn bytes_written(&self) {
        self.last_io.store(self.now_ms(), SeqCst);
    }

    /// hyper parsed a whole head and calls the service.
    fn request_began(&self) {
        self.in_flight.fetch_add(1, SeqCst);
        self.head_started.store(0, SeqCst);
    }

    fn request_ended(&self) {
        self.last_io.store(self.now_ms(), SeqCst);
        self.in_flight.fetch_sub(1, SeqCst);
        self.changed.notify_one();
    }

    /// When the connection is to be closed if nothing happens; `None`
    /// while a request is in flight (its handler bounds its own time).
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Expired)> {
        if self.in_flight.load(SeqCst) > 0 {
            return None;
        }
        let ms = |v: u64| self.start + Duration::from_millis(v);
        match self.head_started.load(SeqCst) {
            0 => Some((
                ms(self.last_io.load(SeqCst)) + limits.keepalive,
                Expired::Idle,
            )),
            started => Some((ms(started - 1) + limits.header_read, Expired::Header)),
        }
    }

    /// Completes when the connection has overstayed a deadline.
    async fn watch(&self, limits: Limits) -> Expired {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the deadline is read: a change in between
            // still wakes us.
            notified.as_mut().enable();
            match self.deadline(&limits) {
                None => notified.await,
                Some((at, why)) => {
                    if at <= Instant::now() {
                        return why;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = notified => {}
                    }
                }
            }
        }
    }
}

/// Ends the request in the watchdog's books when the service future
/// completes or is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The TCP stream, reporting bytes moved to the watchdog.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.tcp).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Accept errors that concern one connection only (the client gave up
/// before it was accepted): go on at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// the requests in flight finish.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut warned_full: Option<Instant> = None;
    'accept: loop {
        if slots.available_permits() == 0
            && warned_full.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                max_connections = max,
                "serve.max_connections connections are open: new ones wait until one closes"
            );
            warned_full = Some(Instant::now());
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut shutdown => break 'accept,
        };
        let (tcp, peer) = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => break accepted,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors, mostly: wait for some to
                        // close instead of spinning (axum::serve does the same).
                        tracing::error!("serve: accept failed: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                _ = &mut shutdown => break 'accept,
            }
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(tcp, peer, router, limits, &mut stop).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it is closed.
    let _ = slots.acquire_many(max as u32).await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    stop: &mut watch::Receiver<bool>,
) {
    use tower::ServiceExt;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        tcp,
        activity: activity.clone(),
    });
    let in_service = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        in_service.request_began();
        let guard = InFlight(in_service.clone());
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(guard);
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // The watchdog times heads out (see the module documentation).
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let watchdog = activity.watch(limits);
    tokio::pin!(watchdog);
    let mut stopping = *stop.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "HTTP connection ended: {e}");
                }
                return;
            }
            why = &mut watchdog => {
                // Dropping the connection closes the socket.
                tracing::debug!(%peer, ?why, "closing a slow or idle HTTP connection");
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard limit,
/// once per process: every connection costs a descriptor, and the usual
/// soft limit of 1024 is below `serve.max_connections`' default.
/// Returns the soft limit now in force.
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    static RAISED: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *RAISED.get_or_init(|| match raise_nofile() {
        Ok((before, after)) => {
            tracing::info!(
                soft = after,
                was = before,
                "open-file limit (RLIMIT_NOFILE) set to the hard limit"
            );
            Some(after)
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit (RLIMIT_NOFILE): {e}");
            None
        }
    })
}

/// Soft limit before and after raising it to the hard one.
pub(crate) fn raise_nofile() -> io::Result<(u64, u64)> {
    let (before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if before < hard {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
    }
    Ok((before, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        if hard > 256 {
            rlimit::setrlimit(rlimit::Resource::NOFILE, 256, hard).unwrap();
        }
        let (_, after) = raise_nofile().unwrap();
        assert_eq!(after, hard);
    }

    #[test]
    fn deadlines_follow_the_request_cycle() {
        let limits = Limits {
            header_read: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            max_connections: 1,
        };
        let a = Activity::new();
        // A new connection has the header timeout to send its head.
        let (at, why) = a.deadline(&limits).unwrap();
        assert_eq!(why, Expired::Header);
        assert!(at <= a.start + Duration::from_secs(10));
        a.request_began();
        assert!(a.deadline(&limits).is_none());
        a.request_ended();
        assert_eq!(a.deadline(&limits).unwrap().1, Expired::Idle);
        // The first byte of the next head starts the header clock again.
        a.bytes_read();
        assert_eq!(a.deadline(&limits).unwrap().1, Expired::Header);
    }
}
