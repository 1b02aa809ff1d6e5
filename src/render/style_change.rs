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
//! The style's time is the newest of the XML and the files it names that
//! exist: external entities (`<!ENTITY name SYSTEM "file">`, how older
//! styles split their XML), symbolizers' `file` attributes (symbols,
//! patterns) and datasources' `file` parameters (shapefiles, rasters),
//! relative ones from the XML's directory. Paths built from entities are
//! not followed, nor files named inside an included file: touch the XML
//! after changing those.

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
    let style_time = style_time(&style.xml).map_err(|source| StyleChangeError::Xml {
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
        for item in crate::metatile::finished_metatile_files(&dir) {
            mark_one(&item.path(), style_time, render_now, &mut report);
        }
    }
    Ok(report)
}

/// The newest modification time of `xml` and the files it names (see the
/// module documentation). Only the XML itself must exist: a named file
/// that is missing is the renderer's error, reported when it loads.
pub fn style_time(xml: &Path) -> std::io::Result<SystemTime> {
    let own = std::fs::metadata(xml)?.modified()?;
    let text = std::fs::read_to_string(xml)?;
    let dir = xml.parent().unwrap_or(Path::new("."));
    Ok(referenced_files(&text)
        .into_iter()
        .filter_map(|file| std::fs::metadata(dir.join(file)).ok()?.modified().ok())
        .fold(own, SystemTime::max))
}

/// The files a Mapnik XML text names (see the module documentation), as
/// written. Unparsable XML names none: loading it reports the error.
fn referenced_files(text: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut files = Vec::new();
    let mut reader = quick_xml::Reader::from_str(text);
    let mut in_file_parameter = false;
    loop {
        match reader.read_event() {
            Ok(Event::DocType(doctype)) => {
                let doctype = String::from_utf8_lossy(doctype.as_ref()).into_owned();
                files.extend(system_entities(&doctype));
            }
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                in_file_parameter = e.name().as_ref() == b"Parameter"
                    && e.try_get_attribute("name")
                        .ok()
                        .flatten()
                        .is_some_and(|a| a.value.as_ref() == b"file");
                if let Ok(Some(file)) = e.try_get_attribute("file") {
                    files.push(String::from_utf8_lossy(&file.value).into_owned());
                }
            }
            Ok(Event::Text(t)) if in_file_parameter => {
                files.push(String::from_utf8_lossy(t.as_ref()).trim().to_owned());
            }
            Ok(Event::CData(t)) if in_file_parameter => {
                files.push(String::from_utf8_lossy(t.as_ref()).trim().to_owned());
            }
            Ok(Event::End(_)) => in_file_parameter = false,
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    files.retain(|f| !f.is_empty() && !f.contains('&'));
    files
}

/// The files of `<!ENTITY name SYSTEM "file">` declarations in a DOCTYPE.
fn system_entities(doctype: &str) -> Vec<String> {
    let mut files = Vec::new();
    let mut rest = doctype;
    while let Some(at) = rest.find("SYSTEM") {
        rest = rest[at + "SYSTEM".len()..].trim_start();
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(end) = rest[1..].find(quote) else {
            break;
        };
        files.push(rest[1..1 + end].to_owned());
        rest = &rest[1 + end..];
    }
    files
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_style_time_is_the_newest_of_the_xml_and_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("style.xml");
        std::fs::write(
            &xml,
            r#"<?xml version="1.0"?>
<!DOCTYPE Map [
  <!ENTITY layers SYSTEM "inc/layers.xml">
  <!ENTITY dbname "gis">
]>
<Map>
  <Style name="s"><Rule><PointSymbolizer file="symbols/dot.svg"/></Rule></Style>
  <Layer name="water"><Datasource>
    <Parameter name="type">shape</Parameter>
    <Parameter name="file">data/water.shp</Parameter>
    <Parameter name="dbname">&dbname;</Parameter>
  </Datasource></Layer>
  <Layer name="gone"><Datasource><Parameter name="file">missing.shp</Parameter></Datasource></Layer>
</Map>"#,
        )
        .unwrap();
        assert_eq!(
            referenced_files(&std::fs::read_to_string(&xml).unwrap()),
            [
                "inc/layers.xml",
                "symbols/dot.svg",
                "data/water.shp",
                "missing.shp"
            ]
        );
        let now = SystemTime::now();
        let set = |path: &Path, age_minutes: u64| {
            if !path.exists() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, b"").unwrap();
            }
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_times(
                    FileTimes::new().set_modified(now - Duration::from_secs(60 * age_minutes)),
                )
                .unwrap();
        };
        let file = |name: &str| dir.path().join(name);
        set(&xml, 300);
        set(&file("inc/layers.xml"), 200);
        set(&file("symbols/dot.svg"), 250);
        assert_eq!(
            style_time(&xml).unwrap(),
            now - Duration::from_secs(60 * 200)
        );
        // A shapefile replaced later makes the style newer.
        set(&file("data/water.shp"), 5);
        assert_eq!(style_time(&xml).unwrap(), now - Duration::from_secs(60 * 5));
        // The XML itself must exist.
        assert!(style_time(&file("none.xml")).is_err());
    }
}
