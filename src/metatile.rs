//! mod_tile's metatile files and the tile directory that holds them.
//!
//! A metatile file stores the 8×8 tiles of one [`Metatile`] (fewer at
//! z0–z2) behind a fixed 532-byte header and index; renderd writes them,
//! mod_tile serves from them, and `render_expired` touches or deletes them.
//! Everything here is byte-compatible with mod_tile 0.6–0.8:
//!
//! - file layout (all integers little-endian `i32`): magic `META` (or `METZ`
//!   when every tile payload is a gzip stream), count 64, origin x, origin y,
//!   z, then 64 `{offset, size}` index entries in x-major slot order
//!   (`(x & 7) * 8 + (y & 7)`), then the tile data; offsets count from the
//!   start of the file and unrendered slots have size 0;
//! - paths: `<dir>/<style>/<z>/<h4>/<h3>/<h2>/<h1>/<h0>.meta`, each `h` one
//!   byte built from a nibble of x and a nibble of y (see [`relative_path`],
//!   and [`tile_path`] for serve's per-request use);
//! - reading: [`read_tile_at`] reads one tile with one open and two
//!   positioned reads (header and index, then the tile); [`TileStore`] and
//!   serve both read through it;
//! - freshness: a metatile is dirty when its mtime is older than the
//!   "planet time" (see [`TileStore::planet_import_complete`]);
//! - touching marks a metatile dirty by moving its mtime into the past.
//!   mod_tile subtracts 20 years, which breaks once tiles rendered in 2026
//!   land in 2006 (> 2005) and are moved again on every touch; tilepipe sets
//!   a fixed marker time instead ([`TOUCHED_MTIME_SECS`]) and treats anything
//!   older than [`TOUCHED_BEFORE_SECS`] as already touched.

use crate::tile::{Metatile, Tile, MAX_ZOOM, METATILE};
use std::fs::{self, File, FileTimes};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Magic of a metatile whose tiles are stored as they are (PNG, …).
pub const MAGIC_PLAIN: [u8; 4] = *b"META";
/// Magic of a metatile whose tile payloads are gzip streams (mod_tile serves
/// them with `Content-Encoding: gzip`; renderd never writes them).
pub const MAGIC_GZIP: [u8; 4] = *b"METZ";
/// Index entries in every metatile file, rendered or not.
pub const SLOTS: usize = (METATILE * METATILE) as usize;
/// Magic, count, x, y, z.
pub const HEADER_LEN: usize = 20;
/// Header and index; the first tile starts here.
pub const DATA_START: usize = HEADER_LEN + SLOTS * 8;
/// mod_tile refuses to serve larger tiles; readers here refuse them too.
pub const MAX_TILE_SIZE: usize = 1 << 20;
/// Longest style name or options string mod_tile and renderd accept.
pub const MAX_NAME_LEN: usize = 40;
/// Name of the file whose mtime is the planet time.
pub const PLANET_IMPORT_COMPLETE: &str = "planet-import-complete";
/// Planet time without a `planet-import-complete` file: now minus this.
pub const DEFAULT_PLANET_AGE: Duration = Duration::from_secs(3 * 24 * 3600);
/// The mtime [`TileStore::touch`] gives a metatile, in seconds since the
/// epoch: 1980-01-01T00:00:00Z.
pub const TOUCHED_MTIME_SECS: u64 = 315_532_800;
/// Metatiles with an mtime before this (2000-01-01T00:00:00Z) count as
/// touched.
pub const TOUCHED_BEFORE_SECS: u64 = 946_684_800;

/// [`TOUCHED_MTIME_SECS`] as a time.
pub fn touched_mtime() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(TOUCHED_MTIME_SECS)
}

/// [`TOUCHED_BEFORE_SECS`] as a time.
pub fn touched_before() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(TOUCHED_BEFORE_SECS)
}

/// Why a metatile could not be found, read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetatileError {
    /// A file system call on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory acted on.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is not a valid metatile (bad magic, count or index).
    #[error("{path}: not a metatile: {reason}")]
    Format {
        /// The file read.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The style name given, unusable as a directory name.
    #[error("invalid style name {0:?} (1 to 40 characters, no '/', not '.' or '..')")]
    Style(String),
    /// The options given (a parameterised variant's file name part).
    #[error("invalid style options {0:?} (1 to 40 characters, no '/', not '.' or '..')")]
    Options(String),
    /// The metatile given, outside the world or above [`MAX_ZOOM`].
    #[error("{0} is not a valid metatile (zoom at most {max}, x and y inside the world)", max = MAX_ZOOM)]
    Address(Metatile),
    /// The number of tiles given, above [`SLOTS`].
    #[error("{0} tiles given for one metatile; at most {max}", max = SLOTS)]
    TooManyTiles(usize),
    /// The file size the tiles would make, past 4 GiB.
    #[error("metatile data of {0} bytes does not fit the 32-bit offsets of the format")]
    TooLarge(usize),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> MetatileError + '_ {
    move |source| MetatileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Index slot of a tile inside its metatile: x-major, so slot 1 is the tile
/// below the origin.
pub fn slot(tile: Tile) -> usize {
    ((tile.x & (METATILE - 1)) * METATILE + (tile.y & (METATILE - 1))) as usize
}

/// The tile stored in `slot` of `metatile`.
pub fn slot_tile(metatile: Metatile, slot: usize) -> Tile {
    let slot = slot as u32;
    Tile {
        z: metatile.z,
        x: metatile.x + slot / METATILE,
        y: metatile.y + slot % METATILE,
    }
}

fn check_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.contains(['/', '\0'])
        && name != "."
        && name != ".."
}

fn check_metatile(metatile: Metatile) -> Result<Metatile, MetatileError> {
    if metatile.z > MAX_ZOOM
        || u64::from(metatile.x) >= 1u64 << metatile.z
        || u64::from(metatile.y) >= 1u64 << metatile.z
    {
        return Err(MetatileError::Address(metatile));
    }
    // Accept any tile of the metatile as its name, as mod_tile does.
    Ok(Metatile {
        z: metatile.z,
        x: metatile.x & !(METATILE - 1),
        y: metatile.y & !(METATILE - 1),
    })
}

/// The path of a metatile below the tile directory:
/// `<style>/<z>/<h4>/<h3>/<h2>/<h1>/<h0>.meta` (or `<h0>.<options>.meta`),
/// where `h[i]` packs nibble i of the origin's x (high half) and y (low
/// half). Only 20 bits of x and y fit, hence zoom ≤ 20.
pub fn relative_path(
    style: &str,
    metatile: Metatile,
    options: Option<&str>,
) -> Result<PathBuf, MetatileError> {
    if !check_name(style) {
        return Err(MetatileError::Style(style.to_string()));
    }
    let metatile = check_metatile(metatile)?;
    if let Some(options) = options.filter(|options| !check_name(options)) {
        return Err(MetatileError::Options(options.to_string()));
    }
    Ok(PathBuf::from(hashed_path(style, metatile, options)))
}

/// The metatile file of `tile` below `style_dir` (`<tile_dir>/<style>`),
/// as [`relative_path`] names it, built in one allocation: serve calls
/// this on every request, with a tile already checked by [`Tile::new`].
pub fn tile_path(style_dir: &str, tile: Tile) -> String {
    hashed_path(style_dir, tile.metatile(), None)
}

/// `<prefix>/<z>/<h4>/<h3>/<h2>/<h1>/<h0>[.<options>].meta` for an aligned
/// metatile inside the world; the one place the hashing lives.
fn hashed_path(prefix: &str, metatile: Metatile, options: Option<&str>) -> String {
    let (mut x, mut y) = (metatile.x, metatile.y);
    let mut h = [0u32; 5];
    for hash in &mut h {
        *hash = ((x & 0xF) << 4) | (y & 0xF);
        x >>= 4;
        y >>= 4;
    }
    let (dot, options) = options.map_or(("", ""), |options| (".", options));
    format!(
        "{prefix}/{}/{}/{}/{}/{}/{}{dot}{options}.meta",
        metatile.z, h[4], h[3], h[2], h[1], h[0]
    )
}

/// Encodes a metatile file: header, index and the tiles in slot order.
/// `tiles[slot]` is the payload of that slot (see [`slot`]); empty or
/// absent entries are unrendered tiles (size 0, offset = where the next
/// tile would start, as renderd writes them). With `gzip` the magic is
/// `METZ` and the payloads must already be gzip streams.
pub fn encode(metatile: Metatile, tiles: &[Vec<u8>], gzip: bool) -> Result<Vec<u8>, MetatileError> {
    if tiles.len() > SLOTS {
        return Err(MetatileError::TooManyTiles(tiles.len()));
    }
    let total = DATA_START + tiles.iter().map(Vec::len).sum::<usize>();
    if total > i32::MAX as usize {
        return Err(MetatileError::TooLarge(total));
    }
    let metatile = check_metatile(metatile)?;
    let mut bytes = Vec::with_capacity(total);
    bytes.extend_from_slice(if gzip { &MAGIC_GZIP } else { &MAGIC_PLAIN });
    for field in [
        SLOTS as i32,
        metatile.x as i32,
        metatile.y as i32,
        i32::from(metatile.z),
    ] {
        bytes.extend_from_slice(&field.to_le_bytes());
    }
    let mut offset = DATA_START;
    for slot in 0..SLOTS {
        let size = tiles.get(slot).map_or(0, Vec::len);
        bytes.extend_from_slice(&(offset as i32).to_le_bytes());
        bytes.extend_from_slice(&(size as i32).to_le_bytes());
        offset += size;
    }
    for tile in tiles {
        bytes.extend_from_slice(tile);
    }
    Ok(bytes)
}

/// The decoded header and index of a metatile file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetatileHeader {
    /// `METZ`: payloads are gzip streams.
    pub gzip: bool,
    /// Origin as written in the header (readers do not rely on it): the
    /// column of the top-left tile.
    pub x: i32,
    /// The row of the top-left tile.
    pub y: i32,
    /// The zoom.
    pub z: i32,
    /// `(offset from file start, size)` per slot.
    pub index: [(u32, u32); SLOTS],
}

impl MetatileHeader {
    /// Parses the first [`DATA_START`] bytes of a metatile file. `what`
    /// names the file in errors.
    pub fn parse(bytes: &[u8], what: &Path) -> Result<MetatileHeader, MetatileError> {
        let format = |reason: String| MetatileError::Format {
            path: what.to_path_buf(),
            reason,
        };
        if bytes.len() < DATA_START {
            return Err(format(format!(
                "{} bytes, shorter than the {DATA_START}-byte header and index",
                bytes.len()
            )));
        }
        let int = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let gzip = match &bytes[..4] {
            magic if magic == MAGIC_PLAIN => false,
            magic if magic == MAGIC_GZIP => true,
            magic => {
                return Err(format(format!(
                    "magic {:?} is neither META nor METZ",
                    magic.escape_ascii().to_string()
                )))
            }
        };
        let count = int(4);
        if count != SLOTS as i32 {
            return Err(format(format!("tile count {count}, expected {SLOTS}")));
        }
        let mut index = [(0u32, 0u32); SLOTS];
        for (slot, entry) in index.iter_mut().enumerate() {
            let at = HEADER_LEN + slot * 8;
            let (offset, size) = (int(at), int(at + 4));
            if offset < 0 || size < 0 {
                return Err(format(format!(
                    "slot {slot} has offset {offset} and size {size}"
                )));
            }
            *entry = (offset as u32, size as u32);
        }
        Ok(MetatileHeader {
            gzip,
            x: int(8),
            y: int(12),
            z: int(16),
            index,
        })
    }
}

/// One tile read from a metatile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTile {
    /// The payload as stored (a gzip stream when `gzip`).
    pub bytes: Vec<u8>,
    /// Stored in a `METZ` file: serve with `Content-Encoding: gzip`.
    pub gzip: bool,
}

/// One tile as [`read_tile_at`] finds it in its metatile file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTile {
    /// The file's mtime, taken from the descriptor the bytes come from, so
    /// freshness and bytes agree even when a render renames a new file
    /// over the path in between.
    pub mtime: SystemTime,
    /// The payload as stored; `None` when the tile's slot is empty.
    pub bytes: Option<Vec<u8>>,
    /// Stored in a `METZ` file: serve with `Content-Encoding: gzip`.
    pub gzip: bool,
}

/// Reads `tile` out of the metatile file at `path`: one open, one read of
/// the header and index, one read of the tile's bytes (positioned reads,
/// so nothing is read that is not needed). `None` when there is no such
/// file. A file too short, with a bad header or index, a tile over
/// [`MAX_TILE_SIZE`] or one running past the end is a
/// [`MetatileError::Format`].
pub fn read_tile_at(path: &Path, tile: Tile) -> Result<Option<FileTile>, MetatileError> {
    let Some(file) = open_existing(path)? else {
        return Ok(None);
    };
    let mtime = file
        .metadata()
        .and_then(|metadata| metadata.modified())
        .map_err(io_error(path))?;
    let header = read_header(&file, path)?;
    let (offset, size) = header.index[slot(tile)];
    let gzip = header.gzip;
    if size == 0 {
        return Ok(Some(FileTile {
            mtime,
            bytes: None,
            gzip,
        }));
    }
    let format = |reason: String| MetatileError::Format {
        path: path.to_path_buf(),
        reason,
    };
    if size as usize > MAX_TILE_SIZE {
        return Err(format(format!(
            "tile {tile} has {size} bytes, more than the {MAX_TILE_SIZE} allowed"
        )));
    }
    let mut bytes = vec![0; size as usize];
    file.read_exact_at(&mut bytes, u64::from(offset))
        .map_err(|source| match source.kind() {
            io::ErrorKind::UnexpectedEof => format(format!(
                "tile {tile} at offset {offset}, size {size} runs past the end"
            )),
            _ => io_error(path)(source),
        })?;
    Ok(Some(FileTile {
        mtime,
        bytes: Some(bytes),
        gzip,
    }))
}

/// Times and size of a metatile file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Last modification: when it was rendered, or touched to mark it dirty.
    pub mtime: SystemTime,
    /// Last access, which cache purgers go by.
    pub atime: SystemTime,
}

/// Freshness of a metatile.
///
/// Dirty means `mtime < planet time` (mod_tile's "expired"), where the
/// planet time comes from [`TileStore::planet_import_complete`]. `touched`
/// tells whether the mtime is before [`TOUCHED_BEFORE_SECS`], i.e. the dirtiness
/// comes from a touch rather than from age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileState {
    /// No file.
    Missing,
    /// Rendered at or after the planet time.
    Clean(FileStat),
    /// Older than the planet time: served, but due for a re-render.
    Dirty {
        /// The file's times and size.
        stat: FileStat,
        /// Dirty because it was touched, not because of its age.
        touched: bool,
    },
}

impl TileState {
    /// Whether there is a file, clean or dirty.
    pub fn exists(&self) -> bool {
        !matches!(self, TileState::Missing)
    }

    /// Whether the file is older than the planet time.
    pub fn is_dirty(&self) -> bool {
        matches!(self, TileState::Dirty { .. })
    }

    /// The file's times and size, when there is one.
    pub fn file(&self) -> Option<&FileStat> {
        match self {
            TileState::Missing => None,
            TileState::Clean(stat) | TileState::Dirty { stat, .. } => Some(stat),
        }
    }
}

/// Where the planet time came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanetTimeSource {
    /// `<dir>/<style>/planet-import-complete`.
    StyleFile(PathBuf),
    /// `<dir>/planet-import-complete`.
    RootFile(PathBuf),
    /// Neither file exists: now minus [`DEFAULT_PLANET_AGE`].
    Default,
}

/// The time before which metatiles are dirty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanetTime {
    /// Metatiles modified before this are dirty.
    pub time: SystemTime,
    /// The file it was read from, or the default.
    pub source: PlanetTimeSource,
}

/// What [`TileStore::touch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchOutcome {
    /// No such metatile; nothing done.
    Missing,
    /// The mtime was set to [`TOUCHED_MTIME_SECS`].
    Touched,
    /// The mtime was already before [`TOUCHED_BEFORE_SECS`]; left as it was.
    AlreadyTouched,
}

/// A mod_tile tile directory (`tile_dir` in renderd.conf, `ModTileTileDir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileStore {
    dir: PathBuf,
}

/// Makes temporary names unique among the writers of one process; the
/// process id separates processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TileStore {
    /// The store rooted at `dir`; each style is a directory below it.
    /// Nothing is read or created yet.
    pub fn new(dir: impl Into<PathBuf>) -> TileStore {
        TileStore { dir: dir.into() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of a metatile; `options` selects a parameterised variant
    /// (`<h0>.<options>.meta`).
    pub fn path(
        &self,
        style: &str,
        metatile: Metatile,
        options: Option<&str>,
    ) -> Result<PathBuf, MetatileError> {
        Ok(self.dir.join(relative_path(style, metatile, options)?))
    }

    /// Writes a plain (`META`) metatile; see [`encode`] for `tiles`.
    /// Returns the path written.
    pub fn write(
        &self,
        style: &str,
        metatile: Metatile,
        tiles: &[Vec<u8>],
    ) -> Result<PathBuf, MetatileError> {
        self.write_with(style, metatile, None, tiles, false)
    }

    /// Writes a metatile atomically: the bytes go to a temporary file in the
    /// same directory, which is then renamed over the final name, so readers
    /// see the old file or the new one, never a partial one. Parent
    /// directories are created. The new mtime (now) makes the metatile clean.
    pub fn write_with(
        &self,
        style: &str,
        metatile: Metatile,
        options: Option<&str>,
        tiles: &[Vec<u8>],
        gzip: bool,
    ) -> Result<PathBuf, MetatileError> {
        let path = self.path(style, metatile, options)?;
        let bytes = encode(metatile, tiles, gzip)?;
        let dir = path.parent().expect("a metatile path has a parent");
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut temp_name = path.file_name().expect("a file name").to_os_string();
        temp_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = path.with_file_name(temp_name);
        let written = File::create(&temp)
            .and_then(|mut file| file.write_all(&bytes))
            .map_err(io_error(&temp))
            .and_then(|()| fs::rename(&temp, &path).map_err(io_error(&path)));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map(|()| path)
    }

    /// Reads the header and index of a metatile; `None` when it does not
    /// exist.
    pub fn read_header(
        &self,
        style: &str,
        metatile: Metatile,
    ) -> Result<Option<MetatileHeader>, MetatileError> {
        let path = self.path(style, metatile, None)?;
        let Some(file) = open_existing(&path)? else {
            return Ok(None);
        };
        Ok(Some(read_header(&file, &path)?))
    }

    /// Reads one tile (see [`read_tile_at`]). `None` when the metatile
    /// does not exist or the tile's slot is empty (mod_tile answers 404 for
    /// both).
    pub fn read_tile(&self, style: &str, tile: Tile) -> Result<Option<StoredTile>, MetatileError> {
        self.read_tile_with(style, tile, None)
    }

    /// [`Self::read_tile`] for a parameterised variant.
    pub fn read_tile_with(
        &self,
        style: &str,
        tile: Tile,
        options: Option<&str>,
    ) -> Result<Option<StoredTile>, MetatileError> {
        let path = self.path(style, tile.metatile(), options)?;
        Ok(read_tile_at(&path, tile)?.and_then(|found| {
            found.bytes.map(|bytes| StoredTile {
                bytes,
                gzip: found.gzip,
            })
        }))
    }

    /// The planet time for `style`: the mtime of
    /// `<dir>/<style>/planet-import-complete`, else of
    /// `<dir>/planet-import-complete`, else now minus 3 days. Looked up on
    /// every call (as mod_tile does), so touching the file takes effect at
    /// once.
    pub fn planet_import_complete(&self, style: &str) -> Result<PlanetTime, MetatileError> {
        if !check_name(style) {
            return Err(MetatileError::Style(style.to_string()));
        }
        let style_file = self.dir.join(style).join(PLANET_IMPORT_COMPLETE);
        if let Some(stat) = stat_existing(&style_file)? {
            return Ok(PlanetTime {
                time: stat.mtime,
                source: PlanetTimeSource::StyleFile(style_file),
            });
        }
        let root_file = self.dir.join(PLANET_IMPORT_COMPLETE);
        if let Some(stat) = stat_existing(&root_file)? {
            return Ok(PlanetTime {
                time: stat.mtime,
                source: PlanetTimeSource::RootFile(root_file),
            });
        }
        Ok(PlanetTime {
            time: SystemTime::now() - DEFAULT_PLANET_AGE,
            source: PlanetTimeSource::Default,
        })
    }

    /// Freshness of a (plain) metatile: missing, or clean / dirty by
    /// comparing its mtime with the planet time.
    pub fn stat(&self, style: &str, metatile: Metatile) -> Result<TileState, MetatileError> {
        let planet = self.planet_import_complete(style)?;
        self.stat_against(style, metatile, planet.time)
    }

    /// [`Self::stat`] with a planet time looked up once by the caller, for
    /// many metatiles in a row.
    pub fn stat_against(
        &self,
        style: &str,
        metatile: Metatile,
        planet_time: SystemTime,
    ) -> Result<TileState, MetatileError> {
        let path = self.path(style, metatile, None)?;
        Ok(match stat_existing(&path)? {
            None => TileState::Missing,
            Some(stat) if stat.mtime < planet_time => TileState::Dirty {
                stat,
                touched: stat.mtime < touched_before(),
            },
            Some(stat) => TileState::Clean(stat),
        })
    }

    /// Marks a metatile dirty without deleting it: its mtime becomes
    /// [`TOUCHED_MTIME_SECS`], its atime (which cache purgers use) is kept.
    /// mod_tile serves it and asks renderd for a new one. A missing metatile
    /// is left missing; one already touched is left alone, so repeated
    /// touches are idempotent. Parameterised variants are not touched (as
    /// in mod_tile).
    pub fn touch(&self, style: &str, metatile: Metatile) -> Result<TouchOutcome, MetatileError> {
        let path = self.path(style, metatile, None)?;
        let Some(file) = open_existing(&path)? else {
            return Ok(TouchOutcome::Missing);
        };
        let mtime = file
            .metadata()
            .and_then(|metadata| metadata.modified())
            .map_err(io_error(&path))?;
        if mtime < touched_before() {
            return Ok(TouchOutcome::AlreadyTouched);
        }
        // Only the mtime is given, so the atime is left as it is. futimens
        // on a read-only descriptor is allowed for the file's owner.
        file.set_times(FileTimes::new().set_modified(touched_mtime()))
            .map_err(io_error(&path))?;
        Ok(TouchOutcome::Touched)
    }

    /// Deletes a (plain) metatile; the next request for it renders it
    /// afresh. Returns whether a file was deleted.
    pub fn delete(&self, style: &str, metatile: Metatile) -> Result<bool, MetatileError> {
        let path = self.path(style, metatile, None)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(MetatileError::Io { path, source }),
        }
    }
}

fn open_existing(path: &Path) -> Result<Option<File>, MetatileError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(source) => Err(MetatileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn stat_existing(path: &Path) -> Result<Option<FileStat>, MetatileError> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(source) => {
            return Err(MetatileError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let times = metadata
        .modified()
        .and_then(|mtime| Ok((mtime, metadata.accessed()?)))
        .map_err(io_error(path))?;
    Ok(Some(FileStat {
        size: metadata.len(),
        mtime: times.0,
        atime: times.1,
    }))
}

/// Every finished metatile file below `dir`, recursively: `.meta` files
/// that are not a renderer's temporary file (those start with a dot or
/// end in `.tmp`). Unreadable directories and entries vanishing during the
/// walk are skipped, since renders and sweeps run alongside.
pub fn finished_metatile_files(dir: &Path) -> Vec<fs::DirEntry> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(listing) = fs::read_dir(&dir) else {
            continue;
        };
        for item in listing.flatten() {
            let Ok(kind) = item.file_type() else { continue };
            if kind.is_dir() {
                pending.push(item.path());
                continue;
            }
            let name = item.file_name();
            let name = name.to_string_lossy();
            if kind.is_file() && !name.starts_with('.') && name.ends_with(".meta") {
                found.push(item);
            }
        }
    }
    found
}

/// Not found, or a path component that is a file (`ENOTDIR`): either way
/// there is no metatile.
pub fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// The header and index at the start of `file`. A short file is read as
/// far as it goes, so the format error can tell its length.
fn read_header(file: &File, path: &Path) -> Result<MetatileHeader, MetatileError> {
    let mut bytes = [0u8; DATA_START];
    let mut filled = 0;
    while filled < DATA_START {
        match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(io_error(path)(source)),
        }
    }
    MetatileHeader::parse(&bytes[..filled], path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(z: u8, x: u32, y: u32) -> Metatile {
        Tile::new(z, x, y).unwrap().metatile()
    }

    #[test]
    fn paths_match_mod_tile_worked_examples() {
        let cases = [
            ((18, 131010, 87170), "default/18/17/245/244/200/0.meta"),
            ((0, 0, 0), "default/0/0/0/0/0/0.meta"),
            ((9, 297, 191), "default/9/0/0/16/43/136.meta"),
            ((18, 16125, 115188), "default/18/1/60/225/255/128.meta"),
        ];
        for ((z, x, y), expected) in cases {
            assert_eq!(
                relative_path("default", meta(z, x, y), None).unwrap(),
                PathBuf::from(expected),
                "{z}/{x}/{y}"
            );
        }
        assert_eq!(
            relative_path("osm", meta(9, 297, 191), Some("en,de,_")).unwrap(),
            PathBuf::from("osm/9/0/0/16/43/136.en,de,_.meta")
        );
        // An unaligned metatile is named by its origin.
        let unaligned = Metatile {
            z: 18,
            x: 131010,
            y: 87170,
        };
        assert_eq!(
            relative_path("s", unaligned, None).unwrap(),
            PathBuf::from("s/18/17/245/244/200/0.meta")
        );
    }

    #[test]
    fn tile_paths_agree_with_the_store() {
        for (z, x, y) in [
            (0, 0, 0),
            (9, 297, 191),
            (18, 131010, 87170),
            (20, 1048575, 3),
        ] {
            let tile = Tile::new(z, x, y).unwrap();
            let store = TileStore::new("/t").path("s", tile.metatile(), None);
            assert_eq!(Path::new(&tile_path("/t/s", tile)), store.unwrap());
        }
    }

    #[test]
    fn rejects_bad_names_and_addresses() {
        let m = meta(3, 0, 0);
        for style in ["", ".", "..", "a/b", &"x".repeat(41)] {
            assert!(
                matches!(relative_path(style, m, None), Err(MetatileError::Style(_))),
                "{style:?}"
            );
        }
        assert!(relative_path(&"x".repeat(40), m, None).is_ok());
        assert!(matches!(
            relative_path("s", m, Some("../x")),
            Err(MetatileError::Options(_))
        ));
        let outside = Metatile { z: 2, x: 8, y: 0 };
        assert!(matches!(
            relative_path("s", outside, None),
            Err(MetatileError::Address(_))
        ));
        let deep = Metatile { z: 21, x: 0, y: 0 };
        assert!(matches!(
            relative_path("s", deep, None),
            Err(MetatileError::Address(_))
        ));
    }

    #[test]
    fn slots_are_x_major() {
        let t = Tile::new(18, 131010, 87170).unwrap();
        assert_eq!(slot(t), 18);
        assert_eq!(slot_tile(t.metatile(), 18), t);
        assert_eq!(slot(Tile { z: 5, x: 8, y: 9 }), 1);
        assert_eq!(slot(Tile { z: 5, x: 9, y: 8 }), 8);
    }

    #[test]
    fn encoded_layout() {
        let m = meta(18, 131010, 87170);
        let mut tiles = vec![Vec::new(); SLOTS];
        tiles[0] = b"first".to_vec();
        tiles[18] = b"eighteen".to_vec();
        let bytes = encode(m, &tiles, false).unwrap();
        assert_eq!(bytes.len(), DATA_START + 13);
        let int = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(&bytes[..4], b"META");
        assert_eq!((int(4), int(8), int(12), int(16)), (64, 131008, 87168, 18));
        assert_eq!((int(20), int(24)), (532, 5), "slot 0");
        assert_eq!(
            (int(28), int(32)),
            (537, 0),
            "slot 1: empty, at the write position"
        );
        assert_eq!((int(164), int(168)), (537, 8), "slot 18 at bytes 164..171");
        assert_eq!((int(172), int(176)), (545, 0), "slot 19");
        assert_eq!(&bytes[537..545], b"eighteen");
        let header = MetatileHeader::parse(&bytes, Path::new("mem")).unwrap();
        assert_eq!(header.index[18], (537, 8));
        assert!(!header.gzip);
        assert!(matches!(
            encode(m, &vec![Vec::new(); 65], false),
            Err(MetatileError::TooManyTiles(65))
        ));
    }

    #[test]
    fn header_errors() {
        let path = Path::new("x.meta");
        assert!(matches!(
            MetatileHeader::parse(b"META", path),
            Err(MetatileError::Format { .. })
        ));
        let mut bytes = encode(meta(3, 0, 0), &[], false).unwrap();
        bytes[..4].copy_from_slice(b"XXXX");
        let e = MetatileHeader::parse(&bytes, path).unwrap_err();
        assert!(e.to_string().starts_with("x.meta: not a metatile"), "{e}");
        bytes[..4].copy_from_slice(b"METZ");
        bytes[4] = 63;
        assert!(MetatileHeader::parse(&bytes, path)
            .unwrap_err()
            .to_string()
            .contains("count 63"));
    }
}
