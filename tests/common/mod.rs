//! Helpers shared by the integration tests (each test file includes this
//! module with `mod common;` and uses what it needs).
#![allow(dead_code)]

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
