//! `area()`, `length()` and `centroid()` with Boost.Geometry's arithmetic,
//! which osm2pgsql 1.8 uses for them (`geom::area`, `geom::length`,
//! `geom::centroid` in `src/geom-functions.cpp`), so that results agree to
//! the last bit:
//!
//! - area: per ring, segments walked backwards (osm2pgsql declares its rings
//!   counter-clockwise, `geom-boost-adaptor.hpp`) with the trapezoid formula
//!   `(x1 + x2)·(y1 − y2)`, halved; a polygon is its outer ring plus the sum
//!   of its inner rings, a multipolygon the sum of its polygons;
//! - length: sum of `√(dx² + dy²)` per segment; polygons have none;
//! - centroid: Bashein–Detmer for areas (coordinates taken relative to the
//!   first point), length-weighted segment midpoints for lines, the mean for
//!   points; osm2pgsql's own rule for collections (the members of the
//!   highest dimension only).

use geo::{Coord, Geometry, GeometryCollection, LineString, MultiPolygon, Point, Polygon};

/// osm2pgsql's `geom::area`: absolute area in coordinate units, 0 for
/// anything not (multi)polygonal; a collection sums its members' areas.
pub(super) fn area(geometry: &Geometry<f64>) -> f64 {
    match geometry {
        Geometry::Polygon(p) => polygon_area(p).abs(),
        Geometry::MultiPolygon(mp) => multipolygon_area(mp).abs(),
        Geometry::GeometryCollection(c) => c.0.iter().fold(0.0, |sum, g| sum + area(g)).abs(),
        _ => 0.0,
    }
}

/// `boost::geometry::area` of a closed ring declared counter-clockwise
/// (`detail::area::ring_area` with `strategy::area::cartesian`).
fn ring_area(ring: &LineString<f64>) -> f64 {
    if ring.0.len() < 4 {
        return 0.0;
    }
    let mut points = ring.0.iter().rev();
    let Some(mut previous) = points.next() else {
        return 0.0;
    };
    let mut sum = 0.0;
    for point in points {
        sum += (previous.x + point.x) * (previous.y - point.y);
        previous = point;
    }
    sum / 2.0
}

/// `calculate_polygon_sum`: outer ring plus the sum of the inner rings.
fn polygon_area(polygon: &Polygon<f64>) -> f64 {
    let inners = polygon
        .interiors()
        .iter()
        .fold(0.0, |sum, ring| sum + ring_area(ring));
    ring_area(polygon.exterior()) + inners
}

fn multipolygon_area(multipolygon: &MultiPolygon<f64>) -> f64 {
    multipolygon
        .0
        .iter()
        .fold(0.0, |sum, p| sum + polygon_area(p))
}

/// osm2pgsql's `geom::length`: `boost::geometry::length` of (multi)lines,
/// 0 for points and polygons; a collection sums its members' lengths (in
/// double precision).
pub(super) fn length(geometry: &Geometry<f64>) -> f64 {
    match geometry {
        Geometry::LineString(l) => line_length(l).to_f64(),
        Geometry::MultiLineString(ml) => {
            ml.0.iter()
                .fold(Extended::ZERO, |sum, l| sum.add(line_length(l)))
                .to_f64()
        }
        Geometry::GeometryCollection(c) => c.0.iter().fold(0.0, |sum, g| sum + length(g)),
        _ => 0.0,
    }
}

/// Boost sums lengths in `long double` (`default_length_result`), which
/// is x87 extended precision where osm2pgsql runs; the segment lengths
/// themselves are doubles.
fn line_length(line: &LineString<f64>) -> Extended {
    line.0.windows(2).fold(Extended::ZERO, |sum, w| {
        sum.add(Extended::from_f64(distance(w[0], w[1])))
    })
}

/// A non-negative x87 80-bit extended precision number (64-bit mantissa,
/// round to nearest even), just enough to add lengths like `long double`
/// on x86-64 Linux: `mantissa · 2^exponent`, the mantissa's top bit set
/// unless it is zero.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Extended {
    mantissa: u64,
    exponent: i32,
}

impl Extended {
    const ZERO: Extended = Extended {
        mantissa: 0,
        exponent: 0,
    };

    /// Exact conversion of a finite non-negative double.
    fn from_f64(value: f64) -> Self {
        let bits = value.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as i32;
        let fraction = bits & ((1 << 52) - 1);
        let (mantissa, exponent) = match biased {
            0 => (fraction, -1074),
            _ => (fraction | 1 << 52, biased - 1075),
        };
        if mantissa == 0 {
            return Self::ZERO;
        }
        let shift = mantissa.leading_zeros();
        Extended {
            mantissa: mantissa << shift,
            exponent: exponent - shift as i32,
        }
    }

    /// The sum, rounded to 64 significant bits, ties to even.
    fn add(self, other: Extended) -> Extended {
        if self.mantissa == 0 {
            return other;
        }
        if other.mantissa == 0 {
            return self;
        }
        let (high, low) = if self.exponent >= other.exponent {
            (self, other)
        } else {
            (other, self)
        };
        // the larger operand's top bit at bit 125, room for the carry
        let base = high.exponent - 62;
        let difference = (high.exponent - low.exponent) as u32;
        let low_aligned = u128::from(low.mantissa) << 62;
        let (low_part, sticky) = if difference >= 128 {
            (0, true)
        } else {
            let shifted = low_aligned >> difference;
            (shifted, shifted << difference != low_aligned)
        };
        let sum = (u128::from(high.mantissa) << 62) + low_part;
        let shift = 127 - sum.leading_zeros() - 63;
        let (mantissa, carry) = round_half_even(sum, shift, sticky);
        Extended {
            mantissa: (mantissa >> carry) as u64,
            exponent: base + (shift + carry) as i32,
        }
    }

    /// Rounded to the nearest double, ties to even (`static_cast<double>`).
    fn to_f64(self) -> f64 {
        if self.mantissa == 0 {
            return 0.0;
        }
        // bits to drop so that the last kept bit is worth 2⁻¹⁰⁷⁴ (subnormal)
        let subnormal_shift = -1074 - self.exponent;
        if subnormal_shift > 11 {
            if subnormal_shift > 65 {
                return 0.0;
            }
            let (kept, _) =
                round_half_even(u128::from(self.mantissa), subnormal_shift as u32, false);
            // 2⁵² (rounded up to the smallest normal) has the right bits too
            return f64::from_bits(kept as u64);
        }
        let (mantissa, carry) = round_half_even(u128::from(self.mantissa), 11, false);
        let mantissa = (mantissa >> carry) as u64; // 53 bits
        let biased = self.exponent + 11 + carry as i32 + 52 + 1023;
        if biased >= 2047 {
            return f64::INFINITY;
        }
        f64::from_bits(((biased as u64) << 52) | (mantissa & ((1 << 52) - 1)))
    }
}

/// `value` without its lowest `shift` (≥ 1) bits, rounded to nearest, ties
/// to even; `sticky` tells that the true value is a little above `value`.
/// Returns the rounded value and 1 if rounding carried into a new top bit
/// (the caller shifts it out), else 0.
fn round_half_even(value: u128, shift: u32, sticky: bool) -> (u128, u32) {
    let kept = value >> shift;
    let rest = value & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    let up = rest > half || (rest == half && (sticky || kept & 1 == 1));
    let rounded = kept + u128::from(up);
    let bits = 128 - kept.leading_zeros();
    let carry = u32::from(128 - rounded.leading_zeros() > bits);
    (rounded, carry)
}

/// Boost's `pythagoras` distance.
fn distance(a: Coord<f64>, b: Coord<f64>) -> f64 {
    let dx = a.x - b.x;
    let dy = a.y - b.y;
    (dx * dx + dy * dy).sqrt()
}

/// osm2pgsql's `geom::centroid` of a non-null geometry; `None` where Boost
/// throws (a geometry without points).
pub(super) fn centroid(geometry: &Geometry<f64>) -> Option<Coord<f64>> {
    match geometry {
        Geometry::Point(p) => Some(p.0),
        Geometry::LineString(l) => linear_centroid(std::slice::from_ref(l)),
        Geometry::Polygon(p) => polygon_centroid(p),
        Geometry::MultiPoint(mp) => points_centroid(&mp.0),
        Geometry::MultiLineString(ml) => linear_centroid(&ml.0),
        Geometry::MultiPolygon(mp) => areal_centroid(&mp.0),
        Geometry::GeometryCollection(c) => collection_centroid(c),
        Geometry::Line(_) | Geometry::Rect(_) | Geometry::Triangle(_) => None,
    }
}

/// `boost::geometry::math::equals(value, 0)` with the default policy: equal
/// up to machine epsilon relative to max(|value|, 1).
fn equals_zero(value: f64) -> bool {
    value == 0.0 || (value.is_finite() && value.abs() <= f64::EPSILON * value.abs().max(1.0))
}

/// `strategy::centroid::average` over all points.
fn points_centroid(points: &[Point<f64>]) -> Option<Coord<f64>> {
    if points.is_empty() {
        return None;
    }
    let mut sum = Coord { x: 0.0, y: 0.0 };
    for p in points {
        sum.x += p.x();
        sum.y += p.y();
    }
    let count = points.len() as f64;
    Some(Coord {
        x: sum.x / count,
        y: sum.y / count,
    })
}

/// `strategy::centroid::weighted_length` over all segments of all lines
/// (no translation for linear geometries); the first point where the total
/// length is zero (`point_on_border`).
fn linear_centroid(lines: &[LineString<f64>]) -> Option<Coord<f64>> {
    let first = lines.iter().find_map(|l| l.0.first().copied())?;
    let (mut length, mut sum_x, mut sum_y) = (0.0, 0.0, 0.0);
    for line in lines {
        for w in line.0.windows(2) {
            let d = distance(w[0], w[1]);
            length += d;
            let half = d / 2.0;
            sum_x += (w[0].x + w[1].x) * half;
            sum_y += (w[0].y + w[1].y) * half;
        }
    }
    if equals_zero(length) || !length.is_finite() {
        return Some(first);
    }
    Some(Coord {
        x: sum_x / length,
        y: sum_y / length,
    })
}

/// Sums of `strategy::centroid::bashein_detmer`.
#[derive(Default)]
struct AreaSums {
    count: usize,
    a2: f64,
    x: f64,
    y: f64,
}

impl AreaSums {
    /// All segments of a closed ring, translated by `origin`
    /// (`centroid_range_state` with the `translating_transformer`).
    fn add_ring(&mut self, ring: &LineString<f64>, origin: Coord<f64>) {
        for w in ring.0.windows(2) {
            let (p1, p2) = (w[0] - origin, w[1] - origin);
            let ai = p1.x * p2.y - p1.y * p2.x;
            self.count += 1;
            self.a2 += ai;
            self.x += ai * (p1.x + p2.x);
            self.y += ai * (p1.y + p2.y);
        }
    }

    fn result(&self, origin: Coord<f64>) -> Option<Coord<f64>> {
        if self.count == 0 || equals_zero(self.a2) {
            return None;
        }
        let a3 = 3.0 * self.a2;
        a3.is_finite().then(|| Coord {
            x: self.x / a3 + origin.x,
            y: self.y / a3 + origin.y,
        })
    }
}

/// Bashein–Detmer over all rings of all polygons, relative to the first
/// point (Boost's `centroid_multi`; a single polygon is the same sum); the
/// first point where the area is zero (`point_on_border`).
fn areal_centroid(polygons: &[Polygon<f64>]) -> Option<Coord<f64>> {
    let origin = polygons
        .iter()
        .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()))
        .find_map(|ring| ring.0.first().copied())?;
    let mut sums = AreaSums::default();
    for polygon in polygons {
        sums.add_ring(polygon.exterior(), origin);
        for ring in polygon.interiors() {
            sums.add_ring(ring, origin);
        }
    }
    Some(sums.result(origin).unwrap_or(origin))
}

/// A single polygon: Boost's `range_ok` on its outer ring first.
fn polygon_centroid(polygon: &Polygon<f64>) -> Option<Coord<f64>> {
    match polygon.exterior().0.as_slice() {
        [] => None,
        [only] => Some(*only),
        _ => areal_centroid(std::slice::from_ref(polygon)),
    }
}

/// osm2pgsql's `geom::dimension`: 0 points, 1 lines, 2 polygons, the
/// largest member dimension for collections.
fn dimension(geometry: &Geometry<f64>) -> usize {
    match geometry {
        Geometry::LineString(_) | Geometry::MultiLineString(_) | Geometry::Line(_) => 1,
        Geometry::Polygon(_)
        | Geometry::MultiPolygon(_)
        | Geometry::Rect(_)
        | Geometry::Triangle(_) => 2,
        Geometry::GeometryCollection(c) => c.0.iter().map(dimension).max().unwrap_or(0),
        Geometry::Point(_) | Geometry::MultiPoint(_) => 0,
    }
}

/// osm2pgsql's `filtered_centroid`: the centroid of the members of the
/// collection's dimension, gathered into one multi geometry (nested
/// collections are left out; osm2pgsql never builds them).
fn collection_centroid(collection: &GeometryCollection<f64>) -> Option<Coord<f64>> {
    let members = || collection.0.iter();
    match members().map(dimension).max().unwrap_or(0) {
        0 => {
            let points: Vec<Point<f64>> = members()
                .flat_map(|g| match g {
                    Geometry::Point(p) => vec![*p],
                    Geometry::MultiPoint(mp) => mp.0.clone(),
                    _ => Vec::new(),
                })
                .collect();
            points_centroid(&points)
        }
        1 => {
            let lines: Vec<LineString<f64>> = members()
                .flat_map(|g| match g {
                    Geometry::LineString(l) => vec![l.clone()],
                    Geometry::MultiLineString(ml) => ml.0.clone(),
                    _ => Vec::new(),
                })
                .collect();
            linear_centroid(&lines)
        }
        _ => {
            let polygons: Vec<Polygon<f64>> = members()
                .flat_map(|g| match g {
                    Geometry::Polygon(p) => vec![p.clone()],
                    Geometry::MultiPolygon(mp) => mp.0.clone(),
                    _ => Vec::new(),
                })
                .collect();
            areal_centroid(&polygons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{coord, line_string, point, polygon, MultiLineString, MultiPoint};

    fn square(x0: f64, y0: f64, side: f64) -> Polygon<f64> {
        polygon![
            (x: x0, y: y0), (x: x0, y: y0 + side), (x: x0 + side, y: y0 + side),
            (x: x0 + side, y: y0), (x: x0, y: y0)
        ]
    }

    #[test]
    fn ring_area_sign_follows_boost() {
        // counter-clockwise is positive for rings declared counter-clockwise
        let ccw = line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 1.0), (x: 0.0, y: 0.0)];
        assert_eq!(ring_area(&ccw), 1.0);
        let cw: LineString<f64> = ccw.0.iter().rev().copied().collect();
        assert_eq!(ring_area(&cw), -1.0);
        // fewer than 4 points: no area
        assert_eq!(
            ring_area(&line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 0.0, y: 0.0)]),
            0.0
        );
    }

    #[test]
    fn areas_like_osm2pgsql_tests() {
        // test-geom-polygons.cpp: 3×3 square with a 1×1 hole → 8
        let mut p = square(0.0, 0.0, 3.0);
        p.interiors_push(line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 1.0), (x: 2.0, y: 2.0), (x: 1.0, y: 2.0), (x: 1.0, y: 1.0)]);
        assert_eq!(area(&Geometry::Polygon(p.clone())), 8.0);
        // test-geom-multipolygons.cpp: 1 + (9 − 1) = 9
        let mut q = square(2.0, 2.0, 3.0);
        q.interiors_push(line_string![(x: 3.0, y: 3.0), (x: 4.0, y: 3.0), (x: 4.0, y: 4.0), (x: 3.0, y: 4.0), (x: 3.0, y: 3.0)]);
        let mp = MultiPolygon::new(vec![square(0.0, 0.0, 1.0), q]);
        assert_eq!(area(&Geometry::MultiPolygon(mp)), 9.0);
        assert_eq!(area(&Geometry::Point(point!(x: 1.0, y: 1.0))), 0.0);
        let line = Geometry::LineString(line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 1.0)]);
        assert_eq!(area(&line), 0.0);
        // collection: point + unit square → 1
        let c = GeometryCollection::new_from(vec![
            Geometry::Point(point!(x: 1.0, y: 1.0)),
            Geometry::Polygon(square(1.0, 1.0, 1.0)),
        ]);
        assert_eq!(area(&Geometry::GeometryCollection(c)), 1.0);
    }

    #[test]
    fn area_uses_the_trapezoid_formula_bit_for_bit() {
        // Values where the formula matters: the shoelace with raw products
        // rounds differently. Expected = the same sum written out.
        let ring = line_string![
            (x: 9.5270956, y: 47.0862971), (x: 9.5271, y: 47.0862971),
            (x: 9.5271, y: 47.0863), (x: 9.5270956, y: 47.0862971)
        ];
        let p = &ring.0;
        let expected = (((p[3].x + p[2].x) * (p[3].y - p[2].y)
            + (p[2].x + p[1].x) * (p[2].y - p[1].y))
            + (p[1].x + p[0].x) * (p[1].y - p[0].y))
            / 2.0;
        let expected: f64 = (expected + 0.0_f64).abs();
        assert_eq!(
            area(&Geometry::Polygon(Polygon::new(ring, vec![]))),
            expected
        );
    }

    #[test]
    fn lengths() {
        let line = Geometry::LineString(
            line_string![(x: 0.0, y: 0.0), (x: 3.0, y: 4.0), (x: 3.0, y: 0.0)],
        );
        assert_eq!(length(&line), 9.0);
        assert_eq!(length(&Geometry::Polygon(square(0.0, 0.0, 1.0))), 0.0);
        let ml = MultiLineString::new(vec![
            line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 1.0)],
            line_string![(x: 0.0, y: 0.0), (x: 0.0, y: 2.0)],
        ]);
        assert_eq!(length(&Geometry::MultiLineString(ml)), 3.0);
        assert_eq!(length(&Geometry::Point(point!(x: 1.0, y: 1.0))), 0.0);
    }

    #[test]
    fn extended_precision_round_trips_doubles() {
        for value in [0.0, 1.0, 0.1, 3.5e-300, 5e-324, 1.7e308, 48205.744441031195] {
            assert_eq!(Extended::from_f64(value).to_f64(), value, "{value:e}");
        }
    }

    #[test]
    fn extended_precision_keeps_eleven_more_bits() {
        let tiny = 2f64.powi(-53);
        // in doubles, 1 + 2⁻⁵³ rounds back to 1 (tie to even), twice
        assert_eq!(1.0 + tiny + tiny, 1.0);
        // in extended precision both halves are kept: 1 + 2⁻⁵²
        let sum = Extended::from_f64(1.0)
            .add(Extended::from_f64(tiny))
            .add(Extended::from_f64(tiny));
        assert_eq!(sum.to_f64(), 1.0 + 2f64.powi(-52));
        // 2⁻⁶⁴ is below the 64-bit mantissa of 1: a tie, to even (down)
        let sum = Extended::from_f64(1.0).add(Extended::from_f64(2f64.powi(-64)));
        assert_eq!(sum, Extended::from_f64(1.0));
        // a little more than the tie rounds up; far smaller values vanish
        let sum = Extended::from_f64(1.0).add(Extended::from_f64(2f64.powi(-64) * 1.5));
        assert_eq!(sum.mantissa, (1 << 63) + 1);
        let sum = Extended::from_f64(1.0).add(Extended::from_f64(1e-300));
        assert_eq!(sum, Extended::from_f64(1.0));
        // carrying into a new top bit
        let almost_two = Extended {
            mantissa: u64::MAX,
            exponent: -63,
        };
        let sum = almost_two.add(Extended::from_f64(2f64.powi(-63)));
        assert_eq!(sum.to_f64(), 2.0);
        assert_eq!(almost_two.to_f64(), 2.0);
        assert_eq!(Extended::ZERO.add(Extended::ZERO).to_f64(), 0.0);
        let max = Extended::from_f64(f64::MAX);
        assert_eq!(max.add(max).to_f64(), f64::INFINITY);
    }

    #[test]
    fn centroids_from_osm2pgsql_tests() {
        assert_eq!(
            centroid(&Geometry::Polygon(square(0.0, 0.0, 1.0))),
            Some(coord! { x: 0.5, y: 0.5 })
        );
        let mut p = square(0.0, 0.0, 3.0);
        p.interiors_push(line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 1.0), (x: 2.0, y: 2.0), (x: 1.0, y: 2.0), (x: 1.0, y: 1.0)]);
        assert_eq!(
            centroid(&Geometry::Polygon(p)),
            Some(coord! { x: 1.5, y: 1.5 })
        );
        let line = line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 2.0)];
        assert_eq!(
            centroid(&Geometry::LineString(line)),
            Some(coord! { x: 1.5, y: 1.5 })
        );
        let mp = MultiPoint::new(vec![
            point!(x: 1.0, y: 1.0),
            point!(x: 2.0, y: 1.0),
            point!(x: 3.0, y: 1.0),
        ]);
        assert_eq!(
            centroid(&Geometry::MultiPoint(mp)),
            Some(coord! { x: 2.0, y: 1.0 })
        );
        let mp = MultiPolygon::new(vec![square(0.0, 0.0, 1.0)]);
        assert_eq!(
            centroid(&Geometry::MultiPolygon(mp)),
            Some(coord! { x: 0.5, y: 0.5 })
        );
    }

    #[test]
    fn collection_centroid_uses_the_highest_dimension() {
        // test-geom-collections.cpp "create_collection from OSM data": a
        // point, a closed 4-unit line and a 1-unit line → exactly (3.2, 3.3)
        let c = GeometryCollection::new_from(vec![
            Geometry::Point(point!(x: 1.0, y: 1.0)),
            Geometry::LineString(
                line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 1.0), (x: 2.0, y: 2.0), (x: 1.0, y: 2.0), (x: 1.0, y: 1.0)],
            ),
            Geometry::LineString(line_string![(x: 10.0, y: 10.0), (x: 10.0, y: 11.0)]),
        ]);
        assert_eq!(
            centroid(&Geometry::GeometryCollection(c)),
            Some(coord! { x: 3.2, y: 3.3 })
        );
        // points only, one of them a multipoint
        let c = GeometryCollection::new_from(vec![Geometry::MultiPoint(MultiPoint::new(vec![
            point!(x: 1.0, y: 1.0),
            point!(x: 1.0, y: 2.0),
            point!(x: 2.0, y: 1.0),
            point!(x: 2.0, y: 2.0),
        ]))]);
        assert_eq!(
            centroid(&Geometry::GeometryCollection(c)),
            Some(coord! { x: 1.5, y: 1.5 })
        );
        // a polygon wins over the point
        let c = GeometryCollection::new_from(vec![
            Geometry::Point(point!(x: 1.0, y: 1.0)),
            Geometry::Polygon(square(1.0, 1.0, 1.0)),
        ]);
        assert_eq!(
            centroid(&Geometry::GeometryCollection(c)),
            Some(coord! { x: 1.5, y: 1.5 })
        );
        assert_eq!(
            centroid(&Geometry::GeometryCollection(GeometryCollection::default())),
            None
        );
    }

    #[test]
    fn degenerate_centroids_fall_back_to_the_first_point() {
        // zero area: Boost's point_on_border
        let flat = polygon![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 2.0, y: 0.0), (x: 0.0, y: 0.0)];
        assert_eq!(
            centroid(&Geometry::Polygon(flat)),
            Some(coord! { x: 0.0, y: 0.0 })
        );
        let same = line_string![(x: 3.0, y: 4.0), (x: 3.0, y: 4.0)];
        assert_eq!(
            centroid(&Geometry::LineString(same)),
            Some(coord! { x: 3.0, y: 4.0 })
        );
        assert_eq!(
            centroid(&Geometry::MultiPoint(MultiPoint::new(vec![]))),
            None
        );
    }

    #[test]
    fn areal_centroid_is_translated_to_the_first_point() {
        // far from the origin the translation keeps all digits: a square
        // around (1e6 + 0.5, 1e6 + 0.5) gives its exact centre
        let p = square(1_000_000.0, 1_000_000.0, 1.0);
        assert_eq!(
            centroid(&Geometry::Polygon(p)),
            Some(coord! { x: 1_000_000.5, y: 1_000_000.5 })
        );
    }
}
