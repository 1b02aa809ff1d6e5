//! osm2pgsql's flat-nodes file (`--flat-nodes FILE`): node locations in a
//! dense array indexed by node id, memory-mapped, so a planet's eight
//! billion locations live in the page cache instead of a table.
//!
//! The format is libosmium's `DenseFileArray` as osm2pgsql 1.8 uses it
//! (`node-persistent-cache.cpp`; libosmium `index/detail/mmap_vector_*`,
//! `index/detail/vector_map.hpp`), described in `specs` terms:
//! - no header; the slot of node `id` is at byte offset `8 × id`;
//! - a slot is two native-endian (little-endian on x86-64) `i32`: x =
//!   lon × 10⁷, then y = lat × 10⁷;
//! - an empty slot (no such node, or deleted) is x = y = `i32::MAX`
//!   (libosmium's undefined `Location`);
//! - a new file holds 1 048 576 empty slots; setting an id beyond the end
//!   grows the file to `id + 1 + 1 048 576` slots, the new ones empty;
//! - a file whose size is not a multiple of 8 is refused.
//!
//! Negative ids are never stored (osm2pgsql ignores them too).

use crate::osm::Location;
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Bytes per slot.
const SLOT: u64 = 8;
/// Slots a new file starts with, and the headroom added when it grows
/// (libosmium's `mmap_vector_size_increment`).
const GROWTH: u64 = 1 << 20;
/// The coordinate libosmium writes for an undefined location.
const UNDEFINED: i32 = i32::MAX;

/// A flat-nodes file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FlatNodesError {
    /// Opening, growing, mapping or flushing the file failed.
    #[error("flat-nodes file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file's size is not a whole number of slots.
    #[error("flat-nodes file {path}: its size, {size} bytes, is not a multiple of 8: not an osm2pgsql flat-nodes file")]
    BadSize {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
}

/// An open flat-nodes file.
pub struct FlatNodes {
    path: PathBuf,
    file: File,
    map: MmapMut,
}

impl std::fmt::Debug for FlatNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatNodes")
            .field("path", &self.path)
            .field("slots", &self.slots())
            .finish()
    }
}

impl FlatNodes {
    /// Opens `path` for reading and writing, creating it (with 1 048 576
    /// empty slots, as osm2pgsql does) when it does not exist.
    pub fn open(path: &Path) -> Result<FlatNodes, FlatNodesError> {
        let io = |source| FlatNodesError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size % SLOT != 0 {
            return Err(FlatNodesError::BadSize {
                path: path.to_path_buf(),
                size,
            });
        }
        let mut nodes = FlatNodes {
            path: path.to_path_buf(),
            map: map(&file).map_err(io)?,
            file,
        };
        if size < GROWTH * SLOT {
            nodes.grow(GROWTH)?;
        }
        Ok(nodes)
    }

    /// The number of slots the file holds.
    pub fn slots(&self) -> u64 {
        self.map.len() as u64 / SLOT
    }

    /// The location of node `id`, `None` when the slot is empty, beyond
    /// the end or the id negative.
    pub fn get(&self, id: i64) -> Option<Location> {
        let slot = u64::try_from(id).ok().filter(|&s| s < self.slots())?;
        let offset = (slot * SLOT) as usize;
        let bytes = &self.map[offset..offset + SLOT as usize];
        let x = i32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let y = i32::from_le_bytes(bytes[4..].try_into().expect("4 bytes"));
        (x != UNDEFINED || y != UNDEFINED).then(|| Location::from_fixed(x, y))
    }

    /// Stores (or, with `None`, empties) the location of node `id`,
    /// growing the file as libosmium does when the id is beyond its end.
    /// Negative ids are ignored.
    pub fn set(&mut self, id: i64, location: Option<Location>) -> Result<(), FlatNodesError> {
        let Ok(slot) = u64::try_from(id) else {
            return Ok(());
        };
        if slot >= self.slots() {
            if location.is_none() {
                return Ok(());
            }
            self.grow(slot + 1 + GROWTH)?;
        }
        let (x, y) = location.map_or((UNDEFINED, UNDEFINED), Location::to_fixed);
        let offset = (slot * SLOT) as usize;
        self.map[offset..offset + 4].copy_from_slice(&x.to_le_bytes());
        self.map[offset + 4..offset + 8].copy_from_slice(&y.to_le_bytes());
        Ok(())
    }

    /// Writes every change to the file and waits until it is on disk: an
    /// apply calls this before its transaction commits.
    pub fn flush(&self) -> Result<(), FlatNodesError> {
        self.map.flush().map_err(|source| FlatNodesError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Grows the file to `slots` slots, the new ones empty.
    fn grow(&mut self, slots: u64) -> Result<(), FlatNodesError> {
        let io = |source| FlatNodesError::Io {
            path: self.path.clone(),
            source,
        };
        let old = self.map.len();
        self.map.flush().map_err(io)?;
        self.file.set_len(slots * SLOT).map_err(io)?;
        self.map = map(&self.file).map_err(io)?;
        let mut empty = [0u8; SLOT as usize];
        empty[..4].copy_from_slice(&UNDEFINED.to_le_bytes());
        empty[4..].copy_from_slice(&UNDEFINED.to_le_bytes());
        for chunk in self.map[old..].chunks_exact_mut(SLOT as usize) {
            chunk.copy_from_slice(&empty);
        }
        Ok(())
    }
}

/// Maps the whole file for reading and writing.
fn map(file: &File) -> std::io::Result<MmapMut> {
    // SAFETY: the mapping is private to this process's FlatNodes, which
    // owns the file handle; a concurrent writer of the same file (another
    // tilepipe or osm2pgsql) is excluded by the instance lock that every
    // writer of the database takes.
    unsafe { MmapMut::map_mut(file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(lon: i32, lat: i32) -> Location {
        Location::from_fixed(lon, lat)
    }

    #[test]
    fn new_file_has_osm2pgsqls_size_and_empty_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let nodes = FlatNodes::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8_388_608);
        assert_eq!(nodes.get(1), None);
        assert_eq!(nodes.get(-5), None);
        assert_eq!(nodes.get(1 << 40), None);
    }

    #[test]
    fn slots_are_osm2pgsqls_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let mut nodes = FlatNodes::open(&path).unwrap();
        // Liechtenstein's node 1, as osm2pgsql 1.8 writes it.
        nodes
            .set(1, Some(location(95_496_806, 469_688_169)))
            .unwrap();
        nodes.flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            &bytes[8..16],
            &[0x66, 0x2a, 0xb1, 0x05, 0x69, 0xdf, 0xfe, 0x1b]
        );
        assert_eq!(
            &bytes[16..24],
            &[0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f]
        );
        assert_eq!(nodes.get(1), Some(location(95_496_806, 469_688_169)));
        nodes.set(1, None).unwrap();
        assert_eq!(nodes.get(1), None);
    }

    #[test]
    fn grows_like_libosmium_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let mut nodes = FlatNodes::open(&path).unwrap();
        nodes.set(5_000_000, Some(location(1, 2))).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 48_388_616);
        assert_eq!(nodes.get(4_999_999), None);
        assert_eq!(nodes.get(6_048_576), None);
        nodes.set(7_000_000, Some(location(-3, -4))).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64_388_616);
        // Deleting beyond the end does not grow the file.
        nodes.set(9_000_000_000, None).unwrap();
        nodes.flush().unwrap();
        drop(nodes);
        let reopened = FlatNodes::open(&path).unwrap();
        assert_eq!(reopened.get(5_000_000), Some(location(1, 2)));
        assert_eq!(reopened.get(7_000_000), Some(location(-3, -4)));
        assert_eq!(reopened.slots(), 64_388_616 / 8);
    }

    #[test]
    fn refuses_a_file_that_is_not_whole_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        std::fs::write(&path, [0u8; 12]).unwrap();
        let err = FlatNodes::open(&path).unwrap_err().to_string();
        assert!(err.contains("not a multiple of 8"), "{err}");
    }
}
