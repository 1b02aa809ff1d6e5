//! Helpers of the serve tests and of `benches/serve.rs`: a tilepipe server
//! in-process on a loopback port with the real Mapnik renderer behind it,
//! and Debian's Apache with mod_tile on a private port.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tilepipe::metrics::Metrics;
use tilepipe::render::config::{RenderSettings, StyleConfig};
use tilepipe::render::worker::Renderer;
use tilepipe::serve::config::ServeSettings;
use tilepipe::serve::Server;

pub const STYLE: &str = "plain";

/// A Web Mercator map with a background colour and no layers: the real
/// renderer, no database.
pub const PLAIN_XML: &str = r##"<?xml version="1.0" encoding="utf-8"?>
<Map background-color="#b5d0d0" srs="+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 +units=m +nadgrids=@null +wktext +no_defs"/>
"##;

pub use tilepipe_testkit::find_in_path;

/// The plain style over `tiles`, its XML written into `dir`.
pub fn plain_style(dir: &Path, tiles: &Path) -> StyleConfig {
    let xml = dir.join("plain.xml");
    std::fs::write(&xml, PLAIN_XML).unwrap();
    StyleConfig {
        name: STYLE.into(),
        xml,
        tile_dir: tiles.to_path_buf(),
        min_zoom: 0,
        max_zoom: 18,
        description: "One colour, no data".into(),
        ..StyleConfig::default()
    }
}

/// Makes every metatile older than now clean: the planet time an hour ago.
pub fn planet_import_complete(tiles: &Path, ago: Duration) {
    let file = tiles.join("planet-import-complete");
    std::fs::create_dir_all(tiles).unwrap();
    std::fs::write(&file, b"").unwrap();
    let time = std::time::SystemTime::now() - ago;
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_times(
            std::fs::FileTimes::new()
                .set_modified(time)
                .set_accessed(time),
        )
        .unwrap();
}

/// A tilepipe server on 127.0.0.1:<free port>, stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub tiles: PathBuf,
    pub metrics: Arc<Metrics>,
    pub renderer: Option<Arc<Renderer>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub struct Options {
    pub render: bool,
    pub render_threads: usize,
    pub queue_capacity: usize,
    pub styles: Option<Vec<StyleConfig>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            render: true,
            render_threads: 1,
            queue_capacity: 1000,
            styles: None,
        }
    }
}

impl TestServer {
    /// Starts a server with the plain style (and its renderer unless
    /// `options.render` is false) on the current tokio runtime.
    pub async fn start(options: Options, configure: impl FnOnce(&mut ServeSettings)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let tiles = dir.path().join("tiles");
        std::fs::create_dir_all(&tiles).unwrap();
        let styles = options
            .styles
            .clone()
            .unwrap_or_else(|| vec![plain_style(dir.path(), &tiles)]);
        let renderer = options.render.then(|| {
            let settings = RenderSettings {
                threads: options.render_threads,
                queue_capacity: options.queue_capacity,
                ..RenderSettings::default()
            };
            Arc::new(Renderer::start(&styles, &settings).expect("renderer starts"))
        });
        let mut settings = ServeSettings {
            listen: "127.0.0.1:0".into(),
            leaflet_dir: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("web/node_modules/leaflet/dist"),
            ..ServeSettings::default()
        };
        configure(&mut settings);
        let metrics = Arc::new(Metrics::new());
        let server = Server::bind(settings, styles, renderer.clone(), metrics.clone())
            .await
            .expect("server binds");
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            base: format!("http://{addr}"),
            dir,
            tiles,
            metrics,
            renderer,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn store(&self) -> tilepipe::metatile::TileStore {
        tilepipe::metatile::TileStore::new(&self.tiles)
    }

    /// Stops the server and the renderer.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        if let Some(renderer) = self.renderer.take() {
            renderer.queue().shutdown();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(renderer) = self.renderer.take() {
            renderer.queue().shutdown();
        }
    }
}

/// The status of a GET of `url`.
pub async fn status(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> reqwest::StatusCode {
    http.get(url).send().await.unwrap().status()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
pub fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's Apache 2 with mod_tile serving `tile_dir` (layer `/<style>/`)
/// on a private loopback port, from its own configuration in a
/// temporary directory; killed on drop.
pub struct Apache {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

pub const MOD_TILE: &str = "/usr/lib/apache2/modules/mod_tile.so";

impl Apache {
    /// `None` (after saying why) when apache2 or mod_tile is not installed.
    pub fn start(tile_dir: &Path, style: &str, threads: u32) -> Option<Apache> {
        Self::start_with_renderd(tile_dir, style, threads, None)
    }

    /// With `renderd`, mod_tile asks that socket to render missing and
    /// dirty tiles (waiting up to 30 s for a missing one); without, it has
    /// no renderer and answers a missing tile 404 at once.
    pub fn start_with_renderd(
        tile_dir: &Path,
        style: &str,
        threads: u32,
        renderd: Option<&Path>,
    ) -> Option<Apache> {
        let Some(apache) = find_in_path("apache2") else {
            eprintln!("skipped: apache2 is not installed (apt-get install apache2)");
            return None;
        };
        if !Path::new(MOD_TILE).is_file() {
            eprintln!("skipped: mod_tile is not installed (apt-get install libapache2-mod-tile)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let port = free_port();
        // Apache started as root serves from children running as nobody:
        // they must be able to read the tiles.
        let is_root = unsafe_geteuid() == 0;
        if is_root {
            make_world_readable(tile_dir);
            make_world_readable(root);
        }
        let user = if is_root {
            "User nobody\nGroup nogroup\n"
        } else {
            ""
        };
        let conf = format!(
            "ServerRoot {root}\nListen 127.0.0.1:{port}\nPidFile {root}/httpd.pid\n\
             ErrorLog {root}/error.log\nLogLevel warn\nDefaultRuntimeDir {root}\n\
             Mutex file:{root} default\nServerName localhost\n{user}\
             LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
             LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
             LoadModule tile_module {MOD_TILE}\n\
             StartServers 2\nServerLimit 4\nThreadsPerChild {threads}\nMaxRequestWorkers {max}\n\
             ThreadLimit {threads}\nMinSpareThreads {threads}\nMaxSpareThreads {max}\n\
             KeepAliveTimeout 30\nMaxKeepAliveRequests 0\n\
             ModTileTileDir {tiles}\nModTileRenderdSocketName {socket}\n\
             ModTileRequestTimeout {timeout}\nModTileMissingRequestTimeout {missing_timeout}\n\
             ModTileEnableStats Off\n\
             AddTileConfig /{style}/ {style}\n",
            root = root.display(),
            tiles = tile_dir.display(),
            max = threads * 2,
            socket = renderd.map_or_else(
                || format!("{}/no-renderd.sock", root.display()),
                |s| s.display().to_string()
            ),
            timeout = if renderd.is_some() { 3 } else { 0 },
            missing_timeout = if renderd.is_some() { 30 } else { 0 },
        );
        std::fs::write(root.join("httpd.conf"), conf).unwrap();
        let log = std::fs::File::create(root.join("stdout.log")).unwrap();
        let child = std::process::Command::new(apache)
            .arg("-f")
            .arg(root.join("httpd.conf"))
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut apache = Apache { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = apache.child.try_wait().unwrap() {
                panic!("apache2 exited ({status}):\n{}", apache.log());
            }
            assert!(
                Instant::now() < deadline,
                "apache2 does not listen:\n{}",
                apache.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(apache)
    }

    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("error.log"))
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // SIGTERM lets Apache stop its children; then make sure.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unsafe_geteuid() -> u32 {
    // No libc crate here: ask id(1).
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(1000)
}

/// chmod a+rX on `dir` and every ancestor's search bit, recursively below.
pub fn make_world_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        if let Ok(meta) = std::fs::metadata(a) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o011));
            }
        }
        ancestor = a.parent();
    }
    fn walk(path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode();
        let want = if meta.is_dir() {
            mode | 0o755
        } else {
            mode | 0o644
        };
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(want));
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path());
            }
        }
    }
    walk(dir);
}

/// One HTTP/1.1 exchange on an open connection, with blocking std I/O
/// (independent of the tokio runtime the server runs on): sends `request`
/// as is and reads one response. Returns its status and body, or the
/// I/O error (a read timeout, a closed connection).
pub fn exchange(stream: &mut std::net::TcpStream, request: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    stream.write_all(request.as_bytes())?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while got.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&got[head_end..head_end + length]).to_string();
    Ok((status, body))
}

/// A GET of `path` on a new connection that reads for at most `timeout`.
pub fn get_within(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    exchange(
        &mut stream,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Blocks until the server closes `stream` (read returns 0 or an error),
/// at most `timeout`; the time it took, or `None` when still open.
pub fn wait_closed(stream: &mut std::net::TcpStream, timeout: Duration) -> Option<Duration> {
    use std::io::Read;
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        let left = timeout.checked_sub(started.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if started.elapsed() >= timeout {
                    return None;
                }
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}
