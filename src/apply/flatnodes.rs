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
//!   grows the file to `id + 1 + 1 048 576` slots;
//! - a file whose size is not a multiple of 8 is refused.
//!
//! Negative ids are never stored (osm2pgsql ignores them too).
//!
//! # Holes: sparse, and what osm2pgsql reads in them
//!
//! libosmium fills every slot a growth adds with the empty value. For a
//! planet-like id (1.2 × 10¹⁰) set in a new file that is 96 GB written to
//! disk, although the file holds a few locations. tilepipe keeps the
//! file's length exactly as libosmium computes it, but grows it with
//! `ftruncate` only, so the new part is a hole (zeros, no disk blocks),
//! and fills with empty values only the 4 KiB blocks (512 slots, one page
//! and one file-system block) it touches: the first time a slot of a
//! block is written, or read on behalf of a way or relation that refers to
//! it ([`FlatNodes::define`]), the whole block is written with empty
//! values first. A new file's first 8 MiB are written out in full, as
//! osm2pgsql writes them, so slot 0 is empty (osm2pgsql 2.1+ refuses a
//! file whose slot 0 holds a location) and a small extract's file is
//! byte for byte osm2pgsql's.
//!
//! Every block is therefore either all zeros (a hole: none of its 512 ids
//! was ever written or referred to) or fully defined. tilepipe reads a
//! slot of an all-zero block as empty. osm2pgsql, which knows nothing of
//! this, reads it as the location (0, 0); it reads such a slot only for a
//! node id that no node, way or relation of the database ever had, which
//! happens when one of its own diffs brings a way referring to a node
//! that the database never saw (an extract fed planet diffs): with
//! libosmium's filled file it would leave that node out of the way's
//! geometry, with tilepipe's holes it draws it at (0, 0). That is the
//! price of a 96 GB file taking megabytes; no layout can have both, as
//! the format has no "unwritten" state other than the empty value. The
//! converse: a location (0, 0) written into a block whose 511 other slots
//! are (0, 0) as well would read as empty here.
//!
//! # Crash safety
//!
//! Growing is one `ftruncate`, and a block is filled by one `pwrite` of
//! one page, which a killed process either did or did not do (the kernel
//! copies a page at a time and stops for a fatal signal only between
//! pages). Every change is thus idempotent and re-doing the same writes
//! after a crash, in any partial state, gives the same bytes as doing them
//! once.

use crate::osm::Location;
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes per slot.
const SLOT: u64 = 8;
/// Slots a new file starts with, and the headroom added when it grows
/// (libosmium's `mmap_vector_size_increment`).
const GROWTH: u64 = 1 << 20;
/// The coordinate libosmium writes for an undefined location.
const UNDEFINED: i32 = i32::MAX;
/// An empty slot, as the little-endian `u64` of its eight bytes.
const EMPTY: u64 = (UNDEFINED as u64) << 32 | UNDEFINED as u64;
/// Bytes per block: what is filled at once, a page and a file-system
/// block, so that a never-touched block stays a hole on disk.
const BLOCK: u64 = 4096;

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
    /// The configuration names a flat-nodes file, the import used none.
    #[error("import.flat_nodes names {configured}, but the database was imported without a flat-nodes file (its node locations are in the nodes table): remove import.flat_nodes or import again with it")]
    NotImportedWith {
        /// The file the configuration names.
        configured: PathBuf,
    },
    /// The configuration names another file than the import recorded.
    #[error("import.flat_nodes names {configured}, but the database was imported with the flat-nodes file {recorded}, which holds its node locations: name that file, or leave import.flat_nodes out")]
    OtherFile {
        /// The file the import recorded.
        recorded: PathBuf,
        /// The file the configuration names.
        configured: PathBuf,
    },
    /// An update needs the file the import wrote, and it is not there.
    #[error("flat-nodes file {path} does not exist: the database's node locations are in it (was it moved or deleted?)")]
    Missing {
        /// The file.
        path: PathBuf,
    },
}

/// Checks the flat-nodes file a configuration names (`configured`) against
/// the one the import recorded (`recorded`): updates use the recorded
/// file, and a configuration naming another one is an error rather than
/// silently ignored. Two paths to the same file (a symbolic link, a
/// relative path) are the same.
pub fn check_configured(
    recorded: Option<&Path>,
    configured: Option<&Path>,
) -> Result<(), FlatNodesError> {
    let Some(configured) = configured else {
        return Ok(());
    };
    let Some(recorded) = recorded else {
        return Err(FlatNodesError::NotImportedWith {
            configured: configured.to_path_buf(),
        });
    };
    if same_file(recorded, configured) {
        return Ok(());
    }
    Err(FlatNodesError::OtherFile {
        recorded: recorded.to_path_buf(),
        configured: configured.to_path_buf(),
    })
}

/// Whether two paths name one file: the same inode when both exist, else
/// the same absolute path.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => match (std::path::absolute(a), std::path::absolute(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        },
    }
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
    /// Creates `path` as osm2pgsql creates a flat-nodes file, 1 048 576
    /// empty slots, replacing what it held: an import starts from no
    /// nodes. (osm2pgsql 1.8 keeps an existing file's content, so nodes of
    /// an earlier import stay visible; tilepipe does not.)
    pub fn create(path: &Path) -> Result<FlatNodes, FlatNodesError> {
        let io = io_error(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(&io)?;
        fill_empty(&file, 0, GROWTH * SLOT).map_err(&io)?;
        Ok(FlatNodes {
            path: path.to_path_buf(),
            map: map(&file).map_err(&io)?,
            file,
        })
    }

    /// Opens an existing flat-nodes file for reading and writing (a file
    /// shorter than 1 048 576 slots is extended with empty ones, as
    /// libosmium does).
    pub fn open(path: &Path) -> Result<FlatNodes, FlatNodesError> {
        let io = io_error(path);
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FlatNodesError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(io(e)),
        };
        let size = file.metadata().map_err(&io)?.len();
        if size % SLOT != 0 {
            return Err(FlatNodesError::BadSize {
                path: path.to_path_buf(),
                size,
            });
        }
        // Written a page at a time from the current end: an interrupted
        // extension is completed by the next open.
        fill_empty(&file, size, GROWTH * SLOT).map_err(&io)?;
        Ok(FlatNodes {
            path: path.to_path_buf(),
            map: map(&file).map_err(&io)?,
            file,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of slots the file holds.
    pub fn slots(&self) -> u64 {
        self.map.len() as u64 / SLOT
    }

    /// The location of node `id`, `None` when the slot is empty, in a
    /// hole, beyond the end or the id negative.
    pub fn get(&self, id: i64) -> Option<Location> {
        let slot = u64::try_from(id).ok().filter(|&s| s < self.slots())?;
        match self.slot_value(slot) {
            EMPTY => None,
            0 if self.in_hole(slot) => None,
            value => Some(Location::from_fixed(
                value as u32 as i32,
                (value >> 32) as i32,
            )),
        }
    }

    /// Stores (or, with `None`, empties) the location of node `id`,
    /// growing the file as libosmium does when the id is beyond its end.
    /// Negative ids are ignored, and so is emptying a slot that is beyond
    /// the end or in a hole: it reads as empty already.
    pub fn set(&mut self, id: i64, location: Option<Location>) -> Result<(), FlatNodesError> {
        let Ok(slot) = u64::try_from(id) else {
            return Ok(());
        };
        let value = match location {
            Some(location) => {
                let (x, y) = location.to_fixed();
                (y as u32 as u64) << 32 | x as u32 as u64
            }
            None if slot >= self.slots() || self.in_hole(slot) => return Ok(()),
            None => EMPTY,
        };
        if slot >= self.slots() {
            self.grow(slot + 1 + GROWTH)?;
        }
        self.fill_hole(slot)?;
        let offset = (slot * SLOT) as usize;
        self.map[offset..offset + SLOT as usize].copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    /// Makes the slot of node `id` read as osm2pgsql expects (its location,
    /// or empty) if it is in a hole: called for the nodes a way or
    /// relation refers to, which osm2pgsql may look up (see the module
    /// documentation). Slots beyond the end read as empty to osm2pgsql
    /// too and are left alone.
    pub fn define(&mut self, id: i64) -> Result<(), FlatNodesError> {
        match u64::try_from(id) {
            Ok(slot) if slot < self.slots() => self.fill_hole(slot),
            _ => Ok(()),
        }
    }

    /// Writes every change to the file and waits until it is on disk: an
    /// apply calls this before its transaction commits.
    pub fn flush(&self) -> Result<(), FlatNodesError> {
        self.map.flush().map_err(io_error(&self.path))
    }

    /// Lets go of the pages of the file this process has mapped in: they
    /// stay in the kernel's page cache (written back as it sees fit;
    /// [`FlatNodes::flush`] still forces them to disk), and the next
    /// access maps them in again. An import calls this as it goes, so
    /// that the file, planet-sized, does not add up in its resident
    /// memory.
    pub fn release_resident_pages(&self) -> Result<(), FlatNodesError> {
        // SAFETY: the map is a shared mapping of a file: MADV_DONTNEED
        // only unmaps its pages, whose content (dirty or not) the page
        // cache keeps, and nothing borrows from the map across this call.
        unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        }
        .map_err(io_error(&self.path))
    }

    /// The eight bytes of a slot within the file, as a little-endian `u64`.
    fn slot_value(&self, slot: u64) -> u64 {
        let offset = (slot * SLOT) as usize;
        let bytes = &self.map[offset..offset + SLOT as usize];
        u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }

    /// The bytes of the block holding `slot` (the last block may be short).
    fn block_range(&self, slot: u64) -> std::ops::Range<usize> {
        let start = slot * SLOT / BLOCK * BLOCK;
        start as usize..((start + BLOCK) as usize).min(self.map.len())
    }

    /// Whether `slot` is in a block nothing was written to: all zeros.
    /// Only asked of a slot that reads zero, which a defined slot does
    /// only for a node at (0, 0).
    fn in_hole(&self, slot: u64) -> bool {
        self.slot_value(slot) == 0
            && self.map[self.block_range(slot)]
                .chunks_exact(SLOT as usize)
                .all(|s| s == [0; SLOT as usize])
    }

    /// Fills the block of `slot` with empty values if it is a hole, with
    /// one `pwrite` of one page (see "Crash safety").
    fn fill_hole(&mut self, slot: u64) -> Result<(), FlatNodesError> {
        if !self.in_hole(slot) {
            return Ok(());
        }
        let range = self.block_range(slot);
        let empty = empty_slots(range.len());
        self.file
            .write_all_at(&empty, range.start as u64)
            .map_err(io_error(&self.path))
    }

    /// Grows the file to `slots` slots. The new part is a hole (see the
    /// module documentation); the mapping is renewed to cover it.
    fn grow(&mut self, slots: u64) -> Result<(), FlatNodesError> {
        let io = io_error(&self.path);
        self.file.set_len(slots * SLOT).map_err(&io)?;
        self.map = map(&self.file).map_err(io_error(&self.path))?;
        Ok(())
    }
}

/// `len` bytes of empty slots.
fn empty_slots(len: usize) -> Vec<u8> {
    EMPTY
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Writes empty slots from byte `from` up to byte `to` (nothing when the
/// file is that long already), one page-aligned piece at a time, so that
/// the file always ends on a whole slot and a write cut short by a crash
/// is finished by writing again from the new end.
fn fill_empty(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let page = empty_slots(BLOCK as usize);
    let mut offset = from;
    while offset < to {
        let end = ((offset / BLOCK + 1) * BLOCK).min(to);
        file.write_all_at(&page[..(end - offset) as usize], offset)?;
        offset = end;
    }
    Ok(())
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> FlatNodesError + '_ {
    move |source| FlatNodesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Maps the whole file for reading and writing.
fn map(file: &File) -> std::io::Result<MmapMut> {
    // SAFETY: the mapping is only read and written through its FlatNodes,
    // eight bytes at a time, copied out and in (no reference into it
    // outlives a call). Only another process could change the file
    // meanwhile: osm2pgsql, or a second tilepipe updating the same
    // database, which `run` and `catchup` exclude with the instance lock;
    // running both on one file is not supported. tilepipe itself never
    // shortens a mapped file (`create` truncates before mapping).
    unsafe { MmapMut::map_mut(file) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn location(lon: i32, lat: i32) -> Location {
        Location::from_fixed(lon, lat)
    }

    /// Bytes the file takes on disk.
    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn new_file_has_osm2pgsqls_size_and_empty_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let nodes = FlatNodes::create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8_388_608);
        assert_eq!(nodes.get(0), None);
        assert_eq!(nodes.get(1), None);
        assert_eq!(nodes.get(-5), None);
        assert_eq!(nodes.get(1 << 40), None);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes
            .chunks_exact(8)
            .all(|s| s == [0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f]));
    }

    #[test]
    fn create_replaces_open_keeps_and_refuses_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let err = FlatNodes::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("nodes.bin"),
            "{err}"
        );
        let mut nodes = FlatNodes::create(&path).unwrap();
        nodes.set(7, Some(location(1, 2))).unwrap();
        nodes.flush().unwrap();
        drop(nodes);
        assert_eq!(FlatNodes::open(&path).unwrap().get(7), Some(location(1, 2)));
        assert_eq!(FlatNodes::create(&path).unwrap().get(7), None);
    }

    #[test]
    fn slots_are_osm2pgsqls_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let mut nodes = FlatNodes::create(&path).unwrap();
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
        // Negative coordinates and (0, 0) are locations like any other.
        nodes.set(2, Some(location(-3, -4))).unwrap();
        nodes.set(3, Some(location(0, 0))).unwrap();
        assert_eq!(nodes.get(2), Some(location(-3, -4)));
        assert_eq!(nodes.get(3), Some(location(0, 0)));
    }

    #[test]
    fn grows_like_libosmium_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let mut nodes = FlatNodes::create(&path).unwrap();
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
    fn growth_leaves_holes_and_touched_blocks_are_filled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let mut nodes = FlatNodes::create(&path).unwrap();
        let id = 5_000_000;
        nodes.set(id, Some(location(0, 0))).unwrap();
        nodes.flush().unwrap();
        // The first 8 MiB and one block: the rest of the 48 MB is a hole.
        assert!(
            allocated(&path) <= 8_388_608 + 2 * BLOCK,
            "{}",
            allocated(&path)
        );
        let bytes = std::fs::read(&path).unwrap();
        let block = (id as usize * 8) / 4096 * 4096;
        let empty = [0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f];
        for (i, slot) in bytes[block..block + 4096].chunks_exact(8).enumerate() {
            let expected: &[u8] = if block + i * 8 == id as usize * 8 {
                &[0; 8]
            } else {
                &empty
            };
            assert_eq!(slot, expected, "slot {i} of the written block");
        }
        assert!(bytes[block - 4096..block].iter().all(|&b| b == 0));
        assert!(bytes[block + 4096..].iter().all(|&b| b == 0));
        // A location (0, 0) is one; a hole reads empty.
        assert_eq!(nodes.get(id), Some(location(0, 0)));
        assert_eq!(nodes.get(id + 1000), None);
        // Emptying a slot in a hole keeps the hole; defining fills it.
        nodes.set(id + 1000, None).unwrap();
        assert!(nodes.in_hole(id as u64 + 1000));
        nodes.define(id + 1000).unwrap();
        assert!(!nodes.in_hole(id as u64 + 1000));
        assert_eq!(nodes.get(id + 1000), None);
        let bytes = std::fs::read(&path).unwrap();
        let at = (id as usize + 1000) * 8;
        assert_eq!(&bytes[at..at + 8], &empty);
        // Defining again, or defining beyond the end, changes nothing.
        nodes.define(id + 1000).unwrap();
        nodes.define(1 << 40).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn planet_like_ids_keep_the_file_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let mut nodes = FlatNodes::create(&path).unwrap();
        let first = 12_000_000_000;
        for id in first..first + 2000 {
            nodes
                .set(id, Some(location((id % 1000) as i32, 7)))
                .unwrap();
        }
        nodes.flush().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        // The first id grew the file; the others fit in its headroom.
        assert_eq!(len, (first as u64 + 1 + GROWTH) * 8);
        assert!(
            allocated(&path) < 9 << 20,
            "{} bytes on disk",
            allocated(&path)
        );
        assert_eq!(nodes.get(first + 1234), Some(location(1234 % 1000, 7)));
        assert_eq!(nodes.get(first - 1), None);
        assert_eq!(nodes.get(6_000_000_000), None);
    }

    #[test]
    fn open_extends_a_short_file_with_empty_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        let mut start = empty_slots(24);
        start[8..16].copy_from_slice(&[0x66, 0x2a, 0xb1, 0x05, 0x69, 0xdf, 0xfe, 0x1b]);
        std::fs::write(&path, &start).unwrap();
        let nodes = FlatNodes::open(&path).unwrap();
        assert_eq!(nodes.slots(), GROWTH);
        assert_eq!(nodes.get(1), Some(location(95_496_806, 469_688_169)));
        assert_eq!(nodes.get(3), None);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[24..]
            .chunks_exact(8)
            .all(|s| s == &empty_slots(8)[..]));
    }

    #[test]
    fn a_configured_file_must_be_the_recorded_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.bin");
        std::fs::write(&path, []).unwrap();
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let other = dir.path().join("other.bin");
        assert!(check_configured(Some(&path), None).is_ok());
        assert!(check_configured(None, None).is_ok());
        assert!(check_configured(Some(&path), Some(&path)).is_ok());
        assert!(check_configured(Some(&path), Some(&link)).is_ok());
        let err = check_configured(Some(&path), Some(&other))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("other.bin") && err.contains("imported with"),
            "{err}"
        );
        let err = check_configured(None, Some(&path)).unwrap_err().to_string();
        assert!(err.contains("without a flat-nodes file"), "{err}");
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
