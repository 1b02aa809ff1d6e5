//! Running the `tilepipe` binary from tests.

use crate::paths::tilepipe_bin;
use std::path::Path;
use std::process::{Command, Output};

/// Runs the tilepipe binary with a configuration file and a database.
pub fn tilepipe(config: &Path, database: &str, args: &[&str]) -> Output {
    Command::new(tilepipe_bin())
        .args(["-c", config.to_str().unwrap(), "-d", database])
        .args(args)
        .output()
        .expect("tilepipe runs")
}

/// Fails the test with the command's stderr unless it succeeded.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tilepipe init --server URL --sequence N`, which must succeed.
pub fn init_at(config: &Path, database: &str, server_url: &str, sequence: u64) {
    let sequence = sequence.to_string();
    let args = ["init", "--server", server_url, "--sequence", &sequence];
    assert_success(&tilepipe(config, database, &args));
}
