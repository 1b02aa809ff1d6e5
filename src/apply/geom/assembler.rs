//! Area assembly with the behaviour of libosmium's area assembler
//! (`osmium::area::detail::BasicAssembler` driven by `GeomAssembler`, which
//! is what osm2pgsql 1.8 uses for closed ways and multipolygon/boundary
//! relations).
//!
//! The outline of the algorithm, which this module re-implements:
//!
//! 1. All member ways are cut into segments between consecutive distinct
//!    locations. Roles are ignored. Each segment is stored with its
//!    lexicographically smaller end first.
//! 2. Segments are sorted (by first end, then by decreasing slope, then by
//!    length) and identical segments are removed *in pairs* (so a way listed
//!    twice, or two rings sharing a segment, cancel out). Nothing left →
//!    failure.
//! 3. Any crossing, touching-in-the-interior or collinear overlap between
//!    two segments → failure. Sharing an end point is fine.
//! 4. Every location must be the end of an even number of segments, else
//!    there is an open ring → failure. Locations where four or more segment
//!    ends meet are "split locations" (rings touching in a point); more than
//!    100 of them → failure.
//! 5. Without split locations, rings are traced starting from the smallest
//!    unused location; whether a new ring is inner or outer, and which outer
//!    ring it belongs to, is decided by counting the already traced segments
//!    below its first point (a vertical ray cast, with exact integer
//!    arithmetic on the 1e-7° grid).
//! 6. With split locations, partial rings are traced between split
//!    locations, joined where only two of them meet, and otherwise joined by
//!    a bounded (depth 20) search for the combination that closes the
//!    smallest-area ring for an outer ring or the largest-area one for an
//!    inner ring. Nesting is then decided ring by ring in the order of their
//!    smallest segment.
//! 7. Outer rings are made counter-clockwise, inner rings clockwise; each
//!    ring starts at the location it was traced from.
//!
//! All geometric decisions are made on the integer fixed-point locations the
//! projected input coordinates came from (see `unproject_fixed`), so they
//! are exact and identical to osmium's; output coordinates are the input
//! coordinates.

use super::projection::unproject_fixed;
use geo::{Coord, LineString};
use std::cmp::Ordering;

/// Maximum number of touching points before osmium gives up.
const MAX_SPLIT_LOCATIONS: usize = 100;
/// Maximum recursion depth of the search joining open rings.
const MAX_DEPTH: usize = 20;

/// A location on osmium's 1e-7° grid. Ordered by x, then y, like
/// `osmium::Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Location {
    x: i32,
    y: i32,
}

#[derive(Debug, Clone, Copy)]
struct NodeRef {
    location: Location,
    coord: Coord<f64>,
}

#[derive(Debug)]
struct Segment {
    /// The end with the smaller location.
    first: NodeRef,
    second: NodeRef,
    ring: Option<usize>,
    /// Whether the segment is walked from `second` to `first` in its ring.
    reverse: bool,
    /// Whether the segment's ring has its final orientation; only such
    /// segments count when looking for enclosing rings.
    direction_done: bool,
}

impl Segment {
    fn new(a: NodeRef, b: NodeRef) -> Self {
        let (first, second) = if a.location < b.location {
            (a, b)
        } else {
            (b, a)
        };
        Segment {
            first,
            second,
            ring: None,
            reverse: false,
            direction_done: false,
        }
    }

    fn start(&self) -> &NodeRef {
        if self.reverse {
            &self.second
        } else {
            &self.first
        }
    }

    fn stop(&self) -> &NodeRef {
        if self.reverse {
            &self.first
        } else {
            &self.second
        }
    }

    /// Cross product of start and stop: the ring's doubled signed area is
    /// the sum of these.
    fn det(&self) -> i128 {
        let a = self.start().location;
        let b = self.stop().location;
        i128::from(a.x) * i128::from(b.y) - i128::from(a.y) * i128::from(b.x)
    }

    fn same_locations(&self, other: &Segment) -> bool {
        self.first.location == other.first.location && self.second.location == other.second.location
    }
}

/// osmium's segment order: by first location; for equal first locations the
/// steeper segment first, for equal slopes the shorter one.
fn compare_segments(lhs: &Segment, rhs: &Segment) -> Ordering {
    if lhs.first.location != rhs.first.location {
        return lhs.first.location.cmp(&rhs.first.location);
    }
    let (px, py) = difference(lhs.second.location, lhs.first.location);
    let (qx, qy) = difference(rhs.second.location, rhs.first.location);
    if px == 0 && qx == 0 {
        return py.cmp(&qy);
    }
    let a = py * qx;
    let b = qy * px;
    if a == b {
        return px.cmp(&qx);
    }
    // larger slope first
    b.cmp(&a)
}

fn difference(a: Location, b: Location) -> (i128, i128) {
    (
        i128::from(a.x) - i128::from(b.x),
        i128::from(a.y) - i128::from(b.y),
    )
}

fn cross(a: (i128, i128), b: (i128, i128)) -> i128 {
    a.0 * b.1 - a.1 * b.0
}

/// Whether two (distinct, sorted) segments intersect in a way that makes
/// the area invalid: crossing, an end point in the other's interior, or a
/// collinear overlap. Sharing an end point is fine.
fn segments_intersect(s1: &Segment, s2: &Segment) -> bool {
    let p0 = s1.first.location;
    let p1 = s1.second.location;
    let q0 = s2.first.location;
    let q1 = s2.second.location;

    if (p0 == q0 && p1 == q1) || (p0 == q1 && p1 == q0) {
        return false;
    }

    let pd = difference(p1, p0);
    let d = cross(pd, difference(q1, q0));

    if d != 0 {
        if p0 == q0 || p0 == q1 || p1 == q0 || p1 == q1 {
            return false;
        }
        let qd = difference(q1, q0);
        let pq = difference(p0, q0);
        let na = qd.0 * pq.1 - qd.1 * pq.0;
        let nb = pd.0 * pq.1 - pd.1 * pq.0;
        return (d > 0 && na >= 0 && na <= d && nb >= 0 && nb <= d)
            || (d < 0 && na <= 0 && na >= d && nb <= 0 && nb >= d);
    }

    // Parallel: only collinear overlaps count.
    if cross(pd, difference(q0, p0)) != 0 {
        return false;
    }
    let mut ends = [(0, p0), (0, p1), (1, q0), (1, q1)];
    ends.sort_by_key(|&(_, location)| location);
    if ends[1].1 == ends[2].1 {
        // touching end to end
        return false;
    }
    ends[0].0 != ends[1].0
}

#[derive(Debug, Clone, Copy)]
struct SegmentEnd {
    segment: usize,
    /// The `second` end of the segment (else `first`).
    second: bool,
}

#[derive(Debug)]
struct ProtoRing {
    segments: Vec<usize>,
    inner: Vec<usize>,
    /// Index of the smallest segment in sort order.
    min_segment: usize,
    outer: Option<usize>,
    /// Doubled signed area (positive: counter-clockwise).
    sum: i128,
}

/// Why assembly failed; only used internally, osm2pgsql simply writes
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    NoSegments,
    Intersection,
    OpenRing,
    TooManySplitLocations,
    TooDeep,
    /// A state osmium only asserts against (undefined behaviour there).
    Inconsistent,
}

/// One entry of the map from open ring ends to rings used when joining.
#[derive(Debug, Clone, Copy)]
struct RingEnd {
    location: Location,
    ring: usize,
    /// The ring's start (else its stop).
    start: bool,
}

#[derive(Debug, Clone)]
struct Candidate {
    sum: i128,
    rings: Vec<usize>,
    start: Location,
    stop: Location,
}

/// An assembled area: outer rings with their inner rings, in osmium's order.
pub(crate) type Rings = Vec<(LineString<f64>, Vec<LineString<f64>>)>;

#[derive(Default)]
pub(crate) struct Assembler {
    segments: Vec<Segment>,
    rings: Vec<ProtoRing>,
    /// Live rings in creation order (osmium's `m_rings` list).
    ring_order: Vec<usize>,
    ends: Vec<SegmentEnd>,
    split_locations: Vec<Location>,
}

impl Assembler {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds the segments of one way given by its projected node locations.
    pub(crate) fn add_way(&mut self, points: &[Coord<f64>]) {
        self.add_nodes(points.iter().map(|&coord| (unproject_fixed(coord), coord)));
    }

    /// Adds the segments of one way given by each node's location on the
    /// 1e-7° grid (which all decisions are made on) and the coordinate to
    /// output for it, in any projection. The flex output assembles in
    /// EPSG:4326, where nothing needs to be recovered from the coordinates.
    pub(crate) fn add_way_located(&mut self, points: &[((i32, i32), Coord<f64>)]) {
        self.add_nodes(points.iter().copied());
    }

    fn add_nodes(&mut self, points: impl Iterator<Item = ((i32, i32), Coord<f64>)>) {
        let mut previous: Option<NodeRef> = None;
        for ((x, y), coord) in points {
            let node = NodeRef {
                location: Location { x, y },
                coord,
            };
            if let Some(previous) = previous {
                if previous.location != node.location {
                    self.segments.push(Segment::new(previous, node));
                }
            }
            previous = Some(node);
        }
    }

    /// Runs the assembly; on success returns the outer rings, each with its
    /// inner rings.
    pub(crate) fn assemble(mut self) -> Result<Rings, Failure> {
        self.create_rings()?;
        Ok(self.output())
    }

    fn output(&self) -> Rings {
        self.ring_order
            .iter()
            .filter(|&&r| self.rings[r].outer.is_none())
            .map(|&r| {
                let inners = self.rings[r]
                    .inner
                    .iter()
                    .map(|&i| self.ring_coords(i))
                    .collect();
                (self.ring_coords(r), inners)
            })
            .collect()
    }

    fn ring_coords(&self, ring: usize) -> LineString<f64> {
        let segments = &self.rings[ring].segments;
        let mut coords = Vec::with_capacity(segments.len() + 1);
        coords.push(self.segments[segments[0]].start().coord);
        coords.extend(segments.iter().map(|&s| self.segments[s].stop().coord));
        LineString::new(coords)
    }

    fn create_rings(&mut self) -> Result<(), Failure> {
        self.segments.sort_by(compare_segments);
        self.erase_duplicate_segments();
        if self.segments.is_empty() {
            return Err(Failure::NoSegments);
        }
        if self.has_intersections() {
            return Err(Failure::Intersection);
        }
        self.create_locations_list();
        self.find_split_locations()?;

        if self.split_locations.is_empty() {
            self.create_rings_simple_case()
        } else if self.split_locations.len() > MAX_SPLIT_LOCATIONS {
            Err(Failure::TooManySplitLocations)
        } else {
            self.create_rings_complex_case()
        }
    }

    /// Removes identical segments two by two: of a run of n identical
    /// segments, n mod 2 (the last one) remains.
    fn erase_duplicate_segments(&mut self) {
        let segments = std::mem::take(&mut self.segments);
        let mut kept: Vec<Segment> = Vec::with_capacity(segments.len());
        for segment in segments {
            // Identical segments are adjacent after sorting, and after a
            // pair is removed the last kept one belongs to an earlier run.
            if kept
                .last()
                .is_some_and(|last| last.same_locations(&segment))
            {
                kept.pop();
            } else {
                kept.push(segment);
            }
        }
        self.segments = kept;
    }

    fn has_intersections(&self) -> bool {
        let segments = &self.segments;
        for (i, s1) in segments.iter().enumerate() {
            for s2 in &segments[i + 1..] {
                // sorted by first x: nothing further right can intersect
                if s2.first.location.x > s1.second.location.x {
                    break;
                }
                if y_ranges_overlap(s1, s2) && segments_intersect(s1, s2) {
                    return true;
                }
            }
        }
        false
    }

    fn end_location(&self, end: SegmentEnd) -> Location {
        let segment = &self.segments[end.segment];
        if end.second {
            segment.second.location
        } else {
            segment.first.location
        }
    }

    fn create_locations_list(&mut self) {
        let mut ends = Vec::with_capacity(self.segments.len() * 2);
        for segment in 0..self.segments.len() {
            ends.push(SegmentEnd {
                segment,
                second: false,
            });
            ends.push(SegmentEnd {
                segment,
                second: true,
            });
        }
        // stable, like osmium's std::stable_sort
        ends.sort_by_key(|&end| self.end_location(end));
        self.ends = ends;
    }

    /// Index of the first segment end at `location`.
    fn lower_bound(&self, location: Location) -> usize {
        self.ends
            .partition_point(|&end| self.end_location(end) < location)
    }

    fn find_split_locations(&mut self) -> Result<(), Failure> {
        let mut previous: Option<Location> = None;
        let mut open_rings = false;
        let mut i = 0;
        while i < self.ends.len() {
            let location = self.end_location(self.ends[i]);
            let paired = i + 1 < self.ends.len() && self.end_location(self.ends[i + 1]) == location;
            if !paired {
                open_rings = true;
            } else {
                if previous == Some(location) && self.split_locations.last() != Some(&location) {
                    self.split_locations.push(location);
                }
                i += 1;
            }
            previous = Some(location);
            i += 1;
        }
        if open_rings {
            Err(Failure::OpenRing)
        } else {
            Ok(())
        }
    }

    fn is_split_location(&self, location: Location) -> bool {
        self.split_locations.contains(&location)
    }

    /// The unused segment continuing a ring at `location` (where exactly
    /// two segment ends meet).
    fn next_segment(&self, location: Location) -> Result<usize, Failure> {
        let mut i = self.lower_bound(location);
        if i < self.ends.len() && self.segments[self.ends[i].segment].ring.is_some() {
            i += 1;
        }
        match self.ends.get(i) {
            Some(&end)
                if self.end_location(end) == location
                    && self.segments[end.segment].ring.is_none() =>
            {
                Ok(end.segment)
            }
            _ => Err(Failure::Inconsistent),
        }
    }

    fn ring_start(&self, ring: usize) -> Location {
        let first = self.rings[ring].segments[0];
        self.segments[first].start().location
    }

    fn ring_stop(&self, ring: usize) -> Location {
        let last = *self.rings[ring]
            .segments
            .last()
            .expect("rings are never empty");
        self.segments[last].stop().location
    }

    fn ring_closed(&self, ring: usize) -> bool {
        self.ring_start(ring) == self.ring_stop(ring)
    }

    fn new_ring(&mut self, segment: usize) -> usize {
        let id = self.rings.len();
        self.rings.push(ProtoRing {
            segments: Vec::new(),
            inner: Vec::new(),
            min_segment: segment,
            outer: None,
            sum: 0,
        });
        self.ring_order.push(id);
        self.add_segment_back(id, segment);
        id
    }

    fn add_segment_back(&mut self, ring: usize, segment: usize) {
        let det = self.segments[segment].det();
        self.segments[segment].ring = Some(ring);
        let r = &mut self.rings[ring];
        // The segment list is sorted, so index order is segment order.
        if segment < r.min_segment {
            r.min_segment = segment;
        }
        r.segments.push(segment);
        r.sum += det;
    }

    fn reverse_ring(&mut self, ring: usize) {
        let r = &mut self.rings[ring];
        for &s in &r.segments {
            self.segments[s].reverse = !self.segments[s].reverse;
        }
        r.segments.reverse();
        r.sum = -r.sum;
    }

    /// Outer rings counter-clockwise, inner rings clockwise (a zero-area
    /// ring counts as clockwise).
    fn fix_direction(&mut self, ring: usize) {
        let r = &self.rings[ring];
        let clockwise = r.sum <= 0;
        if clockwise == r.outer.is_none() {
            self.reverse_ring(ring);
        }
    }

    fn mark_direction_done(&mut self, ring: usize, done: bool) {
        for &s in &self.rings[ring].segments {
            self.segments[s].direction_done = done;
        }
    }

    fn set_inner(&mut self, inner: usize, outer: usize) {
        self.rings[outer].inner.push(inner);
        self.rings[inner].outer = Some(outer);
    }

    /// Casts a ray downwards from the first point of `segment` through the
    /// segments of rings already finished and returns the outer ring the
    /// point lies in, or `None` if the ring starting there is an outer ring.
    fn find_enclosing_ring(&self, segment: usize) -> Result<Option<usize>, Failure> {
        let location = self.segments[segment].first.location;
        let end_location = self.segments[segment].second.location;

        let mut index = segment;
        while self.segments[index].first.location == location {
            if index == self.segments.len() - 1 {
                break;
            }
            index += 1;
        }

        let mut nesting: i64 = 0;
        let mut outer_rings: Vec<(f64, usize)> = Vec::new();
        for candidate in self.segments[..=index].iter().rev() {
            if !candidate.direction_done {
                continue;
            }
            let a = candidate.first.location;
            let b = candidate.second.location;
            let ring = candidate.ring.ok_or(Failure::Inconsistent)?;
            let step = if candidate.reverse { -1 } else { 1 };
            if a == location {
                // Same start point: is the other segment below ours?
                let z = cross(difference(b, a), difference(end_location, a));
                if z > 0 {
                    nesting += step;
                    if self.rings[ring].outer.is_none() {
                        outer_rings.push((f64::from(a.y), ring));
                    }
                }
            } else if a.x <= location.x && location.x < b.x {
                let (bx, by) = difference(b, a);
                let (lx, ly) = difference(location, a);
                let z = bx * ly - by * lx;
                if z >= 0 {
                    nesting += step;
                    if self.rings[ring].outer.is_none() {
                        let y = f64::from(a.y) + ((by * lx) as f64) / (bx as f64);
                        outer_rings.push((y, ring));
                    }
                }
            }
        }

        if nesting % 2 == 0 {
            return Ok(None);
        }

        // Nearest below first (stable, as osmium's stable_sort on reversed
        // iterators keeps equal elements in their original order).
        outer_rings.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));
        // Remove adjacent pairs belonging to the same ring.
        while let Some(i) = outer_rings.windows(2).position(|w| w[0].1 == w[1].1) {
            outer_rings.drain(i..i + 2);
        }
        outer_rings
            .first()
            .map(|&(_, ring)| Some(ring))
            .ok_or(Failure::Inconsistent)
    }

    fn add_new_ring(&mut self, end: SegmentEnd) -> Result<usize, Failure> {
        let segment = end.segment;
        if end.second {
            self.segments[segment].reverse = !self.segments[segment].reverse;
        }
        let outer = if segment != 0 {
            self.find_enclosing_ring(segment)?
        } else {
            None
        };
        self.segments[segment].direction_done = true;
        let ring = self.new_ring(segment);
        if let Some(outer) = outer {
            self.set_inner(ring, outer);
        }

        let first_location = self.end_location(end);
        let mut last_location = self.segments[segment].stop().location;
        let mut count = 1;
        while first_location != last_location {
            count += 1;
            let next = self.next_segment(last_location)?;
            self.segments[next].direction_done = true;
            if self.segments[next].start().location != last_location {
                self.segments[next].reverse = !self.segments[next].reverse;
            }
            self.add_segment_back(ring, next);
            last_location = self.segments[next].stop().location;
        }
        self.fix_direction(ring);
        Ok(count)
    }

    fn create_rings_simple_case(&mut self) -> Result<(), Failure> {
        let mut remaining = self.segments.len();
        for i in 0..self.ends.len() {
            let end = self.ends[i];
            if self.segments[end.segment].ring.is_none() {
                remaining = remaining.saturating_sub(self.add_new_ring(end)?);
                if remaining == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Traces a ring, or a partial ring up to the next split location.
    fn add_new_ring_complex(&mut self, end: SegmentEnd) -> Result<usize, Failure> {
        let segment = end.segment;
        if end.second {
            self.segments[segment].reverse = !self.segments[segment].reverse;
        }
        let ring = self.new_ring(segment);

        let first_location = self.end_location(end);
        let mut last_location = self.segments[segment].stop().location;
        let mut count = 1;
        while first_location != last_location && !self.is_split_location(last_location) {
            count += 1;
            let next = self.next_segment(last_location)?;
            if self.segments[next].start().location != last_location {
                self.segments[next].reverse = !self.segments[next].reverse;
            }
            self.add_segment_back(ring, next);
            last_location = self.segments[next].stop().location;
        }
        Ok(count)
    }

    fn create_rings_complex_case(&mut self) -> Result<(), Failure> {
        let mut remaining = self.segments.len();
        for split in self.split_locations.clone() {
            let mut i = self.lower_bound(split);
            while i < self.ends.len() && self.end_location(self.ends[i]) == split {
                let end = self.ends[i];
                if self.segments[end.segment].ring.is_none() {
                    remaining = remaining.saturating_sub(self.add_new_ring_complex(end)?);
                    if remaining == 0 {
                        break;
                    }
                }
                i += 1;
            }
        }
        if remaining > 0 {
            for i in 0..self.ends.len() {
                let end = self.ends[i];
                if self.segments[end.segment].ring.is_none() {
                    remaining = remaining.saturating_sub(self.add_new_ring_complex(end)?);
                    if remaining == 0 {
                        break;
                    }
                }
            }
        }

        let mut open: Vec<usize> = self
            .ring_order
            .iter()
            .copied()
            .filter(|&r| !self.ring_closed(r))
            .collect();
        while !open.is_empty() {
            while self.try_to_merge(&mut open)? {}
            if !open.is_empty() {
                self.join_connected_rings(&mut open)?;
            }
        }

        self.find_inner_outer_complex()
    }

    /// Sorted map from the ends of open rings to the rings.
    fn ring_end_map(&self, open: &[usize]) -> Vec<RingEnd> {
        let mut map = Vec::with_capacity(open.len() * 2);
        for &ring in open {
            map.push(RingEnd {
                location: self.ring_start(ring),
                ring,
                start: true,
            });
            map.push(RingEnd {
                location: self.ring_stop(ring),
                ring,
                start: false,
            });
        }
        map.sort_by_key(|end| end.location);
        map
    }

    fn merge_two_rings(
        &mut self,
        open: &mut Vec<usize>,
        r1: usize,
        r2: usize,
    ) -> Result<(), Failure> {
        if r1 == r2 || !self.ring_order.contains(&r2) {
            return Err(Failure::Inconsistent);
        }
        let (start1, stop1) = (self.ring_start(r1), self.ring_stop(r1));
        let (start2, stop2) = (self.ring_start(r2), self.ring_stop(r2));
        let backward = if stop1 == start2 {
            false
        } else if stop1 == stop2 {
            true
        } else if start1 == start2 {
            self.reverse_ring(r1);
            false
        } else if start1 == stop2 {
            self.reverse_ring(r1);
            true
        } else {
            return Err(Failure::Inconsistent);
        };

        let mut segments = std::mem::take(&mut self.rings[r2].segments);
        if backward {
            segments.reverse();
        }
        for segment in segments {
            if backward {
                self.segments[segment].reverse = !self.segments[segment].reverse;
            }
            self.add_segment_back(r1, segment);
        }

        open.retain(|&r| r != r2);
        self.ring_order.retain(|&r| r != r2);
        if self.ring_closed(r1) {
            open.retain(|&r| r != r1);
        }
        Ok(())
    }

    /// Joins two open rings at a location where only their two ends meet.
    fn try_to_merge(&mut self, open: &mut Vec<usize>) -> Result<bool, Failure> {
        if open.is_empty() {
            return Ok(false);
        }
        let map = self.ring_end_map(open);
        let mut i = 0;
        while i + 1 < map.len() {
            if map[i].location != map[i + 1].location {
                i += 1;
                continue;
            }
            let location = map[i].location;
            if map
                .get(i + 2)
                .is_none_or(|after| after.location != location)
            {
                self.merge_two_rings(open, map[i].ring, map[i + 1].ring)?;
                return Ok(true);
            }
            while i < map.len() && map[i].location == location {
                i += 1;
            }
        }
        Ok(false)
    }

    /// Where more than two open ring ends meet: closes the open ring with
    /// the smallest segment using the combination of open rings giving the
    /// smallest (if it is an outer ring) or largest (inner ring) area.
    fn join_connected_rings(&mut self, open: &mut Vec<usize>) -> Result<(), Failure> {
        let map = self.ring_end_map(open);
        let ring_min = map
            .iter()
            .min_by_key(|end| self.rings[end.ring].min_segment)
            .copied()
            .ok_or(Failure::Inconsistent)?;

        self.find_inner_outer_complex()?;
        let ring_min_is_outer = self
            .find_enclosing_ring(self.rings[ring_min.ring].min_segment)?
            .is_none();
        for ring in self.ring_order.clone() {
            self.rings[ring].inner.clear();
            self.rings[ring].outer = None;
            self.mark_direction_done(ring, false);
        }

        let start = Candidate {
            sum: self.rings[ring_min.ring].sum,
            rings: vec![ring_min.ring],
            start: self.ring_start(ring_min.ring),
            stop: self.ring_stop(ring_min.ring),
        };
        let mut visited = vec![start.stop];
        let mut candidates = Vec::new();
        self.find_candidates(&mut candidates, &mut visited, &map, &start, 0)?;

        let chosen = if ring_min_is_outer {
            candidates.first()
        } else {
            candidates.last()
        }
        .cloned()
        .ok_or(Failure::OpenRing)?;

        let first = chosen.rings[0];
        for &ring in &chosen.rings[1..] {
            self.merge_two_rings(open, first, ring)?;
        }
        Ok(())
    }

    fn find_candidates(
        &self,
        candidates: &mut Vec<Candidate>,
        visited: &mut Vec<Location>,
        map: &[RingEnd],
        candidate: &Candidate,
        depth: usize,
    ) -> Result<(), Failure> {
        if depth > MAX_DEPTH {
            return Err(Failure::TooDeep);
        }
        let from = map.partition_point(|end| end.location < candidate.stop);
        let leading_here = *candidate.rings.last().expect("candidates are never empty");
        for end in map[from..]
            .iter()
            .take_while(|end| end.location == candidate.stop)
        {
            if end.ring == leading_here {
                continue;
            }
            let mut next = candidate.clone();
            next.rings.push(end.ring);
            let ring_sum = self.rings[end.ring].sum;
            if end.start {
                next.stop = self.ring_stop(end.ring);
                next.sum += ring_sum;
            } else {
                next.stop = self.ring_start(end.ring);
                next.sum -= ring_sum;
            }

            if next.start == next.stop {
                // Keep only the smallest and the largest closed candidate.
                let size = next.sum.abs();
                match candidates.len() {
                    0 => candidates.push(next),
                    1 => {
                        if size < candidates[0].sum.abs() {
                            candidates.insert(0, next);
                        } else {
                            candidates.push(next);
                        }
                    }
                    _ => {
                        if size < candidates[0].sum.abs() {
                            candidates[0] = next;
                        } else if size > candidates[candidates.len() - 1].sum.abs() {
                            let last = candidates.len() - 1;
                            candidates[last] = next;
                        }
                    }
                }
            } else if !visited.contains(&next.stop) {
                visited.push(next.stop);
                self.find_candidates(candidates, visited, map, &next, depth + 1)?;
                visited.pop();
            }
        }
        Ok(())
    }

    /// Decides inner/outer for all closed rings, in the order of their
    /// smallest segment, and orients them.
    fn find_inner_outer_complex(&mut self) -> Result<(), Failure> {
        let mut closed: Vec<usize> = self
            .ring_order
            .iter()
            .copied()
            .filter(|&r| self.ring_closed(r))
            .collect();
        closed.sort_by_key(|&r| self.rings[r].min_segment);
        let Some((&first, rest)) = closed.split_first() else {
            return Ok(());
        };
        self.fix_direction(first);
        self.mark_direction_done(first, true);
        for &ring in rest {
            if let Some(outer) = self.find_enclosing_ring(self.rings[ring].min_segment)? {
                self.set_inner(ring, outer);
            }
            self.fix_direction(ring);
            self.mark_direction_done(ring, true);
        }
        Ok(())
    }
}

fn y_ranges_overlap(s1: &Segment, s2: &Segment) -> bool {
    let range = |s: &Segment| {
        let (a, b) = (s.first.location.y, s.second.location.y);
        (a.min(b), a.max(b))
    };
    let (min1, max1) = range(s1);
    let (min2, max2) = range(s2);
    !(min1 > max2 || min2 > max1)
}
