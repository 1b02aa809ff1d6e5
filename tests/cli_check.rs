//! `tilepipe check`: run's start-up self-checks printed one per line,
//! starting nothing. Against a real database (testkit cluster), the town
//! feed served over loopback HTTP and tilepipe's own style loaded by
//! Mapnik: all pass on a good setup; each broken piece fails its own line
//! (and exit 1) while the others still pass; the lock held by a running
//! daemon and a listen address in use only warn.

use std::path::{Path, PathBuf};
use std::process::Output;
use tilepipe_testkit::cli::{assert_success, init_at, tilepipe};
use tilepipe_testkit::feedserver::FeedServer;
use tilepipe_testkit::town::town_feed;
use tilepipe_testkit::PgCluster;

const START: u64 = 500;

/// The lines of `check`'s output as (outcome, check name).
fn outcomes(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // `{outcome:<4}  {name:<18} {detail}`
            let outcome = line.get(..4)?.trim_end().to_string();
            let name = line.get(6..24)?.trim_end().to_string();
            Some((outcome, name))
        })
        .collect()
}

fn outcome_of(out: &Output, name: &str) -> String {
    outcomes(out)
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(o, _)| o)
        .unwrap_or_else(|| {
            panic!(
                "no line for {name}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
}

fn check(config: &Path, database: &str) -> Output {
    let out = tilepipe(config, database, &["check"]);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    out
}

fn write_config(path: &Path, tiles: &Path, xml: &Path, listen: &str) {
    std::fs::write(
        path,
        format!(
            "replication:\n  timeout_secs: 5\n  connect_timeout_secs: 2\n\
             styles:\n  - name: town\n    xml: {}\n    tile_dir: {}\n\
             serve:\n  listen: {listen}\n",
            xml.display(),
            tiles.display()
        ),
    )
    .unwrap();
}

#[test]
fn check_reports_each_start_up_check() {
    let dir = tempfile::tempdir().unwrap();
    let start_time = chrono::Utc::now() - chrono::Duration::minutes(60);
    let feed = town_feed(dir.path(), 23, START, start_time, 2);
    let server = FeedServer::start_blocking(&feed.feed_dir).unwrap();
    server.publish_all();
    let url = PgCluster::shared().create_database("cli_check").unwrap();
    let style_xml: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/tilepipe/tilepipe.xml");
    let tiles = dir.path().join("tiles");
    let config = dir.path().join("config.yaml");
    write_config(&config, &tiles, &style_xml, "127.0.0.1:0");

    // A config that does not parse: one failed line, nothing else tried.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "replication:\n  max_diff_sise_mb: 5\n").unwrap();
    let out = check(&bad, &url);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(outcomes(&out), [("FAIL".into(), "config".into())]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("max_diff_sise_mb"));

    // An empty database: the import and what needs it fail or are skipped.
    let out = check(&config, &url);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(outcome_of(&out, "database"), "ok");
    assert_eq!(outcome_of(&out, "import"), "FAIL");
    assert_eq!(outcome_of(&out, "data bounds"), "skip");
    assert_eq!(outcome_of(&out, "replication state"), "FAIL");
    assert_eq!(outcome_of(&out, "replication feed"), "skip");

    // Imported and initialised: every check passes, nothing was started
    // (the command returns by itself) and nothing was written but the
    // tile directory.
    assert_success(&tilepipe(
        &config,
        &url,
        &["import", feed.osm.to_str().unwrap()],
    ));
    init_at(&config, &url, &server.url(), START);
    let out = check(&config, &url);
    assert_success(&out);
    let all = outcomes(&out);
    let names: Vec<&str> = all.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "config",
            "database",
            "extensions",
            "import",
            "data bounds",
            "flat nodes",
            "replication state",
            "instance lock",
            "replication feed",
            "tile dir town",
            "style town",
            "http settings",
            "http listen",
        ]
    );
    assert!(all.iter().all(|(o, _)| o == "ok"), "{all:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));

    // A running daemon's lock and its port in use: warnings, exit 0.
    let mut holder = tilepipe_testkit::db::connect(&url);
    let db = tilepipe_testkit::db::db_config(&url);
    assert!(tilepipe::daemon::take_instance_lock(&mut holder, &db)
        .unwrap()
        .is_ok());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    write_config(
        &config,
        &tiles,
        &style_xml,
        &taken.local_addr().unwrap().to_string(),
    );
    let out = check(&config, &url);
    assert_success(&out);
    assert_eq!(outcome_of(&out, "instance lock"), "warn");
    assert_eq!(outcome_of(&out, "http listen"), "warn");
    drop(holder);
    drop(taken);

    // A database imported before bounds were recorded: a warning.
    let mut client = tilepipe_testkit::db::connect(&url);
    client
        .execute(
            "DELETE FROM osm2pgsql_properties WHERE property = 'tilepipe_data_bounds'",
            &[],
        )
        .unwrap();
    write_config(&config, &tiles, &style_xml, "127.0.0.1:0");
    let out = check(&config, &url);
    assert_success(&out);
    assert_eq!(outcome_of(&out, "data bounds"), "warn");

    // Broken pieces fail their own lines; the rest still pass.
    let missing_xml = dir.path().join("missing.xml");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    write_config(&config, &not_a_dir, &missing_xml, "127.0.0.1:0");
    server.shutdown();
    let out = check(&config, &url);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(outcome_of(&out, "replication feed"), "FAIL");
    assert_eq!(outcome_of(&out, "tile dir town"), "FAIL");
    assert_eq!(outcome_of(&out, "style town"), "FAIL");
    assert_eq!(outcome_of(&out, "import"), "ok");
    assert_eq!(outcome_of(&out, "http settings"), "ok");
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing.xml"));

    // No database: its line fails and the checks needing it are skipped.
    let out = check(&config, "postgresql://127.0.0.1:1/nothing");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(outcome_of(&out, "database"), "FAIL");
    assert_eq!(outcome_of(&out, "import"), "skip");
}
