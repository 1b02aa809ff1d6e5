//! Which metatiles a pre-render covers (`tilepipe render`, like mod_tile's
//! `render_list -a`): every metatile of a zoom range, or those touching a
//! lon/lat box.

use crate::tile::{Metatile, Tile, METATILE};
use std::fmt;
use std::str::FromStr;

/// Latitude limit of the Web Mercator square.
pub const MAX_LATITUDE: f64 = 85.051_128_779_806_59;

/// A lon/lat box: west, south, east, north in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub west: f64,
    pub south: f64,
    pub east: f64,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
