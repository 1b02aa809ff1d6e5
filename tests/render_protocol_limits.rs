//! The renderd protocol server under abuse and at start: bounded memory
//! for a client that floods requests and never reads, the connection cap,
//! the socket's mode and group, and what it refuses to delete.
//!
//! The server runs in this process over a render queue drained by a
//! stand-in worker (no Mapnik), so memory is this process's VmRSS. Its
//! own binary keeps the heavy render tests out of the measurement.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tilepipe::render::config::{RenderConfig, StyleConfig};
use tilepipe::render::queue::RenderQueue;
use tilepipe::render::server::ProtocolListeners;
use tilepipe::renderd::{read_message, Client, Command, Endpoint, Request};
use tilepipe::tile::Tile;

const STYLE: &str = "limits";

/// A protocol server on a unix socket in a temporary directory, its queue
/// rendered by a thread that "renders" each metatile in 2 ms.
struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
    queue: Arc<RenderQueue>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(max_connections: usize) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/renderd.sock");
        let settings = RenderConfig {
            socket: Some(socket.clone()),
            max_connections,
            ..Default::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listeners = runtime
            .block_on(ProtocolListeners::bind(&settings))
            .unwrap();
        let queue = Arc::new(RenderQueue::new(1000));
        let worker = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                while let Some(job) = queue.take() {
                    std::thread::sleep(Duration::from_millis(2));
                    queue.complete(&job, Ok(()));
                }
            })
        };
        let style = StyleConfig {
            name: STYLE.into(),
            min_zoom: 0,
            max_zoom: 20,
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = queue.clone();
        runtime.spawn(async move {
            listeners
                .serve(served, &[style], async {
                    let _ = stopped.await;
                })
                .await
        });
        Server {
            _dir: dir,
            socket,
            runtime,
            queue,
            stop: Some(stop),
            worker: Some(worker),
        }
    }

    /// One request on a new connection, answered within 10 s.
    fn ask(&self, request: &Request) -> Command {
        self.runtime.block_on(async {
            let mut client = Client::new(Endpoint::Unix(self.socket.clone()))
                .with_reply_timeout(Some(Duration::from_secs(10)));
            client.request(request).await.unwrap()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.queue.shutdown();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn vm_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

const FLOOD: u64 = 1_000_000;

/// Writes up to [`FLOOD`] requests made by `nth` on a new connection and
/// never reads. Returns the connection (kept open) and how many requests
/// went out before the writes stalled for half a second.
fn flood(socket: &Path, nth: impl Fn(u64) -> Request) -> (UnixStream, u64) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sent = 0;
    let mut chunk = Vec::new();
    while sent < FLOOD {
        chunk.clear();
        for i in sent..(sent + 1000).min(FLOOD) {
            chunk.extend(nth(i).encode().unwrap());
        }
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent = (sent + 1000).min(FLOOD);
    }
    (stream, sent)
}

#[test]
fn a_client_that_never_reads_is_held_back_and_others_are_served() {
    let server = Server::start(512);
    let tile = Tile::new(15, 17_000, 11_000).unwrap();
    assert_eq!(
        server.ask(&Request::new(Command::RenderPrio, tile, STYLE)),
        Command::Done
    );
    let before = vm_rss_kb();
    let started = Instant::now();
    // One metatile asked for over and over (v2, waited), and ever new
    // metatiles (v3, waited: the queue fills, the rest are refused with
    // NotDone), at the same time.
    let same = {
        let socket = server.socket.clone();
        std::thread::spawn(move || flood(&socket, |_| Request::new(Command::Render, tile, STYLE)))
    };
    let different = {
        let socket = server.socket.clone();
        std::thread::spawn(move || {
            flood(&socket, |i| {
                let tile =
                    Tile::new(20, (i as u32 * 8) % (1 << 20), (i as u32 / 131_072) * 8).unwrap();
                Request::new(Command::RenderPrio, tile, STYLE).with_v3_fields("image/png", "")
            })
        })
    };
    let (same_stream, same_sent) = same.join().unwrap();
    let (different_stream, different_sent) = different.join().unwrap();
    let grown = vm_rss_kb().saturating_sub(before);
    // Meanwhile another client is served, at once.
    let asked = Instant::now();
    let other = Tile::new(16, 34_000, 22_000).unwrap();
    assert_eq!(
        server.ask(&Request::new(Command::RenderPrio, other, STYLE)),
        Command::Done
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
    let grown = grown.max(vm_rss_kb().saturating_sub(before));
    eprintln!(
        "sent {same_sent} + {different_sent} requests in {:?}; VmRSS grew {grown} kB",
        started.elapsed()
    );
    assert!(
        grown < 50 * 1024,
        "the server's memory grew {grown} kB for two clients that never read"
    );
    assert!(
        same_sent < FLOOD && different_sent < FLOOD,
        "the server kept reading: {same_sent} and {different_sent} requests taken"
    );
    // A flooder that finally reads gets its replies, in order of readiness.
    same_stream.set_nonblocking(true).unwrap();
    let reply = server.runtime.block_on(async {
        let mut reader = tokio::net::UnixStream::from_std(same_stream).unwrap();
        tokio::time::timeout(Duration::from_secs(10), read_message(&mut reader)).await
    });
    let reply = reply.expect("a reply in time").unwrap().unwrap();
    assert_eq!((reply.z, reply.style.as_str()), (15, STYLE));
    assert!(matches!(reply.command, Command::Done | Command::NotDone));
    drop(different_stream);
}

#[test]
fn connections_over_the_cap_are_closed_at_once() {
    let server = Server::start(3);
    let unknown = Request::new(Command::Render, Tile::new(5, 1, 1).unwrap(), "nosuchstyle");
    let bytes = unknown.encode().unwrap();
    let served = |stream: &mut UnixStream| -> bool {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if stream.write_all(&bytes).is_err() {
            return false;
        }
        let mut reply = vec![0u8; bytes.len()];
        stream.read_exact(&mut reply).is_ok()
    };
    let mut open: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&server.socket).unwrap())
        .collect();
    for stream in &mut open {
        assert!(served(stream), "a connection under the cap is served");
    }
    // The fourth: closed as soon as accepted, the client sees EOF.
    let started = Instant::now();
    let mut fourth = UnixStream::connect(&server.socket).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(fourth.read(&mut byte).unwrap(), 0, "closed, not served");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A slot freed is a slot for the next client.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = UnixStream::connect(&server.socket).unwrap();
        if served(&mut next) {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bind(settings: &RenderConfig) -> std::io::Result<ProtocolListeners> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(ProtocolListeners::bind(settings))
}

/// A group this process may give files to and its gid: `nogroup` as root,
/// else the process's own.
fn some_group() -> (String, u32) {
    let own = std::fs::metadata("/proc/self").unwrap().gid();
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    let by = |want: &dyn Fn(&str, u32) -> bool| {
        groups.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let gid = fields.get(2)?.parse().ok()?;
            want(fields[0], gid).then(|| (fields[0].to_string(), gid))
        })
    };
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    root.then(|| by(&|name, _| name == "nogroup"))
        .flatten()
        .or_else(|| by(&|_, gid| gid == own))
        .expect("a group in /etc/group")
}

#[test]
fn socket_mode_and_group_are_configurable_with_a_safe_default() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("renderd.sock");
    let settings = RenderConfig {
        socket: Some(socket.clone()),
        ..Default::default()
    };
    // Default: owner and group only, not renderd's world-writable socket.
    let listeners = bind(&settings).unwrap();
    let metadata = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
    assert_eq!(
        metadata.gid(),
        std::fs::metadata("/proc/self").unwrap().gid()
    );
    drop(listeners);

    let (group, gid) = some_group();
    let settings = RenderConfig {
        socket_mode: "0600".into(),
        socket_group: Some(group.clone()),
        ..settings
    };
    let listeners = bind(&settings).unwrap();
    let metadata = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert_eq!(metadata.gid(), gid, "group {group}");
    // No temporary name is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["renderd.sock"]);
    drop(listeners);
    // By number too.
    let numeric = RenderConfig {
        socket_group: Some(gid.to_string()),
        ..settings.clone()
    };
    drop(bind(&numeric).unwrap());
    assert_eq!(std::fs::symlink_metadata(&socket).unwrap().gid(), gid);

    let unknown = RenderConfig {
        socket_group: Some("no-such-group-tilepipe".into()),
        ..settings.clone()
    };
    let e = bind(&unknown).err().expect("an unknown group is an error");
    assert!(e.to_string().contains("no-such-group-tilepipe"), "{e}");
    let bad_mode = RenderConfig {
        socket_mode: "rw-rw----".into(),
        ..settings
    };
    let e = bind(&bad_mode).err().expect("a bad mode is an error");
    assert!(e.to_string().contains("socket_mode"), "{e}");
}

#[test]
fn only_a_stale_socket_is_ever_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("renderd.sock");
    let settings = RenderConfig {
        socket: Some(socket.clone()),
        ..Default::default()
    };
    let refused = |what: &str| {
        let e = bind(&settings)
            .err()
            .unwrap_or_else(|| panic!("bound over {what}"));
        let text = e.to_string();
        assert!(text.contains(&socket.display().to_string()), "{text}");
        text
    };

    // A regular file: kept, and the error names the path.
    std::fs::write(&socket, b"precious").unwrap();
    let text = refused("a regular file");
    assert!(text.contains("not a socket"), "{text}");
    assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
    std::fs::remove_file(&socket).unwrap();

    // A directory, with something in it.
    std::fs::create_dir(&socket).unwrap();
    std::fs::write(socket.join("keep"), b"x").unwrap();
    refused("a directory");
    assert!(socket.join("keep").is_file());
    std::fs::remove_dir_all(&socket).unwrap();

    // A symbolic link to a socket elsewhere: neither is touched.
    let elsewhere = dir.path().join("elsewhere.sock");
    let live = StdUnixListener::bind(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &socket).unwrap();
    refused("a symbolic link");
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_symlink());
    std::fs::remove_file(&socket).unwrap();

    // A socket another server still listens on: not taken over.
    let other = StdUnixListener::bind(&socket).unwrap();
    let text = refused("a live socket");
    assert!(text.contains("another server"), "{text}");
    UnixStream::connect(&socket).expect("the other server still reachable");
    drop(other);
    drop(live);

    // A stale socket (its server is gone): replaced.
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    let listeners = bind(&settings).expect("a stale socket is replaced");
    assert_eq!(
        std::fs::symlink_metadata(&socket).unwrap().mode() & 0o777,
        0o660
    );
    drop(listeners);
}
