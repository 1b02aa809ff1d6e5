//! More than one machine, on loopback: the test kit's private primary
//! with two streaming standbys (`pg_basebackup -R`), two `tilepipe serve`
//! render nodes on 127.0.0.2 and 127.0.0.3 each drawing from its own
//! standby, and `tilepipe run` as the writer with `expire.nodes`.
//!
//! Varnish runs on 127.0.0.1 in front of the nodes, with the shipped
//! `varnish/tilepipe.vcl`.
//!
//! One scenario, in steps that build on each other:
//! 0. Varnish shards tiles by metatile over both nodes (tiles of one
//!    metatile come from one node) and caches them;
//! 1. a published diff reaches node a (new tile bytes) while node b's
//!    standby has its replay paused: b receives nothing (its backlog shows
//!    on the writer's `/metrics`) until replay resumes, then it does, and
//!    the new bytes come through Varnish (the re-renders purged it);
//! 2. node a is killed; its tiles are served by b through Varnish; the
//!    next diff waits in a's backlog (node b gets it) and reaches a when
//!    it comes back;
//! 3. every metatile a node rendered was purged from Varnish.
//!
//! The writer also marks its own cache dirty (no renderer) and purges
//! those metatiles through a CDN-style request template (a stand-in API).
//!
//! Without varnishd (`scripts/install-deps`) the Varnish steps are
//! skipped, except in CI where that fails.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tilepipe::osm::{Location, Object, Way};
use tilepipe::replication::state::ReplicationState;
use tilepipe_testkit::cli::{assert_success, init_at, tilepipe};
use tilepipe_testkit::feedgen::FeedWriter;
use tilepipe_testkit::feedserver::FeedServer;
use tilepipe_testkit::multi::{moved_east, ServeNode};
use tilepipe_testkit::varnish::Varnish;
use tilepipe_testkit::{http, PgCluster};

const START: u64 = 900;
const STYLE: &str = "town";

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first building of the town and its corner nodes.
fn building(town: &tilepipe_testkit::OsmData) -> (Way, Vec<tilepipe::osm::Node>) {
    let way = town
        .objects()
        .find_map(|o| match o {
            Object::Way(w) if w.tags.iter().any(|(k, _)| k == "building") => Some(w.clone()),
            _ => None,
        })
        .expect("the town has buildings");
    let corners = town
        .objects()
        .filter_map(|o| match o {
            Object::Node(n) if way.nodes.contains(&n.id) => Some(n.clone()),
            _ => None,
        })
        .collect();
    (way, corners)
}

/// The z17 tile path of a point.
fn tile_path(at: Location) -> String {
    let tile = tilepipe::tile::lonlat_to_tile(at.lon, at.lat, 17);
    format!("/{STYLE}/{}/{}/{}.png", tile.z, tile.x, tile.y)
}

/// A labelled sample of the writer's `/metrics`.
fn metric(port: u16, name: &str, node: &str) -> Option<f64> {
    let (status, body) = http::get(port, "/metrics")?;
    assert_eq!(status, 200);
    let prefix = format!("{name}{{node=\"{node}\"}} ");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// The sum of every sample of `name` (all labels) on a node's `/metrics`.
fn node_metric_sum(node: &ServeNode, name: &str) -> f64 {
    let (status, body) = node.get("/metrics").expect("node metrics");
    assert_eq!(status, 200);
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET path` through Varnish: status, the `x-node` that drew it, body.
fn through_varnish(varnish: &Varnish, path: &str) -> (u16, String, Vec<u8>) {
    let (status, head, body) = http::get_with_head(Ipv4Addr::LOCALHOST, varnish.port, path)
        .unwrap_or_else(|| panic!("Varnish did not answer {path}"));
    let node = head
        .lines()
        .find_map(|line| line.strip_prefix("x-node: "))
        .unwrap_or_default()
        .trim()
        .to_string();
    (status, node, body)
}

/// The shipped VCL with its two example backends pointed at the nodes.
fn vcl_for(a: &ServeNode, b: &ServeNode) -> String {
    let mut vcl = std::fs::read_to_string(repository().join("varnish/tilepipe.vcl")).unwrap();
    for (node, host) in [(a, "127.0.0.2"), (b, "127.0.0.3")] {
        let example = format!(".host = \"{host}\"; .port = \"8080\";");
        assert!(
            vcl.contains(&example),
            "the shipped VCL has a backend {host}:8080"
        );
        vcl = vcl.replace(
            &example,
            &format!(".host = \"{}\"; .port = \"{}\";", node.ip, node.http_port),
        );
    }
    vcl
}

/// Polls `check` every 100 ms until it holds; fails with `what` and the
/// logs after `within`.
fn wait_until(
    within: Duration,
    what: &str,
    logs: &dyn Fn() -> String,
    check: &mut dyn FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The tile's bytes once the node serves it.
fn tile_bytes(node: &ServeNode, path: &str) -> Vec<u8> {
    let mut bytes = None;
    wait_until(
        Duration::from_secs(60),
        &format!("node {} serving {path}", node.name),
        &|| node.log_text(),
        &mut || match node.get(path) {
            Some((200, body)) => {
                bytes = Some(body);
                true
            }
            _ => false,
        },
    );
    bytes.unwrap()
}

struct Writer {
    child: Child,
    log: PathBuf,
}

impl Writer {
    fn start(config: &Path, database: &str, log: PathBuf) -> Writer {
        let child = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
            .args(["-c", config.to_str().unwrap(), "-d", database, "run"])
            .current_dir(repository())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Writer { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn expiry_reaches_each_node_once_its_standby_replayed_the_edit() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let town = tilepipe_testkit::town::synthetic_town();
    let osm = dir.path().join("town.osm");
    town.write_osm_file(&osm).unwrap();
    let (_, corners) = building(&town);
    let at = corners[0].location.unwrap();
    let path = tile_path(Location {
        lon: at.lon + 0.0002,
        lat: at.lat + 0.0001,
    });

    // The primary: its own cluster (standbys copy a whole cluster).
    let primary = PgCluster::start(None).unwrap();
    let url = primary.create_database("multi").unwrap();
    let dbname = url.rsplit('/').next().unwrap().to_string();
    let feed_dir = dir.path().join("feed");
    let writer_feed = FeedWriter::create(
        &feed_dir,
        ReplicationState {
            sequence: START,
            timestamp: chrono::Utc::now() - chrono::Duration::seconds(90),
        },
    )
    .unwrap();
    let feed = FeedServer::start_blocking(&feed_dir).unwrap();
    let xml = repository().join("styles/tilepipe/tilepipe.xml");

    // Import on the primary, then copy it: each standby streams from here.
    let import_config = dir.path().join("import.yaml");
    std::fs::write(&import_config, "replication:\n  poll_margin_secs: 0\n").unwrap();
    assert_success(&tilepipe(
        &import_config,
        &url,
        &["import", osm.to_str().unwrap()],
    ));
    init_at(&import_config, &url, &feed.url(), START);
    let standby_a = primary.start_standby().unwrap();
    let standby_b = primary.start_standby().unwrap();
    let (url_a, url_b) = (standby_a.url(&dbname), standby_b.url(&dbname));

    let with_varnish = tilepipe_testkit::varnish::available();
    assert!(
        with_varnish || !tilepipe_testkit::paths::in_ci(),
        "varnishd with vmod_xkey is not installed (scripts/install-deps)"
    );
    if !with_varnish {
        eprintln!("varnishd or vmod_xkey missing: skipping the Varnish steps");
    }
    let varnish_port = http::free_port();
    let purge = if with_varnish {
        format!("  purge:\n    varnish: [\"http://127.0.0.1:{varnish_port}/\"]\n")
    } else {
        String::new()
    };
    let mut node_a = ServeNode::start(
        dir.path(),
        "a",
        Ipv4Addr::new(127, 0, 0, 2),
        (STYLE, &xml),
        &url_a,
        &purge,
    );
    let node_b = ServeNode::start(
        dir.path(),
        "b",
        Ipv4Addr::new(127, 0, 0, 3),
        (STYLE, &xml),
        &url_b,
        &purge,
    );
    let varnish =
        with_varnish.then(|| Varnish::start(&vcl_for(&node_a, &node_b), varnish_port).unwrap());

    // The writer also keeps a cache of its own (a mod_tile cache it only
    // marks dirty, having no renderer) behind a CDN: the metatiles it
    // touches are purged through the CDN's API (a stand-in here).
    let cdn = http::RecordingServer::start(&[]);
    let writer_port = http::free_port();
    let writer_config = dir.path().join("writer.yaml");
    let node_entry = |node: &ServeNode, standby: &str| {
        format!(
            "    - name: {}\n      renderd: {}\n      standby: \"{standby}\"\n      styles: [{STYLE}]\n      min_zoom: 16\n      max_zoom: 18\n",
            node.name,
            node.renderd_addr()
        )
    };
    std::fs::write(
        &writer_config,
        format!(
            "replication:\n  interval: 1\n  poll_margin_secs: 0\n  retry_initial_secs: 1\n  retry_max_secs: 1\n  timeout_secs: 5\n\
             serve:\n  listen: 127.0.0.1:{writer_port}\n\
             \x20 purge:\n    requests:\n      - url: \"http://127.0.0.1:{cdn_port}/purge?keys={{keys}}\"\n\
             expire:\n  styles:\n    - name: {STYLE}\n      tile_dir: {writer_tiles}\n      min_zoom: 16\n      max_zoom: 18\n\
             \x20 nodes:\n{}{}",
            node_entry(&node_a, &url_a),
            node_entry(&node_b, &url_b),
            cdn_port = cdn.port,
            writer_tiles = dir.path().join("writer-tiles").display(),
        ),
    )
    .unwrap();
    let writer = Writer::start(&writer_config, &url, dir.path().join("writer.log"));
    let node_logs = [
        node_a.log_path().to_path_buf(),
        node_b.log_path().to_path_buf(),
    ];
    let logs = || {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- writer\n{}\n--- node a\n{}\n--- node b\n{}",
            writer.log_text(),
            read(&node_logs[0]),
            read(&node_logs[1])
        )
    };
    wait_until(
        Duration::from_secs(60),
        "the writer's /metrics",
        &logs,
        &mut || metric(writer_port, "tilepipe_node_up", "b") == Some(1.0),
    );

    let original_a = tile_bytes(&node_a, &path);
    let original_b = tile_bytes(&node_b, &path);
    assert_eq!(original_a, original_b, "both nodes draw the same data");

    // Step 0: Varnish shards by metatile over both nodes. One z18 tile per
    // metatile across the town, then a second tile of each metatile: the
    // same node draws it. Tiles of a's share, not fetched yet, are kept
    // for the failover step.
    let mut a_share = Vec::new();
    if let Some(varnish) = &varnish {
        wait_until(
            Duration::from_secs(20),
            "Varnish serving the tile",
            &logs,
            &mut || through_varnish(varnish, &path).0 == 200,
        );
        assert_eq!(through_varnish(varnish, &path).2, original_a);
        let origin = tilepipe::tile::lonlat_to_tile(10.0, 50.008, 18);
        let (x0, y0) = (origin.x & !7, origin.y & !7);
        let mut others = std::collections::BTreeSet::new();
        for i in 0..12 {
            let (x, y) = (x0 + 8 * (i % 4), y0 + 8 * (i / 4));
            let first = format!("/{STYLE}/18/{x}/{y}.png");
            let second = format!("/{STYLE}/18/{}/{}.png", x + 7, y + 3);
            let (status, node, _) = through_varnish(varnish, &first);
            assert_eq!(status, 200, "{first}");
            if node == "node1" {
                a_share.push(second);
                continue;
            }
            let (_, other, _) = through_varnish(varnish, &second);
            assert_eq!(node, other, "{first} and {second} share a metatile");
            others.insert(node);
        }
        assert!(
            !a_share.is_empty() && !others.is_empty(),
            "Varnish used one node only: {others:?}"
        );
    }

    // Step 1: b's standby stops replaying; the edit is published.
    let mut standby_b_client = standby_b.connect(&dbname).unwrap();
    standby_b_client
        .batch_execute("SELECT pg_wal_replay_pause()")
        .unwrap();
    writer_feed
        .write_diff(
            ReplicationState {
                sequence: START + 1,
                timestamp: chrono::Utc::now(),
            },
            &moved_east(&corners, 0.0004, 1),
        )
        .unwrap();
    let published = Instant::now();
    let mut first_edit = Vec::new();
    wait_until(
        Duration::from_secs(30),
        "node a drawing the edit",
        &logs,
        &mut || match node_a.get(&path) {
            Some((200, body)) if body != original_a => {
                first_edit = body;
                true
            }
            _ => false,
        },
    );
    eprintln!("node a fresh {:?} after publication", published.elapsed());
    wait_until(
        Duration::from_secs(10),
        "the writer purging the metatiles it touched",
        &logs,
        &mut || {
            let key = format!("{STYLE}%2F17%2F");
            cdn.requests()
                .iter()
                .any(|r| r.method == "POST" && r.target.contains(&key))
        },
    );
    // Node a got it; node b, whose standby has not replayed it, must not.
    wait_until(
        Duration::from_secs(10),
        "node b's backlog",
        &logs,
        &mut || {
            metric(writer_port, "tilepipe_node_backlog_metatiles", "b") > Some(0.0)
                && metric(writer_port, "tilepipe_node_replay_lag_bytes", "b") > Some(0.0)
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        metric(writer_port, "tilepipe_node_delivered_metatiles_total", "b"),
        Some(0.0),
        "node b received expiry before its standby replayed the edit\n{}",
        logs()
    );
    assert_eq!(node_b.get(&path).unwrap().1, original_b);
    assert_eq!(
        metric(writer_port, "tilepipe_node_backlog_metatiles", "a"),
        Some(0.0)
    );

    standby_b_client
        .batch_execute("SELECT pg_wal_replay_resume()")
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "node b drawing the edit after replay resumed",
        &logs,
        &mut || {
            node_b
                .get(&path)
                .is_some_and(|(s, body)| s == 200 && body == first_edit)
        },
    );
    wait_until(
        Duration::from_secs(10),
        "node b's backlog emptied",
        &logs,
        &mut || metric(writer_port, "tilepipe_node_backlog_metatiles", "b") == Some(0.0),
    );

    if let Some(varnish) = &varnish {
        // Varnish cached the old tile for days (serve.cache); the nodes'
        // purges after their re-renders dropped it.
        wait_until(
            Duration::from_secs(10),
            "the edit through Varnish",
            &logs,
            &mut || through_varnish(varnish, &path).2 == first_edit,
        );
    }

    // Step 2: node a dies; the next edit waits for it.
    node_a.kill();
    if let Some(varnish) = &varnish {
        // Its probe fails within seconds; its share moves to b.
        let tile = &a_share[0];
        wait_until(
            Duration::from_secs(15),
            "a's tiles served by b",
            &logs,
            &mut || {
                let (status, node, _) = through_varnish(varnish, tile);
                status == 200 && node == "node2"
            },
        );
    }
    writer_feed
        .write_diff(
            ReplicationState {
                sequence: START + 2,
                timestamp: chrono::Utc::now(),
            },
            &moved_east(&corners, -0.0004, 2),
        )
        .unwrap();
    let mut second_edit = Vec::new();
    wait_until(
        Duration::from_secs(30),
        "node b drawing the second edit",
        &logs,
        &mut || match node_b.get(&path) {
            Some((200, body)) if body != first_edit => {
                second_edit = body;
                true
            }
            _ => false,
        },
    );
    wait_until(
        Duration::from_secs(20),
        "node a down with a backlog",
        &logs,
        &mut || {
            metric(writer_port, "tilepipe_node_up", "a") == Some(0.0)
                && metric(writer_port, "tilepipe_node_backlog_metatiles", "a") > Some(0.0)
        },
    );
    node_a.restart();
    wait_until(
        Duration::from_secs(40),
        "node a drawing its backlog after it came back",
        &logs,
        &mut || {
            node_a
                .get(&path)
                .is_some_and(|(s, body)| s == 200 && body == second_edit)
        },
    );
    wait_until(
        Duration::from_secs(10),
        "node a's backlog emptied",
        &logs,
        &mut || metric(writer_port, "tilepipe_node_backlog_metatiles", "a") == Some(0.0),
    );
    if let Some(varnish) = &varnish {
        wait_until(
            Duration::from_secs(10),
            "the second edit through Varnish",
            &logs,
            &mut || through_varnish(varnish, &path).2 == second_edit,
        );
        // Step 3: every metatile a node rendered was purged (b ran all
        // along; a's counters restarted with it).
        for node in [&node_a, &node_b] {
            let mut figures = (0.0, 0.0);
            wait_until(
                Duration::from_secs(10),
                &format!("node {}: a purge for every render", node.name),
                &logs,
                &mut || {
                    figures = (
                        node_metric_sum(node, "tilepipe_renders_total"),
                        node_metric_sum(node, "tilepipe_purged_keys_total"),
                    );
                    figures.0 > 0.0
                        && figures.0 == figures.1
                        && node_metric_sum(node, "tilepipe_purge_pending_keys") == 0.0
                },
            );
            assert_eq!(node_metric_sum(node, "tilepipe_purge_failures_total"), 0.0);
            eprintln!(
                "node {}: {} renders, {} purged keys",
                node.name, figures.0, figures.1
            );
        }
    }
    eprintln!("multi-node scenario: {:?}", started.elapsed());
    drop(writer);
}
