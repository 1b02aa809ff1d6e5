//! Equivalence with osm2pgsql 1.8 (Debian's `osm2pgsql`): the same input
//! imported and then updated with generated diffs by both programs, into
//! two schemas of one database, must give the same rows (osm_id, every
//! column, hstore) with geometries equal within 1 cm.
//!
//! Skips with a message when `osm2pgsql` is not installed (`scripts/test`
//! installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use tilepipe::apply::append::Applier;
use tilepipe::apply::import::import;
use tilepipe::apply::settings::ImportSettings;
use tilepipe::apply::style::HstoreMode;
use tilepipe::apply::transform::TransformSettings;
use tilepipe::osm::ChangeSet;
use tilepipe_testkit::feedgen::{FeedGenerator, OsmData};
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::PgCluster;

const CARTO_STYLE: &str = "/usr/share/openstreetmap-carto-common/openstreetmap-carto.style";
const CARTO_LUA: &str = "/usr/share/openstreetmap-carto-common/openstreetmap-carto.lua";

fn osm2pgsql_available() -> bool {
    let found = Command::new("osm2pgsql").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: osm2pgsql is not installed (apt-get install osm2pgsql)");
    }
    found
}

/// One way of importing, as osm2pgsql flags and as tilepipe settings.
struct Variant {
    name: &'static str,
    osm2pgsql_flags: Vec<String>,
    transform: TransformSettings,
}

fn default_variant() -> Variant {
    Variant {
        name: "default",
        osm2pgsql_flags: vec!["-S".into(), "/usr/share/osm2pgsql/default.style".into()],
        transform: TransformSettings::default(),
    }
}

fn hstore_variant() -> Variant {
    Variant {
        name: "hstore",
        osm2pgsql_flags: vec![
            "-S".into(),
            "/usr/share/osm2pgsql/default.style".into(),
            "-k".into(),
        ],
        transform: TransformSettings {
            hstore: HstoreMode::Match,
            ..TransformSettings::default()
        },
    }
}

fn carto_variant() -> Option<Variant> {
    if !Path::new(CARTO_STYLE).exists() {
        eprintln!("skipping the openstreetmap-carto variant: {CARTO_STYLE} not found");
        return None;
    }
    let mut transform = TransformSettings {
        style_path: Some(CARTO_STYLE.into()),
        lua_script_path: Some(CARTO_LUA.into()),
        hstore: HstoreMode::Match,
        multi_geometry: true,
        ..TransformSettings::default()
    };
    transform.load_files().unwrap();
    Some(Variant {
        name: "carto",
        osm2pgsql_flags: vec![
            "-G".into(),
            "--hstore".into(),
            "--style".into(),
            CARTO_STYLE.into(),
            "--tag-transform-script".into(),
            CARTO_LUA.into(),
        ],
        transform,
    })
}

fn run_osm2pgsql(url: &str, schema: &str, variant: &Variant, append: bool, file: &Path) {
    let mut command = Command::new("osm2pgsql");
    command
        .args(["--slim", "-d", url, "--number-processes", "1"])
        .arg(format!("--middle-schema={schema}"))
        .arg(format!("--output-pgsql-schema={schema}"))
        .args(&variant.osm2pgsql_flags);
    if append {
        command.arg("--append");
    } else {
        command.arg("--create");
    }
    let out = command.arg(file).output().expect("osm2pgsql runs");
    assert!(
        out.status.success(),
        "osm2pgsql failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rows of one side without an equal row on the other side (same osm_id,
/// same columns, geometry within 1 cm), both ways; a few ids for context.
fn unmatched(client: &mut postgres::Client, table: &str, from: &str, to: &str) -> (i64, Vec<i64>) {
    let columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2 AND column_name NOT IN ('osm_id', 'way')
             ORDER BY ordinal_position",
            &[&from, &table],
        )
        .unwrap()
        .iter()
        .map(|r| format!("\"{}\"", r.get::<_, String>(0)))
        .collect();
    let row = |alias: &str| {
        if columns.is_empty() {
            "ROW(1)".to_string()
        } else {
            format!(
                "ROW({})",
                columns
                    .iter()
                    .map(|c| format!("{alias}.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let sql = format!(
        "SELECT x.osm_id FROM {from}.{table} x WHERE NOT EXISTS (
           SELECT 1 FROM {to}.{table} y WHERE y.osm_id = x.osm_id
             AND {ry} IS NOT DISTINCT FROM {rx}
             AND ST_HausdorffDistance(x.way, y.way) < 0.01)
         ORDER BY 1",
        rx = row("x"),
        ry = row("y"),
    );
    let ids: Vec<i64> = client
        .query(&sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (ids.len() as i64, ids.into_iter().take(8).collect())
}

fn assert_equivalent(client: &mut postgres::Client, stage: &str) {
    for table in [
        "planet_osm_point",
        "planet_osm_line",
        "planet_osm_roads",
        "planet_osm_polygon",
    ] {
        let count = |schema: &str, c: &mut postgres::Client| -> i64 {
            c.query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
                .unwrap()
                .get(0)
        };
        let (a, b) = (count("osm2pgsql", client), count("tilepipe", client));
        let (missing, missing_ids) = unmatched(client, table, "osm2pgsql", "tilepipe");
        let (extra, extra_ids) = unmatched(client, table, "tilepipe", "osm2pgsql");
        assert!(
            a == b && missing == 0 && extra == 0,
            "{stage}, {table}: osm2pgsql {a} rows, tilepipe {b}; {missing} osm2pgsql rows without an equal tilepipe row (e.g. {missing_ids:?}), {extra} tilepipe rows without an equal osm2pgsql row (e.g. {extra_ids:?})"
        );
    }
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
    let settings = ImportSettings {
        schema: "tilepipe".into(),
        prefix: "planet_osm".into(),
        transform: variant.transform.clone(),
        ..ImportSettings::default()
    };
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

fn town_file(dir: &Path) -> (OsmData, PathBuf) {
    let town = synthetic_town();
    let path = dir.join("town.osm");
    town.write_osm_file(&path).unwrap();
    (town, path)
}

#[test]
fn town_default_style_equals_osm2pgsql() {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = town_file(dir.path());
    compare(&town, &path, &default_variant(), 20);
}

#[test]
fn town_hstore_equals_osm2pgsql() {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = town_file(dir.path());
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
    let (town, path) = town_file(dir.path());
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
