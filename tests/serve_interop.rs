//! Interoperability with Debian's peers, both ways:
//! - a cache written by the real renderd (0.6.1, Mapnik) is served by
//!   tilepipe byte for byte;
//! - a cache written by tilepipe's renderer is served by Apache 2 with
//!   mod_tile (started on a private loopback port from its own
//!   configuration in a temporary directory), byte for byte;
//! - Apache's mod_tile uses tilepipe as its renderd: a missing tile it is
//!   asked for is rendered by tilepipe's workers over the renderd protocol.
//!
//! Tests whose peer is not installed pass after saying they were skipped
//! (`scripts/install-deps` installs renderd, apache2 and
//! libapache2-mod-tile).

use reqwest::StatusCode;
use std::path::Path;
use std::time::Duration;
use tilepipe::metatile::TileStore;
use tilepipe::renderd::{Client, Command, Request};
use tilepipe::tile::Tile;
use tilepipe_testkit::apache::{self, Apache};
use tilepipe_testkit::find_in_path;
use tilepipe_testkit::serve::{
    client, plain_style, planet_import_complete, png_size, Options, TestServer, PLAIN_XML, STYLE,
};
use tilepipe_testkit::Renderd;

/// Debian's renderd with the plain style on a unix socket in a temporary
/// directory (killed on drop), or `None` (after saying so) when it is not
/// installed.
fn start_renderd() -> Option<Renderd> {
    Renderd::builder()
        .inline_style(STYLE, PLAIN_XML)
        .num_threads(1)
        .plugins_dir(mapnik_sys::DEFAULT_PLUGIN_DIR)
        .font_dir("/usr/share/fonts/truetype", false)
        .start_or_skip()
}

fn tile_url(tile: Tile) -> String {
    format!("/{STYLE}/{}/{}/{}.png", tile.z, tile.x, tile.y)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_written_by_renderd_is_served_by_tilepipe() {
    let Some(renderd) = start_renderd() else {
        return;
    };
    let tiles = [
        Tile::new(12, 2140, 1393).unwrap(),
        Tile::new(3, 4, 2).unwrap(),
    ];
    let mut renderd_client = Client::connect(renderd.endpoint())
        .await
        .unwrap()
        .with_reply_timeout(Some(Duration::from_secs(60)));
    for tile in tiles {
        let reply = renderd_client
            .request(&Request::new(Command::RenderPrio, tile, STYLE))
            .await
            .unwrap();
        assert_eq!(reply, Command::Done, "{}", renderd.log());
    }
    planet_import_complete(renderd.tile_dir(), Duration::from_secs(3600));

    let style_dir = tempfile::tempdir().unwrap();
    let style = plain_style(style_dir.path(), renderd.tile_dir());
    let server = TestServer::start(
        Options {
            render: false,
            styles: Some(vec![style]),
            ..Options::default()
        },
        |_| {},
    )
    .await;
    let store = TileStore::new(renderd.tile_dir());
    let http = client();
    for tile in tiles {
        let expected = store.read_tile(STYLE, tile).unwrap().unwrap().bytes;
        let r = http.get(server.url(&tile_url(tile))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let bytes = r.bytes().await.unwrap();
        assert_eq!(png_size(&bytes), (256, 256));
        assert_eq!(bytes, expected, "{tile}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_written_by_tilepipe_is_served_by_mod_tile() {
    if find_in_path("apache2").is_none() || !Path::new(apache::MOD_TILE).is_file() {
        eprintln!(
            "skipped: apache2 or mod_tile is not installed (apt-get install apache2 libapache2-mod-tile)"
        );
        return;
    }
    let server = TestServer::new().await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let http = client();
    let tiles = [
        Tile::new(12, 2140, 1393).unwrap(),
        Tile::new(12, 2141, 1399).unwrap(),
        Tile::new(1, 1, 0).unwrap(),
    ];
    let mut ours = Vec::new();
    for tile in tiles {
        let r = http.get(server.url(&tile_url(tile))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "tilepipe renders {tile}");
        ours.push(r.bytes().await.unwrap());
    }
    let Some(apache) = Apache::start(&server.tiles, STYLE, 8) else {
        return;
    };
    for (tile, ours) in tiles.iter().zip(&ours) {
        let r = http
            .get(format!("{}{}", apache.base(), tile_url(*tile)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "mod_tile serves {tile}:\n{}",
            apache.log()
        );
        assert_eq!(r.headers()["content-type"], "image/png");
        let theirs = r.bytes().await.unwrap();
        assert_eq!(&theirs, ours, "{tile}");
    }
    // A tile tilepipe never rendered is missing for mod_tile too (no
    // renderd behind it: 404).
    let r = http
        .get(format!("{}/{STYLE}/12/0/0.png", apache.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    drop(apache);
    server.stop().await;
}

#[test]
fn mod_tile_renders_missing_tiles_through_tilepipe() {
    if find_in_path("apache2").is_none() || !Path::new(apache::MOD_TILE).is_file() {
        eprintln!(
            "skipped: apache2 or mod_tile is not installed (apt-get install apache2 libapache2-mod-tile)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tiles = dir.path().join("tiles");
    std::fs::create_dir_all(&tiles).unwrap();
    planet_import_complete(&tiles, Duration::from_secs(3600));
    let style = plain_style(dir.path(), &tiles);
    let renderer = tilepipe::render::worker::Renderer::start(
        std::slice::from_ref(&style),
        &tilepipe::render::config::RenderConfig {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The socket where mod_tile expects renderd, writable by Apache's
    // children (they run as nobody:nogroup when the test runs as root), as
    // README asks of operators: the default mode 0660 and Apache's group.
    let run = dir.path().join("run");
    let socket = run.join("renderd.sock");
    let settings = tilepipe::render::config::RenderConfig {
        socket: Some(socket.clone()),
        socket_group: (apache::geteuid() == 0).then(|| "nogroup".to_string()),
        ..Default::default()
    };
    let listeners = runtime
        .block_on(tilepipe::render::server::ProtocolListeners::bind(&settings))
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let queue = renderer.queue().clone();
    let styles = vec![style];
    runtime.spawn(async move {
        listeners
            .serve(queue, &styles, async {
                let _ = stopped.await;
            })
            .await
    });
    let Some(apache) = Apache::start_with_renderd(&tiles, STYLE, 4, Some(&socket)) else {
        return;
    };
    let tile = Tile::new(9, 270, 170).unwrap();
    assert!(TileStore::new(&tiles)
        .read_tile(STYLE, tile)
        .unwrap()
        .is_none());
    let response = runtime.block_on(async {
        client()
            .get(format!("{}{}", apache.base(), tile_url(tile)))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "mod_tile got the tile rendered by tilepipe:\n{}",
        apache.log()
    );
    let bytes = runtime.block_on(response.bytes()).unwrap();
    assert_eq!(png_size(&bytes), (256, 256));
    let stored = TileStore::new(&tiles)
        .read_tile(STYLE, tile)
        .unwrap()
        .expect("tilepipe wrote the metatile");
    assert_eq!(stored.bytes, bytes.to_vec());
    drop(apache);
    let _ = stop.send(());
}
