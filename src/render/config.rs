//! Render configuration: the styles a tile server offers and the renderer's
//! own settings (the `styles:` and `render:` sections of `config.yaml`).

use serde::Deserialize;
use std::path::PathBuf;

/// Tile image encodings Mapnik offers (mapnik-sys `FORMATS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TileFormat {
    /// 32-bit PNG (mod_tile's `png`).
    #[default]
    Png,
    /// Palette PNG, smaller, as openstreetmap.org serves.
    Png256,
    Jpeg,
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StyleConfig {
    /// Name in URLs, in the cache path and in the renderd protocol
    /// (mod_tile's XML name: at most 40 characters, no `/`).
    pub name: String,
    /// Mapnik XML style; relative paths inside it resolve from its directory.
    pub xml: PathBuf,
    /// Tile cache root; metatiles go below `<tile_dir>/<name>/`.
    pub tile_dir: PathBuf,
    pub min_zoom: u8,
    pub max_zoom: u8,
    /// Pixels per tile side (256, or 512 for high-DPI tiles).
    pub tile_size: u32,
    /// Mapnik scale factor (2.0 for high-DPI symbols and text).
    pub scale: f64,
    pub format: TileFormat,
    /// Mapnik buffer around each metatile in pixels; absent = the style's own.
    pub buffer_size: Option<i32>,
    /// Shown in TileJSON and on the map page.
    pub description: String,
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
            description: String::new(),
            attribution: "© OpenStreetMap contributors".into(),
        }
    }
}

/// The renderer: worker threads, queue bounds and the renderd protocol
/// endpoints other tools (mod_tile, render_list, render_expired) can use.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RenderSettings {
    /// Render worker threads, each with its own Mapnik map per style;
    /// 0 = one per CPU.
    pub threads: usize,
    /// Most metatiles queued per priority; beyond it a request is rejected
    /// and counted (a waiting client gets a stale tile or 404).
    pub queue_capacity: usize,
    /// Serve the renderd protocol on this unix socket (absent = off).
    pub socket: Option<PathBuf>,
    /// Serve the renderd protocol on this TCP address, e.g. 127.0.0.1:7654
    /// (absent = off).
    pub tcp: Option<String>,
    /// Mapnik input plugins; absent = `mapnik-config --input-plugins`.
    pub plugins_dir: Option<PathBuf>,
    /// Font directories, searched recursively; empty = Mapnik's own and
    /// /usr/share/fonts.
    pub font_dirs: Vec<PathBuf>,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            threads: 0,
            queue_capacity: 1000,
            socket: None,
            tcp: None,
            plugins_dir: None,
            font_dirs: Vec::new(),
        }
    }
}
