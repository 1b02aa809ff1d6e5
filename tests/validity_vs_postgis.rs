//! `geom::surely_valid` against PostGIS' own `ST_IsValid`: whenever we
//! claim a polygon valid, PostGIS must agree. Thousands of random polygons
//! go to the database in one query:
//! - random rings of 4 to 12 vertices on a small grid, so that crossings,
//!   touching vertices, collinear runs, spikes and repeated points are
//!   frequent;
//! - random grid points sorted by angle around a centre (often valid, often
//!   with collinear or touching vertices: the conservative border);
//! - random star-shaped rings with arbitrary f64 coordinates anywhere in
//!   EPSG:3857, from building size to kilometres, some with hundreds of
//!   vertices (the sweep), in both orientations and with repeated points;
//!   nearly all of them valid, and those must nearly all be recognised;
//! - a few fixed near-degenerate cases.
//!
//!
//! The same for `surely_valid_geometry` on the other geometries an output
//! row holds: points, lines with frequent repeated points, and
//! multipolygons whose parts are often close or overlapping.
//!
//! `TILEPIPE_VALIDITY_SEED` overrides the random seed.

use geo::{Coord, Geometry, LineString, MultiLineString, MultiPolygon, Point, Polygon};
use postgres::{Client, NoTls};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tilepipe::apply::geom::validity::surely_valid_geometry;
use tilepipe::apply::geom::{ewkb, surely_valid};
use tilepipe_testkit::PgCluster;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Grid,
    GridStar,
    Star,
    Fixed,
}

const FAMILIES: [Family; 4] = [Family::Grid, Family::GridStar, Family::Star, Family::Fixed];

fn closed(mut points: Vec<Coord<f64>>) -> Polygon<f64> {
    points.push(points[0]);
    Polygon::new(LineString::new(points), vec![])
}

/// Repeats some points in place (valid for GEOS) and sometimes reverses
/// the ring.
fn shuffle_in_repeats(rng: &mut StdRng, points: Vec<Coord<f64>>) -> Vec<Coord<f64>> {
    let mut out = Vec::with_capacity(points.len() + 4);
    for point in points {
        out.push(point);
        while rng.random_bool(0.08) {
            out.push(point);
        }
    }
    if rng.random_bool(0.5) {
        out.reverse();
    }
    out
}

/// A grid of `size` × `size` points with spacing `unit`, placed at an
/// exactly representable offset somewhere in 3857.
fn grid_point(rng: &mut StdRng, size: i32, unit: f64, origin: Coord<f64>) -> Coord<f64> {
    Coord {
        x: origin.x + unit * f64::from(rng.random_range(0..size)),
        y: origin.y + unit * f64::from(rng.random_range(0..size)),
    }
}

fn grid_origin(rng: &mut StdRng) -> (f64, Coord<f64>) {
    let unit = [1.0, 0.25, 8.0, 0.125][rng.random_range(0..4)];
    let origin = Coord {
        x: f64::from(rng.random_range(-20_000_000..20_000_000)),
        y: f64::from(rng.random_range(-20_000_000..20_000_000)),
    };
    (unit, origin)
}

fn grid_ring(rng: &mut StdRng) -> Polygon<f64> {
    let (unit, origin) = grid_origin(rng);
    let size = rng.random_range(3..=7);
    let n = rng.random_range(4..=12);
    let points = (0..n)
        .map(|_| grid_point(rng, size, unit, origin))
        .collect();
    let points = shuffle_in_repeats(rng, points);
    // PostGIS' parser wants at least 4 points in a ring.
    let mut polygon = closed(points);
    if polygon.exterior().0.len() < 4 {
        polygon = grid_ring(rng);
    }
    polygon
}

/// Grid points sorted by angle around a point off the grid.
fn grid_star_ring(rng: &mut StdRng) -> Polygon<f64> {
    let (unit, origin) = grid_origin(rng);
    let size = rng.random_range(4..=9);
    let n = rng.random_range(4..=12);
    let centre = Coord {
        x: origin.x + unit * (f64::from(size) / 2.0 - 0.37),
        y: origin.y + unit * (f64::from(size) / 2.0 - 0.61),
    };
    let mut points: Vec<Coord<f64>> = (0..n)
        .map(|_| grid_point(rng, size, unit, origin))
        .collect();
    let angle = |p: &Coord<f64>| (p.y - centre.y).atan2(p.x - centre.x);
    points.sort_by(|a, b| angle(a).total_cmp(&angle(b)));
    points.dedup();
    if points.len() < 3 {
        return grid_star_ring(rng);
    }
    closed(shuffle_in_repeats(rng, points))
}

/// A star-shaped ring: angles increasing in jittered equal steps, random
/// radii, arbitrary f64 coordinates.
fn star_ring(rng: &mut StdRng) -> Polygon<f64> {
    let n = if rng.random_bool(0.05) {
        rng.random_range(65..=600)
    } else {
        rng.random_range(4..=40)
    };
    let centre = Coord {
        x: rng.random_range(-20_000_000.0..20_000_000.0),
        y: rng.random_range(-20_000_000.0..20_000_000.0),
    };
    let scale = 10f64.powf(rng.random_range(0.0..4.0));
    let thin = rng.random_range(0.05..1.0);
    let points = (0..n)
        .map(|k| {
            let step = (f64::from(k) + rng.random_range(0.0..0.8)) / f64::from(n);
            let angle = std::f64::consts::TAU * step;
            let radius = scale * rng.random_range(thin..1.0);
            Coord {
                x: centre.x + radius * angle.cos(),
                y: centre.y + radius * angle.sin(),
            }
        })
        .collect();
    closed(shuffle_in_repeats(rng, points))
}

fn polygon(points: &[(f64, f64)]) -> Polygon<f64> {
    Polygon::new(LineString::from(points.to_vec()), vec![])
}

/// Near-degenerate cases worth asking PostGIS about explicitly.
fn fixed_cases() -> Vec<Polygon<f64>> {
    let ulp = 2f64.powi(-33);
    vec![
        // valid thin triangles
        polygon(&[
            (1e6, 1e6),
            (1e6 + 1.0, 1e6 + 1.0),
            (1e6 + 2.0, 1e6 + 2.0 + ulp),
        ]),
        polygon(&[(1e6, 1e6), (1e6 + 100.0, 1e6), (1e6 + 50.0, 1e6 + 1e-9)]),
        polygon(&[
            (1000000.1, 1000000.3),
            (1000041.6145447766, 1000029.3601813437),
            (1000083.1270450336, 1000058.4189315237),
        ]),
        // collinear triangle
        polygon(&[(1e6, 1e6), (1e6 + 1.0, 1e6 + 1.0), (1e6 + 2.0, 1e6 + 2.0)]),
        // vertex on a non-adjacent edge, a hair inside and outside of it
        polygon(&[(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (2.5, 0.0), (0.0, 4.0)]),
        polygon(&[
            (0.0, 0.0),
            (4.0, 0.0),
            (4.0, 4.0),
            (2.5, 1e-300),
            (0.0, 4.0),
        ]),
        polygon(&[(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (2.5, 1e-12), (0.0, 4.0)]),
        polygon(&[
            (0.0, 0.0),
            (4.0, 0.0),
            (4.0, 4.0),
            (2.5, -1e-12),
            (0.0, 4.0),
        ]),
        // self-touching, spike, straight continuation
        polygon(&[
            (0.0, 0.0),
            (3.0, 1.0),
            (6.0, 0.0),
            (6.0, 6.0),
            (3.0, 1.0),
            (0.0, 6.0),
        ]),
        polygon(&[
            (0.0, 0.0),
            (4.0, 0.0),
            (4.0, 4.0),
            (6.0, 6.0),
            (4.0, 4.0),
            (0.0, 4.0),
        ]),
        polygon(&[(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 0.0)]),
        // with a hole
        Polygon::new(
            LineString::from(vec![(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]),
            vec![LineString::from(vec![
                (2.0, 2.0),
                (2.0, 8.0),
                (8.0, 8.0),
                (8.0, 2.0),
            ])],
        ),
    ]
}

fn database() -> Client {
    let url = PgCluster::shared()
        .create_database("validity_vs_postgis")
        .unwrap();
    let mut db = Client::connect(&url, NoTls).unwrap();
    // ST_IsValid reports every reason as a NOTICE.
    db.batch_execute("SET client_min_messages = warning")
        .unwrap();
    db
}

/// `ST_IsValid` of each EWKB, in one query.
fn postgis_valid(db: &mut Client, bytes: &[Vec<u8>]) -> Vec<bool> {
    let valid: Vec<bool> = db
        .query(
            "SELECT ST_IsValid(ST_GeomFromEWKB(g))
               FROM unnest($1::bytea[]) WITH ORDINALITY AS t(g, i) ORDER BY i",
            &[&bytes],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(valid.len(), bytes.len());
    valid
}

fn seed() -> u64 {
    std::env::var("TILEPIPE_VALIDITY_SEED")
        .map(|s| s.parse().unwrap())
        .unwrap_or(20_240_611)
}

#[derive(Default, Debug)]
struct Counts {
    total: usize,
    postgis_valid: usize,
    surely_valid: usize,
}

#[test]
fn surely_valid_implies_postgis_valid() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cases: Vec<(Family, Polygon<f64>)> = Vec::new();
    cases.extend((0..3_000).map(|_| (Family::Grid, grid_ring(&mut rng))));
    cases.extend((0..1_500).map(|_| (Family::GridStar, grid_star_ring(&mut rng))));
    cases.extend((0..1_500).map(|_| (Family::Star, star_ring(&mut rng))));
    cases.extend(fixed_cases().into_iter().map(|p| (Family::Fixed, p)));

    let mut db = database();
    let version: String = db
        .query_one(
            "SELECT postgis_lib_version() || ' GEOS ' || postgis_geos_version()",
            &[],
        )
        .unwrap()
        .get(0);
    let bytes: Vec<Vec<u8>> = cases.iter().map(|(_, p)| ewkb::polygon(p)).collect();
    let valid = postgis_valid(&mut db, &bytes);

    let mut wrong = Vec::new();
    let mut counts: Vec<Counts> = FAMILIES.iter().map(|_| Counts::default()).collect();
    for ((family, polygon), &postgis) in cases.iter().zip(&valid) {
        let ours = surely_valid(polygon);
        if ours && !postgis {
            wrong.push(polygon);
        }
        let c = &mut counts[FAMILIES.iter().position(|f| f == family).unwrap()];
        c.total += 1;
        c.postgis_valid += usize::from(postgis);
        c.surely_valid += usize::from(ours);
    }
    eprintln!("PostGIS {version}, seed {seed}");
    for (family, c) in FAMILIES.iter().zip(&counts) {
        eprintln!(
            "{family:?}: {} polygons, PostGIS valid {}, surely valid {} ({:.1}% of the valid ones)",
            c.total,
            c.postgis_valid,
            c.surely_valid,
            100.0 * c.surely_valid as f64 / c.postgis_valid.max(1) as f64
        );
    }
    assert!(
        wrong.is_empty(),
        "{} polygons surely valid but invalid for PostGIS, e.g. {:?}",
        wrong.len(),
        wrong
            .iter()
            .take(3)
            .map(|p| &p.exterior().0)
            .collect::<Vec<_>>()
    );

    let count = |family: Family| &counts[FAMILIES.iter().position(|f| *f == family).unwrap()];
    // The grid families exercise both sides of the border.
    for family in [Family::Grid, Family::GridStar] {
        let c = count(family);
        assert!(c.postgis_valid > c.total / 20, "{family:?}: {c:?}");
        assert!(c.postgis_valid < c.total * 99 / 100, "{family:?}: {c:?}");
        assert!(c.surely_valid > 0, "{family:?}: {c:?}");
    }
    // Star-shaped rings with f64 coordinates are (nearly) all valid and
    // must (nearly) all be recognised.
    let stars = count(Family::Star);
    assert!(stars.postgis_valid * 10 >= stars.total * 9, "{stars:?}");
    assert!(
        stars.surely_valid * 10 >= stars.postgis_valid * 8,
        "{stars:?}"
    );
}

/// A line of 2 to 4 points on a 3 × 3 grid: repeated points are frequent
/// (PostGIS' parser refuses fewer than 2 points).
fn grid_line(rng: &mut StdRng) -> LineString<f64> {
    let (unit, origin) = grid_origin(rng);
    let n = rng.random_range(2..=4);
    LineString::new((0..n).map(|_| grid_point(rng, 3, unit, origin)).collect())
}

/// 0 to 4 parts, grid or star rings, each moved by a random offset of the
/// order of their size: parts apart, touching, overlapping.
fn multipolygon(rng: &mut StdRng) -> MultiPolygon<f64> {
    let parts = rng.random_range(0..=4);
    let star = rng.random_bool(0.5);
    let mut first: Option<Coord<f64>> = None;
    let polygons = (0..parts)
        .map(|_| {
            let polygon = if star { star_ring(rng) } else { grid_ring(rng) };
            let ring = &polygon.exterior().0;
            let size = ring
                .iter()
                .map(|c| (c.x - ring[0].x).abs().max((c.y - ring[0].y).abs()))
                .fold(1.0, f64::max);
            // Move every part next to the first one.
            let anchor = *first.get_or_insert(ring[0]);
            let dx = anchor.x - ring[0].x + size * f64::from(rng.random_range(-3..=3)) / 2.0;
            let dy = anchor.y - ring[0].y + size * f64::from(rng.random_range(-3..=3)) / 2.0;
            let moved = ring
                .iter()
                .map(|c| Coord {
                    x: c.x + dx,
                    y: c.y + dy,
                })
                .collect();
            Polygon::new(LineString::new(moved), vec![])
        })
        .collect();
    MultiPolygon::new(polygons)
}

#[test]
fn surely_valid_geometry_implies_postgis_valid() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut cases: Vec<(&str, Geometry<f64>)> = Vec::new();
    for _ in 0..200 {
        let (_, origin) = grid_origin(&mut rng);
        cases.push(("point", Point(origin).into()));
    }
    for _ in 0..1_000 {
        cases.push(("line", grid_line(&mut rng).into()));
    }
    for _ in 0..500 {
        let lines = (0..rng.random_range(0..=3))
            .map(|_| grid_line(&mut rng))
            .collect();
        cases.push(("multiline", MultiLineString::new(lines).into()));
    }
    for _ in 0..2_000 {
        cases.push(("multipolygon", multipolygon(&mut rng).into()));
    }
    cases.push(("point", Point::new(f64::NAN, 0.0).into()));
    cases.push((
        "line",
        LineString::from(vec![(0.0, 0.0), (f64::INFINITY, 0.0)]).into(),
    ));

    let mut db = database();
    let bytes: Vec<Vec<u8>> = cases.iter().map(|(_, g)| ewkb::write(g).unwrap()).collect();
    let valid = postgis_valid(&mut db, &bytes);

    let kinds = ["point", "line", "multiline", "multipolygon"];
    let mut counts: Vec<Counts> = kinds.iter().map(|_| Counts::default()).collect();
    let mut wrong = Vec::new();
    for ((kind, geometry), &postgis) in cases.iter().zip(&valid) {
        let ours = surely_valid_geometry(geometry);
        if ours && !postgis {
            wrong.push(geometry);
        }
        let c = &mut counts[kinds.iter().position(|k| k == kind).unwrap()];
        c.total += 1;
        c.postgis_valid += usize::from(postgis);
        c.surely_valid += usize::from(ours);
    }
    eprintln!("seed {seed}");
    for (kind, c) in kinds.iter().zip(&counts) {
        eprintln!(
            "{kind}: {} geometries, PostGIS valid {}, surely valid {}",
            c.total, c.postgis_valid, c.surely_valid
        );
    }
    assert!(
        wrong.is_empty(),
        "{} geometries surely valid but invalid for PostGIS, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    for (kind, c) in kinds.iter().zip(&counts) {
        assert!(c.surely_valid > 0, "{kind}: {c:?}");
    }
    // Lines and multipolygons exercise both sides of the border.
    for kind in [1, 3] {
        let c = &counts[kind];
        assert!(c.postgis_valid < c.total, "{}: {c:?}", kinds[kind]);
    }
}
