//! Debian's osm2pgsql 1.8 as the reference tilepipe is compared with:
//! running it, the option sets the comparisons use ([`Variant`]), and
//! comparing what two schemas of one database hold, output tables row by
//! row (every column; geometries within 1 cm) and osm2pgsql's middle
//! tables exactly. Also osm2pgsql 2.1.1 ([`peer2`]), unpacked beside 1.8
//! by `scripts/install-deps`, whose databases have the new middle format.

use std::path::Path;
use std::process::Command;
use tilepipe::apply::settings::ImportSettings;
use tilepipe::apply::style::HstoreMode;
use tilepipe::apply::transform::TransformSettings;

/// osm2pgsql's default style as Debian installs it.
pub const DEFAULT_STYLE: &str = "/usr/share/osm2pgsql/default.style";
/// openstreetmap-carto's style (Debian's openstreetmap-carto-common).
pub const CARTO_STYLE: &str = "/usr/share/openstreetmap-carto-common/openstreetmap-carto.style";
/// openstreetmap-carto's tag transform.
pub const CARTO_LUA: &str = "/usr/share/openstreetmap-carto-common/openstreetmap-carto.lua";

/// The classic output's tables for the default prefix.
pub const CLASSIC_TABLES: [&str; 4] = [
    "planet_osm_point",
    "planet_osm_line",
    "planet_osm_roads",
    "planet_osm_polygon",
];

/// Whether `osm2pgsql` can be run; says why a test skips when not.
pub fn available() -> bool {
    let found = Command::new("osm2pgsql").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: osm2pgsql is not installed (apt-get install osm2pgsql)");
    }
    found
}

/// One way of importing: osm2pgsql's flags (which `tilepipe import` and
/// `tilepipe adopt` take too) and the settings they mean to tilepipe.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Short name, for database names and messages.
    pub name: &'static str,
    /// Output options, as osm2pgsql and tilepipe take them.
    pub flags: Vec<String>,
    /// The classic output's settings these flags give.
    pub transform: TransformSettings,
}

impl Variant {
    /// tilepipe's settings for this variant in `schema`, default prefix.
    pub fn settings(&self, schema: &str) -> ImportSettings {
        ImportSettings {
            schema: schema.into(),
            transform: self.transform.clone(),
            ..ImportSettings::default()
        }
    }
}

/// osm2pgsql's default style.
pub fn default_variant() -> Variant {
    Variant {
        name: "default",
        flags: vec!["-S".into(), DEFAULT_STYLE.into()],
        transform: TransformSettings::default(),
    }
}

/// The default style with `-k` (hstore for tags without a column).
pub fn hstore_variant() -> Variant {
    Variant {
        name: "hstore",
        flags: vec!["-S".into(), DEFAULT_STYLE.into(), "-k".into()],
        transform: TransformSettings {
            hstore: HstoreMode::Match,
            ..TransformSettings::default()
        },
    }
}

/// openstreetmap-carto's style and Lua transform with `-G --hstore`, as
/// its INSTALL.md imports; `None` (with a message) when not installed.
pub fn carto_variant() -> Option<Variant> {
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
        flags: vec![
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

/// Where `scripts/install-deps` unpacks osm2pgsql 2.1.1 from Debian's
/// bookworm-backports (its package would replace 1.8).
pub const PEER2_PREFIX: &str = "/opt/tilepipe-peers/osm2pgsql-2";

/// osm2pgsql 2.1.1 as installed under [`PEER2_PREFIX`].
#[derive(Debug, Clone)]
pub struct Peer2 {
    /// `osm2pgsql`.
    pub osm2pgsql: std::path::PathBuf,
    /// `osm2pgsql-replication` (2.x's, which reads `osm2pgsql_properties`).
    pub replication: std::path::PathBuf,
    /// Its default style.
    pub default_style: std::path::PathBuf,
}

/// osm2pgsql 2.1.1, or `None` after saying the test is skipped when it is
/// not installed. In CI (`CI=true`), where `scripts/install-deps` has run,
/// its absence fails the test instead: a skip would hide that it never ran.
pub fn peer2() -> Option<Peer2> {
    let prefix = Path::new(PEER2_PREFIX);
    let peer = Peer2 {
        osm2pgsql: prefix.join("usr/bin/osm2pgsql"),
        replication: prefix.join("usr/bin/osm2pgsql-replication"),
        default_style: prefix.join("usr/share/osm2pgsql/default.style"),
    };
    let version = Command::new(&peer.osm2pgsql).arg("--version").output();
    let works = version.is_ok_and(|out| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        out.status.success() && text.contains("version 2.1.1")
    });
    if works {
        return Some(peer);
    }
    assert!(
        !crate::paths::in_ci(),
        "osm2pgsql 2.1.1 is not installed in {PEER2_PREFIX} (scripts/install-deps), but CI must \
         have it (CI is set)"
    );
    eprintln!(
        "skipping: osm2pgsql 2.1.1 is not installed in {PEER2_PREFIX} (run scripts/install-deps)"
    );
    None
}

/// Runs osm2pgsql with `args` then `file`; its stderr on failure.
pub fn try_run(url: &str, args: &[String], file: &Path) -> Result<(), String> {
    try_run_with_env(url, args, &[], file)
}

/// [`try_run`] with environment variables set for osm2pgsql (the flex
/// configs of `tests/fixtures/flex` read `FLEX_TEST_SCHEMA`).
pub fn try_run_with_env(
    url: &str,
    args: &[String],
    env: &[(&str, &str)],
    file: &Path,
) -> Result<(), String> {
    try_run_program(Path::new("osm2pgsql"), url, args, env, file)
}

/// [`try_run_with_env`] with another osm2pgsql binary (see [`peer2`]).
pub fn try_run_program(
    program: &Path,
    url: &str,
    args: &[String],
    env: &[(&str, &str)],
    file: &Path,
) -> Result<(), String> {
    let out = Command::new(program)
        .envs(env.iter().copied())
        .args(["-d", url, "--number-processes", "1"])
        .args(args)
        .arg(file)
        .output()
        .expect("osm2pgsql runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `osm2pgsql --slim` (`--create`, or `--append`) into `schema` (middle
/// and output) with `flags`, which must succeed.
pub fn run(url: &str, schema: &str, flags: &[String], append: bool, file: &Path) {
    run_program(Path::new("osm2pgsql"), url, schema, flags, append, file)
}

/// [`run`] with another osm2pgsql binary (see [`peer2`]).
pub fn run_program(
    program: &Path,
    url: &str,
    schema: &str,
    flags: &[String],
    append: bool,
    file: &Path,
) {
    let mut args = vec![
        "--slim".to_string(),
        format!("--middle-schema={schema}"),
        format!("--output-pgsql-schema={schema}"),
        if append { "--append" } else { "--create" }.to_string(),
    ];
    args.extend(flags.iter().cloned());
    if let Err(stderr) = try_run_program(program, url, &args, &[], file) {
        panic!(
            "{} failed on {}: {stderr}",
            program.display(),
            file.display()
        );
    }
}

/// Rows of `from.table` without an equal row in `to.table` (same osm_id,
/// same columns, geometry within 1 cm): how many, and a few ids.
pub fn unmatched(
    client: &mut postgres::Client,
    table: &str,
    from: &str,
    to: &str,
) -> (i64, Vec<i64>) {
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

/// Every row of each of `tables` in `reference` has an equal row in
/// `ours` and the other way round; returns the row counts.
pub fn assert_tables_equal(
    client: &mut postgres::Client,
    reference: &str,
    ours: &str,
    tables: &[&str],
    stage: &str,
) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in tables {
        let count = |schema: &str, c: &mut postgres::Client| -> i64 {
            c.query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
                .unwrap()
                .get(0)
        };
        let (a, b) = (count(reference, client), count(ours, client));
        let (missing, missing_ids) = unmatched(client, table, reference, ours);
        let (extra, extra_ids) = unmatched(client, table, ours, reference);
        assert!(
            a == b && missing == 0 && extra == 0,
            "{stage}, {table}: {reference} {a} rows, {ours} {b}; {missing} {reference} rows \
             without an equal {ours} row (e.g. {missing_ids:?}), {extra} {ours} rows without an \
             equal {reference} row (e.g. {extra_ids:?})"
        );
        counts.push(a);
    }
    counts
}

/// osm2pgsql 1.8's legacy middle tables of `prefix` hold exactly the same
/// rows (every column) in both schemas; returns their row counts. A table
/// the reference lacks (nodes, with `--flat-nodes`) must be missing in
/// `ours` too, and counts 0.
pub fn assert_middle_equal(
    client: &mut postgres::Client,
    reference: &str,
    ours: &str,
    prefix: &str,
    stage: &str,
) -> Vec<i64> {
    let legacy = [
        ("nodes", "id, lat, lon"),
        ("ways", "id, nodes, tags"),
        ("rels", "id, way_off, rel_off, parts, members, tags"),
    ];
    assert_middle_tables_equal(client, reference, ours, prefix, &legacy, stage)
}

/// [`assert_middle_equal`] for osm2pgsql 1.9+/2.x's new middle format
/// (tags and members as jsonb, compared as values).
pub fn assert_new_middle_equal(
    client: &mut postgres::Client,
    reference: &str,
    ours: &str,
    prefix: &str,
    stage: &str,
) -> Vec<i64> {
    let new = [
        ("nodes", "id, lat, lon, tags"),
        ("ways", "id, nodes, tags"),
        ("rels", "id, members, tags"),
    ];
    assert_middle_tables_equal(client, reference, ours, prefix, &new, stage)
}

fn assert_middle_tables_equal(
    client: &mut postgres::Client,
    reference: &str,
    ours: &str,
    prefix: &str,
    tables: &[(&str, &str)],
    stage: &str,
) -> Vec<i64> {
    let mut counts = Vec::new();
    for &(suffix, columns) in tables {
        let table = format!("{prefix}_{suffix}");
        let exists = |schema: &str, c: &mut postgres::Client| -> bool {
            c.query_one(
                "SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL",
                &[&schema, &table],
            )
            .unwrap()
            .get(0)
        };
        if !exists(reference, client) {
            assert!(
                !exists(ours, client),
                "{stage}: {ours}.{table} exists, {reference}.{table} does not"
            );
            counts.push(0);
            continue;
        }
        let differing = |a: &str, b: &str, c: &mut postgres::Client| -> Vec<i64> {
            c.query(
                &format!(
                    "SELECT id FROM (SELECT {columns} FROM {a}.{table}
                       EXCEPT ALL SELECT {columns} FROM {b}.{table}) d ORDER BY id LIMIT 8"
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        let missing = differing(reference, ours, client);
        let extra = differing(ours, reference, client);
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{stage}, middle {table}: rows of {reference} not in {ours} (ids {missing:?}), \
             rows of {ours} not in {reference} (ids {extra:?})"
        );
        counts.push(
            client
                .query_one(&format!("SELECT count(*) FROM {ours}.{table}"), &[])
                .unwrap()
                .get(0),
        );
    }
    counts
}
