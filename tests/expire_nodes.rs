//! Expiry delivery to render nodes (`expire.nodes`), in-process against
//! tilepipe's own renderd protocol server (its render queue, no renderer
//! behind it) and the test kit's shared cluster. The node's "standby" is
//! the primary itself, which counts as replayed (not in recovery); the
//! replay gate on real standbys is `multi_node`'s.
//!
//! A crash between a batch's commit and its commit-position stamp leaves
//! the backlog unstamped: delivery stamps it and delivers. A node nobody
//! listens for keeps its backlog, reported down with its size.
//!
//! `tilepipe status` shows each node's backlog and its standby's replay
//! lag; a standby nobody listens for is shown unreachable, and the exit
//! code stays the replication one (0).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tilepipe::expire::batch::BatchTiles;
use tilepipe::expire::nodes::{self, Delivery, NodeStatus, RenderNode};
use tilepipe::expire::tileset::TileSet;
use tilepipe::render::config::{RenderConfig, StyleConfig};
use tilepipe::render::queue::{Priority, RenderQueue};
use tilepipe::render::server::ProtocolListeners;
use tilepipe_testkit::PgCluster;

fn node(name: &str, renderd: String, standby: &str) -> RenderNode {
    RenderNode {
        name: name.into(),
        renderd,
        standby: standby.into(),
        styles: vec!["s".into(), "t".into()],
        min_zoom: 16,
        max_zoom: 18,
    }
}

#[test]
fn an_unstamped_backlog_is_delivered_and_a_down_node_keeps_its_own() {
    let url = PgCluster::shared().create_database("expire_nodes").unwrap();
    let db = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    let mut client = tilepipe_testkit::db::connect(&url);

    // The node that listens: tilepipe's protocol server on a free port.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let queue = Arc::new(RenderQueue::new(1000));
    let settings = RenderConfig {
        tcp: Some("127.0.0.1:0".into()),
        ..RenderConfig::default()
    };
    let listeners = runtime
        .block_on(ProtocolListeners::bind(&settings))
        .unwrap();
    let address = listeners.tcp_address().unwrap();
    let styles: Vec<StyleConfig> = ["s", "t"]
        .iter()
        .map(|name| StyleConfig {
            name: name.to_string(),
            min_zoom: 0,
            max_zoom: 18,
            ..StyleConfig::default()
        })
        .collect();
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = queue.clone();
    runtime.spawn(async move {
        listeners
            .serve(served, &styles, async move {
                let _ = stopped.await;
            })
            .await
    });
    let down_port = tilepipe_testkit::http::free_port();
    let nodes = [
        node("up", address.to_string(), &url),
        node("down", format!("127.0.0.1:{down_port}"), &url),
    ];
    nodes::validate_nodes(&nodes, 18).unwrap();

    // A batch over a few tiles, committed without its stamp.
    let mut all = TileSet::new(18);
    for (x, y) in [(140_000, 90_000), (140_001, 90_000), (140_100, 90_050)] {
        all.insert(x, y);
    }
    let tiles = BatchTiles {
        all,
        styles: Default::default(),
    };
    // Each of the two styles gets every metatile (no style-aware sets).
    let expected: usize = 2
        * (16..=18)
            .map(|z| tiles.metatiles("s", z).len())
            .sum::<usize>();
    let mut tx = client.transaction().unwrap();
    nodes::enqueue(&mut tx, "public", 42, &tiles, &nodes).unwrap();
    tx.commit().unwrap();
    let unstamped: i64 = client
        .query_one(
            "SELECT count(*) FROM tilepipe_expire_node_backlog WHERE commit_lsn IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(unstamped, 4, "one row per node and style");

    let seen: Arc<Mutex<HashMap<String, NodeStatus>>> = Default::default();
    let sink = seen.clone();
    let delivery = Delivery::start(
        &nodes,
        &db,
        "public",
        Arc::new(move |name: &str, status: &NodeStatus| {
            sink.lock()
                .unwrap()
                .insert(name.to_string(), status.clone());
        }),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let queued = queue
            .stats()
            .queued
            .get(&Priority::Expired)
            .copied()
            .unwrap_or(0);
        let statuses = seen.lock().unwrap().clone();
        let done = queued == expected
            && statuses
                .get("up")
                .is_some_and(|s| s.delivered_metatiles == expected as u64)
            && statuses.get("down").is_some_and(|s| !s.up);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queued {queued} of {expected}; {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let statuses = seen.lock().unwrap().clone();
    let up = &statuses["up"];
    assert!(up.up && up.backlog_metatiles == 0, "{up:?}");
    assert_eq!(up.replay_lag_bytes, Some(0), "the primary has replayed all");
    let down = &statuses["down"];
    assert_eq!(down.backlog_metatiles, expected as u64, "{down:?}");
    assert_eq!(
        (down.backlog_batches, down.delivered_metatiles),
        (1, 0),
        "two rows, one batch"
    );
    // The down node's row stays, stamped by delivery.
    let rows: Vec<(String, bool)> = client
        .query(
            "SELECT node, commit_lsn IS NOT NULL FROM tilepipe_expire_node_backlog",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        rows,
        [("down".to_string(), true), ("down".to_string(), true)]
    );

    let stopping = Instant::now();
    delivery.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        stopping.elapsed()
    );
    let _ = stop_server.send(());
}

#[test]
fn status_shows_each_nodes_backlog_and_standby() {
    let url = PgCluster::shared()
        .create_database("expire_nodes_status")
        .unwrap();
    let mut client = tilepipe_testkit::db::connect(&url);
    let dir = tempfile::tempdir().unwrap();

    // A local feed one sequence ahead of the database.
    let feed = dir.path().join("feed");
    std::fs::create_dir_all(&feed).unwrap();
    let now = chrono::Utc::now();
    for (sequence, timestamp) in [(42, now - chrono::Duration::minutes(1)), (43, now)] {
        let state = tilepipe::replication::ReplicationState {
            sequence,
            timestamp,
        };
        let path = feed.join(format!(
            "{}.state.txt",
            tilepipe::replication::feed::sequence_path(sequence)
        ));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, state.to_state_file()).unwrap();
        std::fs::write(feed.join("state.txt"), state.to_state_file()).unwrap();
    }
    let config = dir.path().join("tilepipe.yaml");
    let silent_port = tilepipe_testkit::http::free_port();
    let nodes = [
        node("up", "127.0.0.1:7654".into(), &url),
        node(
            "down",
            "127.0.0.1:7654".into(),
            &format!("host=127.0.0.1 port={silent_port} dbname=gis"),
        ),
    ];
    let mut yaml = String::from("expire:\n  nodes:\n");
    for n in &nodes {
        yaml.push_str(&format!(
            "    - name: {}\n      renderd: \"{}\"\n      standby: \"{}\"\n      styles: [s, t]\n      min_zoom: 16\n",
            n.name, n.renderd, n.standby
        ));
    }
    std::fs::write(&config, yaml).unwrap();
    tilepipe_testkit::cli::init_at(&config, &url, &format!("file://{}/", feed.display()), 42);

    // One batch waits for both nodes.
    let mut all = TileSet::new(18);
    for (x, y) in [(140_000, 90_000), (140_100, 90_050)] {
        all.insert(x, y);
    }
    let tiles = BatchTiles {
        all,
        styles: Default::default(),
    };
    let per_node: usize = 2
        * (16..=18)
            .map(|z| tiles.metatiles("s", z).len())
            .sum::<usize>();
    let mut tx = client.transaction().unwrap();
    nodes::enqueue(&mut tx, "public", 42, &tiles, &nodes).unwrap();
    tx.commit().unwrap();

    let out = tilepipe_testkit::cli::tilepipe(&config, &url, &["status", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 0);
    let reported = v["nodes"].as_array().unwrap();
    assert_eq!(reported.len(), 2, "{v}");
    let up = &reported[0];
    assert_eq!(up["name"], "up");
    assert_eq!(up["backlog_batches"], 1);
    assert_eq!(up["backlog_metatiles"], per_node as u64);
    assert!(up["oldest_pending_sec"].as_i64().unwrap() >= 0, "{up}");
    assert_eq!(up["standby_reachable"], true);
    // The "standby" is the primary itself: nothing to replay.
    assert_eq!(up["replay_lag_bytes"], 0, "{up}");
    let down = &reported[1];
    assert_eq!(down["name"], "down");
    assert_eq!(down["backlog_metatiles"], per_node as u64);
    assert_eq!(down["standby_reachable"], false);
    assert!(down["replay_lag_bytes"].is_null(), "{down}");
    assert!(
        !down["standby_error"].as_str().unwrap().is_empty(),
        "{down}"
    );

    let out = tilepipe_testkit::cli::tilepipe(&config, &url, &["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "Render node up: 1 batch(es), {per_node} metatile(s) pending, the oldest for "
        )),
        "{text}"
    );
    assert!(
        text.contains("; standby replay 0 byte(s) behind\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Render node down: 1 batch(es), {per_node} metatile(s) pending"
        )),
        "{text}"
    );
    assert!(text.contains("; standby unreachable ("), "{text}");
}
