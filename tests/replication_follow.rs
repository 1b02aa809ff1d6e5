//! Following a feed over real HTTP through injected faults: every diff is
//! delivered exactly once, in order, and bad input is a clear error.

use chrono::{TimeZone, Utc};
use std::collections::BTreeMap;
use std::time::Duration;
use tilepipe::osm::ObjectId;
use tilepipe::osm::{Action, ChangeSet};
use tilepipe::replication::client::{ClientOptions, FeedClient, FetchError, RetryPolicy};
use tilepipe::replication::follower::Follower;
use tilepipe::replication::{Feed, Interval, ReplicationState};
use tilepipe_testkit::feedgen::{
    write_feed, write_feed_from_changes, FeedGenerator, GeneratedDiff,
};
use tilepipe_testkit::feedserver::{Fault, FaultTarget, FeedServer};
use tilepipe_testkit::town::synthetic_town;

const START: u64 = 4_000_000;

fn start_state() -> ReplicationState {
    ReplicationState {
        sequence: START,
        timestamp: Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap(),
    }
}

/// A client that retries fast: tests must not sleep for minutes.
fn client(url: &str, retry: RetryPolicy) -> FeedClient {
    let options = ClientOptions {
        timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(800),
        retry,
        ..ClientOptions::default()
    };
    FeedClient::new(Feed::new(url, Interval::Minute).unwrap(), &options).unwrap()
}

const FAST_FOREVER: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(5),
    max: Duration::from_millis(40),
    max_attempts: None,
};

/// What a change set amounts to: action and version per object.
fn outline(changes: &ChangeSet) -> BTreeMap<ObjectId, (Action, Option<u32>)> {
    changes
        .iter()
        .map(|c| (c.object_id(), (c.action, c.object.meta().version)))
        .collect()
}

fn expected_outline(diffs: &[GeneratedDiff]) -> BTreeMap<ObjectId, (Action, Option<u32>)> {
    let merged: ChangeSet = diffs
        .iter()
        .flat_map(|d| d.changes.iter().cloned())
        .collect();
    outline(&merged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_fifty_sequences_through_faults_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator =
        FeedGenerator::new(synthetic_town(), 42, START, start_state().timestamp, 60);
    let diffs: Vec<GeneratedDiff> = (0..50).map(|_| generator.next_diff()).collect();
    write_feed(dir.path(), start_state(), &diffs).unwrap();

    let server = FeedServer::start(dir.path()).await.unwrap();
    server.set_published(START + 7);
    // Random faults on a quarter of all requests, plus one of each kind
    // aimed where it hurts most.
    server.set_random_faults(0.25, 7);
    server.inject(FaultTarget::TopLevelState, Fault::StateBackwards, 2);
    server.inject(FaultTarget::Diff(START + 3), Fault::Truncated, 2);
    server.inject(FaultTarget::Diff(START + 4), Fault::CorruptGzip, 2);
    server.inject(FaultTarget::Diff(START + 5), Fault::NotFound, 2);
    server.inject(
        FaultTarget::Diff(START + 6),
        Fault::Slow(Duration::from_secs(3)),
        1,
    );
    server.inject(FaultTarget::Diff(START + 8), Fault::ResetConnection, 2);
    server.inject(FaultTarget::SequenceState(START + 20), Fault::Truncated, 2);

    // A small batch bound makes batches of one to a few diffs.
    let follower = Follower::new(client(&server.url(), FAST_FOREVER), 4_000);
    let mut position = START;
    let mut delivered: Vec<u64> = Vec::new();
    let mut batches = 0;
    while position < START + 50 {
        match follower.next_batch(position).await.unwrap() {
            None => {
                // Caught up with what is published: the feed moves on.
                let published = server.published().unwrap();
                server.set_published((published + 9).min(START + 50));
            }
            Some(batch) => {
                assert_eq!(*batch.sequences.start(), position + 1, "no gap, no repeat");
                let covered: Vec<usize> = batch
                    .sequences
                    .clone()
                    .map(|s| (s - START - 1) as usize)
                    .collect();
                let expected = expected_outline(&diffs[covered[0]..=*covered.last().unwrap()]);
                assert_eq!(
                    outline(&batch.changes),
                    expected,
                    "batch {:?}",
                    batch.sequences
                );
                let last = &diffs[*covered.last().unwrap()];
                assert_eq!(batch.end, last.state());
                assert!(
                    batch.end.sequence <= server.published().unwrap(),
                    "never beyond the published state"
                );
                delivered.extend(batch.sequences.clone());
                position = batch.end.sequence;
                batches += 1;
            }
        }
    }
    assert_eq!(delivered, (START + 1..=START + 50).collect::<Vec<_>>());
    assert!(batches >= 10, "only {batches} batches");

    let log = server.request_log();
    let faults = log.iter().filter(|r| r.fault.is_some()).count();
    assert!(faults >= 20, "only {faults} faults were injected");
    // No request went past the end of the feed: the follower only asks for
    // sequences the top-level state lists.
    for request in &log {
        if let Some(seq) = tilepipe::replication::feed::parse_sequence_path(&request.path) {
            assert!(seq <= START + 50, "requested {seq}");
        }
    }
    server.shutdown();
}

#[tokio::test]
async fn giving_up_never_moves_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = FeedGenerator::new(synthetic_town(), 1, START, start_state().timestamp, 60);
    let diffs: Vec<GeneratedDiff> = (0..3).map(|_| generator.next_diff()).collect();
    write_feed(dir.path(), start_state(), &diffs).unwrap();
    let server = FeedServer::start(dir.path()).await.unwrap();
    server.inject(FaultTarget::Diff(START + 2), Fault::ServerError(503), 100);

    let three_tries = RetryPolicy {
        max_attempts: Some(3),
        ..FAST_FOREVER
    };
    let follower = Follower::new(client(&server.url(), three_tries), u64::MAX);
    let err = follower.next_batch(START).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 503, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("000/002.osc.gz"), "{err}");
    assert_eq!(
        server.requests(&format!(
            "{}.osc.gz",
            tilepipe::replication::feed::sequence_path(START + 2)
        )),
        3
    );

    // Once the server recovers, the same batch arrives whole.
    server.clear_faults();
    let batch = follower.next_batch(START).await.unwrap().unwrap();
    assert_eq!(batch.sequences, START + 1..=START + 3);
    server.shutdown();
}

#[tokio::test]
async fn bad_state_file_and_bad_diff_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let states = write_feed_from_changes(dir.path(), start_state(), 60, &[vec![], vec![]]).unwrap();
    assert_eq!(states.len(), 3);
    let server = FeedServer::start(dir.path()).await.unwrap();
    let follower = Follower::new(client(&server.url(), RetryPolicy::ONCE), u64::MAX);

    // A state file with a broken timestamp on line 3.
    std::fs::write(
        dir.path().join("state.txt"),
        "#comment\nsequenceNumber=4000002\ntimestamp=2026-11-01T12\\:02\\:00\n",
    )
    .unwrap();
    let err = follower.next_batch(START).await.unwrap_err().to_string();
    assert!(err.contains("state.txt") && err.contains("line 3"), "{err}");

    // A diff whose XML breaks on line 4.
    std::fs::write(dir.path().join("state.txt"), states[2].to_state_file()).unwrap();
    let bad = b"<?xml version='1.0'?>\n<osmChange version=\"0.6\">\n<create>\n<node id=\"x1\" version=\"1\" lat=\"1\" lon=\"2\"/>\n</create>\n</osmChange>\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, bad).unwrap();
    let path = format!(
        "{}.osc.gz",
        tilepipe::replication::feed::sequence_path(START + 2)
    );
    std::fs::write(dir.path().join(&path), gz.finish().unwrap()).unwrap();
    let err = follower.next_batch(START).await.unwrap_err().to_string();
    assert!(err.contains(&path) && err.contains(":4:"), "{err}");
    server.shutdown();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, bytes).unwrap();
    gz.finish().unwrap()
}

/// A diff with a character XML forbids is a feed fault like a corrupt gzip:
/// retried, never skipped, and once the server serves a good file again the
/// follower carries on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_with_forbidden_characters_is_retried_until_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = FeedGenerator::new(synthetic_town(), 3, START, start_state().timestamp, 60);
    let diffs: Vec<GeneratedDiff> = (0..3).map(|_| generator.next_diff()).collect();
    write_feed(dir.path(), start_state(), &diffs).unwrap();
    let path = format!(
        "{}.osc.gz",
        tilepipe::replication::feed::sequence_path(START + 2)
    );
    let good = std::fs::read(dir.path().join(&path)).unwrap();
    for bad in [
        "<?xml version='1.0'?>\n<osmChange version=\"0.6\">\n<create>\n<node id=\"1\" version=\"1\" lat=\"1\" lon=\"2\" user=\"a\u{1}\"/>\n</create>\n</osmChange>\n",
        "<?xml version='1.0'?>\n<osmChange version=\"0.6\">\n<create>\n<node id=\"1\" version=\"1\" lat=\"1\" lon=\"2\">\n<tag k=\"name\" v=\"&#x0;\"/>\n</node>\n</create>\n</osmChange>\n",
    ] {
        let line = bad.lines().position(|l| l.contains("\u{1}") || l.contains("&#x0;")).unwrap() + 1;
        std::fs::write(dir.path().join(&path), gzip(bad.as_bytes())).unwrap();
        let server = FeedServer::start(dir.path()).await.unwrap();

        // One attempt: the error names the diff and the line.
        let once = Follower::new(client(&server.url(), RetryPolicy::ONCE), u64::MAX);
        let err = once.next_batch(START).await.unwrap_err();
        assert!(matches!(err, FetchError::BadDiff(_)), "{err}");
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("{path}:{line}:")), "{text}");
        assert!(text.contains("not allowed in XML"), "{text}");

        // Retrying forever: the follower keeps asking for the same diff and
        // never moves past it.
        let follower = Follower::new(client(&server.url(), FAST_FOREVER), u64::MAX);
        let fix_the_mirror = async {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while server.requests(&path) < 5 {
                assert!(std::time::Instant::now() < deadline, "not retried");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The mirror gets the good file; nothing else is done.
            std::fs::write(dir.path().join(&path), &good).unwrap();
        };
        let both = async { tokio::join!(follower.next_batch(START), fix_the_mirror) };
        let (result, ()) = tokio::time::timeout(Duration::from_secs(40), both)
            .await
            .expect("the follower carried on");
        // Neither an error (given up) nor a batch without the diff (skipped).
        let batch = result.unwrap().unwrap();
        assert_eq!(batch.sequences, START + 1..=START + 3);
        assert_eq!(outline(&batch.changes), expected_outline(&diffs));
        server.shutdown();
    }
}

/// This process's peak resident memory (VmHWM), in MB.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024
}

fn limited_client(url: &str, max_download_bytes: u64, max_uncompressed_bytes: u64) -> FeedClient {
    let options = ClientOptions {
        timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_millis(800),
        retry: RetryPolicy::ONCE,
        max_download_bytes,
        max_uncompressed_bytes,
        ..ClientOptions::default()
    };
    FeedClient::new(Feed::new(url, Interval::Minute).unwrap(), &options).unwrap()
}

/// A gzip bomb: a few MB that inflate to 2 GB of well-formed but useless
/// OSC (one gzip member compressed once and repeated; readers take
/// concatenated members as one stream). The client stops at its limit
/// while inflating, and the process never holds the 2 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_stops_at_the_uncompressed_limit_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    write_feed_from_changes(dir.path(), start_state(), 60, &[vec![]]).unwrap();
    let line = format!("<x a=\"{}\"/>\n", "0".repeat(1000));
    let chunk_xml = line.repeat(1_000_000 / line.len() + 1);
    let chunk = gzip(chunk_xml.as_bytes());
    let chunks = 2_000_000_000 / chunk_xml.len() + 1;
    let mut bomb = gzip(b"<?xml version='1.0'?>\n<osmChange version=\"0.6\">\n");
    bomb.reserve(chunk.len() * chunks);
    for _ in 0..chunks {
        bomb.extend_from_slice(&chunk);
    }
    let inflated = (chunk_xml.len() * chunks) as u64;
    assert!(inflated >= 2_000_000_000);
    let path = format!(
        "{}.osc.gz",
        tilepipe::replication::feed::sequence_path(START + 1)
    );
    std::fs::write(dir.path().join(&path), &bomb).unwrap();
    let compressed_mb = bomb.len() as u64 / 1_000_000;
    drop((bomb, chunk, chunk_xml));
    let server = FeedServer::start(dir.path()).await.unwrap();
    let before = peak_rss_mb();

    let follower = Follower::new(
        limited_client(&server.url(), 64_000_000, 100_000_000),
        u64::MAX,
    );
    let err = follower.next_batch(START).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { .. }),
        "{err} ({compressed_mb} MB inflating to {inflated} bytes)"
    );
    let text = err.to_string();
    assert!(
        text.contains("replication.max_uncompressed_mb (100 MB)"),
        "{text}"
    );
    assert!(text.contains(&path), "{text}");
    let peak = peak_rss_mb();
    eprintln!("{compressed_mb} MB of gzip inflating to {inflated} bytes: peak RSS {peak} MB, {before} MB before");
    assert!(
        peak < before.max(100) + 300,
        "peak RSS {peak} MB (was {before} MB before the download)"
    );

    // The compressed size is capped too, and checked before inflating.
    let follower = Follower::new(limited_client(&server.url(), 1_000_000, u64::MAX), u64::MAX);
    let text = follower.next_batch(START).await.unwrap_err().to_string();
    assert!(
        text.contains("replication.max_download_mb (1 MB)"),
        "{text}"
    );
    server.shutdown();
}

/// A body without Content-Length that never ends: the download cap is
/// enforced on the bytes as they arrive, not on a length the server claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_response_stops_at_the_download_limit() {
    use axum::body::Body;
    let app = axum::Router::new().fallback(|| async {
        let zeros = bytes::Bytes::from(vec![0u8; 64 * 1024]);
        let stream = futures_util::stream::repeat_with(move || {
            Ok::<_, std::convert::Infallible>(zeros.clone())
        });
        Body::from_stream(stream)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let before = peak_rss_mb();
    let client = limited_client(&format!("http://{addr}/"), 8_000_000, u64::MAX);
    let err = tokio::time::timeout(Duration::from_secs(20), client.latest_state_once())
        .await
        .expect("the download stopped")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("replication.max_download_mb (8 MB)"),
        "{text}"
    );
    assert!(text.contains("state.txt"), "{text}");
    assert!(peak_rss_mb() < before.max(100) + 200);
}

/// What a loopback test server saw: path and headers of each request.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, axum::http::HeaderMap)>>>;

/// A server on `ip` answering `state.txt` under `/feed/` and redirecting
/// everything else as `redirects` says (path → Location).
async fn redirecting_server(
    ip: [u8; 4],
    redirects: std::sync::Arc<std::sync::Mutex<BTreeMap<String, String>>>,
) -> (std::net::SocketAddr, Seen) {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let seen: Seen = Default::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let log = log.clone();
        let redirects = redirects.clone();
        async move {
            let path = request.uri().path().to_string();
            log.lock()
                .unwrap()
                .push((path.clone(), request.headers().clone()));
            if let Some(location) = redirects.lock().unwrap().get(&path) {
                return (StatusCode::FOUND, [(header::LOCATION, location.clone())]).into_response();
            }
            if path == "/feed/state.txt" {
                return start_state().to_state_file().into_response();
            }
            StatusCode::NOT_FOUND.into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind(std::net::SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn client_with_headers(url: &str, allow_redirect_hosts: &[&str]) -> FeedClient {
    let options = ClientOptions {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy::ONCE,
        headers: vec![("X-Token".into(), "sesame".into())],
        cookie: Some("session=crumbs".into()),
        allow_redirect_hosts: allow_redirect_hosts.iter().map(|s| s.to_string()).collect(),
        ..ClientOptions::default()
    };
    FeedClient::new(Feed::new(url, Interval::Minute).unwrap(), &options).unwrap()
}

/// Redirects stay on the feed's host and port unless another host is
/// configured, and the configured headers and cookie never leave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_stay_on_the_feed_host_and_headers_never_leave_it() {
    let routes_a = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let routes_b = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let routes_c = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let (a, seen_a) = redirecting_server([127, 0, 0, 1], routes_a.clone()).await;
    let (b, seen_b) = redirecting_server([127, 0, 0, 2], routes_b).await;
    // Same address as `a`, another port: another host by this definition.
    let (c, seen_c) = redirecting_server([127, 0, 0, 1], routes_c).await;
    let token_of = |headers: &axum::http::HeaderMap| {
        (
            headers
                .get("x-token")
                .map(|v| v.to_str().unwrap().to_string()),
            headers
                .get("cookie")
                .map(|v| v.to_str().unwrap().to_string()),
        )
    };
    let set_redirect = |to: String| {
        routes_a
            .lock()
            .unwrap()
            .insert("/old/state.txt".to_string(), to);
    };

    // Same host and port: followed, and the headers go with it.
    set_redirect(format!("http://{a}/feed/state.txt"));
    let state = client_with_headers(&format!("http://{a}/old/"), &[])
        .latest_state_once()
        .await
        .unwrap();
    assert_eq!(state, start_state());
    let hops = seen_a.lock().unwrap().clone();
    assert_eq!(hops.len(), 2);
    for (_, headers) in &hops {
        assert_eq!(
            token_of(headers),
            (Some("sesame".into()), Some("session=crumbs".into()))
        );
    }

    // Another address, or the same address on another port: refused by
    // default, and nothing at all reaches the other server.
    for other in [b, c] {
        set_redirect(format!("http://{other}/feed/state.txt"));
        let err = client_with_headers(&format!("http://{a}/old/"), &[])
            .latest_state_once()
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Redirect { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&other.to_string()), "{text}");
        assert!(text.contains("replication.allow_redirect_hosts"), "{text}");
    }
    assert!(seen_b.lock().unwrap().is_empty());
    assert!(seen_c.lock().unwrap().is_empty());

    // Allowed by name (any port) or name:port: followed, without the
    // headers, which stay with the feed's own host.
    for allowed in ["127.0.0.2".to_string(), b.to_string()] {
        set_redirect(format!("http://{b}/feed/state.txt"));
        seen_a.lock().unwrap().clear();
        let state = client_with_headers(&format!("http://{a}/old/"), &[&allowed])
            .latest_state_once()
            .await
            .unwrap();
        assert_eq!(state, start_state());
        let (_, to_a) = seen_a.lock().unwrap()[0].clone();
        assert_eq!(token_of(&to_a).0.as_deref(), Some("sesame"));
        let (path, to_b) = seen_b.lock().unwrap().pop().unwrap();
        assert_eq!(path, "/feed/state.txt");
        assert_eq!(token_of(&to_b), (None, None), "headers leaked to {b}");
        assert!(to_b.get("user-agent").is_some());
    }
    // An allowed name with another port does not match.
    set_redirect(format!("http://{b}/feed/state.txt"));
    let err = client_with_headers(&format!("http://{a}/old/"), &["127.0.0.2:1"])
        .latest_state_once()
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Redirect { .. }), "{err}");

    // A redirect loop ends.
    set_redirect(format!("http://{a}/old/state.txt"));
    let err = client_with_headers(&format!("http://{a}/old/"), &[])
        .latest_state_once()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("too many redirects"), "{err}");
}
