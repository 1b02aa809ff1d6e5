//! `tilepipe expire-tiles` on a hand-checked file (tests/fixtures/expire/
//! world.osm) at zoom 3, where a tile spans 45° of longitude.
//!
//! Fractional tile coordinates, `tx = 8·(0.5 + lon/360)` and
//! `ty = 8·(0.5 − ln(tan(45° + lat/2))/2π)`, with the 0.1 buffer:
//! - node 1 (10°E 20°N): tx 4.22, ty 3.55 → 3/4/3;
//! - node 2 (179.99°W 10°S): tx 0.0002 − 0.1 truncates to 0, not −1, so
//!   only column 0; ty 4.22 → 3/0/4;
//! - node 3 (179.99°E 10°S): tx 7.9998 + 0.1 → column 8, wrapped to 0 →
//!   3/7/4 and 3/0/4;
//! - way 10 (100°W → 10°W along 50°N): tx 1.78 → 3.78, ty 2.71 → columns
//!   1–3 of row 2;
//! - way 11, closed (50°E–170°E × 45°S–45°N): tx 5.11–7.78, ty 2.88–5.12;
//!   its boundary covers columns 5–7 × rows 2–5 except the interior tiles
//!   6/3 and 6/4, which only the full-area fill adds (scan lines y = 3 and
//!   y = 4 cross the ring at x 5.11 and 7.78 → tiles 5 and 6);
//! - relation 20 (route of way 10 and untagged way 12 at 70°N, 100°E →
//!   120°E: tx 6.22 → 6.67, ty 1.79) → way 10's tiles and 3/6/1;
//! - node 15 is untagged: nothing.

use std::process::{Command, Output};

const WORLD: &str = "tests/fixtures/expire/world.osm";

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("TILEPIPE_CONFIG")
        .arg("-q")
        .arg("expire-tiles")
        .args(args)
        .output()
        .expect("tilepipe runs")
}

/// Runs and returns stdout lines, asserting success.
fn lines(args: &[&str]) -> Vec<String> {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn tiles(list: &[&str]) -> Vec<String> {
    let mut v = sorted(list.iter().map(|s| format!("3/{s}")).collect());
    v.dedup();
    v
}

// 7/4 (node 3) is on the polygon's boundary too.
const POINTS_AND_LINES: &[&str] = &["4/3", "0/4", "7/4", "1/2", "2/2", "3/2", "6/1"];

fn polygon_boundary() -> Vec<String> {
    let mut v = Vec::new();
    for x in 5..=7 {
        for y in 2..=5 {
            if !(x == 6 && (y == 3 || y == 4)) {
                v.push(format!("{x}/{y}"));
            }
        }
    }
    v
}

#[test]
fn full_area_boundary_only_and_hybrid() {
    let boundary: Vec<String> = POINTS_AND_LINES
        .iter()
        .map(|s| s.to_string())
        .chain(polygon_boundary())
        .collect();
    let boundary = tiles(&boundary.iter().map(String::as_str).collect::<Vec<_>>());
    let mut full = boundary.clone();
    full.extend(["3/6/3".to_string(), "3/6/4".to_string()]);
    let full = sorted(full);
    assert_eq!(boundary.len(), 16);
    assert_eq!(full.len(), 18);

    let out = lines(&["--from-osm", WORLD, "--zoom", "3"]);
    assert_eq!(sorted(out.clone()), full);
    // Quadkey order: 3/1/2 (quadkey 9), 3/2/2 (12), 3/3/2 (13), 3/6/1 (22),
    // 3/5/2 (25), 3/4/3 (26), …, 3/7/5 (59).
    assert_eq!(
        &out[..6],
        &["3/1/2", "3/2/2", "3/3/2", "3/6/1", "3/5/2", "3/4/3"]
    );
    assert_eq!(out.last().unwrap(), "3/7/5");

    let b = lines(&["--from-osm", WORLD, "-z", "3", "--mode", "boundary-only"]);
    assert_eq!(sorted(b), boundary);
    // osm2pgsql-expire's spelling works too.
    let b = lines(&["--from-osm", WORLD, "-z", "3", "-m", "boundary_only"]);
    assert_eq!(sorted(b), boundary);
    // Hybrid: the polygon's envelope (13 000 km) is above the default
    // 20 km limit, so boundary-only; a huge limit makes it full area.
    let h = lines(&["--from-osm", WORLD, "-z", "3", "-m", "hybrid"]);
    assert_eq!(sorted(h), boundary);
    let h = lines(&[
        "--from-osm",
        WORLD,
        "-z",
        "3",
        "-m",
        "hybrid",
        "--full-area-limit",
        "40000000",
    ]);
    assert_eq!(sorted(h), full);
}

#[test]
fn buffer_option() {
    // Without a buffer node 3 at tx 7.9998 stays in column 7, and the
    // wrap to 3/0/4 comes from node 2 alone.
    let out = lines(&["--from-osm", WORLD, "-z", "3", "--buffer", "0"]);
    assert_eq!(out.len(), 18);
    // A buffer of half a tile reaches the neighbours of node 1 (tx 4.22
    // ± 0.5 → columns 3–4; ty 3.55 ± 0.5 → rows 3–4).
    let out = lines(&["--from-osm", WORLD, "-z", "3", "-b", "0.5"]);
    for t in ["3/3/3", "3/4/4", "3/3/4"] {
        assert!(out.iter().any(|l| l == t), "{t}");
    }
}

#[test]
fn min_zoom_lists_ancestors_after_their_first_descendant() {
    let out = lines(&["--from-osm", WORLD, "-z", "3", "--min-zoom", "1"]);
    // 3/1/2 brings 2/0/1 and 1/0/0; 3/2/2 brings 2/1/1 (1/0/0 done);
    // 3/3/2 nothing new; 3/6/1 brings 2/3/0 and 1/1/0; 3/5/2 brings 2/2/1.
    assert_eq!(
        &out[..11],
        &[
            "3/1/2", "2/0/1", "1/0/0", "3/2/2", "2/1/1", "3/3/2", "3/6/1", "2/3/0", "1/1/0",
            "3/5/2", "2/2/1"
        ]
    );
    let count = |z: &str| out.iter().filter(|l| l.starts_with(z)).count();
    // z2 parents of the 18 tiles: 0/1 1/1 3/0 2/1 3/1 0/2 2/2 3/2 → 8; z1:
    // 0/0 1/0 0/1 1/1 → 4.
    assert_eq!((count("3/"), count("2/"), count("1/")), (18, 8, 4));
}

#[test]
fn bad_arguments() {
    let out = run(&["--from-osm", WORLD, "-z", "3", "--min-zoom", "4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--min-zoom 4 is above --zoom 3"));
    // Zoom 0 and above 20 are refused by the parser.
    assert_eq!(
        run(&["--from-osm", WORLD, "-z", "0"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["--from-osm", WORLD, "-z", "21"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["--from-osm", WORLD, "-z", "3", "--buffer=-1"])
            .status
            .code(),
        Some(1)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["expire-tiles", "--from-osm", "/nonexistent.osm", "-z", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.osm"));
}
