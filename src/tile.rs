//! Tile and metatile addresses, shared by the expire, render and serve
//! stages: `z/x/y` in the XYZ scheme (y = 0 at the north edge).
//!
//! Also the tile maths more than one stage needs, kept here so no stage
//! imports another for it: the metatiles of a zoom inside a lon/lat box
//! ([`metatiles_at`], for pre-renders and scheduled refreshes) and the
//! metatiles covering a tile at another zoom ([`covering_metatiles`], for
//! expiry).

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// Tiles per side of a metatile (mod_tile's `METATILE`).
pub const METATILE: u32 = 8;

/// The largest zoom tilepipe handles: mod_tile's hashed paths encode only
/// 20 bits of x and y.
pub const MAX_ZOOM: u8 = 20;

/// One map tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    /// Zoom level, 0 to [`MAX_ZOOM`].
    pub z: u8,
    /// Column from the west edge, below 2^z.
    pub x: u32,
    /// Row from the north edge, below 2^z.
    pub y: u32,
}

/// A metatile: the 8×8 block of tiles (fewer at z0–z2) that is rendered and
/// stored as one `.meta` file, named by its top-left tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metatile {
    /// Zoom level, 0 to [`MAX_ZOOM`].
    pub z: u8,
    /// Multiple of 8.
    pub x: u32,
    /// Multiple of 8.
    pub y: u32,
}

/// Why a tile address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// The text given, which is not `z/x/y`.
    #[error("{0:?} is not of the form z/x/y")]
    Syntax(String),
    /// x or y is not below `limit` (2^z), the tiles per side at zoom `z`.
    #[error("tile {z}/{x}/{y} is outside the world (x and y must be below {limit} at zoom {z})")]
    OutOfRange {
        /// The zoom given.
        z: u8,
        /// The column given.
        x: u32,
        /// The row given.
        y: u32,
        /// Tiles per side at zoom `z`.
        limit: u64,
    },
    /// The zoom given, above [`MAX_ZOOM`].
    #[error("zoom {0} is above the maximum {max}", max = MAX_ZOOM)]
    Zoom(u8),
}

impl Tile {
    /// A tile, checked against the world at its zoom.
    pub fn new(z: u8, x: u32, y: u32) -> Result<Tile, TileError> {
        if z > MAX_ZOOM {
            return Err(TileError::Zoom(z));
        }
        let limit = 1u64 << z;
        if u64::from(x) >= limit || u64::from(y) >= limit {
            return Err(TileError::OutOfRange { z, x, y, limit });
        }
        Ok(Tile { z, x, y })
    }

    /// The metatile this tile is drawn in.
    pub fn metatile(self) -> Metatile {
        Metatile {
            z: self.z,
            x: self.x & !(METATILE - 1),
            y: self.y & !(METATILE - 1),
        }
    }

    /// The tile containing this one `levels` zooms up.
    pub fn ancestor(self, levels: u8) -> Tile {
        let levels = levels.min(self.z);
        Tile {
            z: self.z - levels,
            x: self.x >> levels,
            y: self.y >> levels,
        }
    }
}

impl Metatile {
    /// Tiles per side actually drawn at this zoom (1, 2, 4 at z0–z2).
    pub fn size(self) -> u32 {
        METATILE.min(1 << self.z)
    }

    /// The tiles of the metatile, x-major (mod_tile's index order).
    pub fn tiles(self) -> impl Iterator<Item = Tile> {
        let size = self.size();
        (0..size).flat_map(move |dx| {
            (0..size).map(move |dy| Tile {
                z: self.z,
                x: self.x + dx,
                y: self.y + dy,
            })
        })
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.z, self.x, self.y)
    }
}

impl fmt::Display for Metatile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metatile {}/{}/{}", self.z, self.x, self.y)
    }
}

impl FromStr for Tile {
    type Err = TileError;

    /// Parses `z/x/y` (surrounding whitespace allowed), as expire lists
    /// and `render_expired` input hold them.
    fn from_str(text: &str) -> Result<Tile, TileError> {
        let syntax = || TileError::Syntax(text.to_string());
        let mut parts = text.trim().split('/');
        let (Some(z), Some(x), Some(y), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(syntax());
        };
        let z: u8 = z.parse().map_err(|_| syntax())?;
        let x: u32 = x.parse().map_err(|_| syntax())?;
        let y: u32 = y.parse().map_err(|_| syntax())?;
        Tile::new(z, x, y)
    }
}

/// Latitude limit of the Web Mercator square.
pub const MAX_LATITUDE: f64 = 85.051_128_779_806_59;

/// A lon/lat box: west, south, east, north in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    /// Western edge, longitude.
    pub west: f64,
    /// Southern edge, latitude.
    pub south: f64,
    /// Eastern edge, longitude.
    pub east: f64,
    /// Northern edge, latitude.
    pub north: f64,
}

impl FromStr for BBox {
    type Err = String;

    /// `W,S,E,N` in degrees.
    fn from_str(s: &str) -> Result<BBox, String> {
        let parts: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{s:?} is not W,S,E,N (four numbers in degrees)"))?;
        let [west, south, east, north] = parts[..] else {
            return Err(format!("{s:?} is not W,S,E,N (four numbers in degrees)"));
        };
        let bbox = BBox {
            west,
            south,
            east,
            north,
        };
        if !(-180.0..=180.0).contains(&west)
            || !(-180.0..=180.0).contains(&east)
            || !(-90.0..=90.0).contains(&south)
            || !(-90.0..=90.0).contains(&north)
        {
            return Err(format!(
                "{s:?}: longitudes must be in -180..180, latitudes in -90..90"
            ));
        }
        if west > east || south > north {
            return Err(format!("{s:?}: west must not exceed east, nor south north"));
        }
        Ok(bbox)
    }
}

impl fmt::Display for BBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.west, self.south, self.east, self.north
        )
    }
}

/// The tile holding a lon/lat point at zoom `z` (render_list's formulas,
/// clamped to the world).
pub fn lonlat_to_tile(lon: f64, lat: f64, z: u8) -> Tile {
    let n = f64::from(1u32 << z);
    let lat = lat.clamp(-MAX_LATITUDE, MAX_LATITUDE).to_radians();
    let x = ((lon + 180.0) / 360.0 * n).floor();
    let y = ((1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor();
    let clamp = |v: f64| v.clamp(0.0, n - 1.0) as u32;
    Tile {
        z,
        x: clamp(x),
        y: clamp(y),
    }
}

/// The north-west and south-east tiles of `bbox` at zoom `z` (the
/// world's corners without one).
fn corner_tiles(z: u8, bbox: Option<&BBox>) -> (Tile, Tile) {
    match bbox {
        Some(b) => (
            lonlat_to_tile(b.west, b.north, z),
            lonlat_to_tile(b.east, b.south, z),
        ),
        None => {
            let last = (1u32 << z) - 1;
            (
                Tile { z, x: 0, y: 0 },
                Tile {
                    z,
                    x: last,
                    y: last,
                },
            )
        }
    }
}

/// The metatiles of zoom `z` touching `bbox` (all of the zoom's without
/// one), row by row from the north-west.
pub fn metatiles_at(z: u8, bbox: Option<&BBox>) -> impl Iterator<Item = Metatile> {
    let (min, max) = corner_tiles(z, bbox);
    let mask = !(METATILE - 1);
    let (x0, x1) = (min.x & mask, max.x & mask);
    let (y0, y1) = (min.y & mask, max.y & mask);
    (y0..=y1).step_by(METATILE as usize).flat_map(move |y| {
        (x0..=x1)
            .step_by(METATILE as usize)
            .map(move |x| Metatile { z, x, y })
    })
}

/// How many metatiles [`metatiles_at`] yields.
pub fn count_at(z: u8, bbox: Option<&BBox>) -> u64 {
    let (min, max) = corner_tiles(z, bbox);
    let side = |a: u32, b: u32| u64::from((b / METATILE) - (a / METATILE) + 1);
    side(min.x, max.x) * side(min.y, max.y)
}

/// The metatiles at `zoom` that cover the area of `tile`: its ancestor's
/// metatile when `zoom ≤ tile.z`, else every metatile inside the tile
/// (`4^(zoom − tile.z) / 64` of them from 3 zooms down). See
/// [`covering_metatile_count`] to check the size first.
pub fn covering_metatiles(tile: Tile, zoom: u8) -> impl Iterator<Item = Metatile> {
    let (xs, ys) = covering_ranges(tile, zoom);
    let step = METATILE as usize;
    xs.step_by(step).flat_map(move |x| {
        ys.clone()
            .step_by(step)
            .map(move |y| Metatile { z: zoom, x, y })
    })
}

/// How many metatiles [`covering_metatiles`] yields.
pub fn covering_metatile_count(tile: Tile, zoom: u8) -> u64 {
    let (xs, ys) = covering_ranges(tile, zoom);
    let side = |r: RangeInclusive<u32>| u64::from((r.end() - r.start()) / METATILE + 1);
    side(xs) * side(ys)
}

/// Metatile origins at `zoom` along x and y (inclusive ranges of multiples
/// of 8).
fn covering_ranges(tile: Tile, zoom: u8) -> (RangeInclusive<u32>, RangeInclusive<u32>) {
    let align = |v: u32| v & !(METATILE - 1);
    if zoom <= tile.z {
        let ancestor = tile.ancestor(tile.z - zoom);
        let (x, y) = (align(ancestor.x), align(ancestor.y));
        return (x..=x, y..=y);
    }
    let levels = zoom - tile.z;
    let span = |v: u32| align(v << levels)..=align(((v + 1) << levels) - 1);
    (span(tile.x), span(tile.y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_tiles() {
        assert_eq!(
            "18/131010/87170".parse::<Tile>().unwrap(),
            Tile {
                z: 18,
                x: 131010,
                y: 87170
            }
        );
        assert_eq!(
            " 0/0/0\n".parse::<Tile>().unwrap(),
            Tile { z: 0, x: 0, y: 0 }
        );
        assert!(matches!(
            "3/8/0".parse::<Tile>(),
            Err(TileError::OutOfRange { .. })
        ));
        assert!(matches!("21/0/0".parse::<Tile>(), Err(TileError::Zoom(21))));
        assert!(matches!(
            "15:1:2".parse::<Tile>(),
            Err(TileError::Syntax(_))
        ));
        assert!(matches!(
            "1/2/3/4".parse::<Tile>(),
            Err(TileError::Syntax(_))
        ));
    }

    #[test]
    fn metatiles_and_ancestors() {
        let t = Tile::new(18, 131010, 87170).unwrap();
        assert_eq!(
            t.metatile(),
            Metatile {
                z: 18,
                x: 131008,
                y: 87168
            }
        );
        assert_eq!(
            t.ancestor(3),
            Tile {
                z: 15,
                x: 16376,
                y: 10896
            }
        );
        assert_eq!(t.ancestor(30), Tile { z: 0, x: 0, y: 0 });
        assert_eq!(Metatile { z: 1, x: 0, y: 0 }.tiles().count(), 4);
        let tiles: Vec<Tile> = t.metatile().tiles().take(2).collect();
        assert_eq!(
            tiles[1],
            Tile {
                z: 18,
                x: 131008,
                y: 87169
            },
            "x-major order"
        );
        assert_eq!(t.metatile().tiles().count(), 64);
    }

    #[test]
    fn parses_boxes() {
        let b: BBox = "9.47,47.05,9.64,47.27".parse().unwrap();
        assert_eq!(b.west, 9.47);
        assert_eq!(b.north, 47.27);
        assert!("1,2,3".parse::<BBox>().is_err());
        assert!("10,0,5,1".parse::<BBox>().is_err());
        assert!("0,-91,1,1".parse::<BBox>().is_err());
        assert!("a,b,c,d".parse::<BBox>().is_err());
    }

    #[test]
    fn tiles_of_points() {
        assert_eq!(lonlat_to_tile(0.0, 0.0, 1), Tile { z: 1, x: 1, y: 1 });
        assert_eq!(lonlat_to_tile(-180.0, 90.0, 3), Tile { z: 3, x: 0, y: 0 });
        assert_eq!(lonlat_to_tile(180.0, -90.0, 3), Tile { z: 3, x: 7, y: 7 });
        // Liechtenstein's Vaduz at z16 (checked against render_list's maths).
        let t = lonlat_to_tile(9.5209, 47.1410, 16);
        assert_eq!((t.x, t.y), (34501, 23013));
    }

    #[test]
    fn metatiles_cover_the_box() {
        assert_eq!(
            metatiles_at(0, None).collect::<Vec<_>>(),
            [Metatile { z: 0, x: 0, y: 0 }]
        );
        assert_eq!(metatiles_at(4, None).count(), 4);
        assert_eq!(count_at(4, None), 4);
        let b: BBox = "9.47,47.05,9.64,47.27".parse().unwrap();
        for z in 0..=18 {
            let all: Vec<Metatile> = metatiles_at(z, Some(&b)).collect();
            assert_eq!(all.len() as u64, count_at(z, Some(&b)), "z{z}");
            for corner in [(b.west, b.north), (b.east, b.south), (b.west, b.south)] {
                let m = lonlat_to_tile(corner.0, corner.1, z).metatile();
                assert!(all.contains(&m), "z{z} {m}");
            }
        }
    }

    fn tile(z: u8, x: u32, y: u32) -> Tile {
        Tile::new(z, x, y).unwrap()
    }

    #[test]
    fn covering_metatiles_up_and_down() {
        let t = tile(15, 16376, 10896);
        // Same zoom and above: the ancestor's metatile.
        assert_eq!(
            covering_metatiles(t, 15).collect::<Vec<_>>(),
            [Metatile {
                z: 15,
                x: 16376,
                y: 10896
            }]
        );
        assert_eq!(
            covering_metatiles(t, 12).collect::<Vec<_>>(),
            [Metatile {
                z: 12,
                x: 2040,
                y: 1360
            }]
        );
        // 1–3 zooms down: one metatile.
        for zoom in 16..=18 {
            assert_eq!(covering_metatile_count(t, zoom), 1);
            let all: Vec<_> = covering_metatiles(t, zoom).collect();
            assert_eq!(all.len(), 1);
            let descendant = Tile {
                z: zoom,
                x: t.x << (zoom - 15),
                y: t.y << (zoom - 15),
            };
            assert_eq!(all[0], descendant.metatile());
        }
        // 4 and 5 zooms down: 2×2 and 4×4.
        assert_eq!(covering_metatile_count(t, 19), 4);
        let all: Vec<_> = covering_metatiles(t, 20).collect();
        assert_eq!(all.len(), 16);
        assert_eq!(covering_metatile_count(t, 20), 16);
        assert_eq!(
            all[0],
            Metatile {
                z: 20,
                x: 16376 * 32,
                y: 10896 * 32
            }
        );
        assert_eq!(
            all[1],
            Metatile {
                z: 20,
                x: 16376 * 32,
                y: 10896 * 32 + 8
            }
        );
        assert_eq!(
            all[15],
            Metatile {
                z: 20,
                x: 16376 * 32 + 24,
                y: 10896 * 32 + 24
            }
        );
        // A tile of an odd position one zoom down stays inside its metatile.
        let odd = tile(4, 15, 15);
        assert_eq!(
            covering_metatiles(odd, 5).collect::<Vec<_>>(),
            [Metatile { z: 5, x: 24, y: 24 }]
        );
        // The whole world.
        assert_eq!(covering_metatile_count(tile(0, 0, 0), 6), 64);
        assert_eq!(covering_metatile_count(tile(0, 0, 0), 20), 1 << 34);
    }
}
