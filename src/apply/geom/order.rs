//! The order in which an import stores rows: PostGIS's own order of
//! geometries (`ORDER BY way`, which osm2pgsql's clustering uses), computed
//! here as an integer key so the import sorts integers and asks PostgreSQL
//! to compare geometries only where two keys tie.
//!
//! PostGIS 3 sorts geometries by the position of their bounding box's
//! centre along a Hilbert curve (`gserialized_cmp` and
//! `gbox_get_sortable_hash` in liblwgeom; ties by the serialized bytes).
//! The box is PostGIS's float box (each bound rounded outwards to an
//! `f32`), the centre an `f32`, moved into [1, 2) for EPSG:3857 and 4326 so
//! the exponent bits stay constant, and the curve runs over the centre's
//! raw `f32` bit patterns. Rows in that order are laid out on disk as
//! osm2pgsql lays them out, which is not only about locality: where a
//! Mapnik style leaves label priority ties to row order, the same order
//! places the same labels.

use geo::{BoundingRect, Geometry};

/// The sort key of `geometry` in a column of projection `srid`:
/// `ORDER BY key, geometry` is PostGIS's `ORDER BY geometry`. Empty
/// geometries sort first.
pub fn postgis_sort_key(geometry: &Geometry<f64>, srid: i32) -> i64 {
    let Some(rect) = geometry.bounding_rect() else {
        return i64::MIN;
    };
    let (min, max) = (rect.min(), rect.max());
    let centre = |low: f64, high: f64| ((f32_up(high) + f32_down(low)) / 2.0) as f32;
    let (mut x, mut y) = (centre(min.x, max.x), centre(min.y, max.y));
    match srid {
        3857 | 3395 => {
            x = (1.5 + f64::from(x) / 67_108_864.0) as f32;
            y = (1.5 + f64::from(y) / 67_108_864.0) as f32;
        }
        4326 => {
            x = (1.5 + f64::from(x) / 512.0) as f32;
            y = (1.5 + f64::from(y) / 256.0) as f32;
        }
        _ => {}
    }
    // liblwgeom calls its curve with (y, x); the key is unsigned there, so
    // flipping the top bit keeps its order in an i64.
    (hilbert_index(y.to_bits(), x.to_bits()) as i64) ^ i64::MIN
}

/// The largest `f32` at or below `value` (liblwgeom's `next_float_down`).
fn f32_down(value: f64) -> f64 {
    let rounded = value as f32;
    if f64::from(rounded) > value {
        f64::from(next_toward(rounded, f32::NEG_INFINITY))
    } else {
        f64::from(rounded)
    }
}

/// The smallest `f32` at or above `value` (liblwgeom's `next_float_up`).
fn f32_up(value: f64) -> f64 {
    let rounded = value as f32;
    if f64::from(rounded) < value {
        f64::from(next_toward(rounded, f32::INFINITY))
    } else {
        f64::from(rounded)
    }
}

/// The `f32` next to the finite `value` in the direction of `target`
/// (C's `nextafterf`; `f32::next_up` needs a newer Rust than the
/// project's minimum).
fn next_toward(value: f32, target: f32) -> f32 {
    if value == 0.0 {
        let smallest = f32::from_bits(1);
        return if target > 0.0 { smallest } else { -smallest };
    }
    let bits = value.to_bits();
    // Away from zero is one more in the magnitude bits, toward zero one less.
    let away = (target > value) == (value > 0.0);
    f32::from_bits(if away { bits + 1 } else { bits - 1 })
}

/// The distance of cell (`x`, `y`) along the Hilbert curve over the full
/// 2³² × 2³² grid, starting at (0, 0) and ending at (2³² − 1, 0) (the
/// classic iterative conversion, rotating the quadrant at each level).
fn hilbert_index(mut x: u32, mut y: u32) -> u64 {
    let mut index = 0u64;
    let mut level = 1u32 << 31;
    while level > 0 {
        let rx = u32::from(x & level != 0);
        let ry = u32::from(y & level != 0);
        index += u64::from(level) * u64::from(level) * u64::from((3 * rx) ^ ry);
        if ry == 0 {
            if rx == 1 {
                // n − 1 − x with n = 2³²: the bit complement.
                x = !x;
                y = !y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        level >>= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::Point;

    #[test]
    fn first_order_curve_visits_quadrants_in_hilbert_order() {
        let half = 1u32 << 31;
        let keys: Vec<u64> = [(0, 0), (0, half), (half, half), (half, 0)]
            .into_iter()
            .map(|(x, y)| hilbert_index(x, y))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    #[test]
    fn neighbouring_cells_are_one_step_apart_on_the_curve() {
        // The low 2 bits of each axis, with the rest zero: a 4×4 corner of
        // the grid, walked in curve order, moves one cell at a time.
        let mut by_index: Vec<(u64, u32, u32)> = (0..4)
            .flat_map(|x| (0..4).map(move |y| (hilbert_index(x, y), x, y)))
            .collect();
        by_index.sort();
        for pair in by_index.windows(2) {
            let (_, x0, y0) = pair[0];
            let (_, x1, y1) = pair[1];
            assert_eq!(x0.abs_diff(x1) + y0.abs_diff(y1), 1, "{pair:?}");
        }
    }

    #[test]
    fn next_floats_are_adjacent() {
        for v in [1.0f32, -1.0, 0.1, -3.5e7, f32::MIN_POSITIVE] {
            let up = next_toward(v, f32::INFINITY);
            let down = next_toward(v, f32::NEG_INFINITY);
            assert!(down < v && v < up, "{v}");
            assert_eq!(next_toward(up, f32::NEG_INFINITY), v);
            assert_eq!(next_toward(down, f32::INFINITY), v);
        }
        assert!(next_toward(0.0, 1.0) > 0.0 && next_toward(0.0, -1.0) < 0.0);
    }

    #[test]
    fn float_rounding_goes_outwards() {
        let v = 0.1f64;
        assert!(f32_down(v) <= v && f32_up(v) >= v && f32_down(v) < f32_up(v));
        assert_eq!(f32_down(0.5), 0.5);
        assert_eq!(f32_up(0.5), 0.5);
    }

    #[test]
    fn empty_geometries_sort_first() {
        let empty: Geometry<f64> = geo::MultiPoint::<f64>(vec![]).into();
        let point: Geometry<f64> = Point::new(-2e7, -2e7).into();
        assert!(postgis_sort_key(&empty, 3857) < postgis_sort_key(&point, 3857));
    }
}
