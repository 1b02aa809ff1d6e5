//! Tile URLs and reading one tile out of its metatile.
//!
//! The URL grammar is mod_tile's: `/<style>/<z>/<x>/<y>.<ext>`, optionally
//! followed by `/status` or `/dirty`. Reading opens the metatile, takes
//! its mtime from the open descriptor (so freshness and bytes come from
//! the same file even when a render renames a new one over it), reads the
//! 532-byte header and index, then only the one tile's bytes.

use crate::metatile::{self, MetatileHeader, DATA_START, MAX_TILE_SIZE};
use crate::tile::{Tile, METATILE};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::SystemTime;

/// What a tile URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Tile,
    Status,
    Dirty,
}

/// A URL below a style: `<z>/<x>/<y>.<ext>[/op]` with numbers parsed but
/// not yet checked against the style's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileUrl<'a> {
    pub z: u64,
    pub x: u64,
    pub y: u64,
    pub ext: &'a str,
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

/// The metatile path of `tile` below `style_dir` (`<tile_dir>/<style>`),
/// as [`metatile::relative_path`] names it.
pub fn metatile_path(style_dir: &str, tile: Tile) -> String {
    let (mut x, mut y) = (tile.x & !(METATILE - 1), tile.y & !(METATILE - 1));
    let mut h = [0u32; 5];
    for hash in &mut h {
        *hash = ((x & 0xF) << 4) | (y & 0xF);
        x >>= 4;
        y >>= 4;
    }
    format!(
        "{style_dir}/{}/{}/{}/{}/{}/{}.meta",
        tile.z, h[4], h[3], h[2], h[1], h[0]
    )
}

/// One tile as read from the store.
#[derive(Debug)]
pub enum Read {
    /// No metatile file (or one that is not a metatile: it is rendered
    /// again, where mod_tile would answer 404 forever).
    Missing,
    Found {
        mtime: SystemTime,
        /// The tile's bytes; `None` when its slot is empty.
        bytes: Option<Vec<u8>>,
        gzip: bool,
    },
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Reads `tile` from the metatile at `path`. A file too short or with a
/// bad header or index reads as [`Read::Missing`] (logged).
pub fn read_tile(path: &str, tile: Tile) -> io::Result<Read> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if is_missing(&e) => return Ok(Read::Missing),
        Err(e) => return Err(e),
    };
    let mtime = file.metadata()?.modified()?;
    let mut head = [0u8; DATA_START];
    if let Err(e) = file.read_exact_at(&mut head, 0) {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            tracing::warn!(path, "metatile shorter than its header; rendering it again");
            return Ok(Read::Missing);
        }
        return Err(e);
    }
    let header = match MetatileHeader::parse(&head, Path::new(path)) {
        Ok(header) => header,
        Err(e) => {
            tracing::warn!("{e}; rendering it again");
            return Ok(Read::Missing);
        }
    };
    let (offset, size) = header.index[metatile::slot(tile)];
    if size == 0 {
        return Ok(Read::Found {
            mtime,
            bytes: None,
            gzip: header.gzip,
        });
    }
    if size as usize > MAX_TILE_SIZE {
        tracing::warn!(path, size, "tile larger than 1 MiB; rendering it again");
        return Ok(Read::Missing);
    }
    let mut bytes = vec![0u8; size as usize];
    if let Err(e) = file.read_exact_at(&mut bytes, u64::from(offset)) {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            tracing::warn!(
                path,
                offset,
                size,
                "tile runs past the end of its metatile; rendering it again"
            );
            return Ok(Read::Missing);
        }
        return Err(e);
    }
    Ok(Read::Found {
        mtime,
        bytes: Some(bytes),
        gzip: header.gzip,
    })
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
    fn paths_agree_with_the_store() {
        for (z, x, y) in [
            (0, 0, 0),
            (9, 297, 191),
            (18, 131010, 87170),
            (20, 1048575, 3),
        ] {
            let tile = Tile::new(z, x, y).unwrap();
            let ours = metatile_path("/t/s", tile);
            let store = TileStore::new("/t")
                .path("s", tile.metatile(), None)
                .unwrap();
            assert_eq!(Path::new(&ours), store);
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
            Read::Found { bytes, gzip, .. } => {
                assert_eq!(bytes.as_deref(), Some(&b"five!"[..]));
                assert!(!gzip);
            }
            other => panic!("{other:?}"),
        }
        let neighbour = Tile::new(10, 516, 340).unwrap();
        assert!(matches!(
            read_tile(path, neighbour).unwrap(),
            Read::Found { bytes: None, .. }
        ));
        std::fs::write(path, b"META").unwrap();
        assert!(matches!(read_tile(path, tile).unwrap(), Read::Missing));
        let absent = dir.path().join("nothing/here.meta");
        assert!(matches!(
            read_tile(absent.to_str().unwrap(), tile).unwrap(),
            Read::Missing
        ));
    }
}
