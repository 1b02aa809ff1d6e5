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

use super::config::StyleConfig;
use super::queue::{Outcome, Priority, RenderKey, RenderQueue, Submitted};
use crate::renderd::{read_message, write_message, Command, Request};
use crate::tile::Tile;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
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

/// Listening sockets of the protocol server.
pub struct ProtocolListeners {
    unix: Option<(UnixListener, PathBuf)>,
    tcp: Option<TcpListener>,
}

impl ProtocolListeners {
    /// Binds the configured endpoints. A Unix socket path is unlinked first
    /// and made writable by everyone (as renderd does, so Apache's user can
    /// connect); it is removed again when the server stops.
    pub async fn bind(socket: Option<&Path>, tcp: Option<&str>) -> std::io::Result<Self> {
        let unix = match socket {
            Some(path) => {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(with_path(e, path)),
                }
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
                }
                let listener = UnixListener::bind(path).map_err(|e| with_path(e, path))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| with_path(e, path))?;
                Some((listener, path.to_path_buf()))
            }
            None => None,
        };
        let tcp = match tcp {
            Some(address) => Some(TcpListener::bind(address).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("renderd protocol on {address}: {e}"))
            })?),
            None => None,
        };
        Ok(ProtocolListeners { unix, tcp })
    }

    pub fn is_empty(&self) -> bool {
        self.unix.is_none() && self.tcp.is_none()
    }

    /// The bound TCP address (tests bind port 0).
    pub fn tcp_address(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accepts connections until `shutdown` completes; each connection is
    /// served on its own task.
    pub async fn serve(
        self,
        queue: Arc<RenderQueue>,
        styles: &[StyleConfig],
        shutdown: impl Future<Output = ()>,
    ) {
        let styles = Arc::new(StyleZooms::new(styles));
        let ProtocolListeners { unix, tcp } = self;
        if let Some((_, path)) = &unix {
            info!(socket = %path.display(), "renderd protocol listening");
        }
        if let Some(listener) = &tcp {
            if let Ok(address) = listener.local_addr() {
                info!(%address, "renderd protocol listening");
            }
        }
        let accept_unix = async {
            let Some((listener, _)) = &unix else {
                return std::future::pending().await;
            };
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(stream, queue.clone(), styles.clone()));
                    }
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
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(connection(stream, queue.clone(), styles.clone()));
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        };
        tokio::select! {
            _ = accept_unix => {}
            _ = accept_tcp => {}
            _ = shutdown => {}
        }
        if let Some((_, path)) = unix {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Too many open files and the like: log, pause briefly, keep accepting.
async fn accept_failed(e: std::io::Error) {
    warn!("renderd protocol: accept failed: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// Serves one client: reads requests as they come and writes each reply
/// when it is ready (a writer task owns the write half).
async fn connection<S>(stream: S, queue: Arc<RenderQueue>, styles: Arc<StyleZooms>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (replies, mut outgoing) = mpsc::unbounded_channel::<Request>();
    let writer_task = tokio::spawn(async move {
        while let Some(reply) = outgoing.recv().await {
            if let Err(e) = write_message(&mut writer, &reply).await {
                debug!("renderd protocol: client went away before its reply: {e}");
                break;
            }
        }
    });
    loop {
        let request = match read_message(&mut reader).await {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) => {
                debug!("renderd protocol: closing connection: {e}");
                break;
            }
        };
        debug!(%request, "renderd protocol request");
        match decide(&request, &styles) {
            Decision::Reply(command) => {
                let _ = replies.send(request.reply(command));
            }
            Decision::Queue {
                key,
                priority,
                wait,
            } => {
                let (submitted, receiver) = queue.submit(key, priority, wait);
                match (submitted, receiver) {
                    (Submitted::Rejected, _) | (_, None) => {
                        let _ = replies.send(request.reply(Command::NotDone));
                    }
                    (_, Some(receiver)) => {
                        let replies = replies.clone();
                        tokio::spawn(async move {
                            let command = match receiver.await {
                                Ok(Outcome::Rendered) => Command::Done,
                                _ => Command::NotDone,
                            };
                            let _ = replies.send(request.reply(command));
                        });
                    }
                }
            }
        }
    }
    // Replies still pending are dropped with the channel once their
    // renders finish; the writer stops when the last sender is gone.
    drop(replies);
    let _ = writer_task.await;
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
