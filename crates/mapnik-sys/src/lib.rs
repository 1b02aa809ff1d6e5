//! A small safe binding to Mapnik 3.1: register input plugins and fonts, load
//! a style, render a metatile in EPSG:3857 and encode its tiles.
//!
//! The C++ side (`src/shim.cpp`) catches every exception at the
//! `extern "C"` boundary; Mapnik errors arrive here as [`MapnikError`].
//!
//! ```no_run
//! use mapnik_sys::{register_fonts, register_plugins, Map, DEFAULT_FONT_DIR, DEFAULT_PLUGIN_DIR};
//! register_plugins(DEFAULT_PLUGIN_DIR).unwrap();
//! register_fonts(DEFAULT_FONT_DIR, true).unwrap();
//! let mut map = Map::from_file("style.xml", None).unwrap();
//! // z3, the 8x8 metatile at the grid origin: 64 PNGs, index = dx * 8 + dy.
//! let tiles = map.render_metatile(3, 0, 0, 8, 256, 1.0, "png256").unwrap();
//! assert_eq!(tiles.len(), 64);
//! ```

use std::ffi::{c_char, c_double, c_int, c_uint, CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

/// Input plugin directory of the Mapnik this crate was built against
/// (`mapnik-config --input-plugins`).
pub const DEFAULT_PLUGIN_DIR: &str = env!("MAPNIK_INPUT_PLUGINS_DIR");
/// Font directory of the Mapnik this crate was built against
/// (`mapnik-config --fonts`).
pub const DEFAULT_FONT_DIR: &str = env!("MAPNIK_FONTS_DIR");
/// Version of the Mapnik this crate was built against (`mapnik-config --version`).
pub const MAPNIK_VERSION: &str = env!("MAPNIK_VERSION");

/// Half the width of the EPSG:3857 world in metres, as mod_tile uses it.
pub const MERCATOR_HALF_WIDTH: f64 = 20037508.3428;
/// Largest metatile edge, in tiles.
pub const MAX_METATILE: u32 = 8;

/// Mapnik format strings accepted by [`Map::render_metatile`]. Mapnik also
/// accepts options after a colon (e.g. `png8:z=9`, `jpeg85`), which are passed
/// through unchanged.
pub const FORMATS: [&str; 4] = ["png", "png256", "jpeg", "webp"];

/// Error messages longer than this are shortened in [`MapnikError::message`].
const MAX_MESSAGE: usize = 600;

mod ffi {
    use super::*;

    #[repr(C)]
    pub struct RawMap {
        _private: [u8; 0],
    }

    #[repr(C)]
    pub struct Buffer {
        pub data: *mut u8,
        pub len: usize,
    }

    extern "C" {
        pub fn tp_mapnik_free_string(s: *mut c_char);
        pub fn tp_mapnik_free_buffers(bufs: *mut Buffer, count: usize);
        pub fn tp_mapnik_set_log_severity(level: c_int);
        pub fn tp_mapnik_register_plugins(
            dir: *const c_char,
            recurse: c_int,
            registered: *mut c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn tp_mapnik_plugin_names(out: *mut *mut c_char, err: *mut *mut c_char) -> c_int;
        pub fn tp_mapnik_register_fonts(
            dir: *const c_char,
            recurse: c_int,
            registered: *mut c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn tp_mapnik_font_names(out: *mut *mut c_char, err: *mut *mut c_char) -> c_int;
        #[allow(clippy::too_many_arguments)]
        pub fn tp_mapnik_map_load(
            style: *const c_char,
            style_len: usize,
            is_file: c_int,
            base: *const c_char,
            base_len: usize,
            strict: c_int,
            out: *mut *mut RawMap,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn tp_mapnik_map_free(m: *mut RawMap);
        pub fn tp_mapnik_map_set_buffer_size(m: *mut RawMap, size: c_int);
        pub fn tp_mapnik_map_buffer_size(m: *const RawMap) -> c_int;
        pub fn tp_mapnik_map_srs(
            m: *const RawMap,
            out: *mut *mut c_char,
            err: *mut *mut c_char,
        ) -> c_int;
        #[allow(clippy::too_many_arguments)]
        pub fn tp_mapnik_render_metatile(
            m: *mut RawMap,
            z: c_uint,
            x: c_uint,
            y: c_uint,
            size: c_uint,
            tile_size: c_uint,
            scale: c_double,
            format: *const c_char,
            out: *mut *mut Buffer,
            err: *mut *mut c_char,
        ) -> c_int;
    }
}

/// An error from Mapnik (a C++ exception caught at the boundary) or from
/// checking arguments before calling it.
#[derive(Clone, PartialEq, Eq)]
pub struct MapnikError {
    full: String,
}

impl MapnikError {
    fn new(full: impl Into<String>) -> Self {
        MapnikError {
            full: redact_passwords(&full.into()),
        }
    }

    /// An error with this message (for callers' own checks and tests).
    pub fn from_message(message: impl Into<String>) -> Self {
        MapnikError::new(message)
    }

    /// The message as Mapnik gave it, unshortened (but with any
    /// `password=...` of a PostgreSQL connection string blanked out).
    pub fn full_message(&self) -> &str {
        &self.full
    }

    /// A readable message: PostGIS errors lose the SQL that Mapnik appends
    /// ("Full sql was: ..."), and anything still longer than a few hundred
    /// characters is cut with an ellipsis.
    pub fn message(&self) -> String {
        shorten(&self.full)
    }
}

/// Mapnik's PostGIS plugin quotes the connection string in its errors,
/// password included.
fn redact_passwords(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("password=") {
        let (head, tail) = rest.split_at(i + "password=".len());
        out.push_str(head);
        out.push_str("***");
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '\'')
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn shorten(full: &str) -> String {
    let mut msg = full.trim();
    if let Some(i) = msg.find("Full sql was:") {
        msg = msg[..i].trim_end();
    }
    let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    if msg.chars().count() <= MAX_MESSAGE {
        return msg;
    }
    let mut cut: String = msg.chars().take(MAX_MESSAGE).collect();
    cut.push('…');
    cut
}

impl fmt::Display for MapnikError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mapnik: {}", self.message())
    }
}

impl fmt::Debug for MapnikError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapnikError")
            .field("message", &self.message())
            .finish()
    }
}

impl std::error::Error for MapnikError {}

/// Takes ownership of a message allocated by the shim.
///
/// # Safety
/// `p` must be null or a NUL-terminated string malloc'ed by the shim and not
/// yet freed.
unsafe fn take_string(p: *mut c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `p` is a live NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: `p` came from the shim's malloc and is freed exactly once here.
    unsafe { ffi::tp_mapnik_free_string(p) };
    Some(s)
}

/// Turns a shim return code and error out-parameter into a `Result`.
///
/// # Safety
/// `err` must be null or a string allocated by the shim.
unsafe fn check(rc: c_int, err: *mut c_char) -> Result<(), MapnikError> {
    // SAFETY: forwarded from the caller's contract.
    let msg = unsafe { take_string(err) };
    if rc == 0 {
        Ok(())
    } else {
        Err(MapnikError::new(
            msg.unwrap_or_else(|| "unknown Mapnik error".to_string()),
        ))
    }
}

fn c_string(what: &str, s: &str) -> Result<CString, MapnikError> {
    CString::new(s).map_err(|_| MapnikError::new(format!("{what} contains a NUL byte: {s:?}")))
}

fn path_str<'a>(what: &str, p: &'a Path) -> Result<&'a str, MapnikError> {
    p.to_str()
        .ok_or_else(|| MapnikError::new(format!("{what} is not UTF-8: {}", p.display())))
}

fn register(
    f: unsafe extern "C" fn(*const c_char, c_int, *mut c_int, *mut *mut c_char) -> c_int,
    what: &str,
    dir: &Path,
    recurse: bool,
) -> Result<bool, MapnikError> {
    if !dir.is_dir() {
        return Err(MapnikError::new(format!(
            "{what} directory {} does not exist",
            dir.display()
        )));
    }
    let cdir = c_string(what, path_str(what, dir)?)?;
    let mut registered: c_int = 0;
    let mut err = std::ptr::null_mut();
    // SAFETY: `cdir` is a valid C string for the call; the out-pointers point
    // to live locals. Mapnik guards its registries with mutexes.
    let rc = unsafe {
        f(
            cdir.as_ptr(),
            c_int::from(recurse),
            &mut registered,
            &mut err,
        )
    };
    // SAFETY: `err` is null or set by the shim.
    unsafe { check(rc, err) }?;
    Ok(registered != 0)
}

fn names(
    f: unsafe extern "C" fn(*mut *mut c_char, *mut *mut c_char) -> c_int,
) -> Result<Vec<String>, MapnikError> {
    let mut out = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    // SAFETY: both out-pointers point to live locals.
    let rc = unsafe { f(&mut out, &mut err) };
    // SAFETY: `err` is null or set by the shim.
    unsafe { check(rc, err) }?;
    // SAFETY: on success `out` is null or a string set by the shim.
    let text = unsafe { take_string(out) }.unwrap_or_default();
    Ok(text.lines().map(str::to_string).collect())
}

/// How much Mapnik writes to stderr (its own log, e.g. "unable to find
/// face-name ... in FontSet").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything, debug messages included (`mapnik::logger::debug`).
    Debug,
    /// Warnings and errors (`mapnik::logger::warn`).
    Warn,
    /// Errors only (`mapnik::logger::error`).
    Error,
    /// Nothing (`mapnik::logger::none`).
    None,
}

/// Sets Mapnik's process-wide log severity (Debian's Mapnik logs warnings
/// by default). Some warnings, like the missing faces of a fontset while a
/// style loads, are logged at error severity: only `None` hides those.
pub fn set_log_level(level: LogLevel) {
    let n = match level {
        LogLevel::Debug => 0,
        LogLevel::Warn => 1,
        LogLevel::Error => 2,
        LogLevel::None => 3,
    };
    // SAFETY: takes a plain integer; Mapnik stores it in an atomic.
    unsafe { ffi::tp_mapnik_set_log_severity(n) }
}

/// Registers the Mapnik input plugins (`*.input`) in `dir`, e.g.
/// [`DEFAULT_PLUGIN_DIR`]. Returns whether any new plugin was loaded
/// (`false` when all were registered already). Process-wide; safe to call
/// from any thread and more than once.
pub fn register_plugins(dir: impl AsRef<Path>) -> Result<bool, MapnikError> {
    register(
        ffi::tp_mapnik_register_plugins,
        "plugin",
        dir.as_ref(),
        false,
    )
}

/// Names of the registered input plugins (e.g. `csv`, `postgis`).
pub fn plugin_names() -> Result<Vec<String>, MapnikError> {
    names(ffi::tp_mapnik_plugin_names)
}

/// Registers the fonts in `dir` (and its subdirectories if `recurse`), e.g.
/// [`DEFAULT_FONT_DIR`]. Returns whether any font was registered.
/// Process-wide; safe to call from any thread and more than once.
pub fn register_fonts(dir: impl AsRef<Path>, recurse: bool) -> Result<bool, MapnikError> {
    register(ffi::tp_mapnik_register_fonts, "font", dir.as_ref(), recurse)
}

/// Face names of the registered fonts (e.g. `DejaVu Sans Book`).
pub fn font_names() -> Result<Vec<String>, MapnikError> {
    names(ffi::tp_mapnik_font_names)
}

/// The EPSG:3857 box `(minx, miny, maxx, maxy)` in metres covered by the
/// `size` x `size` tiles whose north-west tile is `(z, x, y)` (y counted from
/// the north, as in slippy-map tile names).
pub fn metatile_bounds(z: u32, x: u32, y: u32, size: u32) -> (f64, f64, f64, f64) {
    let tile = 2.0 * MERCATOR_HALF_WIDTH / f64::from(2u32.pow(z.min(31)));
    let minx = -MERCATOR_HALF_WIDTH + f64::from(x) * tile;
    let maxy = MERCATOR_HALF_WIDTH - f64::from(y) * tile;
    let span = f64::from(size) * tile;
    (minx, maxy - span, minx + span, maxy)
}

/// A Mapnik map loaded from a style.
///
/// Not `Send` nor `Sync`: a `mapnik::Map` holds datasources and caches whose
/// thread affinity is not documented, so keep one `Map` per rendering thread
/// (load the style in the thread that renders with it).
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// let map = mapnik_sys::Map::from_string("<Map/>", None).unwrap();
/// send(map);
/// ```
pub struct Map {
    raw: *mut ffi::RawMap,
    _not_send: PhantomData<*mut ()>,
}

impl Map {
    fn load(
        style: &str,
        is_file: bool,
        base: Option<&Path>,
        strict: bool,
    ) -> Result<Map, MapnikError> {
        let base = match base {
            Some(b) => path_str("base path", b)?,
            None => "",
        };
        let mut raw = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        // Loading is not thread-safe inside Mapnik: the PostGIS plugin
        // registers each datasource's connection pool in a process-wide
        // map without a lock, and two threads loading styles at once
        // crashed there (about one start in 40 with two render threads).
        // Loads happen at start-up and on reloads, so one at a time costs
        // little; rendering itself stays parallel.
        static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: style and base are passed as pointer + length of live
        // `&str`s; the out-pointers point to live locals.
        let rc = unsafe {
            ffi::tp_mapnik_map_load(
                style.as_ptr().cast(),
                style.len(),
                c_int::from(is_file),
                base.as_ptr().cast(),
                base.len(),
                c_int::from(strict),
                &mut raw,
                &mut err,
            )
        };
        // SAFETY: `err` is null or set by the shim.
        unsafe { check(rc, err) }?;
        if raw.is_null() {
            return Err(MapnikError::new("Mapnik returned no map"));
        }
        Ok(Map {
            raw,
            _not_send: PhantomData,
        })
    }

    /// Loads a style XML file. Relative file names in the style are resolved
    /// against `base`, or against the file's directory when `base` is `None`
    /// (Mapnik's default).
    pub fn from_file(path: impl AsRef<Path>, base: Option<&Path>) -> Result<Map, MapnikError> {
        Map::load(path_str("style path", path.as_ref())?, true, base, false)
    }

    /// Loads a style from XML text; relative file names in it are resolved
    /// against `base` (the current directory when `None`).
    pub fn from_string(xml: &str, base: Option<&Path>) -> Result<Map, MapnikError> {
        Map::load(xml, false, base, false)
    }

    /// Like [`Map::from_file`] but in Mapnik's strict mode: problems that
    /// Mapnik otherwise only logs (unknown attributes, font faces that are
    /// not registered) are errors.
    pub fn from_file_strict(
        path: impl AsRef<Path>,
        base: Option<&Path>,
    ) -> Result<Map, MapnikError> {
        Map::load(path_str("style path", path.as_ref())?, true, base, true)
    }

    /// Like [`Map::from_string`] but in Mapnik's strict mode.
    pub fn from_string_strict(xml: &str, base: Option<&Path>) -> Result<Map, MapnikError> {
        Map::load(xml, false, base, true)
    }

    /// Sets the buffer around the rendered area, in pixels, that keeps
    /// labels and symbols from being cut at tile edges.
    pub fn set_buffer_size(&mut self, pixels: i32) {
        // SAFETY: `self.raw` is a live map owned by `self`.
        unsafe { ffi::tp_mapnik_map_set_buffer_size(self.raw, pixels) }
    }

    /// The buffer size in pixels (from the style or [`Map::set_buffer_size`]).
    pub fn buffer_size(&self) -> i32 {
        // SAFETY: `self.raw` is a live map owned by `self`.
        unsafe { ffi::tp_mapnik_map_buffer_size(self.raw) }
    }

    /// The map's spatial reference as written in the style.
    pub fn srs(&self) -> String {
        let mut out = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        // SAFETY: `self.raw` is live; the out-pointers point to live locals.
        let rc = unsafe { ffi::tp_mapnik_map_srs(self.raw, &mut out, &mut err) };
        // SAFETY: `err` is null or set by the shim.
        if unsafe { check(rc, err) }.is_err() {
            return String::new();
        }
        // SAFETY: on success `out` is null or a string set by the shim.
        unsafe { take_string(out) }.unwrap_or_default()
    }

    /// Renders the `size` x `size` tiles whose north-west tile is
    /// `(z, x, y)` as one image (so labels continue across tile edges) and
    /// encodes each tile with the Mapnik format string `format` (`png`,
    /// `png256`, `jpeg`, `webp`, optionally with Mapnik's options).
    ///
    /// The area is computed in EPSG:3857 with mod_tile's bounds
    /// (±[`MERCATOR_HALF_WIDTH`], see [`metatile_bounds`]) and used as the
    /// map's extent as it is, like mod_tile does: a projected map srs is
    /// taken to be spherical mercator however it is spelt (`epsg:3857`,
    /// `+proj=merc +a=6378137 ...`). Only a map in lon/lat gets the box
    /// transformed into degrees. `tile_size` is the edge of each output tile
    /// in pixels and `scale` Mapnik's scale factor (for high-DPI tiles pass
    /// e.g. `512` and `2.0`). `size` must be 1..=8 and the metatile must fit
    /// in the zoom's grid (`x + size <= 2^z`, same for y).
    ///
    /// Returns `size * size` encoded tiles in mod_tile's x-major order: the
    /// tile `(x + dx, y + dy)` is at index `dx * size + dy`.
    ///
    /// The image drawn into is kept by the calling thread for its next
    /// render (4 bytes per pixel: 16 MiB for 8×8 tiles of 256 px, 64 MiB
    /// for 512 px), which spares a fresh allocation and its page faults per
    /// metatile; the output is the same as with a new image.
    #[allow(clippy::too_many_arguments)]
    pub fn render_metatile(
        &mut self,
        z: u32,
        x: u32,
        y: u32,
        size: u32,
        tile_size: u32,
        scale: f64,
        format: &str,
    ) -> Result<Vec<Vec<u8>>, MapnikError> {
        if z > 30 {
            return Err(MapnikError::new(format!("zoom {z} is out of range 0..=30")));
        }
        if !(1..=MAX_METATILE).contains(&size) {
            return Err(MapnikError::new(format!(
                "metatile size {size} is out of range 1..={MAX_METATILE}"
            )));
        }
        let n = 1u64 << z;
        if u64::from(x) + u64::from(size) > n || u64::from(y) + u64::from(size) > n {
            return Err(MapnikError::new(format!(
                "metatile {z}/{x}/{y} of size {size} does not fit in the {n}x{n} grid of zoom {z}"
            )));
        }
        if !(1..=4096).contains(&tile_size) {
            return Err(MapnikError::new(format!(
                "tile size {tile_size} is out of range 1..=4096"
            )));
        }
        if !(scale.is_finite() && scale > 0.0) {
            return Err(MapnikError::new(format!(
                "scale factor {scale} is not positive"
            )));
        }
        let cformat = c_string("format", format)?;
        let mut out: *mut ffi::Buffer = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        // SAFETY: `self.raw` is a live map used by this thread only (`&mut
        // self`, `Map` is not Send); `cformat` lives across the call; the
        // out-pointers point to live locals.
        let rc = unsafe {
            ffi::tp_mapnik_render_metatile(
                self.raw,
                z,
                x,
                y,
                size,
                tile_size,
                scale,
                cformat.as_ptr(),
                &mut out,
                &mut err,
            )
        };
        // SAFETY: `err` is null or set by the shim.
        unsafe { check(rc, err) }?;
        if out.is_null() {
            return Err(MapnikError::new("Mapnik returned no tiles"));
        }
        let count = (size * size) as usize;
        // SAFETY: on success the shim returns `count` initialised buffers.
        let bufs = unsafe { std::slice::from_raw_parts(out, count) };
        let tiles = bufs
            .iter()
            .map(|b| {
                // SAFETY: each buffer holds `len` initialised bytes at `data`.
                unsafe { std::slice::from_raw_parts(b.data, b.len) }.to_vec()
            })
            .collect();
        // SAFETY: `out` holds `count` buffers from the shim, freed once here
        // after their bytes were copied.
        unsafe { ffi::tp_mapnik_free_buffers(out, count) };
        Ok(tiles)
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `self.raw` came from tp_mapnik_map_load and is freed once.
        unsafe { ffi::tp_mapnik_map_free(self.raw) }
    }
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("srs", &self.srs())
            .field("buffer_size", &self.buffer_size())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_match_mod_tile() {
        let (minx, miny, maxx, maxy) = metatile_bounds(0, 0, 0, 1);
        assert_eq!(
            (minx, miny, maxx, maxy),
            (
                -MERCATOR_HALF_WIDTH,
                -MERCATOR_HALF_WIDTH,
                MERCATOR_HALF_WIDTH,
                MERCATOR_HALF_WIDTH
            )
        );
        let (minx, miny, maxx, maxy) = metatile_bounds(1, 1, 1, 1);
        assert_eq!(
            (minx, miny, maxx, maxy),
            (0.0, -MERCATOR_HALF_WIDTH, MERCATOR_HALF_WIDTH, 0.0)
        );
    }

    #[test]
    fn shortens_postgis_errors() {
        let full = format!(
            "Postgis Plugin: ERROR:  relation \"planet_osm_line\" does not exist\nLINE 1: SELECT ...\nFull sql was: 'SELECT {}'",
            "x, ".repeat(2000)
        );
        let e = MapnikError::new(full.clone());
        assert_eq!(
            e.message(),
            "Postgis Plugin: ERROR: relation \"planet_osm_line\" does not exist LINE 1: SELECT ..."
        );
        assert_eq!(e.full_message(), full);
        let e = MapnikError::new(
            "Postgis Plugin: no password supplied Connection string: 'host=db password=s3cr3t dbname=gis'",
        );
        assert_eq!(
            e.full_message(),
            "Postgis Plugin: no password supplied Connection string: 'host=db password=*** dbname=gis'"
        );
        let long = MapnikError::new("y".repeat(5000));
        assert_eq!(long.message().chars().count(), MAX_MESSAGE + 1);
    }
}
