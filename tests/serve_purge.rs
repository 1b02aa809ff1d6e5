//! Cache purges by surrogate key (`serve.purge`) against a stand-in for
//! outside purge APIs (the test kit's `RecordingServer`): a CDN-style
//! request template is filled (URL, headers, JSON body), keys are batched
//! by `max_keys`, a failing endpoint is retried with backoff until it
//! answers, and Varnish's request is `PURGE /` with an `xkey` header.
//! Keys still pending when the server stops are sent, within
//! `purge::FLUSH_LIMIT` even with a target that never answers.
//! Varnish itself is exercised in `multi_node`.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tilepipe::metrics::Metrics;
use tilepipe::serve::config::ServeConfig;
use tilepipe::serve::config::{PurgeConfig, PurgeRequest};
use tilepipe::serve::purge::{self, PurgeSender};
use tilepipe::serve::Server;
use tilepipe::tile::Metatile;
use tilepipe_testkit::http::{Recorded, RecordingServer};

fn wait_for(server: &RecordingServer, count: usize) -> Vec<Recorded> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let requests = server.requests();
        if requests.len() >= count {
            return requests;
        }
        assert!(
            Instant::now() < deadline,
            "{} requests: {requests:?}",
            requests.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_go_out_batched_and_are_retried_until_the_endpoint_answers() {
    // The CDN fails twice, then accepts; Varnish accepts at once.
    let cdn = RecordingServer::start(&[503, 503]);
    let varnish = RecordingServer::start(&[]);
    let config = PurgeConfig {
        varnish: vec![format!("http://127.0.0.1:{}/", varnish.port)],
        requests: vec![PurgeRequest {
            url: format!("http://127.0.0.1:{}/purge?tags={{keys}}", cdn.port),
            method: "POST".into(),
            headers: [
                ("api-token".to_string(), "secret".to_string()),
                ("surrogate-key".to_string(), "{keys}".to_string()),
            ]
            .into(),
            body: r#"{"tags":{keys_json}}"#.into(),
        }],
        max_keys: 2,
        delay_ms: 100,
    };
    purge::validate(&config).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (sender, keys) = PurgeSender::channel();
    let task = tokio::spawn(purge::run(
        config,
        keys,
        metrics.clone(),
        std::future::pending(),
    ));
    // Three metatiles, one of them twice (two tiles of it): three keys.
    for (x, y) in [(2048, 1360), (2055, 1367), (2056, 1360), (100, 8)] {
        sender.purge("osm", Metatile { z: 12, x, y });
    }

    let sent = tokio::task::spawn_blocking(move || {
        let varnish_requests = wait_for(&varnish, 2);
        // Two failures, then two batches.
        let cdn_requests = wait_for(&cdn, 4);
        (varnish_requests, cdn_requests)
    })
    .await
    .unwrap();
    let (varnish_requests, cdn_requests) = sent;
    let mut varnish_keys: Vec<&str> = varnish_requests
        .iter()
        .inspect(|r| {
            assert_eq!(r.method, "PURGE");
            assert_eq!(r.target, "/");
        })
        .flat_map(|r| r.header("xkey").unwrap().split(' '))
        .collect();
    varnish_keys.sort_unstable();
    assert_eq!(
        varnish_keys,
        ["osm/12/2048/1360", "osm/12/2056/1360", "osm/12/96/8"]
    );
    let first = &cdn_requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.header("api-token"), Some("secret"));
    assert_eq!(
        first.target,
        "/purge?tags=osm%2F12%2F2048%2F1360+osm%2F12%2F2056%2F1360"
    );
    assert_eq!(
        first.header("surrogate-key"),
        Some("osm/12/2048/1360 osm/12/2056/1360")
    );
    assert_eq!(
        first.body,
        r#"{"tags":["osm/12/2048/1360","osm/12/2056/1360"]}"#
    );
    // The failed batch is sent again, then the rest.
    assert_eq!(cdn_requests[1].target, first.target);
    assert_eq!(cdn_requests[2].target, first.target);
    assert_eq!(cdn_requests[3].header("surrogate-key"), Some("osm/12/96/8"));
    let text = metrics.render(None, None);
    assert!(text.contains("tilepipe_purge_failures_total 2\n"), "{text}");
    // Three keys to each of two caches.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !metrics
        .render(None, None)
        .contains("tilepipe_purged_keys_total 6\n")
    {
        assert!(Instant::now() < deadline, "{}", metrics.render(None, None));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Closing the channel ends the task once nothing is pending.
    drop(sender);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_pending_at_shutdown_are_sent_within_the_flush_limit() {
    // A gathering window of a minute: without the flush at shutdown the
    // keys would never leave. The second target accepts connections but
    // never answers (nobody reads its listen queue).
    let varnish = RecordingServer::start(&[]);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let settings = ServeConfig {
        listen: "127.0.0.1:0".into(),
        purge: PurgeConfig {
            varnish: vec![
                format!("http://127.0.0.1:{}/", varnish.port),
                format!("http://127.0.0.1:{silent_port}/"),
            ],
            requests: Vec::new(),
            max_keys: 100,
            delay_ms: 60_000,
        },
        ..ServeConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    let server = Server::bind(settings, Vec::new(), None, metrics.clone())
        .await
        .unwrap();
    let sender = server.purge_sender().expect("serve.purge is set");
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    for x in [2048, 4096] {
        sender.purge("osm", Metatile { z: 12, x, y: 1360 });
    }
    // Let the purger take the keys and start its window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(varnish.requests().is_empty(), "sent before the window");

    let stopping = Instant::now();
    shutdown.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    assert!(
        took <= purge::FLUSH_LIMIT + Duration::from_millis(300),
        "stopping took {took:?}"
    );
    let requests = varnish.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "PURGE");
    assert_eq!(
        requests[0].header("xkey"),
        Some("osm/12/2048/1360 osm/12/4096/1360")
    );
    let text = metrics.render(None, None);
    assert!(text.contains("tilepipe_purged_keys_total 2\n"), "{text}");
    drop(silent);
}
