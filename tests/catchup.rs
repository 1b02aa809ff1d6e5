//! `tilepipe catchup` end to end: a feed served over HTTP (with faults),
//! batches applied with their position in one transaction, and SIGKILL at
//! random moments never skipping or repeating a diff.

use tilepipe_testkit::cli::{assert_success, init_at, tilepipe};
use tilepipe_testkit::db::{checksums, connect};
use tilepipe_testkit::town::town_feed;

use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tilepipe_testkit::feedgen::OsmData;
use tilepipe_testkit::feedserver::FeedServer;
use tilepipe_testkit::PgCluster;

const START: u64 = 7_000_000;

fn local_sequence(config: &Path, url: &str) -> u64 {
    let out = tilepipe(config, url, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["local"]["sequence"].as_u64().unwrap()
}

/// A town database imported and initialised at START, a feed of `count`
/// diffs after it, and the data those diffs lead to.
struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    url: String,
    feed_dir: std::path::PathBuf,
    final_data: OsmData,
}

fn setup(name: &str, count: usize, max_diff_size_mb: f64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let start_time = chrono::Utc::now() - chrono::Duration::minutes(count as i64 + 5);
    let feed = town_feed(dir.path(), 17, START, start_time, count);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "replication:\n  max_diff_size_mb: {max_diff_size_mb}\n  retry_initial_secs: 1\n  retry_max_secs: 1\n  timeout_secs: 5\n"
        ),
    )
    .unwrap();
    let url = PgCluster::shared().create_database(name).unwrap();
    assert_success(&tilepipe(
        &config,
        &url,
        &["import", feed.osm.to_str().unwrap()],
    ));
    Setup {
        final_data: feed.final_data,
        dir,
        config,
        url,
        feed_dir: feed.feed_dir,
    }
}

/// The database a fresh import of `data` gives.
fn fresh_checksums(dir: &Path, data: &OsmData, name: &str) -> Vec<(String, i64, String)> {
    let path = dir.join(format!("{name}.osm"));
    data.write_osm_file(&path).unwrap();
    let url = PgCluster::shared().create_database(name).unwrap();
    let config = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    tilepipe::apply::import::import(&config, &path, &Default::default(), 2).unwrap();
    checksums(&mut connect(&url))
}

#[test]
fn catchup_through_a_faulty_feed_equals_a_fresh_import() {
    let s = setup("catchup_faults", 30, 0.05);
    let server = FeedServer::start_blocking(&s.feed_dir).unwrap();
    server.set_random_faults(0.2, 5);
    init_at(&s.config, &s.url, &server.url(), START);

    // --once applies one batch and stops.
    let out = tilepipe(&s.config, &s.url, &["catchup", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_one = local_sequence(&s.config, &s.url);
    assert!(after_one > START && after_one < START + 30, "{after_one}");

    let out = tilepipe(&s.config, &s.url, &["catchup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(local_sequence(&s.config, &s.url), START + 30);
    let faults = server
        .request_log()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    assert!(faults > 0, "no fault was injected");

    // Up to date: exit 0 and nothing to do.
    let out = tilepipe(&s.config, &s.url, &["catchup"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        checksums(&mut connect(&s.url)),
        fresh_checksums(s.dir.path(), &s.final_data, "catchup_faults_fresh")
    );
    server.shutdown();
}

#[test]
fn sigkill_at_random_moments_never_skips_or_repeats_a_diff() {
    let s = setup("catchup_kill", 100, 0.012);
    let server = FeedServer::start_blocking(&s.feed_dir).unwrap();
    init_at(&s.config, &s.url, &server.url(), START);

    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut kills = 0;
    let mut runs = 0;
    while local_sequence(&s.config, &s.url) < START + 100 {
        runs += 1;
        assert!(runs < 200, "catch-up does not progress");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
            .args([
                "-c",
                s.config.to_str().unwrap(),
                "-q",
                "-d",
                &s.url,
                "catchup",
            ])
            .spawn()
            .unwrap();
        if kills < 30 {
            std::thread::sleep(Duration::from_millis(rng.random_range(5..80)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
        }
        let status = child.wait().unwrap();
        assert!(
            status.success() || status.code().is_none(),
            "catchup failed: {status}"
        );
    }
    assert!(kills >= 15, "only {kills} runs were killed mid-way");
    assert_eq!(
        checksums(&mut connect(&s.url)),
        fresh_checksums(s.dir.path(), &s.final_data, "catchup_kill_fresh")
    );
    server.shutdown();
}

#[test]
fn catchup_exit_codes() {
    let s = setup("catchup_codes", 2, 1.0);
    // Not initialised: 1.
    let out = tilepipe(&s.config, &s.url, &["catchup"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tilepipe init"));
    // Server unreachable: 1.
    init_at(&s.config, &s.url, s.feed_dir.to_str().unwrap(), START);
    std::fs::remove_file(s.feed_dir.join("state.txt")).unwrap();
    let out = tilepipe(&s.config, &s.url, &["-q", "catchup"]);
    assert_eq!(out.status.code(), Some(1));
}
