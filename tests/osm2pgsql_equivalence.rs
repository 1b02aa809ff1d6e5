//! Equivalence with osm2pgsql 1.8 (Debian's `osm2pgsql`): the same input
//! imported and then updated with generated diffs by both programs, into
//! two schemas of one database, must give the same rows (osm_id, every
//! column, hstore) with geometries equal within 1 cm.
//!
//! Skips with a message when `osm2pgsql` is not installed (`scripts/test`
//! installs it).

use std::path::{Path, PathBuf};
use tilepipe::apply::append::Applier;
use tilepipe::apply::import::import;
use tilepipe::osm::ChangeSet;
use tilepipe_testkit::feedgen::{FeedGenerator, OsmData};
use tilepipe_testkit::osm2pgsql::{
    self as o2p, assert_tables_equal, carto_variant, default_variant, hstore_variant, Variant,
    CLASSIC_TABLES,
};
use tilepipe_testkit::PgCluster;

fn osm2pgsql_available() -> bool {
    o2p::available()
}

fn run_osm2pgsql(url: &str, schema: &str, variant: &Variant, append: bool, file: &Path) {
    o2p::run(url, schema, &variant.flags, append, file);
}

fn assert_equivalent(client: &mut postgres::Client, stage: &str) {
    assert_tables_equal(client, "osm2pgsql", "tilepipe", &CLASSIC_TABLES, stage);
}

fn compare(data: &OsmData, input: &Path, variant: &Variant, diffs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let url = PgCluster::shared()
        .create_database(&format!("equiv_{}", variant.name))
        .unwrap();
    let config = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    let mut client = tilepipe::db::connect(&config).unwrap();
    client
        .batch_execute("CREATE SCHEMA osm2pgsql; CREATE SCHEMA tilepipe;")
        .unwrap();

    run_osm2pgsql(&url, "osm2pgsql", variant, false, input);
    let settings = variant.settings("tilepipe");
    import(&config, input, &settings, 2).unwrap();
    assert_equivalent(&mut client, &format!("{} import", variant.name));

    let mut applier = Applier::for_settings(&settings).unwrap();
    let mut generator = FeedGenerator::new(data.clone(), 3, 100, chrono::Utc::now(), 60);
    let mut moved = 0;
    for n in 1..=diffs {
        let diff = generator.next_diff();
        moved += diff.summary.moved_nodes.len() + diff.summary.multipolygon_edits.len();
        let path = dir.path().join(format!("{n}.osc"));
        let changes: ChangeSet = diff.changes.iter().cloned().collect();
        let mut file = std::fs::File::create(&path).unwrap();
        tilepipe::osm::osc_write::write_osc(&mut file, "test", changes.iter()).unwrap();
        drop(file);
        run_osm2pgsql(&url, "osm2pgsql", variant, true, &path);
        let mut tx = client.transaction().unwrap();
        applier.apply(&mut tx, &changes).unwrap();
        tx.commit().unwrap();
    }
    assert!(moved > 0, "the diffs moved nodes and edited multipolygons");
    assert_equivalent(
        &mut client,
        &format!("{} after {diffs} diffs", variant.name),
    );
}

#[test]
fn town_default_style_equals_osm2pgsql() {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
    compare(&town, &path, &default_variant(), 20);
}

#[test]
fn town_hstore_equals_osm2pgsql() {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
    compare(&town, &path, &hstore_variant(), 10);
}

#[test]
fn town_carto_lua_equals_osm2pgsql() {
    let Some(variant) = carto_variant() else {
        return;
    };
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
    compare(&town, &path, &variant, 10);
}

fn liechtenstein() -> Option<(OsmData, PathBuf)> {
    let path = tilepipe_testkit::shared_data("liechtenstein-2013-08-03.osm.pbf")?;
    Some((OsmData::from_pbf(&path).unwrap(), path))
}

#[test]
fn liechtenstein_default_style_equals_osm2pgsql() {
    let Some((data, path)) = liechtenstein() else {
        return;
    };
    if !osm2pgsql_available() {
        return;
    }
    compare(&data, &path, &default_variant(), 10);
}

#[test]
fn liechtenstein_carto_lua_equals_osm2pgsql() {
    let Some((data, path)) = liechtenstein() else {
        return;
    };
    let Some(variant) = carto_variant() else {
        return;
    };
    if !osm2pgsql_available() {
        return;
    }
    compare(&data, &path, &variant, 5);
}
