//! Helpers for the render tests: a town database, the project style, tile
//! decoding and colour counting.

use crate::PgCluster;
use std::path::{Path, PathBuf};
use tilepipe::render::config::{RenderConfig, StyleConfig};
use tilepipe::render::queue::{Outcome, Priority, RenderKey};
use tilepipe::render::worker::Renderer;
use tilepipe::tile::{Metatile, Tile};

/// Middle of the synthetic town (its street grid spans 10.000-10.008 E,
/// 50.000-50.008 N).
pub const TOWN: (f64, f64) = (10.004, 50.004);
/// Inside the town's residential landuse (9.9995-10.0035 E, 49.9995-50.0035
/// N), clear of its buildings and streets.
pub const RESIDENTIAL: (f64, f64) = (10.0009, 50.0003);

/// Where Debian's `openstreetmap-carto-common` installs OpenStreetMap
/// Carto: `style.xml` and the osm2pgsql `openstreetmap-carto.style`/`.lua`.
pub const CARTO_DIR: &str = "/usr/share/openstreetmap-carto-common";

/// The project's own style.
pub fn project_style_xml() -> PathBuf {
    crate::paths::repo_file("styles/tilepipe/tilepipe.xml")
}

/// A style entry for the project style reading `database`.
pub fn project_style(name: &str, tile_dir: &Path, database: &str) -> StyleConfig {
    StyleConfig {
        name: name.into(),
        xml: project_style_xml(),
        tile_dir: tile_dir.to_path_buf(),
        database: Some(database.to_string()),
        ..StyleConfig::default()
    }
}

/// The default render settings with `threads` render threads.
pub fn settings(threads: usize) -> RenderConfig {
    RenderConfig {
        threads,
        ..RenderConfig::default()
    }
}

/// A new database holding the synthetic town, imported with the default
/// (classic) style.
pub fn town_database(dir: &Path, hint: &str) -> String {
    let osm = dir.join("town.osm");
    crate::town::synthetic_town().write_osm_file(&osm).unwrap();
    let url = PgCluster::shared().create_database(hint).unwrap();
    let config = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    tilepipe::apply::import::import(&config, &osm, &Default::default(), 1).unwrap();
    url
}

/// The tile holding a lon/lat point.
pub fn tile_at(point: (f64, f64), z: u8) -> Tile {
    tilepipe::tile::lonlat_to_tile(point.0, point.1, z)
}

/// The metatile holding a lon/lat point.
pub fn metatile_at(point: (f64, f64), z: u8) -> Metatile {
    tile_at(point, z).metatile()
}

/// A decoded tile: width, height and RGB pixels.
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixels row by row from the top left, `width × height` of them.
    pub pixels: Vec<[u8; 3]>,
}

/// Decodes a PNG (palette or true colour) into RGB; panics on a broken one.
pub fn decode_png(bytes: &[u8]) -> Image {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("a bounded PNG")];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    let channels = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| match channels {
            1 | 2 => [p[0], p[0], p[0]],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    Image {
        width: info.width,
        height: info.height,
        pixels,
    }
}

impl Image {
    /// How many different RGB colours the tile uses.
    pub fn distinct_colours(&self) -> usize {
        let mut seen: Vec<[u8; 3]> = self.pixels.clone();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    /// Pixels within `tolerance` per channel of `colour` (palette PNGs
    /// shift colours slightly).
    pub fn count_near(&self, colour: [u8; 3], tolerance: u8) -> usize {
        self.pixels
            .iter()
            .filter(|p| (0..3).all(|i| p[i].abs_diff(colour[i]) <= tolerance))
            .count()
    }

    /// The pixel at a lon/lat point inside this tile.
    pub fn pixel_at(&self, tile: Tile, point: (f64, f64)) -> [u8; 3] {
        let n = f64::from(1u32 << tile.z);
        let lat = point.1.to_radians();
        let fx = (point.0 + 180.0) / 360.0 * n - f64::from(tile.x);
        let fy = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n
            - f64::from(tile.y);
        assert!((0.0..1.0).contains(&fx) && (0.0..1.0).contains(&fy));
        let px = (fx * f64::from(self.width)) as u32;
        let py = (fy * f64::from(self.height)) as u32;
        self.pixels[(py * self.width + px) as usize]
    }
}

/// `#rrggbb` (the `#` optional) as RGB; panics on bad hex.
pub fn rgb(hex: &str) -> [u8; 3] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

/// Renders every metatile of `style` through the renderer's queue at once
/// (background priority, forced), and waits until each is written.
pub fn render_all(renderer: &Renderer, style: &str, metatiles: &[Metatile]) {
    let receivers: Vec<_> = metatiles
        .iter()
        .map(|&metatile| {
            let key = RenderKey {
                style: style.to_string(),
                metatile,
            };
            renderer
                .queue()
                .submit(key, Priority::Background, true)
                .1
                .expect("the render queue takes the metatile")
        })
        .collect();
    for receiver in receivers {
        let outcome = receiver.blocking_recv().expect("the renderer answers");
        assert_eq!(outcome, Outcome::Rendered);
    }
}
