//! Tests of the flex geometry constructors and methods. Expected values
//! marked "upstream" are those of osm2pgsql's `tests/test-geom-*.cpp`
//! (1.8.0, and HEAD for `spherical_area`).

use super::*;
use crate::apply::geom::{ewkb::to_hex, project};
use geo::{coord, line_string, point, polygon};

/// A location in whole degrees (upstream tests use such coordinates).
fn loc(lon: f64, lat: f64) -> Location {
    Location::from_fixed((lon * 1e7).round() as i32, (lat * 1e7).round() as i32)
}

fn locs(points: &[(f64, f64)]) -> Vec<Location> {
    points.iter().map(|&(x, y)| loc(x, y)).collect()
}

fn geometry(g: &FlexGeometry) -> &Geometry<f64> {
    g.geometry().expect("not NULL")
}

fn single_line(g: &FlexGeometry) -> &LineString<f64> {
    match geometry(g) {
        Geometry::LineString(l) => l,
        other => panic!("not a linestring: {other:?}"),
    }
}

fn lines_of(g: &FlexGeometry) -> Vec<LineString<f64>> {
    match geometry(g) {
        Geometry::MultiLineString(ml) => ml.0.clone(),
        other => panic!("not a multilinestring: {other:?}"),
    }
}

fn point_geometry(x: f64, y: f64) -> FlexGeometry {
    FlexGeometry::new(WGS84, Geometry::Point(point!(x: x, y: y)))
}

fn unit_square() -> FlexGeometry {
    FlexGeometry::new(
        WGS84,
        Geometry::Polygon(polygon![
            (x: 0.0, y: 0.0), (x: 0.0, y: 1.0), (x: 1.0, y: 1.0), (x: 1.0, y: 0.0), (x: 0.0, y: 0.0)
        ]),
    )
}

fn multilinestring(lines: Vec<LineString<f64>>) -> FlexGeometry {
    FlexGeometry::new(
        WGS84,
        Geometry::MultiLineString(MultiLineString::new(lines)),
    )
}

// ---------------------------------------------------------------- constructors

#[test]
fn null_geometry() {
    let null = FlexGeometry::null();
    assert!(null.is_null());
    assert_eq!(null.srid(), 4326);
    assert_eq!(null.geometry_type(), "NULL");
    assert_eq!(null.num_geometries(), 0);
    assert_eq!(null.area(), 0.0);
    assert_eq!(null.length(), 0.0);
    assert_eq!(null.spherical_area(), Ok(0.0));
    assert!(null.centroid().is_null());
    assert!(null.geometry_n(1).is_null());
    assert!(null.reverse().is_null());
    assert!(null.line_merge().is_null());
    assert!(null.segmentize(10.0).is_null());
    assert!(null.simplify(1.0).is_null());
    assert!(null.pole_of_inaccessibility(1.0).is_null());
    assert!(null.geometries().is_empty());
}

#[test]
fn point_from_node_uses_the_fixed_point_location() {
    let g = FlexGeometry::from_node(Location::from_fixed(95_270_956, 470_862_971));
    assert_eq!(g.geometry_type(), "POINT");
    assert_eq!(g.srid(), 4326);
    assert_eq!(g.num_geometries(), 1);
    assert_eq!(
        geometry(&g),
        &Geometry::Point(point!(x: 9.5270956, y: 47.0862971))
    );
    // a location given with more digits is rounded to the grid first
    let g = FlexGeometry::from_node(Location {
        lon: 1.100_000_004_9,
        lat: 2.2,
    });
    assert_eq!(geometry(&g), &Geometry::Point(point!(x: 1.1, y: 2.2)));
    // upstream "create_point from OSM data"
    assert_eq!(g.area(), 0.0);
    assert_eq!(g.length(), 0.0);
    assert_eq!(g.centroid(), g);
    assert_eq!(g.geometry_n(1), g);
    assert_eq!(g.reverse(), g);
}

#[test]
fn linestring_drops_consecutive_duplicates() {
    let g = FlexGeometry::linestring(&locs(&[
        (1.0, 1.0),
        (1.0, 1.0),
        (2.0, 2.0),
        (2.0, 2.0),
        (1.0, 1.0),
    ]));
    assert_eq!(g.geometry_type(), "LINESTRING");
    assert_eq!(
        single_line(&g),
        &line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 2.0), (x: 1.0, y: 1.0)]
    );
    // upstream "create_linestring from OSM data"
    let g = FlexGeometry::linestring(&locs(&[(1.0, 1.0), (2.0, 2.0)]));
    assert!((g.length() - std::f64::consts::SQRT_2).abs() < 1e-15);
    assert_eq!(g.area(), 0.0);
    assert_eq!(
        geometry(&g.centroid()),
        &Geometry::Point(point!(x: 1.5, y: 1.5))
    );
}

#[test]
fn linestring_of_fewer_than_two_points_is_null() {
    assert!(FlexGeometry::linestring(&[]).is_null());
    assert!(FlexGeometry::linestring(&locs(&[(1.0, 1.0)])).is_null());
    assert!(FlexGeometry::linestring(&locs(&[(1.0, 1.0), (1.0, 1.0), (1.0, 1.0)])).is_null());
    // an invalid location (beyond ±90°) counts as missing, as in osmium
    assert!(FlexGeometry::linestring(&locs(&[(1.0, 1.0), (1.0, 95.0)])).is_null());
}

#[test]
fn way_polygon_like_upstream() {
    // upstream "create_polygon from OSM data" and its reverse: the outer
    // ring is counter-clockwise from its smallest point
    let expected = Geometry::Polygon(polygon![
        (x: 1.0, y: 1.0), (x: 2.0, y: 1.0), (x: 2.0, y: 2.0), (x: 1.0, y: 2.0), (x: 1.0, y: 1.0)
    ]);
    for nodes in [
        [(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 2.0), (1.0, 1.0)],
        [(1.0, 1.0), (1.0, 2.0), (2.0, 2.0), (2.0, 1.0), (1.0, 1.0)],
    ] {
        let g = FlexGeometry::way_polygon(&locs(&nodes));
        assert_eq!(g.geometry_type(), "POLYGON");
        assert_eq!(geometry(&g), &expected);
        assert_eq!(g.area(), 1.0);
        assert_eq!(g.length(), 0.0);
        assert_eq!(
            geometry(&g.centroid()),
            &Geometry::Point(point!(x: 1.5, y: 1.5))
        );
    }
}

#[test]
fn way_polygon_failures_are_null() {
    // single node, two nodes, unclosed, bow-tie (upstream), too few nodes
    for nodes in [
        vec![(1.0, 1.0)],
        vec![(1.0, 1.0), (2.0, 2.0)],
        vec![(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 2.0)],
        vec![(1.0, 1.0), (1.0, 2.0), (2.0, 1.0), (2.0, 2.0), (1.0, 1.0)],
        vec![(1.0, 1.0), (2.0, 1.0), (1.0, 1.0)],
    ] {
        assert!(
            FlexGeometry::way_polygon(&locs(&nodes)).is_null(),
            "{nodes:?}"
        );
    }
    assert!(FlexGeometry::way_polygon(&[]).is_null());
}

#[test]
fn way_polygon_removes_spikes_and_duplicates() {
    let g = FlexGeometry::way_polygon(&locs(&[
        (0.0, 0.0),
        (0.0, 0.0),
        (5.0, 0.0),
        (9.0, 9.0),
        (5.0, 0.0),
        (5.0, 5.0),
        (0.0, 0.0),
    ]));
    assert_eq!(
        geometry(&g),
        &Geometry::Polygon(
            polygon![(x: 0.0, y: 0.0), (x: 5.0, y: 0.0), (x: 5.0, y: 5.0), (x: 0.0, y: 0.0)]
        )
    );
}

#[test]
fn relation_multipolygon_like_upstream() {
    // upstream "create_multipolygon creates simple polygon from OSM data"
    let w20 = locs(&[(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 2.0)]);
    let w21 = locs(&[(1.0, 2.0), (1.0, 1.0)]);
    let g = FlexGeometry::relation_multipolygon(&[w20.clone(), w21.clone()]);
    assert_eq!(g.geometry_type(), "POLYGON");
    assert_eq!(
        geometry(&g),
        &Geometry::Polygon(polygon![
            (x: 1.0, y: 1.0), (x: 2.0, y: 1.0), (x: 2.0, y: 2.0), (x: 1.0, y: 2.0), (x: 1.0, y: 1.0)
        ])
    );
    assert_eq!(
        geometry(&g.centroid()),
        &Geometry::Point(point!(x: 1.5, y: 1.5))
    );
    // upstream "create_multipolygon from OSM data": plus a triangle
    let w22 = locs(&[(10.0, 10.0), (10.0, 20.0), (20.0, 20.0), (10.0, 10.0)]);
    let g = FlexGeometry::relation_multipolygon(&[w20.clone(), w21, w22]);
    assert_eq!(g.geometry_type(), "MULTIPOLYGON");
    assert_eq!(g.num_geometries(), 2);
    assert_eq!(g.area(), 51.0);
    assert_eq!(g.length(), 0.0);
    assert_eq!(g.geometry_n(2).geometry_type(), "POLYGON");
}

#[test]
fn relation_multipolygon_failures_are_null() {
    assert!(FlexGeometry::relation_multipolygon(&[]).is_null());
    assert!(FlexGeometry::relation_multipolygon(&[vec![]]).is_null());
    assert!(FlexGeometry::relation_multipolygon(&[locs(&[(1.0, 1.0)])]).is_null());
    assert!(FlexGeometry::relation_multipolygon(&[locs(&[(1.0, 1.0), (2.0, 2.0)])]).is_null());
    // upstream self-intersection case
    let w20 = locs(&[(1.0, 1.0), (1.0, 2.0), (2.0, 1.0), (2.0, 2.0)]);
    let w21 = locs(&[(2.0, 2.0), (1.0, 1.0)]);
    assert!(FlexGeometry::relation_multipolygon(&[w20, w21]).is_null());
}

#[test]
fn relation_multipolygon_with_hole() {
    let outer = locs(&[(0.0, 0.0), (3.0, 0.0), (3.0, 3.0), (0.0, 3.0), (0.0, 0.0)]);
    let inner = locs(&[(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 2.0), (1.0, 1.0)]);
    let g = FlexGeometry::relation_multipolygon(&[inner, outer]);
    let Geometry::Polygon(p) = geometry(&g) else {
        panic!("{g:?}")
    };
    assert_eq!(p.interiors().len(), 1);
    // inner rings are clockwise
    assert_eq!(
        p.interiors()[0],
        line_string![(x: 1.0, y: 1.0), (x: 1.0, y: 2.0), (x: 2.0, y: 2.0), (x: 2.0, y: 1.0), (x: 1.0, y: 1.0)]
    );
    assert_eq!(g.area(), 8.0);
}

#[test]
fn relation_multilinestring_keeps_members_unmerged() {
    let a = locs(&[(1.0, 1.0), (2.0, 1.0)]);
    let b = locs(&[(2.0, 1.0), (2.0, 2.0)]);
    let g = FlexGeometry::relation_multilinestring(&[a.clone(), b.clone()]);
    assert_eq!(g.geometry_type(), "MULTILINESTRING");
    assert_eq!(
        lines_of(&g),
        vec![
            line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 1.0)],
            line_string![(x: 2.0, y: 1.0), (x: 2.0, y: 2.0)],
        ]
    );
    // one usable member: a LINESTRING (upstream "no force_multi" cases)
    for members in [
        vec![a.clone()],
        vec![a.clone(), locs(&[(2.0, 2.0)])],
        vec![vec![], a.clone()],
    ] {
        let g = FlexGeometry::relation_multilinestring(&members);
        assert_eq!(g.geometry_type(), "LINESTRING");
        assert_eq!(g.length(), 1.0);
    }
    assert!(FlexGeometry::relation_multilinestring(&[]).is_null());
    assert!(FlexGeometry::relation_multilinestring(&[locs(&[(2.0, 2.0)])]).is_null());
}

#[test]
fn multipoint_like_upstream() {
    let g = FlexGeometry::multipoint(&locs(&[(1.0, 0.0), (1.0, 1.0), (3.0, 2.0), (3.0, 1.0)]));
    assert_eq!(g.geometry_type(), "MULTIPOINT");
    assert_eq!(g.num_geometries(), 4);
    assert_eq!(
        geometry(&g.geometry_n(3)),
        &Geometry::Point(point!(x: 3.0, y: 2.0))
    );
    assert_eq!(
        geometry(&g.centroid()),
        &Geometry::Point(point!(x: 2.0, y: 1.0))
    );
    assert_eq!(g.area(), 0.0);
    assert_eq!(g.length(), 0.0);
    let g = FlexGeometry::multipoint(&locs(&[(1.0, 0.0)]));
    assert_eq!(geometry(&g), &Geometry::Point(point!(x: 1.0, y: 0.0)));
    // a second point with an invalid location is left out
    let g = FlexGeometry::multipoint(&locs(&[(1.0, 0.0), (200.0, 0.0)]));
    assert_eq!(g.geometry_type(), "POINT");
    assert!(FlexGeometry::multipoint(&[]).is_null());
}

#[test]
fn collection_like_upstream() {
    let square = locs(&[(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 2.0), (1.0, 1.0)]);
    let short = locs(&[(10.0, 10.0), (10.0, 11.0)]);
    let g = FlexGeometry::collection(&[
        CollectionMember::Node(loc(1.0, 1.0)),
        CollectionMember::Way(&square),
        CollectionMember::Way(&short),
    ]);
    assert_eq!(g.geometry_type(), "GEOMETRYCOLLECTION");
    assert_eq!(g.num_geometries(), 3);
    assert_eq!(
        geometry(&g.geometry_n(1)),
        &Geometry::Point(point!(x: 1.0, y: 1.0))
    );
    assert_eq!(g.geometry_n(2).geometry_type(), "LINESTRING");
    assert_eq!(g.area(), 0.0);
    assert_eq!(g.length(), 5.0);
    // exactly, as upstream compares
    assert_eq!(
        geometry(&g.centroid()),
        &Geometry::Point(point!(x: 3.2, y: 3.3))
    );
}

#[test]
fn collection_keeps_member_order_and_skips_unusable_members() {
    let way = locs(&[(0.0, 0.0), (1.0, 1.0)]);
    let one_node = locs(&[(5.0, 5.0)]);
    let g = FlexGeometry::collection(&[
        CollectionMember::Way(&way),
        CollectionMember::Way(&one_node),
        CollectionMember::Node(loc(3.0, 3.0)),
        CollectionMember::Node(loc(0.0, 100.0)),
    ]);
    let types: Vec<&str> = g.geometries().iter().map(|p| p.geometry_type()).collect();
    assert_eq!(types, ["LINESTRING", "POINT"]);
    // a single member is still a collection
    let g = FlexGeometry::collection(&[CollectionMember::Node(loc(3.0, 3.0))]);
    assert_eq!(g.geometry_type(), "GEOMETRYCOLLECTION");
    assert!(FlexGeometry::collection(&[]).is_null());
    assert!(FlexGeometry::collection(&[CollectionMember::Way(&one_node)]).is_null());
}

#[test]
fn new_normalises_geo_only_types() {
    let g = FlexGeometry::new(
        WGS84,
        Geometry::Line(geo::Line::new((0.0, 0.0), (1.0, 1.0))),
    );
    assert_eq!(g.geometry_type(), "LINESTRING");
    let r = geo::Rect::new((0.0, 0.0), (1.0, 1.0));
    let g = FlexGeometry::new(
        3857,
        Geometry::GeometryCollection(GeometryCollection::new_from(vec![Geometry::Rect(r)])),
    );
    assert_eq!(g.geometry_n(1).geometry_type(), "POLYGON");
    assert_eq!(g.srid(), 3857);
}

// ---------------------------------------------------------------- methods

#[test]
fn geometry_types() {
    let line = FlexGeometry::linestring(&locs(&[(0.0, 0.0), (1.0, 1.0)]));
    let names = [
        FlexGeometry::null().geometry_type(),
        point_geometry(0.0, 0.0).geometry_type(),
        line.geometry_type(),
        unit_square().geometry_type(),
        FlexGeometry::multipoint(&locs(&[(0.0, 0.0), (1.0, 1.0)])).geometry_type(),
        multilinestring(vec![single_line(&line).clone()]).geometry_type(),
        FlexGeometry::new(WGS84, Geometry::MultiPolygon(MultiPolygon::new(vec![]))).geometry_type(),
        FlexGeometry::collection(&[CollectionMember::Node(loc(0.0, 0.0))]).geometry_type(),
    ];
    assert_eq!(
        names,
        [
            "NULL",
            "POINT",
            "LINESTRING",
            "POLYGON",
            "MULTIPOINT",
            "MULTILINESTRING",
            "MULTIPOLYGON",
            "GEOMETRYCOLLECTION"
        ]
    );
}

#[test]
fn area_is_in_the_geometry_units() {
    let square = FlexGeometry::way_polygon(&locs(&[
        (0.0, 0.0),
        (1.0, 0.0),
        (1.0, 1.0),
        (0.0, 1.0),
        (0.0, 0.0),
    ]));
    assert_eq!(square.area(), 1.0);
    let merc = square.transform(3857).unwrap();
    let side = project(10_000_000, 0).x;
    let top = project(0, 10_000_000).y;
    assert!((merc.area() - side * top).abs() < 1e-3, "{}", merc.area());
    // non-polygonal: 0
    assert_eq!(
        FlexGeometry::linestring(&locs(&[(0.0, 0.0), (1.0, 1.0)])).area(),
        0.0
    );
    assert_eq!(point_geometry(1.0, 1.0).area(), 0.0);
}

#[test]
fn spherical_area_like_upstream() {
    let relative = |a: f64, b: f64| ((a - b) / b).abs();
    // upstream: POLYGON((0 0,0 1,1 1,1 0,0 0)) → 12308778361.469454 (1e-5)
    let a = unit_square().spherical_area().unwrap();
    assert!(relative(a, 12_308_778_361.469_454) < 1e-5, "{a}");
    // the orientation does not matter
    assert_eq!(unit_square().reverse().spherical_area(), Ok(a));
    // POLYGON((0 0,0 3,3 3,3 0,0 0),(1 1,2 1,2 2,1 2,1 1)) → 98452667625.52686
    let with_hole = FlexGeometry::new(
        WGS84,
        Geometry::Polygon(polygon!(
            exterior: [(x: 0.0, y: 0.0), (x: 0.0, y: 3.0), (x: 3.0, y: 3.0), (x: 3.0, y: 0.0), (x: 0.0, y: 0.0)],
            interiors: [[(x: 1.0, y: 1.0), (x: 2.0, y: 1.0), (x: 2.0, y: 2.0), (x: 1.0, y: 2.0), (x: 1.0, y: 1.0)]],
        )),
    );
    let a = with_hole.spherical_area().unwrap();
    assert!(relative(a, 98_452_667_625.526_86) < 1e-5, "{a}");
    // MULTIPOLYGON(((0 0,0 1,1 1,1 0,0 0)),((2 2,2 5,5 5,5 2,2 2),(3 3,4 3,4 4,3 4,3 3)))
    let mp = MultiPolygon::new(vec![
        polygon![(x: 0.0, y: 0.0), (x: 0.0, y: 1.0), (x: 1.0, y: 1.0), (x: 1.0, y: 0.0), (x: 0.0, y: 0.0)],
        polygon!(
            exterior: [(x: 2.0, y: 2.0), (x: 2.0, y: 5.0), (x: 5.0, y: 5.0), (x: 5.0, y: 2.0), (x: 2.0, y: 2.0)],
            interiors: [[(x: 3.0, y: 3.0), (x: 4.0, y: 3.0), (x: 4.0, y: 4.0), (x: 3.0, y: 4.0), (x: 3.0, y: 3.0)]],
        ),
    ]);
    let a = FlexGeometry::new(WGS84, Geometry::MultiPolygon(mp))
        .spherical_area()
        .unwrap();
    assert!(relative(a, 110_615_268_622.783) < 1e-5, "{a}");
    // lines and points: 0; transformed geometries: error (also NULL)
    assert_eq!(point_geometry(1.0, 1.0).spherical_area(), Ok(0.0));
    let merc = unit_square().transform(3857).unwrap();
    assert_eq!(merc.spherical_area(), Err(GeometryError::SphericalArea));
    let null_merc = FlexGeometry::null().transform(3857).unwrap();
    assert_eq!(
        null_merc.spherical_area(),
        Err(GeometryError::SphericalArea)
    );
}

#[test]
fn length_of_lines_only() {
    let ml = multilinestring(vec![
        line_string![(x: 0.0, y: 0.0), (x: 3.0, y: 4.0)],
        line_string![(x: 0.0, y: 0.0), (x: 0.0, y: 1.0)],
    ]);
    assert_eq!(ml.length(), 6.0);
    assert_eq!(unit_square().length(), 0.0);
    assert_eq!(point_geometry(1.0, 1.0).length(), 0.0);
}

#[test]
fn centroid_keeps_the_srid() {
    let merc = unit_square().transform(3857).unwrap();
    let c = merc.centroid();
    assert_eq!(c.srid(), 3857);
    assert_eq!(c.geometry_type(), "POINT");
    let null = FlexGeometry::null().transform(3857).unwrap().centroid();
    assert!(null.is_null());
    assert_eq!(null.srid(), 3857);
}

#[test]
fn geometry_n_is_one_based() {
    let mp = FlexGeometry::multipoint(&locs(&[(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)]));
    assert_eq!(
        geometry(&mp.geometry_n(1)),
        &Geometry::Point(point!(x: 1.0, y: 1.0))
    );
    assert_eq!(
        geometry(&mp.geometry_n(3)),
        &Geometry::Point(point!(x: 3.0, y: 1.0))
    );
    for n in [0, 4, -1, i64::from(i32::MIN)] {
        assert!(mp.geometry_n(n).is_null(), "{n}");
    }
    // truncated to a C int like osm2pgsql's static_cast<int>
    assert_eq!(mp.geometry_n((1 << 32) + 2), mp.geometry_n(2));
    // a single geometry is its own first part
    let square = unit_square();
    assert_eq!(square.geometry_n(1), square);
    assert!(square.geometry_n(2).is_null());
    // the part keeps the SRID
    let merc = mp.transform(3857).unwrap();
    assert_eq!(merc.geometry_n(2).srid(), 3857);
    assert_eq!(merc.geometry_n(9).srid(), 4326);
}

#[test]
fn geometries_iterates_the_parts() {
    let ml = multilinestring(vec![
        line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0)],
        line_string![(x: 5.0, y: 0.0), (x: 6.0, y: 0.0)],
    ]);
    let parts = ml.geometries();
    assert_eq!(parts.len(), 2);
    assert_eq!(
        single_line(&parts[1]),
        &line_string![(x: 5.0, y: 0.0), (x: 6.0, y: 0.0)]
    );
    assert_eq!(unit_square().geometries(), vec![unit_square()]);
}

#[test]
fn num_geometries_counts_parts() {
    assert_eq!(point_geometry(0.0, 0.0).num_geometries(), 1);
    assert_eq!(unit_square().num_geometries(), 1);
    let mp = MultiPolygon::new(vec![
        polygon![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 0.0)];
        3
    ]);
    assert_eq!(
        FlexGeometry::new(WGS84, Geometry::MultiPolygon(mp)).num_geometries(),
        3
    );
}

#[test]
fn line_merge_like_upstream() {
    // upstream "create_multilinestring from two lines with same end point"
    let ml = multilinestring(vec![
        line_string![(x: 1.0, y: 2.0), (x: 1.0, y: 1.0)],
        line_string![(x: 2.0, y: 1.0), (x: 1.0, y: 1.0)],
    ]);
    let merged = ml.line_merge();
    assert_eq!(merged.geometry_type(), "MULTILINESTRING");
    assert_eq!(
        lines_of(&merged),
        vec![line_string![(x: 1.0, y: 2.0), (x: 1.0, y: 1.0), (x: 2.0, y: 1.0)]]
    );
    // upstream "from Y shape"
    let ml = multilinestring(vec![
        line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 1.0)],
        line_string![(x: 1.0, y: 1.0), (x: 1.0, y: 2.0)],
        line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 2.0)],
    ]);
    assert_eq!(
        lines_of(&ml.line_merge()),
        vec![
            line_string![(x: 2.0, y: 1.0), (x: 1.0, y: 1.0), (x: 1.0, y: 2.0)],
            line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 2.0)],
        ]
    );
    // a single line in a multi stays a MULTILINESTRING; a LINESTRING is
    // returned as is; other types give NULL
    let one = multilinestring(vec![line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 1.0)]]);
    assert_eq!(one.line_merge(), one);
    let line = FlexGeometry::linestring(&locs(&[(0.0, 0.0), (1.0, 1.0)]));
    assert_eq!(line.line_merge(), line);
    assert!(unit_square().line_merge().is_null());
    assert!(point_geometry(0.0, 0.0).line_merge().is_null());
}

#[test]
fn reverse_reverses_lines_and_rings() {
    let line = FlexGeometry::linestring(&locs(&[(1.0, 1.0), (2.0, 2.0)]));
    assert_eq!(
        single_line(&line.reverse()),
        &line_string![(x: 2.0, y: 2.0), (x: 1.0, y: 1.0)]
    );
    // upstream "geom::polygon_t" reverse
    let p = FlexGeometry::new(
        WGS84,
        Geometry::Polygon(polygon!(
            exterior: [(x: 0.0, y: 0.0), (x: 0.0, y: 3.0), (x: 3.0, y: 3.0), (x: 3.0, y: 0.0), (x: 0.0, y: 0.0)],
            interiors: [[(x: 1.0, y: 1.0), (x: 2.0, y: 1.0), (x: 2.0, y: 2.0), (x: 1.0, y: 2.0), (x: 1.0, y: 1.0)]],
        )),
    );
    let expected = polygon!(
        exterior: [(x: 0.0, y: 0.0), (x: 3.0, y: 0.0), (x: 3.0, y: 3.0), (x: 0.0, y: 3.0), (x: 0.0, y: 0.0)],
        interiors: [[(x: 1.0, y: 1.0), (x: 1.0, y: 2.0), (x: 2.0, y: 2.0), (x: 2.0, y: 1.0), (x: 1.0, y: 1.0)]],
    );
    assert_eq!(geometry(&p.reverse()), &Geometry::Polygon(expected));
    let mp = FlexGeometry::multipoint(&locs(&[(1.0, 1.0), (2.0, 1.0)]));
    assert_eq!(mp.reverse(), mp);
    let ml = multilinestring(vec![line_string![(x: 1.0, y: 1.0), (x: 2.0, y: 1.0)]]);
    assert_eq!(
        lines_of(&ml.reverse()),
        vec![line_string![(x: 2.0, y: 1.0), (x: 1.0, y: 1.0)]]
    );
    let c = FlexGeometry::collection(&[CollectionMember::Way(&locs(&[(0.0, 0.0), (1.0, 0.0)]))]);
    assert_eq!(
        single_line(&c.reverse().geometry_n(1)),
        &line_string![(x: 1.0, y: 0.0), (x: 0.0, y: 0.0)]
    );
}

#[test]
fn segmentize_like_upstream() {
    // upstream "w/o split": one piece, still a MULTILINESTRING
    let line = FlexGeometry::new(
        WGS84,
        Geometry::LineString(line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 2.0), (x: 2.0, y: 2.0)]),
    );
    let g = line.segmentize(10.0);
    assert_eq!(g.geometry_type(), "MULTILINESTRING");
    assert_eq!(lines_of(&g), vec![single_line(&line).clone()]);
    // "with split 0.4"
    let line = FlexGeometry::new(
        WGS84,
        Geometry::LineString(line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0)]),
    );
    assert_eq!(
        lines_of(&line.segmentize(0.4)),
        vec![
            line_string![(x: 0.0, y: 0.0), (x: 0.4, y: 0.0)],
            line_string![(x: 0.4, y: 0.0), (x: 0.8, y: 0.0)],
            line_string![(x: 0.8, y: 0.0), (x: 1.0, y: 0.0)],
        ]
    );
    // "with split 1.0 in middle", on a multilinestring
    let ml = multilinestring(vec![
        line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 3.0, y: 0.0), (x: 4.0, y: 0.0)],
        line_string![(x: 9.0, y: 0.0), (x: 9.5, y: 0.0)],
    ]);
    assert_eq!(
        lines_of(&ml.segmentize(1.0)),
        vec![
            line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0)],
            line_string![(x: 1.0, y: 0.0), (x: 2.0, y: 0.0)],
            line_string![(x: 2.0, y: 0.0), (x: 3.0, y: 0.0)],
            line_string![(x: 3.0, y: 0.0), (x: 4.0, y: 0.0)],
            line_string![(x: 9.0, y: 0.0), (x: 9.5, y: 0.0)],
        ]
    );
    // other types: NULL with the SRID kept
    let merc = unit_square().transform(3857).unwrap();
    let g = merc.segmentize(1.0);
    assert!(g.is_null());
    assert_eq!(g.srid(), 3857);
    assert!(point_geometry(0.0, 0.0).segmentize(1.0).is_null());
}

#[test]
fn simplify_like_upstream() {
    // upstream "create_multilinestring and simplify"
    let ml = multilinestring(vec![
        line_string![(x: 1.0, y: 1.0), (x: 1.0, y: 2.0), (x: 1.0, y: 3.0)],
        line_string![(x: 1.0, y: 3.0), (x: 2.0, y: 3.0), (x: 1.0, y: 2.0)],
    ]);
    let small = ml.simplify(0.1);
    assert_eq!(small.srid(), 4326);
    assert_eq!(
        lines_of(&small),
        vec![
            line_string![(x: 1.0, y: 1.0), (x: 1.0, y: 3.0)],
            line_string![(x: 1.0, y: 3.0), (x: 2.0, y: 3.0), (x: 1.0, y: 2.0)],
        ]
    );
    assert_eq!(
        lines_of(&ml.simplify(10.0)),
        vec![
            line_string![(x: 1.0, y: 1.0), (x: 1.0, y: 3.0)],
            line_string![(x: 1.0, y: 3.0), (x: 1.0, y: 2.0)],
        ]
    );
    // a closed line collapsing to a point is dropped; NULL if nothing left
    let ring = line_string![(x: 0.0, y: 0.0), (x: 0.0, y: 1.0), (x: 1.0, y: 1.0), (x: 0.0, y: 0.0)];
    let line = FlexGeometry::new(WGS84, Geometry::LineString(ring.clone()));
    assert_eq!(line.simplify(10.0), FlexGeometry::null());
    let two = multilinestring(vec![ring, line_string![(x: 5.0, y: 5.0), (x: 6.0, y: 5.0)]]);
    assert_eq!(lines_of(&two.simplify(10.0)).len(), 1);
    // polygons and points: NULL
    assert!(unit_square().simplify(0.1).is_null());
    assert!(point_geometry(0.0, 0.0).simplify(0.1).is_null());
}

#[test]
fn transform_to_3857_is_osm2pgsql_s_projection() {
    let g = FlexGeometry::from_node(Location::from_fixed(95_270_956, 470_862_971));
    let merc = g.transform(3857).unwrap();
    assert_eq!(merc.srid(), 3857);
    assert_eq!(
        geometry(&merc),
        &Geometry::Point(Point(project(95_270_956, 470_862_971)))
    );
    // upstream values (Approx)
    let line = FlexGeometry::new(
        WGS84,
        Geometry::LineString(line_string![(x: 5.5, y: 4.4), (x: 3.3, y: 2.2)]),
    );
    let l = single_line(&line.transform(3857).unwrap()).clone();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
    assert!(close(l.0[0].x, 612_257.199_363_004_6) && close(l.0[0].y, 490_287.900_033_131_65));
    assert!(close(l.0[1].x, 367_354.319_617_802_74) && close(l.0[1].y, 244_963.080_627_009_8));
    // polygons with holes, collections: every coordinate
    let square = unit_square().transform(3857).unwrap();
    let Geometry::Polygon(p) = geometry(&square) else {
        panic!()
    };
    assert_eq!(
        p.exterior().0[1],
        coord! { x: 0.0, y: project(0, 10_000_000).y }
    );
    let c = FlexGeometry::collection(&[CollectionMember::Node(loc(5.5, 4.4))])
        .transform(3857)
        .unwrap();
    assert_eq!(
        geometry(&c.geometry_n(1)),
        &Geometry::Point(Point(project_degrees(5.5, 4.4)))
    );
}

#[test]
fn transform_only_from_4326() {
    let g = unit_square();
    assert_eq!(g.transform(4326).unwrap(), g);
    let merc = g.transform(3857).unwrap();
    assert_eq!(merc.transform(3857), Err(GeometryError::Transform));
    assert_eq!(merc.transform(4326), Err(GeometryError::Transform));
    assert_eq!(g.transform(25832), Err(GeometryError::Transform));
    assert_eq!(g.transform(0), Err(GeometryError::Transform));
    assert_eq!(
        GeometryError::Transform.to_string(),
        "Unknown error in 'transform()'."
    );
    // upstream "Transform geom::null_t": NULL with SRID 3857
    let null = FlexGeometry::null().transform(3857).unwrap();
    assert!(null.is_null());
    assert_eq!(null.srid(), 3857);
}

#[test]
fn pole_of_inaccessibility_of_polygons_only() {
    let pole = unit_square().pole_of_inaccessibility(1.0);
    assert_eq!(geometry(&pole), &Geometry::Point(point!(x: 0.5, y: 0.5)));
    assert_eq!(pole.srid(), 4326);
    let merc = unit_square().transform(3857).unwrap();
    assert_eq!(merc.pole_of_inaccessibility(1.0).srid(), 3857);
    assert!(point_geometry(0.0, 0.0)
        .pole_of_inaccessibility(1.0)
        .is_null());
    let mp = FlexGeometry::new(WGS84, Geometry::MultiPolygon(MultiPolygon::new(vec![])));
    assert!(mp.pole_of_inaccessibility(1.0).is_null());
    assert!(unit_square().pole_of_inaccessibility(0.0).is_null());
    assert!(unit_square().pole_of_inaccessibility(f64::NAN).is_null());
}

// ---------------------------------------------------------------- columns

#[test]
fn column_types_from_names() {
    assert_eq!(
        GeometryColumnType::from_name("MultiPolygon"),
        Some(GeometryColumnType::MultiPolygon)
    );
    assert_eq!(
        GeometryColumnType::from_name("geometry"),
        Some(GeometryColumnType::Geometry)
    );
    assert_eq!(
        GeometryColumnType::from_name("GEOMETRYCOLLECTION"),
        Some(GeometryColumnType::GeometryCollection)
    );
    assert_eq!(GeometryColumnType::from_name("text"), None);
    assert_eq!(GeometryColumnType::from_name("area"), None);
}

#[test]
fn column_compatibility_like_flex_write() {
    use GeometryColumnType as T;
    let point = point_geometry(0.0, 0.0);
    let line = FlexGeometry::linestring(&locs(&[(0.0, 0.0), (1.0, 1.0)]));
    let polygon = unit_square();
    let multipoint = FlexGeometry::multipoint(&locs(&[(0.0, 0.0), (1.0, 1.0)]));
    let multiline = multilinestring(vec![single_line(&line).clone(); 2]);
    let collection = FlexGeometry::collection(&[CollectionMember::Node(loc(0.0, 0.0))]);
    let cases: [(T, [bool; 6]); 8] = [
        // point, line, polygon, multipoint, multiline, collection
        (T::Geometry, [true, true, true, true, true, true]),
        (T::Point, [true, false, false, false, false, false]),
        (T::LineString, [false, true, false, false, false, false]),
        (T::Polygon, [false, false, true, false, false, false]),
        (T::MultiPoint, [true, false, false, true, false, false]),
        (T::MultiLineString, [false, true, false, false, true, false]),
        (T::MultiPolygon, [false, false, true, false, false, false]),
        (
            T::GeometryCollection,
            [false, false, false, false, false, true],
        ),
    ];
    for (column, expected) in cases {
        let got = [
            &point,
            &line,
            &polygon,
            &multipoint,
            &multiline,
            &collection,
        ]
        .map(|g| column.accepts(g));
        assert_eq!(got, expected, "{column:?}");
        assert!(column.accepts(&FlexGeometry::null()));
    }
    assert_eq!(
        T::Polygon.check(&line, "way").unwrap_err().to_string(),
        "Geometry data for geometry column 'way' has the wrong type (LINESTRING)."
    );
    assert!(T::MultiPolygon.check(&polygon, "way").is_ok());
}

#[test]
fn ewkb_of_a_point_in_3857_is_what_osm2pgsql_writes() {
    // node 4 of the Liechtenstein extract, as osm2pgsql 1.8 stores it
    let g = FlexGeometry::from_node(Location::from_fixed(95_270_956, 470_862_971));
    let bytes = g
        .to_ewkb(3857, GeometryColumnType::Point, "geom")
        .unwrap()
        .unwrap();
    assert_eq!(
        to_hex(&bytes),
        "0101000020110f0000bc7b516ec72e30411c3b52d692b85641"
    );
    // the same after an explicit transform
    let merc = g.transform(3857).unwrap();
    assert_eq!(
        merc.to_ewkb(3857, GeometryColumnType::Geometry, "geom")
            .unwrap()
            .unwrap(),
        bytes
    );
    // in a 4326 column: degrees, SRID 4326
    let bytes = g
        .to_ewkb(4326, GeometryColumnType::Point, "geom")
        .unwrap()
        .unwrap();
    assert_eq!(&to_hex(&bytes)[..18], "0101000020e6100000");
    assert_eq!(
        f64::from_le_bytes(bytes[9..17].try_into().unwrap()),
        9.5270956
    );
}

#[test]
fn ewkb_wraps_singles_for_multi_columns() {
    let line = FlexGeometry::linestring(&locs(&[(0.0, 0.0), (1.0, 1.0)]));
    let bytes = line
        .to_ewkb(4326, GeometryColumnType::MultiLineString, "g")
        .unwrap()
        .unwrap();
    // MULTILINESTRING, SRID 4326, one part, a plain LINESTRING of 2 points
    assert_eq!(
        &to_hex(&bytes)[..44],
        "0105000020e610000001000000010200000002000000"
    );
    let point = point_geometry(1.0, 2.0);
    let bytes = point
        .to_ewkb(4326, GeometryColumnType::MultiPoint, "g")
        .unwrap()
        .unwrap();
    assert_eq!(
        to_hex(&bytes),
        "0104000020e6100000010000000101000000000000000000f03f0000000000000040"
    );
    let bytes = unit_square()
        .to_ewkb(4326, GeometryColumnType::MultiPolygon, "g")
        .unwrap()
        .unwrap();
    assert_eq!(
        &to_hex(&bytes)[..36],
        "0106000020e6100000010000000103000000"
    );
    // not wrapped in a geometry column
    let bytes = point
        .to_ewkb(4326, GeometryColumnType::Geometry, "g")
        .unwrap()
        .unwrap();
    assert_eq!(&to_hex(&bytes)[..18], "0101000020e6100000");
}

#[test]
fn ewkb_checks_type_and_projection() {
    let line = FlexGeometry::linestring(&locs(&[(0.0, 0.0), (1.0, 1.0)]));
    assert_eq!(
        line.to_ewkb(3857, GeometryColumnType::Point, "way"),
        Err(GeometryError::WrongType {
            column: "way".into(),
            found: "LINESTRING"
        })
    );
    assert_eq!(
        line.to_ewkb(25832, GeometryColumnType::LineString, "way"),
        Err(GeometryError::UnsupportedProjection(25832))
    );
    // NULL is SQL NULL whatever the column
    assert_eq!(
        FlexGeometry::null().to_ewkb(3857, GeometryColumnType::Point, "way"),
        Ok(None)
    );
}

#[test]
fn ewkb_of_a_3857_geometry_in_a_4326_column_keeps_the_coordinates() {
    // osm2pgsql's 4326 "reprojection" is the identity, whatever the input
    let merc = point_geometry(1.0, 2.0).transform(3857).unwrap();
    let bytes = merc
        .to_ewkb(4326, GeometryColumnType::Point, "g")
        .unwrap()
        .unwrap();
    let c = project_degrees(1.0, 2.0);
    assert_eq!(&to_hex(&bytes)[..18], "0101000020e6100000");
    assert_eq!(f64::from_le_bytes(bytes[9..17].try_into().unwrap()), c.x);
    assert_eq!(f64::from_le_bytes(bytes[17..25].try_into().unwrap()), c.y);
}

#[test]
fn ewkb_of_collections() {
    let line = locs(&[(0.0, 0.0), (1.0, 1.0)]);
    let c = FlexGeometry::collection(&[
        CollectionMember::Node(loc(1.0, 2.0)),
        CollectionMember::Way(&line),
    ]);
    let bytes = c
        .to_ewkb(4326, GeometryColumnType::GeometryCollection, "g")
        .unwrap()
        .unwrap();
    assert_eq!(
        to_hex(&bytes),
        concat!(
            "0107000020e610000002000000",
            "0101000000000000000000f03f0000000000000040",
            "010200000002000000",
            "00000000000000000000000000000000",
            "000000000000f03f000000000000f03f"
        )
    );
}

// ---------------------------------------------------------------- bit-exactness

/// Expected values computed by osm2pgsql 1.8.0's own `geom-functions.cpp`
/// and `geom-pole-of-inaccessibility.cpp`, compiled with Boost 1.74 (as
/// Debian 12 builds osm2pgsql), on random geometries; compared bit for bit.
#[test]
fn polygon_measures_match_osm2pgsql_bit_for_bit() {
    let polygon = FlexGeometry::new(
        WEB_MERCATOR,
        Geometry::Polygon(polygon!(
            exterior: [
                (x: -17631753.090625662, y: 7023205.690221394),
                (x: -17639649.382801525, y: 7026420.496905053),
                (x: -17633208.7265408, y: 7028692.939578066),
                (x: -17631753.090625662, y: 7023205.690221394),
            ],
            interiors: [[
                (x: -17636005.49514366, y: 7026975.079472285),
                (x: -17635847.00958575, y: 7026638.772161045),
                (x: -17635526.9883159, y: 7026661.436809209),
                (x: -17635160.647006255, y: 7025512.107602756),
                (x: -17636005.49514366, y: 7026975.079472285),
            ]],
        )),
    );
    assert_eq!(polygon.area(), 19486590.09480381);
    let point = |g: FlexGeometry| match g.geometry() {
        Some(Geometry::Point(p)) => (p.x(), p.y()),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        point(polygon.centroid()),
        (-17634875.513637222, 7026107.60139351)
    );
    assert_eq!(
        point(polygon.pole_of_inaccessibility(1.0)),
        (-17634156.7748029, 7026897.794524858)
    );
    assert_eq!(
        point(polygon.pole_of_inaccessibility(3.3)),
        (-17634070.313085474, 7025071.572472347)
    );
}

#[test]
fn line_measures_match_osm2pgsql_bit_for_bit() {
    let line = FlexGeometry::new(
        WEB_MERCATOR,
        Geometry::LineString(line_string![
            (x: -16427228.519556144, y: 1588240.170299807),
            (x: -16435987.571175355, y: 1594988.624950383),
            (x: -16442641.515578922, y: 1590260.6301752562),
            (x: -16443537.604077574, y: 1602458.86404217),
            (x: -16428257.946539918, y: 1604816.143298512),
            (x: -16432679.022349168, y: 1605232.7008300922),
        ]),
    );
    assert_eq!(line.length(), 51352.07999222544);
    assert_eq!(
        geometry(&line.centroid()),
        &Geometry::Point(point!(x: -16436760.664373463, y: 1597684.621914661))
    );
    assert_eq!(
        single_line(&line.simplify(5565.9745)),
        &line_string![
            (x: -16427228.519556144, y: 1588240.170299807),
            (x: -16442641.515578922, y: 1590260.6301752562),
            (x: -16443537.604077574, y: 1602458.86404217),
            (x: -16432679.022349168, y: 1605232.7008300922),
        ]
    );
}

#[test]
fn length_is_summed_in_extended_precision_like_boost() {
    // Boost sums in `long double`; adding the segment lengths in double
    // gives 48205.7444410312, one unit in the last place more.
    let line = FlexGeometry::new(
        WEB_MERCATOR,
        Geometry::LineString(line_string![
            (x: 6360715.976109059, y: -3948660.1836007186),
            (x: 6351684.559093664, y: -3943362.7673703437),
            (x: 6365992.052393201, y: -3919319.282607356),
            (x: 6364538.219853801, y: -3928967.2648820137),
        ]),
    );
    assert_eq!(line.length().to_bits(), 0x40e7_89b7_d275_ff59);
    let naive: f64 = single_line(&line)
        .0
        .windows(2)
        .map(|w| {
            let (dx, dy) = (w[0].x - w[1].x, w[0].y - w[1].y);
            (dx * dx + dy * dy).sqrt()
        })
        .fold(0.0, |sum, d| sum + d);
    assert_ne!(naive.to_bits(), 0x40e7_89b7_d275_ff59);
}
