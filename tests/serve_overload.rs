//! Overload: hundreds of concurrent requests for missing tiles against one
//! render thread. The queue stays within its bounds, memory stays flat,
//! every request is answered by policy (200 rendered, 404 not rendered in
//! time, 503 overloaded), and the server keeps serving afterwards.

mod serve_support;

use reqwest::StatusCode;
use serve_support::{client, planet_import_complete, Options, TestServer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tilepipe::serve::metrics::TileOutcome;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_missing_tiles_are_answered_by_policy() {
    const CAPACITY: usize = 16;
    const REQUESTS: usize = 600;
    let server = TestServer::start(
        Options {
            render_threads: 1,
            queue_capacity: CAPACITY,
            ..Options::default()
        },
        |s| {
            s.max_queued_missing = 8;
            s.max_waiting_requests = 64;
            s.missing_request_timeout_secs = 1.0;
        },
    )
    .await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let queue = server.renderer.as_ref().unwrap().queue().clone();

    // Sample the queue while the storm runs.
    let done = Arc::new(AtomicBool::new(false));
    let max_queued = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, max_queued, queue) = (done.clone(), max_queued.clone(), queue.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let stats = queue.stats();
                let worst = stats.queued.values().copied().max().unwrap_or(0);
                max_queued.fetch_max(worst, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let rss_before = rss_kib();
    let http = client();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            // Distinct metatiles at z14.
            let x = (i as u32 % 200) * 8;
            let y = (i as u32 / 200) * 8 + 4000;
            let url = server.url(&format!("/plain/14/{x}/{y}.png"));
            let http = http.clone();
            tokio::spawn(async move {
                match http.get(url).send().await {
                    Ok(r) => {
                        let status = r.status();
                        let _ = r.bytes().await;
                        Ok(status)
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .collect();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for request in requests {
        let status = request.await.unwrap().expect("every request is answered");
        *statuses.entry(status.as_u16()).or_default() += 1;
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let rss_after = rss_kib();
    eprintln!(
        "statuses {statuses:?}, largest queue {}, RSS {} → {} MiB",
        max_queued.load(Ordering::Relaxed),
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        statuses.keys().all(|s| [200, 404, 503].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(statuses.values().sum::<usize>(), REQUESTS);
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "no overload answer: {statuses:?}"
    );
    assert!(max_queued.load(Ordering::Relaxed) <= CAPACITY);
    assert!(
        rss_after < rss_before + 200 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
    let counters = server.metrics.style("plain");
    assert_eq!(
        counters.total(TileOutcome::Overloaded) as usize,
        statuses.get(&503).copied().unwrap_or(0)
    );

    // Still serving: the queue drains and tiles render again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = queue.stats();
        if stats.queued.values().sum::<usize>() == 0 && stats.in_progress == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "queue never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .get(server.url("/plain/15/100/100.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
}
