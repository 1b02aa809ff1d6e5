//! Polygons from closed ways and multipolygon relations, and their areas.

use super::assembler::{Assembler, Rings};
use super::line::without_consecutive_duplicates;
use geo::{Coord, Geometry, LineString, MultiPolygon, Polygon};

/// A member way of a multipolygon or boundary relation, with its node
/// locations projected to 3857 (nodes without location left out;
/// consecutive duplicates may remain).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberWay {
    /// The way's id.
    pub way_id: i64,
    /// The member role. Like osmium's `GeomAssembler`, assembly ignores it:
    /// inner and outer rings are told apart by geometry alone.
    pub role: String,
    /// The way's node locations in order, EPSG:3857 metres.
    pub points: Vec<Coord<f64>>,
}

/// The polygon osm2pgsql 1.8 builds from a closed way tagged as an area
/// (`geom::create_polygon`): the way is run through osmium's area assembler
/// and the **first outer ring only** is kept (a way that touches itself and
/// so forms several rings loses the others; inner rings are never kept).
///
/// `None` where osmium fails (osm2pgsql then writes nothing, not even a
/// line): fewer than 4 points, a ring that is not closed, a
/// self-intersecting or self-overlapping ring, a ring that collapses to
/// nothing (all segments doubled back). The outer ring is counter-clockwise
/// and starts at its smallest location (west-most, then south-most point).
///
/// The caller decides whether the way is closed (osm2pgsql: first node id
/// equals last node id) and passes only nodes with a location.
pub fn way_polygon(points: &[Coord<f64>]) -> Option<Polygon<f64>> {
    // osm2pgsql checks the raw node count; with fewer than 4 nodes osmium
    // could not assemble a ring anyway.
    if points.len() < 4 {
        return None;
    }
    let mut assembler = Assembler::new();
    assembler.add_way(points);
    first_outer_ring(assembler)
}

/// A node for assembly in any projection: its location on the 1e-7° grid
/// (`Location::to_fixed`) and the coordinate to output for it.
pub(crate) type Located = ((i32, i32), Coord<f64>);

/// [`way_polygon`] for nodes given with their grid location, so that the
/// output can be in any projection (the flex output builds polygons in
/// EPSG:4326). Same rules and result as `way_polygon`.
pub(crate) fn way_polygon_located(points: &[Located]) -> Option<Polygon<f64>> {
    if points.len() < 4 {
        return None;
    }
    let mut assembler = Assembler::new();
    assembler.add_way_located(points);
    first_outer_ring(assembler)
}

/// osm2pgsql's `geom::create_polygon` after the node count check: the first
/// outer ring, without consecutive duplicates (`fill_point_list`).
fn first_outer_ring(assembler: Assembler) -> Option<Polygon<f64>> {
    let rings = assembler.assemble().ok()?;
    let (outer, _) = rings.into_iter().next()?;
    Some(Polygon::new(
        LineString::new(without_consecutive_duplicates(&outer.0)),
        vec![],
    ))
}

/// Assembles the member ways of a `type=multipolygon` or `type=boundary`
/// relation the way osm2pgsql 1.8 does (osmium's `GeomAssembler` via
/// `geom::create_multipolygon`), `None` where that fails (osm2pgsql then
/// writes no polygon rows for the relation).
///
/// Pass the member ways exactly as osm2pgsql's middle returns them: in
/// member order, one entry per way member (a way listed twice appears
/// twice, which makes its segments cancel out, as in osm2pgsql), members
/// missing from the database left out, all roles (also empty and unusual
/// ones) included.
///
/// Behaviour reproduced from osmium:
/// - ways are joined into rings wherever their end points coincide,
///   whatever their direction or the order of members; segments present an
///   even number of times cancel out;
/// - inner versus outer is decided by geometry (ray casting), never by role;
///   an island inside a hole is an outer ring again;
/// - rings touching in single points are traced apart (a ring touching
///   itself becomes two rings), up to 100 such points;
/// - any two segments crossing or overlapping, an end of a segment lying on
///   another segment, or an unclosed ring make the whole relation fail;
/// - outer rings come out counter-clockwise, inner rings clockwise, each
///   outer ring followed by the inner rings it contains; polygons are in
///   osmium's order (by the smallest location of their outer ring in the
///   simple case).
///
/// osm2pgsql writes a POLYGON when there is one outer ring and a
/// MULTIPOLYGON otherwise (see [`single_or_multi`]); without `-G` each part
/// becomes its own row (see [`polygon_parts`]).
pub fn assemble_multipolygon(ways: &[MemberWay]) -> Option<MultiPolygon<f64>> {
    let mut assembler = Assembler::new();
    for way in ways {
        assembler.add_way(&way.points);
    }
    assembler.assemble().ok().map(rings_to_multipolygon)
}

/// [`assemble_multipolygon`] for member ways given as nodes with their grid
/// location (see [`Located`]), for output in any projection.
pub(crate) fn assemble_multipolygon_located(ways: &[Vec<Located>]) -> Option<MultiPolygon<f64>> {
    let mut assembler = Assembler::new();
    for way in ways {
        assembler.add_way_located(way);
    }
    assembler.assemble().ok().map(rings_to_multipolygon)
}

fn rings_to_multipolygon(rings: Rings) -> MultiPolygon<f64> {
    MultiPolygon::new(
        rings
            .into_iter()
            .map(|(outer, inners)| Polygon::new(outer, inners))
            .collect(),
    )
}

/// One polygon per part, in order: the rows osm2pgsql writes for a
/// relation without `-G/--multi-geometry`.
pub fn polygon_parts(multipolygon: MultiPolygon<f64>) -> Vec<Polygon<f64>> {
    multipolygon.0
}

/// The geometry osm2pgsql writes with `-G`: a POLYGON if there is exactly
/// one part, else the MULTIPOLYGON.
pub fn single_or_multi(mut multipolygon: MultiPolygon<f64>) -> Geometry<f64> {
    if multipolygon.0.len() == 1 {
        Geometry::Polygon(multipolygon.0.pop().expect("one part"))
    } else {
        Geometry::MultiPolygon(multipolygon)
    }
}

/// Anything osm2pgsql computes a `way_area` for.
pub trait Areal {
    /// Sum of the signed ring areas (outer counter-clockwise positive),
    /// accumulated in osm2pgsql's order.
    fn signed_area(&self) -> f64;
}

impl Areal for Polygon<f64> {
    fn signed_area(&self) -> f64 {
        let mut total = ring_area(self.exterior());
        for ring in self.interiors() {
            total += ring_area(ring);
        }
        total * 0.5
    }
}

impl Areal for MultiPolygon<f64> {
    fn signed_area(&self) -> f64 {
        let mut total = 0.0;
        for polygon in &self.0 {
            total += polygon.signed_area();
        }
        total
    }
}

impl Areal for Geometry<f64> {
    /// Zero for anything but polygons and multipolygons, as in osm2pgsql.
    fn signed_area(&self) -> f64 {
        match self {
            Geometry::Polygon(p) => p.signed_area(),
            Geometry::MultiPolygon(mp) => mp.signed_area(),
            _ => 0.0,
        }
    }
}

/// Area in coordinate units (m² of EPSG:3857 for our coordinates), as
/// osm2pgsql 1.8's `way_area`: shoelace formula per ring, holes counted
/// negative thanks to their opposite orientation, absolute value of the
/// total.
pub fn area<G: Areal + ?Sized>(geometry: &G) -> f64 {
    geometry.signed_area().abs()
}

/// Twice the signed area of a ring by the shoelace formula, with
/// coordinates taken relative to the ring's first point. EPSG:3857
/// coordinates are large (10⁶–10⁷ m), so raw products `x·y` lose about a
/// millimetre² per term to rounding and a small building's area its sixth
/// digit; relative coordinates keep full precision. osm2pgsql 1.8's stored
/// `way_area` agrees with this on every polygon of the Liechtenstein
/// extract (the raw products agree on only about two thirds of them).
fn ring_area(ring: &LineString<f64>) -> f64 {
    let Some(origin) = ring.0.first().copied() else {
        return 0.0;
    };
    ring.0.windows(2).fold(0.0, |total, w| {
        let (a, b) = (w[0] - origin, w[1] - origin);
        total + (a.x * b.y - b.x * a.y)
    })
}

/// `way_area` as osm2pgsql 1.8 puts it into the COPY data: printf-style
/// `%g` (6 significant digits, e.g. `311.289`, `3.46731e+08`), which the
/// `real` column then stores.
pub fn format_way_area(area: f64) -> String {
    format_general(area, 6)
}

/// C's `%.{precision}g`.
fn format_general(value: f64, precision: usize) -> String {
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    if !value.is_finite() {
        return if value.is_nan() {
            "nan".to_string()
        } else if value > 0.0 {
            "inf".to_string()
        } else {
            "-inf".to_string()
        };
    }
    let precision = precision.max(1);
    // The exponent after rounding to `precision` significant digits.
    let scientific = format!("{:.*e}", precision - 1, value);
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    if exponent < -4 || exponent >= precision as i32 {
        let mantissa = trim_fraction(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        let decimals = (precision as i32 - 1 - exponent).max(0) as usize;
        trim_fraction(&format!("{value:.decimals$}")).to_string()
    }
}

fn trim_fraction(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::geom::project;

    /// A node on a ~111 m grid around Liechtenstein, projected like real
    /// data so that the assembler sees exact fixed-point locations.
    fn p(x: i32, y: i32) -> Coord<f64> {
        project(95_000_000 + x * 10_000, 470_000_000 + y * 10_000)
    }

    fn ring(points: &[(i32, i32)]) -> Vec<Coord<f64>> {
        points.iter().map(|&(x, y)| p(x, y)).collect()
    }

    fn way(id: i64, role: &str, points: &[(i32, i32)]) -> MemberWay {
        MemberWay {
            way_id: id,
            role: role.to_string(),
            points: ring(points),
        }
    }

    fn signed(ring: &LineString<f64>) -> f64 {
        ring_area(ring) * 0.5
    }

    /// Ring as grid points, for readable assertions.
    fn grid(ring: &LineString<f64>) -> Vec<(i32, i32)> {
        ring.0
            .iter()
            .map(|&c| {
                let (lon, lat) = crate::apply::geom::projection::unproject_fixed(c);
                ((lon - 95_000_000) / 10_000, (lat - 470_000_000) / 10_000)
            })
            .collect()
    }

    const SQUARE_CW: [(i32, i32); 5] = [(0, 10), (10, 10), (10, 0), (0, 0), (0, 10)];

    #[test]
    fn way_polygon_is_counter_clockwise_from_its_smallest_point() {
        let polygon = way_polygon(&ring(&SQUARE_CW)).unwrap();
        assert_eq!(
            grid(polygon.exterior()),
            vec![(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)]
        );
        assert!(signed(polygon.exterior()) > 0.0);
        assert!(polygon.interiors().is_empty());
    }

    #[test]
    fn way_polygon_removes_duplicate_nodes() {
        let polygon =
            way_polygon(&ring(&[(0, 0), (0, 0), (5, 0), (5, 5), (5, 5), (0, 0)])).unwrap();
        assert_eq!(
            grid(polygon.exterior()),
            vec![(0, 0), (5, 0), (5, 5), (0, 0)]
        );
    }

    #[test]
    fn degenerate_ways_fail() {
        // not closed
        assert!(way_polygon(&ring(&[(0, 0), (5, 0), (5, 5), (0, 5)])).is_none());
        // too few nodes
        assert!(way_polygon(&ring(&[(0, 0), (5, 0), (0, 0)])).is_none());
        // doubles back on itself: all segments cancel out
        assert!(way_polygon(&ring(&[(0, 0), (5, 0), (5, 5), (5, 0), (0, 0)])).is_none());
        // collinear, zero area: overlapping segments
        assert!(way_polygon(&ring(&[(0, 0), (5, 0), (9, 0), (0, 0)])).is_none());
        // bow tie: crossing segments
        assert!(way_polygon(&ring(&[(0, 0), (5, 5), (5, 0), (0, 5), (0, 0)])).is_none());
        // a node lying on another segment of the way
        assert!(
            way_polygon(&ring(&[(0, 0), (10, 0), (10, 10), (5, 0), (0, 10), (0, 0)])).is_none()
        );
    }

    #[test]
    fn spikes_cancel_out() {
        let polygon =
            way_polygon(&ring(&[(0, 0), (5, 0), (9, 9), (5, 0), (5, 5), (0, 0)])).unwrap();
        assert_eq!(
            grid(polygon.exterior()),
            vec![(0, 0), (5, 0), (5, 5), (0, 0)]
        );
    }

    #[test]
    fn way_touching_itself_keeps_only_the_first_ring() {
        // figure eight through (5, 5); as osm2pgsql 1.8 writes it (way 4 of
        // tests/fixtures/geom/cases.osm): the ring traced first from the
        // touching point
        let points = ring(&[(0, 0), (5, 5), (10, 0), (10, 10), (5, 5), (0, 10), (0, 0)]);
        let polygon = way_polygon(&points).unwrap();
        assert_eq!(
            grid(polygon.exterior()),
            vec![(5, 5), (0, 10), (0, 0), (5, 5)]
        );
        assert!(signed(polygon.exterior()) > 0.0);
        // the whole figure eight as a relation gives both rings
        let mp = assemble_multipolygon(&[MemberWay {
            way_id: 1,
            role: "outer".into(),
            points,
        }])
        .unwrap();
        assert_eq!(mp.0.len(), 2);
    }

    #[test]
    fn outer_ring_split_over_two_ways_one_reversed() {
        let ways = [
            way(1, "outer", &[(0, 0), (10, 0), (10, 10)]),
            // reversed direction
            way(2, "outer", &[(0, 0), (0, 10), (10, 10)]),
        ];
        let mp = assemble_multipolygon(&ways).unwrap();
        assert_eq!(mp.0.len(), 1);
        assert_eq!(
            grid(mp.0[0].exterior()),
            vec![(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)]
        );
        assert_eq!(area(&mp), area(&way_polygon(&ring(&SQUARE_CW)).unwrap()));
    }

    #[test]
    fn hole_is_found_by_geometry_not_role() {
        for role in ["inner", "outer", ""] {
            let ways = [
                way(1, "outer", &SQUARE_CW),
                // counter-clockwise hole, role possibly wrong
                way(2, role, &[(2, 2), (4, 2), (4, 4), (2, 4), (2, 2)]),
            ];
            let mp = assemble_multipolygon(&ways).unwrap();
            assert_eq!(mp.0.len(), 1, "role {role:?}");
            let polygon = &mp.0[0];
            assert_eq!(polygon.interiors().len(), 1);
            // inner rings are clockwise
            assert_eq!(
                grid(&polygon.interiors()[0]),
                vec![(2, 2), (2, 4), (4, 4), (4, 2), (2, 2)]
            );
            assert!(signed(&polygon.interiors()[0]) < 0.0);
            let expected = area(&Polygon::new(polygon.exterior().clone(), vec![]))
                - area(&Polygon::new(polygon.interiors()[0].clone(), vec![]));
            assert!((area(polygon) - expected).abs() < 1e-6);
        }
    }

    #[test]
    fn two_separate_outers_in_order_of_their_smallest_point() {
        let ways = [
            way(1, "outer", &[(20, 0), (30, 0), (30, 10), (20, 0)]),
            way(2, "outer", &[(0, 0), (10, 0), (10, 10), (0, 0)]),
        ];
        let mp = assemble_multipolygon(&ways).unwrap();
        assert_eq!(mp.0.len(), 2);
        assert_eq!(grid(mp.0[0].exterior())[0], (0, 0));
        assert_eq!(grid(mp.0[1].exterior())[0], (20, 0));
        let parts = polygon_parts(mp.clone());
        assert_eq!(parts.len(), 2);
        assert!(matches!(single_or_multi(mp), Geometry::MultiPolygon(_)));
    }

    #[test]
    fn island_in_a_hole_is_an_outer_ring() {
        let ways = [
            way(1, "outer", &[(0, 0), (30, 0), (30, 30), (0, 30), (0, 0)]),
            way(2, "inner", &[(5, 5), (25, 5), (25, 25), (5, 25), (5, 5)]),
            way(
                3,
                "outer",
                &[(10, 10), (20, 10), (20, 20), (10, 20), (10, 10)],
            ),
        ];
        let mp = assemble_multipolygon(&ways).unwrap();
        assert_eq!(mp.0.len(), 2);
        assert_eq!(mp.0[0].interiors().len(), 1);
        assert_eq!(grid(&mp.0[0].interiors()[0])[0], (5, 5));
        assert_eq!(grid(mp.0[1].exterior())[0], (10, 10));
        assert!(mp.0[1].interiors().is_empty());
        assert!(signed(mp.0[1].exterior()) > 0.0);
    }

    #[test]
    fn unclosed_ring_fails_the_whole_relation() {
        let ways = [
            way(1, "outer", &SQUARE_CW),
            way(2, "outer", &[(20, 0), (30, 0), (30, 10)]),
        ];
        assert!(assemble_multipolygon(&ways).is_none());
        assert!(assemble_multipolygon(&[]).is_none());
    }

    #[test]
    fn crossing_members_fail() {
        let ways = [
            way(1, "outer", &SQUARE_CW),
            way(2, "outer", &[(5, 5), (15, 5), (15, 15), (5, 15), (5, 5)]),
        ];
        assert!(assemble_multipolygon(&ways).is_none());
    }

    #[test]
    fn rings_touching_in_a_point() {
        // two outers touching at (10, 10)
        let ways = [
            way(1, "outer", &[(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)]),
            way(
                2,
                "outer",
                &[(10, 10), (20, 10), (20, 20), (10, 20), (10, 10)],
            ),
        ];
        let mp = assemble_multipolygon(&ways).unwrap();
        assert_eq!(mp.0.len(), 2);
        for polygon in &mp.0 {
            assert_eq!(polygon.exterior().0.len(), 5);
            assert!(signed(polygon.exterior()) > 0.0);
        }
        // an inner ring touching the outer ring in one point
        let ways = [
            way(
                1,
                "outer",
                &[(0, 10), (10, 10), (10, 0), (0, 0), (0, 5), (0, 10)],
            ),
            way(2, "inner", &[(0, 5), (5, 3), (5, 7), (0, 5)]),
        ];
        let mp = assemble_multipolygon(&ways).unwrap();
        assert_eq!(mp.0.len(), 1);
        assert_eq!(mp.0[0].interiors().len(), 1);
        assert!(signed(&mp.0[0].interiors()[0]) < 0.0);
        assert_eq!(
            grid(&mp.0[0].interiors()[0]),
            vec![(0, 5), (5, 7), (5, 3), (0, 5)]
        );
        assert_eq!(mp.0[0].exterior().0.len(), 6);
        // but a ring end lying on the other ring's segment is an
        // intersection
        let ways = [
            way(1, "outer", &SQUARE_CW),
            way(2, "inner", &[(0, 5), (5, 3), (5, 7), (0, 5)]),
        ];
        assert!(assemble_multipolygon(&ways).is_none());
    }

    #[test]
    fn shared_and_duplicate_segments_cancel_out() {
        // Two squares sharing an edge: the shared edge vanishes, one ring.
        let ways = [
            way(1, "outer", &[(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)]),
            way(2, "outer", &[(10, 0), (20, 0), (20, 10), (10, 10), (10, 0)]),
        ];
        let mp = assemble_multipolygon(&ways).unwrap();
        assert_eq!(mp.0.len(), 1);
        assert_eq!(
            grid(mp.0[0].exterior()),
            vec![
                (0, 0),
                (10, 0),
                (20, 0),
                (20, 10),
                (10, 10),
                (0, 10),
                (0, 0)
            ]
        );
        // A way listed twice cancels itself.
        let hole = way(2, "inner", &[(2, 2), (4, 2), (4, 4), (2, 2)]);
        let ways = [way(1, "outer", &SQUARE_CW), hole.clone(), hole];
        let mp = assemble_multipolygon(&ways).unwrap();
        assert!(mp.0[0].interiors().is_empty());
    }

    #[test]
    fn inner_rings_touching_each_other_are_traced_apart() {
        let ways = [
            way(1, "outer", &[(0, 0), (30, 0), (30, 30), (0, 30), (0, 0)]),
            way(2, "inner", &[(5, 5), (15, 5), (15, 15), (5, 5)]),
            way(3, "inner", &[(15, 15), (25, 15), (25, 25), (15, 15)]),
        ];
        let mp = assemble_multipolygon(&ways).unwrap();
        assert_eq!(mp.0.len(), 1);
        assert_eq!(mp.0[0].interiors().len(), 2);
        for inner in mp.0[0].interiors() {
            assert_eq!(inner.0.len(), 4);
            assert!(signed(inner) < 0.0);
        }
    }

    #[test]
    fn located_assembly_matches_projected_assembly() {
        // The same grid locations give the same rings whether the assembler
        // recovers them from 3857 coordinates or is told them; the located
        // variant outputs the coordinates it was given (here degrees).
        let degrees = |(x, y): (i32, i32)| {
            let fixed = (95_000_000 + x * 10_000, 470_000_000 + y * 10_000);
            let coord = Coord {
                x: f64::from(fixed.0) / 1e7,
                y: f64::from(fixed.1) / 1e7,
            };
            (fixed, coord)
        };
        let to_3857 = |ring: &LineString<f64>| -> LineString<f64> {
            ring.0
                .iter()
                .map(|c| project((c.x * 1e7).round() as i32, (c.y * 1e7).round() as i32))
                .collect()
        };
        let cases: Vec<Vec<Vec<(i32, i32)>>> = vec![
            vec![SQUARE_CW.to_vec()],
            vec![vec![
                (0, 0),
                (5, 5),
                (10, 0),
                (10, 10),
                (5, 5),
                (0, 10),
                (0, 0),
            ]],
            vec![
                vec![(0, 0), (30, 0), (30, 30), (0, 30), (0, 0)],
                vec![(5, 5), (25, 5), (25, 25), (5, 25), (5, 5)],
                vec![(10, 10), (20, 10), (20, 20), (10, 20), (10, 10)],
            ],
            vec![
                vec![(0, 0), (10, 0), (10, 10)],
                vec![(0, 0), (0, 10), (10, 10)],
                vec![(20, 0), (30, 0), (30, 10), (20, 0)],
            ],
            vec![
                SQUARE_CW.to_vec(),
                vec![(5, 5), (15, 5), (15, 15), (5, 15), (5, 5)],
            ],
        ];
        for case in cases {
            let projected: Vec<MemberWay> = case
                .iter()
                .enumerate()
                .map(|(i, points)| way(i as i64, "", points))
                .collect();
            let located: Vec<Vec<Located>> = case
                .iter()
                .map(|points| points.iter().map(|&p| degrees(p)).collect())
                .collect();
            let expected = assemble_multipolygon(&projected);
            let got = assemble_multipolygon_located(&located).map(|mp| {
                MultiPolygon::new(
                    mp.0.iter()
                        .map(|p| {
                            Polygon::new(
                                to_3857(p.exterior()),
                                p.interiors().iter().map(to_3857).collect(),
                            )
                        })
                        .collect(),
                )
            });
            assert_eq!(got, expected, "{case:?}");
            if let [single] = case.as_slice() {
                let got = way_polygon_located(&located[0])
                    .map(|p| Polygon::new(to_3857(p.exterior()), vec![]));
                assert_eq!(got, way_polygon(&ring(single)), "{single:?}");
            }
        }
    }

    #[test]
    fn area_of_a_square_with_a_hole() {
        let square = LineString::from(vec![
            (0.0, 0.0),
            (10.0, 0.0),
            (10.0, 10.0),
            (0.0, 10.0),
            (0.0, 0.0),
        ]);
        let hole = LineString::from(vec![
            (2.0, 2.0),
            (2.0, 4.0),
            (4.0, 4.0),
            (4.0, 2.0),
            (2.0, 2.0),
        ]);
        let polygon = Polygon::new(square.clone(), vec![hole]);
        assert_eq!(area(&polygon), 96.0);
        // orientation does not matter for the absolute value
        let reversed: LineString<f64> = square.0.iter().rev().copied().collect();
        assert_eq!(area(&Polygon::new(reversed, vec![])), 100.0);
        let mp = MultiPolygon::new(vec![polygon.clone(), polygon]);
        assert_eq!(area(&mp), 192.0);
        assert_eq!(area(&Geometry::MultiPolygon(mp)), 192.0);
        assert_eq!(area(&Geometry::Point(geo::Point::new(1.0, 1.0))), 0.0);
    }

    #[test]
    fn way_area_is_formatted_like_printf_g() {
        assert_eq!(format_way_area(311.28920568317994), "311.289");
        assert_eq!(format_way_area(346_730_778.0916212), "3.46731e+08");
        assert_eq!(format_way_area(270_928_980.6287042), "2.70929e+08");
        assert_eq!(format_way_area(49_951_002.22241441), "4.9951e+07");
        assert_eq!(format_way_area(100_000.0), "100000");
        assert_eq!(format_way_area(999_999.5), "1e+06");
        assert_eq!(format_way_area(0.5), "0.5");
        assert_eq!(format_way_area(0.000_012_345_67), "1.23457e-05");
        assert_eq!(format_way_area(0.0), "0");
        assert_eq!(format_way_area(12.0), "12");
    }
}
