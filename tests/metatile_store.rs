//! The mod_tile metatile store: byte compatibility with files renderd 0.6.1
//! wrote (fixtures), round trips, METZ, atomic writes, touch, delete and
//! freshness with `planet-import-complete`.

use flate2::write::GzEncoder;
use flate2::Compression;
use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tilepipe::metatile::{
    self, MetatileError, MetatileHeader, PlanetTimeSource, StoredTile, TileState, TileStore,
    TouchOutcome, DATA_START, SLOTS,
};
use tilepipe::tile::{Metatile, Tile};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metatile")
        .join(name)
}

fn tile(z: u8, x: u32, y: u32) -> Tile {
    Tile::new(z, x, y).unwrap()
}

fn int_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Slot payloads of a metatile file, read through the index.
fn payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let header = MetatileHeader::parse(bytes, Path::new("fixture")).unwrap();
    header
        .index
        .iter()
        .map(|&(offset, size)| bytes[offset as usize..(offset + size) as usize].to_vec())
        .collect()
}

fn set_mtime(path: &Path, mtime: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(mtime))
        .unwrap();
}

fn times(path: &Path) -> (SystemTime, SystemTime) {
    let metadata = fs::metadata(path).unwrap();
    (metadata.modified().unwrap(), metadata.accessed().unwrap())
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// renderd 0.6.1 rendered these with a one-colour Mapnik style; rewriting
/// their payloads must give the same bytes.
#[test]
fn rewrites_renderd_files_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let cases = [
        (
            "renderd-0.6.1-z18-131008-87168.meta",
            tile(18, 131010, 87170),
        ),
        ("renderd-0.6.1-z1.meta", tile(1, 0, 0)),
    ];
    for (name, tile) in cases {
        let original = fs::read(fixture(name)).unwrap();
        let written = store
            .write("plain", tile.metatile(), &payloads(&original))
            .unwrap();
        assert_eq!(written, store.path("plain", tile.metatile(), None).unwrap());
        assert_eq!(fs::read(&written).unwrap(), original, "{name}");
    }
}

#[test]
fn reads_renderd_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let m = tile(18, 131010, 87170).metatile();
    let path = store.path("plain", m, None).unwrap();
    assert!(path.ends_with("plain/18/17/245/244/200/0.meta"));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::copy(fixture("renderd-0.6.1-z18-131008-87168.meta"), &path).unwrap();
    for t in m.tiles() {
        let stored = store.read_tile("plain", t).unwrap().expect("rendered");
        assert!(!stored.gzip);
        assert_eq!(&stored.bytes[..8], b"\x89PNG\r\n\x1a\n", "{t}");
    }

    // z1: only slots 0, 1, 8, 9 are rendered; the others have size 0.
    let bytes = fs::read(fixture("renderd-0.6.1-z1.meta")).unwrap();
    let header = MetatileHeader::parse(&bytes, Path::new("z1")).unwrap();
    let rendered: Vec<usize> = (0..SLOTS).filter(|&s| header.index[s].1 > 0).collect();
    assert_eq!(rendered, [0, 1, 8, 9]);
    assert_eq!((header.x, header.y, header.z), (0, 0, 1));
    let m1 = tile(1, 1, 1).metatile();
    let path = store.path("plain", m1, None).unwrap();
    assert!(path.ends_with("plain/1/0/0/0/0/0.meta"));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &bytes).unwrap();
    for t in m1.tiles() {
        assert!(store.read_tile("plain", t).unwrap().is_some(), "{t}");
    }
}

#[test]
fn round_trip_with_empty_slots() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    // z1: a 2×2 world in a metatile of 64 slots.
    let m = Metatile { z: 1, x: 0, y: 0 };
    let mut tiles = vec![Vec::new(); SLOTS];
    for t in m.tiles() {
        tiles[metatile::slot(t)] = format!("tile {t}").into_bytes();
    }
    let path = store.write("s", m, &tiles).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(int_at(&bytes, 4), 64);
    assert_eq!(int_at(&bytes, 16), 1);
    // Slot 2 (x 0, y 2) is outside the world: size 0 at the write position
    // after slots 0 and 1.
    let after_two = DATA_START as i32 + tiles[0].len() as i32 + tiles[1].len() as i32;
    assert_eq!(
        (int_at(&bytes, 20 + 2 * 8), int_at(&bytes, 24 + 2 * 8)),
        (after_two, 0)
    );
    for t in m.tiles() {
        let stored = store.read_tile("s", t).unwrap().unwrap();
        assert_eq!(stored.bytes, format!("tile {t}").into_bytes());
    }
    // A world tile outside z1 cannot be addressed; an unrendered slot of a
    // deeper metatile reads as absent.
    let m3 = Metatile { z: 3, x: 0, y: 0 };
    store.write("s", m3, &[b"only slot 0".to_vec()]).unwrap();
    assert!(store.read_tile("s", tile(3, 0, 0)).unwrap().is_some());
    assert_eq!(store.read_tile("s", tile(3, 7, 7)).unwrap(), None);
    assert_eq!(
        store.read_tile("s", tile(4, 0, 0)).unwrap(),
        None,
        "missing file"
    );
}

#[test]
fn reader_follows_offsets_not_slot_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let m = Metatile { z: 5, x: 8, y: 16 };
    // Data in reverse slot order: slot 1 first, then slot 0.
    let mut bytes = metatile::encode(m, &[], false).unwrap();
    let data_start = bytes.len() as i32;
    bytes[20..28].copy_from_slice(&[(data_start + 3).to_le_bytes(), 4i32.to_le_bytes()].concat());
    bytes[28..36].copy_from_slice(&[data_start.to_le_bytes(), 3i32.to_le_bytes()].concat());
    bytes.extend_from_slice(b"onezero");
    let path = store.path("s", m, None).unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &bytes).unwrap();
    let read = |t| store.read_tile("s", t).unwrap().unwrap().bytes;
    assert_eq!(read(tile(5, 8, 16)), b"zero");
    assert_eq!(read(tile(5, 8, 17)), b"one");
}

#[test]
fn reads_metz() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let m = Metatile {
        z: 10,
        x: 512,
        y: 336,
    };
    let gzip = |text: &[u8]| {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    };
    let tiles: Vec<Vec<u8>> = (0..SLOTS)
        .map(|s| gzip(format!("{s}").as_bytes()))
        .collect();
    let path = store.write_with("s", m, None, &tiles, true).unwrap();
    assert_eq!(&fs::read(&path).unwrap()[..4], b"METZ");
    let stored = store.read_tile("s", tile(10, 515, 338)).unwrap().unwrap();
    assert_eq!(
        stored,
        StoredTile {
            bytes: tiles[3 * 8 + 2].clone(),
            gzip: true
        }
    );
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&stored.bytes[..]),
        &mut text,
    )
    .unwrap();
    assert_eq!(text, "26");
}

#[test]
fn parameterised_variants_have_their_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let m = Metatile {
        z: 9,
        x: 296,
        y: 184,
    };
    let path = store
        .write_with("s", m, Some("en,de,_"), &[b"en".to_vec()], false)
        .unwrap();
    assert!(path.ends_with("s/9/0/0/16/43/136.en,de,_.meta"));
    let t = tile(9, 296, 184);
    assert_eq!(store.read_tile("s", t).unwrap(), None);
    assert_eq!(
        store
            .read_tile_with("s", t, Some("en,de,_"))
            .unwrap()
            .unwrap()
            .bytes,
        b"en"
    );
}

#[test]
fn corrupt_files_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let m = Metatile { z: 4, x: 0, y: 8 };
    let path = store.write("s", m, &[b"abc".to_vec()]).unwrap();
    let full = fs::read(&path).unwrap();

    fs::write(&path, &full[..100]).unwrap();
    let e = store.read_tile("s", tile(4, 0, 8)).unwrap_err();
    assert!(matches!(e, MetatileError::Format { .. }));
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");

    fs::write(&path, &full[..DATA_START + 1]).unwrap();
    let e = store.read_tile("s", tile(4, 0, 8)).unwrap_err();
    assert!(e.to_string().contains("runs past the end"), "{e}");

    let mut huge = full.clone();
    huge[24..28].copy_from_slice(&(2i32 << 20).to_le_bytes());
    fs::write(&path, &huge).unwrap();
    assert!(store.read_tile("s", tile(4, 0, 8)).is_err());
}

#[test]
fn writes_are_atomic_and_leave_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let m = Metatile {
        z: 18,
        x: 131008,
        y: 87168,
    };
    let first = store.write("s", m, &[b"old".to_vec()]).unwrap();
    let second = store
        .write("s", m, &[b"new".to_vec(), b"er".to_vec()])
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(files_below(dir.path()), std::slice::from_ref(&first));
    assert_eq!(
        store
            .read_tile("s", tile(18, 131008, 87169))
            .unwrap()
            .unwrap()
            .bytes,
        b"er"
    );

    // Concurrent writers of one metatile: every reader sees a whole file.
    std::thread::scope(|scope| {
        for writer in 0..4u8 {
            let store = &store;
            scope.spawn(move || {
                for round in 0..50u8 {
                    let payload = vec![writer; 1000 + usize::from(round)];
                    store.write("s", m, &[payload]).unwrap();
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..200 {
                let stored = store
                    .read_tile("s", tile(18, 131008, 87168))
                    .unwrap()
                    .unwrap();
                assert!(stored.bytes.iter().all(|&b| b == stored.bytes[0]));
            }
        });
    });
    assert_eq!(files_below(dir.path()), [first]);
}

#[test]
fn write_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the style directory should be.
    fs::write(dir.path().join("s"), b"").unwrap();
    let store = TileStore::new(dir.path());
    let e = store
        .write("s", Metatile { z: 3, x: 0, y: 0 }, &[])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&dir.path().join("s").display().to_string()),
        "{e}"
    );
    assert_eq!(files_below(dir.path()), [dir.path().join("s")]);
}

#[test]
fn touch_sets_the_marker_and_keeps_atime() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let m = Metatile {
        z: 12,
        x: 2048,
        y: 1360,
    };
    assert_eq!(store.touch("s", m).unwrap(), TouchOutcome::Missing);
    assert!(files_below(dir.path()).is_empty(), "touch does not create");

    let path = store.write("s", m, &[b"x".to_vec()]).unwrap();
    let atime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(FileTimes::new().set_accessed(atime))
        .unwrap();
    assert!(matches!(store.stat("s", m).unwrap(), TileState::Clean(_)));

    assert_eq!(store.touch("s", m).unwrap(), TouchOutcome::Touched);
    assert_eq!(times(&path), (metatile::touched_mtime(), atime));
    assert_eq!(
        metatile::touched_mtime()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        315_532_800,
        "1980-01-01T00:00:00Z"
    );
    match store.stat("s", m).unwrap() {
        TileState::Dirty { stat, touched } => {
            assert!(touched);
            assert_eq!(stat.mtime, metatile::touched_mtime());
            assert_eq!(stat.size, DATA_START as u64 + 1);
        }
        other => panic!("{other:?}"),
    }

    // Touching twice leaves it: no drift into the past (mod_tile's 2026
    // defect moved it 20 more years back each time).
    assert_eq!(store.touch("s", m).unwrap(), TouchOutcome::AlreadyTouched);
    assert_eq!(times(&path), (metatile::touched_mtime(), atime));

    // A tile mod_tile touched in 2026 sits in 2006: not yet "touched" in
    // tilepipe's sense, so it gets the marker.
    let mod_tile_touched = UNIX_EPOCH + Duration::from_secs(1_163_000_000);
    set_mtime(&path, mod_tile_touched);
    assert!(matches!(
        store.stat("s", m).unwrap(),
        TileState::Dirty { touched: false, .. }
    ));
    assert_eq!(store.touch("s", m).unwrap(), TouchOutcome::Touched);
    assert_eq!(times(&path).0, metatile::touched_mtime());
    // A pre-2000 mtime counts as touched.
    let old = UNIX_EPOCH + Duration::from_secs(900_000_000);
    set_mtime(&path, old);
    assert_eq!(store.touch("s", m).unwrap(), TouchOutcome::AlreadyTouched);
    assert_eq!(times(&path).0, old);
}

#[test]
fn delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let m = Metatile { z: 3, x: 0, y: 0 };
    let path = store.write("s", m, &[b"x".to_vec()]).unwrap();
    let variant = store
        .write_with("s", m, Some("en"), &[b"x".to_vec()], false)
        .unwrap();
    assert!(store.delete("s", m).unwrap());
    assert!(!path.exists());
    assert!(variant.exists(), "delete acts on the plain .meta only");
    assert!(!store.delete("s", m).unwrap());
    assert_eq!(store.stat("s", m).unwrap(), TileState::Missing);
}

#[test]
fn freshness_follows_planet_import_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    let m = Metatile {
        z: 15,
        x: 16376,
        y: 10896,
    };
    let path = store.write("s", m, &[b"x".to_vec()]).unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);

    // No planet-import-complete: dirty when older than 3 days.
    let planet = store.planet_import_complete("s").unwrap();
    let after = SystemTime::now();
    assert_eq!(planet.source, PlanetTimeSource::Default);
    assert!(planet.time >= now - 3 * day && planet.time <= after - 3 * day);
    assert!(matches!(store.stat("s", m).unwrap(), TileState::Clean(_)));
    set_mtime(&path, now - 4 * day);
    assert!(matches!(
        store.stat("s", m).unwrap(),
        TileState::Dirty { touched: false, .. }
    ));

    // The root file: planet time 5 days ago, so the 4-day-old tile is clean.
    let root = dir.path().join("planet-import-complete");
    fs::write(&root, b"").unwrap();
    set_mtime(&root, now - 5 * day);
    let planet = store.planet_import_complete("s").unwrap();
    assert_eq!(planet.source, PlanetTimeSource::RootFile(root.clone()));
    assert!(matches!(store.stat("s", m).unwrap(), TileState::Clean(_)));

    // The style's file wins over the root: planet time 1 hour ago.
    let style_file = dir.path().join("s/planet-import-complete");
    fs::write(&style_file, b"").unwrap();
    set_mtime(&style_file, now - Duration::from_secs(3600));
    let planet = store.planet_import_complete("s").unwrap();
    assert_eq!(
        planet.source,
        PlanetTimeSource::StyleFile(style_file.clone())
    );
    assert!(store.stat("s", m).unwrap().is_dirty());
    // Another style still sees the root file.
    let other = store.write("t", m, &[b"x".to_vec()]).unwrap();
    set_mtime(&other, now - 4 * day);
    assert!(matches!(store.stat("t", m).unwrap(), TileState::Clean(_)));

    // A planet time before the touch marker disables expiry altogether,
    // touched tiles included.
    store.touch("s", m).unwrap();
    assert!(store.stat("s", m).unwrap().is_dirty());
    set_mtime(&style_file, UNIX_EPOCH + Duration::from_secs(300_000_000));
    assert!(matches!(store.stat("s", m).unwrap(), TileState::Clean(_)));
}
