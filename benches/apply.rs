//! Import and append time, tilepipe beside `osm2pgsql --slim` (Debian's
//! 1.8), same input, same output, same private PostgreSQL cluster: the
//! classic output with osm2pgsql's default style, then the flex output
//! with `tests/fixtures/flex/carto.lua` (`-O flex -S`).
//!
//! Run with `cargo bench --bench apply`; `TILEPIPE_BENCH_OUTPUT=classic`
//! or `=flex` measures one output only. Inputs: Liechtenstein and its
//! diff from `../shared/data` (skipped when absent), and a region ten
//! times larger built by the test kit's `scale` (the extract repeated side
//! by side with shifted coordinates and offset ids, written as PBF), with
//! a merged diff of generated edits over it. `bench/run` measures the same
//! and more (per-diff expiry, catch-up, 100× region) for BENCHMARKS.md.
//! Each figure is the median of three runs; goals from issue 3 (and the
//! flex output's issue, for the flex rows): import at most 0.7×
//! osm2pgsql's time, append at most 0.5×.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tilepipe::apply::append::Applier;
use tilepipe::apply::flex::FlexSettings;
use tilepipe::apply::import::import;
use tilepipe::apply::settings::ImportSettings;
use tilepipe::osm::ChangeSet;
use tilepipe_testkit::feedgen::{FeedGenerator, OsmData};
use tilepipe_testkit::scale::{scaled, write_scaled, PbfHeader};
use tilepipe_testkit::PgCluster;

const RUNS: usize = 3;

/// The output both tools import to and apply on.
struct Output {
    /// `classic` or `flex`; names the databases and the rows.
    name: &'static str,
    /// osm2pgsql's output options.
    osm2pgsql: Vec<String>,
    /// tilepipe's import settings.
    settings: ImportSettings,
}

impl Output {
    fn classic() -> Output {
        Output {
            name: "classic",
            osm2pgsql: vec!["-S".into(), "/usr/share/osm2pgsql/default.style".into()],
            settings: ImportSettings::default(),
        }
    }

    /// The flex output with the project's openstreetmap-carto-like config.
    fn flex() -> Output {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flex/carto.lua");
        Output {
            name: "flex",
            osm2pgsql: vec![
                "-O".into(),
                "flex".into(),
                "-S".into(),
                config.display().to_string(),
            ],
            settings: ImportSettings {
                flex: Some(FlexSettings::from_file(&config).unwrap()),
                flat_nodes: None,
                ..ImportSettings::default()
            },
        }
    }
}

struct Measured {
    import: Vec<Duration>,
    append: Vec<Duration>,
}

/// The database a cluster URL names (its last path segment).
fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn osm2pgsql(cluster: &PgCluster, output: &Output, input: &Path, diff: &Path) -> Measured {
    let mut m = Measured {
        import: vec![],
        append: vec![],
    };
    for run in 0..RUNS {
        let url = cluster
            .create_database(&format!("o2p_{}_{run}", output.name))
            .unwrap();
        let started = Instant::now();
        let status = Command::new("osm2pgsql")
            .args(["--slim", "-d", &url])
            .args(&output.osm2pgsql)
            .args(["--number-processes", "2"])
            .arg(input)
            .output()
            .expect("osm2pgsql runs");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        m.import.push(started.elapsed());
        let started = Instant::now();
        let status = Command::new("osm2pgsql")
            .args(["--slim", "--append", "-d", &url])
            .args(&output.osm2pgsql)
            .args(["--number-processes", "2"])
            .arg(diff)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        m.append.push(started.elapsed());
        cluster.drop_database(db_name(&url)).unwrap();
    }
    m
}

fn tilepipe_runs(cluster: &PgCluster, output: &Output, input: &Path, diff: &ChangeSet) -> Measured {
    let mut m = Measured {
        import: vec![],
        append: vec![],
    };
    for run in 0..RUNS {
        let url = cluster
            .create_database(&format!("tp_{}_{run}", output.name))
            .unwrap();
        let config = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
        let started = Instant::now();
        import(&config, input, &output.settings, 2).unwrap();
        m.import.push(started.elapsed());
        let started = Instant::now();
        let mut client = tilepipe::db::connect(&config).unwrap();
        let settings = ImportSettings::load(&mut client, "public")
            .unwrap()
            .unwrap();
        let mut applier = Applier::for_settings(&settings).unwrap();
        let mut tx = client.transaction().unwrap();
        applier.apply(&mut tx, diff).unwrap();
        tx.commit().unwrap();
        m.append.push(started.elapsed());
        drop(client);
        cluster.drop_database(db_name(&url)).unwrap();
    }
    m
}

fn report(name: &str, ours: Measured, theirs: Measured) {
    for (what, a, b, goal) in [
        ("import", ours.import, theirs.import, 0.7),
        ("append", ours.append, theirs.append, 0.5),
    ] {
        let (a, a_min, a_max) = median(a);
        let (b, b_min, b_max) = median(b);
        let ratio = a.as_secs_f64() / b.as_secs_f64();
        println!(
            "| {name} | {what} | {:.2} s ({:.2}–{:.2}) | {:.2} s ({:.2}–{:.2}) | {ratio:.2}× | ≤ {goal}× {} |",
            a.as_secs_f64(),
            a_min.as_secs_f64(),
            a_max.as_secs_f64(),
            b.as_secs_f64(),
            b_min.as_secs_f64(),
            b_max.as_secs_f64(),
            if ratio <= goal { "met" } else { "not met" }
        );
    }
}

fn write_osc(path: &Path, changes: &ChangeSet) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    tilepipe::osm::osc_write::write_osc(&mut file, "bench", changes.iter()).unwrap();
}

fn main() {
    // The test configs' schema switch: both tools write the default schema.
    std::env::remove_var("FLEX_TEST_SCHEMA");
    let (Some(pbf), Some(diff)) = (
        tilepipe_testkit::shared_data("liechtenstein-2013-08-03.osm.pbf"),
        tilepipe_testkit::shared_data("000466354.osc.gz"),
    ) else {
        return;
    };
    if Command::new("osm2pgsql").arg("--version").output().is_err() {
        println!("skipping: osm2pgsql not installed");
        return;
    }
    let cluster = PgCluster::start(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let only = std::env::var("TILEPIPE_BENCH_OUTPUT").ok();
    let outputs: Vec<Output> = [Output::classic(), Output::flex()]
        .into_iter()
        .filter(|o| only.as_deref().is_none_or(|name| name == o.name))
        .collect();
    println!("| input | step | tilepipe (spread) | osm2pgsql --slim (spread) | ratio | goal |");
    println!("|---|---|---:|---:|---:|---|");

    let changes = tilepipe::osm::osc::read_osc_file(&diff).unwrap();
    let data = OsmData::from_pbf(&pbf).unwrap();
    let big_path: PathBuf = dir.path().join("liechtenstein-x10.osm.pbf");
    write_scaled(&data, 10, &big_path, PbfHeader::default()).unwrap();
    let big = scaled(&data, 10).unwrap();
    let mut generator = FeedGenerator::new(big, 1, 1, chrono::Utc::now(), 60);
    let merged: ChangeSet = (0..60)
        .flat_map(|_| generator.next_diff().changes)
        .collect();
    let big_diff = dir.path().join("x10.osc");
    write_osc(&big_diff, &merged);

    for output in &outputs {
        let label = |input: &str| match output.name {
            "classic" => input.to_string(),
            name => format!("{input} ({name} output)"),
        };
        let ours = tilepipe_runs(&cluster, output, &pbf, &changes);
        let theirs = osm2pgsql(&cluster, output, &pbf, &diff);
        report(&label("Liechtenstein PBF + diff 000466354"), ours, theirs);
        let ours = tilepipe_runs(&cluster, output, &big_path, &merged);
        let theirs = osm2pgsql(&cluster, output, &big_path, &big_diff);
        report(
            &label("10× Liechtenstein PBF + 60 merged diffs"),
            ours,
            theirs,
        );
    }
}
