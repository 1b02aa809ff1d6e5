//! The data's bounding box from import to map page: `tilepipe import`
//! stores the box around every node it read, `tilepipe apply` widens it
//! by new nodes, `tilepipe bounds --recompute` measures the output tables
//! again; `tilepipe serve` (the real binary, real HTTP on loopback) puts
//! it in TileJSON `bounds`/`center`, and the map page without a hash opens
//! on it in headless Chromium (when installed).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use tilepipe::osm::Object;
use tilepipe_testkit::cli::{assert_success, tilepipe};
use tilepipe_testkit::find_in_path;
use tilepipe_testkit::paths::tilepipe_bin;
use tilepipe_testkit::serve::PLAIN_XML;

/// `min_lon,min_lat,max_lon,max_lat` as `tilepipe bounds` prints it.
fn parse_bounds(text: &str) -> [f64; 4] {
    let values: Vec<f64> = text.trim().split(',').map(|v| v.parse().unwrap()).collect();
    values.try_into().unwrap()
}

fn bounds_of(config: &Path, url: &str, args: &[&str]) -> [f64; 4] {
    let out = tilepipe(config, url, args);
    assert_success(&out);
    parse_bounds(&String::from_utf8(out.stdout).unwrap())
}

fn assert_close(found: [f64; 4], expected: [f64; 4], tolerance: f64) {
    for (f, e) in found.iter().zip(expected) {
        assert!(
            (f - e).abs() <= tolerance,
            "bounds {found:?}, expected {expected:?} (± {tolerance})"
        );
    }
}

/// A `tilepipe serve` process, killed on drop.
pub(crate) struct ServeProcess {
    child: Child,
    pub(crate) base: String,
    pub(crate) port: u16,
}

impl ServeProcess {
    pub(crate) fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = tilepipe_testkit::http::get(self.port, path).expect("serve answers");
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tilepipe serve --no-render` on a free loopback port, once it listens.
pub(crate) fn start_serve(config: &Path, url: &str) -> ServeProcess {
    start_serve_with(config, url, &["--no-render"])
}

/// `tilepipe serve` with `options` on a free loopback port, once it
/// listens.
pub(crate) fn start_serve_with(config: &Path, url: &str, options: &[&str]) -> ServeProcess {
    let mut child = Command::new(tilepipe_bin())
        .args(["-c", config.to_str().unwrap(), "-d", url])
        .arg("serve")
        .args(options)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve printed {line:?}"))
        .trim_end_matches('/')
        .to_string();
    let port = base.rsplit(':').next().unwrap().parse().unwrap();
    ServeProcess { child, base, port }
}

#[test]
fn bounds_are_stored_widened_recomputed_and_served() {
    let cluster = tilepipe_testkit::PgCluster::shared();
    let url = cluster.create_database("data_bounds").unwrap();
    let work = tempfile::tempdir().unwrap();
    let town = tilepipe_testkit::town::synthetic_town();
    let osm = work.path().join("town.osm");
    town.write_osm_file(&osm).unwrap();
    let mut expected = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    for object in town.objects() {
        if let Object::Node(node) = object {
            let l = node.location.unwrap();
            expected = [
                expected[0].min(l.lon),
                expected[1].min(l.lat),
                expected[2].max(l.lon),
                expected[3].max(l.lat),
            ];
        }
    }

    // Styles for `serve` (the plain one: no database, nothing rendered).
    let tiles = work.path().join("tiles");
    let xml = work.path().join("plain.xml");
    std::fs::write(&xml, PLAIN_XML).unwrap();
    let leaflet = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/node_modules/leaflet/dist");
    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "styles:\n  - name: plain\n    xml: {}\n    tile_dir: {}\n    min_zoom: 0\n    max_zoom: 19\n\
             serve:\n  leaflet_dir: {}\n",
            xml.display(),
            tiles.display(),
            leaflet.display()
        ),
    )
    .unwrap();

    // Before an import: a clear refusal.
    let out = tilepipe(&config, &url, &["bounds"]);
    assert!(!out.status.success());

    // The import stores the box around its nodes.
    assert_success(&tilepipe(&config, &url, &["import", osm.to_str().unwrap()]));
    let imported = bounds_of(&config, &url, &["bounds"]);
    assert_close(imported, expected, 1e-7);

    // An apply widens it by a new node east and north of the town.
    let osc = work.path().join("cafe.osc");
    std::fs::write(
        &osc,
        "<?xml version='1.0' encoding='UTF-8'?>\n<osmChange version=\"0.6\">\n<create>\n\
         <node id=\"900000001\" version=\"1\" timestamp=\"2030-01-01T00:00:00Z\" lat=\"50.03\" lon=\"10.05\">\
         <tag k=\"amenity\" v=\"cafe\"/><tag k=\"name\" v=\"Far Cafe\"/></node>\n\
         </create>\n</osmChange>\n",
    )
    .unwrap();
    assert_success(&tilepipe(&config, &url, &["apply", osc.to_str().unwrap()]));
    let widened = bounds_of(&config, &url, &["bounds"]);
    assert_close(widened, [expected[0], expected[1], 10.05, 50.03], 1e-7);

    // Measured again from the output tables: the rendered data's box.
    // PostGIS keeps geometry boxes in single precision, rounded outwards.
    let recomputed = bounds_of(&config, &url, &["bounds", "--recompute"]);
    assert_close(recomputed, widened, 1e-4);
    assert_eq!(bounds_of(&config, &url, &["bounds"]), recomputed);

    // TileJSON over real HTTP carries the box and its centre.
    let serve = start_serve(&config, &url);
    let styles = serve.get_json("/styles.json");
    let style = &styles[0];
    let bounds: Vec<f64> = serde_json::from_value(style["bounds"].clone()).unwrap();
    assert_close(bounds.try_into().unwrap(), recomputed, 1e-9);
    let center: Vec<f64> = serde_json::from_value(style["center"].clone()).unwrap();
    assert!(
        center[0] > recomputed[0] && center[0] < recomputed[2],
        "{center:?}"
    );
    assert!(
        center[1] > recomputed[1] && center[1] < recomputed[3],
        "{center:?}"
    );
    // About 3.6 × 3.3 km: zoom 14 fits it in 1024 × 768 pixels.
    assert_eq!(center[2], 14.0, "{center:?}");
    let tilejson = serve.get_json("/plain/tile.json");
    assert_eq!(tilejson["bounds"], style["bounds"]);
    assert_eq!(tilejson["center"], style["center"]);

    page_opens_on_the_data(&serve.base, work.path(), recomputed);
}

/// The map page without a hash, in headless Chromium: every tile it asks
/// for is at the zoom that fits the data in its window, and the tile
/// under the data's centre is among them.
fn page_opens_on_the_data(base: &str, work: &Path, bounds: [f64; 4]) {
    let Some(chromium) = find_in_path("chromium") else {
        eprintln!("page check skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    if !Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("web/node_modules/leaflet/dist/leaflet.js")
        .is_file()
    {
        eprintln!("page check skipped: Leaflet is not installed (npm install --prefix web)");
        return;
    }
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=800,600",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.join("chromium").display()
        ))
        .arg(format!("{base}/"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    // Leaflet's tile images: <img ... src="http://…/plain/z/x/y.png">.
    let tiles: Vec<(u8, u32, u32)> = dom
        .split("/plain/")
        .skip(1)
        .filter_map(|rest| {
            let path = rest.split(".png").next()?;
            let mut parts = path.split('/').map(|p| p.parse::<u32>().ok());
            Some((parts.next()?? as u8, parts.next()??, parts.next()??))
        })
        .collect();
    assert!(
        !tiles.is_empty(),
        "the page asked for no tiles:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The box is 0.05° × 0.03°: in an 800 × 600 map area Leaflet fits it
    // at zoom 14 (its `getBoundsZoom`); headless Chromium's viewport may
    // be a little smaller than its window, which fits it at 13. Zoom 2,
    // the old default view, is what must not happen.
    let zooms: std::collections::BTreeSet<u8> = tiles.iter().map(|t| t.0).collect();
    let zooms: Vec<u8> = zooms.into_iter().collect();
    assert!(zooms == [13] || zooms == [14], "{tiles:?}");
    let zoom = zooms[0];
    let centre = tilepipe::tile::lonlat_to_tile(
        (bounds[0] + bounds[2]) / 2.0,
        (bounds[1] + bounds[3]) / 2.0,
        zoom,
    );
    assert!(
        tiles.contains(&(zoom, centre.x, centre.y)),
        "{centre:?} not among {tiles:?}"
    );
}
