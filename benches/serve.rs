//! Serving benchmark: `wrk` on loopback against tilepipe's HTTP server and
//! against Apache 2 + mod_tile (Debian's packages, configured here on
//! another port), both serving the same cached metatiles.
//!
//! Scenarios: one hot tile, and thousands of tiles picked at random per
//! request (a wrk Lua script written here). Every tile is clean (the
//! planet time is an hour ago), so neither server asks a renderer; this
//! measures the path every cached tile takes: stat the planet time, open
//! the metatile, read its index and the tile, add cache headers and ETag.
//! Tile payloads are pseudo-random bytes with sizes like rendered
//! OpenStreetMap PNGs (4–28 KiB), written as mod_tile metatiles.
//!
//! Prints a table and `BENCH {...}` lines: requests per second (goal: at
//! least twice mod_tile's) and p99 latency (goal: under 5 ms).
//!
//! The servers run alternately, round by round, and each side's median
//! round (by requests per second) is reported. `TILEPIPE_BENCH_SECS` sets
//! each run's length (default 10 s), `TILEPIPE_BENCH_ROUNDS` the rounds
//! (default 3), `TILEPIPE_BENCH_CONNECTIONS` wrk's connections (default
//! 32).
//! Without wrk, apache2 or mod_tile the missing side is skipped with a
//! message.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tilepipe::metatile::{self, TileStore};
use tilepipe::metrics::Metrics;
use tilepipe::serve::config::ServeConfig;
use tilepipe::serve::Server;
use tilepipe::tile::{Metatile, Tile};
use tilepipe_testkit::apache::Apache;
use tilepipe_testkit::find_in_path;
use tilepipe_testkit::serve::{plain_style, planet_import_complete};

const STYLE: &str = tilepipe_testkit::serve::STYLE;
const ZOOM: u8 = 15;
/// Metatiles per side of the rotating set: 12 × 12 metatiles = 9216 tiles.
const SIDE: u32 = 12;
const X0: u32 = 17_128;
const Y0: u32 = 11_144;

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Writes the benchmark's metatiles; returns the tile count.
fn write_cache(tiles: &Path) -> usize {
    let store = TileStore::new(tiles);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut count = 0;
    for mx in 0..SIDE {
        for my in 0..SIDE {
            let metatile = Metatile {
                z: ZOOM,
                x: X0 + mx * 8,
                y: Y0 + my * 8,
            };
            let payloads: Vec<Vec<u8>> = (0..metatile::SLOTS)
                .map(|_| {
                    let len = 4096 + (next() % (24 * 1024)) as usize;
                    let mut bytes: Vec<u8> =
                        (0..len / 8).flat_map(|_| next().to_le_bytes()).collect();
                    bytes[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
                    bytes
                })
                .collect();
            store.write(STYLE, metatile, &payloads).unwrap();
            count += metatile::SLOTS;
        }
    }
    count
}

fn wrk_script(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("rotate.lua");
    let side = SIDE * 8;
    std::fs::write(
        &script,
        format!(
            "-- Written by benches/serve.rs: a random tile of the cached block per request.\n\
             math.randomseed(os.time())\n\
             request = function()\n\
             \x20 local x = {X0} + math.random(0, {side} - 1)\n\
             \x20 local y = {Y0} + math.random(0, {side} - 1)\n\
             \x20 return wrk.format(\"GET\", \"/{STYLE}/{ZOOM}/\" .. x .. \"/\" .. y .. \".png\")\n\
             end\n"
        ),
    )
    .unwrap();
    script
}

/// "1.23ms" → milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn wrk(url: &str, script: Option<&Path>, secs: u64, connections: u32) -> Run {
    let mut command = Command::new("wrk");
    command
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency");
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let out = command.arg(url).output().expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run = Run {
        rps: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", n] => run.rps = n.parse().unwrap_or(0.0),
            ["50%", d] => run.p50_ms = duration_ms(d).unwrap_or(f64::NAN),
            ["99%", d] => run.p99_ms = duration_ms(d).unwrap_or(f64::NAN),
            _ => {}
        }
    }
    if text.contains("Non-2xx") {
        eprintln!("warning: non-2xx answers from {url}:\n{text}");
    }
    run
}

fn bench_line(name: &str, tilepipe: f64, peer: Option<f64>, unit: &str, goal: &str) {
    let peer = peer.map_or("null".to_string(), |p| format!("{p:.3}"));
    println!(
        "BENCH {{\"bench\":\"serve\",\"name\":\"{name}\",\"tilepipe\":{tilepipe:.3},\"peer\":{peer},\"unit\":\"{unit}\",\"goal\":\"{goal}\"}}"
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if find_in_path("wrk").is_none() {
        println!("serve bench skipped: wrk is not installed (apt-get install wrk)");
        return;
    }
    let secs: u64 = std::env::var("TILEPIPE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let connections: u32 = std::env::var("TILEPIPE_BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let rounds: usize = std::env::var("TILEPIPE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let tiles = dir.path().join("tiles");
    let count = write_cache(&tiles);
    planet_import_complete(&tiles, Duration::from_secs(3600));
    let script = wrk_script(dir.path());
    let hot = Tile::new(ZOOM, X0 + 3, Y0 + 5).unwrap();
    let hot_path = format!("/{STYLE}/{ZOOM}/{}/{}.png", hot.x, hot.y);
    println!(
        "serve bench: {count} cached tiles at z{ZOOM}, wrk -t2 -c{connections} -d{secs}s, median of {rounds} alternating rounds, {} CPUs",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // tilepipe, in this process, without a renderer (every tile is cached).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let style = plain_style(dir.path(), &tiles);
    let settings = ServeConfig {
        listen: "127.0.0.1:0".into(),
        ..ServeConfig::default()
    };
    let server = runtime
        .block_on(Server::bind(
            settings,
            vec![style],
            None,
            Arc::new(Metrics::new()),
        ))
        .unwrap();
    let ours = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = runtime.spawn(server.run(async move {
        let _ = stopped.await;
    }));
    // Apache + mod_tile on the same cache.
    let apache = Apache::start(&tiles, STYLE, 32);
    let peer = apache.as_ref().map(Apache::base);

    // Warm the page cache and both servers, then alternate the servers
    // round by round (the machine is shared: alternating spreads other
    // load over both) and keep each side's median round.
    for base in std::iter::once(&ours).chain(peer.as_ref()) {
        wrk(&format!("{base}/"), Some(&script), 2, connections);
    }
    let mut results: Vec<(Vec<Run>, Vec<Run>)> = Vec::new();
    for scenario in 0..2 {
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            for (base, runs) in
                std::iter::once((&ours, &mut mine)).chain(peer.as_ref().map(|p| (p, &mut theirs)))
            {
                runs.push(match scenario {
                    0 => wrk(&format!("{base}{hot_path}"), None, secs, connections),
                    _ => wrk(&format!("{base}/"), Some(&script), secs, connections),
                });
            }
        }
        results.push((mine, theirs));
    }
    let _ = stop.send(());
    runtime.block_on(task).unwrap().unwrap();
    drop(runtime);
    drop(apache);
    let median = |runs: &[Run]| -> Option<Run> {
        if runs.is_empty() {
            return None;
        }
        let mut by_rps: Vec<&Run> = runs.iter().collect();
        by_rps.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        let m = by_rps[by_rps.len() / 2];
        Some(Run {
            rps: m.rps,
            p50_ms: m.p50_ms,
            p99_ms: m.p99_ms,
        })
    };
    let ours_hot = median(&results[0].0).unwrap();
    let peer_hot = median(&results[0].1);
    let ours_rot = median(&results[1].0).unwrap();
    let peer_rot = median(&results[1].1);

    println!();
    println!("| scenario | server | req/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|");
    for (scenario, ours, peer) in [
        ("one hot tile", &ours_hot, &peer_hot),
        ("rotating tiles", &ours_rot, &peer_rot),
    ] {
        println!(
            "| {scenario} | tilepipe | {:.0} | {:.2} | {:.2} |",
            ours.rps, ours.p50_ms, ours.p99_ms
        );
        if let Some(peer) = peer {
            println!(
                "| {scenario} | Apache + mod_tile | {:.0} | {:.2} | {:.2} |",
                peer.rps, peer.p50_ms, peer.p99_ms
            );
            println!(
                "| {scenario} | ratio | {:.2}× | | |",
                ours.rps / peer.rps.max(1e-9)
            );
        }
    }
    println!();
    for (name, ours, peer) in [
        ("hot_tile", &ours_hot, &peer_hot),
        ("rotating_tiles", &ours_rot, &peer_rot),
    ] {
        bench_line(
            &format!("{name}_rps"),
            ours.rps,
            peer.as_ref().map(|p| p.rps),
            "req/s",
            "≥2×",
        );
        bench_line(
            &format!("{name}_p99"),
            ours.p99_ms,
            peer.as_ref().map(|p| p.p99_ms),
            "ms",
            "<5 ms",
        );
        bench_line(
            &format!("{name}_p50"),
            ours.p50_ms,
            peer.as_ref().map(|p| p.p50_ms),
            "ms",
            "-",
        );
    }
}
