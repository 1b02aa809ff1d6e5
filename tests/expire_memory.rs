//! Memory of a tile set holding 10 million z18 tiles, in three shapes: a
//! filled block (a full-area polygon), lines (boundaries), and tiles
//! scattered over the world (the worst case for a bitmap). Measured two
//! ways: the set's own estimate and the growth of the process's resident
//! memory (this file holds one test, so nothing else runs alongside).
//! Figures are printed with `--nocapture`.

use tilepipe::expire::tileset::TileSet;

const N: u64 = 10_000_000;

/// Resident set size in bytes, from /proc (None elsewhere).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn measure(name: &str, fill: impl FnOnce(&mut TileSet)) -> u64 {
    let before = rss_bytes();
    let mut set = TileSet::new(18);
    fill(&mut set);
    assert_eq!(set.len(), N, "{name}");
    let estimate = set.heap_bytes();
    let grown = rss_bytes()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    eprintln!(
        "{name}: {N} z18 tiles: estimate {:.1} MB ({:.2} B/tile), resident growth {}, serialised {:.1} MB",
        estimate as f64 / 1e6,
        estimate as f64 / N as f64,
        grown.map_or("n/a".to_string(), |g| format!("{:.1} MB", g as f64 / 1e6)),
        set.serialized_bytes() as f64 / 1e6,
    );
    set.optimize();
    eprintln!(
        "{name}: after optimize (run containers): {:.1} MB",
        set.heap_bytes() as f64 / 1e6
    );
    estimate
}

#[test]
fn ten_million_z18_tiles() {
    // A 5000 × 2000 block.
    let block = measure("block", |s| {
        for y in 100_000..102_000 {
            for x in 120_000..125_000 {
                s.insert(x, y);
            }
        }
    });
    assert!(block < 2_000_000, "{block}");

    // 1000 disjoint diagonal lines of 10 000 tiles.
    let lines = measure("lines", |s| {
        for l in 0..1000u32 {
            for i in 0..10_000u32 {
                s.insert(l * 200 + i, 10_000 + i + l * 7);
            }
        }
    });
    assert!(lines < 40_000_000, "{lines}");

    // Uniformly scattered (a PRNG).
    let scattered = measure("scattered", |s| {
        let mut state = 42u64;
        while s.len() < N {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let v = state >> 28;
            s.insert((v & 0x3ffff) as u32, ((v >> 18) & 0x3ffff) as u32);
        }
    });
    assert!(scattered < 80_000_000, "{scattered}");
}
