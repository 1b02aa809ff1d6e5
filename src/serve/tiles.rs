//! Tile URLs and reading one tile out of its metatile.
//!
//! The URL grammar is mod_tile's: `/<style>/<z>/<x>/<y>.<ext>`, optionally
//! followed by `/status` or `/dirty`. Reading goes through
//! [`metatile::read_tile_at`]; what serve adds is its answer for broken
//! files (render them again) and [`TileCache`], which validates a cached
//! tile with one `stat`.

use crate::metatile::{self, MetatileError};
use crate::tile::Tile;
use bytes::Bytes;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::SystemTime;

/// What a tile URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The tile itself: `<z>/<x>/<y>.<ext>`.
    Tile,
    /// `…/status`: the metatile's freshness (mod_tile's, admin only).
    Status,
    /// `…/dirty`: mark the metatile dirty and queue its render (mod_tile's,
    /// admin only).
    Dirty,
}

/// A URL below a style: `<z>/<x>/<y>.<ext>[/op]` with numbers parsed but
/// not yet checked against the style's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileUrl<'a> {
    /// Zoom level; 0 is the whole world in one tile.
    pub z: u64,
    /// Column, from the west.
    pub x: u64,
    /// Row, from the north (XYZ, not TMS).
    pub y: u64,
    /// File extension, ASCII letters and digits, e.g. `png`.
    pub ext: &'a str,
    /// What is asked of the tile.
    pub op: Op,
}

/// Parses an unsigned decimal of at most 12 digits (larger numbers are out
/// of range anyway and parse as `u64::MAX`).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 12 {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// Parses the part of a path after `/<style>/`; `None` = malformed.
pub fn parse_tile_url(rest: &str) -> Option<TileUrl<'_>> {
    let mut parts = rest.split('/');
    let z = number(parts.next()?)?;
    let x = number(parts.next()?)?;
    let (y, ext) = parts.next()?.split_once('.')?;
    let y = number(y)?;
    if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let op = match parts.next() {
        None => Op::Tile,
        Some("status") => Op::Status,
        Some("dirty") => Op::Dirty,
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(TileUrl { z, x, y, ext, op })
}

/// One tile as read from the store.
#[derive(Debug)]
pub enum Read {
    /// No metatile file (or one that is not a metatile: it is rendered
    /// again, where mod_tile would answer 404 forever).
    Missing,
    /// The metatile exists.
    Found(Found),
}

/// A tile out of a metatile that exists.
#[derive(Debug, Clone)]
pub struct Found {
    /// The metatile's mtime (freshness, Last-Modified).
    pub mtime: SystemTime,
    /// The tile's bytes; `None` when its slot is empty.
    pub bytes: Option<Bytes>,
    /// Stored in a `METZ` file.
    pub gzip: bool,
}

/// Reads `tile` from the metatile at `path`. A file too short or with a
/// bad header or index reads as [`Read::Missing`] (logged).
pub fn read_tile(path: &str, tile: Tile) -> io::Result<Read> {
    match metatile::read_tile_at(Path::new(path), tile) {
        Ok(None) => Ok(Read::Missing),
        Ok(Some(found)) => Ok(Read::Found(Found {
            mtime: found.mtime,
            bytes: found.bytes.map(Bytes::from),
            gzip: found.gzip,
        })),
        Err(MetatileError::Io { source, .. }) => Err(source),
        Err(e) => {
            tracing::warn!("{e}; rendering it again");
            Ok(Read::Missing)
        }
    }
}

/// What one cached tile counts against the limit: its bytes, its key and
/// a rough allowance for the map entry itself.
fn entry_size(path: &str, bytes: &Option<Bytes>) -> usize {
    bytes.as_ref().map_or(0, Bytes::len) + path.len() + 64
}

/// Recently served tiles, so a hot tile costs one `stat` instead of
/// opening and reading its metatile. An entry is valid while the file
/// keeps its inode, size and mtime: a re-render replaces the file (new
/// inode), a touch changes the mtime, a delete makes `stat` fail. Bounded
/// by the bytes it holds; when full, half of the entries go (the hot
/// tiles come straight back).
pub struct TileCache {
    entries: Mutex<HashMap<(String, usize), Cached>>,
    held: AtomicUsize,
    limit: usize,
}

/// A cached tile and the file identity that keeps it valid.
struct Cached {
    ino: u64,
    len: u64,
    found: Found,
}

impl TileCache {
    /// A cache holding at most `limit` bytes of tiles (0: no caching).
    pub fn new(limit: usize) -> TileCache {
        TileCache {
            entries: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// [`read_tile`], answered from the cache when the file is unchanged.
    pub fn read(&self, path: &str, tile: Tile) -> io::Result<Read> {
        if self.limit == 0 {
            return read_tile(path, tile);
        }
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if metatile::is_missing(&e) => return Ok(Read::Missing),
            Err(e) => return Err(e),
        };
        let (ino, len, mtime) = (meta.ino(), meta.len(), meta.modified()?);
        let key = (path.to_string(), metatile::slot(tile));
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = entries.get(&key) {
                if (c.ino, c.len, c.found.mtime) == (ino, len, mtime) {
                    return Ok(Read::Found(c.found.clone()));
                }
            }
        }
        let read = read_tile(path, tile)?;
        if let Read::Found(found) = &read {
            // Only what was read from the file that was stat'ed: a render
            // that replaced it in between is picked up next time.
            if found.mtime == mtime {
                let size = entry_size(&key.0, &found.bytes);
                let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
                if self.held.load(Relaxed) + size > self.limit {
                    // Full: drop every other entry (in hash order, so
                    // effectively at random) rather than everything.
                    let mut keep = false;
                    let mut freed = 0;
                    entries.retain(|(path, _), c| {
                        keep = !keep;
                        if !keep {
                            freed += entry_size(path, &c.found.bytes);
                        }
                        keep
                    });
                    self.held
                        .fetch_sub(freed.min(self.held.load(Relaxed)), Relaxed);
                }
                let cached = Cached {
                    ino,
                    len,
                    found: found.clone(),
                };
                // A replaced entry (same key, bytes re-read) stops counting.
                let replaced = entries
                    .get(&key)
                    .map(|old| entry_size(&key.0, &old.found.bytes));
                entries.insert(key, cached);
                self.held.fetch_add(size, Relaxed);
                if let Some(old_size) = replaced {
                    self.held
                        .fetch_sub(old_size.min(self.held.load(Relaxed)), Relaxed);
                }
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metatile::TileStore;

    #[test]
    fn urls() {
        assert_eq!(
            parse_tile_url("12/2048/1361.png"),
            Some(TileUrl {
                z: 12,
                x: 2048,
                y: 1361,
                ext: "png",
                op: Op::Tile
            })
        );
        assert_eq!(parse_tile_url("1/0/1.png/dirty").unwrap().op, Op::Dirty);
        assert_eq!(parse_tile_url("1/0/1.png/status").unwrap().op, Op::Status);
        assert_eq!(
            parse_tile_url("1/0/99999999999999999.png").unwrap().y,
            u64::MAX
        );
        for bad in [
            "",
            "1",
            "1/2",
            "1/2/3",
            "1/2/3.",
            "a/2/3.png",
            "1/-2/3.png",
            "1/2/3.png/x",
            "1/2/3.png/status/x",
            "1/2/3.p/ng",
            "1/+2/3.png",
            "1//3.png",
            "1/2/3.png/",
        ] {
            assert_eq!(parse_tile_url(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_one_tile_and_tells_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = TileStore::new(dir.path());
        let tile = Tile::new(10, 517, 340).unwrap();
        let mut tiles = vec![Vec::new(); 64];
        tiles[metatile::slot(tile)] = b"five!".to_vec();
        let path = store.write("s", tile.metatile(), &tiles).unwrap();
        let path = path.to_str().unwrap();
        match read_tile(path, tile).unwrap() {
            Read::Found(found) => {
                assert_eq!(found.bytes.as_deref(), Some(&b"five!"[..]));
                assert!(!found.gzip);
            }
            other => panic!("{other:?}"),
        }
        let neighbour = Tile::new(10, 516, 340).unwrap();
        assert!(matches!(
            read_tile(path, neighbour).unwrap(),
            Read::Found(Found { bytes: None, .. })
        ));
        std::fs::write(path, b"META").unwrap();
        assert!(matches!(read_tile(path, tile).unwrap(), Read::Missing));
        let absent = dir.path().join("nothing/here.meta");
        assert!(matches!(
            read_tile(absent.to_str().unwrap(), tile).unwrap(),
            Read::Missing
        ));
    }

    #[test]
    fn the_cache_follows_rewrites_touches_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = TileStore::new(dir.path());
        let tile = Tile::new(12, 2070, 1360).unwrap();
        let write = |payload: &[u8]| {
            let mut tiles = vec![Vec::new(); 64];
            tiles[metatile::slot(tile)] = payload.to_vec();
            store.write("s", tile.metatile(), &tiles).unwrap()
        };
        let path = write(b"first");
        let path = path.to_str().unwrap();
        let cache = TileCache::new(1 << 20);
        let bytes = |read: Read| match read {
            Read::Found(found) => found.bytes.map(|b| b.to_vec()),
            Read::Missing => None,
        };
        for _ in 0..3 {
            assert_eq!(
                bytes(cache.read(path, tile).unwrap()).as_deref(),
                Some(&b"first"[..])
            );
        }
        // A render renames a new file over the old one.
        write(b"second");
        assert_eq!(
            bytes(cache.read(path, tile).unwrap()).as_deref(),
            Some(&b"second"[..])
        );
        // A touch changes only the mtime, which the answer carries.
        store.touch("s", tile.metatile()).unwrap();
        match cache.read(path, tile).unwrap() {
            Read::Found(found) => assert!(found.mtime < metatile::touched_before()),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(path).unwrap();
        assert!(matches!(cache.read(path, tile).unwrap(), Read::Missing));
        // A tiny cache makes room instead of growing.
        let small = TileCache::new(10);
        write(b"third");
        assert_eq!(
            bytes(small.read(path, tile).unwrap()).as_deref(),
            Some(&b"third"[..])
        );
        assert_eq!(
            bytes(small.read(path, tile).unwrap()).as_deref(),
            Some(&b"third"[..])
        );
    }
}
