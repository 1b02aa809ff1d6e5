//! Overload: hundreds of concurrent requests for missing tiles against one
//! render thread. The queue stays within its bounds, memory stays flat,
//! every request is answered by policy (200 rendered, 404 not rendered in
//! time, 503 overloaded), and the server keeps serving afterwards.
//! Slow and idle clients: connections that never finish their request
//! head are closed at the header timeout without holding anyone else up,
//! idle keep-alive connections at the keep-alive timeout, and the number
//! of open connections is capped.

use reqwest::StatusCode;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tilepipe::metrics::TileOutcome;
use tilepipe_testkit::http::{exchange, get_within, wait_closed};
use tilepipe_testkit::serve::{client, planet_import_complete, Options, TestServer};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_finish_their_headers_are_dropped() {
    const SLOW: usize = 1500;
    const HEADER_TIMEOUT: f64 = 2.0;
    let server = TestServer::start(Options::no_render(), |s| {
        s.header_read_timeout_secs = HEADER_TIMEOUT;
    })
    .await;
    let addr = server.addr;
    let (slow, opened) = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let opened = Instant::now();
        let slow: Vec<_> = (0..SLOW)
            .map(|i| {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                // A request line and part of the headers, then nothing.
                let partial = format!("GET /health HTTP/1.1\r\nHost: slow\r\nX-Client: {i}\r\n");
                stream.write_all(partial.as_bytes()).unwrap();
                stream
            })
            .collect();
        (slow, opened)
    })
    .await
    .unwrap();
    let all_open = opened.elapsed();

    // While they hang, a normal client is answered at once.
    let asked = Instant::now();
    let (status, _) =
        tokio::task::spawn_blocking(move || get_within(addr, "/health", Duration::from_secs(2)))
            .await
            .unwrap()
            .expect("a normal request is answered while 1500 clients hang");
    assert_eq!(status, 200);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );

    // Each is closed by the server within the header timeout (plus the
    // time it took to open them all and some slack).
    let deadline = Duration::from_secs_f64(HEADER_TIMEOUT) + all_open + Duration::from_secs(3);
    let earliest = Duration::from_secs_f64(HEADER_TIMEOUT * 0.75);
    let closed = tokio::task::spawn_blocking(move || {
        let mut slow = slow;
        let mut closed = 0;
        let mut too_early = 0;
        for stream in &mut slow {
            let left = deadline.saturating_sub(opened.elapsed());
            if wait_closed(stream, left).is_some() {
                closed += 1;
                if opened.elapsed() < earliest {
                    too_early += 1;
                }
            }
        }
        (closed, too_early)
    })
    .await
    .unwrap();
    assert_eq!(closed, (SLOW, 0), "(closed, closed before the timeout)");
    assert_eq!(
        status_of(&server, "/health").await,
        StatusCode::OK,
        "serving on afterwards"
    );
    server.stop().await;
}

async fn status_of(server: &TestServer, path: &str) -> StatusCode {
    client()
        .get(server.url(path))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_close_at_their_own_timeout() {
    let server = TestServer::start(Options::no_render(), |s| {
        s.header_read_timeout_secs = 1.0;
        s.keepalive_timeout_secs = 3.0;
    })
    .await;
    let addr = server.addr;
    let (second, closed_after) = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        assert_eq!(exchange(&mut stream, &request).unwrap().0, 200);
        // Idle longer than the header timeout: still open, it only
        // counts once a request has begun.
        std::thread::sleep(Duration::from_secs(2));
        let second = exchange(&mut stream, &request).map(|r| r.0);
        let closed_after = wait_closed(&mut stream, Duration::from_secs(8));
        (second, closed_after)
    })
    .await
    .unwrap();
    assert_eq!(second.unwrap(), 200);
    let closed_after = closed_after.expect("an idle connection is closed");
    assert!(
        (Duration::from_millis(2500)..Duration::from_secs(5)).contains(&closed_after),
        "closed {closed_after:?} after the last response"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped() {
    let server = TestServer::start(Options::no_render(), |s| {
        s.max_connections = 3;
        s.keepalive_timeout_secs = 30.0;
    })
    .await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let mut held: Vec<_> = (0..3)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                assert_eq!(exchange(&mut stream, &request).unwrap().0, 200);
                stream
            })
            .collect();
        // A fourth waits in the accept queue ...
        let mut fourth = std::net::TcpStream::connect(addr).unwrap();
        fourth
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        assert!(
            exchange(&mut fourth, &request).is_err(),
            "served beyond the cap"
        );
        // ... until one of the three closes.
        drop(held.pop());
        fourth
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        // Its request was sent already: read the answer.
        use std::io::Read;
        let mut chunk = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = fourth
                .read(&mut chunk)
                .expect("answered once a slot is free");
            assert!(n > 0, "closed instead of answered");
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    })
    .await
    .unwrap();
    server.stop().await;
}
