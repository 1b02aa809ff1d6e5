//! Tile maths for expiry: EPSG:3857 metres to fractional tile coordinates,
//! integer conversion, wrapping, and quadkeys.
//!
//! The constants and conversions follow osm2pgsql (`src/tile.hpp`,
//! `expire_tiles_t::coords_to_tile`): the world is a square of side
//! [`EARTH_CIRCUMFERENCE`] centred on 0/0, tile x grows eastwards from
//! the antimeridian and tile y grows southwards from the north edge.

use crate::tile::Tile;
use geo::{Coord, Rect};

/// osm2pgsql's `tile_t::EARTH_CIRCUMFERENCE`, deliberately the rounded
/// value and not 2πR = 40 075 016.6856…: tile edges must fall exactly where
/// osm2pgsql puts them.
pub const EARTH_CIRCUMFERENCE: f64 = 40_075_016.68;

/// Half of [`EARTH_CIRCUMFERENCE`]: the world spans ±this in x and y.
pub const HALF_EARTH_CIRCUMFERENCE: f64 = EARTH_CIRCUMFERENCE / 2.0;

/// The largest zoom a quadkey can hold (two bits per level in a `u64`,
/// minus osm2pgsql's "invalid" sentinel).
pub const MAX_QUADKEY_ZOOM: u8 = 31;

/// Tiles per side of the world at `zoom` (2^zoom).
pub fn tiles_per_side(zoom: u8) -> u32 {
    assert!(zoom <= MAX_QUADKEY_ZOOM, "zoom {zoom} is above 31");
    1u32 << zoom
}

/// Fractional tile coordinates of a 3857 point at `zoom`: the integer part
/// is the tile, the fraction the position inside it. Points outside the
/// world give coordinates outside `[0, 2^zoom)`.
pub fn tile_coords(point: Coord<f64>, zoom: u8) -> Coord<f64> {
    let width = f64::from(tiles_per_side(zoom));
    Coord {
        x: width * (0.5 + point.x / EARTH_CIRCUMFERENCE),
        y: width * (0.5 - point.y / EARTH_CIRCUMFERENCE),
    }
}

/// Integer conversion as osm2pgsql's C casts do it: toward zero, so −0.3
/// becomes 0, not −1. Saturates at the `i64` range; NaN becomes 0.
pub fn truncate(value: f64) -> i64 {
    value as i64
}

/// Reduces a tile x into `[0, 2^zoom)`, wrapping around the antimeridian
/// (Euclidean remainder: −1 is the last column).
pub fn wrap_x(x: i64, zoom: u8) -> u32 {
    // The remainder is in [0, 2^31), so it fits.
    x.rem_euclid(i64::from(tiles_per_side(zoom))) as u32
}

/// Spreads the 32 bits of `v` to the even bits of a `u64`.
fn spread_bits(v: u32) -> u64 {
    let mut v = u64::from(v);
    v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF;
    v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    v = (v | (v << 2)) & 0x3333_3333_3333_3333;
    v = (v | (v << 1)) & 0x5555_5555_5555_5555;
    v
}

/// Gathers the even bits of `v` into a `u32` (inverse of [`spread_bits`]).
fn gather_bits(v: u64) -> u32 {
    let mut v = v & 0x5555_5555_5555_5555;
    v = (v | (v >> 1)) & 0x3333_3333_3333_3333;
    v = (v | (v >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
    v = (v | (v >> 4)) & 0x00FF_00FF_00FF_00FF;
    v = (v | (v >> 8)) & 0x0000_FFFF_0000_FFFF;
    v = (v | (v >> 16)) & 0x0000_0000_FFFF_FFFF;
    v as u32
}

/// The quadkey (Morton code) of tile x/y: bit i of x goes to bit 2i, bit i
/// of y to bit 2i + 1. Ascending quadkeys visit every subtree in one
/// contiguous run, which is what lets lower zooms be derived in one pass.
pub fn quadkey(x: u32, y: u32) -> u64 {
    spread_bits(x) | (spread_bits(y) << 1)
}

/// x and y of a quadkey (inverse of [`quadkey`]).
pub fn quadkey_xy(quadkey: u64) -> (u32, u32) {
    (gather_bits(quadkey), gather_bits(quadkey >> 1))
}

/// The quadkey of the ancestor `levels` zooms up.
pub fn ancestor_quadkey(quadkey: u64, levels: u8) -> u64 {
    if levels >= 32 {
        0
    } else {
        quadkey >> (2 * u32::from(levels))
    }
}

/// The quadkey of a tile (its zoom is implied by the set it goes into).
pub fn tile_quadkey(tile: Tile) -> u64 {
    quadkey(tile.x, tile.y)
}

/// The tile at `zoom` with this quadkey.
pub fn tile_from_quadkey(quadkey: u64, zoom: u8) -> Tile {
    let (x, y) = quadkey_xy(quadkey);
    Tile { z: zoom, x, y }
}

/// The tile's square in 3857 metres (osm2pgsql's `tile_t::xmin()` …).
pub fn tile_bounds(tile: Tile) -> Rect<f64> {
    let extent = EARTH_CIRCUMFERENCE / f64::from(tiles_per_side(tile.z));
    let xmin = -HALF_EARTH_CIRCUMFERENCE + f64::from(tile.x) * extent;
    let ymax = HALF_EARTH_CIRCUMFERENCE - f64::from(tile.y) * extent;
    Rect::new(
        Coord {
            x: xmin,
            y: ymax - extent,
        },
        Coord {
            x: xmin + extent,
            y: ymax,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(x: f64, y: f64) -> Coord<f64> {
        Coord { x, y }
    }

    #[test]
    fn origin_is_a_tile_corner() {
        // 0/0 lies on the corner of the four z1 tiles; the fractional
        // coordinates are exactly 1.0, which truncates to tile (1, 1).
        let t = tile_coords(c(0.0, 0.0), 1);
        assert_eq!(t, c(1.0, 1.0));
        assert_eq!((truncate(t.x), truncate(t.y)), (1, 1));
        assert_eq!(tile_coords(c(0.0, 0.0), 0), c(0.5, 0.5));
    }

    #[test]
    fn world_corners_and_known_points() {
        let h = HALF_EARTH_CIRCUMFERENCE;
        assert_eq!(tile_coords(c(-h, h), 18), c(0.0, 0.0));
        assert_eq!(tile_coords(c(h, -h), 18), c(262_144.0, 262_144.0));
        // Vaduz (9.5209°E 47.141°N): the slippy-map formula gives
        // x = 17250.61, y = 11506.52 at z15.
        let vaduz = crate::apply::geom::project(95_209_000, 471_410_000);
        let t = tile_coords(vaduz, 15);
        assert_eq!((truncate(t.x), truncate(t.y)), (17_250, 11_506));
        assert!((t.x - 17_250.613).abs() < 1e-3 && (t.y - 11_506.522).abs() < 1e-3);
        // A point 1 mm west of the antimeridian.
        let t = tile_coords(c(h - 0.001, 0.0), 3);
        assert_eq!(truncate(t.x), 7);
    }

    #[test]
    fn truncation_is_toward_zero() {
        assert_eq!(truncate(-0.3), 0);
        assert_eq!(truncate(-0.999), 0);
        assert_eq!(truncate(-1.0), -1);
        assert_eq!(truncate(-1.5), -1);
        assert_eq!(truncate(2.999), 2);
        assert_eq!(truncate(f64::NAN), 0);
        assert_eq!(truncate(f64::INFINITY), i64::MAX);
    }

    #[test]
    fn wrapping_is_euclidean() {
        assert_eq!(wrap_x(-1, 3), 7);
        assert_eq!(wrap_x(-8, 3), 0);
        assert_eq!(wrap_x(-9, 3), 7);
        assert_eq!(wrap_x(8, 3), 0);
        assert_eq!(wrap_x(17, 3), 1);
        assert_eq!(wrap_x(5, 3), 5);
        // Upstream's `(W − x) + 1` would give 10 for −1 at z3.
    }

    #[test]
    fn quadkeys_interleave_x_in_even_bits() {
        assert_eq!(quadkey(0, 0), 0);
        assert_eq!(quadkey(1, 0), 0b01);
        assert_eq!(quadkey(0, 1), 0b10);
        assert_eq!(quadkey(1, 1), 0b11);
        assert_eq!(quadkey(2, 0), 0b0100);
        assert_eq!(quadkey(3, 5), 0b10_01_11);
        assert_eq!(quadkey(u32::MAX, 0), 0x5555_5555_5555_5555);
        assert_eq!(quadkey(0, u32::MAX), 0xAAAA_AAAA_AAAA_AAAA);
    }

    #[test]
    fn quadkey_round_trip() {
        let mut state = 0x1234_5678_9abc_def0_u64;
        for _ in 0..10_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let (x, y) = ((state >> 32) as u32, state as u32);
            assert_eq!(quadkey_xy(quadkey(x, y)), (x, y));
        }
        let tile = Tile::new(18, 131_010, 87_170).unwrap();
        assert_eq!(tile_from_quadkey(tile_quadkey(tile), 18), tile);
    }

    #[test]
    fn quadkey_order_groups_subtrees() {
        // The four children of z1 tile (1, 0) follow each other at z2 and
        // sort after every child of (0, 0).
        let children_of = |x: u32, y: u32| {
            let mut v: Vec<u64> = (0..4)
                .map(|i| quadkey(2 * x + (i & 1), 2 * y + (i >> 1)))
                .collect();
            v.sort();
            v
        };
        assert_eq!(children_of(0, 0), vec![0, 1, 2, 3]);
        assert_eq!(children_of(1, 0), vec![4, 5, 6, 7]);
        assert_eq!(children_of(0, 1), vec![8, 9, 10, 11]);
        for qk in 0..16u64 {
            assert_eq!(ancestor_quadkey(qk, 1), qk / 4);
            let (x, y) = quadkey_xy(qk);
            assert_eq!(quadkey_xy(ancestor_quadkey(qk, 1)), (x / 2, y / 2));
        }
        assert_eq!(ancestor_quadkey(u64::MAX, 32), 0);
    }

    #[test]
    fn tile_bounds_match_osm2pgsql() {
        let b = tile_bounds(Tile { z: 1, x: 1, y: 0 });
        assert_eq!(b.min(), c(0.0, 0.0));
        assert_eq!(
            b.max(),
            c(HALF_EARTH_CIRCUMFERENCE, HALF_EARTH_CIRCUMFERENCE)
        );
        let b = tile_bounds(Tile { z: 0, x: 0, y: 0 });
        assert_eq!(b.width(), EARTH_CIRCUMFERENCE);
    }
}
