//! Node locations in an osm2pgsql flat-nodes file (`--flat-nodes`):
//! imports and applies with the file give the rows they give without it,
//! the file is the one osm2pgsql 1.8 writes, stays sparse for planet-like
//! ids, survives `tilepipe apply` killed at random moments, and a 1.8
//! database imported with `--flat-nodes` is read and updated through the
//! legacy middle, in turns with `osm2pgsql --append`.
//!
//! The comparisons with osm2pgsql skip with a message when `osm2pgsql` is
//! not installed (`scripts/test` installs it).

use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tilepipe::apply::append::{Applier, ApplyResult, ClassicApplier};
use tilepipe::apply::flatnodes::FlatNodes;
use tilepipe::apply::import::import;
use tilepipe::apply::middle::{nodes_table_exists, Middle, MiddleLayout};
use tilepipe::apply::output::OutputTables;
use tilepipe::apply::process::Processor;
use tilepipe::apply::settings::ImportSettings;
use tilepipe::osm::{Action, Change, ChangeSet, Location, Meta, Node, Object, Way};
use tilepipe_testkit::db::{connect, db_config};
use tilepipe_testkit::feedgen::{FeedGenerator, OsmData};
use tilepipe_testkit::hostile::HostileDiffs;
use tilepipe_testkit::scale::Layout;
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::{shared_data, PgCluster};

const PREFIX: &str = "planet_osm";
/// The tables compared between databases: the outputs and what of the
/// middle both variants have.
const TABLES: [&str; 6] = ["point", "line", "roads", "polygon", "ways", "rels"];

fn osm2pgsql_available() -> bool {
    let found = Command::new("osm2pgsql").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: osm2pgsql is not installed (apt-get install osm2pgsql)");
    }
    found
}

/// `osm2pgsql --slim --flat-nodes FILE` (create or append) into `schema`,
/// with its default style, as 1.8 runs for a rendering database.
fn osm2pgsql(url: &str, schema: &str, flat_nodes: &Path, append: bool, input: &Path) {
    let out = Command::new("osm2pgsql")
        .args(["--slim", "-d", url, "--number-processes", "1"])
        .args(["-S", "/usr/share/osm2pgsql/default.style"])
        .arg(format!("--middle-schema={schema}"))
        .arg(format!("--output-pgsql-schema={schema}"))
        .arg("--flat-nodes")
        .arg(flat_nodes)
        .arg(if append { "--append" } else { "--create" })
        .arg(input)
        .output()
        .expect("osm2pgsql runs");
    assert!(
        out.status.success(),
        "osm2pgsql failed on {}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn settings(schema: &str, flat_nodes: Option<&Path>) -> ImportSettings {
    ImportSettings {
        schema: schema.into(),
        flat_nodes: flat_nodes.map(Path::to_path_buf),
        ..ImportSettings::default()
    }
}

/// A database with one empty schema per name.
fn database(name: &str, schemas: &[&str]) -> (String, postgres::Client) {
    let url = PgCluster::shared().create_database(name).unwrap();
    let mut client = connect(&url);
    for schema in schemas {
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
    }
    (url, client)
}

/// Count and digest of every row of each of [`TABLES`] in `schema`.
fn digests(client: &mut postgres::Client, schema: &str) -> Vec<(String, i64, String)> {
    TABLES
        .iter()
        .map(|t| {
            let row = client
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')
                         FROM {schema}.{PREFIX}_{t} t"
                    ),
                    &[],
                )
                .unwrap();
            (t.to_string(), row.get(0), row.get(1))
        })
        .collect()
}

/// Every location in `schema`'s nodes table is the file's, and the file
/// holds no other (the latter checked when the file is small enough to
/// walk).
fn assert_file_holds_the_table(client: &mut postgres::Client, schema: &str, file: &Path) {
    let nodes = FlatNodes::open(file).unwrap();
    let rows = client
        .query(
            &format!("SELECT id, lon, lat FROM {schema}.{PREFIX}_nodes"),
            &[],
        )
        .unwrap();
    for row in &rows {
        let id: i64 = row.get(0);
        assert_eq!(
            nodes.get(id).map(Location::to_fixed),
            Some((row.get(1), row.get(2))),
            "node {id}"
        );
    }
    if nodes.slots() <= 1 << 24 {
        let defined = (0..nodes.slots() as i64)
            .filter(|&id| nodes.get(id).is_some())
            .count();
        assert_eq!(defined, rows.len(), "locations in the file");
    }
}

/// Applies `changes` in one transaction.
fn apply(client: &mut postgres::Client, applier: &mut Applier, changes: &ChangeSet) -> ApplyResult {
    let mut tx = client.transaction().unwrap();
    let result = applier.apply(&mut tx, changes).unwrap();
    tx.commit().unwrap();
    result
}

fn applier(client: &mut postgres::Client, schema: &str) -> Applier {
    let settings = ImportSettings::load(client, schema).unwrap().unwrap();
    Applier::for_settings(&settings).unwrap()
}

/// Bytes a file takes on disk.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn length(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Liechtenstein (ids renumbered from 1): imported with and without flat
/// nodes, every output and middle row is the same and the file holds the
/// nodes table's locations; osm2pgsql 1.8 writes the very same file and,
/// like tilepipe, no nodes table.
#[test]
fn import_with_flat_nodes_equals_import_without_and_osm2pgsqls_file() {
    let Some(pbf) = shared_data("liechtenstein-2013-08-03.osm.pbf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodes.bin");
    let (url, mut client) = database("flat_import", &["tables", "flat", "o2p"]);
    import(&db_config(&url), &pbf, &settings("tables", None), 2).unwrap();
    let summary = import(&db_config(&url), &pbf, &settings("flat", Some(&file)), 2).unwrap();
    assert_eq!(summary.nodes, 65733);
    assert!(nodes_table_exists(&mut client, "tables", PREFIX).unwrap());
    assert!(!nodes_table_exists(&mut client, "flat", PREFIX).unwrap());
    assert_eq!(digests(&mut client, "flat"), digests(&mut client, "tables"));
    assert_file_holds_the_table(&mut client, "tables", &file);
    let recorded = ImportSettings::load(&mut client, "flat").unwrap().unwrap();
    assert_eq!(recorded.flat_nodes.as_deref(), Some(file.as_path()));

    if !osm2pgsql_available() {
        return;
    }
    let theirs = dir.path().join("osm2pgsql.bin");
    osm2pgsql(&url, "o2p", &theirs, false, &pbf);
    assert!(!nodes_table_exists(&mut client, "o2p", PREFIX).unwrap());
    let (ours, theirs) = (
        std::fs::read(&file).unwrap(),
        std::fs::read(&theirs).unwrap(),
    );
    assert_eq!(ours.len(), 8_388_608);
    assert!(
        ours == theirs,
        "tilepipe's flat-nodes file differs from osm2pgsql's"
    );
}

/// The synthetic town imported with and without flat nodes, then the
/// same generated diffs and hostile diffs applied to both: after every
/// few batches the rows, the row changes handed to expiry and the node
/// locations agree.
#[test]
fn applying_diffs_with_flat_nodes_equals_applying_them_without() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let input = dir.path().join("town.osm");
    town.write_osm_file(&input).unwrap();
    let file = dir.path().join("nodes.bin");
    let (url, mut client) = database("flat_apply", &["tables", "flat"]);
    import(&db_config(&url), &input, &settings("tables", None), 2).unwrap();
    import(&db_config(&url), &input, &settings("flat", Some(&file)), 2).unwrap();
    let mut with_table = applier(&mut client, "tables");
    let mut with_file = applier(&mut client, "flat");

    let mut generator = FeedGenerator::new(town.clone(), 5, 100, chrono::Utc::now(), 60);
    let mut hostile = HostileDiffs::new(town, 6);
    for n in 0..60 {
        // Careful edits, then hostile ones (nodes thrown about, deletes of
        // nodes never seen, ways over missing nodes).
        let changes: ChangeSet = if n < 30 {
            generator.next_diff().changes.into_iter().collect()
        } else {
            hostile.next_diff(8)
        };
        let a = apply(&mut client, &mut with_table, &changes);
        let b = apply(&mut client, &mut with_file, &changes);
        assert_eq!(
            in_any_order(a.row_changes),
            in_any_order(b.row_changes),
            "batch {n}: row changes"
        );
        if n % 10 == 9 {
            assert_eq!(
                digests(&mut client, "flat"),
                digests(&mut client, "tables"),
                "after batch {n}"
            );
            assert_file_holds_the_table(&mut client, "tables", &file);
        }
    }
}

/// The town with node ids around 1.2 × 10¹⁰, as a planet's: the file is
/// 96 GB long but takes a few megabytes, before and after applying diffs,
/// and the rows are those of the same data without flat nodes.
#[test]
fn planet_like_ids_keep_the_file_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let mut layout = Layout::for_data(&town, 2).unwrap();
    layout.id_offset = 12_000_000_000;
    let data = OsmData::from_objects(town.objects().map(|o| layout.copy_object(&o, 1)));
    let input = dir.path().join("planet_like.osm");
    data.write_osm_file(&input).unwrap();
    let file = dir.path().join("nodes.bin");
    let (url, mut client) = database("flat_planet_like", &["tables", "flat"]);
    import(&db_config(&url), &input, &settings("tables", None), 2).unwrap();
    import(&db_config(&url), &input, &settings("flat", Some(&file)), 2).unwrap();
    let [max_node, _, _] = data.max_ids();
    assert!(max_node > 12_000_000_000);
    let expected_length = (12_000_000_001 + (1 << 20)) * 8;
    let report = |when: &str| {
        eprintln!(
            "flat-nodes file {when}: length {} bytes, on disk {} bytes",
            length(&file),
            allocated(&file)
        );
        assert!(length(&file) >= expected_length, "{when}");
        // The first 8 MiB, the blocks the town's nodes use, and a margin
        // for file-system metadata.
        assert!(allocated(&file) < 12 << 20, "{when}");
    };
    report("after the import");
    assert_eq!(digests(&mut client, "flat"), digests(&mut client, "tables"));

    let mut with_table = applier(&mut client, "tables");
    let mut with_file = applier(&mut client, "flat");
    let mut generator = FeedGenerator::new(data, 7, 100, chrono::Utc::now(), 60);
    for _ in 0..5 {
        let changes: ChangeSet = generator.next_diff().changes.into_iter().collect();
        apply(&mut client, &mut with_table, &changes);
        apply(&mut client, &mut with_file, &changes);
    }
    report("after 5 diffs");
    assert_eq!(digests(&mut client, "flat"), digests(&mut client, "tables"));
    assert_file_holds_the_table(&mut client, "tables", &file);
}

/// A node, fixed point.
fn node(id: i64, lon: i32, lat: i32) -> Object {
    Object::Node(Node {
        id,
        meta: Meta::default(),
        location: Some(Location::from_fixed(lon, lat)),
        tags: Vec::new(),
    })
}

/// A big generated diff plus objects that grow the file and land in its
/// holes: nodes far beyond the end and a way over them and over a node
/// nobody has, a delete of a node never seen.
fn crash_diff(town: &OsmData) -> Vec<Change> {
    let mut generator = FeedGenerator::new(town.clone(), 11, 100, chrono::Utc::now(), 60)
        .with_changes_per_diff(3000, 3000);
    let mut changes = generator.next_diff().changes;
    let [_, max_way, _] = generator.data().max_ids();
    let create = |object| Change {
        action: Action::Create,
        object,
    };
    changes.push(create(node(30_000_000, 100_010_000, 500_010_000)));
    changes.push(create(node(30_000_001, 100_020_000, 500_000_000)));
    changes.push(create(Object::Way(Way {
        id: max_way + 1000,
        meta: Meta::default(),
        nodes: vec![30_000_000, 20_000_000, 30_000_001],
        tags: vec![("highway".into(), "service".into())],
    })));
    changes.push(Change {
        action: Action::Delete,
        object: node(25_000_000, 0, 0),
    });
    changes
}

/// `tilepipe apply` killed at random moments of a batch, several times,
/// then run to its end: the tables and the flat-nodes file are those of
/// one clean run of the same batch, byte for byte.
#[test]
fn killed_applies_then_a_rerun_equal_one_clean_apply() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let input = dir.path().join("town.osm");
    town.write_osm_file(&input).unwrap();
    let osc = dir.path().join("batch.osc");
    let changes: ChangeSet = crash_diff(&town).into_iter().collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&osc).unwrap());
    tilepipe::osm::osc_write::write_osc(&mut out, "test", changes.iter()).unwrap();
    drop(out);
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();

    let clean_file = dir.path().join("clean.bin");
    let killed_file = dir.path().join("killed.bin");
    let (clean_url, mut clean) = database("flat_crash_clean", &[]);
    let (killed_url, mut killed) = database("flat_crash_killed", &[]);
    import(
        &db_config(&clean_url),
        &input,
        &settings("public", Some(&clean_file)),
        2,
    )
    .unwrap();
    import(
        &db_config(&killed_url),
        &input,
        &settings("public", Some(&killed_file)),
        2,
    )
    .unwrap();
    let imported = std::fs::read(&killed_file).unwrap();
    assert_eq!(imported.len(), 8 << 20, "the town's ids need no growth");
    // Whether the batch's writes reached the file: it grew, or the town's
    // slots changed.
    let written = || {
        use std::io::Read;
        let mut file = std::fs::File::open(&killed_file).unwrap();
        let mut start = vec![0; imported.len()];
        file.read_exact(&mut start).unwrap();
        length(&killed_file) != imported.len() as u64 || start != imported
    };

    let command = |url: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tilepipe"));
        command
            .args(["-c", config.to_str().unwrap(), "-d", url, "apply"])
            .arg(&osc)
            .stderr(std::process::Stdio::piped());
        command
    };
    let run = |url: &str| command(url).spawn().unwrap();
    // What the run logs it rewrote and changed: the row changes handed to
    // expiry, counted.
    let complete_run = |url: &str| -> String {
        let out = command(url).output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        let line = log.lines().find(|l| l.contains("output rows rewritten"));
        let line = line.unwrap_or_else(|| panic!("no summary in {log}"));
        line.split_once(" s: ").unwrap().1.to_string()
    };
    // The clean run, and the time a run takes: the shorter of it and of
    // the same batch applied again (which changes nothing), as the first
    // run of the binary starts cold.
    let started = Instant::now();
    let clean_summary = complete_run(&clean_url);
    let took = started.elapsed();
    let started = Instant::now();
    complete_run(&clean_url);
    let took = took.min(started.elapsed());
    let current = |client: &mut postgres::Client| -> String {
        client
            .query_one(
                "SELECT value FROM osm2pgsql_properties WHERE property = 'current_timestamp'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let before = current(&mut killed);
    assert_ne!(
        current(&mut clean),
        before,
        "the batch raises current_timestamp"
    );

    // The first kill comes as soon as the batch has grown the file, so
    // between its first file writes and its commit: the file is ahead of
    // the tables.
    let mut child = run(&killed_url);
    while length(&killed_file) == imported.len() as u64 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended without growing the file"
        );
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(current(&mut killed), before, "killed before its commit");
    assert!(written());
    // Then seven at random moments of a run's first 60 %, wherever they
    // fall. A run that got to its commit all the same (a loaded machine)
    // ends the series: what follows re-applies a committed batch, which
    // must change nothing either.
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let (mut kills, mut committed) = (1, false);
    while kills < 8 {
        let mut child = run(&killed_url);
        std::thread::sleep(took.mul_f64(rng.random_range(0.05..0.6)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
        }
        child.wait().unwrap();
        if current(&mut killed) != before {
            committed = true;
            break;
        }
        kills += 1;
    }
    eprintln!("{kills} runs of {took:?} killed before their commit, then one ran to its end");
    eprintln!("clean run: {clean_summary}");
    let last = complete_run(&killed_url);
    if committed {
        assert!(last.contains(", 0 changed;"), "{last}");
    } else {
        assert_eq!(last, clean_summary);
    }

    assert_eq!(
        digests(&mut killed, "public"),
        digests(&mut clean, "public")
    );
    assert_eq!(current(&mut killed), current(&mut clean));
    let (a, b) = (
        std::fs::read(&killed_file).unwrap(),
        std::fs::read(&clean_file).unwrap(),
    );
    assert_eq!(a.len(), b.len(), "file lengths");
    assert!(a == b, "the flat-nodes files differ");
    // The batch grew the file and filled the blocks of its far nodes.
    assert_eq!(a.len() as u64, (30_000_000 + 1 + (1 << 20)) * 8);
    let nodes = FlatNodes::open(&killed_file).unwrap();
    assert!(nodes.get(30_000_000).is_some());
    assert_eq!(nodes.get(20_000_000), None);
    let at = |id: usize| &a[id * 8..id * 8 + 8];
    assert_eq!(
        at(20_000_000),
        [0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f]
    );
    assert_eq!(
        at(25_000_000),
        [0; 8],
        "a delete of a never-seen node leaves the hole"
    );
    assert!(allocated(&killed_file) < 16 << 20);
}

/// The output rows of `table` in schemas `mixed` and `twin` pair up: the
/// same count, and for each row one on the other side with the same
/// osm_id and columns and a geometry within 1 cm (tilepipe's and
/// osm2pgsql's geometries may differ in the last bits).
fn assert_same_rows(client: &mut postgres::Client, table: &str) {
    let count = |client: &mut postgres::Client, schema: &str| -> i64 {
        client
            .query_one(
                &format!("SELECT count(*) FROM {schema}.{PREFIX}_{table}"),
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(
        count(client, "mixed"),
        count(client, "twin"),
        "{table}: rows"
    );
    for (from, to) in [("mixed", "twin"), ("twin", "mixed")] {
        let unmatched: Vec<i64> = client
            .query(
                &format!(
                    "SELECT x.osm_id FROM {from}.{PREFIX}_{table} x WHERE NOT EXISTS (
                       SELECT 1 FROM {to}.{PREFIX}_{table} y WHERE y.osm_id = x.osm_id
                         AND to_jsonb(y) - 'way' = to_jsonb(x) - 'way'
                         AND ST_HausdorffDistance(x.way, y.way) < 0.01)
                     ORDER BY 1 LIMIT 10"
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            unmatched.is_empty(),
            "{table}: rows of {from} without their like in {to}: {unmatched:?}"
        );
    }
}

/// osm2pgsql 1.8's middle with `--flat-nodes`: the town imported by
/// osm2pgsql is read through the legacy layout and the file.
fn osm2pgsql_middle(client: &mut postgres::Client, schema: &str, file: &Path) -> Middle {
    assert!(!nodes_table_exists(client, schema, PREFIX).unwrap());
    let layout = MiddleLayout::detect(client, schema, PREFIX).unwrap();
    assert_eq!(layout, Some(MiddleLayout::Legacy18 { bucket_index: true }));
    Middle::with_layout(schema, PREFIX, layout.unwrap())
        .with_flat_nodes(FlatNodes::open(file).unwrap())
}

/// A database osm2pgsql imported with `--flat-nodes`: tilepipe reads its
/// node locations through the legacy middle and the file, applies a diff
/// to it (tables and file), then osm2pgsql goes on with `--append`; the
/// result equals a twin database osm2pgsql alone kept up to date: output
/// rows, middle rows and the flat-nodes file, byte for byte.
#[test]
fn legacy_middle_with_flat_nodes_takes_turns_with_osm2pgsql() {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let input = dir.path().join("town.osm");
    town.write_osm_file(&input).unwrap();
    let (url, mut client) = database("flat_legacy", &["mixed", "twin"]);
    let mixed_file = dir.path().join("mixed.bin");
    let twin_file = dir.path().join("twin.bin");
    osm2pgsql(&url, "mixed", &mixed_file, false, &input);
    osm2pgsql(&url, "twin", &twin_file, false, &input);

    // Reads: every node's location, none for an unknown id.
    let middle = osm2pgsql_middle(&mut client, "mixed", &mixed_file);
    let mut ids: Vec<i64> = town.nodes.keys().copied().collect();
    let expected: HashMap<i64, (i32, i32)> = town
        .nodes
        .values()
        .map(|n| (n.id, n.location.unwrap().to_fixed()))
        .collect();
    ids.push(town.max_ids()[0] + 10);
    let read: HashMap<i64, (i32, i32)> = middle
        .node_locations(&mut client, &ids)
        .unwrap()
        .into_iter()
        .map(|(id, l)| (id, l.to_fixed()))
        .collect();
    assert_eq!(read, expected);

    // Two diffs: the first applied by tilepipe to `mixed` and by osm2pgsql
    // to `twin`, the second by osm2pgsql to both.
    let mut generator = FeedGenerator::new(town, 21, 100, chrono::Utc::now(), 60);
    let diffs: Vec<PathBuf> = (0..2)
        .map(|n| {
            let path = dir.path().join(format!("{n}.osc"));
            let mut out = std::fs::File::create(&path).unwrap();
            // In osm2pgsql's input order: nodes, ways, relations, by id.
            let changes: ChangeSet = generator.next_diff().changes.into_iter().collect();
            tilepipe::osm::osc_write::write_osc(&mut out, "test", changes.iter()).unwrap();
            path
        })
        .collect();
    let changes = tilepipe::osm::osc::read_osc_file(&diffs[0]).unwrap();
    let settings = settings("mixed", None);
    let processor = Processor::new(&settings).unwrap();
    let tables = OutputTables::new("mixed", PREFIX, processor.style().clone());
    let mut applier = Applier::Classic(ClassicApplier::new(middle, tables, processor));
    let result = apply(&mut client, &mut applier, &changes);
    assert!(result.changed_rows().count() > 0);
    osm2pgsql(&url, "twin", &twin_file, true, &diffs[0]);
    for (schema, file) in [("mixed", &mixed_file), ("twin", &twin_file)] {
        osm2pgsql(&url, schema, file, true, &diffs[1]);
    }

    for table in ["point", "line", "roads", "polygon"] {
        assert_same_rows(&mut client, table);
    }
    let middle_rows = |client: &mut postgres::Client, schema: &str| -> Vec<(String, i64, String)> {
        digests(client, schema)
            .into_iter()
            .filter(|(table, _, _)| table == "ways" || table == "rels")
            .collect()
    };
    assert_eq!(
        middle_rows(&mut client, "mixed"),
        middle_rows(&mut client, "twin")
    );
    let (ours, theirs) = (
        std::fs::read(&mixed_file).unwrap(),
        std::fs::read(&twin_file).unwrap(),
    );
    assert!(ours == theirs, "the flat-nodes files differ");
}

/// `tilepipe import -F` records the file's absolute path; `apply` uses
/// it, accepts `import.flat_nodes` naming the same file by another path,
/// and refuses another file or a missing one, saying which.
#[test]
fn the_recorded_file_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let input = dir.path().join("town.osm");
    town.write_osm_file(&input).unwrap();
    let url = PgCluster::shared().create_database("flat_cli").unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    let tilepipe = |config: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tilepipe"))
            .current_dir(dir.path())
            .args(["-c", config.to_str().unwrap(), "-q", "-d", &url])
            .args(args)
            .output()
            .unwrap()
    };
    let out = tilepipe(
        &config,
        &["import", "-F", "nodes.bin", input.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.path().join("nodes.bin");
    let recorded = ImportSettings::load(&mut connect(&url), "public")
        .unwrap()
        .unwrap()
        .flat_nodes;
    assert_eq!(recorded, Some(file.clone()));
    assert!(!nodes_table_exists(&mut connect(&url), "public", PREFIX).unwrap());

    let mut generator = FeedGenerator::new(town, 3, 100, chrono::Utc::now(), 60);
    let osc = dir.path().join("diff.osc");
    let changes: ChangeSet = generator.next_diff().changes.into_iter().collect();
    let mut out = std::fs::File::create(&osc).unwrap();
    tilepipe::osm::osc_write::write_osc(&mut out, "test", changes.iter()).unwrap();
    let apply = |config: &Path| tilepipe(config, &["apply", osc.to_str().unwrap()]);
    let configured = |name: &str, value: &Path| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("import:\n  flat_nodes: {}\n", value.display()),
        )
        .unwrap();
        path
    };
    let link = dir.path().join("link.bin");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let same = apply(&configured("same.yaml", &link));
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );

    let other = apply(&configured("other.yaml", &dir.path().join("other.bin")));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        stderr.contains("other.bin") && stderr.contains(&file.display().to_string()),
        "{stderr}"
    );

    std::fs::rename(&file, dir.path().join("moved.bin")).unwrap();
    let missing = apply(&config);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.contains("does not exist") && stderr.contains(&file.display().to_string()),
        "{stderr}"
    );
}

/// Every table of `schema` but the nodes table and the properties, with
/// the digests of its rows.
fn schema_digests(client: &mut postgres::Client, schema: &str) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 AND table_name NOT IN ('planet_osm_nodes', 'osm2pgsql_properties')
             ORDER BY 1",
            &[&schema],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|table| {
            let row = client
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')
                         FROM {schema}.{table} t"
                    ),
                    &[],
                )
                .unwrap();
            (table, row.get(0), row.get(1))
        })
        .collect()
}

/// The flex output (two-stage routes and the geometry shapes configs)
/// with and without flat nodes: the same tables and rows after the import
/// and after diffs.
#[test]
fn flex_output_with_flat_nodes_equals_without() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let input = dir.path().join("town.osm");
    town.write_osm_file(&input).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flex");
    for name in ["routes", "shapes"] {
        let config = fixtures.join(format!("{name}.lua"));
        let flex = tilepipe::apply::flex::FlexSettings::from_file(&config).unwrap();
        let (url, mut client) = database(&format!("flat_flex_{name}"), &["tables", "flat"]);
        let file = dir.path().join(format!("{name}.bin"));
        for (schema, flat_nodes) in [("tables", None), ("flat", Some(file.as_path()))] {
            let settings = ImportSettings {
                flex: Some(flex.clone()),
                ..settings(schema, flat_nodes)
            };
            import(&db_config(&url), &input, &settings, 2).unwrap();
        }
        let tables = schema_digests(&mut client, "tables");
        assert!(tables.len() > 2, "{name}: {tables:?}");
        assert_eq!(
            schema_digests(&mut client, "flat"),
            tables,
            "{name}: import"
        );
        let mut with_table = applier(&mut client, "tables");
        let mut with_file = applier(&mut client, "flat");
        let mut generator = FeedGenerator::new(town.clone(), 8, 100, chrono::Utc::now(), 60);
        for n in 0..10 {
            let changes: ChangeSet = generator.next_diff().changes.into_iter().collect();
            let a = apply(&mut client, &mut with_table, &changes);
            let b = apply(&mut client, &mut with_file, &changes);
            assert_eq!(
                in_any_order(a.row_changes),
                in_any_order(b.row_changes),
                "{name}: batch {n}"
            );
        }
        assert_eq!(
            schema_digests(&mut client, "flat"),
            schema_digests(&mut client, "tables"),
            "{name}: after diffs"
        );
    }
}

/// Row changes with each object's geometries sorted: an object with
/// several rows (a relation's parts) reads them back in physical order,
/// which two tables filled the same way may still order differently.
fn in_any_order(
    mut changes: Vec<tilepipe::apply::append::RowChange>,
) -> Vec<tilepipe::apply::append::RowChange> {
    for change in &mut changes {
        change.old.sort();
        change.new.sort();
    }
    changes
}
