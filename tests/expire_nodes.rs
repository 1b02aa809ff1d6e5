//! Expiry delivery to render nodes (`expire.nodes`), in-process against
//! tilepipe's own renderd protocol server (its render queue, no renderer
//! behind it) and the test kit's shared cluster. The node's "standby" is
//! the primary itself, which counts as replayed (not in recovery); the
//! replay gate on real standbys is `multi_node`'s.
//!
//! A crash between a batch's commit and its commit-position stamp leaves
//! the backlog unstamped: delivery stamps it and delivers. A node nobody
//! listens for keeps its backlog, reported down with its size.

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
