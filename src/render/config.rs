//! Render configuration: the styles a tile server offers and the renderer's
//! own settings (the `styles:` and `render:` sections of `config.yaml`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Tile image encodings Mapnik offers (mapnik-sys `FORMATS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TileFormat {
    /// 32-bit PNG (mod_tile's `png`).
    #[default]
    Png,
    /// Palette PNG, smaller, as openstreetmap.org serves.
    Png256,
    /// JPEG, for imagery-like styles.
    Jpeg,
    /// WebP.
    Webp,
}

impl TileFormat {
    /// The format string Mapnik's encoder takes.
    pub fn mapnik_format(self) -> &'static str {
        match self {
            TileFormat::Png => "png",
            TileFormat::Png256 => "png256",
            TileFormat::Jpeg => "jpeg",
            TileFormat::Webp => "webp",
        }
    }

    /// The URL extension (`png` for both PNG flavours).
    pub fn extension(self) -> &'static str {
        match self {
            TileFormat::Png | TileFormat::Png256 => "png",
            TileFormat::Jpeg => "jpg",
            TileFormat::Webp => "webp",
        }
    }

    /// The `Content-Type` tiles are served with.
    pub fn mime_type(self) -> &'static str {
        match self {
            TileFormat::Png | TileFormat::Png256 => "image/png",
            TileFormat::Jpeg => "image/jpeg",
            TileFormat::Webp => "image/webp",
        }
    }
}

/// One map style: a Mapnik XML file rendered into a mod_tile cache
/// (renderd.conf's per-map section).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StyleConfig {
    /// Name in URLs, in the cache path and in the renderd protocol
    /// (mod_tile's XML name: at most 40 characters, no `/`).
    pub name: String,
    /// Mapnik XML style; relative paths inside it resolve from its directory.
    pub xml: PathBuf,
    /// Tile cache root; metatiles go below `<tile_dir>/<name>/`.
    pub tile_dir: PathBuf,
    /// Lowest zoom rendered and served (renderd.conf `MINZOOM`).
    pub min_zoom: u8,
    /// Highest zoom rendered and served (renderd.conf `MAXZOOM`), at most
    /// [`crate::tile::MAX_ZOOM`].
    pub max_zoom: u8,
    /// Pixels per tile side (256, or 512 for high-DPI tiles).
    pub tile_size: u32,
    /// Mapnik scale factor (2.0 for high-DPI symbols and text).
    pub scale: f64,
    /// Image encoding of the tiles.
    pub format: TileFormat,
    /// Mapnik buffer around each metatile in pixels; absent = the style's
    /// own, else (as renderd) half a tile times `scale` (128 px).
    pub buffer_size: Option<i32>,
    /// PostgreSQL connection (URL or conninfo) for the style's PostGIS
    /// layers: its host, port, dbname, user and password replace the ones
    /// written in the XML when the style is loaded. Absent = the top-level
    /// `database.url`; when that is empty too, the XML's own parameters.
    pub database: Option<String>,
    /// Shown in TileJSON and on the map page.
    pub description: String,
    /// Attribution HTML, in TileJSON and on the map page.
    pub attribution: String,
}

impl Default for StyleConfig {
    fn default() -> Self {
        StyleConfig {
            name: "default".into(),
            xml: PathBuf::new(),
            tile_dir: PathBuf::from("/var/cache/tilepipe/tiles"),
            min_zoom: 0,
            max_zoom: 20,
            tile_size: 256,
            scale: 1.0,
            format: TileFormat::Png,
            buffer_size: None,
            database: None,
            description: String::new(),
            attribution: "© OpenStreetMap contributors".into(),
        }
    }
}

/// The renderer: worker threads, queue bounds and the renderd protocol
/// endpoints other tools (mod_tile, render_list, render_expired) can use.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RenderConfig {
    /// Render worker threads, each with its own Mapnik map per style;
    /// 0 = one per CPU.
    pub threads: usize,
    /// Most metatiles queued per priority; beyond it a request is rejected
    /// and counted (a waiting client gets a stale tile or 404).
    pub queue_capacity: usize,
    /// Serve the renderd protocol on this unix socket (absent = off).
    pub socket: Option<PathBuf>,
    /// Permissions of the socket, octal in a string ("0660"). Connecting
    /// needs write permission, so this decides who may queue renders.
    pub socket_mode: String,
    /// Group of the socket, by name (from /etc/group) or number; absent =
    /// the process's group. mod_tile's Apache user must be able to write.
    pub socket_group: Option<String>,
    /// Most renderd protocol connections at once (unix and TCP together);
    /// further ones are closed as soon as they are accepted, as renderd
    /// does at its connection limit.
    pub max_connections: usize,
    /// Serve the renderd protocol on this TCP address, e.g. 127.0.0.1:7654
    /// (absent = off).
    pub tcp: Option<String>,
    /// Mapnik input plugins; absent = `mapnik-config --input-plugins`.
    pub plugins_dir: Option<PathBuf>,
    /// Font directories, searched recursively; empty = Mapnik's own and
    /// /usr/share/fonts.
    pub font_dirs: Vec<PathBuf>,
    /// Largest size of the tile cache, all styles' metatiles together, in
    /// GB (10^9 bytes of disk); above it the least recently used
    /// metatiles are deleted down to 90 % of it. Absent = no limit.
    pub max_cache_gb: Option<f64>,
    /// Delete least recently used metatiles while the filesystem holding a
    /// tile directory is fuller than this (per cent, as `df`'s Use%);
    /// absent = off. OSMF's tile servers use 88.
    pub cache_high_water_percent: Option<f64>,
    /// ... down to this (per cent); 80 when absent, as at OSMF.
    pub cache_low_water_percent: Option<f64>,
    /// Seconds between two checks of the cache limits.
    pub cache_check_interval_secs: u64,
    /// At start, mark each style's metatiles older than its XML dirty
    /// (served stale, re-rendered on request), as `render_old
    /// --timestamp` is used for after a style change.
    pub style_change_dirty: bool,
    /// Of those, re-render the ones at this zoom or below at once, at
    /// background priority; absent = none (only on request).
    pub style_change_render_max_zoom: Option<u8>,
    /// Pause background and expiry renders while `run` applies a batch of
    /// more than this many changed objects (Tirex's rendering control);
    /// renders for waiting clients go on. 0 = never pause.
    pub pause_background_over_changes: usize,
    /// Most workers rendering background or expiry work at once, so the
    /// others stay free for clients (a Tirex bucket's `maxproc`); 0 = all
    /// workers but one (at least one).
    pub background_max_threads: usize,
    /// Start no background or expiry render while the 1-minute load
    /// average is above this (a Tirex bucket's `maxload`); absent = no
    /// limit.
    pub background_max_load: Option<f64>,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            threads: 0,
            queue_capacity: 1000,
            socket: None,
            socket_mode: DEFAULT_SOCKET_MODE.into(),
            socket_group: None,
            max_connections: 512,
            tcp: None,
            plugins_dir: None,
            font_dirs: Vec::new(),
            max_cache_gb: None,
            cache_high_water_percent: None,
            cache_low_water_percent: None,
            cache_check_interval_secs: 300,
            style_change_dirty: true,
            style_change_render_max_zoom: None,
            pause_background_over_changes: 10_000,
            background_max_threads: 0,
            background_max_load: None,
        }
    }
}

/// Owner and group may connect, others not: renderd makes its socket
/// world-writable (it binds with umask 0), which lets every local user
/// queue renders. Apache's user joins the group instead.
pub const DEFAULT_SOCKET_MODE: &str = "0660";

/// Parses an octal permission string such as `"0660"` or `"660"`.
pub fn parse_socket_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "render.socket_mode: {text:?} is not an octal mode from 0000 to 0777 (write it quoted, e.g. \"0660\")"
        )),
    }
}

impl RenderConfig {
    /// The limits on background and expiry renders for `threads` workers.
    pub fn background_limits(&self, threads: usize) -> crate::render::queue::BackgroundLimits {
        let max_workers = match self.background_max_threads {
            0 => threads.saturating_sub(1).max(1),
            n => n,
        };
        crate::render::queue::BackgroundLimits {
            max_workers,
            max_load: self.background_max_load,
        }
    }

    /// Checks what serde cannot: the socket mode and the connection cap.
    pub fn validate(&self) -> Result<(), String> {
        parse_socket_mode(&self.socket_mode)?;
        if self
            .socket_group
            .as_deref()
            .is_some_and(|g| g.trim().is_empty())
        {
            return Err("render.socket_group: empty (leave it out for the process's group)".into());
        }
        if self.max_connections == 0 {
            return Err("render.max_connections: must be at least 1".into());
        }
        if let Some(gb) = self.max_cache_gb {
            if !(gb.is_finite() && gb > 0.0) {
                return Err(format!(
                    "render.max_cache_gb: {gb} is not a size above 0 (leave it out for no limit)"
                ));
            }
        }
        let percent = |key: &str, value: f64| {
            if value.is_finite() && value > 0.0 && value <= 100.0 {
                Ok(())
            } else {
                Err(format!(
                    "render.{key}: {value} is not a percentage above 0 and at most 100"
                ))
            }
        };
        match (self.cache_high_water_percent, self.cache_low_water_percent) {
            (None, Some(_)) => {
                return Err(
                    "render.cache_low_water_percent needs render.cache_high_water_percent".into(),
                )
            }
            (Some(high), low) => {
                percent("cache_high_water_percent", high)?;
                let low = low.unwrap_or(crate::render::cache_limit::DEFAULT_LOW_WATER_PERCENT);
                percent("cache_low_water_percent", low)?;
                if low >= high {
                    return Err(format!(
                        "render.cache_low_water_percent ({low}) must be below render.cache_high_water_percent ({high})"
                    ));
                }
            }
            (None, None) => {}
        }
        if self.cache_check_interval_secs == 0 {
            return Err("render.cache_check_interval_secs: must be at least 1".into());
        }
        if let Some(load) = self.background_max_load {
            if !(load.is_finite() && load > 0.0) {
                return Err(format!(
                    "render.background_max_load: {load} is not a load average above 0 (leave it out for no limit)"
                ));
            }
        }
        if let Some(z) = self.style_change_render_max_zoom {
            if z > crate::tile::MAX_ZOOM {
                return Err(format!(
                    "render.style_change_render_max_zoom: {z} is above the highest zoom {}",
                    crate::tile::MAX_ZOOM
                ));
            }
            if !self.style_change_dirty {
                return Err(
                    "render.style_change_render_max_zoom needs render.style_change_dirty: true"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// Characters a style name may use: it is a URL segment, a directory name
/// and a renderd protocol field.
fn valid_style_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= crate::metatile::MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl StyleConfig {
    /// Whether the style renders zoom `z`.
    pub fn covers(&self, z: u8) -> bool {
        (self.min_zoom..=self.max_zoom).contains(&z)
    }

    /// Checks what serde cannot: name, zoom range, sizes.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if !valid_style_name(name) {
            return Err(format!(
                "styles: name {name:?} must be 1 to 40 letters, digits, '_', '-' or '.' (not starting with '.')"
            ));
        }
        if self.xml.as_os_str().is_empty() {
            return Err(format!("styles.{name}.xml: a Mapnik XML file is required"));
        }
        let max = crate::tile::MAX_ZOOM;
        if self.max_zoom > max {
            return Err(format!(
                "styles.{name}.max_zoom: {} is above {max}, the deepest zoom mod_tile's cache paths hold",
                self.max_zoom
            ));
        }
        if self.min_zoom > self.max_zoom {
            return Err(format!(
                "styles.{name}: min_zoom {} is above max_zoom {}",
                self.min_zoom, self.max_zoom
            ));
        }
        if !(1..=4096).contains(&self.tile_size) {
            return Err(format!(
                "styles.{name}.tile_size: {} is not in 1..=4096 pixels",
                self.tile_size
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(format!(
                "styles.{name}.scale: {} must be a positive number",
                self.scale
            ));
        }
        if self.buffer_size.is_some_and(|b| b < 0) {
            return Err(format!("styles.{name}.buffer_size: must not be negative"));
        }
        Ok(())
    }
}

/// Checks every style and that no two share a name.
pub fn validate_styles(styles: &[StyleConfig]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for style in styles {
        style.validate()?;
        if !seen.insert(style.name.as_str()) {
            return Err(format!("styles: the name {:?} is used twice", style.name));
        }
    }
    Ok(())
}

/// Gives every style without a `database` of its own the top-level
/// connection (when there is one), so a style's PostGIS layers read the
/// database tilepipe writes.
pub fn fill_databases(styles: &mut [StyleConfig], database_url: &str) {
    if database_url.trim().is_empty() {
        return;
    }
    for style in styles.iter_mut().filter(|s| s.database.is_none()) {
        style.database = Some(database_url.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_limits_are_validated() {
        let with = |gb: Option<f64>, high: Option<f64>, low: Option<f64>| RenderConfig {
            max_cache_gb: gb,
            cache_high_water_percent: high,
            cache_low_water_percent: low,
            ..RenderConfig::default()
        };
        assert!(with(None, None, None).validate().is_ok());
        assert!(with(Some(50.0), Some(88.0), None).validate().is_ok());
        assert!(with(None, Some(88.0), Some(80.0)).validate().is_ok());
        let error = |c: RenderConfig| c.validate().unwrap_err();
        assert!(error(with(Some(0.0), None, None)).contains("render.max_cache_gb"));
        assert!(error(with(Some(f64::NAN), None, None)).contains("render.max_cache_gb"));
        assert!(error(with(None, Some(120.0), None)).contains("cache_high_water_percent"));
        // The default low mark (80) is above a high one of 70.
        assert!(error(with(None, Some(70.0), None)).contains("must be below"));
        assert!(error(with(None, Some(80.0), Some(85.0))).contains("must be below"));
        assert!(
            error(with(None, None, Some(80.0))).contains("needs render.cache_high_water_percent")
        );
        let limits = crate::render::cache_limit::CacheLimits::from_config(&with(
            Some(2.0),
            Some(88.0),
            None,
        ))
        .unwrap();
        assert_eq!(limits.max_bytes, Some(2_000_000_000));
        assert_eq!(limits.water_marks, Some((0.88, 0.8)));
        assert!(
            crate::render::cache_limit::CacheLimits::from_config(&with(None, None, None)).is_none()
        );
    }

    fn style(name: &str) -> StyleConfig {
        StyleConfig {
            name: name.into(),
            xml: "style.xml".into(),
            ..StyleConfig::default()
        }
    }

    #[test]
    fn style_validation() {
        assert!(validate_styles(&[style("default"), style("carto-2x")]).is_ok());
        let dup = validate_styles(&[style("a"), style("a")]).unwrap_err();
        assert!(dup.contains("twice"), "{dup}");
        for bad in ["", "a/b", "..", ".hidden", "with space", &"x".repeat(41)] {
            assert!(style(bad).validate().is_err(), "{bad:?}");
        }
        assert!(style(&"x".repeat(40)).validate().is_ok());
        let no_xml = StyleConfig {
            xml: PathBuf::new(),
            ..style("a")
        };
        assert!(no_xml.validate().unwrap_err().contains("xml"));
        for bad in [
            StyleConfig {
                max_zoom: 21,
                ..style("a")
            },
            StyleConfig {
                min_zoom: 10,
                max_zoom: 9,
                ..style("a")
            },
            StyleConfig {
                tile_size: 0,
                ..style("a")
            },
            StyleConfig {
                scale: 0.0,
                ..style("a")
            },
            StyleConfig {
                scale: f64::NAN,
                ..style("a")
            },
            StyleConfig {
                buffer_size: Some(-1),
                ..style("a")
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let ok = StyleConfig {
            min_zoom: 5,
            max_zoom: 5,
            ..style("a")
        };
        assert!(ok.covers(5) && !ok.covers(4) && !ok.covers(6));
    }

    #[test]
    fn socket_modes() {
        assert_eq!(parse_socket_mode("0660"), Ok(0o660));
        assert_eq!(parse_socket_mode("666"), Ok(0o666));
        assert_eq!(parse_socket_mode("0o600"), Ok(0o600));
        for bad in ["", "0888", "1777", "rw-rw----", "-1"] {
            assert!(parse_socket_mode(bad).is_err(), "{bad:?}");
        }
        let settings = RenderConfig::default();
        assert_eq!(parse_socket_mode(&settings.socket_mode), Ok(0o660));
        assert!(settings.validate().is_ok());
        let none = RenderConfig {
            max_connections: 0,
            ..RenderConfig::default()
        };
        assert!(none.validate().unwrap_err().contains("max_connections"));
    }

    #[test]
    fn databases_filled_from_the_top_level_url() {
        let own = StyleConfig {
            database: Some("postgresql:///other".into()),
            ..style("own")
        };
        let mut styles = vec![style("a"), own];
        fill_databases(&mut styles, "");
        assert_eq!(styles[0].database, None);
        fill_databases(&mut styles, "postgresql:///gis");
        assert_eq!(styles[0].database.as_deref(), Some("postgresql:///gis"));
        assert_eq!(styles[1].database.as_deref(), Some("postgresql:///other"));
    }
}
