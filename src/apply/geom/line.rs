//! Linestrings: building them from way nodes, splitting long ones, merging
//! route members.

use geo::{Coord, LineString};
use std::cmp::Ordering;

/// Builds a way's linestring from its projected node locations, dropping
/// consecutive duplicate points (osm2pgsql's `fill_point_list`). `None` if
/// fewer than two distinct points remain, in which case osm2pgsql writes no
/// line.
///
/// Nodes without a location must already be left out by the caller, as
/// osm2pgsql does; note that dropping one can bring two equal locations
/// together, which are then collapsed here too.
pub fn linestring(points: &[Coord<f64>]) -> Option<LineString<f64>> {
    let deduplicated = without_consecutive_duplicates(points);
    (deduplicated.len() > 1).then(|| LineString::new(deduplicated))
}

pub(crate) fn without_consecutive_duplicates(points: &[Coord<f64>]) -> Vec<Coord<f64>> {
    let mut deduplicated: Vec<Coord<f64>> = Vec::with_capacity(points.len());
    for &point in points {
        if deduplicated.last() != Some(&point) {
            deduplicated.push(point);
        }
    }
    deduplicated
}

/// Length of a linestring in its coordinate units (what `ST_Length` gives).
pub fn length(line: &LineString<f64>) -> f64 {
    line.0.windows(2).map(|w| distance(w[0], w[1])).sum()
}

fn distance(a: Coord<f64>, b: Coord<f64>) -> f64 {
    let dx = a.x - b.x;
    let dy = a.y - b.y;
    (dx * dx + dy * dy).sqrt()
}

/// The point at `fraction` of the way from `from` to `to`, with
/// osm2pgsql's exact operation order (`geom::interpolate`) so that split
/// points are bit-identical.
fn interpolate(to: Coord<f64>, from: Coord<f64>, fraction: f64) -> Coord<f64> {
    Coord {
        x: fraction * (to.x - from.x) + from.x,
        y: fraction * (to.y - from.y) + from.y,
    }
}

/// Splits a line into pieces no longer than `max_length` (osm2pgsql: 100 000
/// units in 3857), the way osm2pgsql 1.8 does it (`split_linestring` in
/// `src/geom-functions.cpp`, used by `geom::segmentize`):
///
/// - walking along the line, as soon as the accumulated length would exceed
///   `max_length` within a segment, the segment is cut at exactly
///   `k · max_length` from the start of the current piece (as many cuts as
///   fit into the segment), the cut point ends one piece and starts the next;
/// - a cut that falls exactly on the segment's start is not added twice; a
///   cut that falls exactly on its end vertex starts the next piece there;
/// - a trailing piece with a single point is dropped.
///
/// Lines not longer than `max_length` come back unchanged, as one piece.
/// A non-positive or non-finite `max_length` disables splitting.
pub fn split_line(line: &LineString<f64>, max_length: f64) -> Vec<LineString<f64>> {
    let points = &line.0;
    let Some(&first) = points.first() else {
        return Vec::new();
    };
    if !(max_length > 0.0 && max_length.is_finite()) {
        return vec![line.clone()];
    }

    let mut pieces: Vec<Vec<Coord<f64>>> = vec![vec![first]];
    // Length of the current piece so far.
    let mut piece_length = 0.0;
    let mut previous = first;

    for &point in &points[1..] {
        let delta = distance(previous, point);
        if piece_length + delta > max_length {
            let cuts = ((piece_length + delta) / max_length).floor() as usize;
            let mut cut_point = previous;
            for k in 1..=cuts {
                let fraction = (k as f64 * max_length - piece_length) / delta;
                cut_point = interpolate(point, previous, fraction);
                if fraction != 0.0 {
                    current(&mut pieces).push(cut_point);
                }
                pieces.push(vec![cut_point]);
            }
            if point == cut_point {
                piece_length = 0.0;
                previous = point;
                continue;
            }
            piece_length = distance(point, cut_point);
        } else {
            piece_length += delta;
        }
        current(&mut pieces).push(point);
        previous = point;
    }

    if pieces.last().is_some_and(|piece| piece.len() <= 1) {
        pieces.pop();
    }
    pieces.into_iter().map(LineString::new).collect()
}

fn current(pieces: &mut [Vec<Coord<f64>>]) -> &mut Vec<Coord<f64>> {
    pieces.last_mut().expect("there is always a current piece")
}

/// Merges lines that share end points into longer lines, like osm2pgsql
/// 1.8's `geom::line_merge` (used for route and boundary relation lines)
/// — not GEOS' `LineMerger`:
///
/// - all end points are sorted by (x, y, line index, front-before-back is
///   *false*: back ends sort first); equal neighbours in that order are
///   paired off two by two, so where three or more ends meet only the first
///   two (by line index) are joined and the others stay open;
/// - lines are then chained starting from every line (in input order) that
///   has an open end, following the connections and reversing lines as
///   needed, the duplicated joint point being dropped;
/// - finally the remaining closed loops are walked, each starting from its
///   lowest-numbered line, forwards if that line's predecessor ends where it
///   starts.
///
/// The result order is the order in which chains were started. Merging on
/// 3857 coordinates gives the same result as osm2pgsql's merging on
/// longitude/latitude because the projection preserves equality and the
/// x/y ordering of node locations. Lines with fewer than two points are
/// ignored (osm2pgsql never produces them).
pub fn merge_lines(lines: Vec<LineString<f64>>) -> Vec<LineString<f64>> {
    let lines: Vec<LineString<f64>> = lines.into_iter().filter(|l| l.0.len() > 1).collect();

    #[derive(Clone, Copy)]
    struct EndPoint {
        coord: Coord<f64>,
        line: usize,
        is_front: bool,
    }

    const NO_CONNECTION: usize = usize::MAX;

    struct Connection {
        left: usize,
        right: usize,
        done: bool,
    }

    let mut end_points: Vec<EndPoint> = Vec::with_capacity(lines.len() * 2);
    for (index, line) in lines.iter().enumerate() {
        end_points.push(EndPoint {
            coord: line.0[0],
            line: index,
            is_front: true,
        });
        end_points.push(EndPoint {
            coord: line.0[line.0.len() - 1],
            line: index,
            is_front: false,
        });
    }
    end_points.sort_by(|a, b| {
        compare_f64(a.coord.x, b.coord.x)
            .then(compare_f64(a.coord.y, b.coord.y))
            .then(a.line.cmp(&b.line))
            .then(a.is_front.cmp(&b.is_front))
    });

    let mut connections: Vec<Connection> = (0..lines.len())
        .map(|_| Connection {
            left: NO_CONNECTION,
            right: NO_CONNECTION,
            done: false,
        })
        .collect();
    let connect = |end: EndPoint, other: usize, connections: &mut Vec<Connection>| {
        if end.is_front {
            connections[end.line].left = other;
        } else {
            connections[end.line].right = other;
        }
    };
    let mut k = 0;
    while k + 1 < end_points.len() {
        let (a, b) = (end_points[k], end_points[k + 1]);
        if a.coord == b.coord {
            connect(a, b.line, &mut connections);
            connect(b, a.line, &mut connections);
            k += 2;
        } else {
            k += 1;
        }
    }

    let append = |merged: &mut Vec<Coord<f64>>, line: &LineString<f64>, forward: bool| {
        let skip = usize::from(!merged.is_empty());
        if forward {
            merged.extend(line.0.iter().skip(skip));
        } else {
            merged.extend(line.0.iter().rev().skip(skip));
        }
    };

    let mut merged_lines = Vec::new();

    // Chains with at least one open end.
    for start in 0..lines.len() {
        let c = &connections[start];
        if c.done || (c.left != NO_CONNECTION && c.right != NO_CONNECTION) {
            continue;
        }
        let mut merged = Vec::new();
        let mut previous = NO_CONNECTION;
        let mut current = start;
        while current != NO_CONNECTION && !connections[current].done {
            let c = &connections[current];
            let forward = c.left == previous;
            append(&mut merged, &lines[current], forward);
            previous = current;
            current = if forward { c.right } else { c.left };
            connections[previous].done = true;
        }
        merged_lines.push(LineString::new(merged));
    }

    // What is left are closed loops.
    for start in 0..lines.len() {
        if connections[start].done {
            continue;
        }
        let mut merged = Vec::new();
        let mut previous = connections[start].left;
        let mut current = start;
        loop {
            let c = &connections[current];
            let line = &lines[current];
            let forward = c.left == previous
                && (connections[c.left].done || lines[c.left].0.last() == line.0.first());
            append(&mut merged, line, forward);
            previous = current;
            current = if forward { c.right } else { c.left };
            connections[previous].done = true;
            if current == start || current == NO_CONNECTION || connections[current].done {
                break;
            }
        }
        merged_lines.push(LineString::new(merged));
    }

    merged_lines
}

/// `a < b` as C++ compares doubles (no NaN in node coordinates).
fn compare_f64(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{coord, line_string};

    fn xy(line: &LineString<f64>) -> Vec<(f64, f64)> {
        line.0.iter().map(|c| (c.x, c.y)).collect()
    }

    #[test]
    fn linestring_removes_consecutive_duplicates() {
        let a = coord! { x: 0.0, y: 0.0 };
        let b = coord! { x: 1.0, y: 0.0 };
        let line = linestring(&[a, a, b, b, b, a]).unwrap();
        assert_eq!(line.0, vec![a, b, a]);
        assert!(linestring(&[a, a, a]).is_none());
        assert!(linestring(&[a]).is_none());
        assert!(linestring(&[]).is_none());
    }

    #[test]
    fn length_sums_segments() {
        let line = line_string![(x: 0.0, y: 0.0), (x: 3.0, y: 4.0), (x: 3.0, y: 0.0)];
        assert_eq!(length(&line), 9.0);
    }

    #[test]
    fn short_lines_are_returned_unchanged() {
        let line =
            line_string![(x: 0.0, y: 0.0), (x: 60_000.0, y: 0.0), (x: 60_000.0, y: 40_000.0)];
        assert_eq!(split_line(&line, 100_000.0), vec![line]);
    }

    #[test]
    fn splits_250_km_into_100_100_50() {
        let line = line_string![(x: 0.0, y: 0.0), (x: 250_000.0, y: 0.0)];
        let pieces = split_line(&line, 100_000.0);
        let lengths: Vec<f64> = pieces.iter().map(length).collect();
        assert_eq!(lengths, vec![100_000.0, 100_000.0, 50_000.0]);
        assert_eq!(xy(&pieces[0]), vec![(0.0, 0.0), (100_000.0, 0.0)]);
        assert_eq!(xy(&pieces[1]), vec![(100_000.0, 0.0), (200_000.0, 0.0)]);
        assert_eq!(xy(&pieces[2]), vec![(200_000.0, 0.0), (250_000.0, 0.0)]);
    }

    #[test]
    fn splits_inside_the_segment_that_exceeds_the_length() {
        let line = line_string![
            (x: 0.0, y: 0.0), (x: 70_000.0, y: 0.0), (x: 70_000.0, y: 60_000.0), (x: 0.0, y: 60_000.0)
        ];
        let pieces = split_line(&line, 100_000.0);
        assert_eq!(
            xy(&pieces[0]),
            vec![(0.0, 0.0), (70_000.0, 0.0), (70_000.0, 30_000.0)]
        );
        assert_eq!(
            xy(&pieces[1]),
            vec![(70_000.0, 30_000.0), (70_000.0, 60_000.0), (0.0, 60_000.0)]
        );
        assert_eq!(pieces.len(), 2);
    }

    #[test]
    fn split_point_on_a_vertex_starts_the_next_piece_there() {
        // The cut falls exactly on the vertex (100 km): no duplicate point,
        // the next piece starts at the vertex.
        let line = line_string![
            (x: 0.0, y: 0.0), (x: 100_000.0, y: 0.0), (x: 150_000.0, y: 0.0)
        ];
        let pieces = split_line(&line, 100_000.0);
        assert_eq!(
            pieces.iter().map(xy).collect::<Vec<_>>(),
            vec![
                vec![(0.0, 0.0), (100_000.0, 0.0)],
                vec![(100_000.0, 0.0), (150_000.0, 0.0)],
            ]
        );
        // Exactly 200 km in one segment: the last cut is the end point, the
        // trailing one-point piece is dropped.
        let line = line_string![(x: 0.0, y: 0.0), (x: 200_000.0, y: 0.0)];
        let pieces = split_line(&line, 100_000.0);
        assert_eq!(pieces.len(), 2);
        assert_eq!(xy(&pieces[1]), vec![(100_000.0, 0.0), (200_000.0, 0.0)]);
    }

    #[test]
    fn exactly_max_length_is_not_split() {
        let line = line_string![(x: 0.0, y: 0.0), (x: 100_000.0, y: 0.0)];
        assert_eq!(split_line(&line, 100_000.0), vec![line]);
    }

    #[test]
    fn merges_three_pieces_in_mixed_directions() {
        let a = line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0)];
        let b = line_string![(x: 2.0, y: 0.0), (x: 1.0, y: 0.0)]; // reversed
        let c = line_string![(x: 2.0, y: 0.0), (x: 3.0, y: 1.0)];
        let merged = merge_lines(vec![a, b, c]);
        assert_eq!(merged.len(), 1);
        assert_eq!(
            xy(&merged[0]),
            vec![(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (3.0, 1.0)]
        );
        // the chain starts at the first line with an open end, in its
        // direction
        let a = line_string![(x: 1.0, y: 0.0), (x: 0.0, y: 0.0)];
        let b = line_string![(x: 1.0, y: 0.0), (x: 2.0, y: 0.0)];
        let merged = merge_lines(vec![a, b]);
        assert_eq!(xy(&merged[0]), vec![(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]);
    }

    #[test]
    fn only_two_ends_are_joined_at_a_junction() {
        let a = line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0)];
        let b = line_string![(x: 1.0, y: 0.0), (x: 2.0, y: 0.0)];
        let c = line_string![(x: 1.0, y: 0.0), (x: 1.0, y: 5.0)];
        let merged = merge_lines(vec![a, b, c]);
        // ends at (1,0): a.back (0), b.front (1), c.front (2): a+b joined
        assert_eq!(merged.len(), 2);
        assert_eq!(xy(&merged[0]), vec![(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]);
        assert_eq!(xy(&merged[1]), vec![(1.0, 0.0), (1.0, 5.0)]);
    }

    #[test]
    fn merges_loops() {
        let a = line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0)];
        let b = line_string![(x: 0.0, y: 0.0), (x: 0.0, y: 1.0), (x: 1.0, y: 1.0)];
        let merged = merge_lines(vec![a, b]);
        assert_eq!(merged.len(), 1);
        // starts with line 0; its predecessor (b) does not end where a
        // starts, so a is walked backwards
        assert_eq!(
            xy(&merged[0]),
            vec![(1.0, 1.0), (1.0, 0.0), (0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
        );
        let closed =
            line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 0.0)];
        assert_eq!(merge_lines(vec![closed.clone()]), vec![closed]);
    }

    #[test]
    fn merge_keeps_disconnected_lines_in_order() {
        let a = line_string![(x: 5.0, y: 5.0), (x: 6.0, y: 5.0)];
        let b = line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0)];
        let merged = merge_lines(vec![a.clone(), b.clone(), LineString::new(vec![])]);
        assert_eq!(merged, vec![a, b]);
        assert!(merge_lines(vec![]).is_empty());
    }
}
