//! A spatial sort key for clustering table rows: the position of a
//! geometry's bounding-box centre along a Hilbert curve over the Web
//! Mercator square. Rows sorted by it lie near their neighbours on disk,
//! which is what osm2pgsql gets from sorting by the geometry itself
//! (PostGIS orders geometries along a Hilbert curve of their box centres
//! too), while the sort compares integers.

use geo::{BoundingRect, Geometry};

/// Half the side of the EPSG:3857 square, in metres.
const HALF_WORLD: f64 = 20_037_508.342_789_244;

/// Bits per axis: cells of about 2.4 m at the equator, finer than any
/// index page's extent.
const ORDER: u32 = 24;

/// The Hilbert key of `geometry`'s box centre; 0 for an empty geometry.
/// Coordinates outside the square are clamped to its edge.
pub fn hilbert_key(geometry: &Geometry<f64>) -> i64 {
    let Some(rect) = geometry.bounding_rect() else {
        return 0;
    };
    let centre = rect.center();
    hilbert_index(grid(centre.x), grid(centre.y)) as i64
}

/// A coordinate's cell along one axis.
fn grid(value: f64) -> u32 {
    let cells = (1u32 << ORDER) as f64;
    let scaled = (value + HALF_WORLD) / (2.0 * HALF_WORLD) * cells;
    // NaN clamps to 0 too (`as` saturates and maps NaN to 0).
    scaled.clamp(0.0, cells - 1.0) as u32
}

/// The distance along the Hilbert curve of order [`ORDER`] of cell
/// (`x`, `y`) (the classic iterative conversion, rotating the quadrant at
/// each level).
fn hilbert_index(mut x: u32, mut y: u32) -> u64 {
    let last = (1u32 << ORDER) - 1;
    let mut index = 0u64;
    let mut level = 1u32 << (ORDER - 1);
    while level > 0 {
        let rx = u32::from(x & level != 0);
        let ry = u32::from(y & level != 0);
        index += u64::from(level) * u64::from(level) * u64::from((3 * rx) ^ ry);
        if ry == 0 {
            if rx == 1 {
                x = last - x;
                y = last - y;
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
    use geo::{point, Point};

    #[test]
    fn first_order_curve_visits_quadrants_in_hilbert_order() {
        // The order-1 curve, scaled up: lower left, upper left, upper
        // right, lower right.
        let half = 1u32 << (ORDER - 1);
        let keys: Vec<u64> = [(0, 0), (0, half), (half, half), (half, 0)]
            .into_iter()
            .map(|(x, y)| hilbert_index(x, y))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    #[test]
    fn neighbouring_cells_are_one_step_apart_somewhere_on_the_curve() {
        // Every step of the curve moves to an adjacent cell: check along a
        // small stretch by inverting with a search over a 4×4 block.
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
    fn keys_of_points_and_out_of_range_values() {
        let origin: Geometry<f64> = Point::new(0.0, 0.0).into();
        let far: Geometry<f64> = point!(x: 1e9, y: -1e9).into();
        let nan: Geometry<f64> = point!(x: f64::NAN, y: 0.0).into();
        assert!(hilbert_key(&origin) > 0);
        assert!(hilbert_key(&far) >= 0);
        assert!(hilbert_key(&nan) >= 0);
    }
}
