//! The `tilepipe-testkit` binary.

use crate::common;

use std::path::Path;
use std::process::Command;
use tilepipe_testkit::feedgen::feed_range;

const BIN: &str = env!("CARGO_BIN_EXE_tilepipe-testkit");

fn run(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Stops the detached cluster even when an assertion fails.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["pg", "stop", "--dir"])
            .arg(self.0)
            .status();
    }
}

#[test]
fn pg_start_outlives_the_command_and_stops() {
    let parent = tempfile::Builder::new()
        .prefix("tk-cli")
        .tempdir_in("/tmp")
        .unwrap();
    // Root runs the server as postgres, which must be able to enter.
    std::fs::set_permissions(
        parent.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = parent.path().join("pg");
    let dir_arg = dir.to_str().unwrap();
    let _guard = StopOnDrop(&dir);
    let url = run(&["pg", "start", "--dir", dir_arg]).trim().to_string();
    assert!(
        url.starts_with("postgresql://postgres@127.0.0.1:") && url.ends_with("/tilepipe"),
        "{url}"
    );
    assert_eq!(run(&["pg", "url", "--dir", dir_arg]).trim(), url);
    // The command has exited; the server still answers.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let version: String = client
        .query_one("SELECT postgis_version()", &[])
        .unwrap()
        .get(0);
    assert!(version.starts_with('3'));
    drop(client);
    run(&["pg", "stop", "--dir", dir_arg]);
    assert!(postgres::Client::connect(&url, postgres::NoTls).is_err());
    // Starting again reuses port and data.
    assert_eq!(run(&["pg", "start", "--dir", dir_arg]).trim(), url);
    run(&["pg", "stop", "--dir", dir_arg]);
}

#[test]
fn feed_generate_writes_a_feed() {
    let Some(pbf) = tilepipe_testkit::shared_data("liechtenstein-2013-08-03.osm.pbf") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let stdout = run(&[
        "feed",
        "generate",
        "--pbf",
        pbf.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--count",
        "3",
        "--start-sequence",
        "500",
        "--start-time",
        "2024-08-05T02:24:04Z",
    ]);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stdout.starts_with("501 2024-08-05T02:25:04Z: "), "{stdout}");
    assert_eq!(feed_range(out.path()).unwrap(), Some((500, 503)));
    assert_eq!(
        common::read_state(&out.path().join("state.txt")).sequence,
        503
    );
}
