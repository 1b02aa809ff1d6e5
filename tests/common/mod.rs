//! Helpers shared by the integration tests (each test file includes this
//! module with `mod common;` and uses what it needs).
#![allow(dead_code)]

pub mod http;

use std::path::Path;
use std::process::{Command, Output};

/// Connection settings for a test database URL.
pub fn db_config(url: &str) -> postgres::Config {
    tilepipe::db::resolve(url, &tilepipe::db::ProcessEnv).unwrap()
}

pub fn connect(url: &str) -> postgres::Client {
    tilepipe::db::connect(&db_config(url)).unwrap()
}

/// Runs the tilepipe binary with a configuration file and a database.
pub fn tilepipe(config: &Path, database: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", config.to_str().unwrap(), "-d", database])
        .args(args)
        .output()
        .expect("tilepipe runs")
}

/// A checksum of every row of every output and middle table: two databases
/// with equal checksums hold the same data.
pub fn checksums(client: &mut postgres::Client) -> Vec<(String, i64, String)> {
    ["point", "line", "roads", "polygon", "nodes", "ways", "rels"]
        .iter()
        .map(|t| {
            let row = client
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM planet_osm_{t} t"
                    ),
                    &[],
                )
                .unwrap();
            (t.to_string(), row.get(0), row.get(1))
        })
        .collect()
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

/// The synthetic town written as `.osm`, a feed of generated diffs after
/// it, and the data those diffs lead to.
pub struct TownFeed {
    pub osm: std::path::PathBuf,
    pub feed_dir: std::path::PathBuf,
    pub final_data: tilepipe_testkit::OsmData,
}

pub fn town_feed(
    dir: &Path,
    seed: u64,
    start: u64,
    start_time: chrono::DateTime<chrono::Utc>,
    count: usize,
) -> TownFeed {
    let town = tilepipe_testkit::town::synthetic_town();
    let osm = dir.join("town.osm");
    town.write_osm_file(&osm).unwrap();
    let mut generator = tilepipe_testkit::FeedGenerator::new(town, seed, start, start_time, 60);
    let diffs: Vec<_> = (0..count).map(|_| generator.next_diff()).collect();
    let feed_dir = dir.join("feed");
    tilepipe_testkit::feedgen::write_feed(&feed_dir, generator.start_state(), &diffs).unwrap();
    TownFeed {
        osm,
        feed_dir,
        final_data: generator.data().clone(),
    }
}
