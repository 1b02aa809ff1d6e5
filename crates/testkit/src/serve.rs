//! A tilepipe server in-process on a loopback port with the real Mapnik
//! renderer behind it and a one-colour style that needs no database, for
//! the serve tests and `benches/serve.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tilepipe::metrics::Metrics;
use tilepipe::render::config::{RenderConfig, StyleConfig};
use tilepipe::render::worker::Renderer;
use tilepipe::serve::config::ServeConfig;
use tilepipe::serve::Server;

/// Name (and URL layer) of the plain style.
pub const STYLE: &str = "plain";

/// A Web Mercator map with a background colour and no layers: the real
/// renderer, no database.
pub const PLAIN_XML: &str = r##"<?xml version="1.0" encoding="utf-8"?>
<Map background-color="#b5d0d0" srs="+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 +units=m +nadgrids=@null +wktext +no_defs"/>
"##;

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

/// Writes `<tiles>/planet-import-complete` dated `ago` before now: as in
/// mod_tile, metatiles older than that count as dirty, newer ones as fresh.
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

/// A tilepipe server on `127.0.0.1:<free port>`, stopped on drop.
pub struct TestServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// `http://<addr>`, without a trailing slash.
    pub base: String,
    /// Scratch directory holding the style XML and `tiles/`; removed on
    /// drop.
    pub dir: tempfile::TempDir,
    /// The tile directory of the default plain style (`<dir>/tiles`).
    pub tiles: PathBuf,
    /// The server's metrics, to check counters.
    pub metrics: Arc<Metrics>,
    /// The renderer behind it, if [`Options::render`] was set.
    pub renderer: Option<Arc<Renderer>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// How [`TestServer::start`] sets the server up.
pub struct Options {
    /// Run a renderer behind the server (default true).
    pub render: bool,
    /// Render threads (default 1).
    pub render_threads: usize,
    /// Most metatiles queued per priority (default 1000).
    pub queue_capacity: usize,
    /// Styles to serve instead of the plain one (default `None`: plain).
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

impl Options {
    /// The plain style without a renderer: missing tiles stay missing.
    pub fn no_render() -> Options {
        Options {
            render: false,
            ..Options::default()
        }
    }
}

impl TestServer {
    /// The plain style with its renderer and default settings.
    pub async fn new() -> TestServer {
        Self::start(Options::default(), |_| {}).await
    }

    /// The plain style without a renderer, default settings.
    pub async fn without_renderer() -> TestServer {
        Self::start(Options::no_render(), |_| {}).await
    }

    /// Starts a server with the plain style (and its renderer unless
    /// `options.render` is false) on the current tokio runtime.
    pub async fn start(options: Options, configure: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let tiles = dir.path().join("tiles");
        std::fs::create_dir_all(&tiles).unwrap();
        let styles = options
            .styles
            .clone()
            .unwrap_or_else(|| vec![plain_style(dir.path(), &tiles)]);
        let renderer = options.render.then(|| {
            let settings = RenderConfig {
                threads: options.render_threads,
                queue_capacity: options.queue_capacity,
                ..RenderConfig::default()
            };
            Arc::new(Renderer::start(&styles, &settings).expect("renderer starts"))
        });
        let mut settings = ServeConfig {
            listen: "127.0.0.1:0".into(),
            leaflet_dir: crate::paths::repo_file("web/node_modules/leaflet/dist"),
            ..ServeConfig::default()
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

    /// The URL of `path` (which starts with `/`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The plain style's tile directory as a [`TileStore`](tilepipe::metatile::TileStore).
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

/// An HTTP client with a 60 s timeout, generous enough for renders.
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
