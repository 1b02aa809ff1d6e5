//! Import and apply on a real PostGIS: osm2pgsql's expected results on
//! Liechtenstein, diffs applied equal a fresh import of the result,
//! re-applying is harmless, a failed batch leaves nothing behind.

use tilepipe_testkit::db::{checksums, connect, db_config};

use std::path::Path;
use std::process::Command;
use tilepipe::apply::append::Applier;
use tilepipe::apply::import::import;
use tilepipe::apply::settings::ImportSettings;
use tilepipe::osm::ChangeSet;
use tilepipe_testkit::feedgen::{FeedGenerator, GeneratedDiff};
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::{shared_data, PgCluster};

fn applier(client: &mut postgres::Client) -> Applier {
    let settings = ImportSettings::load(client, "public")
        .unwrap()
        .expect("imported");
    Applier::for_settings(&settings).unwrap()
}

fn counts(client: &mut postgres::Client) -> [i64; 4] {
    let mut out = [0; 4];
    for (i, table) in ["point", "line", "roads", "polygon"].iter().enumerate() {
        out[i] = client
            .query_one(&format!("SELECT count(*) FROM planet_osm_{table}"), &[])
            .unwrap()
            .get(0);
    }
    out
}

fn apply(
    client: &mut postgres::Client,
    applier: &mut Applier,
    changes: &ChangeSet,
) -> tilepipe::apply::append::ApplyResult {
    let mut tx = client.transaction().unwrap();
    let result = applier.apply(&mut tx, changes).unwrap();
    tx.commit().unwrap();
    result
}

fn change_set(diff: &GeneratedDiff) -> ChangeSet {
    diff.changes.iter().cloned().collect()
}

#[test]
fn liechtenstein_matches_osm2pgsql_expectations() {
    let (Some(pbf), Some(osc)) = (
        shared_data("liechtenstein-2013-08-03.osm.pbf"),
        shared_data("000466354.osc.gz"),
    ) else {
        return;
    };
    let url = PgCluster::shared()
        .create_database("liechtenstein")
        .unwrap();
    let summary = import(&db_config(&url), &pbf, &ImportSettings::default(), 2).unwrap();
    assert_eq!(
        (summary.nodes, summary.ways, summary.relations),
        (65733, 7121, 113)
    );
    let mut client = connect(&url);
    // osm2pgsql's own test expectations (the Liechtenstein counts of its
    // `tests/test-output-pgsql.cpp`).
    assert_eq!(counts(&mut client), [1342, 3231, 375, 4130]);
    let sums = client
        .query_one(
            "SELECT (SELECT sum(ST_Area(way))::int8 FROM planet_osm_polygon),
                    (SELECT round(sum(way_area::float8))::int8 FROM planet_osm_polygon),
                    (SELECT round(sum(ST_Length(way)))::int8 FROM planet_osm_line),
                    (SELECT round(sum(ST_Length(way)))::int8 FROM planet_osm_roads),
                    (SELECT round(ST_Length(way)::numeric, 2)::text FROM planet_osm_line WHERE osm_id = 1101),
                    (SELECT way_area::text FROM planet_osm_polygon WHERE osm_id = 3265),
                    (SELECT count(*) FROM planet_osm_point WHERE ST_DWithin(way, 'SRID=3857;POINT(1062645.12 5972593.4)'::geometry, 0.1))",
            &[],
        )
        .unwrap();
    assert_eq!(sums.get::<_, i64>(0), 1_247_245_186);
    // Summed as float8: a float4 sum depends on the rows' order.
    assert_eq!(sums.get::<_, i64>(1), 1_247_245_413);
    assert_eq!(sums.get::<_, i64>(2), 4_211_350);
    assert_eq!(sums.get::<_, i64>(3), 2_032_023);
    assert_eq!(sums.get::<_, String>(4), "1696.04");
    assert_eq!(sums.get::<_, String>(5), "311.289");
    assert_eq!(sums.get::<_, i64>(6), 1);

    let changes = tilepipe::osm::osc::read_osc_file(&osc).unwrap();
    let mut applier = applier(&mut client);
    let result = apply(&mut client, &mut applier, &changes);
    assert_eq!(counts(&mut client), [1457, 3274, 380, 4277]);
    assert!(result.changed_rows().count() > 250);
    // The same diff again changes nothing.
    let before = checksums(&mut client);
    let again = apply(&mut client, &mut applier, &changes);
    assert_eq!(checksums(&mut client), before);
    assert_eq!(
        again.changed_rows().count(),
        0,
        "re-applying changes no rendered row"
    );
}

/// Imports the synthetic town into a fresh database; returns its URL.
fn import_town(dir: &Path, data: &tilepipe_testkit::OsmData, name: &str) -> String {
    let path = dir.join(format!("{name}.osm"));
    data.write_osm_file(&path).unwrap();
    let url = PgCluster::shared().create_database(name).unwrap();
    import(&db_config(&url), &path, &ImportSettings::default(), 2).unwrap();
    url
}

#[test]
fn applying_diffs_equals_importing_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let url = import_town(dir.path(), &town, "town_applied");
    let mut client = connect(&url);
    let imported = counts(&mut client);
    assert!(
        imported.iter().all(|&n| n > 0),
        "every table has rows: {imported:?}"
    );

    let mut generator = FeedGenerator::new(town, 11, 100, chrono::Utc::now(), 60);
    let mut applier = applier(&mut client);
    let mut renamed = Vec::new();
    let mut propagated = 0;
    for _ in 0..25 {
        let diff = generator.next_diff();
        let result = apply(&mut client, &mut applier, &change_set(&diff));
        propagated += result.propagated_ways + result.propagated_relations;
        for (way, _, new_name) in &diff.summary.renamed_streets {
            let change = result
                .row_changes
                .iter()
                .find(|c| c.table == "planet_osm_line" && c.osm_id == *way)
                .expect("a renamed street's line row is reported");
            assert!(change.changed);
            renamed.push((*way, new_name.clone()));
        }
    }
    assert!(
        propagated > 0,
        "node moves re-processed some ways or relations"
    );
    assert!(!renamed.is_empty());
    let (way, name) = renamed.last().unwrap();
    let stored: String = client
        .query_one(
            "SELECT name FROM planet_osm_line WHERE osm_id = $1 LIMIT 1",
            &[way],
        )
        .unwrap()
        .get(0);
    assert_eq!(&stored, name);

    let fresh_url = import_town(dir.path(), generator.data(), "town_fresh");
    let mut fresh = connect(&fresh_url);
    assert_eq!(checksums(&mut client), checksums(&mut fresh));
}

#[test]
fn reapplying_and_rolling_back_leave_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let url = import_town(dir.path(), &town, "town_reapply");
    let mut client = connect(&url);
    let mut applier = applier(&mut client);
    let mut generator = FeedGenerator::new(town, 5, 100, chrono::Utc::now(), 60);
    let diffs: Vec<GeneratedDiff> = (0..6).map(|_| generator.next_diff()).collect();
    for diff in &diffs {
        apply(&mut client, &mut applier, &change_set(diff));
    }
    let after = checksums(&mut client);
    // Starting the feed earlier: diffs 3..6 again, one batch merged.
    let merged: ChangeSet = diffs[2..]
        .iter()
        .flat_map(|d| d.changes.iter().cloned())
        .collect();
    apply(&mut client, &mut applier, &merged);
    assert_eq!(checksums(&mut client), after);

    // A batch that fails before commit leaves nothing behind.
    let mut tx = client.transaction().unwrap();
    applier
        .apply(&mut tx, &change_set(&generator.next_diff()))
        .unwrap();
    drop(tx);
    assert_eq!(checksums(&mut client), after);
}

#[test]
fn sigkill_during_apply_leaves_before_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let url = import_town(dir.path(), &town, "town_kill");
    let mut client = connect(&url);
    // One big change file: 40 diffs merged.
    let mut generator =
        FeedGenerator::new(town, 9, 100, chrono::Utc::now(), 60).with_changes_per_diff(150, 200);
    let merged: ChangeSet = (0..40)
        .flat_map(|_| generator.next_diff().changes)
        .collect();
    let osc = dir.path().join("big.osc");
    let mut out = std::fs::File::create(&osc).unwrap();
    tilepipe::osm::osc_write::write_osc(&mut out, "test", merged.iter()).unwrap();
    drop(out);
    let before = checksums(&mut client);

    // Kill at spread-out moments; the database is always either untouched
    // or fully updated.
    let mut after: Option<Vec<(String, i64, String)>> = None;
    let mut interrupted = 0;
    for delay_ms in [5u64, 20, 40, 60, 80, 100, 150, 200, 300, 2000] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
            .args(["-c", "/dev/null", "-q", "-d", &url, "apply"])
            .arg(&osc)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap();
            interrupted += 1;
        }
        child.wait().unwrap();
        let now = checksums(&mut client);
        if now != before {
            match &after {
                Some(after) => assert_eq!(&now, after, "after a kill at {delay_ms} ms"),
                None => after = Some(now),
            }
            // Re-import in place so the next round starts from `before`.
            import(
                &db_config(&url),
                &dir.path().join("town_kill.osm"),
                &ImportSettings::default(),
                2,
            )
            .unwrap();
            assert_eq!(checksums(&mut client), before);
        }
    }
    assert!(interrupted > 0, "no run was interrupted");
    assert!(after.is_some(), "no run completed");
}

#[test]
fn bad_input_names_the_file_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = import_town(dir.path(), &synthetic_town(), "town_bad");
    let mut client = connect(&url);
    let before = checksums(&mut client);

    let osc = dir.path().join("bad.osc");
    std::fs::write(
        &osc,
        "<?xml version='1.0'?>\n<osmChange version=\"0.6\">\n<modify>\n<node id=\"1\" version=\"9\" lat=\"50.0\" lon=\"10.0\"/>\n<way id=\"2\" version=\"9\"><nd ref=\"x\"/></way>\n</modify>\n</osmChange>\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", "/dev/null", "-d", &url, "apply"])
        .arg(&osc)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.osc:5") && err.contains("way 2"), "{err}");
    assert_eq!(checksums(&mut client), before);

    let style = dir.path().join("bad.style");
    std::fs::write(
        &style,
        "# test\nnode,way  name  text  linear\nway  building  text  polgon\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", "/dev/null", "-d", &url, "import", "-S"])
        .arg(&style)
        .arg(dir.path().join("town_bad.osm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.style:3") && err.contains("polgon"),
        "{err}"
    );
    assert_eq!(
        checksums(&mut client),
        before,
        "a bad style touches nothing"
    );

    // A truncated file fails the import and leaves no half-loaded tables.
    let truncated = dir.path().join("truncated.osm");
    let text = std::fs::read_to_string(dir.path().join("town_bad.osm")).unwrap();
    std::fs::write(&truncated, &text[..text.len() * 2 / 3]).unwrap();
    let fresh = PgCluster::shared().create_database("truncated").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", "/dev/null", "-d", &fresh, "import"])
        .arg(&truncated)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated.osm"), "{err}");
    let mut fresh_client = connect(&fresh);
    let tables: i64 = fresh_client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'planet_osm_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}

#[test]
fn an_unsorted_file_is_refused_and_leaves_no_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unsorted.osm");
    std::fs::write(
        &path,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6" generator="test">
  <node id="1" version="1" lat="50.0" lon="10.0"/>
  <node id="2" version="1" lat="50.0" lon="10.001"/>
  <way id="1" version="1"><nd ref="1"/><nd ref="2"/><tag k="highway" v="residential"/></way>
  <node id="3" version="1" lat="50.001" lon="10.001"><tag k="amenity" v="cafe"/></node>
</osm>
"#,
    )
    .unwrap();
    let url = PgCluster::shared().create_database("unsorted").unwrap();
    let err = import(&db_config(&url), &path, &ImportSettings::default(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unsorted.osm") && err.contains("not ordered: node 3 after way 1"),
        "{err}"
    );
    let mut client = connect(&url);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'planet_osm_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "a failed import leaves no tables behind");
}

#[test]
fn a_middle_laid_out_by_an_older_version_asks_for_a_new_import() {
    let dir = tempfile::tempdir().unwrap();
    let url = import_town(dir.path(), &synthetic_town(), "town_old_middle");
    let mut client = connect(&url);
    assert!(ImportSettings::load(&mut client, "public").is_ok());
    client
        .execute(
            "DELETE FROM osm2pgsql_properties WHERE property = 'tilepipe_middle_format'",
            &[],
        )
        .unwrap();
    let error = ImportSettings::load(&mut client, "public")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("import the data again with `tilepipe import`"),
        "{error}"
    );
}

/// A killed import never passes for a finished one: `apply` refuses the
/// database (the settings go into `osm2pgsql_properties` last), and
/// running the import again gives the same database as one clean run.
#[test]
fn a_killed_import_is_refused_by_apply_and_restarts_cleanly() {
    let (Some(pbf), Some(osc)) = (
        shared_data("liechtenstein-2013-08-03.osm.pbf"),
        shared_data("000466354.osc.gz"),
    ) else {
        return;
    };
    let url = PgCluster::shared().create_database("import_kill").unwrap();
    let tilepipe = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tilepipe"));
        command
            .args(["-c", "/dev/null", "-q", "-d", &url])
            .args(args);
        command
    };
    let pbf = pbf.to_str().unwrap();
    let clean = |client: &mut postgres::Client| {
        let status = tilepipe(&["import", pbf]).status().unwrap();
        assert!(status.success(), "the import runs to its end");
        checksums(client)
    };
    let mut client = connect(&url);
    let reference = clean(&mut client);
    let (mut interrupted, mut refused) = (0, 0);
    for delay_ms in [30u64, 120, 250, 400, 600, 900] {
        let mut child = tilepipe(&["import", pbf]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            interrupted += 1;
            child.wait().unwrap();
            // Killed before it touched anything, the old import is whole;
            // killed later, the database is no finished import.
            let finished = client
                .query_opt(
                    "SELECT 1 FROM osm2pgsql_properties WHERE property = 'tilepipe_import_settings'",
                    &[],
                )
                .unwrap()
                .is_some();
            if finished {
                assert_eq!(
                    checksums(&mut client),
                    reference,
                    "a finished import after a kill at {delay_ms} ms is the old one"
                );
                continue;
            }
            let out = tilepipe(&["apply", osc.to_str().unwrap()])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("no finished tilepipe import"),
                "apply after an import killed at {delay_ms} ms: {stderr}"
            );
            refused += 1;
        } else {
            child.wait().unwrap();
        }
        assert_eq!(
            clean(&mut client),
            reference,
            "a clean import after one killed at {delay_ms} ms"
        );
    }
    assert!(
        refused > 0,
        "no import was killed mid-way ({interrupted} interrupted)"
    );
}
