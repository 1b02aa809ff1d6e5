//! `tilepipe run` end to end: replication → apply → expiry → render →
//! HTTP. A newly published diff renames a street and moves a building;
//! within seconds the affected tiles at several zooms are served with new
//! bytes, an untouched tile keeps its bytes, and `/metrics` shows the lag
//! falling from over an interval to under one. Then `tilepipe status`
//! reports the database up to date and `tilepipe apply FILE.osc` applies
//! one more edit.
//!
//! Once with the classic output, once with the flex output: the database
//! imported with `-O flex -S styles/tilepipe/tilepipe-flex.lua`, the same
//! style (`tilepipe.xml`) drawing its tables.

use tilepipe_testkit::cli::{assert_success, init_at, tilepipe};
use tilepipe_testkit::http;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tilepipe::osm::changeset::{Action, Change};
use tilepipe::osm::{Location, Object, Way};
use tilepipe::replication::state::ReplicationState;
use tilepipe_testkit::feedgen::FeedWriter;
use tilepipe_testkit::feedserver::FeedServer;
use tilepipe_testkit::PgCluster;

const START: u64 = 700;
const STREET: &str = "Rivi Street 5";

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    http::get(port, path).unwrap_or_else(|| panic!("no answer for {path}"))
}

/// The slippy-map tile holding a point.
fn tile_of(lon: f64, lat: f64, z: u8) -> (u8, u32, u32) {
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n).floor() as u32;
    let lat = lat.to_radians();
    let y = ((1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor()
        as u32;
    (z, x, y)
}

fn tile_path(tile: (u8, u32, u32)) -> String {
    format!("/town/{}/{}/{}.png", tile.0, tile.1, tile.2)
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap().lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

fn spawn_run(config: &Path, database: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", config.to_str().unwrap(), "-d", database, "run"])
        .current_dir(repository())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `path` answers 200; returns its bytes.
fn wait_for_tile(port: u16, path: &str, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get(port, path);
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: still {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The output the database is imported with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Output {
    Classic,
    Flex,
}

/// The two runs each start a renderer: one at a time, so neither
/// misses its deadlines for the other's CPU.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_published_diff_reaches_the_served_tiles_within_seconds() {
    end_to_end(Output::Classic);
}

#[test]
fn a_published_diff_reaches_the_served_tiles_of_a_flex_database() {
    end_to_end(Output::Flex);
}

fn end_to_end(output: Output) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let town = tilepipe_testkit::town::synthetic_town();
    let osm = dir.path().join("town.osm");
    town.write_osm_file(&osm).unwrap();

    // The edit: rename a street, move the first building by about 30 m.
    let street = town
        .objects()
        .find_map(|o| match o {
            Object::Way(w) if w.tags.iter().any(|(k, v)| k == "name" && v == STREET) => Some(w),
            _ => None,
        })
        .expect("the town has the street");
    let building: Way = town
        .objects()
        .find_map(|o| match o {
            Object::Way(w) if w.tags.iter().any(|(k, _)| k == "building") => Some(w),
            _ => None,
        })
        .expect("the town has buildings");
    let mut changes = Vec::new();
    let mut renamed = street.clone();
    for (k, v) in renamed.tags.iter_mut() {
        if k == "name" {
            *v = "Uusi Katu".into();
        }
    }
    renamed.meta.version = renamed.meta.version.map(|v| v + 1);
    changes.push((Action::Modify, Object::Way(renamed)));
    let mut corners: Vec<i64> = building.nodes.clone();
    corners.dedup();
    corners.sort_unstable();
    corners.dedup();
    let mut building_at = None;
    for object in town.objects() {
        if let Object::Node(node) = object {
            if corners.binary_search(&node.id).is_ok() {
                let mut moved = node.clone();
                let at = moved.location.unwrap();
                building_at.get_or_insert(at);
                moved.location = Some(Location {
                    lon: at.lon + 0.0004,
                    lat: at.lat,
                });
                moved.meta.version = moved.meta.version.map(|v| v + 1);
                changes.push((Action::Modify, Object::Node(moved)));
            }
        }
    }
    let building_at = building_at.unwrap();
    // And a new untagged node north-east of the town (it draws nothing):
    // the data bounds `run` shows on TileJSON grow to take it in.
    let far = Location {
        lon: 10.05,
        lat: 50.03,
    };
    let mut far_node = town
        .objects()
        .find_map(|o| match o {
            Object::Node(n) => Some(n),
            _ => None,
        })
        .expect("the town has nodes");
    far_node.id = town.max_ids()[0] + 1000;
    far_node.location = Some(far);
    far_node.tags.clear();
    far_node.meta.version = far_node.meta.version.map(|_| 1);
    changes.push((Action::Create, Object::Node(far_node)));
    // Nodes before ways, as OsmChange files order them.
    changes.sort_by_key(|(_, o)| !matches!(o, Object::Node(_)));
    let changes: Vec<Change> = changes
        .into_iter()
        .map(|(action, object)| Change { action, object })
        .collect();

    // The feed: the start state a minute old, the diff written at the
    // moment of publication.
    let feed_dir = dir.path().join("feed");
    let start = ReplicationState {
        sequence: START,
        timestamp: chrono::Utc::now() - chrono::Duration::seconds(90),
    };
    let writer = FeedWriter::create(&feed_dir, start).unwrap();
    let server = FeedServer::start_blocking(&feed_dir).unwrap();

    let url = PgCluster::shared()
        .create_database(match output {
            Output::Classic => "run_e2e",
            Output::Flex => "run_e2e_flex",
        })
        .unwrap();
    let tiles = dir.path().join("tiles");
    let port = http::free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "replication:\n  poll_margin_secs: 0\n  retry_initial_secs: 1\n  retry_max_secs: 1\n  timeout_secs: 5\n\
             styles:\n  - name: town\n    xml: {xml}\n    tile_dir: {tiles}\n    min_zoom: 0\n    max_zoom: 18\n\
             render:\n  threads: 2\n\
             serve:\n  listen: 127.0.0.1:{port}\n\
             expire:\n  styles:\n    - name: town\n      tile_dir: {tiles}\n      min_zoom: 12\n      max_zoom: 18\n",
            xml = repository().join("styles/tilepipe/tilepipe.xml").display(),
            tiles = tiles.display(),
        ),
    )
    .unwrap();
    let flex_config = repository().join("styles/tilepipe/tilepipe-flex.lua");
    let mut import = vec!["import"];
    if output == Output::Flex {
        import.extend(["-O", "flex", "-S", flex_config.to_str().unwrap()]);
    }
    import.push(osm.to_str().unwrap());
    assert_success(&tilepipe(&config, &url, &import));
    let mut db = tilepipe_testkit::db::connect(&url);
    let property = |db: &mut postgres::Client, name: &str| -> Option<String> {
        db.query_opt(
            "SELECT value FROM osm2pgsql_properties WHERE property = $1",
            &[&name],
        )
        .unwrap()
        .map(|row| row.get(0))
    };
    let expected_output = match output {
        Output::Classic => "pgsql",
        Output::Flex => "flex",
    };
    assert_eq!(
        property(&mut db, "output").as_deref(),
        Some(expected_output)
    );
    if output == Output::Flex {
        assert_eq!(
            property(&mut db, "style").as_deref(),
            flex_config.to_str(),
            "osm2pgsql records the flex config as the style"
        );
    }
    init_at(&config, &url, &server.url(), START);

    let mut daemon = spawn_run(&config, &url);
    let up = Instant::now();
    while http::get(port, "/health").is_none() {
        assert!(
            up.elapsed() < Duration::from_secs(60),
            "tilepipe run did not start serving"
        );
        if let Some(status) = daemon.try_wait().unwrap() {
            panic!(
                "tilepipe run exited early: {status}\n{}",
                stderr_of(&mut daemon)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Affected: the street's label at z15 or z16 (it spans two tiles at
    // z16; at z15 the label may yield to a neighbour's, as Mapnik places
    // labels in the style's order), the building at z16–z18.
    // Untouched: the park east of the town at z18, in another metatile.
    let street_tiles = |z: u8| {
        let mut tiles: Vec<_> = street_nodes(&town, &street)
            .iter()
            .map(|at| tile_of(at.lon, at.lat, z))
            .collect();
        tiles.dedup();
        tiles
    };
    let mut affected: Vec<Vec<(u8, u32, u32)>> =
        vec![[street_tiles(15), street_tiles(16)].concat()];
    for z in [16, 17, 18] {
        affected.push(vec![tile_of(
            building_at.lon + 0.0002,
            building_at.lat + 0.0001,
            z,
        )]);
    }
    let untouched = tile_of(10.0115, 50.004, 18);
    let street_end = tile_of(10.0081, 50.004, 18);
    assert_ne!(
        untouched.1 / 8,
        street_end.1 / 8,
        "the untouched tile must lie in another metatile than the edits"
    );
    let mut before = std::collections::HashMap::new();
    for &tile in affected.iter().flatten().chain([&untouched]) {
        before.insert(
            tile,
            wait_for_tile(port, &tile_path(tile), Duration::from_secs(60)),
        );
    }
    // TileJSON carries the box the import stored.
    let bounds_before = served_bounds(port);
    let stored = tilepipe(&config, &url, &["bounds"]);
    assert_success(&stored);
    let stored: Vec<f64> = String::from_utf8(stored.stdout)
        .unwrap()
        .trim()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    for (served, stored) in bounds_before.iter().zip(&stored) {
        assert!(
            (served - stored).abs() < 1e-9,
            "{bounds_before:?} vs {stored:?}"
        );
    }
    assert!(bounds_before[2] < far.lon && bounds_before[3] < far.lat);
    let lag_before = metric(port, "tilepipe_replication_lag_seconds").expect("lag metric");
    assert!(lag_before > 60.0, "lag before the diff: {lag_before}");

    // Publish the diff now.
    let published = Instant::now();
    writer
        .write_diff(
            ReplicationState {
                sequence: START + 1,
                timestamp: chrono::Utc::now(),
            },
            &changes,
        )
        .unwrap();

    let mut fresh_after = Vec::new();
    for group in &affected {
        let deadline = published + Duration::from_secs(20);
        'group: loop {
            for &tile in group {
                let (status, body) = get(port, &tile_path(tile));
                if status == 200 && body != before[&tile] {
                    fresh_after.push((tile, published.elapsed()));
                    break 'group;
                }
            }
            assert!(
                Instant::now() < deadline,
                "none of {group:?} re-rendered within 20 s of publication\n{}",
                stderr_of(&mut daemon)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("fresh tiles after publication: {fresh_after:?}");
    let (status, body) = get(port, &tile_path(untouched));
    assert_eq!(status, 200);
    assert_eq!(body, before[&untouched], "the untouched tile changed");
    let lag_after = metric(port, "tilepipe_replication_lag_seconds").expect("lag metric");
    assert!(
        lag_after < 60.0,
        "lag after the diff: {lag_after} (before {lag_before})"
    );
    assert_eq!(
        metric(port, "tilepipe_replication_sequence"),
        Some((START + 1) as f64)
    );
    // The batch widened the stored box, and `run` shows it at once.
    let bounds_after = served_bounds(port);
    assert_eq!(&bounds_after[..2], &bounds_before[..2]);
    assert!((bounds_after[2] - far.lon).abs() < 1e-9, "{bounds_after:?}");
    assert!((bounds_after[3] - far.lat).abs() < 1e-9, "{bounds_after:?}");
    // The other stages report to the same registry.
    assert!(metric(port, "tilepipe_batches_applied_total") >= Some(1.0));
    assert!(metric(port, "tilepipe_expired_metatiles_total") > Some(0.0));
    assert!(metric(port, "tilepipe_render_mapnik_seconds_total") > Some(0.0));

    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}\n{}", stderr_of(&mut daemon));

    // `status` on the database `run` left: up to date with the feed.
    let out = tilepipe(&config, &url, &["status"]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("which is at sequence {}", START + 1))
            && text.contains("Local database is up to date with server"),
        "{text}"
    );
    server.shutdown();

    // `apply FILE.osc` on it: one more rename reaches the street's rows.
    let mut again = street.clone();
    for (k, v) in again.tags.iter_mut() {
        if k == "name" {
            *v = "Kolmas Katu".into();
        }
    }
    again.meta.version = again.meta.version.map(|v| v + 2);
    let osc = dir.path().join("again.osc");
    tilepipe::osm::osc_write::write_osc(
        &mut std::fs::File::create(&osc).unwrap(),
        "test",
        [&Change {
            action: Action::Modify,
            object: Object::Way(again),
        }],
    )
    .unwrap();
    assert_success(&tilepipe(&config, &url, &["apply", osc.to_str().unwrap()]));
    let names: Vec<String> = db
        .query(
            "SELECT DISTINCT name FROM planet_osm_line WHERE osm_id = $1",
            &[&street.id],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(names, ["Kolmas Katu"]);
}

/// The first style's TileJSON `bounds` on `/styles.json`.
fn served_bounds(port: u16) -> Vec<f64> {
    let (status, body) = get(port, "/styles.json");
    assert_eq!(status, 200);
    let styles: serde_json::Value = serde_json::from_slice(&body).unwrap();
    serde_json::from_value(styles[0]["bounds"].clone()).unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut text = String::new();
    if let Some(stderr) = child.stderr.as_mut() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

fn street_nodes(town: &tilepipe_testkit::OsmData, street: &Way) -> Vec<Location> {
    street
        .nodes
        .iter()
        .map(|id| {
            town.objects()
                .find_map(|o| match o {
                    Object::Node(n) if n.id == *id => n.location,
                    _ => None,
                })
                .unwrap()
        })
        .collect()
}
