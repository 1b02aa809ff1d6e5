//! The fault-injecting feed server, seen by a plain HTTP client.

use crate::common::{gunzip, parse_osc};
use chrono::{TimeZone, Utc};
use std::io::Read;
use std::time::{Duration, Instant};
use tilepipe::osm::{Action, Change};
use tilepipe::osm::{Location, Meta, Node, Object};
use tilepipe::replication::ReplicationState;
use tilepipe_testkit::feedgen::write_feed_from_changes;
use tilepipe_testkit::feedserver::{default_random_fault_kinds, LoggedRequest};
use tilepipe_testkit::{Fault, FaultTarget, FeedServer};

const START: u64 = 100;

/// A feed with states 100..=103 and diffs 101..=103, each creating a node.
fn feed() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let start = ReplicationState {
        sequence: START,
        timestamp: Utc.with_ymd_and_hms(2024, 8, 5, 2, 24, 4).unwrap(),
    };
    let diffs: Vec<Vec<Change>> = (1..=3)
        .map(|i| {
            // Enough content that half a gzip file is still a few hundred
            // bytes.
            (0..40)
                .map(|j| Change {
                    action: Action::Create,
                    object: Object::Node(Node {
                        id: i * 1000 + j,
                        meta: Meta {
                            version: Some(1),
                            ..Meta::default()
                        },
                        location: Some(Location {
                            lon: 9.5,
                            lat: 47.1,
                        }),
                        tags: vec![("name".into(), format!("node {i}/{j}"))],
                    }),
                })
                .collect()
        })
        .collect();
    write_feed_from_changes(dir.path(), start, 60, &diffs).unwrap();
    dir
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

async fn get(
    client: &reqwest::Client,
    server: &FeedServer,
    path: &str,
) -> reqwest::Result<(u16, Vec<u8>)> {
    let response = client.get(format!("{}{path}", server.url())).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.bytes().await?.to_vec()))
}

async fn state_at(client: &reqwest::Client, server: &FeedServer) -> u64 {
    let (status, body) = get(client, server, "state.txt").await.unwrap();
    assert_eq!(status, 200);
    ReplicationState::parse(std::str::from_utf8(&body).unwrap())
        .unwrap()
        .sequence
}

#[tokio::test]
async fn publication_controls_state_and_404s() {
    let dir = feed();
    let server = FeedServer::start(dir.path()).await.unwrap();
    assert!(server.url().starts_with("http://127.0.0.1:") && server.url().ends_with('/'));
    let c = client(Duration::from_secs(5));

    // By default everything is published.
    assert_eq!(state_at(&c, &server).await, 103);
    let (status, body) = get(&c, &server, "000/000/103.osc.gz").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(parse_osc(&gunzip(&body)).len(), 40);
    assert_eq!(
        body,
        std::fs::read(dir.path().join("000/000/103.osc.gz")).unwrap()
    );

    server.set_published(101);
    assert_eq!(state_at(&c, &server).await, 101);
    assert_eq!(get(&c, &server, "000/000/101.osc.gz").await.unwrap().0, 200);
    assert_eq!(
        get(&c, &server, "000/000/101.state.txt").await.unwrap().0,
        200
    );
    assert_eq!(get(&c, &server, "000/000/102.osc.gz").await.unwrap().0, 404);
    assert_eq!(
        get(&c, &server, "000/000/102.state.txt").await.unwrap().0,
        404
    );
    assert_eq!(
        get(&c, &server, "000/000/100.state.txt").await.unwrap().0,
        200
    );

    assert_eq!(server.publish_next().unwrap(), 102);
    assert_eq!(state_at(&c, &server).await, 102);
    assert_eq!(get(&c, &server, "000/000/102.osc.gz").await.unwrap().0, 200);
    assert_eq!(server.publish_next().unwrap(), 103);
    assert!(server.publish_next().is_err(), "nothing beyond 103 on disk");
    assert_eq!(server.published().unwrap(), 103);

    // Unknown and hidden paths are plain 404s.
    assert_eq!(get(&c, &server, "000/000/999.osc.gz").await.unwrap().0, 404);
    assert_eq!(
        get(&c, &server, "000/000/.103.osc.gz.tmp").await.unwrap().0,
        404
    );
    assert_eq!(get(&c, &server, "000/000").await.unwrap().0, 404);

    assert_eq!(server.requests("000/000/102.osc.gz"), 2);
    assert_eq!(server.successes("000/000/102.osc.gz"), 1);
    assert_eq!(server.requests("/state.txt"), 3);
    let log = server.request_log();
    assert_eq!(
        log[0],
        LoggedRequest {
            path: "state.txt".into(),
            status: Some(200),
            fault: None
        }
    );

    let url = server.url();
    server.shutdown();
    assert!(
        c.get(format!("{url}state.txt")).send().await.is_err(),
        "closed after shutdown"
    );
}

#[tokio::test]
async fn each_fault_kind_is_observed_by_a_client() {
    let dir = feed();
    let server = FeedServer::start(dir.path()).await.unwrap();
    let c = client(Duration::from_millis(500));
    let diff = "000/000/101.osc.gz";
    let original = std::fs::read(dir.path().join(diff)).unwrap();

    // NotFound, once.
    server.inject(FaultTarget::Diff(101), Fault::NotFound, 1);
    assert_eq!(get(&c, &server, diff).await.unwrap().0, 404);
    assert_eq!(
        get(&c, &server, diff).await.unwrap(),
        (200, original.clone())
    );

    // Server errors, on a pattern, twice; other paths are unaffected.
    server.inject("*.state.txt", Fault::ServerError(503), 2);
    assert_eq!(get(&c, &server, "state.txt").await.unwrap().0, 200);
    assert_eq!(
        get(&c, &server, "000/000/101.state.txt").await.unwrap().0,
        503
    );
    assert_eq!(
        get(&c, &server, "000/000/102.state.txt").await.unwrap().0,
        503
    );
    assert_eq!(
        get(&c, &server, "000/000/102.state.txt").await.unwrap().0,
        200
    );
    server.inject(FaultTarget::Any, Fault::ServerError(502), 1);
    assert_eq!(get(&c, &server, "state.txt").await.unwrap().0, 502);

    // Truncated: valid HTTP (Content-Length matches), incomplete gzip.
    server.inject(diff, Fault::Truncated, 1);
    let response = c
        .get(format!("{}{diff}", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(original.len() as u64 / 2));
    let body = response.bytes().await.unwrap();
    assert_eq!(&body[..], &original[..original.len() / 2]);
    let mut text = String::new();
    assert!(flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .is_err());
    // A truncated state file lacks its timestamp.
    server.inject(FaultTarget::TopLevelState, Fault::Truncated, 1);
    let (_, body) = get(&c, &server, "state.txt").await.unwrap();
    assert!(ReplicationState::parse(std::str::from_utf8(&body).unwrap()).is_err());

    // Corrupt gzip: same length, fails to decompress.
    server.inject(diff, Fault::CorruptGzip, 1);
    let (status, body) = get(&c, &server, diff).await.unwrap();
    assert_eq!((status, body.len()), (200, original.len()));
    assert_ne!(body, original);
    let mut text = String::new();
    assert!(flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .is_err());

    // Slow: longer than the client's timeout.
    server.inject(diff, Fault::Slow(Duration::from_secs(3)), 1);
    let t = Instant::now();
    let error = get(&c, &server, diff).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(
        get(&c, &server, diff).await.unwrap(),
        (200, original.clone())
    );

    // Reset: the connection closes without a response.
    server.inject(diff, Fault::ResetConnection, 1);
    let error = get(&c, &server, diff).await.unwrap_err();
    assert!(!error.is_timeout(), "{error}");
    eprintln!("reset seen by reqwest as: {error:?}");
    assert_eq!(
        get(&c, &server, diff).await.unwrap(),
        (200, original.clone())
    );

    // State going backwards, once.
    server.inject(FaultTarget::TopLevelState, Fault::StateBackwards, 1);
    assert_eq!(state_at(&c, &server).await, 102);
    assert_eq!(state_at(&c, &server).await, 103);
    server.set_published(101);
    server.inject(FaultTarget::TopLevelState, Fault::StateBackwards, 1);
    assert_eq!(state_at(&c, &server).await, 100);

    let faults: Vec<Option<Fault>> = server
        .request_log()
        .into_iter()
        .filter(|r| r.path == diff)
        .map(|r| r.fault)
        .collect();
    assert_eq!(
        faults,
        vec![
            Some(Fault::NotFound),
            None,
            Some(Fault::Truncated),
            Some(Fault::CorruptGzip),
            Some(Fault::Slow(Duration::from_secs(3))),
            None,
            Some(Fault::ResetConnection),
            None,
        ]
    );
    let reset = server
        .request_log()
        .into_iter()
        .find(|r| r.fault == Some(Fault::ResetConnection))
        .unwrap();
    assert_eq!(reset.status, None);
    assert_eq!(server.successes(diff), 3);
}

/// Fetches `path` until it arrives intact (as a client with retries would).
async fn fetch_until_intact(
    c: &reqwest::Client,
    server: &FeedServer,
    path: &str,
    expected: &[u8],
) -> usize {
    for attempt in 1..=200 {
        if let Ok((200, body)) = get(c, server, path).await {
            if body == expected {
                return attempt;
            }
        }
    }
    panic!("{path} never arrived intact");
}

#[tokio::test]
async fn random_faults_are_seeded_and_a_retrying_client_gets_each_diff_once() {
    let dir = feed();
    let c = client(Duration::from_secs(5));
    let run = |seed: u64| {
        let dir = dir.path().to_path_buf();
        let c = c.clone();
        async move {
            let server = FeedServer::start(&dir).await.unwrap();
            server.set_random_faults(0.4, seed);
            let mut attempts = 0;
            for sequence in 101..=103u64 {
                for ext in ["state.txt", "osc.gz"] {
                    let path = format!("000/000/{sequence}.{ext}");
                    let expected = std::fs::read(dir.join(&path)).unwrap();
                    attempts += fetch_until_intact(&c, &server, &path, &expected).await;
                    assert_eq!(
                        server.successes(&path),
                        1,
                        "{path} downloaded intact exactly once"
                    );
                }
            }
            assert_eq!(server.request_log().len(), attempts);
            // More traffic, for the fault statistics.
            for i in 0..100 {
                let path = format!(
                    "000/000/10{}.{}",
                    i % 4,
                    if i % 2 == 0 { "state.txt" } else { "osc.gz" }
                );
                let _ = get(&c, &server, &path).await;
            }
            let log = server.request_log();
            let kinds = default_random_fault_kinds();
            for entry in &log {
                if let Some(fault) = &entry.fault {
                    // CorruptGzip on a state file becomes a truncation.
                    assert!(kinds.contains(fault), "{fault:?}");
                    if entry.path.ends_with(".state.txt") {
                        assert_ne!(fault, &Fault::CorruptGzip);
                    }
                }
            }
            log
        }
    };
    let first = run(11).await;
    let last_100 = &first[first.len() - 100..];
    let faulted = last_100.iter().filter(|r| r.fault.is_some()).count();
    eprintln!(
        "{} requests, {faulted} of the last 100 faulted",
        first.len()
    );
    assert!(
        (25..=55).contains(&faulted),
        "rate 0.4: {faulted} of 100 faulted"
    );
    for kind in default_random_fault_kinds() {
        assert!(
            first.iter().any(|r| r.fault.as_ref() == Some(&kind)),
            "{kind:?} drawn"
        );
    }
    assert_eq!(run(11).await, first, "same seed, same faults");
    assert_ne!(run(12).await, first, "another seed, other faults");
}
