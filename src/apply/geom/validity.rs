//! A cheap, conservative proof that a polygon is valid in PostGIS' sense
//! (`ST_IsValid`, i.e. GEOS `IsValidOp` with OGC semantics), so that the
//! import can skip asking PostgreSQL for most polygons.
//!
//! [`surely_valid`] only handles the common case, a polygon without holes
//! whose ring is simple, and answers `false` ("don't know") for everything
//! else. A `true` must never be wrong, so every decision rests on exact
//! predicates: Shewchuk's adaptive `orient2d` (through
//! [`geo::kernels::RobustKernel`]) and plain comparisons of coordinates.
//! Whenever an orientation comes out as zero (collinear) the answer is
//! `false`, even where a finer analysis could prove validity.
//!
//! [`surely_valid_geometry`] extends the answer to every geometry an output
//! row holds (points, lines, multipolygons).
//!
//! Why this is enough for GEOS: a single shell is valid when its
//! coordinates are finite, it is closed, it has at least four points after
//! removing consecutive repeated points, and no two of its segments (again
//! after removing repeated points) intersect except adjacent segments in
//! their one shared vertex. The checks below prove exactly that, with strict
//! orientation signs.

use geo::kernels::{Kernel, Orientation, RobustKernel};
use geo::{BoundingRect, Coord, Geometry, LineString, MultiPolygon, Polygon};

/// Rings with more segments than this are checked with a sweep over the
/// segments sorted by their smallest x instead of all pairs; smaller rings
/// need no allocation. Optimised builds measured the sweep (allocation
/// included) faster from about 16 segments on: 300 ns against 830 ns for
/// all pairs at 24 segments, 1 µs against 3.2 µs at 64.
const SWEEP_ABOVE: usize = 16;

/// Coordinates must be 0 or have a magnitude in this range: the exact
/// predicates assume that no intermediate result overflows or underflows,
/// which these bounds guarantee with a wide margin. EPSG:3857 coordinates
/// are below 2.1e7 in magnitude.
const MIN_MAGNITUDE: f64 = 1.0e-30;
const MAX_MAGNITUDE: f64 = 1.0e30;

/// True only when PostGIS `ST_IsValid` (GEOS IsValidOp) is certain to say the polygon is valid.
/// May return false for some valid polygons (the caller then lets PostgreSQL decide).
///
/// `false` for, among others:
/// - polygons with interior rings (holes), whatever they look like;
/// - non-finite coordinates, and (conservatively) coordinates whose
///   magnitude is below 1e-30 (other than 0) or above 1e30;
/// - rings that are not closed, or that have fewer than three distinct
///   vertices once consecutive repeated points are skipped (repeated points
///   themselves are fine, as in GEOS);
/// - rings with three consecutive vertices on one line, even a straight
///   continuation such as a vertex in the middle of a wall, which GEOS
///   accepts;
/// - rings where two non-adjacent segments touch, cross, overlap, or where
///   an end point of one lies on the line through the other while their
///   bounding boxes meet (this includes self-touching rings, which GEOS
///   calls invalid);
/// - rings whose signed area computes as zero.
pub fn surely_valid(polygon: &Polygon<f64>) -> bool {
    if !polygon.interiors().is_empty() {
        return false;
    }
    let coords = &polygon.exterior().0;
    if !coords.iter().all(|c| usable(c.x) && usable(c.y)) {
        return false;
    }
    match (coords.first(), coords.last()) {
        (Some(first), Some(last)) if first == last => {}
        _ => return false,
    }
    if coords.windows(2).any(|pair| pair[0] == pair[1]) {
        let mut ring = coords.clone();
        ring.dedup();
        simple_ring(&ring, SWEEP_ABOVE)
    } else {
        simple_ring(coords, SWEEP_ABOVE)
    }
}

/// [`surely_valid`] for any geometry an output row can hold: true only when
/// PostGIS `ST_IsValid` is certain to say the geometry is valid.
///
/// - points: finite coordinates;
/// - lines: finite coordinates and at least two distinct points (GEOS
///   requires nothing else of a line; crossing itself is fine);
/// - multilinestrings: every part so;
/// - polygons: [`surely_valid`];
/// - multipolygons: every part surely valid and the parts' bounding boxes
///   pairwise strictly apart (parts that come closer, even valid ones, are
///   left to PostgreSQL);
/// - anything else (multipoints, which no output row holds, collections,
///   rectangles, triangles, bare lines): false.
pub fn surely_valid_geometry(geometry: &Geometry<f64>) -> bool {
    match geometry {
        Geometry::Point(point) => finite(point.0),
        Geometry::LineString(line) => line_valid(line),
        Geometry::MultiLineString(lines) => lines.0.iter().all(line_valid),
        Geometry::Polygon(polygon) => surely_valid(polygon),
        Geometry::MultiPolygon(polygons) => multipolygon_valid(polygons),
        _ => false,
    }
}

fn finite(coord: Coord<f64>) -> bool {
    coord.x.is_finite() && coord.y.is_finite()
}

/// GEOS' `IsValidOp` checks a line only for finite coordinates and at least
/// two points after removing consecutive repeated points.
fn line_valid(line: &LineString<f64>) -> bool {
    let points = &line.0;
    points.iter().all(|&point| finite(point))
        && points
            .first()
            .is_some_and(|&first| points.iter().any(|&p| p != first))
}

/// Valid parts that cannot meet: their boxes are strictly apart.
fn multipolygon_valid(polygons: &MultiPolygon<f64>) -> bool {
    if !polygons.0.iter().all(surely_valid) {
        return false;
    }
    // The parts are non-empty single rings with usable coordinates now.
    let mut boxes: Vec<(Coord<f64>, Coord<f64>)> = polygons
        .0
        .iter()
        .filter_map(|polygon| polygon.bounding_rect())
        .map(|rect| (rect.min(), rect.max()))
        .collect();
    boxes.sort_unstable_by(|a, b| a.0.x.total_cmp(&b.0.x));
    for (k, &(p_min, p_max)) in boxes.iter().enumerate() {
        for &(q_min, q_max) in &boxes[k + 1..] {
            if q_min.x > p_max.x {
                break;
            }
            if !boxes_apart(p_min, p_max, q_min, q_max) {
                return false;
            }
        }
    }
    true
}

/// Finite and within the range where the exact predicates stay exact.
fn usable(value: f64) -> bool {
    let magnitude = value.abs();
    magnitude == 0.0 || (MIN_MAGNITUDE..=MAX_MAGNITUDE).contains(&magnitude)
}

fn orient(a: Coord<f64>, b: Coord<f64>, c: Coord<f64>) -> Orientation {
    <RobustKernel as Kernel<f64>>::orient2d(a, b, c)
}

/// Whether a closed ring without consecutive repeated points is provably
/// simple with a non-zero area. Segment `i` runs from `ring[i]` to
/// `ring[i + 1]`; rings of more than `sweep_above` segments are checked with
/// the sweep.
fn simple_ring(ring: &[Coord<f64>], sweep_above: usize) -> bool {
    let segments = ring.len().saturating_sub(1);
    if segments < 3 {
        return false;
    }
    // Adjacent segments meet only in their shared vertex unless the three
    // points are collinear (a spike, or a straight continuation, which is
    // valid but not worth proving).
    let mut previous = ring[segments - 1];
    for pair in ring.windows(2) {
        if orient(previous, pair[0], pair[1]) == Orientation::Collinear {
            return false;
        }
        previous = pair[0];
    }
    // Twice the signed area, relative to the first vertex for precision.
    let origin = ring[0];
    let doubled_area: f64 = ring
        .windows(2)
        .map(|pair| {
            let (a, b) = (pair[0] - origin, pair[1] - origin);
            a.x * b.y - b.x * a.y
        })
        .sum();
    if doubled_area == 0.0 || !doubled_area.is_finite() {
        return false;
    }
    if segments <= sweep_above {
        all_pairs_disjoint(ring, segments)
    } else {
        sweep_disjoint(ring, segments)
    }
}

/// Whether segments `i` and `j` of a ring of `segments` segments share a
/// vertex.
fn adjacent(i: usize, j: usize, segments: usize) -> bool {
    let (low, high) = if i < j { (i, j) } else { (j, i) };
    high - low == 1 || (low == 0 && high == segments - 1)
}

/// Every pair of non-adjacent segments, with a bounding box prefilter.
fn all_pairs_disjoint(ring: &[Coord<f64>], segments: usize) -> bool {
    for i in 0..segments - 2 {
        let (p1, p2) = (ring[i], ring[i + 1]);
        let (p_min, p_max) = bounds(p1, p2);
        // Segment 0 is adjacent to the last segment.
        let end = if i == 0 { segments - 1 } else { segments };
        for j in i + 2..end {
            let (q1, q2) = (ring[j], ring[j + 1]);
            let (q_min, q_max) = bounds(q1, q2);
            if boxes_apart(p_min, p_max, q_min, q_max) {
                continue;
            }
            if !proven_disjoint(p1, p2, q1, q2) {
                return false;
            }
        }
    }
    true
}

/// A segment's bounding box and its index, for the sweep.
struct Extent {
    min: Coord<f64>,
    max: Coord<f64>,
    index: usize,
}

/// Segments sorted by their smallest x; each is compared only with the
/// following ones whose smallest x does not exceed its largest x.
fn sweep_disjoint(ring: &[Coord<f64>], segments: usize) -> bool {
    let mut extents: Vec<Extent> = ring
        .windows(2)
        .enumerate()
        .map(|(index, pair)| {
            let (min, max) = bounds(pair[0], pair[1]);
            Extent { min, max, index }
        })
        .collect();
    // Coordinates are finite here, so `total_cmp` orders like `<` (it only
    // adds -0 before +0, which keeps the order non-decreasing).
    extents.sort_unstable_by(|a, b| a.min.x.total_cmp(&b.min.x));
    for (k, p) in extents.iter().enumerate() {
        for q in &extents[k + 1..] {
            if q.min.x > p.max.x {
                break;
            }
            if q.min.y > p.max.y || p.min.y > q.max.y || adjacent(p.index, q.index, segments) {
                continue;
            }
            let (p1, p2) = (ring[p.index], ring[p.index + 1]);
            let (q1, q2) = (ring[q.index], ring[q.index + 1]);
            if !proven_disjoint(p1, p2, q1, q2) {
                return false;
            }
        }
    }
    true
}

fn bounds(a: Coord<f64>, b: Coord<f64>) -> (Coord<f64>, Coord<f64>) {
    (
        Coord {
            x: a.x.min(b.x),
            y: a.y.min(b.y),
        },
        Coord {
            x: a.x.max(b.x),
            y: a.y.max(b.y),
        },
    )
}

/// Bounding boxes strictly apart (boxes that merely touch are not).
fn boxes_apart(p_min: Coord<f64>, p_max: Coord<f64>, q_min: Coord<f64>, q_max: Coord<f64>) -> bool {
    q_min.x > p_max.x || p_min.x > q_max.x || q_min.y > p_max.y || p_min.y > q_max.y
}

/// Whether segments p1-p2 and q1-q2 certainly have no point in common:
/// both ends of one lie strictly on the same side of the line through the
/// other. Any collinearity counts as "maybe touching".
fn proven_disjoint(p1: Coord<f64>, p2: Coord<f64>, q1: Coord<f64>, q2: Coord<f64>) -> bool {
    let side = orient(p1, p2, q1);
    if side != Orientation::Collinear && side == orient(p1, p2, q2) {
        return true;
    }
    let side = orient(q1, q2, p1);
    side != Orientation::Collinear && side == orient(q1, q2, p2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::LineString;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn polygon(points: &[(f64, f64)]) -> Polygon<f64> {
        Polygon::new(LineString::from(points.to_vec()), vec![])
    }

    /// A star-shaped ring around (cx, cy): `n` vertices at equal angle
    /// steps, radii alternating between `outer` and `inner`.
    fn star(n: usize, (cx, cy): (f64, f64), outer: f64, inner: f64) -> Vec<(f64, f64)> {
        (0..n)
            .map(|k| {
                let angle = std::f64::consts::TAU * k as f64 / n as f64;
                let radius = if k % 2 == 0 { outer } else { inner };
                (cx + radius * angle.cos(), cy + radius * angle.sin())
            })
            .collect()
    }

    #[test]
    fn square_and_rectangle_with_repeated_points() {
        let square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)];
        assert!(surely_valid(&polygon(&square)));
        let mut clockwise = square;
        clockwise.reverse();
        assert!(surely_valid(&polygon(&clockwise)));
        let rectangle = [
            (0.0, 0.0),
            (0.0, 0.0),
            (5.0, 0.0),
            (5.0, 3.0),
            (5.0, 3.0),
            (5.0, 3.0),
            (0.0, 3.0),
            (0.0, 0.0),
            (0.0, 0.0),
        ];
        assert!(surely_valid(&polygon(&rectangle)));
        // A triangle is the smallest valid ring.
        assert!(surely_valid(&polygon(&[
            (0.0, 0.0),
            (2.0, 0.0),
            (1.0, 1.0)
        ])));
    }

    #[test]
    fn bow_tie() {
        let ring = [(0.0, 0.0), (2.0, 2.0), (2.0, 0.0), (0.0, 2.0), (0.0, 0.0)];
        assert!(!surely_valid(&polygon(&ring)));
    }

    #[test]
    fn spike() {
        // A-B-C-B: back along the same segment.
        let ring = [
            (0.0, 0.0),
            (4.0, 0.0),
            (4.0, 4.0),
            (6.0, 6.0),
            (4.0, 4.0),
            (0.0, 4.0),
        ];
        assert!(!surely_valid(&polygon(&ring)));
        // A-B-C with C on AB: back-tracking partly.
        let ring = [
            (0.0, 0.0),
            (4.0, 0.0),
            (4.0, 4.0),
            (6.0, 6.0),
            (5.0, 5.0),
            (0.0, 4.0),
        ];
        assert!(!surely_valid(&polygon(&ring)));
        // Spike at the closing vertex.
        let ring = [
            (0.0, 0.0),
            (-3.0, 0.0),
            (0.0, 0.0),
            (4.0, 0.0),
            (4.0, 4.0),
            (0.0, 0.0),
        ];
        assert!(!surely_valid(&polygon(&ring)));
    }

    #[test]
    fn self_touching_at_a_vertex() {
        // Two triangles meeting in (3, 1), the vertex being visited twice.
        let ring = [
            (0.0, 0.0),
            (3.0, 1.0),
            (6.0, 0.0),
            (6.0, 6.0),
            (3.0, 1.0),
            (0.0, 6.0),
            (0.0, 0.0),
        ];
        assert!(!surely_valid(&polygon(&ring)));
    }

    #[test]
    fn vertex_on_a_non_adjacent_edge() {
        // (2.5, 0) lies on the first edge: an inverted shell.
        let ring = [
            (0.0, 0.0),
            (4.0, 0.0),
            (4.0, 4.0),
            (2.5, 0.0),
            (0.0, 4.0),
            (0.0, 0.0),
        ];
        assert!(!surely_valid(&polygon(&ring)));
        // Same with coordinates that are not small integers.
        let (x0, y0) = (1_062_645.125, 5_972_593.5);
        let ring = [
            (x0, y0),
            (x0 + 8.0, y0),
            (x0 + 8.0, y0 + 8.0),
            (x0 + 0.25, y0),
            (x0, y0 + 8.0),
        ];
        assert!(!surely_valid(&polygon(&ring)));
    }

    #[test]
    fn polygon_with_a_hole() {
        let outer = LineString::from(vec![(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]);
        let inner = LineString::from(vec![(2.0, 2.0), (2.0, 8.0), (8.0, 8.0), (8.0, 2.0)]);
        assert!(!surely_valid(&Polygon::new(outer, vec![inner])));
    }

    #[test]
    fn too_few_points_and_degenerate_rings() {
        assert!(!surely_valid(&polygon(&[])));
        assert!(!surely_valid(&polygon(&[(1.0, 1.0)])));
        assert!(!surely_valid(&polygon(&[
            (0.0, 0.0),
            (1.0, 0.0),
            (0.0, 0.0)
        ])));
        // Four points, but only two distinct ones.
        let ring = [(0.0, 0.0), (1.0, 0.0), (1.0, 0.0), (0.0, 0.0)];
        assert!(!surely_valid(&polygon(&ring)));
        // Collinear: zero area.
        let ring = [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (0.0, 0.0)];
        assert!(!surely_valid(&polygon(&ring)));
        let ring = [(0.0, 0.0), (1.0, 1.0), (3.0, 3.0), (2.0, 2.0), (0.0, 0.0)];
        assert!(!surely_valid(&polygon(&ring)));
        // A vertex in the middle of a straight edge: valid, but collinear
        // vertices are left to PostgreSQL.
        let ring = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 0.0)];
        assert!(!surely_valid(&polygon(&ring)));
    }

    #[test]
    fn non_finite_and_extreme_coordinates() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e31,
            -1e31,
            1e-31,
        ] {
            let ring = [(0.0, 0.0), (1.0, 0.0), (1.0, bad), (0.0, 1.0), (0.0, 0.0)];
            assert!(!surely_valid(&polygon(&ring)), "{bad}");
            let ring = [(bad, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (bad, 0.0)];
            assert!(!surely_valid(&polygon(&ring)), "{bad}");
        }
        let ring = [(0.0, 0.0), (1e-20, 0.0), (1e-20, 1e-20), (0.0, 1e-20)];
        assert!(surely_valid(&polygon(&ring)));
    }

    #[test]
    fn star_with_200_vertices() {
        let ring = star(200, (1_062_645.0, 5_972_593.0), 1_000.0, 700.0);
        assert!(surely_valid(&polygon(&ring)));
        // Far apart vertices swapped: long edges across the star.
        let mut crossing = ring.clone();
        crossing.swap(10, 110);
        assert!(!surely_valid(&polygon(&crossing)));
    }

    #[test]
    fn circle_with_two_crossing_edges() {
        // On a circle, two consecutive vertices swapped make exactly the
        // chords k-1→k+1 and k→k+2 cross.
        let ring = star(200, (-2_000_000.0, 3_000_000.0), 500.0, 500.0);
        assert!(surely_valid(&polygon(&ring)));
        for k in [0, 1, 57, 198] {
            let mut crossing = ring.clone();
            crossing.swap(k, k + 1);
            assert!(!surely_valid(&polygon(&crossing)), "{k}");
        }
    }

    #[test]
    fn thin_triangle_far_from_the_origin() {
        // The third vertex is one unit in the last place off the line
        // through the first two: naive arithmetic may call it collinear.
        let ulp = 2f64.powi(-33);
        let a = (1e6, 1e6);
        let b = (1e6 + 1.0, 1e6 + 1.0);
        let c = (1e6 + 2.0, 1e6 + 2.0 + ulp);
        assert!(c.1 != 1e6 + 2.0);
        assert!(surely_valid(&polygon(&[a, b, c, a])));
        assert!(surely_valid(&polygon(&[a, c, b, a])));
        // On the line: degenerate.
        let c = (1e6 + 2.0, 1e6 + 2.0);
        assert!(!surely_valid(&polygon(&[a, b, c, a])));
        // Nearly collinear points where the naive determinant rounds to 0
        // (the exact one is about 9.5e-14): the orientations prove the
        // triangle valid, but its area also computes as 0 in f64, and the
        // area rule refuses it (conservative; PostGIS says valid).
        let a = (1000000.1, 1000000.3);
        let b = (1000041.6145447766, 1000029.3601813437);
        let c = (1000083.1270450336, 1000058.4189315237);
        let naive = (b.0 - a.0) * (c.1 - b.1) - (b.1 - a.1) * (c.0 - b.0);
        assert_eq!(naive, 0.0);
        let points = [a, b, c, a].map(|(x, y)| Coord { x, y });
        assert_ne!(
            orient(points[0], points[1], points[2]),
            Orientation::Collinear
        );
        assert!(!surely_valid(&polygon(&[a, b, c, a])));
        // A sliver 1e-9 wide and 100 long.
        let ring = [(1e6, 1e6), (1e6 + 100.0, 1e6), (1e6 + 50.0, 1e6 + 1e-9)];
        assert!(surely_valid(&polygon(&ring)));
    }

    #[test]
    fn other_geometries() {
        use geo::{MultiLineString, MultiPoint, Point};
        let square = polygon(&[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]);
        let shifted = |dx: f64, dy: f64| {
            let ring: Vec<(f64, f64)> = square
                .exterior()
                .0
                .iter()
                .map(|c| (c.x + dx, c.y + dy))
                .collect();
            polygon(&ring)
        };
        let valid = |g: Geometry<f64>| surely_valid_geometry(&g);

        assert!(valid(Point::new(1e6, -2e6).into()));
        assert!(!valid(Point::new(f64::NAN, 0.0).into()));
        assert!(!valid(MultiPoint::new(vec![Point::new(0.0, 0.0)]).into()));

        let line = |points: &[(f64, f64)]| LineString::from(points.to_vec());
        assert!(valid(line(&[(0.0, 0.0), (0.0, 0.0), (1.0, 0.0)]).into()));
        // A line may cross itself.
        assert!(valid(
            line(&[(0.0, 0.0), (2.0, 2.0), (2.0, 0.0), (0.0, 2.0)]).into()
        ));
        assert!(!valid(line(&[(1.0, 1.0), (1.0, 1.0)]).into()));
        assert!(!valid(line(&[(1.0, 1.0)]).into()));
        assert!(!valid(line(&[]).into()));
        assert!(!valid(line(&[(0.0, 0.0), (f64::INFINITY, 0.0)]).into()));
        let lines = MultiLineString::new(vec![
            line(&[(0.0, 0.0), (1.0, 0.0)]),
            line(&[(0.0, 0.0), (1.0, 0.0)]),
        ]);
        assert!(valid(lines.into()));
        let lines = MultiLineString::new(vec![
            line(&[(0.0, 0.0), (1.0, 0.0)]),
            line(&[(0.0, 0.0), (0.0, 0.0)]),
        ]);
        assert!(!valid(lines.into()));

        assert!(valid(square.clone().into()));
        let multi = |parts: Vec<Polygon<f64>>| valid(MultiPolygon::new(parts).into());
        assert!(multi(vec![square.clone()]));
        assert!(multi(vec![
            shifted(5.0, 0.0),
            square.clone(),
            shifted(0.0, 1.5)
        ]));
        // Boxes touching: maybe valid (here: sharing an edge, invalid).
        assert!(!multi(vec![square.clone(), shifted(1.0, 0.0)]));
        // Overlapping boxes, disjoint polygons: left to PostgreSQL.
        let triangle = polygon(&[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]);
        let other = polygon(&[(1.0, 0.2), (1.0, 1.0), (0.2, 1.0)]);
        assert!(!multi(vec![triangle, other]));
        let bow_tie = polygon(&[(10.0, 0.0), (12.0, 2.0), (12.0, 0.0), (10.0, 2.0)]);
        assert!(!multi(vec![square.clone(), bow_tie]));
        // Empty: PostGIS calls every empty geometry valid.
        assert!(multi(vec![]));
    }

    /// Small random rings on a coarse grid, so that touching, collinear
    /// and repeated points are frequent.
    fn random_grid_ring(rng: &mut StdRng) -> Vec<Coord<f64>> {
        let n = rng.random_range(3..=70);
        let size = rng.random_range(3..=12);
        let mut ring: Vec<Coord<f64>> = (0..n)
            .map(|_| Coord {
                x: f64::from(rng.random_range(0..size)),
                y: f64::from(rng.random_range(0..size)),
            })
            .collect();
        ring.push(ring[0]);
        ring.dedup();
        ring
    }

    #[test]
    fn sweep_agrees_with_all_pairs() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut valid = 0;
        for _ in 0..20_000 {
            let ring = random_grid_ring(&mut rng);
            if ring.len() < 4 || ring[0] != ring[ring.len() - 1] {
                continue;
            }
            let all_pairs = simple_ring(&ring, usize::MAX);
            assert_eq!(all_pairs, simple_ring(&ring, 0), "{ring:?}");
            valid += usize::from(all_pairs);
        }
        // Star rings in random position: valid, and many of them.
        for _ in 0..200 {
            let n = rng.random_range(3..=300);
            let centre = (rng.random_range(-2e7..2e7), rng.random_range(-2e7..2e7));
            let outer = rng.random_range(1.0..1000.0);
            let mut ring: Vec<Coord<f64>> = star(n, centre, outer, outer * 0.8)
                .into_iter()
                .map(Coord::from)
                .collect();
            ring.push(ring[0]);
            assert!(simple_ring(&ring, usize::MAX));
            assert!(simple_ring(&ring, 0));
        }
        assert!(valid > 100, "{valid}");
    }

    /// Not a benchmark, just a rough figure: `cargo test --lib
    /// geom::validity -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn speed() {
        let building = polygon(&[
            (1_062_645.1, 5_972_593.4),
            (1_062_660.3, 5_972_594.0),
            (1_062_661.0, 5_972_601.2),
            (1_062_655.2, 5_972_601.0),
            (1_062_655.0, 5_972_608.7),
            (1_062_644.8, 5_972_608.5),
        ]);
        let big = polygon(&star(5_000, (1_062_645.0, 5_972_593.0), 1_000.0, 900.0));
        for (name, polygon, rounds) in [
            ("6 vertices", &building, 1_000_000),
            ("5000 vertices", &big, 200),
        ] {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                assert!(surely_valid(std::hint::black_box(polygon)));
            }
            let each = start.elapsed() / rounds;
            eprintln!("{name}: {each:?} per call");
        }
    }
}
