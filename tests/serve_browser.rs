//! The map page in Debian's headless Chromium: the synthetic town imported
//! into PostGIS (testkit cluster), tilepipe's own Mapnik style rendering
//! on demand behind the server, and a second style for the layer
//! switcher. The page loads Leaflet from the npm package, requests tiles
//! (counted in the server's metrics), draws them, and the screenshot is
//! not blank (many colours, not one flat background).
//!
//! Skipped with a message when chromium or Leaflet (`npm install --prefix
//! web`) is missing.

use std::path::Path;
use std::time::Duration;
use tilepipe::metrics::TileOutcome;
use tilepipe::render::config::StyleConfig;
use tilepipe_testkit::cli::{assert_success, tilepipe};
use tilepipe_testkit::find_in_path;
use tilepipe_testkit::serve::{plain_style, Options, TestServer};

fn leaflet_installed() -> bool {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("web/node_modules/leaflet/dist/leaflet.js")
        .is_file()
}

/// Distinct colours and the share of the most common one.
fn colour_stats(png_file: &Path) -> (usize, f64, (u32, u32)) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_file).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let mut counts = std::collections::HashMap::<Vec<u8>, usize>::new();
    let pixels = buf[..info.buffer_size()].chunks(channels);
    let total = pixels.len();
    for px in pixels {
        *counts.entry(px[..3.min(channels)].to_vec()).or_default() += 1;
    }
    let top = counts.values().copied().max().unwrap_or(0);
    (
        counts.len(),
        top as f64 / total as f64,
        (info.width, info.height),
    )
}

#[test]
fn the_map_page_draws_tiles_in_chromium() {
    let Some(chromium) = find_in_path("chromium") else {
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    if !leaflet_installed() {
        eprintln!(
            "skipped: Leaflet is not installed (npm install --prefix web, scripts/install-deps)"
        );
        return;
    }
    // The town in PostGIS.
    let cluster = tilepipe_testkit::PgCluster::shared();
    let url = cluster.create_database("serve_browser").unwrap();
    let work = tempfile::tempdir().unwrap();
    let osm = work.path().join("town.osm");
    tilepipe_testkit::town::synthetic_town()
        .write_osm_file(&osm)
        .unwrap();
    let config = work.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    assert_success(&tilepipe(&config, &url, &["import", osm.to_str().unwrap()]));

    let tiles = work.path().join("tiles");
    let town = StyleConfig {
        name: "tilepipe".into(),
        xml: Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/tilepipe/tilepipe.xml"),
        tile_dir: tiles.clone(),
        database: Some(url.clone()),
        description: "tilepipe's own style over the synthetic town".into(),
        ..StyleConfig::default()
    };
    let plain = plain_style(work.path(), &tiles);
    // The database work above uses blocking clients; the server runs here.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(show_page(chromium, work.path(), town, plain));
}

async fn show_page(
    chromium: std::path::PathBuf,
    work: &Path,
    town: StyleConfig,
    plain: StyleConfig,
) {
    let server = TestServer::start(
        Options {
            render_threads: 2,
            styles: Some(vec![town, plain]),
            ..Options::default()
        },
        |s| s.missing_request_timeout_secs = 60.0,
    )
    .await;

    let shot = work.join("page.png");
    // The short hash form, as `scripts/demo` and the README print it
    // (the page writes and reads `#map=…&style=…` too).
    let page = server.url("/#16/50.0045/10.0045");
    let out = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=800,600",
            "--virtual-time-budget=30000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.join("chromium").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&page)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("chromium finishes")
        .unwrap();
    assert!(
        shot.is_file(),
        "no screenshot: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(keep) = std::env::var("TILEPIPE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    // Tiles were asked for and served (rendered on demand, then cached).
    let counters = server.metrics.style("tilepipe");
    let served: u64 = [TileOutcome::Rendered, TileOutcome::Fresh]
        .iter()
        .map(|&o| counters.get(16, o))
        .sum();
    assert!(served >= 6, "only {served} z16 tiles served");
    assert_eq!(counters.total(TileOutcome::NotRendered), 0);

    // Drawn: the screenshot has the town's many colours, not one flat
    // background.
    let (colours, top_share, size) = colour_stats(&shot);
    eprintln!(
        "screenshot {size:?}: {colours} colours, most common {:.0}%",
        top_share * 100.0
    );
    assert_eq!(size, (800, 600));
    assert!(colours > 50, "{colours} colours");
    assert!(
        top_share < 0.9,
        "one colour covers {:.0}%",
        top_share * 100.0
    );
    server.stop().await;
}

/// `/status.json` and the map page's status panel reading it: the JSON
/// over HTTP, then the panel (opened by `&status=1`) in headless
/// Chromium's DOM after the page ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_panel_shows_status_json() {
    let server = TestServer::start(Options::default(), |_| {}).await;
    server
        .metrics
        .set_replication_position(77, std::time::SystemTime::now() - Duration::from_secs(30));
    server
        .metrics
        .record_batch(std::time::SystemTime::now(), 42);
    let port = server.addr.port();
    let (status, body) =
        tokio::task::spawn_blocking(move || tilepipe_testkit::http::get(port, "/status.json"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["replication"]["sequence"], 77);
    let lag = json["replication"]["lag_seconds"].as_f64().unwrap();
    assert!((30.0..60.0).contains(&lag), "{lag}");
    assert_eq!(json["last_batch"]["changes"], 42);
    assert_eq!(json["render"]["queued_total"], 0);
    assert_eq!(json["render"]["queued"]["missing"], 0);
    assert_eq!(json["render"]["background_paused"], false);

    let Some(chromium) = find_in_path("chromium") else {
        eprintln!("skipped the page: chromium is not installed (apt-get install chromium)");
        return server.stop().await;
    };
    if !leaflet_installed() {
        eprintln!("skipped the page: Leaflet is not installed (npm install --prefix web)");
        return server.stop().await;
    }
    let out = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            server.dir.path().join("chromium").display()
        ))
        .arg(server.url("/#5/50/10&status=1"))
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("chromium finishes")
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    for expected in [
        // 30 s and the time the page took.
        "Replication lag: 3",
        " s (sequence 77)",
        "Last batch: 42 changes",
        "Render queue: 0 waiting (missing 0, dirty 0, expired 0, background 0), 0 rendering",
    ] {
        assert!(
            dom.contains(expected),
            "{expected:?} not on the page:\n{dom}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.stop().await;
}
