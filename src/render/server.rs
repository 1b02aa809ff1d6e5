//! The renderd wire protocol, served: Apache's mod_tile, `render_list` and
//! `render_expired` can use tilepipe's renderer as their backend.
//!
//! Requests go into the same [`RenderQueue`] as the HTTP server's and the
//! expiry stage's, so de-duplication and priorities span every source. The
//! codec is [`crate::renderd`], shared with the expiry stage's client.
//!
//! | command | queue priority | reply |
//! |---|---|---|
//! | `RenderPrio` | missing, waited for | `Done` / `NotDone` when written |
//! | `Render`, `RenderLow` | dirty, waited for | `Done` / `NotDone` when written |
//! | `RenderBulk` | background | `Done` / `NotDone` when written |
//! | `Dirty` | expired | `NotDone` at once (renderd's answer) |
//! | out of the style's zooms or the world | — | `Ignore` |
//! | unknown style, unknown command, queue full | — | `NotDone` at once |
//!
//! renderd never answers a request for an unknown style; tilepipe says
//! `NotDone` so the client need not wait for its timeout. Several requests
//! may be outstanding on one connection; replies come as renders finish,
//! echoing each request as renderd does.

use super::config::{parse_socket_mode, RenderConfig, StyleConfig};
use super::queue::{Outcome, Priority, RenderKey, RenderQueue, Submitted};
use crate::renderd::{read_message, write_message, Command, Request};
use crate::tile::Tile;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

/// The zoom range each style accepts, by name.
#[derive(Debug, Clone)]
struct StyleZooms(HashMap<String, (u8, u8)>);

impl StyleZooms {
    fn new(styles: &[StyleConfig]) -> StyleZooms {
        StyleZooms(
            styles
                .iter()
                .map(|s| (s.name.clone(), (s.min_zoom, s.max_zoom)))
                .collect(),
        )
    }
}

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Reply at once with this command.
    Reply(Command),
    /// Queue the metatile; reply when it is written when `wait`.
    Queue {
        key: RenderKey,
        priority: Priority,
        wait: bool,
    },
}

fn decide(request: &Request, styles: &StyleZooms) -> Decision {
    let (priority, wait) = match request.command {
        Command::RenderPrio => (Priority::MissingWaited, true),
        Command::Render | Command::RenderLow => (Priority::DirtyWaited, true),
        Command::RenderBulk => (Priority::Background, true),
        Command::Dirty => (Priority::Expired, false),
        _ => return Decision::Reply(Command::NotDone),
    };
    let Some(&(min_zoom, max_zoom)) = styles.0.get(&request.style) else {
        return Decision::Reply(Command::NotDone);
    };
    let tile = match request.tile() {
        Some(tile) if (min_zoom..=max_zoom).contains(&tile.z) => tile,
        _ => return Decision::Reply(Command::Ignore),
    };
    Decision::Queue {
        key: RenderKey {
            style: request.style.clone(),
            metatile: Tile::metatile(tile),
        },
        priority,
        wait,
    }
}

/// Replies one connection may owe at once: requests waiting for a render
/// plus replies not yet written. At the bound the server stops reading
/// from the connection, so a client that sends without reading is held
/// back by its socket instead of growing a queue here. mod_tile,
/// render_list and render_expired keep one request in flight per
/// connection.
pub const MAX_PENDING_REPLIES: usize = 64;

/// How long one reply may take to write before the client is taken for
/// gone (it stopped reading) and the connection is closed.
const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Listening sockets of the protocol server.
pub struct ProtocolListeners {
    unix: Option<UnixSocket>,
    tcp: Option<TcpListener>,
    max_connections: usize,
}

/// The bound unix socket and the file it is, so only that file is
/// removed at the end.
struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    file: (u64, u64),
}

impl ProtocolListeners {
    /// Binds the endpoints of `settings` (`render.socket`, `render.tcp`).
    ///
    /// The unix socket gets `socket_mode` and `socket_group` before it
    /// appears at its path (bound under a temporary name, then renamed), so
    /// it is never reachable with looser permissions. A stale socket at
    /// the path is replaced; anything else there (a file, a directory, a
    /// symlink) is an error naming the path, as is a socket some other
    /// server still answers on.
    pub async fn bind(settings: &RenderConfig) -> std::io::Result<Self> {
        let unix = match &settings.socket {
            Some(path) => Some(bind_unix(path, settings)?),
            None => None,
        };
        let tcp = match &settings.tcp {
            Some(address) => Some(TcpListener::bind(address).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("renderd protocol on {address}: {e}"))
            })?),
            None => None,
        };
        Ok(ProtocolListeners {
            unix,
            tcp,
            max_connections: settings.max_connections.max(1),
        })
    }

    /// Whether neither `render.socket` nor `render.tcp` is set: nothing to
    /// serve.
    pub fn is_empty(&self) -> bool {
        self.unix.is_none() && self.tcp.is_none()
    }

    /// The bound TCP address (tests bind port 0).
    pub fn tcp_address(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accepts connections until `shutdown` completes; each connection is
    /// served on its own task, at most `max_connections` at once.
    pub async fn serve(
        self,
        queue: Arc<RenderQueue>,
        styles: &[StyleConfig],
        shutdown: impl Future<Output = ()>,
    ) {
        let styles = Arc::new(StyleZooms::new(styles));
        let ProtocolListeners {
            unix,
            tcp,
            max_connections,
        } = self;
        let slots = Arc::new(Semaphore::new(max_connections));
        let refused = RefusedLog::default();
        if let Some(socket) = &unix {
            info!(socket = %socket.path.display(), max_connections, "renderd protocol listening");
        }
        if let Some(listener) = &tcp {
            if let Ok(address) = listener.local_addr() {
                info!(%address, max_connections, "renderd protocol listening");
            }
        }
        let accept_unix = async {
            let Some(socket) = &unix else {
                return std::future::pending().await;
            };
            loop {
                match socket.listener.accept().await {
                    Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            tokio::spawn(connection(stream, queue.clone(), styles.clone(), slot));
                        }
                        Err(_) => refused.note(max_connections),
                    },
                    Err(e) => accept_failed(e).await,
                }
            }
        };
        let accept_tcp = async {
            let Some(listener) = &tcp else {
                return std::future::pending().await;
            };
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(connection(stream, queue.clone(), styles.clone(), slot));
                        }
                        Err(_) => refused.note(max_connections),
                    },
                    Err(e) => accept_failed(e).await,
                }
            }
        };
        tokio::select! {
            _ = accept_unix => {}
            _ = accept_tcp => {}
            _ = shutdown => {}
        }
        if let Some(socket) = unix {
            // Another instance may have taken the path over since.
            if file_id(&socket.path).ok() == Some(socket.file) {
                let _ = std::fs::remove_file(&socket.path);
            }
        }
    }
}

/// Connections closed at the cap (the stream is dropped at once, so the
/// client sees EOF), logged at most every 10 s with a count.
#[derive(Default)]
struct RefusedLog(Mutex<(u64, Option<Instant>)>);

impl RefusedLog {
    fn note(&self, max_connections: usize) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        if state
            .1
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            warn!(
                refused = state.0,
                "renderd protocol: {max_connections} connections open (render.max_connections); closing new ones"
            );
            *state = (0, Some(Instant::now()));
        }
    }
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path)?;
    Ok((metadata.dev(), metadata.ino()))
}

/// Binds the unix socket: see [`ProtocolListeners::bind`].
fn bind_unix(path: &Path, settings: &RenderConfig) -> std::io::Result<UnixSocket> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let mode = parse_socket_mode(&settings.socket_mode).map_err(invalid)?;
    let group = match &settings.socket_group {
        Some(group) => Some(group_id(group).map_err(invalid)?),
        None => None,
    };
    let (Some(dir), Some(_)) = (path.parent(), path.file_name()) else {
        return Err(invalid(format!(
            "render.socket {}: not a file path",
            path.display()
        )));
    };
    // A socket left by a crash is replaced; nothing else is ever removed.
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "render.socket {}: another server is listening on it",
                        path.display()
                    ),
                ));
            }
        }
        Ok(metadata) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "render.socket {}: exists and is not a socket ({}); not removing it",
                    path.display(),
                    file_kind(&metadata.file_type())
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(e, path)),
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
    // Short, so a path near the 108-byte sun_path limit still fits.
    let temp = dir.join(format!(".tp{}", std::process::id()));
    if std::fs::symlink_metadata(&temp).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(&temp);
    }
    let listener = UnixListener::bind(&temp).map_err(|e| with_path(e, &temp))?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| match group {
            Some(gid) => std::os::unix::fs::chown(&temp, None, Some(gid)),
            None => Ok(()),
        })
        .map_err(|e| with_path(e, &temp))
        .and_then(|()| std::fs::rename(&temp, path).map_err(|e| with_path(e, path)));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let file = file_id(path).map_err(|e| with_path(e, path))?;
    info!(
        socket = %path.display(),
        mode = format!("{mode:04o}"),
        group = settings.socket_group.as_deref().unwrap_or("(the process's)"),
        "renderd protocol socket; clients need write permission on it"
    );
    Ok(UnixSocket {
        listener,
        path: path.to_path_buf(),
        file,
    })
}

fn file_kind(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_file() {
        "a regular file"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else {
        "a device"
    }
}

/// A group by number, or by name from /etc/group (groups only known to
/// NSS services such as LDAP need their number).
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("render.socket_group {group:?}: /etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            format!("render.socket_group: no group {group:?} in /etc/group (give its number)")
        })
}

/// Too many open files and the like: log, pause briefly, keep accepting.
async fn accept_failed(e: std::io::Error) {
    warn!("renderd protocol: accept failed: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// A reply on its way: ready at once, or when its render is answered. It
/// carries the connection's pending-reply permit until it is written.
type PendingReply = Pin<Box<dyn Future<Output = (Request, OwnedSemaphorePermit)> + Send>>;

/// Serves one client: reads requests while it owes fewer than
/// [`MAX_PENDING_REPLIES`] replies, and writes each reply when it is ready
/// (a writer task owns the write half). `_slot` is its place under
/// `max_connections`, held until the last reply is written.
async fn connection<S>(
    stream: S,
    queue: Arc<RenderQueue>,
    styles: Arc<StyleZooms>,
    _slot: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_REPLIES));
    // Unbounded in type only: every item holds one of `pending`'s permits.
    let (replies, outgoing) = mpsc::unbounded_channel::<PendingReply>();
    let writer_task = tokio::spawn(write_replies(writer, outgoing));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            break;
        };
        let request = match read_message(&mut reader).await {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) => {
                debug!("renderd protocol: closing connection: {e}");
                break;
            }
        };
        debug!(%request, "renderd protocol request");
        let answer = match decide(&request, &styles) {
            Decision::Reply(command) => Err(command),
            Decision::Queue {
                key,
                priority,
                wait,
            } => match queue.submit(key, priority, wait) {
                (Submitted::Rejected, _) | (_, None) => Err(Command::NotDone),
                (_, Some(receiver)) => Ok(receiver),
            },
        };
        let reply: PendingReply = match answer {
            Err(command) => Box::pin(std::future::ready((request.reply(command), permit))),
            Ok(receiver) => Box::pin(async move {
                let command = match receiver.await {
                    Ok(Outcome::Rendered) => Command::Done,
                    _ => Command::NotDone,
                };
                (request.reply(command), permit)
            }),
        };
        if replies.send(reply).is_err() {
            // The writer gave up: the client is gone or stopped reading.
            break;
        }
    }
    // Replies still pending are written as their renders finish; the
    // writer stops when they are all out.
    drop(replies);
    let _ = writer_task.await;
}

/// Writes replies in the order they become ready until the reader is done
/// and nothing is pending, or a write fails or stalls. Dropping what is
/// left drops its render receivers, so the queue can prune those waiters.
async fn write_replies<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut incoming: mpsc::UnboundedReceiver<PendingReply>,
) {
    let mut waiting = FuturesUnordered::new();
    let mut reading = true;
    loop {
        let (reply, permit) = tokio::select! {
            next = incoming.recv(), if reading => {
                match next {
                    Some(reply) => waiting.push(reply),
                    None => reading = false,
                }
                continue;
            }
            Some(ready) = waiting.next(), if !waiting.is_empty() => ready,
            else => break,
        };
        match tokio::time::timeout(REPLY_WRITE_TIMEOUT, write_message(&mut writer, &reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!("renderd protocol: client went away before its reply: {e}");
                break;
            }
            Err(_) => {
                warn!(
                    "renderd protocol: a client has not read its replies for {}s; closing it",
                    REPLY_WRITE_TIMEOUT.as_secs()
                );
                break;
            }
        }
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::renderd::ProtocolVersion;

    fn styles() -> StyleZooms {
        StyleZooms::new(&[StyleConfig {
            name: "osm".into(),
            min_zoom: 2,
            max_zoom: 18,
            ..StyleConfig::default()
        }])
    }

    fn request(command: Command, z: i32, x: i32, y: i32, style: &str) -> Request {
        Request {
            version: ProtocolVersion::V2,
            command,
            x,
            y,
            z,
            style: style.into(),
            mimetype: "image/png".into(),
            options: String::new(),
        }
    }

    #[test]
    fn commands_map_to_priorities() {
        let styles = styles();
        let key = RenderKey {
            style: "osm".into(),
            metatile: crate::tile::Metatile { z: 5, x: 8, y: 16 },
        };
        let cases = [
            (Command::RenderPrio, Priority::MissingWaited, true),
            (Command::Render, Priority::DirtyWaited, true),
            (Command::RenderLow, Priority::DirtyWaited, true),
            (Command::RenderBulk, Priority::Background, true),
            (Command::Dirty, Priority::Expired, false),
        ];
        for (command, priority, wait) in cases {
            assert_eq!(
                decide(&request(command, 5, 9, 17, "osm"), &styles),
                Decision::Queue {
                    key: key.clone(),
                    priority,
                    wait
                },
                "{command}"
            );
        }
    }

    #[test]
    fn out_of_range_is_ignored_and_unknown_is_not_done() {
        let styles = styles();
        let cases = [
            (Command::Render, 1, 0, "osm", Command::Ignore),
            (Command::Render, 19, 0, "osm", Command::Ignore),
            (Command::Render, 3, 8, "osm", Command::Ignore),
            (Command::Render, 3, -1, "osm", Command::Ignore),
            (Command::Render, 3, 0, "x", Command::NotDone),
            (Command::Done, 3, 0, "osm", Command::NotDone),
            (Command::Unknown(42), 3, 0, "osm", Command::NotDone),
        ];
        for (command, z, x, style, reply) in cases {
            assert_eq!(
                decide(&request(command, z, x, 0, style), &styles),
                Decision::Reply(reply),
                "{command} z{z} x{x} {style}"
            );
        }
    }
}
