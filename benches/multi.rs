//! More than one machine, measured on loopback: requests per second and
//! edit-to-fresh-tile time through Varnish (`varnish/tilepipe.vcl`) with
//! one and with two render nodes, each a `tilepipe serve` over its own
//! streaming standby of the writer's primary, `tilepipe run` as the
//! writer with `expire.nodes` (the setup of `tests/multi_node.rs`).
//!
//! Per node count:
//! - cold: 32 z18 tiles of 32 different metatiles of the synthetic town,
//!   requested through Varnish by 4 clients at once: every one a render
//!   on the node Varnish shards it to (metatiles per second);
//! - hot: `wrk -t2 -c16` for 5 s over the same 32 tiles, now cached in
//!   Varnish (requests per second, p99);
//! - freshness: 3 edits (a building moved back and forth); the time from
//!   the diff's publication until Varnish serves the edited z17 tile with
//!   new bytes (the writer polls the feed every second, so up to 1 s of it
//!   is the feed's cadence).
//!
//! On a 2-core machine the nodes, the standbys, Varnish and the writer
//! share the same cores: the figures show the mechanism working, not the
//! speed-up separate machines give.
//!
//! `cargo bench --bench multi` (or `--profile dev` to reuse a debug
//! build; Mapnik, PostgreSQL and Varnish run at full speed either way).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tilepipe::osm::Object;
use tilepipe::replication::state::ReplicationState;
use tilepipe_testkit::cli::{assert_success, init_at, tilepipe};
use tilepipe_testkit::feedgen::FeedWriter;
use tilepipe_testkit::feedserver::FeedServer;
use tilepipe_testkit::multi::{moved_east, ServeNode};
use tilepipe_testkit::paths::tilepipe_bin;
use tilepipe_testkit::varnish::Varnish;
use tilepipe_testkit::{http, PgCluster};

const START: u64 = 900;
const STYLE: &str = "town";
const COLD_TILES: u32 = 32;
const EDITS: u32 = 3;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Figures {
    cold_metatiles_per_sec: f64,
    hot_rps: f64,
    hot_p99_ms: f64,
    fresh_secs: Vec<f64>,
}

fn main() {
    if !tilepipe_testkit::varnish::available() {
        eprintln!("varnishd with vmod_xkey is not installed (scripts/install-deps): skipped");
        return;
    }
    let mut rows = Vec::new();
    for nodes in [1, 2] {
        let figures = measure(nodes);
        rows.push((nodes, figures));
    }
    println!("\n| render nodes | cold renders through Varnish (metatiles/s) | hot requests/s | hot p99 ms | edit to fresh tile through Varnish, s (median, min–max of {EDITS}) |");
    println!("|---:|---:|---:|---:|---:|");
    for (nodes, f) in &rows {
        let mut fresh = f.fresh_secs.clone();
        fresh.sort_by(f64::total_cmp);
        println!(
            "| {nodes} | {:.2} | {:.0} | {:.2} | {:.2} ({:.2}–{:.2}) |",
            f.cold_metatiles_per_sec,
            f.hot_rps,
            f.hot_p99_ms,
            fresh[fresh.len() / 2],
            fresh[0],
            fresh[fresh.len() - 1]
        );
        println!(
            "BENCH multi nodes={nodes} cold_metatiles_per_sec={:.3} hot_rps={:.0} hot_p99_ms={:.3} fresh_median_secs={:.3}",
            f.cold_metatiles_per_sec,
            f.hot_rps,
            f.hot_p99_ms,
            fresh[fresh.len() / 2]
        );
    }
}

/// The shipped VCL with the first `nodes.len()` example backends pointed
/// at the nodes and the others removed.
fn vcl_for(nodes: &[ServeNode]) -> String {
    let shipped = std::fs::read_to_string(repository().join("varnish/tilepipe.vcl")).unwrap();
    let mut vcl = shipped;
    for (i, host) in ["127.0.0.2", "127.0.0.3"].iter().enumerate() {
        let example = format!(".host = \"{host}\"; .port = \"8080\";");
        match nodes.get(i) {
            Some(node) => {
                vcl = vcl.replace(
                    &example,
                    &format!(".host = \"{}\"; .port = \"{}\";", node.ip, node.http_port),
                )
            }
            None => {
                let name = format!("node{}", i + 1);
                vcl = vcl
                    .lines()
                    .filter(|line| {
                        !line.contains(&format!("backend {name} "))
                            && !line.contains(&format!("add_backend({name})"))
                    })
                    .map(|line| format!("{line}\n"))
                    .collect();
            }
        }
    }
    vcl
}

fn through_varnish(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    http::get_from(Ipv4Addr::LOCALHOST, port, path)
}

fn wait(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn measure(count: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let town = tilepipe_testkit::town::synthetic_town();
    let osm = dir.path().join("town.osm");
    town.write_osm_file(&osm).unwrap();
    let building = town
        .objects()
        .find_map(|o| match o {
            Object::Way(w) if w.tags.iter().any(|(k, _)| k == "building") => Some(w.clone()),
            _ => None,
        })
        .unwrap();
    let corners: Vec<tilepipe::osm::Node> = town
        .objects()
        .filter_map(|o| match o {
            Object::Node(n) if building.nodes.contains(&n.id) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let at = corners[0].location.unwrap();
    let edited = tilepipe::tile::lonlat_to_tile(at.lon + 0.0002, at.lat + 0.0001, 17);
    let path = format!("/{STYLE}/17/{}/{}.png", edited.x, edited.y);

    let primary = PgCluster::start(None).unwrap();
    let url = primary.create_database("multi_bench").unwrap();
    let dbname = url.rsplit('/').next().unwrap().to_string();
    let feed_dir = dir.path().join("feed");
    let feed = FeedWriter::create(
        &feed_dir,
        ReplicationState {
            sequence: START,
            timestamp: chrono::Utc::now() - chrono::Duration::seconds(90),
        },
    )
    .unwrap();
    let server = FeedServer::start_blocking(&feed_dir).unwrap();
    let config = dir.path().join("import.yaml");
    std::fs::write(&config, "replication:\n  poll_margin_secs: 0\n").unwrap();
    assert_success(&tilepipe(&config, &url, &["import", osm.to_str().unwrap()]));
    init_at(&config, &url, &server.url(), START);

    let xml = repository().join("styles/tilepipe/tilepipe.xml");
    let varnish_port = http::free_port();
    let purge = format!("  purge:\n    varnish: [\"http://127.0.0.1:{varnish_port}/\"]\n");
    let mut standbys = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..count {
        let standby = primary.start_standby().unwrap();
        let standby_url = standby.url(&dbname);
        nodes.push(ServeNode::start(
            dir.path(),
            &format!("n{}", i + 1),
            Ipv4Addr::new(127, 0, 0, 2 + i as u8),
            (STYLE, &xml),
            &standby_url,
            &purge,
        ));
        standbys.push((standby, standby_url));
    }
    // Kept until the end: dropping it stops varnishd.
    let _varnish = Varnish::start(&vcl_for(&nodes), varnish_port).unwrap();

    let writer_port = http::free_port();
    let entries: String = nodes
        .iter()
        .zip(&standbys)
        .map(|(node, (_, standby))| {
            format!(
                "    - name: {}\n      renderd: {}\n      standby: \"{standby}\"\n      styles: [{STYLE}]\n      min_zoom: 14\n      max_zoom: 18\n",
                node.name,
                node.renderd_addr()
            )
        })
        .collect();
    let writer_config = dir.path().join("writer.yaml");
    std::fs::write(
        &writer_config,
        format!(
            "replication:\n  interval: 1\n  poll_margin_secs: 0\n  retry_initial_secs: 1\n  retry_max_secs: 1\n  timeout_secs: 5\n\
             serve:\n  listen: 127.0.0.1:{writer_port}\n\
             expire:\n  nodes:\n{entries}"
        ),
    )
    .unwrap();
    let mut writer: Child = Command::new(tilepipe_bin())
        .args(["-c", writer_config.to_str().unwrap(), "-d", &url, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait(Duration::from_secs(60), "the writer", || {
        http::get(writer_port, "/health").is_some()
    });
    wait(Duration::from_secs(30), "Varnish's backends", || {
        through_varnish(varnish_port, &path).is_some_and(|(s, _)| s == 200)
    });

    // Cold: distinct metatiles, 4 clients.
    let origin = tilepipe::tile::lonlat_to_tile(9.99, 50.012, 18);
    let tiles: Vec<String> = (0..COLD_TILES)
        .map(|i| {
            let (x, y) = ((origin.x & !7) + 8 * (i % 8), (origin.y & !7) + 8 * (i / 8));
            format!("/{STYLE}/18/{x}/{y}.png")
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in tiles.chunks(tiles.len() / 4) {
            scope.spawn(move || {
                for tile in chunk {
                    let (status, _) = through_varnish(varnish_port, tile).unwrap();
                    assert_eq!(status, 200, "{tile}");
                }
            });
        }
    });
    let cold_metatiles_per_sec = f64::from(COLD_TILES) / started.elapsed().as_secs_f64();

    // Hot: the same tiles from Varnish's cache.
    let script = dir.path().join("tiles.lua");
    let list: Vec<String> = tiles.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        &script,
        format!(
            "-- Written by benches/multi.rs: the cached tiles in turn.\n\
             local paths = {{{}}}\n\
             local i = 0\n\
             request = function()\n\
             \x20 i = i % #paths + 1\n\
             \x20 return wrk.format(\"GET\", paths[i])\n\
             end\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let out = Command::new("wrk")
        .args(["-t2", "-c16", "-d5s", "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{varnish_port}"))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let hot_rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    let hot_p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_ms(v.trim()))
        .unwrap_or(f64::NAN);

    // Freshness: edits back and forth.
    let mut fresh_secs = Vec::new();
    for edit in 1..=EDITS {
        let before = through_varnish(varnish_port, &path).unwrap().1;
        let dlon = if edit % 2 == 1 { 0.0004 } else { 0.0 };
        feed.write_diff(
            ReplicationState {
                sequence: START + u64::from(edit),
                timestamp: chrono::Utc::now(),
            },
            &moved_east(&corners, dlon, edit),
        )
        .unwrap();
        let published = Instant::now();
        wait(Duration::from_secs(60), "the edit through Varnish", || {
            through_varnish(varnish_port, &path).is_some_and(|(s, b)| s == 200 && b != before)
        });
        fresh_secs.push(published.elapsed().as_secs_f64());
    }
    let _ = writer.kill();
    let _ = writer.wait();
    eprintln!("{count} node(s): cold {cold_metatiles_per_sec:.2}/s, hot {hot_rps:.0}/s, fresh {fresh_secs:?}");
    Figures {
        cold_metatiles_per_sec,
        hot_rps,
        hot_p99_ms,
        fresh_secs,
    }
}

/// "1.23ms" → milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}
