//! tilepipe as a renderd: its renderer behind the renderd wire protocol,
//! driven by tilepipe's own protocol client and by Debian's `render_list`
//! and `render_expired` (mod_tile 0.6.1), on a unix socket and on TCP.
//!
//! Without `render_list` on PATH those parts say they were skipped
//! (`scripts/install-deps` installs Debian's `renderd`, which ships them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tilepipe::metatile::TileStore;
use tilepipe::render::config::RenderConfig;
use tilepipe::render::server::ProtocolListeners;
use tilepipe::render::worker::Renderer;
use tilepipe::renderd::{Client, Command, Endpoint, ProtocolVersion, Request};
use tilepipe::tile::Tile;
use tilepipe_testkit::render::{
    metatile_at, project_style, settings, tile_at, town_database, TOWN,
};
use tilepipe_testkit::{find_in_path, output_with_stdin};

const STYLE: &str = "town";

struct Backend {
    _dir: tempfile::TempDir,
    tiles: PathBuf,
    socket: PathBuf,
    tcp: std::net::SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    renderer: Arc<Renderer>,
}

impl Backend {
    fn start(hint: &str) -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let url = town_database(dir.path(), hint);
        let tiles = dir.path().join("tiles");
        // render_list and render_expired refuse a tile directory that does
        // not exist yet.
        std::fs::create_dir_all(&tiles).unwrap();
        let style = project_style(STYLE, &tiles, &url);
        let renderer =
            Arc::new(Renderer::start(std::slice::from_ref(&style), &settings(2)).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let socket = dir.path().join("run/renderd.sock");
        let listeners = runtime
            .block_on(ProtocolListeners::bind(&RenderConfig {
                socket: Some(socket.clone()),
                tcp: Some("127.0.0.1:0".into()),
                ..Default::default()
            }))
            .unwrap();
        let tcp = listeners.tcp_address().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let queue = renderer.queue().clone();
        runtime.spawn(async move {
            listeners
                .serve(queue, &[style], async {
                    let _ = stopped.await;
                })
                .await
        });
        Backend {
            _dir: dir,
            tiles,
            socket,
            tcp,
            runtime,
            stop: Some(stop),
            renderer,
        }
    }

    fn request(&self, endpoint: Endpoint, request: Request) -> Command {
        self.runtime.block_on(async {
            let mut client =
                Client::new(endpoint).with_reply_timeout(Some(Duration::from_secs(60)));
            client.request(&request).await.unwrap()
        })
    }

    fn store(&self) -> TileStore {
        TileStore::new(&self.tiles)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn mtime(store: &TileStore, tile: Tile) -> Option<SystemTime> {
    let path = store.path(STYLE, tile.metatile(), None).ok()?;
    std::fs::metadata(path).ok()?.modified().ok()
}

#[test]
fn the_protocol_answers_as_renderd_does_on_both_sockets() {
    let backend = Backend::start("proto_server");
    let store = backend.store();
    let tile = tile_at(TOWN, 15);
    for endpoint in [
        Endpoint::Unix(backend.socket.clone()),
        Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: backend.tcp.port(),
        },
    ] {
        let _ = std::fs::remove_file(store.path(STYLE, tile.metatile(), None).unwrap());
        // A waited render: answered Done once the metatile is on disk, the
        // reply echoing the request's own x/y (not the metatile origin).
        let request = Request::new(Command::RenderPrio, tile, STYLE);
        assert_eq!(backend.request(endpoint.clone(), request), Command::Done);
        let stored = store.read_tile(STYLE, tile).unwrap().expect("tile on disk");
        assert!(stored.bytes.starts_with(b"\x89PNG"));
        // v3 with a MIME type is served the same way.
        let v3 = Request::new(Command::RenderBulk, tile, STYLE).with_v3_fields("image/png", "");
        assert_eq!(v3.version, ProtocolVersion::V3);
        assert_eq!(backend.request(endpoint.clone(), v3), Command::Done);
        // Dirty: queued, NotDone at once.
        let dirty = Request::new(Command::Dirty, tile_at(TOWN, 14), STYLE);
        assert_eq!(backend.request(endpoint.clone(), dirty), Command::NotDone);
        // Outside the world: Ignore; unknown style: NotDone, not silence.
        let outside = Request {
            x: 1 << 15,
            ..Request::new(Command::Render, tile, STYLE)
        };
        assert_eq!(backend.request(endpoint.clone(), outside), Command::Ignore);
        let unknown = Request::new(Command::Render, tile, "nosuchstyle");
        assert_eq!(backend.request(endpoint.clone(), unknown), Command::NotDone);
    }
    // The dirty request was rendered in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.read_tile(STYLE, tile_at(TOWN, 14)).unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "dirty request never rendered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn render_list_and_render_expired_use_tilepipe_as_their_renderd() {
    let (Some(render_list), Some(render_expired)) =
        (find_in_path("render_list"), find_in_path("render_expired"))
    else {
        eprintln!("skipped: render_list/render_expired not installed (Debian package renderd; scripts/install-deps)");
        return;
    };
    let backend = Backend::start("proto_render_list");
    let store = backend.store();
    let z = 16;
    let first = metatile_at((10.000, 50.008), z);
    let last = metatile_at((10.008, 50.000), z);
    let (x0, x1) = (first.x.min(last.x), first.x.max(last.x) + 7);
    let (y0, y1) = (first.y.min(last.y), first.y.max(last.y) + 7);
    let out = std::process::Command::new(&render_list)
        .args(["-a", "-m", STYLE, "-n", "2", "-z", "16", "-Z", "16"])
        .args(["-x", &x0.to_string(), "-X", &x1.to_string()])
        .args(["-y", &y0.to_string(), "-Y", &y1.to_string()])
        .arg("-s")
        .arg(&backend.socket)
        .arg("-t")
        .arg(&backend.tiles)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "render_list failed:\n{log}");
    let mut metatiles = Vec::new();
    for x in (x0..=x1).step_by(8) {
        for y in (y0..=y1).step_by(8) {
            let tile = Tile::new(z, x, y).unwrap();
            assert!(
                mtime(&store, tile).is_some(),
                "render_list did not get {tile} rendered:\n{log}"
            );
            metatiles.push(tile);
        }
    }
    let done = backend.renderer.queue().stats().done;
    assert!(!done.is_empty(), "renders counted in the queue statistics");

    // render_expired re-renders what it is given (through cmdRenderBulk).
    let before = mtime(&store, metatiles[0]).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let out = output_with_stdin(
        std::process::Command::new(&render_expired)
            .args(["-m", STYLE, "-z", "16", "-Z", "16"])
            .arg("-s")
            .arg(&backend.socket)
            .arg("-t")
            .arg(&backend.tiles),
        &format!(
            "{}/{}/{}\n",
            metatiles[0].z,
            metatiles[0].x + 1,
            metatiles[0].y + 2
        ),
    )
    .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "render_expired failed:\n{log}");
    let after = mtime(&store, metatiles[0]).unwrap();
    assert!(after > before, "render_expired did not re-render:\n{log}");
    assert!(Path::new(&backend.socket).exists());
}
