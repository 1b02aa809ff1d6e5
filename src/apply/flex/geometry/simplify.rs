//! `simplify()`: Douglas–Peucker as `boost::geometry::simplify` runs it for
//! osm2pgsql 1.8 (`geom::simplify` in `src/geom-functions.cpp`):
//!
//! - lines of at most two points, or a negative tolerance, are copied;
//! - otherwise the end points are kept and, recursively, the point farthest
//!   from the segment between the current ends (the first of equally far
//!   points) is kept if its distance exceeds the tolerance; distances are
//!   compared squared, with Boost's `projected_point` arithmetic;
//! - osm2pgsql then removes consecutive duplicate points and drops the line
//!   if fewer than two points remain.

use geo::{Coord, LineString};

/// The simplified line, `None` where osm2pgsql drops it.
pub(super) fn simplify_line(line: &LineString<f64>, tolerance: f64) -> Option<LineString<f64>> {
    let points = &line.0;
    let kept = if points.len() <= 2 || tolerance < 0.0 {
        points.clone()
    } else {
        douglas_peucker(points, tolerance * tolerance)
    };
    let mut deduplicated: Vec<Coord<f64>> = Vec::with_capacity(kept.len());
    for point in kept {
        if deduplicated.last() != Some(&point) {
            deduplicated.push(point);
        }
    }
    (deduplicated.len() > 1).then(|| LineString::new(deduplicated))
}

/// Boost's `detail::simplify::douglas_peucker` with squared ("comparable")
/// distances. The ranges are processed with an explicit stack instead of
/// recursion (merged route lines can be long); which points are kept does
/// not depend on the order.
fn douglas_peucker(points: &[Coord<f64>], max_distance_squared: f64) -> Vec<Coord<f64>> {
    let mut included = vec![false; points.len()];
    included[0] = true;
    included[points.len() - 1] = true;
    // half-open ranges [begin, end)
    let mut ranges = vec![(0, points.len())];
    while let Some((begin, end)) = ranges.pop() {
        if end - begin <= 2 {
            continue;
        }
        let last = end - 1;
        let mut farthest = -1.0;
        let mut candidate = None;
        for (i, &point) in points.iter().enumerate().take(last).skip(begin + 1) {
            let distance = segment_distance_squared(point, points[begin], points[last]);
            if farthest < distance {
                farthest = distance;
                candidate = Some(i);
            }
        }
        if let Some(candidate) = candidate.filter(|_| max_distance_squared < farthest) {
            included[candidate] = true;
            ranges.push((candidate, end));
            ranges.push((begin, candidate + 1));
        }
    }
    points
        .iter()
        .zip(included)
        .filter_map(|(&p, keep)| keep.then_some(p))
        .collect()
}

/// Boost's `projected_point` distance from `p` to the segment `p1`–`p2`,
/// with the comparable (squared) `pythagoras`.
fn segment_distance_squared(p: Coord<f64>, p1: Coord<f64>, p2: Coord<f64>) -> f64 {
    let v = p2 - p1;
    let w = p - p1;
    let c1 = w.x * v.x + w.y * v.y;
    if c1 <= 0.0 {
        return squared_distance(p, p1);
    }
    let c2 = v.x * v.x + v.y * v.y;
    if c2 <= c1 {
        return squared_distance(p, p2);
    }
    let b = c1 / c2;
    let projected = Coord {
        x: p1.x + v.x * b,
        y: p1.y + v.y * b,
    };
    squared_distance(p, projected)
}

fn squared_distance(a: Coord<f64>, b: Coord<f64>) -> f64 {
    let dx = a.x - b.x;
    let dy = a.y - b.y;
    dx * dx + dy * dy
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::line_string;

    fn zigzag() -> LineString<f64> {
        line_string![
            (x: 0.0, y: 0.0), (x: 1.0, y: 1.0), (x: 2.0, y: 0.0),
            (x: 3.0, y: 1.0), (x: 4.0, y: 0.0), (x: 5.0, y: 1.0)
        ]
    }

    // The cases of osm2pgsql's tests/test-geom-linestrings.cpp.

    #[test]
    fn small_tolerance_keeps_the_line() {
        assert_eq!(simplify_line(&zigzag(), 0.5), Some(zigzag()));
    }

    #[test]
    fn large_tolerance_keeps_the_ends() {
        assert_eq!(
            simplify_line(&zigzag(), 10.0),
            Some(line_string![(x: 0.0, y: 0.0), (x: 5.0, y: 1.0)])
        );
    }

    #[test]
    fn loops() {
        let input = line_string![
            (x: 0.0, y: 0.0), (x: 0.0, y: 1.0), (x: 1.0, y: 1.0),
            (x: 1.0, y: 0.0), (x: 0.1, y: 0.1), (x: 0.0, y: 0.0)
        ];
        assert_eq!(simplify_line(&input, 0.01), Some(input.clone()));
        let mut expected = input.0.clone();
        expected.remove(4);
        assert_eq!(simplify_line(&input, 0.5), Some(LineString::new(expected)));
        // both ends are the same point: nothing is left
        assert_eq!(simplify_line(&input, 10.0), None);
    }

    #[test]
    fn straight_lines_lose_their_middle_points() {
        let input = line_string![(x: 1.0, y: 1.0), (x: 1.0, y: 2.0), (x: 1.0, y: 3.0)];
        let expected = line_string![(x: 1.0, y: 1.0), (x: 1.0, y: 3.0)];
        assert_eq!(simplify_line(&input, 0.5), Some(expected.clone()));
        assert_eq!(simplify_line(&input, 10.0), Some(expected.clone()));
        // tolerance 0: collinear points have distance 0, which is not > 0
        assert_eq!(simplify_line(&input, 0.0), Some(expected));
    }

    #[test]
    fn short_lines_and_negative_tolerances_are_copied() {
        let two = line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0)];
        assert_eq!(simplify_line(&two, 10.0), Some(two));
        assert_eq!(simplify_line(&zigzag(), -1.0), Some(zigzag()));
        let same = line_string![(x: 0.0, y: 0.0), (x: 0.0, y: 0.0)];
        assert_eq!(simplify_line(&same, 1.0), None);
    }

    #[test]
    fn distance_is_compared_strictly() {
        // the middle point is exactly 1 from the segment: kept only for
        // tolerances below 1
        let input = line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 1.0), (x: 2.0, y: 0.0)];
        assert_eq!(simplify_line(&input, 1.0).unwrap().0.len(), 2);
        assert_eq!(simplify_line(&input, 0.999).unwrap().0.len(), 3);
    }

    #[test]
    fn segment_distance_handles_the_ends() {
        let a = Coord { x: 0.0, y: 0.0 };
        let b = Coord { x: 4.0, y: 0.0 };
        assert_eq!(
            segment_distance_squared(Coord { x: -3.0, y: 4.0 }, a, b),
            25.0
        );
        assert_eq!(
            segment_distance_squared(Coord { x: 7.0, y: 4.0 }, a, b),
            25.0
        );
        assert_eq!(
            segment_distance_squared(Coord { x: 2.0, y: 3.0 }, a, b),
            9.0
        );
        // degenerate segment
        assert_eq!(
            segment_distance_squared(Coord { x: 3.0, y: 4.0 }, a, a),
            25.0
        );
    }
}
