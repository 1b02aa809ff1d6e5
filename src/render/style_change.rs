//! Re-rendering after a style change: metatiles rendered before their
//! style's XML was last modified are marked dirty at start.
//!
//! The classic stack does this by hand after deploying a new style:
//! `render_old --timestamp=<epoch>` (mod_tile's `render_old.c`, which
//! walks the tile directory and re-renders every metatile older than the
//! time given) or `touch`ing the cache. tilepipe does it at start of `run`
//! and `serve`: every metatile of a style whose mtime is before the XML's
//! is marked dirty the way [`TileStore::touch`] does (its mtime becomes
//! the marker [`crate::metatile::TOUCHED_MTIME_SECS`]), never deleted. So
//! it is served stale and re-rendered on request (the "dirty, waited"
//! priority) or by expiry, as any dirty metatile. Metatiles up to an
//! optional zoom (`render.style_change_render_max_zoom`) are also queued
//! at once at background priority: low zooms are few, costly and seen by
//! everyone.
//!
//! Only the XML file's time counts: files it loads (shapefiles, symbols,
//! included XML) are not followed; touch the XML after changing them.

use crate::metatile::{touched_before, touched_mtime, MetatileHeader, DATA_START};
use crate::render::config::StyleConfig;
use crate::tile::{Metatile, MAX_ZOOM};
use std::fs::{File, FileTimes};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What one style's check found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StyleChangeReport {
    /// Metatiles older than the XML, now marked dirty.
    pub marked: u64,
    /// Metatiles already marked dirty (by an earlier start, expiry or
    /// `/dirty`), left as they were.
    pub already_dirty: u64,
    /// Of the marked ones, those at or below the immediate re-render zoom,
    /// for the caller to queue.
    pub render_now: Vec<Metatile>,
}

/// Why a style's cache could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum StyleChangeError {
    /// The style's XML could not be stat'ed.
    #[error("style {style:?}: cannot read the modification time of {xml}: {source}")]
    Xml {
        /// The style's name.
        style: String,
        /// Its XML file.
        xml: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Marks every metatile of `style` older than its XML dirty; those at zoom
/// `render_max_zoom` or below are returned for an immediate re-render.
/// Files that vanish or cannot be read under the walk are skipped (renders
/// and the cache limit run alongside); a metatile file whose header does
/// not parse is still marked, but not queued.
pub fn mark_older_than_style(
    style: &StyleConfig,
    render_max_zoom: Option<u8>,
) -> Result<StyleChangeReport, StyleChangeError> {
    let style_time = std::fs::metadata(&style.xml)
        .and_then(|m| m.modified())
        .map_err(|source| StyleChangeError::Xml {
            style: style.name.clone(),
            xml: style.xml.clone(),
            source,
        })?;
    let mut report = StyleChangeReport::default();
    let root = style.tile_dir.join(&style.name);
    for z in 0..=MAX_ZOOM {
        let dir = root.join(z.to_string());
        if !dir.is_dir() {
            continue;
        }
        let render_now = render_max_zoom.is_some_and(|max| z <= max);
        for path in metatile_files(&dir) {
            mark_one(&path, style_time, render_now, &mut report);
        }
    }
    Ok(report)
}

fn mark_one(path: &Path, style_time: SystemTime, render_now: bool, report: &mut StyleChangeReport) {
    let Ok(file) = File::open(path) else { return };
    let Ok(mtime) = file.metadata().and_then(|m| m.modified()) else {
        return;
    };
    if mtime >= style_time {
        return;
    }
    if mtime < touched_before() {
        report.already_dirty += 1;
        return;
    }
    // As TileStore::touch: only the mtime, so the atime the cache limit
    // goes by is kept.
    if file
        .set_times(FileTimes::new().set_modified(touched_mtime()))
        .is_err()
    {
        return;
    }
    report.marked += 1;
    if render_now {
        if let Some(metatile) = metatile_of(&file, path) {
            report.render_now.push(metatile);
        }
    }
}

/// The metatile a file holds, from its header.
fn metatile_of(file: &File, path: &Path) -> Option<Metatile> {
    let mut bytes = vec![0u8; DATA_START];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let header = MetatileHeader::parse(&bytes, path).ok()?;
    Some(Metatile {
        z: u8::try_from(header.z).ok()?,
        x: u32::try_from(header.x).ok()?,
        y: u32::try_from(header.y).ok()?,
    })
}

/// Finished metatile files below `dir` (renderers' temporary files start
/// with a dot or end in `.tmp`).
fn metatile_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&dir) else {
            continue;
        };
        for item in listing.flatten() {
            let Ok(kind) = item.file_type() else { continue };
            let path = item.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let name = item.file_name();
                let name = name.to_string_lossy();
                if !name.starts_with('.') && name.ends_with(".meta") {
                    found.push(path);
                }
            }
        }
    }
    found
}
