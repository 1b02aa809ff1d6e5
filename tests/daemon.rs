//! `tilepipe run` as a process: follows a feed as it publishes, refuses a
//! second instance, stops cleanly on SIGTERM, and survives a PostgreSQL
//! restart without manual action while it keeps serving cached tiles.

mod common;

use common::{assert_success, init_at, tilepipe, town_feed};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tilepipe_testkit::feedserver::FeedServer;
use tilepipe_testkit::PgCluster;

const START: u64 = 500;

fn spawn_run(config: &Path, database: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", config.to_str().unwrap(), "-d", database, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn local_sequence(config: &Path, url: &str) -> Option<u64> {
    let out = tilepipe(config, url, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["local"]["sequence"].as_u64()
}

fn wait_for_sequence(config: &Path, url: &str, sequence: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if local_sequence(config, url) == Some(sequence) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "sequence {sequence} not reached within {within:?} (at {:?})",
        local_sequence(config, url)
    );
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "tilepipe run did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    osm: PathBuf,
    feed_dir: PathBuf,
}

fn setup(diffs: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let start_time = chrono::Utc::now() - chrono::Duration::minutes(60);
    let feed = town_feed(dir.path(), 23, START, start_time, diffs);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "replication:\n  poll_margin_secs: 0\n  retry_initial_secs: 1\n  retry_max_secs: 1\n  timeout_secs: 5\nserve:\n  listen: 127.0.0.1:0\n",
    )
    .unwrap();
    Setup {
        _dir: dir,
        config,
        osm: feed.osm,
        feed_dir: feed.feed_dir,
    }
}

fn import_and_init(s: &Setup, url: &str, server: &FeedServer) {
    assert_success(&tilepipe(
        &s.config,
        url,
        &["import", s.osm.to_str().unwrap()],
    ));
    init_at(&s.config, url, &server.url(), START);
}

#[test]
fn run_follows_the_feed_refuses_a_second_instance_and_stops_on_sigterm() {
    let s = setup(6);
    let server = FeedServer::start_blocking(&s.feed_dir).unwrap();
    server.set_published(START + 2);
    let url = PgCluster::shared().create_database("daemon").unwrap();
    import_and_init(&s, &url, &server);

    let mut daemon = spawn_run(&s.config, &url);
    wait_for_sequence(&s.config, &url, START + 2, Duration::from_secs(30));

    // A second daemon on the same database is refused.
    let out = tilepipe(&s.config, &url, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another `tilepipe run`"));

    // Diffs published later are picked up by polling.
    server.publish_all();
    wait_for_sequence(&s.config, &url, START + 6, Duration::from_secs(30));

    let status = terminate(&mut daemon);
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("stopped at sequence"), "{stderr}");
    server.shutdown();
}

#[test]
fn run_survives_a_postgresql_restart_and_keeps_serving_cached_tiles() {
    let s = setup(4);
    let port = common::http::free_port();
    let tiles = s._dir.path().join("tiles");
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config = config.replace("serve:\n  listen: 127.0.0.1:0\n", "");
    config.push_str(&format!(
        "styles:\n  - name: town\n    xml: {}\n    tile_dir: {}\n\
         render:\n  threads: 1\n\
         serve:\n  listen: 127.0.0.1:{port}\n  missing_request_timeout_secs: 5\n",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("styles/tilepipe/tilepipe.xml")
            .display(),
        tiles.display()
    ));
    std::fs::write(&s.config, config).unwrap();
    let server = FeedServer::start_blocking(&s.feed_dir).unwrap();
    server.set_published(START + 1);
    let cluster = PgCluster::start(None).unwrap();
    let url = cluster.create_database("restart").unwrap();
    import_and_init(&s, &url, &server);

    let mut daemon = spawn_run(&s.config, &url);
    wait_for_sequence(&s.config, &url, START + 1, Duration::from_secs(30));
    // The town at z16 (10.004 E, 50.004 N), rendered on demand and cached.
    let cached = "/town/16/34588/22225.png";
    let (status, bytes) = common::http::get(port, cached).expect("the server answers");
    assert_eq!(status, 200);

    cluster.stop().unwrap();
    server.publish_all();
    // While the database is down: cached tiles are served, a tile that
    // needs a render fails by policy (no crash).
    for _ in 0..3 {
        let (status, body) = common::http::get(port, cached).expect("still serving");
        assert_eq!((status, &body), (200, &bytes));
        std::thread::sleep(Duration::from_secs(1));
    }
    let (status, _) = common::http::get(port, "/town/17/69177/44451.png").expect("still serving");
    assert!(
        [404, 500, 503].contains(&status),
        "a render without database: {status}"
    );
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon died with the database"
    );
    cluster.start_again().unwrap();
    wait_for_sequence(&s.config, &url, START + 4, Duration::from_secs(60));
    // Rendering works again with the database back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = common::http::get(port, "/town/17/69177/44450.png") {
            break;
        }
        assert!(Instant::now() < deadline, "no render after the restart");
        std::thread::sleep(Duration::from_millis(500));
    }

    assert!(terminate(&mut daemon).success());
    server.shutdown();
}
