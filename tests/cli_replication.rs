//! `tilepipe init` and `tilepipe status` as a user runs them: the real
//! binary, a private PostgreSQL and a local (`file://`) feed.

use chrono::{DateTime, Duration, TimeZone, Utc};
use std::path::Path;
use std::process::{Command, Output};
use tilepipe::replication::feed::sequence_path;
use tilepipe::replication::ReplicationState;
use tilepipe_testkit::PgCluster;

fn tilepipe(database: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", "/dev/null", "-d", database])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("tilepipe runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn minute(seq: u64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 8, 5, 0, 0, 0).unwrap() + Duration::seconds(seq as i64 * 60)
}

/// Writes state files for `first..=last` (earlier history pruned) and the
/// top-level state.txt, as a feed directory.
fn write_states(dir: &Path, first: u64, last: u64) {
    for seq in first..=last {
        let state = ReplicationState {
            sequence: seq,
            timestamp: minute(seq),
        };
        let path = dir.join(format!("{}.state.txt", sequence_path(seq)));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, state.to_state_file()).unwrap();
        if seq == last {
            std::fs::write(dir.join("state.txt"), state.to_state_file()).unwrap();
        }
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

#[test]
fn status_reports_every_case_with_osm2pgsql_exit_codes() {
    let cluster = PgCluster::shared();
    let url = cluster.create_database("status").unwrap();

    // 1: nothing set up.
    let out = tilepipe(&url, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["status"], 1);
    assert!(v["error"].as_str().unwrap().contains("tilepipe init"));
    // Python's separators and key order: status first.
    assert!(stdout(&out).starts_with("{\"status\": 1, \"error\": "));

    // 2: the properties table exists (e.g. an import) but no replication keys.
    let mut db = cluster.connect(url.rsplit('/').next().unwrap()).unwrap();
    db.batch_execute(
        "CREATE TABLE osm2pgsql_properties (property TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO osm2pgsql_properties VALUES ('current_timestamp', '2024-08-05T01:00:00Z');",
    )
    .unwrap();
    let out = tilepipe(&url, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(json(&out)["status"], 2);

    // 3: the stored server cannot be reached (nothing listens on port 9).
    db.batch_execute(
        "INSERT INTO osm2pgsql_properties VALUES
           ('replication_base_url', 'http://127.0.0.1:9/replication/minute/'),
           ('replication_sequence_number', '50'),
           ('replication_timestamp', '2024-08-05T00:50:00Z');",
    )
    .unwrap();
    let out = tilepipe(&url, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["status"], 3);
    assert_eq!(v["local"]["sequence"], 50);
    assert!(v["error"].as_str().unwrap().contains("127.0.0.1:9"));
    let out = tilepipe(&url, &["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("Unable to download the state information"));

    // 0: a reachable feed 70 sequences ahead.
    let feed = tempfile::tempdir().unwrap();
    write_states(feed.path(), 1, 120);
    let feed_url = format!("file://{}/", feed.path().display());
    db.execute(
        "UPDATE osm2pgsql_properties SET value = $1 WHERE property = 'replication_base_url'",
        &[&feed_url],
    )
    .unwrap();
    let out = tilepipe(&url, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["status"], 0);
    assert_eq!(v["server"]["base_url"], feed_url.as_str());
    assert_eq!(v["server"]["sequence"], 120);
    assert_eq!(v["server"]["timestamp"], "2024-08-05T02:00:00Z");
    assert_eq!(v["local"]["sequence"], 50);
    assert_eq!(v["local"]["timestamp"], "2024-08-05T00:50:00Z");
    let lag = v["local"]["age_sec"].as_i64().unwrap() - v["server"]["age_sec"].as_i64().unwrap();
    assert_eq!(lag, 70 * 60);

    let out = tilepipe(&url, &["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("Local database is 70 sequences behind the server, i.e. 1 hour(s) 10 minute(s) 0 second(s)"),
        "{text}"
    );
}

#[test]
fn init_from_sequence_date_and_minutes() {
    let cluster = PgCluster::shared();
    let url = cluster.create_database("init").unwrap();
    let feed = tempfile::tempdir().unwrap();
    // History before 1000 pruned, as on long-running mirrors.
    write_states(feed.path(), 1000, 3000);
    let feed_url = format!("file://{}/", feed.path().display());
    let local = |url: &str| -> (u64, String) {
        let v = json(&tilepipe(url, &["status", "--json"]));
        (
            v["local"]["sequence"].as_u64().unwrap(),
            v["local"]["timestamp"].as_str().unwrap().to_string(),
        )
    };

    let out = tilepipe(&url, &["init", "--server", &feed_url, "--sequence", "2500"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(local(&url), (2500, "2024-08-06T17:40:00Z".into()));

    // A date between two states: the newest state strictly before it.
    let date = minute(2345) + Duration::seconds(30);
    let date_text = date.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let out = tilepipe(
        &url,
        &["init", "--server", &feed_url, "--start-at", &date_text],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(local(&url), (2345, date_text));

    // Exactly at a state's timestamp: that state is not before it.
    let date_text = minute(2345).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let out = tilepipe(
        &url,
        &["init", "--server", &feed_url, "--start-at", &date_text],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(local(&url).0, 2344);

    // Older than the server's history: a clear error, position unchanged.
    let out = tilepipe(
        &url,
        &[
            "init",
            "--server",
            &feed_url,
            "--start-at",
            "2024-08-05T01:00:00Z",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not have diff files for the requested date"),
        "{}",
        stderr(&out)
    );
    assert_eq!(local(&url).0, 2344);

    // Minutes before the newest imported data (current_timestamp).
    let mut db = cluster.connect(url.rsplit('/').next().unwrap()).unwrap();
    db.execute(
        "INSERT INTO osm2pgsql_properties VALUES ('current_timestamp', $1)",
        &[&minute(2000).format("%Y-%m-%dT%H:%M:%SZ").to_string()],
    )
    .unwrap();
    let out = tilepipe(&url, &["init", "--server", &feed_url, "--start-at", "60"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(local(&url).0, 1939);

    // A sequence the server does not have.
    let out = tilepipe(&url, &["init", "--server", &feed_url, "--sequence", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("sequence 5"), "{}", stderr(&out));
}

#[test]
fn init_from_pbf_header_searches_the_given_server() {
    let Some(pbf) = tilepipe_testkit::shared_data("liechtenstein-2013-08-03.osm.pbf") else {
        return;
    };
    let url = PgCluster::shared().create_database("init_pbf").unwrap();
    // A feed around the extract's header timestamp 2013-08-03T19:00:02Z.
    let feed = tempfile::tempdir().unwrap();
    let base = Utc.with_ymd_and_hms(2013, 8, 3, 18, 0, 0).unwrap();
    for seq in 100..=300u64 {
        let state = ReplicationState {
            sequence: seq,
            timestamp: base + Duration::seconds((seq as i64 - 100) * 60),
        };
        let path = feed
            .path()
            .join(format!("{}.state.txt", sequence_path(seq)));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, state.to_state_file()).unwrap();
        std::fs::write(feed.path().join("state.txt"), state.to_state_file()).unwrap();
    }
    let feed_url = format!("file://{}/", feed.path().display());
    let out = tilepipe(
        &url,
        &[
            "init",
            "--server",
            &feed_url,
            "--from-pbf",
            pbf.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&tilepipe(&url, &["status", "--json"]));
    // 19:00:02 is 60 minutes and 2 seconds after sequence 100 (18:00:00).
    assert_eq!(v["local"]["sequence"], 160);
    assert_eq!(v["local"]["timestamp"], "2013-08-03T19:00:02Z");
}

#[test]
fn bad_configuration_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "database:\n  url: x\nreplication:\n  max_diff_sise_mb: 3\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", path.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("max_diff_sise_mb") && err.contains("line 4"),
        "{err}"
    );
    assert!(err.contains(path.to_str().unwrap()), "{err}");
}

/// Passwords in database and feed URLs never reach the output, whichever
/// way the command fails: unreachable database (URL and conninfo), a
/// malformed database URL, an unreachable feed stored in the database, a
/// bad feed URL in the configuration.
#[test]
fn credentials_never_appear_in_output() {
    let all = |out: &Output| format!("{}{}", stdout(out), stderr(out));
    let secret = "s3cretPW";
    let unreachable_dbs = [
        format!("postgresql://osm:{secret}@127.0.0.1:9/gis"),
        format!("host=127.0.0.1 port=9 user=osm password={secret} dbname=gis"),
        format!("host=127.0.0.1 port=9 password='{secret} x' dbname=gis"),
        format!("postgresql://osm:{secret}@127.0.0.1:notaport/gis"),
        format!("postgresql:///gis?host=127.0.0.1&port=9&password={secret}"),
    ];
    for db in &unreachable_dbs {
        for args in [&["status"][..], &["status", "--json"], &["catchup"]] {
            let out = tilepipe(db, args);
            assert_ne!(out.status.code(), Some(0), "{args:?} {db}");
            let text = all(&out);
            assert!(!text.is_empty(), "{args:?} {db}: no output");
            assert!(!text.contains(secret), "{args:?} {db}: {text}");
        }
    }

    // A feed with credentials, stored as the position: status names it
    // without the password.
    let cluster = PgCluster::shared();
    let url = cluster.create_database("secrets").unwrap();
    let mut db = cluster.connect(url.rsplit('/').next().unwrap()).unwrap();
    let feed = format!("http://osm:{secret}@127.0.0.1:9/replication/minute/?token={secret}");
    db.execute(
        "CREATE TABLE osm2pgsql_properties (property TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
        &[],
    )
    .unwrap();
    db.execute(
        "INSERT INTO osm2pgsql_properties VALUES
           ('replication_base_url', $1),
           ('replication_sequence_number', '50'),
           ('replication_timestamp', '2024-08-05T00:50:00Z')",
        &[&feed],
    )
    .unwrap();
    for args in [&["status"][..], &["status", "--json"], &["-v", "catchup"]] {
        let out = tilepipe(&url, args);
        let text = all(&out);
        assert!(!text.contains(secret), "{args:?}: {text}");
    }
    let out = tilepipe(&url, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", all(&out));
    let v = json(&out);
    assert_eq!(
        v["server"]["base_url"],
        "http://osm:***@127.0.0.1:9/replication/minute/?token=***"
    );
    assert!(v["error"].as_str().unwrap().contains("osm:***@127.0.0.1:9"));

    // init against the unreachable feed, and a configuration whose feed URL
    // is refused.
    let out = tilepipe(&url, &["-v", "init", "--server", &feed, "--sequence", "5"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!all(&out).contains(secret), "{}", all(&out));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("replication:\n  url: ftp://osm:{secret}@example.org/minute/\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", config.to_str().unwrap(), "-d", &url, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("replication.url"), "{}", all(&out));
    assert!(!all(&out).contains(secret), "{}", all(&out));
}

/// A configuration value that would crash the server is refused by the
/// command line before anything runs, naming the key.
#[test]
fn config_that_would_crash_is_refused_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "serve:\n  request_timeout_secs: .inf\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", config.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "serve.request_timeout_secs: must be a finite number of seconds between 0 and 86400"
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
