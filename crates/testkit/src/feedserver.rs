//! A replication feed server for tests, with publication control and
//! fault injection.
//!
//! [`FeedServer`] serves a feed directory (as [`crate::feedgen::FeedWriter`]
//! writes it) over real HTTP on 127.0.0.1. Tests decide how far the feed is
//! published ([`FeedServer::set_published`]) and make requests fail, either
//! on a script ([`FeedServer::inject`]) or at random
//! ([`FeedServer::set_random_faults`]), then check what the client asked for
//! ([`FeedServer::request_log`]).
//!
//! The server runs on its own thread and tokio runtime, so it keeps serving
//! while a test blocks (e.g. a synchronous client, or a `#[tokio::test]`
//! whose single thread waits on something else).

use anyhow::{anyhow, bail, Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tilepipe::replication::feed::{parse_sequence_path, sequence_path};
use tilepipe::replication::ReplicationState;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// A way to answer a request badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 404, as if the file did not exist.
    NotFound,
    /// This status (500, 502, 503, ...) with a short HTML body.
    ServerError(u16),
    /// 200 with the first half of the body only. Content-Length matches
    /// what is sent, so HTTP is fine but the gzip or state file is cut.
    Truncated,
    /// 200 with a few bytes in the middle of the body inverted. Meant for
    /// `.osc.gz` files, whose CRC catches it.
    CorruptGzip,
    /// The right answer, after this delay (make it longer than the
    /// client's timeout).
    Slow(Duration),
    /// The TCP connection is reset (SO_LINGER 0, then closed) without any
    /// response.
    ResetConnection,
    /// The top-level `state.txt` answers the previous sequence's state, as
    /// a stale mirror would. Other paths are served normally.
    StateBackwards,
}

/// Which requests a scripted fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// Every request.
    Any,
    /// The top-level `state.txt`.
    TopLevelState,
    /// `AAA/BBB/CCC.osc.gz` of this sequence.
    Diff(u64),
    /// `AAA/BBB/CCC.state.txt` of this sequence.
    SequenceState(u64),
    /// Every `.osc.gz`.
    AnyDiff,
    /// A path relative to the feed root (`000/000/002.osc.gz`); `*`
    /// matches any run of characters (`*.state.txt`).
    Pattern(String),
}

impl From<&str> for FaultTarget {
    fn from(pattern: &str) -> Self {
        FaultTarget::Pattern(pattern.trim_start_matches('/').to_string())
    }
}

impl From<String> for FaultTarget {
    fn from(pattern: String) -> Self {
        FaultTarget::from(pattern.as_str())
    }
}

impl FaultTarget {
    fn matches(&self, path: &str) -> bool {
        match self {
            FaultTarget::Any => true,
            FaultTarget::TopLevelState => path == "state.txt",
            FaultTarget::Diff(n) => path == format!("{}.osc.gz", sequence_path(*n)),
            FaultTarget::SequenceState(n) => path == format!("{}.state.txt", sequence_path(*n)),
            FaultTarget::AnyDiff => path.ends_with(".osc.gz"),
            FaultTarget::Pattern(pattern) => glob_matches(pattern, path),
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Relative to the feed root, e.g. `state.txt`, `000/000/001.osc.gz`.
    pub path: String,
    /// Status sent; `None` when the connection was reset instead.
    pub status: Option<u16>,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

impl LoggedRequest {
    /// A complete, correct 200 answer.
    pub fn is_clean_success(&self) -> bool {
        self.status == Some(200) && self.fault.is_none()
    }
}

#[derive(Debug)]
struct ScriptedFault {
    target: FaultTarget,
    fault: Fault,
    remaining: usize,
}

#[derive(Debug)]
struct RandomFaults {
    rate: f64,
    rng: ChaCha8Rng,
    kinds: Vec<Fault>,
}

#[derive(Debug, Default)]
struct ServerState {
    /// `None`: everything on disk is published.
    published: Option<u64>,
    scripted: Vec<ScriptedFault>,
    random: Option<RandomFaults>,
    log: Vec<LoggedRequest>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: Mutex<ServerState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The default mix of random faults: what a flaky mirror or network does
/// without lying about content. Slowness and stale states are left out,
/// since what counts as slow depends on the client's timeout; set them with
/// [`FeedServer::set_random_fault_kinds`].
pub fn default_random_fault_kinds() -> Vec<Fault> {
    vec![
        Fault::ServerError(500),
        Fault::ServerError(502),
        Fault::ServerError(503),
        Fault::Truncated,
        Fault::CorruptGzip,
        Fault::ResetConnection,
    ]
}

/// The fault-injecting feed server. See the module documentation.
pub struct FeedServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FeedServer {
    /// Serves `dir` on a free port of 127.0.0.1.
    pub async fn start(dir: impl Into<PathBuf>) -> Result<FeedServer> {
        Self::start_blocking(dir)
    }

    /// [`FeedServer::start`] for code without an async context (binding
    /// and spawning the server thread do not block).
    pub fn start_blocking(dir: impl Into<PathBuf>) -> Result<FeedServer> {
        Self::start_on(dir, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves `dir` on `addr` (port 0 picks a free one).
    pub fn start_on(dir: impl Into<PathBuf>, addr: SocketAddr) -> Result<FeedServer> {
        let dir = dir.into();
        if !dir.is_dir() {
            bail!("feed directory {} does not exist", dir.display());
        }
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            dir,
            state: Mutex::new(ServerState::default()),
        });
        let (stop, stopped) = watch::channel(false);
        let app = Router::new()
            .fallback(serve_request)
            .with_state(shared.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("feed-server-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => accept_connections(listener, app, stopped).await,
                        Err(e) => eprintln!("feed server: {e}"),
                    }
                });
            })?;
        Ok(FeedServer {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// Base URL of the feed, ending in `/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The address it listens on, with the port actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The feed directory it serves.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Publishes up to `sequence`: the top-level `state.txt` becomes that
    /// sequence's state file, and every sequence file above it answers 404.
    pub fn set_published(&self, sequence: u64) {
        self.shared.lock().published = Some(sequence);
    }

    /// Back to the default: everything in the directory is published and
    /// the top-level `state.txt` is the one on disk.
    pub fn publish_all(&self) {
        self.shared.lock().published = None;
    }

    /// The sequence the top-level `state.txt` currently answers.
    pub fn published(&self) -> Result<u64> {
        let published = self.shared.lock().published;
        match published {
            Some(sequence) => Ok(sequence),
            None => Ok(read_state(&self.shared.dir.join("state.txt"))?.sequence),
        }
    }

    /// Publishes one more sequence; fails if its files are not on disk.
    pub fn publish_next(&self) -> Result<u64> {
        let next = self.published()? + 1;
        let state_file = self
            .shared
            .dir
            .join(format!("{}.state.txt", sequence_path(next)));
        if !state_file.exists() {
            bail!(
                "cannot publish {next}: {} does not exist",
                state_file.display()
            );
        }
        self.set_published(next);
        Ok(next)
    }

    /// Makes the next `times` requests matching `target` fail with `fault`.
    /// Scripted faults take precedence over random ones, in the order they
    /// were injected.
    pub fn inject(&self, target: impl Into<FaultTarget>, fault: Fault, times: usize) {
        self.shared.lock().scripted.push(ScriptedFault {
            target: target.into(),
            fault,
            remaining: times,
        });
    }

    /// Makes any request fail with probability `rate` (0 turns this off),
    /// with a fault drawn from the current kinds (default
    /// [`default_random_fault_kinds`]). Deterministic for a given `seed`
    /// and request order.
    pub fn set_random_faults(&self, rate: f64, seed: u64) {
        let mut state = self.shared.lock();
        let kinds = state
            .random
            .take()
            .map(|r| r.kinds)
            .unwrap_or_else(default_random_fault_kinds);
        state.random = Some(RandomFaults {
            rate,
            rng: ChaCha8Rng::seed_from_u64(seed),
            kinds,
        });
    }

    /// The faults random injection draws from.
    pub fn set_random_fault_kinds(&self, kinds: Vec<Fault>) {
        let mut state = self.shared.lock();
        match state.random.as_mut() {
            Some(random) => random.kinds = kinds,
            None => {
                state.random = Some(RandomFaults {
                    rate: 0.0,
                    rng: ChaCha8Rng::seed_from_u64(0),
                    kinds,
                })
            }
        }
    }

    /// Removes scripted faults and turns random faults off.
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.scripted.clear();
        if let Some(random) = state.random.as_mut() {
            random.rate = 0.0;
        }
    }

    /// How many requests `path` (relative to the feed root; a leading `/`
    /// is ignored) has received, whatever the outcome.
    pub fn requests(&self, path: &str) -> usize {
        let path = path.trim_start_matches('/');
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// How many requests for `path` got a complete, correct 200 answer.
    pub fn successes(&self, path: &str) -> usize {
        let path = path.trim_start_matches('/');
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.path == path && r.is_clean_success())
            .count()
    }

    /// Every request so far, in order.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear_request_log(&self) {
        self.shared.lock().log.clear();
    }

    /// Stops accepting, closes open connections and waits for the server
    /// thread. Also done on drop.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Lets a request handler drop its own connection without answering.
#[derive(Clone)]
struct ConnectionReset {
    fd: RawFd,
    notify: Arc<Notify>,
}

impl ConnectionReset {
    /// Arms an RST on close and asks the connection task to close now. Runs
    /// inside the connection's own future, so `fd` is still open.
    fn reset(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: fd belongs to the live connection; setsockopt reads the
        // struct only during the call.
        unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        self.notify.notify_one();
    }
}

/// A hand-written accept loop rather than `axum::serve`, so that a handler
/// can reset its own connection ([`Fault::ResetConnection`]).
async fn accept_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(serve_connection(stream, app.clone(), stop.clone()));
            }
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let reset = ConnectionReset {
        fd: stream.as_raw_fd(),
        notify: Arc::new(Notify::new()),
    };
    let reset_requested = reset.notify.clone();
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(reset.clone());
        app.clone().oneshot(request.map(Body::new))
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    // Leaving the select drops the connection, closing the socket.
    tokio::select! {
        _ = connection => {}
        _ = reset_requested.notified() => {}
        _ = stop.changed() => {}
    }
}

async fn serve_request(
    State(shared): State<Arc<Shared>>,
    Extension(reset): Extension<ConnectionReset>,
    request: Request,
) -> Response {
    let path = request.uri().path().trim_start_matches('/').to_string();
    let (fault, published) = {
        let mut state = shared.lock();
        (choose_fault(&mut state, &path), state.published)
    };
    let (status, response) = match &fault {
        Some(Fault::ResetConnection) => (None, None),
        _ => {
            let (status, response) = answer(&shared.dir, &path, published, fault.as_ref());
            (Some(status.as_u16()), Some(response))
        }
    };
    // Logged before any delay: a client that gives up still shows.
    shared.lock().log.push(LoggedRequest {
        path,
        status,
        fault: fault.clone(),
    });
    match (fault, response) {
        (Some(Fault::Slow(delay)), Some(response)) => {
            tokio::time::sleep(delay).await;
            response
        }
        (_, Some(response)) => response,
        (_, None) => {
            reset.reset();
            // The connection task drops this future along with the socket.
            std::future::pending::<()>().await;
            unreachable!("a reset connection is never answered");
        }
    }
}

/// The response to `path`, with `fault` applied (other than a reset).
fn answer(
    dir: &Path,
    path: &str,
    published: Option<u64>,
    fault: Option<&Fault>,
) -> (StatusCode, Response) {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            text(StatusCode::NOT_FOUND, "404 Not Found\n"),
        )
    };
    match fault {
        Some(Fault::NotFound) => return not_found(),
        Some(Fault::ServerError(code)) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (
                status,
                text(status, "<html><body><h1>Server error</h1></body></html>\n"),
            );
        }
        _ => {}
    }
    let backwards = fault == Some(&Fault::StateBackwards) && path == "state.txt";
    let body = match read_published(dir, path, published, backwards) {
        Ok(Some(body)) => body,
        Ok(None) => return not_found(),
        Err(e) => {
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            return (status, text(status, &format!("{e:#}\n")));
        }
    };
    let body = match fault {
        Some(Fault::Truncated) => body[..body.len() / 2].to_vec(),
        Some(Fault::CorruptGzip) => corrupt_middle(body),
        _ => body,
    };
    let content_type = if path.ends_with(".gz") {
        "application/gzip"
    } else {
        "text/plain; charset=utf-8"
    };
    (
        StatusCode::OK,
        ([(header::CONTENT_TYPE, content_type)], body).into_response(),
    )
}

/// The scripted fault for `path`, if one is left, else maybe a random one.
fn choose_fault(state: &mut ServerState, path: &str) -> Option<Fault> {
    if let Some(scripted) = state
        .scripted
        .iter_mut()
        .find(|s| s.remaining > 0 && s.target.matches(path))
    {
        scripted.remaining -= 1;
        let fault = scripted.fault.clone();
        state.scripted.retain(|s| s.remaining > 0);
        return Some(fault);
    }
    let random = state.random.as_mut()?;
    if random.kinds.is_empty()
        || random.rate <= 0.0
        || !random.rng.random_bool(random.rate.min(1.0))
    {
        return None;
    }
    let fault = random.kinds[random.rng.random_range(0..random.kinds.len())].clone();
    // Keep random faults meaningful for the file at hand.
    Some(match fault {
        Fault::CorruptGzip if !path.ends_with(".gz") => Fault::Truncated,
        Fault::StateBackwards if path != "state.txt" => Fault::ServerError(503),
        other => other,
    })
}

/// The bytes served for `path` under the publication limit, `None` for a
/// 404.
fn read_published(
    dir: &Path,
    path: &str,
    published: Option<u64>,
    backwards: bool,
) -> Result<Option<Vec<u8>>> {
    if path.is_empty()
        || path
            .split('/')
            .any(|part| part == ".." || part.starts_with('.'))
    {
        return Ok(None);
    }
    let file = if path == "state.txt" {
        let current = match published {
            Some(sequence) => sequence,
            None if backwards => read_state(&dir.join("state.txt"))?.sequence,
            None => return read_if_exists(&dir.join("state.txt")),
        };
        let sequence = if backwards {
            current.saturating_sub(1)
        } else {
            current
        };
        let older = dir.join(format!("{}.state.txt", sequence_path(sequence)));
        if backwards && !older.exists() {
            dir.join(format!("{}.state.txt", sequence_path(current)))
        } else {
            older
        }
    } else {
        if let (Some(sequence), Some(limit)) = (parse_sequence_path(path), published) {
            if sequence > limit {
                return Ok(None);
            }
        }
        dir.join(path)
    };
    read_if_exists(&file)
}

fn read_if_exists(file: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(file) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(anyhow!("cannot read {}: {e}", file.display())),
    }
}

fn read_state(path: &Path) -> Result<ReplicationState> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ReplicationState::parse(&text).with_context(|| format!("bad state file {}", path.display()))
}

/// Inverts up to 8 bytes from the middle of `body`.
fn corrupt_middle(mut body: Vec<u8>) -> Vec<u8> {
    let middle = body.len() / 2;
    let end = (middle + 8).min(body.len());
    for byte in &mut body[middle..end] {
        *byte = !*byte;
    }
    body
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// `*` matches any run of characters (including `/`); everything else
/// matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic greedy matching with backtracking to the last star.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("*.state.txt", "000/000/001.state.txt"));
        assert!(glob_matches("000/000/00*.osc.gz", "000/000/002.osc.gz"));
        assert!(glob_matches("state.txt", "state.txt"));
        assert!(!glob_matches("state.txt", "000/000/001.state.txt"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("*.gz", "a.gzip"));
    }

    #[test]
    fn targets() {
        assert!(FaultTarget::Diff(1002).matches("000/001/002.osc.gz"));
        assert!(!FaultTarget::Diff(1002).matches("000/001/002.state.txt"));
        assert!(FaultTarget::SequenceState(1002).matches("000/001/002.state.txt"));
        assert!(FaultTarget::TopLevelState.matches("state.txt"));
        assert!(FaultTarget::from("/000/*").matches("000/001/002.state.txt"));
    }

    #[test]
    fn corruption_changes_the_middle_only() {
        let body: Vec<u8> = (0..100).collect();
        let bad = corrupt_middle(body.clone());
        assert_eq!(bad[..50], body[..50]);
        assert_ne!(bad[50..58], body[50..58]);
        assert_eq!(bad[58..], body[58..]);
    }
}
