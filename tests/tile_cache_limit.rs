//! The tile cache limits (`render.max_cache_gb`, the filesystem water
//! marks): real metatile files with chosen access and modification times,
//! swept by [`tilepipe::render::cache_limit::sweep`]: least recently used
//! first (atime, or mtime where it is later, as on a `noatime` mount),
//! never a metatile written in the last minute nor a renderer's temporary
//! file; then `tilepipe serve` (the binary) enforcing `max_cache_gb` on
//! its own and showing the figures on `/metrics` over HTTP.

use std::fs::{File, FileTimes};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tilepipe::metatile::TileStore;
use tilepipe::render::cache_limit::{sweep, CacheLimits};
use tilepipe::tile::Metatile;

const STYLE: &str = "plain";

/// Ten metatiles of about 40 KB at z12; metatile `i` was last read `100 -
/// 5 i` minutes ago and rendered 3 hours ago, except: 0 was read long ago
/// but re-rendered 10 minutes ago (its mtime is its last use), 3 was
/// written just now. Returns their paths and a temporary file as a render
/// leaves it while writing, dated long ago.
fn fill(tiles: &Path) -> (Vec<PathBuf>, PathBuf) {
    let store = TileStore::new(tiles);
    let now = SystemTime::now();
    let minutes = |m: u64| now - Duration::from_secs(60 * m);
    let payload: Vec<Vec<u8>> = (0..64u8).map(|n| vec![n; 600]).collect();
    let mut paths = Vec::new();
    for i in 0..10u32 {
        let metatile = Metatile {
            z: 12,
            x: 8 * i,
            y: 64,
        };
        let path = store.write(STYLE, metatile, &payload).unwrap();
        let (accessed, modified) = match i {
            0 => (minutes(600), minutes(10)),
            3 => (minutes(600), now),
            i => (minutes(100 - 5 * u64::from(i)), minutes(180)),
        };
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(
                FileTimes::new()
                    .set_accessed(accessed)
                    .set_modified(modified),
            )
            .unwrap();
        paths.push(path);
    }
    let temp = paths[5].with_file_name("0.meta.4242.0.tmp");
    std::fs::write(&temp, vec![0u8; 40_000]).unwrap();
    File::options()
        .write(true)
        .open(&temp)
        .unwrap()
        .set_times(
            FileTimes::new()
                .set_accessed(minutes(900))
                .set_modified(minutes(900)),
        )
        .unwrap();
    (paths, temp)
}

fn disk_use(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn sweeps_delete_least_recently_used_metatiles_and_nothing_being_written() {
    let work = tempfile::tempdir().unwrap();
    let tiles = work.path().join("tiles");
    let (paths, temp) = fill(&tiles);
    let each = disk_use(&paths[1]);
    assert!(each > 30_000, "{each}");
    let dirs = [tiles.join(STYLE)];

    // Room for five: down to 90 % of it, 4.5 metatiles, so six go, in
    // order of last use: 1, 2, 4, 5, 6, 7 (3 was just written; 0 was
    // re-rendered 10 minutes ago, later than any of their reads).
    let limits = CacheLimits {
        max_bytes: Some(5 * each),
        water_marks: None,
        interval: Duration::from_secs(60),
    };
    let report = sweep(&limits, &dirs, SystemTime::now());
    eprintln!("{report:?}");
    let kept: Vec<usize> = (0..10).filter(|&i| paths[i].exists()).collect();
    assert_eq!(kept, [0, 3, 8, 9]);
    assert_eq!(report.evicted, 6);
    assert_eq!(report.evicted_bytes, 6 * each);
    assert_eq!(report.metatiles, 4);
    assert_eq!(report.bytes, 4 * each);
    assert!(temp.exists(), "a file being written was deleted");

    // Within the limit: nothing more to do.
    let again = sweep(&limits, &dirs, SystemTime::now());
    assert_eq!((again.evicted, again.metatiles), (0, 4));

    // Water marks the filesystem is far above (it is surely more than
    // 0.1 % full): everything goes but the metatile written just now and
    // the temporary file.
    let limits = CacheLimits {
        max_bytes: None,
        water_marks: Some((0.001, 0.0005)),
        interval: Duration::from_secs(60),
    };
    let report = sweep(&limits, &dirs, SystemTime::now());
    let kept: Vec<usize> = (0..10).filter(|&i| paths[i].exists()).collect();
    assert_eq!(kept, [3]);
    assert_eq!(report.evicted, 3);
    assert!(temp.exists());
    // planet-import-complete and other non-metatile files are not touched
    // either: only `.meta` files count.
    assert_eq!(report.metatiles, 1);
}

#[test]
fn serve_enforces_max_cache_gb_and_reports_it_on_metrics() {
    let work = tempfile::tempdir().unwrap();
    let tiles = work.path().join("tiles");
    let (paths, _temp) = fill(&tiles);
    let each = disk_use(&paths[1]);
    let xml = work.path().join("plain.xml");
    std::fs::write(&xml, tilepipe_testkit::serve::PLAIN_XML).unwrap();
    let limit = 5 * each;
    // The metatiles predate the XML written just now: the style change
    // check would mark them dirty, i.e. date them 1980, and reorder them.
    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "styles:\n  - name: {STYLE}\n    xml: {}\n    tile_dir: {}\n\
             render:\n  max_cache_gb: {}\n  cache_check_interval_secs: 1\n\
             \x20 style_change_dirty: false\n",
            xml.display(),
            tiles.display(),
            limit as f64 / 1e9
        ),
    )
    .unwrap();
    // No database: serve runs without one (the data bounds are optional).
    let serve = crate::data_bounds::start_serve(&config, "postgresql://127.0.0.1:1/none");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (status, body) = tilepipe_testkit::http::get(serve.port, "/metrics").unwrap();
        assert_eq!(status, 200);
        let body = String::from_utf8(body).unwrap();
        if body.contains("tilepipe_tile_cache_bytes") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "no sweep:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    let kept: Vec<usize> = (0..10).filter(|&i| paths[i].exists()).collect();
    assert_eq!(kept, [0, 3, 8, 9]);
    assert_eq!(value("tilepipe_tile_cache_limit_bytes"), limit as f64);
    assert_eq!(value("tilepipe_tile_cache_metatiles"), 4.0);
    assert_eq!(value("tilepipe_tile_cache_bytes"), (4 * each) as f64);
    assert_eq!(value("tilepipe_tile_cache_evicted_metatiles_total"), 6.0);
    assert_eq!(
        value("tilepipe_tile_cache_evicted_bytes_total"),
        (6 * each) as f64
    );
    assert!(value("tilepipe_tile_cache_last_sweep_timestamp_seconds") > 1.7e9);
}
