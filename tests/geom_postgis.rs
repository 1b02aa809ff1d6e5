//! The geometry module's EWKB and results seen through real PostGIS: the
//! bytes are accepted as they are, PostGIS writes back the same bytes, and
//! PostGIS agrees on validity, orientation, area and length.

use geo::{Coord, Geometry, LineString, MultiLineString, Point};
use postgres::{Client, NoTls};
use tilepipe::apply::geom::{
    area, assemble_multipolygon, ewkb, length, linestring, project, single_or_multi, split_line,
    way_polygon, MemberWay, MAX_LINE_LENGTH,
};
use tilepipe_testkit::PgCluster;

fn p(x: i32, y: i32) -> Coord<f64> {
    project(95_000_000 + x * 10_000, 470_000_000 + y * 10_000)
}

fn way(points: &[(i32, i32)]) -> MemberWay {
    MemberWay {
        way_id: 0,
        role: String::new(),
        points: points.iter().map(|&(x, y)| p(x, y)).collect(),
    }
}

fn database() -> Client {
    let url = PgCluster::shared().create_database("geom_postgis").unwrap();
    Client::connect(&url, NoTls).unwrap()
}

/// Sends our EWKB, checks PostGIS' view of it and that `ST_AsEWKB` gives
/// the same bytes back; returns (type, valid, area, length, ccw).
fn inspect(db: &mut Client, bytes: &[u8]) -> (String, bool, f64, f64, bool) {
    let row = db
        .query_one(
            "SELECT GeometryType(g), ST_SRID(g), ST_IsValid(g), ST_Area(g), ST_Length(g),
                    ST_AsEWKB(g), ST_IsPolygonCCW(g)
               FROM (SELECT ST_GeomFromEWKB($1) AS g) AS s",
            &[&bytes],
        )
        .unwrap();
    assert_eq!(row.get::<_, i32>(1), 3857);
    assert_eq!(
        row.get::<_, Vec<u8>>(5),
        bytes,
        "PostGIS writes the same EWKB"
    );
    (row.get(0), row.get(2), row.get(3), row.get(4), row.get(6))
}

#[test]
fn postgis_reads_and_agrees() {
    let mut db = database();

    // point
    let point = ewkb::point(&Point(project(95_459_035, 471_866_494)));
    let (kind, valid, ..) = inspect(&mut db, &point);
    assert_eq!((kind.as_str(), valid), ("POINT", true));
    let near: bool = db
        .query_one(
            "SELECT ST_DWithin(ST_GeomFromEWKB($1), 'SRID=3857;POINT(1062645.12 5972593.4)'::geometry, 0.1)",
            &[&point],
        )
        .unwrap()
        .get(0);
    assert!(near);

    // long line split into pieces
    let line = linestring(&[p(0, 0), p(0, 0), p(1500, 0), p(1500, 900)]).unwrap();
    let pieces = split_line(&line, MAX_LINE_LENGTH);
    assert!(pieces.len() > 1);
    let mut total = 0.0;
    for piece in &pieces {
        let (kind, _, _, postgis_length, _) = inspect(&mut db, &ewkb::linestring(piece));
        assert_eq!(kind, "LINESTRING");
        assert!(postgis_length <= MAX_LINE_LENGTH + 1e-6);
        assert!((postgis_length - length(piece)).abs() < 1e-6);
        total += postgis_length;
    }
    assert!((total - length(&line)).abs() < 1e-3);
    let multi = MultiLineString::new(pieces);
    let (kind, ..) = inspect(&mut db, &ewkb::multilinestring(&multi));
    assert_eq!(kind, "MULTILINESTRING");

    // closed way
    let polygon = way_polygon(&way(&[(0, 10), (10, 10), (10, 0), (0, 0), (0, 10)]).points).unwrap();
    let (kind, valid, postgis_area, _, ccw) = inspect(&mut db, &ewkb::polygon(&polygon));
    assert_eq!((kind.as_str(), valid, ccw), ("POLYGON", true, true));
    assert!((postgis_area - area(&polygon)).abs() < 1e-6 * postgis_area);

    // multipolygon: outer with a hole holding an island, plus a second outer
    let mp = assemble_multipolygon(&[
        way(&[(0, 0), (30, 0), (30, 30), (0, 30), (0, 0)]),
        way(&[(5, 5), (25, 5), (25, 25), (5, 25), (5, 5)]),
        way(&[(10, 10), (20, 10), (20, 20), (10, 20), (10, 10)]),
        way(&[(40, 0), (50, 0), (50, 10), (40, 0)]),
    ])
    .unwrap();
    assert_eq!(mp.0.len(), 3);
    for part in &mp.0 {
        // outer counter-clockwise, inner clockwise: what ST_IsPolygonCCW
        // checks
        let (kind, valid, postgis_area, _, ccw) = inspect(&mut db, &ewkb::polygon(part));
        assert_eq!((kind.as_str(), valid, ccw), ("POLYGON", true, true));
        assert!((postgis_area - area(part)).abs() < 1e-6 * postgis_area);
    }
    let (kind, valid, postgis_area, _, _) = inspect(&mut db, &ewkb::multipolygon(&mp));
    assert_eq!((kind.as_str(), valid), ("MULTIPOLYGON", true));
    assert!((postgis_area - area(&mp)).abs() < 1e-6 * postgis_area);
    let Geometry::MultiPolygon(_) = single_or_multi(mp) else {
        panic!("three parts stay a multipolygon")
    };

    // and our reader decodes what PostGIS produces itself
    let bytes: Vec<u8> = db
        .query_one(
            "SELECT ST_AsEWKB('SRID=3857;MULTIPOLYGON(((0 0,4 0,4 4,0 0)),((10 10,12 10,12 12,10 10)))'::geometry)",
            &[],
        )
        .unwrap()
        .get(0);
    let Geometry::MultiPolygon(read) = ewkb::read(&bytes).unwrap() else {
        panic!("a multipolygon")
    };
    assert_eq!(read.0.len(), 2);
    assert_eq!(
        read.0[1].exterior(),
        &LineString::from(vec![(10.0, 10.0), (12.0, 10.0), (12.0, 12.0), (10.0, 10.0)])
    );
}

/// The clustering key is PostGIS's own order: rows sorted by
/// `ORDER BY geom` have non-decreasing keys, for points, two-point and
/// longer lines and polygons, in 3857 and in 4326, around the world.
#[test]
fn sort_key_is_postgis_geometry_order() {
    use rand::{Rng, SeedableRng};
    use tilepipe::apply::geom::postgis_sort_key;
    let mut db = database();
    db.batch_execute("CREATE TABLE sorted (id int, srid int, g geometry)")
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut keys = Vec::new();
    for id in 0..3000 {
        let srid = if id % 2 == 0 { 3857 } else { 4326 };
        let (span_x, span_y) = if srid == 3857 {
            (2.0e7, 2.0e7)
        } else {
            (180.0, 85.0)
        };
        // Clustered and spread-out places, so that keys share long
        // prefixes as neighbouring rows of real tables do.
        let scale = if id % 3 == 0 { 1e-4 } else { 1.0 };
        let x0 = rng.random_range(-span_x..span_x) * scale;
        let y0 = rng.random_range(-span_y..span_y) * scale;
        let d = if srid == 3857 { 500.0 } else { 0.005 };
        let c = |dx: f64, dy: f64| Coord {
            x: x0 + dx,
            y: y0 + dy,
        };
        let geometry: Geometry<f64> = match id % 4 {
            0 => Point(c(0.0, 0.0)).into(),
            1 => LineString::new(vec![c(0.0, 0.0), c(d, d / 3.0)]).into(),
            2 => LineString::new(vec![c(0.0, 0.0), c(d, 0.0), c(d, d)]).into(),
            _ => geo::Polygon::new(
                LineString::new(vec![c(0.0, 0.0), c(d, 0.0), c(d, d), c(0.0, 0.0)]),
                vec![],
            )
            .into(),
        };
        let bytes = ewkb::write(&geometry).unwrap();
        db.execute(
            "INSERT INTO sorted VALUES ($1, $2, ST_SetSRID(ST_GeomFromEWKB($3), $2))",
            &[&id, &srid, &bytes],
        )
        .unwrap();
        keys.push(postgis_sort_key(&geometry, srid));
    }
    for srid in [3857, 4326] {
        let order: Vec<i32> = db
            .query("SELECT id FROM sorted WHERE srid = $1 ORDER BY g", &[&srid])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let out_of_order: Vec<&[i32]> = order
            .windows(2)
            .filter(|w| keys[w[0] as usize] > keys[w[1] as usize])
            .collect();
        assert!(
            out_of_order.is_empty(),
            "SRID {srid}: {} pairs where PostGIS's order and the key disagree, e.g. {:?}",
            out_of_order.len(),
            &out_of_order[..out_of_order.len().min(5)]
        );
    }
}
