//! `tilepipe run` as a process: follows a feed as it publishes, refuses a
//! second instance, stops cleanly on SIGTERM, and survives a PostgreSQL
//! restart without manual action while it keeps serving cached tiles.

use tilepipe_testkit::cli::{assert_success, init_at, tilepipe};
use tilepipe_testkit::town::town_feed;
use tilepipe_testkit::{db, http};

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
    final_data: tilepipe_testkit::OsmData,
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
        final_data: feed.final_data,
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
    let port = http::free_port();
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
    let (status, bytes) = http::get(port, cached).expect("the server answers");
    assert_eq!(status, 200);

    cluster.stop().unwrap();
    server.publish_all();
    // While the database is down: cached tiles are served, a tile that
    // needs a render fails by policy (no crash).
    for _ in 0..3 {
        let (status, body) = http::get(port, cached).expect("still serving");
        assert_eq!((status, &body), (200, &bytes));
        std::thread::sleep(Duration::from_secs(1));
    }
    let (status, _) = http::get(port, "/town/17/69177/44451.png").expect("still serving");
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
        if let Some((200, _)) = http::get(port, "/town/17/69177/44450.png") {
            break;
        }
        assert!(Instant::now() < deadline, "no render after the restart");
        std::thread::sleep(Duration::from_millis(500));
    }

    assert!(terminate(&mut daemon).success());
    server.shutdown();
}

/// A config with the server on `port`, and the apply backoff
/// (`retry_initial_secs` doubling to `retry_max_secs`) given.
fn with_serve_port(s: &Setup, port: u16, retry_initial: u64, retry_max: u64) {
    let config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace(
            "retry_initial_secs: 1\n  retry_max_secs: 1\n",
            &format!("retry_initial_secs: {retry_initial}\n  retry_max_secs: {retry_max}\n"),
        );
    std::fs::write(&s.config, config).unwrap();
}

/// A metric's value on `/metrics`, when the server answers.
fn metric(port: u16, name: &str) -> Option<f64> {
    let (status, body) = http::get(port, "/metrics")?;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.parse().unwrap())
    })
}

fn wait_for_metric(port: u16, name: &str, at_least: f64, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if metric(port, name).is_some_and(|v| v >= at_least) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{name} did not reach {at_least} within {within:?} (at {:?})",
        metric(port, name)
    );
}

fn health(port: u16) -> (u16, serde_json::Value) {
    let (status, body) = http::get(port, "/health").expect("the server answers");
    (status, serde_json::from_slice(&body).unwrap())
}

fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    stderr
}

/// The database a fresh import of the feed's final data gives.
fn fresh_checksums(
    dir: &Path,
    data: &tilepipe_testkit::OsmData,
    name: &str,
) -> Vec<(String, i64, String)> {
    let path = dir.join(format!("{name}.osm"));
    data.write_osm_file(&path).unwrap();
    let url = PgCluster::shared().create_database(name).unwrap();
    let config = db::db_config(&url);
    tilepipe::apply::import::import(&config, &path, &Default::default(), 2).unwrap();
    db::checksums(&mut db::connect(&url))
}

#[test]
fn a_batch_failing_in_the_database_is_retried_until_it_applies() {
    let s = setup(4);
    let port = http::free_port();
    with_serve_port(&s, port, 1, 1);
    let server = FeedServer::start_blocking(&s.feed_dir).unwrap();
    server.set_published(START + 1);
    let url = PgCluster::shared()
        .create_database("daemon_failing")
        .unwrap();
    import_and_init(&s, &url, &server);
    // A real SQL failure inside every batch's transaction: the position
    // it writes violates a constraint (NOT VALID: existing rows pass).
    let mut db = db::connect(&url);
    db.batch_execute(&format!(
        "ALTER TABLE osm2pgsql_properties ADD CONSTRAINT test_block \
         CHECK (property <> 'replication_sequence_number' OR value::bigint <= {START}) NOT VALID"
    ))
    .unwrap();

    let mut daemon = spawn_run(&s.config, &url);
    wait_for_metric(
        port,
        "tilepipe_apply_failures_total",
        3.0,
        Duration::from_secs(60),
    );
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon died");
    assert_eq!(metric(port, "tilepipe_apply_failing"), Some(1.0));
    assert!(metric(port, "tilepipe_apply_failing_since_timestamp_seconds").is_some());
    let (status, body) = health(port);
    assert_eq!(status, 503, "{body}");
    let error = body["apply_error"].as_str().unwrap();
    assert!(error.contains("test_block"), "{error}");
    assert!(body["apply_failing_since"].is_string(), "{body}");
    // `status` reads the failure from the database.
    let out = tilepipe(&s.config, &url, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["local"]["sequence"], START);
    assert_eq!(v["apply_failure"]["first_sequence"], START + 1);
    assert!(v["apply_failure"]["error"]
        .as_str()
        .unwrap()
        .contains("test_block"));
    // `catchup` cannot apply the batch meanwhile: the daemon holds the lock.
    let out = tilepipe(&s.config, &url, &["catchup"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("another `tilepipe run` or `tilepipe catchup` holds this database"));

    // The obstacle gone, the same batch applies and the rest follows.
    db.batch_execute("ALTER TABLE osm2pgsql_properties DROP CONSTRAINT test_block")
        .unwrap();
    server.publish_all();
    wait_for_sequence(&s.config, &url, START + 4, Duration::from_secs(60));
    assert_eq!(metric(port, "tilepipe_apply_failing"), Some(0.0));
    let (status, body) = health(port);
    assert_eq!(status, 200, "{body}");
    let out = tilepipe(&s.config, &url, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));

    assert!(terminate(&mut daemon).success());
    let stderr = stderr_of(&mut daemon);
    assert!(
        stderr.contains(&format!(
            "applying sequences {}..={} failed",
            START + 1,
            START + 1
        )),
        "{stderr}"
    );
    assert!(stderr.contains("the batch applied after"), "{stderr}");
    // No diff skipped: the data equals a fresh import of the final state.
    assert_eq!(
        db::checksums(&mut db),
        fresh_checksums(s._dir.path(), &s.final_data, "daemon_failing_fresh")
    );
    server.shutdown();
}

#[test]
fn a_panic_while_applying_is_a_failed_batch_not_a_dead_process() {
    let s = setup(2);
    let port = http::free_port();
    with_serve_port(&s, port, 1, 1);
    let server = FeedServer::start_blocking(&s.feed_dir).unwrap();
    server.set_published(START + 2);
    let url = PgCluster::shared().create_database("daemon_panic").unwrap();
    import_and_init(&s, &url, &server);

    // The first two attempts panic inside the open transaction; each
    // drops the session (and its lock) and retries on a new one.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", s.config.to_str().unwrap(), "-d", &url, "run"])
        .env("TILEPIPE_FAULT_PANIC_APPLIES", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_sequence(&s.config, &url, START + 2, Duration::from_secs(60));
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon died");
    assert_eq!(metric(port, "tilepipe_apply_failures_total"), Some(2.0));
    assert_eq!(metric(port, "tilepipe_apply_failing"), Some(0.0));
    assert!(terminate(&mut daemon).success());
    let stderr = stderr_of(&mut daemon);
    assert!(
        stderr.contains("panic while applying (objects ")
            && stderr.contains("injected fault (TILEPIPE_FAULT_PANIC_APPLIES)"),
        "{stderr}"
    );
    assert!(stderr.contains("database connection restored"), "{stderr}");
    server.shutdown();
}

#[test]
fn sigterm_interrupts_the_apply_backoff() {
    let s = setup(1);
    let port = http::free_port();
    with_serve_port(&s, port, 600, 600);
    let server = FeedServer::start_blocking(&s.feed_dir).unwrap();
    server.set_published(START + 1);
    let url = PgCluster::shared()
        .create_database("daemon_backoff")
        .unwrap();
    import_and_init(&s, &url, &server);

    let mut daemon = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", s.config.to_str().unwrap(), "-d", &url, "run"])
        .env("TILEPIPE_FAULT_PANIC_APPLIES", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_metric(
        port,
        "tilepipe_apply_failures_total",
        1.0,
        Duration::from_secs(60),
    );
    // The daemon now waits 600 s before the next attempt; SIGTERM ends the
    // wait (terminate allows 15 s).
    let stopped = Instant::now();
    assert!(terminate(&mut daemon).success());
    assert!(stopped.elapsed() < Duration::from_secs(10));
    assert_eq!(local_sequence(&s.config, &url), Some(START));
    server.shutdown();
}

#[test]
fn background_renders_pause_while_a_large_batch_applies() {
    let s = setup(3);
    let port = http::free_port();
    with_serve_port(&s, port, 1, 1);
    // A renderer (the plain style reads no database) and a threshold
    // every batch of the feed is above.
    let dir = s.config.parent().unwrap();
    let xml = dir.join("plain.xml");
    std::fs::write(&xml, tilepipe_testkit::serve::PLAIN_XML).unwrap();
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config.push_str(&format!(
        "styles:\n  - name: plain\n    xml: {}\n    tile_dir: {}\n\
         render:\n  threads: 2\n  pause_background_over_changes: 1\n",
        xml.display(),
        dir.join("tiles").display()
    ));
    std::fs::write(&s.config, config).unwrap();
    let server = FeedServer::start_blocking(&s.feed_dir).unwrap();
    server.set_published(START);
    let url = PgCluster::shared().create_database("daemon_pause").unwrap();
    import_and_init(&s, &url, &server);

    let mut daemon = spawn_run(&s.config, &url);
    wait_for_metric(
        port,
        "tilepipe_render_background_max_workers",
        1.0,
        Duration::from_secs(30),
    );
    // Before any batch: no pause; one of the two workers is kept for
    // clients.
    assert_eq!(
        metric(port, "tilepipe_render_background_pauses_total"),
        Some(0.0)
    );
    assert_eq!(
        metric(port, "tilepipe_render_background_max_workers"),
        Some(1.0)
    );
    server.publish_all();
    wait_for_sequence(&s.config, &url, START + 3, Duration::from_secs(60));
    // Each batch was paused for and the pause ended with it.
    wait_for_metric(
        port,
        "tilepipe_render_background_pauses_total",
        1.0,
        Duration::from_secs(10),
    );
    assert_eq!(metric(port, "tilepipe_render_background_paused"), Some(0.0));
    assert!(metric(port, "tilepipe_render_background_paused_seconds_total").unwrap() > 0.0);
    assert!(terminate(&mut daemon).success());
    server.shutdown();
}
