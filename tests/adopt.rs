//! `tilepipe adopt` on databases Debian's osm2pgsql 1.8 imported with
//! `--slim`: the same input imported into two twin schemas of one
//! database; one adopted and then updated by `tilepipe apply`, the other
//! by `osm2pgsql --append` with the same flags. Output rows (every column,
//! geometry within 1 cm) and the legacy middle tables must stay equal, and
//! `osm2pgsql --append` must still update the adopted schema as it does
//! the twin. Also: every refusal, adopting twice, and taking over
//! osm2pgsql-replication 1.8's position.
//!
//! Skips with a message when `osm2pgsql` is not installed (`scripts/test`
//! installs it).

use std::path::{Path, PathBuf};
use std::process::Output;
use tilepipe::osm::ChangeSet;
use tilepipe::replication::position::{read_position, StoredPosition};
use tilepipe_testkit::cli::{assert_success, tilepipe};
use tilepipe_testkit::feedgen::{FeedGenerator, OsmData};
use tilepipe_testkit::feedserver::FeedServer;
use tilepipe_testkit::flex_compare::{self, Sides};
use tilepipe_testkit::osm2pgsql::{
    self as o2p, assert_middle_equal, assert_new_middle_equal, assert_tables_equal, carto_variant,
    default_variant, hstore_variant, Variant, CLASSIC_TABLES,
};
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::PgCluster;

/// The schema tilepipe adopts and updates.
const ADOPTED: &str = "adopted";
/// Its twin, updated by osm2pgsql only.
const TWIN: &str = "twin";
const PREFIX: &str = "planet_osm";

/// The flex configs read their tables' schema from this variable.
const FLEX_SCHEMA_VARIABLE: &str = "FLEX_TEST_SCHEMA";

/// Which output osm2pgsql wrote, with which options.
enum OutputKind {
    /// The classic ("pgsql") output.
    Classic(Variant),
    /// The flex output with this config (one of `tests/fixtures/flex`).
    Flex(PathBuf),
}

impl OutputKind {
    /// The output options, as osm2pgsql and tilepipe adopt take them.
    fn flags(&self) -> Vec<String> {
        match self {
            OutputKind::Classic(variant) => variant.flags.clone(),
            OutputKind::Flex(config) => flags(&["-O", "flex", "-S", config.to_str().unwrap()]),
        }
    }

    /// `osm2pgsql --slim --create` (or `--append`) into `schema`, with
    /// `extra` options.
    fn osm2pgsql(
        &self,
        program: &Path,
        url: &str,
        schema: &str,
        extra: &[String],
        append: bool,
        file: &Path,
    ) {
        match self {
            OutputKind::Classic(variant) => o2p::run_program(
                program,
                url,
                schema,
                &[&variant.flags[..], extra].concat(),
                append,
                file,
            ),
            OutputKind::Flex(_) => {
                let mut args = flags(&["--slim", if append { "--append" } else { "--create" }]);
                args.push(format!("--middle-schema={schema}"));
                args.extend(self.flags());
                args.extend_from_slice(extra);
                let env = [(FLEX_SCHEMA_VARIABLE, schema)];
                if let Err(stderr) = o2p::try_run_program(program, url, &args, &env, file) {
                    panic!("osm2pgsql failed on {}: {stderr}", file.display());
                }
            }
        }
    }
}

/// A database with `input` imported by osm2pgsql 1.8 into [`ADOPTED`]
/// and [`TWIN`], and a tilepipe config pointing at [`ADOPTED`].
struct Twins {
    dir: tempfile::TempDir,
    url: String,
    config: PathBuf,
    client: postgres::Client,
    output: OutputKind,
    /// Node locations in a flat-nodes file per schema
    /// (`<dir>/<schema>.nodes`), not in nodes tables.
    flat_nodes: bool,
    /// The osm2pgsql that imports and updates the twin.
    peer: Peer,
}

/// Which osm2pgsql the twins are imported and updated with.
#[derive(Clone)]
enum Peer {
    /// Debian 12's osm2pgsql 1.8 (legacy middle).
    Debian18,
    /// osm2pgsql 2.1.1 (new middle format), see `o2p::peer2`.
    V2(o2p::Peer2),
}

impl Peer {
    fn program(&self) -> PathBuf {
        match self {
            Peer::Debian18 => PathBuf::from("osm2pgsql"),
            Peer::V2(peer) => peer.osm2pgsql.clone(),
        }
    }
}

/// What the replication hand-over tests start from: the town written to
/// a file, a local feed of generated diffs after it (the first
/// `by_tilepipe` published), the data after each diff, and a database with
/// an empty [`ADOPTED`] schema.
struct ReplicationCase {
    start_time: chrono::DateTime<chrono::Utc>,
    town_path: PathBuf,
    data_at: Vec<OsmData>,
    server: FeedServer,
    url: String,
    client: postgres::Client,
}

fn replication_case(
    dir: &Path,
    database: &str,
    seed: u64,
    start: u64,
    by_tilepipe: u64,
    by_osm2pgsql: u64,
) -> ReplicationCase {
    let start_time = chrono::Utc::now() - chrono::Duration::minutes(20);
    let (town, town_path) = tilepipe_testkit::town::write_town_file(dir);
    let mut generator = FeedGenerator::new(town, seed, start, start_time, 60);
    let mut diffs = Vec::new();
    let mut data_at = Vec::new();
    for _ in 0..by_tilepipe + by_osm2pgsql {
        diffs.push(generator.next_diff());
        data_at.push(generator.data().clone());
    }
    let feed_dir = dir.join("feed");
    tilepipe_testkit::feedgen::write_feed(&feed_dir, generator.start_state(), &diffs).unwrap();
    let server = FeedServer::start_blocking(&feed_dir).unwrap();
    server.set_published(start + by_tilepipe);
    let url = PgCluster::shared().create_database(database).unwrap();
    let mut client = tilepipe_testkit::db::connect(&url);
    client
        .batch_execute(&format!("CREATE SCHEMA {ADOPTED}"))
        .unwrap();
    ReplicationCase {
        start_time,
        town_path,
        data_at,
        server,
        url,
        client,
    }
}

fn write_config(dir: &Path, schema: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{schema}.yaml"));
    std::fs::write(
        &path,
        format!("database:\n  middle_schema: {schema}\n{extra}"),
    )
    .unwrap();
    path
}

fn twins(name: &str, input: &Path, output: OutputKind) -> Twins {
    twins_with(name, input, output, false)
}

fn twins_with(name: &str, input: &Path, output: OutputKind, flat_nodes: bool) -> Twins {
    twins_of(Peer::Debian18, name, input, output, flat_nodes)
}

fn twins_of(peer: Peer, name: &str, input: &Path, output: OutputKind, flat_nodes: bool) -> Twins {
    assert!(
        std::env::var_os(FLEX_SCHEMA_VARIABLE).is_none(),
        "{FLEX_SCHEMA_VARIABLE} must not be set for the tests: tilepipe would put its tables there"
    );
    let dir = tempfile::tempdir().unwrap();
    let url = PgCluster::shared().create_database(name).unwrap();
    let mut client = tilepipe_testkit::db::connect(&url);
    client
        .batch_execute(&format!("CREATE SCHEMA {ADOPTED}; CREATE SCHEMA {TWIN};"))
        .unwrap();
    let config = write_config(dir.path(), ADOPTED, "");
    let twins = Twins {
        dir,
        url,
        config,
        client,
        output,
        flat_nodes,
        peer,
    };
    for schema in [ADOPTED, TWIN] {
        let nodes = twins.node_options(schema);
        twins.output.osm2pgsql(
            &twins.peer.program(),
            &twins.url,
            schema,
            &nodes,
            false,
            input,
        );
    }
    twins
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn adopt(config: &Path, url: &str, flags: &[String]) -> Output {
    let mut args = vec!["adopt".to_string()];
    args.extend(flags.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tilepipe(config, url, &args)
}

/// `tilepipe adopt` that must fail; its stderr.
fn refused(config: &Path, url: &str, flags: &[String]) -> String {
    let out = adopt(config, url, flags);
    assert!(
        !out.status.success(),
        "adopt succeeded but should not have: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

fn assert_mentions(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            haystack.contains(needle),
            "expected {needle:?} in:\n{haystack}"
        );
    }
}

impl Twins {
    /// The flat-nodes file of `schema`'s import.
    fn flat_nodes_file(&self, schema: &str) -> PathBuf {
        self.dir.path().join(format!("{schema}.nodes"))
    }

    /// `--flat-nodes FILE` for `schema`, when the twins use files.
    fn node_options(&self, schema: &str) -> Vec<String> {
        if self.flat_nodes {
            let file = self.flat_nodes_file(schema);
            flags(&["--flat-nodes", file.to_str().unwrap()])
        } else {
            Vec::new()
        }
    }

    fn adopt(&self) -> String {
        let options = [self.output.flags(), self.node_options(ADOPTED)].concat();
        let out = adopt(&self.config, &self.url, &options);
        assert_success(&out);
        text(&out.stdout)
    }

    /// `tilepipe apply` on the adopted schema, `osm2pgsql --append` on the
    /// twin.
    fn apply_both(&self, file: &Path) {
        let out = tilepipe(&self.config, &self.url, &["apply", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "tilepipe apply {}: {}",
            file.display(),
            text(&out.stderr)
        );
        let nodes = self.node_options(TWIN);
        let program = self.peer.program();
        self.output
            .osm2pgsql(&program, &self.url, TWIN, &nodes, true, file);
    }

    /// `osm2pgsql --append` on both schemas.
    fn osm2pgsql_both(&self, file: &Path) {
        for schema in [ADOPTED, TWIN] {
            let nodes = self.node_options(schema);
            let program = self.peer.program();
            self.output
                .osm2pgsql(&program, &self.url, schema, &nodes, true, file);
        }
    }

    /// Output and middle tables equal; their row counts.
    fn assert_equal(&mut self, stage: &str) -> (Vec<i64>, Vec<i64>) {
        let rows = match &self.output {
            OutputKind::Classic(_) => {
                assert_tables_equal(&mut self.client, TWIN, ADOPTED, &CLASSIC_TABLES, stage)
            }
            OutputKind::Flex(_) => {
                let sides = Sides {
                    reference: TWIN,
                    ours: ADOPTED,
                };
                let problems = flex_compare::differences(&mut self.client, &sides);
                assert!(
                    problems.is_empty(),
                    "{stage}: the adopted schema differs from its twin:\n  {}",
                    problems.join("\n  ")
                );
                flex_compare::reference_counts(&mut self.client, TWIN)
                    .into_iter()
                    .map(|(_, n)| n)
                    .collect()
            }
        };
        let middle = match self.peer {
            Peer::Debian18 => assert_middle_equal(&mut self.client, TWIN, ADOPTED, PREFIX, stage),
            Peer::V2(_) => assert_new_middle_equal(&mut self.client, TWIN, ADOPTED, PREFIX, stage),
        };
        if self.flat_nodes {
            // tilepipe's writes to the file are osm2pgsql's, byte for byte
            // at these ids.
            let read = |schema| std::fs::read(self.flat_nodes_file(schema)).unwrap();
            let (theirs, ours) = (read(TWIN), read(ADOPTED));
            let first_difference = theirs.iter().zip(&ours).position(|(a, b)| a != b);
            assert!(
                theirs.len() == ours.len() && first_difference.is_none(),
                "{stage}: flat-nodes files differ: {} and {} bytes, first at byte {first_difference:?}",
                theirs.len(),
                ours.len()
            );
        }
        (rows, middle)
    }

    fn write_diff(&self, name: &str, changes: &ChangeSet) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.osc"));
        let mut file = std::fs::File::create(&path).unwrap();
        tilepipe::osm::osc_write::write_osc(&mut file, "test", changes.iter()).unwrap();
        path
    }

    /// `count` generated diffs applied to both sides, then one more
    /// written by osm2pgsql into both.
    fn follow(&mut self, generator: &mut FeedGenerator, count: usize, stage: &str) {
        let mut moved = 0;
        for n in 1..=count {
            let diff = generator.next_diff();
            moved += diff.summary.moved_nodes.len() + diff.summary.multipolygon_edits.len();
            let changes: ChangeSet = diff.changes.iter().cloned().collect();
            let path = self.write_diff(&format!("{stage}-{n}"), &changes);
            self.apply_both(&path);
        }
        assert!(moved > 0, "the diffs moved nodes and edited multipolygons");
        let (rows, middle) = self.assert_equal(&format!("{stage}: after {count} diffs"));
        eprintln!("{stage}: equal after {count} diffs: output rows {rows:?}, middle {middle:?}");

        let diff = generator.next_diff();
        let changes: ChangeSet = diff.changes.iter().cloned().collect();
        let path = self.write_diff(&format!("{stage}-osm2pgsql"), &changes);
        self.osm2pgsql_both(&path);
        self.assert_equal(&format!(
            "{stage}: osm2pgsql --append on the tilepipe-updated schema"
        ));
    }
}

#[test]
fn town_default_style_adopted_follows_osm2pgsql() {
    if !o2p::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
    let mut t = twins(
        "adopt_town_default",
        &path,
        OutputKind::Classic(default_variant()),
    );
    let report = t.adopt();
    eprintln!("{report}");
    assert_mentions(
        &report,
        &[
            "osm2pgsql 1.8 legacy slim tables planet_osm_nodes",
            "bucket index planet_osm_ways_nodes_bucket_idx",
            "planet_osm_rels_parts_idx",
            "no flat-nodes file",
            "adopted.planet_osm_point (~",
            "id index planet_osm_point_osm_id_idx",
            "replication: no position found",
            "run `tilepipe init`",
            "(created; osm2pgsql 1.8 does not use it)",
            "data bounds measured from the output tables: ",
        ],
    );
    // Nothing but the properties table was created or changed.
    t.assert_equal("after adopt");
    let mut generator = FeedGenerator::new(town, 5, 100, chrono::Utc::now(), 60);
    t.follow(&mut generator, 8, "town default");
}

#[test]
fn town_flat_nodes_adopted_follows_osm2pgsql() {
    if !o2p::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
    let mut t = twins_with(
        "adopt_town_flat",
        &path,
        OutputKind::Classic(default_variant()),
        true,
    );
    let report = t.adopt();
    assert_mentions(
        &report,
        &[
            "node locations: in the flat-nodes file",
            "adopted.nodes (1048576 slots; no planet_osm_nodes table)",
            "osm2pgsql 1.8 legacy slim tables planet_osm_ways",
            "--flat-nodes",
        ],
    );
    t.assert_equal("after adopt");
    let mut generator = FeedGenerator::new(town, 13, 100, chrono::Utc::now(), 60);
    t.follow(&mut generator, 6, "town flat nodes");
}

#[test]
fn town_hstore_adopted_follows_osm2pgsql() {
    if !o2p::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
    let mut t = twins(
        "adopt_town_hstore",
        &path,
        OutputKind::Classic(hstore_variant()),
    );
    assert_mentions(&t.adopt(), &["--hstore", ", tags, way"]);
    let mut generator = FeedGenerator::new(town, 9, 100, chrono::Utc::now(), 60);
    t.follow(&mut generator, 4, "town hstore");
}

#[test]
fn liechtenstein_carto_adopted_follows_osm2pgsql() {
    let Some(pbf) = tilepipe_testkit::shared_data("liechtenstein-2013-08-03.osm.pbf") else {
        return;
    };
    let Some(real_diff) = tilepipe_testkit::shared_data("000466354.osc.gz") else {
        return;
    };
    let Some(variant) = carto_variant() else {
        return;
    };
    if !o2p::available() {
        return;
    }
    let mut t = twins("adopt_li_carto", &pbf, OutputKind::Classic(variant));
    let report = t.adopt();
    assert_mentions(
        &report,
        &["-G", "--hstore", "openstreetmap-carto.lua", "way_area"],
    );
    t.apply_both(&real_diff);
    t.assert_equal("after 000466354.osc.gz");
    let data = OsmData::from_pbf(&pbf).unwrap();
    let mut generator = FeedGenerator::new(data, 11, 100, chrono::Utc::now(), 60);
    t.follow(&mut generator, 3, "liechtenstein carto");
}

/// The town imported by osm2pgsql with a flex config of
/// `tests/fixtures/flex`, adopted, then followed as the classic output.
fn town_flex(name: &str, diffs: usize) {
    if !o2p::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
    let relative = format!("tests/fixtures/flex/{name}.lua");
    let config = tilepipe_testkit::paths::repo_file(&relative);
    let mut t = twins(
        &format!("adopt_flex_{name}"),
        &path,
        OutputKind::Flex(config),
    );
    let report = t.adopt();
    assert_mentions(&report, &["output: flex", "flex config", &relative]);
    t.assert_equal("after adopt");
    let mut generator = FeedGenerator::new(town, 7, 100, chrono::Utc::now(), 60);
    t.follow(&mut generator, diffs, &format!("town flex {name}"));
}

#[test]
fn town_flex_adopted_follows_osm2pgsql() {
    town_flex("carto", 8);
}

/// The other configs: every column type, geometry kind and the two-stage
/// processing of osm2pgsql 1.8's flex API.
#[test]
fn town_flex_other_configs_adopted_follow_osm2pgsql() {
    for name in ["values", "shapes", "routes"] {
        town_flex(name, 3);
    }
}

/// A database with the synthetic town imported by osm2pgsql into
/// [`ADOPTED`] with `args` (schema options added), and a config for it.
fn town_database(name: &str, args: &[&str]) -> (tempfile::TempDir, String, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = tilepipe_testkit::town::write_town_file(dir.path());
    let url = PgCluster::shared().create_database(name).unwrap();
    tilepipe_testkit::db::connect(&url)
        .batch_execute(&format!("CREATE SCHEMA {ADOPTED}"))
        .unwrap();
    let mut all: Vec<String> = vec![
        format!("--middle-schema={ADOPTED}"),
        format!("--output-pgsql-schema={ADOPTED}"),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    if let Err(stderr) = o2p::try_run(&url, &all, &path) {
        panic!("osm2pgsql {args:?}: {stderr}");
    }
    let config = write_config(dir.path(), ADOPTED, "");
    (dir, url, config)
}

fn flags(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[test]
fn refuses_empty_and_non_slim_databases() {
    if !o2p::available() {
        return;
    }
    let (dir, url, config) = town_database("adopt_non_slim", &["-S", o2p::DEFAULT_STYLE]);
    let err = refused(&config, &url, &flags(&["-S", o2p::DEFAULT_STYLE]));
    assert_mentions(&err, &["no middle tables", "without --slim"]);

    let other = write_config(dir.path(), "public", "");
    let err = refused(&other, &url, &[]);
    assert_mentions(
        &err,
        &["no osm2pgsql import in schema public with prefix planet_osm"],
    );
}

/// A flat-nodes import needs its file, and only it; a nodes table, none.
#[test]
fn refuses_flat_nodes_without_their_file_or_with_another() {
    if !o2p::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.bin");
    let style = ["-S", o2p::DEFAULT_STYLE];
    let (_dir, url, config) = town_database(
        "adopt_flat",
        &[
            &["--slim", "--flat-nodes", nodes.to_str().unwrap()],
            &style[..],
        ]
        .concat(),
    );
    let with_file = |file: &Path| flags(&[&style[..], &["-F", file.to_str().unwrap()]].concat());
    let err = refused(&config, &url, &flags(&style));
    assert_mentions(
        &err,
        &[
            "adopted.planet_osm_nodes is missing",
            "pass the same file with --flat-nodes FILE",
        ],
    );
    let err = refused(&config, &url, &with_file(&dir.path().join("gone.bin")));
    assert_mentions(&err, &["gone.bin", "No such file"]);
    let small = dir.path().join("small.bin");
    std::fs::write(&small, [0u8; 64]).unwrap();
    let err = refused(&config, &url, &with_file(&small));
    assert_mentions(&err, &["64 bytes, less than the 8 MiB"]);
    assert_eq!(
        std::fs::metadata(&small).unwrap().len(),
        64,
        "left as it was"
    );
    let other = dir.path().join("other.bin");
    drop(tilepipe::apply::flatnodes::FlatNodes::create(&other).unwrap());
    let err = refused(&config, &url, &with_file(&other));
    assert_mentions(
        &err,
        &[
            "other.bin: it has no location for",
            "not the file osm2pgsql was run with",
        ],
    );

    let (_dir, url, config) = town_database("adopt_not_flat", &[&["--slim"], &style[..]].concat());
    let err = refused(&config, &url, &with_file(&nodes));
    assert_mentions(
        &err,
        &[
            "adopted.planet_osm_nodes exists",
            "adopt without --flat-nodes",
        ],
    );
}

#[test]
fn refuses_extra_attributes() {
    if !o2p::available() {
        return;
    }
    let (_dir, url, config) =
        town_database("adopt_extra", &["--slim", "-x", "-S", o2p::DEFAULT_STYLE]);
    let err = refused(&config, &url, &flags(&["-S", o2p::DEFAULT_STYLE]));
    assert_mentions(
        &err,
        &["adopted.planet_osm_ways holds osm2pgsql's -x/--extra-attributes pseudo-tags"],
    );
}

#[test]
fn refuses_output_tables_not_matching_the_options() {
    if !o2p::available() {
        return;
    }
    let (_dir, url, config) = town_database("adopt_columns", &["--slim", "-S", o2p::DEFAULT_STYLE]);
    let err = refused(&config, &url, &flags(&["-S", o2p::DEFAULT_STYLE, "-k"]));
    assert_mentions(
        &err,
        &[
            "output table adopted.planet_osm_point",
            "missing column(s) tags",
        ],
    );
    if let Some(carto) = carto_variant() {
        let err = refused(&config, &url, &carto.flags);
        assert_mentions(
            &err,
            &[
                "output table adopted.planet_osm_point",
                "extra column(s)",
                "missing column(s)",
            ],
        );
    }
    let err = refused(
        &config,
        &url,
        &flags(&["-O", "flex", "-S", "tests/fixtures/flex/carto.lua"]),
    );
    assert_mentions(
        &err,
        &[
            "output table adopted.planet_osm_point does not match",
            "extra column(s)",
        ],
    );
    let mut client = tilepipe_testkit::db::connect(&url);
    client
        .batch_execute("ALTER TABLE adopted.planet_osm_roads ALTER COLUMN z_order TYPE int8")
        .unwrap();
    let err = refused(&config, &url, &flags(&["-S", o2p::DEFAULT_STYLE]));
    assert_mentions(
        &err,
        &[
            "output table adopted.planet_osm_roads",
            "z_order is bigint (expected int4)",
        ],
    );
    // A failed adopt records nothing.
    assert!(
        !tilepipe::db::properties::table_exists(&mut client, ADOPTED).unwrap(),
        "nothing recorded"
    );
}

#[test]
fn refuses_missing_tables_and_indexes() {
    if !o2p::available() {
        return;
    }
    let (_dir, url, config) = town_database("adopt_missing", &["--slim", "-S", o2p::DEFAULT_STYLE]);
    let args = flags(&["-S", o2p::DEFAULT_STYLE]);
    let mut client = tilepipe_testkit::db::connect(&url);
    let drop = |client: &mut postgres::Client, sql: &str| {
        client.batch_execute(sql).unwrap();
    };
    drop(&mut client, "DROP INDEX adopted.planet_osm_rels_parts_idx");
    let err = refused(&config, &url, &args);
    assert_mentions(
        &err,
        &[
            "adopted.planet_osm_rels has no planet_osm_rels_parts_idx",
            "did not finish",
        ],
    );
    drop(&mut client, "DROP INDEX adopted.planet_osm_line_osm_id_idx");
    drop(
        &mut client,
        "CREATE INDEX planet_osm_rels_parts_idx ON adopted.planet_osm_rels USING GIN (parts)",
    );
    let err = refused(&config, &url, &args);
    assert_mentions(&err, &["adopted.planet_osm_line has no index on osm_id"]);
    drop(
        &mut client,
        "CREATE INDEX ON adopted.planet_osm_line (osm_id)",
    );
    drop(
        &mut client,
        "DROP TRIGGER planet_osm_polygon_osm2pgsql_valid ON adopted.planet_osm_polygon",
    );
    let err = refused(&config, &url, &args);
    assert_mentions(
        &err,
        &["adopted.planet_osm_polygon has no trigger planet_osm_polygon_osm2pgsql_valid"],
    );
    drop(
        &mut client,
        "CREATE TRIGGER planet_osm_polygon_osm2pgsql_valid BEFORE INSERT OR UPDATE
           ON adopted.planet_osm_polygon FOR EACH ROW
           EXECUTE PROCEDURE adopted.planet_osm_polygon_osm2pgsql_valid()",
    );
    drop(&mut client, "DROP TABLE adopted.planet_osm_roads");
    let err = refused(&config, &url, &args);
    assert_mentions(&err, &["adopted.planet_osm_roads is missing"]);
    drop(&mut client, "DROP TABLE adopted.planet_osm_rels");
    let err = refused(&config, &url, &args);
    assert_mentions(&err, &["adopted.planet_osm_rels is missing", "slim"]);
}

#[test]
fn refuses_tilepipe_imports_and_a_db_format_not_the_tables() {
    if !o2p::available() {
        return;
    }
    let (dir, url, config) = town_database("adopt_formats", &["--slim", "-S", o2p::DEFAULT_STYLE]);
    let args = flags(&["-S", o2p::DEFAULT_STYLE]);
    // osm2pgsql 1.9+ records its format: here one the tables are not in.
    let mut client = tilepipe_testkit::db::connect(&url);
    client
        .batch_execute(
            "CREATE TABLE adopted.osm2pgsql_properties (property TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO adopted.osm2pgsql_properties VALUES ('db_format', '2'), ('version', '2.0.0')",
        )
        .unwrap();
    let err = refused(&config, &url, &args);
    assert_mentions(
        &err,
        &[
            "adopted.planet_osm_ways is not an osm2pgsql 1.9+/2.x new-format middle table",
            "says db_format 2 (new), but the middle tables are the legacy format's",
        ],
    );
    client
        .batch_execute(
            "UPDATE adopted.osm2pgsql_properties SET value = '0' WHERE property = 'db_format'",
        )
        .unwrap();
    let err = refused(&config, &url, &args);
    assert_mentions(&err, &["db_format 0", "cannot be updated"]);

    // A tilepipe import, in its own schema.
    let (_, town) = tilepipe_testkit::town::write_town_file(dir.path());
    let ours = write_config(dir.path(), "public", "");
    assert_success(&tilepipe(&ours, &url, &["import", town.to_str().unwrap()]));
    let err = refused(&ours, &url, &[]);
    assert_mentions(&err, &["already holds a tilepipe import"]);
}

/// osm2pgsql 1.9 to 1.11 keep 1.8's middle with
/// `--middle-database-format=legacy` and record `db_format` 1 and, from a
/// PBF header, the replication position in `osm2pgsql_properties` (only
/// 1.8 is installed here, so the properties are written by hand).
#[test]
fn accepts_the_legacy_format_of_osm2pgsql_1_9_to_1_11() {
    if !o2p::available() {
        return;
    }
    let (_dir, url, config) = town_database("adopt_1_10", &["--slim", "-S", o2p::DEFAULT_STYLE]);
    let mut client = tilepipe_testkit::db::connect(&url);
    client
        .batch_execute(
            "CREATE TABLE adopted.osm2pgsql_properties (property TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO adopted.osm2pgsql_properties VALUES
               ('db_format', '1'), ('version', '1.10.0'), ('updatable', 'true'),
               ('replication_base_url', 'https://planet.openstreetmap.org/replication/minute/'),
               ('replication_sequence_number', '6205195'),
               ('replication_timestamp', '2024-08-05T02:24:04Z')",
        )
        .unwrap();
    let out = adopt(&config, &url, &flags(&["-S", o2p::DEFAULT_STYLE]));
    assert_success(&out);
    assert_mentions(
        &text(&out.stdout),
        &[
            "osm2pgsql 1.10.0 with the legacy middle format (db_format 1)",
            "replication: osm2pgsql_properties at https://planet.openstreetmap.org/replication/minute/ sequence 6205195",
            "continue replication after sequence 6205195",
        ],
    );
    let position = stored_position(&mut client);
    assert_eq!(position.sequence, 6205195);
    // osm2pgsql's own keys are left as they were.
    let db_format: String = client
        .query_one(
            "SELECT value FROM adopted.osm2pgsql_properties WHERE property = 'db_format'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(db_format, "1");
}

#[test]
fn adopting_again_is_idempotent_and_other_options_conflict() {
    if !o2p::available() {
        return;
    }
    let (_dir, url, config) = town_database("adopt_twice", &["--slim", "-S", o2p::DEFAULT_STYLE]);
    let args = flags(&["-S", o2p::DEFAULT_STYLE]);
    let out = tilepipe(
        &config,
        &url,
        &["adopt", "--dry-run", "-S", o2p::DEFAULT_STYLE],
    );
    assert_success(&out);
    assert_mentions(&text(&out.stdout), &["--dry-run: nothing recorded"]);
    let mut client = tilepipe_testkit::db::connect(&url);
    assert!(!tilepipe::db::properties::table_exists(&mut client, ADOPTED).unwrap());

    assert_success(&adopt(&config, &url, &args));
    let settings =
        tilepipe::apply::settings::ImportSettings::require(&mut client, ADOPTED).unwrap();
    assert_eq!(
        settings.middle,
        tilepipe::apply::middle::MiddleLayout::Legacy18 { bucket_index: true }
    );
    let out = adopt(&config, &url, &args);
    assert_success(&out);
    assert_mentions(&text(&out.stdout), &["already adopted with these options"]);

    // -G and --keep-coastlines change no column, but the rows.
    let err = refused(
        &config,
        &url,
        &flags(&["-S", o2p::DEFAULT_STYLE, "-G", "--keep-coastlines"]),
    );
    assert_mentions(
        &err,
        &[
            "was adopted with other options",
            "transform.multi_geometry: false → true",
            "transform.keep_coastlines: false → true",
        ],
    );
    // The built-in default style is another setting than the file.
    let err = refused(&config, &url, &[]);
    assert_mentions(
        &err,
        &["transform.style_path", "transform.style_text differs"],
    );
}

#[test]
fn a_custom_prefix_is_adopted_and_updated_by_both() {
    if !o2p::available() {
        return;
    }
    let args = ["--slim", "--prefix", "town", "-S", o2p::DEFAULT_STYLE];
    let (dir, url, config) = town_database("adopt_prefix", &args);
    let out = adopt(
        &config,
        &url,
        &flags(&["-p", "town", "-S", o2p::DEFAULT_STYLE]),
    );
    assert_success(&out);
    assert_mentions(
        &text(&out.stdout),
        &[
            "prefix town",
            "town_nodes",
            "bucket index town_ways_nodes_bucket_idx",
            "town_rels_parts_idx",
            "adopted.town_roads",
        ],
    );
    let mut generator = FeedGenerator::new(synthetic_town(), 3, 100, chrono::Utc::now(), 60);
    for n in 0..2 {
        let changes: ChangeSet = generator.next_diff().changes.into_iter().collect();
        let path = dir.path().join(format!("{n}.osc"));
        let mut file = std::fs::File::create(&path).unwrap();
        tilepipe::osm::osc_write::write_osc(&mut file, "test", changes.iter()).unwrap();
        assert_success(&tilepipe(&config, &url, &["apply", path.to_str().unwrap()]));
        let mut append = flags(&args);
        append.extend(flags(&[
            "--append",
            "--middle-schema=adopted",
            "--output-pgsql-schema=adopted",
        ]));
        if let Err(stderr) = o2p::try_run(&url, &append, &path) {
            panic!("osm2pgsql --append --prefix town: {stderr}");
        }
    }
    let mut client = tilepipe_testkit::db::connect(&url);
    let ways: i64 = client
        .query_one("SELECT count(*) FROM adopted.town_ways", &[])
        .unwrap()
        .get(0);
    assert!(ways > 70, "{ways} ways");
}

/// Whether Debian's osm2pgsql-replication 1.8 can run here (it needs
/// pyosmium and psycopg2); says why a part of a test is skipped when not.
fn osm2pgsql_replication_available() -> bool {
    let works = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import osmium, psycopg2"])
        .output()
        .is_ok_and(|out| out.status.success())
        && Path::new(OSM2PGSQL_REPLICATION).exists();
    if !works {
        eprintln!(
            "skipping the osm2pgsql-replication part: {OSM2PGSQL_REPLICATION} or python3-pyosmium \
             / python3-psycopg2 missing"
        );
    }
    works
}

const OSM2PGSQL_REPLICATION: &str = "/usr/bin/osm2pgsql-replication";

/// osm2pgsql-replication 1.8's row: url, sequence, importdate.
fn legacy_status(client: &mut postgres::Client) -> (String, u64, chrono::DateTime<chrono::Utc>) {
    let rows = client
        .query(
            &format!(
                "SELECT url, sequence, importdate FROM {ADOPTED}.planet_osm_replication_status"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 1, "osm2pgsql-replication needs exactly one row");
    let sequence: i32 = rows[0].get(1);
    (rows[0].get(0), sequence as u64, rows[0].get(2))
}

fn stored_position(client: &mut postgres::Client) -> tilepipe::replication::position::Position {
    match read_position(client, ADOPTED).unwrap() {
        StoredPosition::Set(position) => position,
        other => panic!("no position stored: {other:?}"),
    }
}

/// osm2pgsql-replication 1.8 hands over to tilepipe and back: adopt takes
/// its position, `tilepipe catchup` carries on and moves its table on,
/// `osm2pgsql-replication update` carries on from there, and adopting
/// again takes its newer position.
#[test]
fn replication_position_is_taken_over_and_kept_in_step() {
    if !o2p::available() {
        return;
    }
    const START: u64 = 4_000_000;
    // Diffs tilepipe applies, then osm2pgsql-replication.
    const BY_TILEPIPE: u64 = 6;
    const BY_OSM2PGSQL: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let ReplicationCase {
        start_time,
        town_path,
        data_at,
        server,
        url,
        mut client,
    } = replication_case(
        dir.path(),
        "adopt_replication",
        23,
        START,
        BY_TILEPIPE,
        BY_OSM2PGSQL,
    );
    let style = default_variant();
    o2p::run(&url, ADOPTED, &style.flags, false, &town_path);
    // What `osm2pgsql-replication init` (1.8) leaves (its `init` needs the
    // OSM API or a PBF with replication headers; this feed is local).
    client
        .batch_execute(&format!(
            "CREATE TABLE {ADOPTED}.planet_osm_replication_status (url TEXT, sequence INTEGER, importdate TIMESTAMPTZ)"
        ))
        .unwrap();
    client
        .execute(
            &format!("INSERT INTO {ADOPTED}.planet_osm_replication_status VALUES ($1, $2, $3)"),
            &[&server.url(), &(START as i32), &start_time],
        )
        .unwrap();
    let config = write_config(
        dir.path(),
        ADOPTED,
        "replication:\n  retry_initial_secs: 1\n  retry_max_secs: 1\n  timeout_secs: 5\n",
    );
    let out = adopt(&config, &url, &style.flags);
    assert_success(&out);
    assert_mentions(
        &text(&out.stdout),
        &[
            "replication: planet_osm_replication_status (osm2pgsql-replication 1.8)",
            &format!("sequence {START}"),
            "every batch also moves planet_osm_replication_status on",
        ],
    );
    let position = stored_position(&mut client);
    assert_eq!(
        (position.sequence, position.base_url.as_str()),
        (START, server.url().as_str())
    );
    assert_eq!(position.timestamp.timestamp(), start_time.timestamp());

    // tilepipe carries on where the cron job stopped, and moves its table on.
    assert_success(&tilepipe(&config, &url, &["catchup"]));
    let position = stored_position(&mut client);
    assert_eq!(position.sequence, START + BY_TILEPIPE);
    assert_eq!(
        legacy_status(&mut client),
        (
            position.base_url.clone(),
            position.sequence,
            position.timestamp
        ),
        "the legacy table follows tilepipe's position"
    );
    let compare = |client: &mut postgres::Client, data: &OsmData, twin: &str, stage: &str| {
        let path = dir.path().join(format!("{twin}.osm"));
        data.write_osm_file(&path).unwrap();
        client
            .batch_execute(&format!("CREATE SCHEMA {twin}"))
            .unwrap();
        o2p::run(&url, twin, &style.flags, false, &path);
        assert_tables_equal(client, twin, ADOPTED, &CLASSIC_TABLES, stage);
        assert_middle_equal(client, twin, ADOPTED, PREFIX, stage);
    };
    compare(
        &mut client,
        &data_at[BY_TILEPIPE as usize - 1],
        "twin_tilepipe",
        "after tilepipe catchup",
    );

    // osm2pgsql-replication takes over again from tilepipe's position.
    if !osm2pgsql_replication_available() {
        server.shutdown();
        return;
    }
    server.publish_all();
    let out = std::process::Command::new(OSM2PGSQL_REPLICATION)
        .args(["update", "-d", &url, "--middle-schema", ADOPTED, "--"])
        .arg(format!("--middle-schema={ADOPTED}"))
        .arg(format!("--output-pgsql-schema={ADOPTED}"))
        .args(["--number-processes", "1"])
        .args(&style.flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "osm2pgsql-replication update: {}",
        text(&out.stderr)
    );
    let end = START + BY_TILEPIPE + BY_OSM2PGSQL;
    let (_, legacy_sequence, legacy_date) = legacy_status(&mut client);
    assert_eq!(
        legacy_sequence, end,
        "osm2pgsql-replication applied the rest"
    );
    compare(
        &mut client,
        &data_at[end as usize - START as usize - 1],
        "twin_osm2pgsql",
        "after osm2pgsql-replication update",
    );

    // Adopting again takes osm2pgsql-replication's newer position over.
    let out = adopt(&config, &url, &style.flags);
    assert_success(&out);
    assert_mentions(
        &text(&out.stdout),
        &[
            "already adopted",
            &format!("sequence {end}"),
            &format!(
                "tilepipe's stored position, sequence {}",
                START + BY_TILEPIPE
            ),
        ],
    );
    let position = stored_position(&mut client);
    assert_eq!((position.sequence, position.timestamp), (end, legacy_date));
    assert_success(&tilepipe(&config, &url, &["catchup"]));
    assert_eq!(stored_position(&mut client).sequence, end, "up to date");
    server.shutdown();
}

/// The same comparisons against osm2pgsql 2.1.1 (`o2p::peer2`), whose
/// slim imports have the new middle format (tags and members as jsonb,
/// settings in `osm2pgsql_properties`): imported by 2.1.1 into both
/// schemas, one adopted and updated by tilepipe, the twin by 2.1.1's
/// `--append`; output rows, the new-format middle tables and flat-nodes
/// files equal, and 2.1.1's `--append` on the tilepipe-updated schema
/// equal to the twin after (hand-back). Skips with a message when 2.1.1
/// is not installed (fails in CI).
mod new_middle {
    use super::*;

    /// 2.1.1 with its own default style (passed by path, as osm2pgsql
    /// records it).
    fn default_style(peer: &o2p::Peer2) -> OutputKind {
        let mut variant = default_variant();
        variant.flags = flags(&["-S", peer.default_style.to_str().unwrap()]);
        OutputKind::Classic(variant)
    }

    fn town_twins(name: &str, output: OutputKind, flat_nodes: bool) -> Option<(Twins, OsmData)> {
        let peer = o2p::peer2()?;
        let dir = tempfile::tempdir().unwrap();
        let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
        let twins = twins_of(Peer::V2(peer), name, &path, output, flat_nodes);
        Some((twins, town))
    }

    /// Adopted with no options at all: prefix, output, style and the
    /// flat-nodes file come from what osm2pgsql 2.1.1 recorded.
    fn adopt_with_recorded_settings(t: &Twins) -> String {
        let out = adopt(&t.config, &t.url, &[]);
        assert_success(&out);
        text(&out.stdout)
    }

    #[test]
    fn town_default_style_adopted_follows_osm2pgsql_2() {
        let Some(peer) = o2p::peer2() else {
            return;
        };
        let Some((mut t, town)) = town_twins("adopt2_town", default_style(&peer), false) else {
            return;
        };
        let report = adopt_with_recorded_settings(&t);
        eprintln!("{report}");
        assert_mentions(
            &report,
            &[
                "osm2pgsql 2.1.1 with the new middle format (db_format 2",
                "osm2pgsql 1.9+/2.x new-format tables planet_osm_nodes",
                "bucket index planet_osm_ways_nodes_bucket_idx",
                "planet_osm_rels_node_members_idx, planet_osm_rels_way_members_idx",
                "no flat-nodes file",
                &format!("style {}", peer.default_style.display()),
                "middle layout osm2pgsql-new",
            ],
        );
        t.assert_equal("after adopt");
        let mut generator = FeedGenerator::new(town, 5, 100, chrono::Utc::now(), 60);
        t.follow(&mut generator, 8, "2.1.1 town default");
    }

    #[test]
    fn town_flat_nodes_adopted_follows_osm2pgsql_2() {
        let Some(peer) = o2p::peer2() else {
            return;
        };
        let Some((mut t, town)) = town_twins("adopt2_town_flat", default_style(&peer), true) else {
            return;
        };
        let report = adopt_with_recorded_settings(&t);
        assert_mentions(
            &report,
            &[
                "node locations: in the flat-nodes file",
                "adopted.nodes (1048576 slots; no planet_osm_nodes table)",
                "new-format tables planet_osm_ways",
            ],
        );
        t.assert_equal("after adopt");
        let mut generator = FeedGenerator::new(town, 13, 100, chrono::Utc::now(), 60);
        t.follow(&mut generator, 6, "2.1.1 town flat nodes");
    }

    /// openstreetmap-carto's style and Lua with `-G --hstore`, with a
    /// flat-nodes file: the options osm2pgsql does not record are given,
    /// the recorded ones (style, file) given again must match.
    #[test]
    fn town_carto_flat_nodes_adopted_follows_osm2pgsql_2() {
        let Some(variant) = carto_variant() else {
            return;
        };
        let Some((mut t, town)) =
            town_twins("adopt2_town_carto", OutputKind::Classic(variant), true)
        else {
            return;
        };
        assert_mentions(&t.adopt(), &["-G", "--hstore", "openstreetmap-carto.lua"]);
        t.assert_equal("after adopt");
        let mut generator = FeedGenerator::new(town, 9, 100, chrono::Utc::now(), 60);
        t.follow(&mut generator, 4, "2.1.1 town carto flat nodes");
    }

    #[test]
    fn town_flex_adopted_follows_osm2pgsql_2() {
        for flat_nodes in [false, true] {
            let config = tilepipe_testkit::paths::repo_file("tests/fixtures/flex/carto.lua");
            let name = format!("adopt2_flex_{flat_nodes}");
            let Some((mut t, town)) = town_twins(&name, OutputKind::Flex(config), flat_nodes)
            else {
                return;
            };
            let report = adopt_with_recorded_settings(&t);
            assert_mentions(&report, &["output: flex", "tests/fixtures/flex/carto.lua"]);
            t.assert_equal("after adopt");
            let mut generator = FeedGenerator::new(town, 7, 100, chrono::Utc::now(), 60);
            t.follow(
                &mut generator,
                4,
                &format!("2.1.1 town flex, flat nodes {flat_nodes}"),
            );
        }
    }

    #[test]
    fn liechtenstein_carto_adopted_follows_osm2pgsql_2() {
        let Some(pbf) = tilepipe_testkit::shared_data("liechtenstein-2013-08-03.osm.pbf") else {
            return;
        };
        let Some(real_diff) = tilepipe_testkit::shared_data("000466354.osc.gz") else {
            return;
        };
        let Some(variant) = carto_variant() else {
            return;
        };
        let Some(peer) = o2p::peer2() else {
            return;
        };
        let output = OutputKind::Classic(variant);
        let mut t = twins_of(Peer::V2(peer), "adopt2_li_carto", &pbf, output, false);
        let report = t.adopt();
        assert_mentions(
            &report,
            &[
                "new-format tables",
                // From the PBF header, as osm2pgsql 2.x records it.
                "replication: osm2pgsql_properties at http://example.com/europe/liechtenstein-updates sequence 9999999",
                "continue replication after sequence 9999999",
            ],
        );
        t.apply_both(&real_diff);
        t.assert_equal("after 000466354.osc.gz");
        let data = OsmData::from_pbf(&pbf).unwrap();
        let mut generator = FeedGenerator::new(data, 11, 100, chrono::Utc::now(), 60);
        t.follow(&mut generator, 3, "2.1.1 liechtenstein carto");
    }

    /// Options osm2pgsql recorded cannot be given otherwise; what it
    /// cannot record (a nodes table beside flat nodes, -x) is refused.
    #[test]
    fn recorded_settings_conflict_with_other_options() {
        let Some(peer) = o2p::peer2() else {
            return;
        };
        let Some((t, _)) = town_twins("adopt2_conflicts", default_style(&peer), false) else {
            return;
        };
        let style = peer.default_style.to_str().unwrap();
        let err = refused(&t.config, &t.url, &flags(&["-S", o2p::DEFAULT_STYLE]));
        assert_mentions(
            &err,
            &[
                &format!("-S/--style {} was given", o2p::DEFAULT_STYLE),
                &format!("osm2pgsql recorded style = \"{style}\""),
                "adopted.osm2pgsql_properties",
            ],
        );
        let err = refused(&t.config, &t.url, &flags(&["--prefix", "other"]));
        assert_mentions(
            &err,
            &["--prefix other was given", "prefix = \"planet_osm\""],
        );
        let file = t.dir.path().join("nodes.bin");
        let err = refused(&t.config, &t.url, &flags(&["-F", file.to_str().unwrap()]));
        assert_mentions(
            &err,
            &[
                "--flat-nodes",
                "flat_node_file = \"\"",
                "adopt without --flat-nodes",
            ],
        );
        // Nothing was recorded by the refusals.
        let mut client = tilepipe_testkit::db::connect(&t.url);
        let tilepipe_keys: i64 = client
            .query_one(
                "SELECT count(*) FROM adopted.osm2pgsql_properties WHERE property LIKE 'tilepipe%'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(tilepipe_keys, 0);
        // -x: refused from the record.
        client
            .batch_execute(
                "UPDATE adopted.osm2pgsql_properties SET value = 'true' WHERE property = 'attributes'",
            )
            .unwrap();
        let err = refused(&t.config, &t.url, &[]);
        assert_mentions(&err, &["attributes = true", "-x/--extra-attributes"]);

        // Flat nodes and tagged nodes in a table as well.
        client.batch_execute("CREATE SCHEMA with_nodes").unwrap();
        let (_, town) = tilepipe_testkit::town::write_town_file(t.dir.path());
        let nodes = t.dir.path().join("with_nodes.bin");
        let options = flags(&[
            "-S",
            style,
            "--flat-nodes",
            nodes.to_str().unwrap(),
            "--middle-with-nodes",
        ]);
        o2p::run_program(
            &peer.osm2pgsql,
            &t.url,
            "with_nodes",
            &options,
            false,
            &town,
        );
        let config = write_config(t.dir.path(), "with_nodes", "");
        let err = refused(&config, &t.url, &[]);
        assert_mentions(
            &err,
            &[
                "with_nodes.planet_osm_nodes exists beside the flat-nodes file",
                "--middle-with-nodes",
            ],
        );
    }

    /// osm2pgsql-replication 2.x's position (osm2pgsql's own
    /// `replication_*` properties) is taken over, `tilepipe catchup`
    /// carries on and moves it on, and `osm2pgsql-replication update`
    /// (2.1.1) carries on from tilepipe's position.
    #[test]
    fn replication_position_is_handed_over_to_osm2pgsql_replication_2() {
        let Some(peer) = o2p::peer2() else {
            return;
        };
        const START: u64 = 5_000_000;
        const BY_TILEPIPE: u64 = 5;
        const BY_OSM2PGSQL: u64 = 3;
        let dir = tempfile::tempdir().unwrap();
        let ReplicationCase {
            start_time,
            town_path,
            data_at,
            server,
            url,
            mut client,
        } = replication_case(
            dir.path(),
            "adopt2_replication",
            29,
            START,
            BY_TILEPIPE,
            BY_OSM2PGSQL,
        );
        let style = flags(&["-S", peer.default_style.to_str().unwrap()]);
        o2p::run_program(&peer.osm2pgsql, &url, ADOPTED, &style, false, &town_path);
        // What `osm2pgsql-replication init` (2.x) records (its `init`
        // finds the sequence from the import's date, which the town file
        // does not have).
        let start_text = tilepipe::replication::state::format_timestamp(start_time);
        client
            .execute(
                &format!(
                    "INSERT INTO {ADOPTED}.osm2pgsql_properties VALUES
                       ('replication_base_url', $1), ('replication_sequence_number', $2),
                       ('replication_timestamp', $3)"
                ),
                &[&server.url(), &START.to_string(), &start_text],
            )
            .unwrap();
        let config = write_config(
            dir.path(),
            ADOPTED,
            "replication:\n  retry_initial_secs: 1\n  retry_max_secs: 1\n  timeout_secs: 5\n",
        );
        let out = adopt(&config, &url, &[]);
        assert_success(&out);
        assert_mentions(
            &text(&out.stdout),
            &[
                &format!("replication: osm2pgsql_properties at {}", server.url()),
                &format!("continue replication after sequence {START}"),
            ],
        );

        assert_success(&tilepipe(&config, &url, &["catchup"]));
        let position = stored_position(&mut client);
        assert_eq!(position.sequence, START + BY_TILEPIPE);
        let compare = |client: &mut postgres::Client, data: &OsmData, twin: &str, stage: &str| {
            let path = dir.path().join(format!("{twin}.osm"));
            data.write_osm_file(&path).unwrap();
            client
                .batch_execute(&format!("CREATE SCHEMA {twin}"))
                .unwrap();
            o2p::run_program(&peer.osm2pgsql, &url, twin, &style, false, &path);
            assert_tables_equal(client, twin, ADOPTED, &CLASSIC_TABLES, stage);
            assert_new_middle_equal(client, twin, ADOPTED, PREFIX, stage);
        };
        compare(
            &mut client,
            &data_at[BY_TILEPIPE as usize - 1],
            "twin_tilepipe",
            "after tilepipe catchup",
        );

        server.publish_all();
        let out = std::process::Command::new("/usr/bin/python3")
            .arg(&peer.replication)
            .args(["update", "-d", &url, "--middle-schema", ADOPTED])
            .arg("--osm2pgsql-cmd")
            .arg(&peer.osm2pgsql)
            .arg("--")
            .arg(format!("--output-pgsql-schema={ADOPTED}"))
            .args(["--number-processes", "1"])
            .args(&style)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "osm2pgsql-replication update (2.1.1): {}",
            text(&out.stderr)
        );
        let end = START + BY_TILEPIPE + BY_OSM2PGSQL;
        let sequence: String = client
            .query_one(
                &format!(
                    "SELECT value FROM {ADOPTED}.osm2pgsql_properties
                     WHERE property = 'replication_sequence_number'"
                ),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            sequence,
            end.to_string(),
            "osm2pgsql-replication applied the rest"
        );
        compare(
            &mut client,
            &data_at[end as usize - START as usize - 1],
            "twin_osm2pgsql",
            "after osm2pgsql-replication update",
        );
        server.shutdown();
    }

    /// tilepipe's writer of the new layout, from empty tables to indexes,
    /// gives what osm2pgsql 2.1.1 gives on the same data: equal rows, the
    /// same indexes and functions, and the layout is detected as such.
    #[test]
    fn new_layout_written_by_tilepipe_equals_osm2pgsql_2() {
        use tilepipe::apply::middle::{Middle, MiddleLayout};
        let Some(peer) = o2p::peer2() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (town, path) = tilepipe_testkit::town::write_town_file(dir.path());
        let url = PgCluster::shared()
            .create_database("middle_new_layout")
            .unwrap();
        let mut client = tilepipe_testkit::db::connect(&url);
        client
            .batch_execute("CREATE SCHEMA theirs; CREATE SCHEMA ours;")
            .unwrap();
        let style = flags(&["-S", peer.default_style.to_str().unwrap()]);
        o2p::run_program(&peer.osm2pgsql, &url, "theirs", &style, false, &path);
        let layout = MiddleLayout::Osm2pgsqlNew { bucket_index: true };
        assert_eq!(
            MiddleLayout::detect(&mut client, "theirs", PREFIX).unwrap(),
            Some(layout)
        );
        let middle = Middle::with_layout("ours", PREFIX, layout);
        middle.create(&mut client).unwrap();
        middle.copy_nodes(&mut client, town.nodes.values()).unwrap();
        middle.copy_ways(&mut client, town.ways.values()).unwrap();
        middle
            .copy_relations(&mut client, town.relations.values())
            .unwrap();
        middle.index_nodes(&mut client).unwrap();
        middle.index_ways(&mut client).unwrap();
        middle.index_relations(&mut client).unwrap();
        let counts = assert_new_middle_equal(&mut client, "theirs", "ours", PREFIX, "written");
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
        let catalogue = |client: &mut postgres::Client, schema: &str| -> Vec<String> {
            let indexes = client
                .query(
                    "SELECT replace(indexdef, $1 || '.', '') FROM pg_indexes
                     WHERE schemaname = $1 AND tablename LIKE 'planet_osm_%'
                       AND tablename IN ('planet_osm_nodes', 'planet_osm_ways', 'planet_osm_rels')
                     ORDER BY indexname",
                    &[&schema],
                )
                .unwrap();
            let functions = client
                .query(
                    "SELECT p.proname || '(' || pg_get_function_arguments(p.oid) || ') '
                            || pg_get_function_result(p.oid) || ' ' || p.provolatile::text
                     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = $1 AND p.proname IN ('planet_osm_index_bucket', 'planet_osm_member_ids')
                     ORDER BY 1",
                    &[&schema],
                )
                .unwrap();
            indexes.iter().chain(&functions).map(|r| r.get(0)).collect()
        };
        let (theirs, ours) = (
            catalogue(&mut client, "theirs"),
            catalogue(&mut client, "ours"),
        );
        assert_eq!(theirs.len(), 8, "{theirs:#?}");
        assert_eq!(ours, theirs);
        // The reverse lookups find the same through osm2pgsql's indexes.
        let theirs_middle = Middle::with_layout("theirs", PREFIX, layout);
        let node_ids: Vec<i64> = town.nodes.keys().copied().step_by(7).collect();
        let way_ids: Vec<i64> = town.ways.keys().copied().collect();
        for m in [&middle, &theirs_middle] {
            let ways = m.ways_using_nodes(&mut client, &node_ids).unwrap();
            let rels = m.relations_using(&mut client, &node_ids, &way_ids).unwrap();
            assert!(!ways.is_empty() && !rels.is_empty());
        }
        assert_eq!(
            middle
                .relations_using(&mut client, &node_ids, &way_ids)
                .unwrap(),
            theirs_middle
                .relations_using(&mut client, &node_ids, &way_ids)
                .unwrap()
        );
    }
}
