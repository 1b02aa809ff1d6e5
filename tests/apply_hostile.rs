//! Thousands of hostile diffs (nodes thrown to the edge of the world,
//! deletes of objects never seen, degenerate ways, broken and
//! self-containing multipolygons, tag values that do not parse) applied in
//! batches of one to five, one transaction each: no panic, no error, and
//! the same rows as a fresh import of the data they lead to.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use tilepipe::apply::append::Applier;
use tilepipe::apply::import::import;
use tilepipe::apply::settings::ImportSettings;
use tilepipe::osm::ChangeSet;
use tilepipe_testkit::db::{checksums, connect, db_config};
use tilepipe_testkit::hostile::HostileDiffs;
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::{OsmData, PgCluster};

/// Diffs per run and edits per diff: enough that every kind of edit meets
/// every kind of object many times, yet the test takes about half a
/// minute (`HOSTILE_DIFFS` and `HOSTILE_SEED` run longer or other
/// sequences).
const DIFFS: usize = 3000;
const EDITS_PER_DIFF: usize = 6;

fn import_data(dir: &Path, data: &OsmData, name: &str) -> String {
    let path = dir.join(format!("{name}.osm"));
    data.write_osm_file(&path).unwrap();
    let url = PgCluster::shared().create_database(name).unwrap();
    import(&db_config(&url), &path, &ImportSettings::default(), 2).unwrap();
    url
}

#[test]
fn hostile_diffs_never_panic_and_equal_a_fresh_import() {
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261207u64);
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let url = import_data(dir.path(), &town, "hostile_applied");
    let mut client = connect(&url);
    let settings = ImportSettings::load(&mut client, "public")
        .unwrap()
        .expect("imported");
    let mut applier = Applier::for_settings(&settings).unwrap();

    let mut diffs = HostileDiffs::new(town, seed);
    let count = std::env::var("HOSTILE_DIFFS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DIFFS);
    // Batches of one to five diffs merged, as the daemon's follower merges
    // consecutive diffs: single diffs and merged versions both get hit.
    let mut generated = 0;
    let mut batches = 0;
    while generated < count {
        let merged = (1 + batches % 5).min(count - generated);
        let mut changes = ChangeSet::new();
        for _ in 0..merged {
            changes.merge(diffs.next_diff(EDITS_PER_DIFF));
        }
        let first = generated + 1;
        generated += merged;
        batches += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut tx = client.transaction()?;
            applier.apply(&mut tx, &changes)?;
            tx.commit()?;
            anyhow::Ok(())
        }));
        let diffs = format!("diffs {first}..={generated} (seed {seed})");
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{diffs} failed: {e:#}\n{changes:#?}"),
            Err(_) => panic!("{diffs} panicked\n{changes:#?}"),
        }
    }
    eprintln!("{count} hostile diffs applied in {batches} batches");

    let fresh_url = import_data(dir.path(), diffs.data(), "hostile_fresh");
    assert_eq!(
        checksums(&mut client),
        checksums(&mut connect(&fresh_url)),
        "seed {seed}: applied diffs and a fresh import differ"
    );
}
