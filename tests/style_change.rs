//! Re-rendering after a style change (`render.style_change_dirty`,
//! `render.style_change_render_max_zoom`): `tilepipe serve` (the binary,
//! rendering with Mapnik) over a real tile cache whose metatiles are older
//! and newer than the style's XML. At start the older ones are marked
//! dirty in place (mtime set to the touch marker, as `/dirty` and expiry
//! do), the low zoom one is re-rendered at once, a high zoom one when a
//! client asks for it over HTTP, and the counts are on `/metrics`.

use std::fs::{File, FileTimes};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use tilepipe::metatile::{touched_mtime, TileStore};
use tilepipe::tile::Metatile;

const STYLE: &str = "plain";

/// `tilepipe serve` with its renderer, on a free loopback port, once it
/// listens. No database: the plain style reads none.
fn start_serve(config: &Path) -> crate::data_bounds::ServeProcess {
    crate::data_bounds::start_serve_with(config, "postgresql://127.0.0.1:1/none", &[])
}

fn set_mtime(path: &Path, mtime: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(mtime))
        .unwrap();
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Polls until `done` holds, for at most 20 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metatiles_older_than_the_style_are_marked_dirty_and_re_rendered() {
    let work = tempfile::tempdir().unwrap();
    let tiles = work.path().join("tiles");
    let store = TileStore::new(&tiles);
    let now = SystemTime::now();
    let ago = |minutes: u64| now - Duration::from_secs(60 * minutes);
    let payload: Vec<Vec<u8>> = (0..64u8).map(|n| vec![n; 100]).collect();
    let write = |z: u8, x: u32, y: u32, modified: SystemTime| -> PathBuf {
        let path = store.write(STYLE, Metatile { z, x, y }, &payload).unwrap();
        set_mtime(&path, modified);
        path
    };
    // Rendered before the style changed: a low zoom one and a high zoom one.
    let low = write(5, 0, 0, ago(180));
    let high = write(14, 0, 64, ago(180));
    // Rendered after it: left alone.
    let newer = write(14, 8, 64, ago(10));
    // Already marked dirty: left as it is, counted apart.
    let touched = write(14, 16, 64, touched_mtime());
    let xml = work.path().join("plain.xml");
    std::fs::write(&xml, tilepipe_testkit::serve::PLAIN_XML).unwrap();
    set_mtime(&xml, ago(60));

    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "styles:\n  - name: {STYLE}\n    xml: {}\n    tile_dir: {}\n\
             render:\n  threads: 1\n  style_change_render_max_zoom: 12\n",
            xml.display(),
            tiles.display(),
        ),
    )
    .unwrap();
    let serve = start_serve(&config);
    let metrics = || {
        let (status, body) = tilepipe_testkit::http::get(serve.port, "/metrics").unwrap();
        assert_eq!(status, 200);
        String::from_utf8(body).unwrap()
    };
    wait_for("the style change check on /metrics", || {
        metrics().contains("tilepipe_style_change_dirty_metatiles_total")
    });
    let text = metrics();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("tilepipe_style_change_dirty_metatiles_total"), 2.0);
    assert_eq!(value("tilepipe_style_change_rerenders_queued_total"), 1.0);

    // The z14 metatile is marked, not deleted, and not rendered before a
    // client asks; the newer one and the touched one are as they were.
    assert_eq!(mtime(&high), touched_mtime());
    assert_eq!(mtime(&newer), ago(10));
    assert_eq!(mtime(&touched), touched_mtime());
    // The z5 one is re-rendered at once, without a request.
    wait_for("the z5 metatile's re-render", || mtime(&low) > ago(1));
    // A client asking for a tile of the marked z14 metatile gets it, and
    // it is re-rendered (the dirty tile's request priority).
    let (status, body) = tilepipe_testkit::http::get(serve.port, "/plain/14/3/66.png").unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with(b"\x89PNG"), "not a PNG");
    wait_for("the z14 metatile's re-render", || mtime(&high) > ago(1));
    assert_eq!(mtime(&newer), ago(10));
    // Restarting finds nothing older than the style any more.
    drop(serve);
    let serve = start_serve(&config);
    let again = || {
        let (_, body) = tilepipe_testkit::http::get(serve.port, "/metrics").unwrap();
        String::from_utf8(body).unwrap()
    };
    wait_for("the second check", || {
        again().contains("tilepipe_style_change_dirty_metatiles_total 0")
    });
}
