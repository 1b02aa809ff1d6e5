//! Expiry of a large edit: tilepipe's tile computation (tiles per second,
//! memory of the set) beside osm2pgsql 1.8's expiry cost on the same diff
//! (its append with `-e 18` minus the same append without expiry).
//!
//! Run with `cargo bench --bench expire`. Input: Liechtenstein from
//! `../shared/data` (skipped when absent) and the test kit's "vandalism"
//! diff, which renames every highway and moves one node in five.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tilepipe::apply::append::Applier;
use tilepipe::apply::import::import;
use tilepipe::apply::settings::ImportSettings;
use tilepipe::expire::batch::{tiles_for_changes, ExpireConfig};
use tilepipe::osm::ChangeSet;
use tilepipe_testkit::feedgen::OsmData;
use tilepipe_testkit::scale::vandalism;
use tilepipe_testkit::PgCluster;

fn osm2pgsql_append(
    cluster: &PgCluster,
    pbf: &Path,
    diff: &Path,
    expire: Option<&Path>,
) -> Duration {
    let url = cluster.create_database("o2p").unwrap();
    let import = Command::new("osm2pgsql")
        .args([
            "--slim",
            "-d",
            &url,
            "-S",
            "/usr/share/osm2pgsql/default.style",
        ])
        .arg(pbf)
        .output()
        .unwrap();
    assert!(import.status.success());
    let mut append = Command::new("osm2pgsql");
    append.args([
        "--slim",
        "--append",
        "-d",
        &url,
        "-S",
        "/usr/share/osm2pgsql/default.style",
    ]);
    if let Some(list) = expire {
        append.args(["-e", "18"]).arg("-o").arg(list);
    }
    let started = Instant::now();
    let out = append.arg(diff).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn main() {
    let Some(pbf) = tilepipe_testkit::shared_data("liechtenstein-2013-08-03.osm.pbf") else {
        return;
    };
    let cluster = PgCluster::start(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = OsmData::from_pbf(&pbf).unwrap();
    let changes: ChangeSet = vandalism(&data, None).into_iter().collect();
    let diff = dir.path().join("vandalism.osc");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&diff).unwrap());
    tilepipe::osm::osc_write::write_osc(&mut file, "bench", changes.iter()).unwrap();
    drop(file);

    // tilepipe: apply, then time the expiry of the row changes alone.
    let url = cluster.create_database("tp").unwrap();
    let config = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    import(&config, &pbf, &ImportSettings::default(), 2).unwrap();
    let mut client = tilepipe::db::connect(&config).unwrap();
    let settings = ImportSettings::load(&mut client, "public")
        .unwrap()
        .unwrap();
    let mut applier = Applier::for_settings(&settings).unwrap();
    let mut tx = client.transaction().unwrap();
    let result = applier.apply(&mut tx, &changes).unwrap();
    tx.commit().unwrap();
    let raster = ExpireConfig::default().raster();
    let mut runs = Vec::new();
    let mut tiles = None;
    for _ in 0..5 {
        let started = Instant::now();
        let set = tiles_for_changes(&result.row_changes, &raster, true).unwrap();
        runs.push(started.elapsed());
        tiles = Some(set);
    }
    runs.sort();
    let tiles = tiles.unwrap();
    let ours = runs[runs.len() / 2];

    let plain = osm2pgsql_append(&cluster, &pbf, &diff, None);
    let list = dir.path().join("expired.list");
    let with_expiry = osm2pgsql_append(&cluster, &pbf, &diff, Some(&list));
    let theirs_tiles = std::fs::read_to_string(&list).unwrap().lines().count();
    let theirs = with_expiry.saturating_sub(plain);

    println!("diff: {} objects ({} rows rewritten), expiry at z18, every rewritten row (osm2pgsql's rule)", changes.len(), result.row_changes.len());
    println!("| | tiles | time | tiles/s | memory |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| tilepipe (tile computation) | {} | {:.3} s ({:.3}–{:.3}) | {:.0} | {:.0} KB bitmap |",
        tiles.len(),
        ours.as_secs_f64(),
        runs[0].as_secs_f64(),
        runs[runs.len() - 1].as_secs_f64(),
        tiles.len() as f64 / ours.as_secs_f64(),
        tiles.heap_bytes() as f64 / 1e3
    );
    println!(
        "| osm2pgsql 1.8 (append with -e 18 minus without: {:.2} s − {:.2} s) | {} | {:.3} s | {:.0} | — |",
        with_expiry.as_secs_f64(),
        plain.as_secs_f64(),
        theirs_tiles,
        theirs.as_secs_f64(),
        theirs_tiles as f64 / theirs.as_secs_f64().max(1e-3)
    );
    println!(
        "ratio of expiry time tilepipe/osm2pgsql: {:.2}×",
        ours.as_secs_f64() / theirs.as_secs_f64().max(1e-3)
    );
}
