//! Equivalence of the flex output with osm2pgsql 1.8 (Debian's
//! `osm2pgsql -O flex -S config.lua`): the configs of
//! `tests/fixtures/flex/`, which together use every part of osm2pgsql
//! 1.8's flex API, imported and then updated with diffs by both programs
//! into two schemas of one database, must give the same tables: the same
//! columns and indexes, and the same rows (every non-geometry column
//! equal, geometries of the same type within 1 cm in 3857 or 1e-7° in
//! 4326), compared by the tables' id columns.
//!
//! osm2pgsql runs with `FLEX_TEST_SCHEMA=osm2pgsql`, which the configs
//! turn into each table's `schema`; tilepipe runs in-process with the
//! variable unset and imports into schema `tilepipe`, so the configs'
//! tables land in its import schema.
//!
//! Also: every config imports and appends cleanly with osm2pgsql itself,
//! and broken configs give errors that say what is wrong and where.
//!
//! Skips with a message when `osm2pgsql` is not installed (`scripts/test`
//! installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use tilepipe::apply::append::Applier;
use tilepipe::apply::flex::FlexSettings;
use tilepipe::apply::import::import;
use tilepipe::apply::settings::ImportSettings;
use tilepipe::osm::ChangeSet;
use tilepipe_testkit::feedgen::{FeedGenerator, OsmData};
use tilepipe_testkit::flex_compare::{self, Sides};
use tilepipe_testkit::{shared_data, PgCluster};

/// The schema osm2pgsql writes to (tables and middle).
const REFERENCE: &str = "osm2pgsql";
/// The schema tilepipe imports into.
const OURS: &str = "tilepipe";
/// The variable the configs take their tables' schema from.
const SCHEMA_VARIABLE: &str = "FLEX_TEST_SCHEMA";

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flex")
        .join(format!("{name}.lua"))
}

fn osm2pgsql_available() -> bool {
    let found = Command::new("osm2pgsql").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: osm2pgsql is not installed (apt-get install osm2pgsql)");
    }
    found
}

/// Runs osm2pgsql's flex output with `config` on `input` into `schema`
/// (tables and middle); its stderr when it fails.
fn run_osm2pgsql_into(
    schema: &str,
    url: &str,
    config: &Path,
    append: bool,
    input: &Path,
) -> Result<(), String> {
    let args = [
        "--slim".to_string(),
        format!("--middle-schema={schema}"),
        "-O".into(),
        "flex".into(),
        "-S".into(),
        config.display().to_string(),
        if append { "--append" } else { "--create" }.into(),
    ];
    tilepipe_testkit::osm2pgsql::try_run_with_env(url, &args, &[(SCHEMA_VARIABLE, schema)], input)
}

/// Runs osm2pgsql into schema `osm2pgsql`; its stderr when it fails.
fn run_osm2pgsql(url: &str, config: &Path, append: bool, input: &Path) -> Result<(), String> {
    run_osm2pgsql_into(REFERENCE, url, config, append, input)
}

fn osm2pgsql_into(schema: &str, url: &str, config: &Path, append: bool, input: &Path) {
    if let Err(stderr) = run_osm2pgsql_into(schema, url, config, append, input) {
        panic!(
            "osm2pgsql -S {} failed on {}: {stderr}",
            config.display(),
            input.display()
        );
    }
}

fn osm2pgsql(url: &str, config: &Path, append: bool, input: &Path) {
    osm2pgsql_into(REFERENCE, url, config, append, input);
}

fn settings_for(config: &Path) -> ImportSettings {
    ImportSettings {
        schema: OURS.into(),
        flex: Some(FlexSettings::from_file(config).unwrap()),
        flat_nodes: None,
        ..Default::default()
    }
}

/// An error and its causes, one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn write_changes(path: &Path, changes: &ChangeSet) {
    let mut file = std::fs::File::create(path).unwrap();
    tilepipe::osm::osc_write::write_osc(&mut file, "test", changes.iter()).unwrap();
}

// ---------------------------------------------------------------------
// Comparing the two schemas (tilepipe_testkit::flex_compare)

const SIDES: Sides = Sides {
    reference: REFERENCE,
    ours: OURS,
};

/// Row counts of the config's tables on osm2pgsql's side.
fn reference_counts(client: &mut postgres::Client) -> Vec<(String, i64)> {
    flex_compare::reference_counts(client, REFERENCE)
}

/// What differs between the two schemas' tables, one line per problem.
fn differences(client: &mut postgres::Client) -> Vec<String> {
    flex_compare::differences(client, &SIDES)
}

// ---------------------------------------------------------------------
// Running both programs

/// One database, osm2pgsql's tables in schema `osm2pgsql`, tilepipe's in
/// schema `tilepipe`, both fed the same input.
struct Pair {
    name: String,
    url: String,
    client: postgres::Client,
    config: PathBuf,
    settings: ImportSettings,
    applier: Option<Applier>,
    dir: tempfile::TempDir,
    diffs: usize,
}

impl Pair {
    /// Imports `input` with both programs and checks the result.
    fn import(name: &str, input: &Path) -> Pair {
        assert!(
            std::env::var_os(SCHEMA_VARIABLE).is_none(),
            "{SCHEMA_VARIABLE} must not be set for the tests: tilepipe would put its tables there"
        );
        let config = config(name);
        let url = PgCluster::shared()
            .create_database(&format!("flexeq_{name}"))
            .unwrap();
        let db = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
        let mut client = tilepipe::db::connect(&db).unwrap();
        client
            .batch_execute(&format!("CREATE SCHEMA {REFERENCE}; CREATE SCHEMA {OURS};"))
            .unwrap();
        osm2pgsql(&url, &config, false, input);
        eprintln!(
            "{name}: osm2pgsql imported {}: {:?}",
            input.display(),
            reference_counts(&mut client)
        );
        let settings = settings_for(&config);
        if let Err(e) = import(&db, input, &settings, 2) {
            panic!(
                "{name}: tilepipe import of {} failed: {}",
                input.display(),
                error_chain(&e)
            );
        }
        let mut pair = Pair {
            name: name.to_string(),
            url,
            client,
            config,
            settings,
            applier: None,
            dir: tempfile::tempdir().unwrap(),
            diffs: 0,
        };
        pair.assert_equivalent(&format!("import of {}", input.display()));
        pair
    }

    fn assert_equivalent(&mut self, stage: &str) {
        let problems = differences(&mut self.client);
        assert!(
            problems.is_empty(),
            "{} after {stage}: tilepipe differs from osm2pgsql:\n  {}",
            self.name,
            problems.join("\n  ")
        );
    }

    /// Applies one diff with both programs; `file` is the diff as an
    /// OsmChange file for osm2pgsql, `changes` the same for tilepipe.
    fn apply(&mut self, file: &Path, changes: &ChangeSet) {
        osm2pgsql(&self.url, &self.config, true, file);
        if self.applier.is_none() {
            match Applier::for_settings(&self.settings) {
                Ok(applier) => self.applier = Some(applier),
                Err(e) => panic!(
                    "{}: Applier::for_settings failed: {}",
                    self.name,
                    error_chain(&e)
                ),
            }
        }
        let applier = self.applier.as_mut().unwrap();
        let mut tx = self.client.transaction().unwrap();
        if let Err(e) = applier.apply(&mut tx, changes) {
            panic!(
                "{}: tilepipe failed to apply {}: {}",
                self.name,
                file.display(),
                error_chain(&e)
            );
        }
        tx.commit().unwrap();
        self.diffs += 1;
    }

    /// Generates `count` diffs over `data` and applies them, comparing
    /// after each when `each` is set, else after the last.
    fn apply_generated(&mut self, data: &OsmData, count: usize, each: bool) {
        let generated = generated_diffs(data, count, self.dir.path(), "generated");
        assert!(
            generated.reshaping_edits > 0,
            "the diffs moved nodes or edited multipolygons"
        );
        for (n, (file, changes)) in generated.diffs.iter().enumerate() {
            self.apply(file, changes);
            if each || n + 1 == count {
                self.assert_equivalent(&format!("generated diff {} of {count}", n + 1));
            }
        }
    }
}

fn town_equivalence(name: &str) {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
    let mut pair = Pair::import(name, &path);
    pair.apply_generated(&town, TOWN_DIFFS, true);
    eprintln!("{name}: {} diffs applied, equal", pair.diffs);
}

/// Liechtenstein: import, the real minutely diff, then generated diffs
/// over the data as the real diff left it.
fn liechtenstein_equivalence(name: &str) {
    let (Some(pbf), Some(osc)) = (
        shared_data("liechtenstein-2013-08-03.osm.pbf"),
        shared_data("000466354.osc.gz"),
    ) else {
        return;
    };
    if !osm2pgsql_available() {
        return;
    }
    let mut pair = Pair::import(name, &pbf);
    let changes = tilepipe::osm::osc::read_osc_file(&osc).unwrap();
    pair.apply(&osc, &changes);
    pair.assert_equivalent("the real diff 000466354");
    pair.apply_generated(
        &liechtenstein_after(&pbf, &changes),
        LIECHTENSTEIN_DIFFS,
        false,
    );
}

#[test]
fn town_carto_equals_osm2pgsql() {
    town_equivalence("carto");
}

#[test]
fn town_values_equals_osm2pgsql() {
    town_equivalence("values");
}

#[test]
fn town_routes_equals_osm2pgsql() {
    town_equivalence("routes");
}

#[test]
fn town_shapes_equals_osm2pgsql() {
    town_equivalence("shapes");
}

#[test]
fn liechtenstein_carto_equals_osm2pgsql() {
    liechtenstein_equivalence("carto");
}

#[test]
fn liechtenstein_values_equals_osm2pgsql() {
    liechtenstein_equivalence("values");
}

#[test]
fn liechtenstein_routes_equals_osm2pgsql() {
    liechtenstein_equivalence("routes");
}

#[test]
fn liechtenstein_shapes_equals_osm2pgsql() {
    liechtenstein_equivalence("shapes");
}

/// Diffs generated over the town, and over Liechtenstein after the real
/// diff, in the equivalence tests (and in `configs_run_in_osm2pgsql`,
/// which runs exactly those through osm2pgsql alone).
const TOWN_DIFFS: usize = 15;
const LIECHTENSTEIN_DIFFS: usize = 5;

/// Diffs generated over some data, written as OsmChange files.
struct GeneratedDiffs {
    /// Each file with its changes.
    diffs: Vec<(PathBuf, ChangeSet)>,
    /// Moved nodes and multipolygon edits in all of them.
    reshaping_edits: usize,
}

/// Writes `count` diffs generated over `data` into `dir`.
fn generated_diffs(data: &OsmData, count: usize, dir: &Path, prefix: &str) -> GeneratedDiffs {
    let mut generator = FeedGenerator::new(data.clone(), 3, 100, chrono::Utc::now(), 60);
    let mut reshaping_edits = 0;
    let diffs = (1..=count)
        .map(|n| {
            let diff = generator.next_diff();
            reshaping_edits +=
                diff.summary.moved_nodes.len() + diff.summary.multipolygon_edits.len();
            let changes: ChangeSet = diff.changes.into_iter().collect();
            let file = dir.join(format!("{prefix}-{n}.osc"));
            write_changes(&file, &changes);
            (file, changes)
        })
        .collect();
    GeneratedDiffs {
        diffs,
        reshaping_edits,
    }
}

/// Liechtenstein's data after the real diff 000466354: what the
/// generated diffs start from.
fn liechtenstein_after(pbf: &Path, changes: &ChangeSet) -> OsmData {
    let mut data = OsmData::from_pbf(pbf).unwrap();
    for change in changes.iter() {
        data.apply(change);
    }
    data
}

/// The fixtures themselves: osm2pgsql imports the town and Liechtenstein
/// with each config and applies diffs (generated ones, and the real one
/// for Liechtenstein), and every table the config defines gets rows.
/// Independent of tilepipe, so a broken fixture shows here even while
/// tilepipe's side fails.
#[test]
fn configs_run_in_osm2pgsql() {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, town_path) = tilepipe_testkit::town::write_town_file(dir.path());
    let mut inputs = vec![(
        "town",
        town_path,
        generated_diffs(&town, TOWN_DIFFS, dir.path(), "town")
            .diffs
            .into_iter()
            .map(|(file, _)| file)
            .collect::<Vec<_>>(),
    )];
    if let (Some(pbf), Some(osc)) = (
        shared_data("liechtenstein-2013-08-03.osm.pbf"),
        shared_data("000466354.osc.gz"),
    ) {
        let data = liechtenstein_after(&pbf, &tilepipe::osm::osc::read_osc_file(&osc).unwrap());
        let mut diffs = vec![osc];
        diffs.extend(
            generated_diffs(&data, LIECHTENSTEIN_DIFFS, dir.path(), "liechtenstein")
                .diffs
                .into_iter()
                .map(|(file, _)| file),
        );
        inputs.push(("liechtenstein", pbf, diffs));
    }
    for (place, input, diffs) in &inputs {
        for name in ["carto", "values", "routes", "shapes"] {
            let url = PgCluster::shared()
                .create_database(&format!("flexcfg_{place}_{name}"))
                .unwrap();
            let mut client = tilepipe_testkit::db::connect(&url);
            client
                .batch_execute(&format!("CREATE SCHEMA {REFERENCE}"))
                .unwrap();
            osm2pgsql(&url, &config(name), false, input);
            let imported = reference_counts(&mut client);
            for diff in diffs {
                osm2pgsql(&url, &config(name), true, diff);
            }
            let updated = reference_counts(&mut client);
            eprintln!(
                "{place} {name}: imported {imported:?}, after {} diffs {updated:?}",
                diffs.len()
            );
            for (table, rows) in &imported {
                assert!(
                    *rows > 0,
                    "{place} {name}: osm2pgsql wrote no rows to {table}"
                );
            }
        }
    }
}

/// The comparison itself: two osm2pgsql runs, one into each schema, are
/// equal with every config (so nothing osm2pgsql leaves to chance, like
/// the order of json keys or serial numbers, counts), and differences
/// planted in the second show up, named by id.
#[test]
fn comparison_accepts_osm2pgsql_against_itself() {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
    let diffs = generated_diffs(&town, 5, dir.path(), "town").diffs;
    for name in ["carto", "values", "routes", "shapes"] {
        let url = PgCluster::shared()
            .create_database(&format!("flexself_{name}"))
            .unwrap();
        let mut client = tilepipe_testkit::db::connect(&url);
        client
            .batch_execute(&format!("CREATE SCHEMA {REFERENCE}; CREATE SCHEMA {OURS};"))
            .unwrap();
        for schema in [REFERENCE, OURS] {
            osm2pgsql_into(schema, &url, &config(name), false, &path);
            for (diff, _) in &diffs {
                osm2pgsql_into(schema, &url, &config(name), true, diff);
            }
        }
        let problems = differences(&mut client);
        assert!(
            problems.is_empty(),
            "{name}: two osm2pgsql runs differ:\n  {}",
            problems.join("\n  ")
        );
        if name != "values" {
            continue;
        }
        // Planted differences: a text value, a geometry moved by 2 cm, a
        // json array's number spelled differently, a row of the table
        // without ids gone.
        let node: i64 = client
            .query_one(
                &format!("SELECT min(osm_id) FROM {OURS}.flex_named WHERE osm_type = 'N'"),
                &[],
            )
            .unwrap()
            .get(0);
        client
            .batch_execute(&format!(
                "UPDATE {OURS}.flex_values SET t_str = 'changed'
                   WHERE node_id = (SELECT min(node_id) FROM {OURS}.flex_values);
                 UPDATE {OURS}.flex_named SET geom = ST_Translate(geom, 0.02, 0)
                   WHERE osm_type = 'N' AND osm_id = {node};
                 UPDATE {OURS}.flex_values SET j_array = '[1.0]'
                   WHERE node_id = (SELECT max(node_id) FROM {OURS}.flex_values);
                 DELETE FROM {OURS}.flex_poi_log
                   WHERE ctid = (SELECT min(ctid) FROM {OURS}.flex_poi_log);
                 UPDATE {REFERENCE}.flex_values SET j_array = '[1]'
                   WHERE node_id = (SELECT max(node_id) FROM {REFERENCE}.flex_values);"
            ))
            .unwrap();
        let (first, last): (i64, i64) = {
            let row = client
                .query_one(
                    &format!("SELECT min(node_id), max(node_id) FROM {OURS}.flex_values"),
                    &[],
                )
                .unwrap();
            (row.get(0), row.get(1))
        };
        let problems = differences(&mut client).join("\n");
        for expected in [
            "flex_values: 2 osm2pgsql rows without an equal tilepipe row".to_string(),
            format!("\"{first}\""),
            format!("\"{last}\""),
            format!(
                "flex_named: 1 osm2pgsql rows without an equal tilepipe row, e.g. [\"N/{node}\"]"
            ),
            "flex_poi_log: 1 osm2pgsql rows without an equal tilepipe row".to_string(),
        ] {
            assert!(
                problems.contains(&expected),
                "{expected:?} missing in:\n{problems}"
            );
        }
    }
}

// ---------------------------------------------------------------------
// Errors

/// A broken config: its text, what osm2pgsql 1.8 says about it, and what
/// tilepipe's message must contain.
struct Broken {
    name: &'static str,
    text: String,
    osm2pgsql_says: &'static str,
    tilepipe_says: Vec<String>,
}

#[test]
fn config_errors_say_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let (town, town_path) = tilepipe_testkit::town::write_town_file(dir.path());
    let highway = town
        .ways
        .values()
        .find(|w| w.tags.iter().any(|(k, _)| k == "highway"))
        .expect("the town has streets")
        .id;
    let broken = [
        Broken {
            name: "syntax",
            text: "local t = osm2pgsql.define_node_table('pois', {\n\
                   \x20   { column = 'name', type = 'text' },\n\
                   \x20   { column = 'geom', type = 'point' },\n\
                   })\n\
                   \n\
                   function osm2pgsql.process_node(object)\n\
                   \x20   if object.tags.name then\n\
                   \x20       t:insert({ name = object.tags.name geom = object:as_point() })\n\
                   \x20   end\n\
                   end\n"
                .into(),
            osm2pgsql_says: "syntax.lua:8: '}' expected near 'geom'",
            tilepipe_says: vec!["syntax.lua:8:".into(), "'}' expected near 'geom'".into()],
        },
        Broken {
            name: "column_type",
            text: "local t = osm2pgsql.define_node_table('pois', {\n\
                   \x20   { column = 'name', type = 'text' },\n\
                   \x20   { column = 'height', type = 'float' },\n\
                   \x20   { column = 'geom', type = 'point' },\n\
                   })\n\
                   \n\
                   function osm2pgsql.process_node(object)\n\
                   end\n"
                .into(),
            osm2pgsql_says: "Unknown column type 'float'",
            tilepipe_says: vec![
                "column_type.lua".into(),
                "Unknown column type 'float'".into(),
                "'pois'".into(),
                "'height'".into(),
            ],
        },
        Broken {
            name: "geometry_type",
            text: format!(
                "local t = osm2pgsql.define_way_table('roads', {{\n\
                 \x20   {{ column = 'name', type = 'text' }},\n\
                 \x20   {{ column = 'geom', type = 'point' }},\n\
                 }})\n\
                 \n\
                 function osm2pgsql.process_way(object)\n\
                 \x20   if object.id == {highway} then\n\
                 \x20       t:insert({{ name = object.tags.name, geom = object:as_linestring() }})\n\
                 \x20   end\n\
                 end\n"
            ),
            osm2pgsql_says: "geometry_type.lua:8: Error in 'insert': Geometry data for geometry column 'geom' has the wrong type (LINESTRING).",
            tilepipe_says: vec![
                "geometry_type.lua:8:".into(),
                "'roads'".into(),
                "'geom'".into(),
                "LINESTRING".into(),
                format!("way {highway}"),
            ],
        },
    ];
    let have_osm2pgsql = osm2pgsql_available();
    let mut failures = Vec::new();
    for case in broken {
        let path = dir.path().join(format!("{}.lua", case.name));
        std::fs::write(&path, &case.text).unwrap();
        let url = PgCluster::shared()
            .create_database(&format!("flexerr_{}", case.name))
            .unwrap();
        tilepipe_testkit::db::connect(&url)
            .batch_execute(&format!("CREATE SCHEMA {REFERENCE}; CREATE SCHEMA {OURS};"))
            .unwrap();
        if have_osm2pgsql {
            let stderr = run_osm2pgsql(&url, &path, false, &town_path)
                .expect_err("osm2pgsql rejects the config");
            assert!(
                stderr.contains(case.osm2pgsql_says),
                "{}: osm2pgsql said {stderr}",
                case.name
            );
        }
        let settings = ImportSettings {
            schema: OURS.into(),
            flex: Some(FlexSettings::from_file(&path).unwrap()),
            flat_nodes: None,
            ..Default::default()
        };
        let db = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
        let message = match import(&db, &town_path, &settings, 2) {
            Ok(_) => {
                failures.push(format!(
                    "{}: tilepipe imported the broken config",
                    case.name
                ));
                continue;
            }
            Err(e) => error_chain(&e),
        };
        let absent: Vec<&String> = case
            .tilepipe_says
            .iter()
            .filter(|part| !message.contains(part.as_str()))
            .collect();
        if !absent.is_empty() {
            failures.push(format!(
                "{}: tilepipe's error {message:?} does not contain {absent:?}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Node and way callbacks that keep state: osm2pgsql runs every callback
/// in one Lua state, so later callbacks see the state; an import on
/// several Lua workers cannot, and must refuse (naming where the state
/// changed) rather than give other rows; with one worker it imports.
#[test]
fn lua_workers_refuse_configs_that_keep_state() {
    let dir = tempfile::tempdir().unwrap();
    let (_, town_path) = tilepipe_testkit::town::write_town_file(dir.path());
    let cases = [
        (
            "local_table",
            "local seen = {}\n\
             local t = osm2pgsql.define_way_table('named', {\n\
             \x20   { column = 'name', type = 'text' },\n\
             \x20   { column = 'first', type = 'bool' },\n\
             })\n\
             function osm2pgsql.process_way(object)\n\
             \x20   local name = object.tags.name\n\
             \x20   if name then\n\
             \x20       t:insert({ name = name, first = not seen[name] })\n\
             \x20       seen[name] = true\n\
             \x20   end\n\
             end\n",
            "the local 'seen' used by osm2pgsql.process_way",
        ),
        (
            "global_counter",
            "count = 0\n\
             local t = osm2pgsql.define_node_table('numbered', {\n\
             \x20   { column = 'n', type = 'int8' },\n\
             })\n\
             function osm2pgsql.process_node(object)\n\
             \x20   count = count + 1\n\
             \x20   t:insert({ n = count })\n\
             end\n",
            "the global count",
        ),
    ];
    for (name, text, says) in cases {
        let path = dir.path().join(format!("{name}.lua"));
        std::fs::write(&path, text).unwrap();
        let url = PgCluster::shared()
            .create_database(&format!("flexstate_{name}"))
            .unwrap();
        let settings = ImportSettings {
            flex: Some(FlexSettings::from_file(&path).unwrap()),
            ..Default::default()
        };
        let db = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
        let two = tilepipe::apply::import::ImportThreads { decode: 2, lua: 2 };
        let message = error_chain(
            &tilepipe::apply::import::import_with_threads(&db, &town_path, &settings, &two)
                .expect_err("several Lua workers refuse a config that keeps state"),
        );
        assert!(
            message.contains(says) && message.contains("--lua-workers 1"),
            "{name}: {message}"
        );
        let one = tilepipe::apply::import::ImportThreads { decode: 2, lua: 1 };
        tilepipe::apply::import::import_with_threads(&db, &town_path, &settings, &one)
            .unwrap_or_else(|e| panic!("{name} with one Lua state: {}", error_chain(&e)));
    }
}
