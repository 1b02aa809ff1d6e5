//! Rendering speed: the same metatiles rendered by tilepipe's workers
//! ([`Renderer`]) and by Debian's renderd 0.6.1 fed by `render_list`, with
//! the same style XML (same connection parameters, png256, 256 px, buffer
//! 128), the same number of threads and the same database. For the
//! project's style and for openstreetmap-carto 5.7.0 (prepared by
//! `scripts/setup-carto`).
//!
//! Run with `cargo bench --bench render`. Data: Liechtenstein from
//! `../shared/data` when present (metatiles z12-z17 around Vaduz), else the
//! synthetic town. `TILEPIPE_BENCH_THREADS` sets the thread count (default
//! 2), `TILEPIPE_BENCH_ROUNDS` the timed rounds per side (default 3; the
//! best round counts). Without renderd only tilepipe's figures are printed.
//!
//! Printed per style: metatiles/s of both, the ratio, and tilepipe's own
//! overhead (time a worker spends on a job outside Mapnik's drawing and
//! encoding: queueing, assembling the metatile, writing the file) as a
//! share of the Mapnik time; plus one machine-readable `BENCH {...}` line
//! per figure. On a shared machine wall times are noisy, so metatiles per
//! CPU second of the renderer process (tilepipe's, renderd's; PostgreSQL's
//! share is the same for both and not counted) are printed too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tilepipe::render::config::{RenderConfig, StyleConfig, TileFormat};
use tilepipe::render::style::load_style_xml;
use tilepipe::render::worker::{Renderer, Timings};
use tilepipe::tile::Metatile;
use tilepipe::tile::{metatiles_at, BBox};
use tilepipe_testkit::renderd::{find_in_path, output_with_stdin};
use tilepipe_testkit::{PgCluster, Renderd};

const LIECHTENSTEIN: &str = "../shared/data/liechtenstein-2013-08-03.osm.pbf";
const CARTO_DIR: &str = "/usr/share/openstreetmap-carto-common";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// The benchmark's data: a file to import and the box to render.
struct Data {
    file: PathBuf,
    bbox: BBox,
    zooms: std::ops::RangeInclusive<u8>,
    name: &'static str,
    _dir: tempfile::TempDir,
}

fn data() -> Data {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let liechtenstein = manifest.join(LIECHTENSTEIN);
    if liechtenstein.exists() {
        return Data {
            file: liechtenstein,
            bbox: "9.49,47.12,9.55,47.16".parse().unwrap(),
            zooms: 12..=17,
            name: "liechtenstein",
            _dir: dir,
        };
    }
    eprintln!("{LIECHTENSTEIN} not found: rendering the synthetic town instead");
    let file = dir.path().join("town.osm");
    tilepipe_testkit::town::synthetic_town()
        .write_osm_file(&file)
        .unwrap();
    Data {
        file,
        bbox: "9.999,49.997,10.013,50.009".parse().unwrap(),
        zooms: 13..=18,
        name: "town",
        _dir: dir,
    }
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One style as both sides render it: an XML file with the connection
/// written in (renderd cannot substitute it), in the style's own
/// directory so relative paths resolve alike.
struct BenchStyle {
    name: &'static str,
    xml: PathBuf,
}

/// Debian's renderd on a temporary directory with the style; killed on
/// drop.
fn start_renderd(style: &BenchStyle, threads: usize) -> Renderd {
    Renderd::builder()
        .style(style.name, &style.xml)
        .num_threads(threads)
        .plugins_dir(mapnik_sys::DEFAULT_PLUGIN_DIR)
        .font_dir("/usr/share/fonts", true)
        .timeout(Duration::from_secs(120))
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `render_list -f -n threads` over stdin `X Y Z` lines; the wall time.
fn render_list(renderd: &Renderd, style: &str, metatiles: &[Metatile], threads: usize) -> Duration {
    let list: String = metatiles
        .iter()
        .map(|m| format!("{} {} {}\n", m.x, m.y, m.z))
        .collect();
    let started = Instant::now();
    let out = output_with_stdin(
        Command::new("render_list")
            .args(["-f", "-l", "1000", "-m", style])
            .arg("-n")
            .arg(threads.to_string())
            .arg("-s")
            .arg(renderd.socket().expect("renderd listens on a socket"))
            .arg("-t")
            .arg(renderd.tile_dir()),
        &list,
    )
    .unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "render_list: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        renderd.log()
    );
    elapsed
}

/// Metatile files renderd wrote.
fn written(renderd: &Renderd) -> usize {
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            count(&p)
                        } else {
                            usize::from(p.extension().is_some_and(|x| x == "meta"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(renderd.tile_dir())
}

/// All metatiles through tilepipe's queue at once; the wall time until the
/// last is written.
fn render_tilepipe(renderer: &Renderer, style: &str, metatiles: &[Metatile]) -> Duration {
    let started = Instant::now();
    tilepipe_testkit::render::render_all(renderer, style, metatiles);
    started.elapsed()
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/<pid>/stat` (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// CPU time of a process's threads other than its main thread: the render
/// threads (renderd's main thread serves the socket; the benchmark's
/// submits and waits).
fn worker_cpu_time(pid: &str) -> Duration {
    let pid_number = if pid == "self" {
        std::process::id().to_string()
    } else {
        pid.to_string()
    };
    std::fs::read_dir(format!("/proc/{pid_number}/task"))
        .unwrap()
        .flatten()
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .filter(|tid| *tid != pid_number)
        .map(|tid| cpu_time(&format!("{pid_number}/task/{tid}")))
        .sum()
}

/// CPU time of the live children of a process (PostgreSQL's backends when
/// given the postmaster).
fn children_cpu_time(parent: u32) -> Duration {
    let parent = parent.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            (fields[1] == parent).then(|| {
                let ticks: u64 =
                    fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
                Some(Duration::from_millis(ticks * 10))
            })?
        })
        .sum()
}

/// Waits until the renderer has accounted for `jobs` jobs.
fn settled(renderer: &Renderer, jobs: u64) -> Timings {
    loop {
        let t = renderer.timings();
        if t.jobs >= jobs {
            return t;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn bench_line(name: &str, tilepipe: f64, peer: Option<f64>, unit: &str, goal: &str) {
    let peer = peer.map_or("null".to_string(), |p| format!("{p:.3}"));
    println!(
        "BENCH {{\"bench\":\"render\",\"name\":\"{name}\",\"tilepipe\":{tilepipe:.3},\"peer\":{peer},\"unit\":\"{unit}\",\"goal\":\"{goal}\"}}"
    );
}

fn bench_style(
    postmaster: u32,
    style: &BenchStyle,
    metatiles: &[Metatile],
    threads: usize,
    rounds: usize,
    renderd: bool,
) {
    let tiles = tempfile::tempdir().unwrap();
    let config = StyleConfig {
        name: style.name.to_string(),
        xml: style.xml.clone(),
        tile_dir: tiles.path().to_path_buf(),
        // renderd 0.6.1 always encodes png256.
        format: TileFormat::Png256,
        ..StyleConfig::default()
    };
    let settings = RenderConfig {
        threads,
        queue_capacity: metatiles.len() + 1,
        // Throughput of all workers: no clients to keep a worker for.
        background_max_threads: usize::MAX,
        ..RenderConfig::default()
    };
    let renderer = Renderer::start(std::slice::from_ref(&config), &settings).unwrap();
    // Warm-up: the database's and the file system's caches.
    render_tilepipe(&renderer, style.name, metatiles);
    let renderd = renderd.then(|| start_renderd(style, threads));
    if let Some(r) = &renderd {
        // Its threads load the style after the socket is up; one render per
        // thread waits for them.
        render_list(
            r,
            style.name,
            &metatiles[..threads.min(metatiles.len())],
            threads,
        );
    }
    let mut best_tilepipe = Duration::MAX;
    let mut best_renderd = Duration::MAX;
    let (mut cpu_tilepipe, mut cpu_renderd) = (Duration::MAX, Duration::MAX);
    let (mut threads_tilepipe, mut threads_renderd) = (Duration::MAX, Duration::MAX);
    let (mut pg_tilepipe, mut pg_renderd) = (Duration::ZERO, Duration::ZERO);
    let mut timings = Timings::default();
    // Rounds alternate which side goes first, so neither always runs on
    // caches the other just warmed.
    for round in 0..rounds {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                if let Some(r) = &renderd {
                    let pid = r.pid().to_string();
                    let (cpu, workers) = (cpu_time(&pid), worker_cpu_time(&pid));
                    let pg = children_cpu_time(postmaster);
                    best_renderd = best_renderd.min(render_list(r, style.name, metatiles, threads));
                    pg_renderd += children_cpu_time(postmaster).saturating_sub(pg);
                    cpu_renderd = cpu_renderd.min(cpu_time(&pid) - cpu);
                    threads_renderd = threads_renderd.min(worker_cpu_time(&pid) - workers);
                }
                continue;
            }
            let before = settled(&renderer, 0);
            let (cpu, workers) = (cpu_time("self"), worker_cpu_time("self"));
            let pg = children_cpu_time(postmaster);
            let elapsed = render_tilepipe(&renderer, style.name, metatiles);
            pg_tilepipe += children_cpu_time(postmaster).saturating_sub(pg);
            let after = settled(&renderer, before.jobs + metatiles.len() as u64);
            cpu_tilepipe = cpu_tilepipe.min(cpu_time("self") - cpu);
            threads_tilepipe = threads_tilepipe.min(worker_cpu_time("self") - workers);
            if elapsed < best_tilepipe {
                best_tilepipe = elapsed;
                timings = Timings {
                    jobs: after.jobs - before.jobs,
                    rendered: after.rendered - before.rendered,
                    failed: after.failed - before.failed,
                    retried: after.retried - before.retried,
                    mapnik: after.mapnik - before.mapnik,
                    write: after.write - before.write,
                    busy: after.busy - before.busy,
                };
            }
        }
    }
    let n = metatiles.len() as f64;
    let ours = n / best_tilepipe.as_secs_f64();
    let peer = renderd.as_ref().map(|_| n / best_renderd.as_secs_f64());
    let ours_cpu = n / cpu_tilepipe.as_secs_f64();
    let peer_cpu = renderd.as_ref().map(|_| n / cpu_renderd.as_secs_f64());
    if let Some(r) = &renderd {
        assert!(
            written(r) >= metatiles.len(),
            "renderd wrote {} of {}",
            written(r),
            metatiles.len()
        );
    }
    renderer.shutdown();
    let overhead = timings.overhead_ratio() * 100.0;
    println!(
        "{}: {} metatiles, {threads} threads: tilepipe {ours:.2} metatiles/s ({:.2} s), renderd+render_list {} -> ratio {}",
        style.name,
        metatiles.len(),
        best_tilepipe.as_secs_f64(),
        peer.map_or("not installed".to_string(), |p| format!("{p:.2} metatiles/s ({:.2} s)", best_renderd.as_secs_f64())),
        peer.map_or("-".to_string(), |p| format!("{:.2}x", ours / p)),
    );
    println!(
        "{}: per metatile: Mapnik {:.1} ms, writing {:.2} ms, tilepipe overhead {:.2} ms = {overhead:.2}% of the Mapnik time",
        style.name,
        timings.mapnik.as_secs_f64() * 1000.0 / n,
        timings.write.as_secs_f64() * 1000.0 / n,
        timings.overhead().as_secs_f64() * 1000.0 / n,
    );
    bench_line(
        &format!("{} metatiles/s", style.name),
        ours,
        peer,
        "metatiles/s",
        "≥1×",
    );
    println!(
        "{}: per CPU second of the renderer process (PostgreSQL not counted): tilepipe {ours_cpu:.2} metatiles, renderd {} -> ratio {}",
        style.name,
        peer_cpu.map_or("-".to_string(), |p| format!("{p:.2}")),
        peer_cpu.map_or("-".to_string(), |p| format!("{:.2}x", ours_cpu / p)),
    );
    let per_round = n * rounds as f64;
    println!(
        "{}: CPU per metatile: render threads tilepipe {:.1} ms, renderd {}; PostgreSQL serving tilepipe {:.1} ms, renderd {}",
        style.name,
        threads_tilepipe.as_secs_f64() * 1000.0 / n,
        renderd.as_ref().map_or("-".to_string(), |_| format!(
            "{:.1} ms",
            threads_renderd.as_secs_f64() * 1000.0 / n
        )),
        pg_tilepipe.as_secs_f64() * 1000.0 / per_round,
        renderd.as_ref().map_or("-".to_string(), |_| format!(
            "{:.1} ms",
            pg_renderd.as_secs_f64() * 1000.0 / per_round
        )),
    );
    bench_line(
        &format!("{} metatiles per CPU second", style.name),
        ours_cpu,
        peer_cpu,
        "metatiles/CPU-s",
        "≥1×",
    );
    bench_line(
        &format!("{} overhead", style.name),
        overhead,
        None,
        "% of Mapnik time",
        "<5%",
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let threads = env_number("TILEPIPE_BENCH_THREADS", 2);
    let rounds = env_number("TILEPIPE_BENCH_ROUNDS", 3);
    let renderd = find_in_path("renderd").is_some() && find_in_path("render_list").is_some();
    if !renderd {
        eprintln!("renderd or render_list not installed (apt-get install renderd): tilepipe only");
    }
    let data = data();
    let metatiles: Vec<Metatile> = data
        .zooms
        .clone()
        .flat_map(|z| metatiles_at(z, Some(&data.bbox)).collect::<Vec<_>>())
        .collect();
    println!(
        "render benchmark: {} {} z{}-{} ({} metatiles), {threads} threads, best of {rounds} rounds",
        data.name,
        data.bbox,
        data.zooms.start(),
        data.zooms.end(),
        metatiles.len()
    );
    let cluster = PgCluster::start(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_tilepipe");

    // The project's style on a default (classic) import.
    let url = cluster.create_database("render_bench").unwrap();
    run(Command::new(exe)
        .args(["-q", "-c", "/dev/null", "-d", &url, "import"])
        .arg(&data.file));
    let style_dir = work.path().join("tilepipe");
    std::fs::create_dir(&style_dir).unwrap();
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/tilepipe/tilepipe.xml");
    let xml = load_style_xml(&project, Some(&url), threads).unwrap();
    std::fs::write(style_dir.join("tilepipe.xml"), xml).unwrap();
    bench_style(
        cluster.pid().expect("PostgreSQL runs"),
        &BenchStyle {
            name: "tilepipe",
            xml: style_dir.join("tilepipe.xml"),
        },
        &metatiles,
        threads,
        rounds,
        renderd,
    );

    // openstreetmap-carto on a carto import.
    if !Path::new(CARTO_DIR).join("style.xml").exists() {
        eprintln!("{CARTO_DIR}/style.xml not found: carto skipped");
        return;
    }
    let url = cluster.create_database("render_bench_carto").unwrap();
    let carto_dir = work.path().join("carto");
    run(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-carto"))
            .arg(&carto_dir)
            .arg(&url),
    );
    run(Command::new(exe)
        .args([
            "-q",
            "-c",
            "/dev/null",
            "-d",
            &url,
            "import",
            "--hstore",
            "-G",
            "--style",
        ])
        .arg(Path::new(CARTO_DIR).join("openstreetmap-carto.style"))
        .arg("--tag-transform-script")
        .arg(Path::new(CARTO_DIR).join("openstreetmap-carto.lua"))
        .arg(&data.file));
    bench_style(
        cluster.pid().expect("PostgreSQL runs"),
        &BenchStyle {
            name: "carto",
            xml: carto_dir.join("style.xml"),
        },
        &metatiles,
        threads,
        rounds,
        renderd,
    );
}
