//! Randomised comparison of area assembly with osm2pgsql 1.8 itself.
//!
//! Opt-in: runs only when `TILEPIPE_OSM2PGSQL` names an osm2pgsql 1.8
//! binary (e.g. `TILEPIPE_OSM2PGSQL=osm2pgsql`); `TILEPIPE_OSM2PGSQL_STYLE`
//! overrides the style file (default `/usr/share/osm2pgsql/default.style`),
//! `TILEPIPE_GEOM_SEED` the random seed, `TILEPIPE_GEOM_CASES` the number of
//! relations (closed ways: the same number).
//!
//! It generates multipolygon relations made of random rectangles and
//! triangles on a coarse grid (so rings touch, overlap, share edges and
//! cross all the time), cut into member ways at random vertices, reversed
//! and shuffled, with random roles and occasional duplicated or missing
//! members; plus random closed ways (often self-intersecting or touching
//! themselves). osm2pgsql imports them in EPSG:4326 (`-l`, where no
//! validity trigger hides invalid results), and every polygon row must
//! equal ours point for point, and relations/ways without rows must fail
//! for us too.

use geo::{Coord, Geometry, Polygon};
use postgres::{Client, NoTls};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::process::Command;
use tilepipe::apply::geom::{
    assemble_multipolygon, ewkb, polygon_parts, project, way_polygon, MemberWay,
};
use tilepipe_testkit::PgCluster;

/// Grid unit in 1e-7 degrees (about 11 m).
const UNIT: i32 = 1_000;
const CASES_PER_ROW: i32 = 50;
const CASE_SPACING: i32 = 20;

type FixedRing = Vec<(i32, i32)>;

/// Way id, node locations, tagged `building=yes`.
struct TestWay {
    id: i64,
    points: Vec<(i32, i32)>,
    building: bool,
}

#[derive(Default)]
struct Dataset {
    /// (lon, lat) fixed → node id
    nodes: BTreeMap<(i32, i32), i64>,
    node_order: Vec<(i32, i32)>,
    ways: Vec<TestWay>,
    relations: Vec<(i64, Vec<(i64, String)>)>,
}

impl Dataset {
    fn node(&mut self, location: (i32, i32)) -> i64 {
        let next = self.nodes.len() as i64 + 1;
        *self.nodes.entry(location).or_insert_with(|| {
            self.node_order.push(location);
            next
        })
    }

    fn way(&mut self, points: Vec<(i32, i32)>, building: bool) -> i64 {
        for &p in &points {
            self.node(p);
        }
        let id = self.ways.len() as i64 + 1;
        self.ways.push(TestWay {
            id,
            points,
            building,
        });
        id
    }

    fn to_osm(&self) -> String {
        let degrees = |v: i32| {
            format!(
                "{}{}.{:07}",
                if v < 0 { "-" } else { "" },
                v.abs() / 10_000_000,
                v.abs() % 10_000_000
            )
        };
        let mut osm =
            String::from("<?xml version='1.0' encoding='UTF-8'?>\n<osm version=\"0.6\">\n");
        for (i, &(lon, lat)) in self.node_order.iter().enumerate() {
            writeln!(
                osm,
                "<node id=\"{}\" version=\"1\" lat=\"{}\" lon=\"{}\"/>",
                i + 1,
                degrees(lat),
                degrees(lon)
            )
            .unwrap();
        }
        for TestWay {
            id,
            points,
            building,
        } in &self.ways
        {
            writeln!(osm, "<way id=\"{id}\" version=\"1\">").unwrap();
            for p in points {
                writeln!(osm, "<nd ref=\"{}\"/>", self.nodes[p]).unwrap();
            }
            if *building {
                osm.push_str("<tag k=\"building\" v=\"yes\"/>\n");
            }
            osm.push_str("</way>\n");
        }
        for (id, members) in &self.relations {
            writeln!(osm, "<relation id=\"{id}\" version=\"1\">").unwrap();
            for (way, role) in members {
                writeln!(osm, "<member type=\"way\" ref=\"{way}\" role=\"{role}\"/>").unwrap();
            }
            osm.push_str("<tag k=\"type\" v=\"multipolygon\"/>\n<tag k=\"landuse\" v=\"forest\"/>\n</relation>\n");
        }
        osm.push_str("</osm>\n");
        osm
    }
}

/// A random ring on an 9×9 grid: rectangle, triangle or diamond, in random
/// direction, optionally with a node on every grid point along its edges.
fn random_ring(rng: &mut StdRng) -> Vec<(i32, i32)> {
    let mut corners: Vec<(i32, i32)> = match rng.random_range(0..3) {
        0 => {
            let (x0, y0) = (rng.random_range(0..7), rng.random_range(0..7));
            let (x1, y1) = (rng.random_range(x0 + 1..9), rng.random_range(y0 + 1..9));
            vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        }
        1 => {
            let (x0, y0) = (rng.random_range(0..6), rng.random_range(0..6));
            let size = rng.random_range(1..(9 - x0.max(y0)));
            vec![(x0, y0), (x0 + size, y0), (x0, y0 + size)]
        }
        _ => {
            let (cx, cy) = (rng.random_range(1..8), rng.random_range(1..8));
            let r = rng.random_range(1..=cx.min(cy).min(8 - cx).min(8 - cy));
            vec![(cx - r, cy), (cx, cy - r), (cx + r, cy), (cx, cy + r)]
        }
    };
    if rng.random_bool(0.5) {
        corners.reverse();
    }
    let start = rng.random_range(0..corners.len());
    corners.rotate_left(start);
    let densify = rng.random_bool(0.5);
    let mut ring = Vec::new();
    for i in 0..corners.len() {
        let (a, b) = (corners[i], corners[(i + 1) % corners.len()]);
        ring.push(a);
        if densify {
            let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs());
            for s in 1..steps {
                ring.push((a.0 + (b.0 - a.0) * s / steps, a.1 + (b.1 - a.1) * s / steps));
            }
        }
    }
    ring.push(ring[0]);
    ring
}

fn generate(seed: u64, cases: i32) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Dataset::default();
    let origin = |case: i32| {
        (
            95_000_000 + (case % CASES_PER_ROW) * CASE_SPACING * UNIT,
            470_000_000 + (case / CASES_PER_ROW) * CASE_SPACING * UNIT,
        )
    };
    let place = |(ox, oy): (i32, i32), ring: &[(i32, i32)]| -> Vec<(i32, i32)> {
        ring.iter()
            .map(|&(x, y)| (ox + x * UNIT, oy + y * UNIT))
            .collect()
    };

    for case in 0..cases {
        let o = origin(case);
        let mut members = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            let ring = random_ring(&mut rng);
            // cut into 1 to 3 ways at random vertices
            let mut cuts: Vec<usize> = (0..rng.random_range(0..3))
                .map(|_| rng.random_range(1..ring.len() - 1))
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut bounds = vec![0];
            bounds.extend(cuts);
            bounds.push(ring.len() - 1);
            for w in bounds.windows(2) {
                let mut piece = place(o, &ring[w[0]..=w[1]]);
                if rng.random_bool(0.5) {
                    piece.reverse();
                }
                let role = ["outer", "inner", "", "outer"][rng.random_range(0..4)];
                let way = data.way(piece, false);
                if rng.random_bool(0.03) {
                    continue; // missing member: open ring
                }
                members.push((way, role.to_string()));
                if rng.random_bool(0.03) {
                    members.push((way, role.to_string()));
                }
            }
        }
        members.shuffle(&mut rng);
        let id = data.relations.len() as i64 + 1;
        data.relations.push((id, members));
    }

    for case in 0..cases {
        let o = origin(case + cases);
        let n = rng.random_range(3..9);
        let mut points: Vec<(i32, i32)> = (0..n)
            .map(|_| (rng.random_range(0..6), rng.random_range(0..6)))
            .collect();
        if rng.random_bool(0.3) {
            // revisit a point: rings touching themselves
            let p = points[rng.random_range(0..n)];
            points.insert(rng.random_range(0..n), p);
        }
        points.push(points[0]);
        data.way(place(o, &points), true);
    }
    data
}

/// Polygons as rings of fixed-point locations, sorted for comparison.
fn normalise(mut polygons: Vec<Vec<FixedRing>>) -> Vec<Vec<FixedRing>> {
    polygons.sort();
    polygons
}

fn fixed_rings(
    polygon: &Polygon<f64>,
    to_fixed: &dyn Fn(Coord<f64>) -> (i32, i32),
) -> Vec<FixedRing> {
    std::iter::once(polygon.exterior())
        .chain(polygon.interiors())
        .map(|ring| ring.0.iter().map(|&c| to_fixed(c)).collect())
        .collect()
}

#[test]
fn area_assembly_matches_osm2pgsql_on_random_data() {
    let Ok(binary) = std::env::var("TILEPIPE_OSM2PGSQL") else {
        eprintln!("skipped: set TILEPIPE_OSM2PGSQL to an osm2pgsql 1.8 binary");
        return;
    };
    let style = std::env::var("TILEPIPE_OSM2PGSQL_STYLE")
        .unwrap_or_else(|_| "/usr/share/osm2pgsql/default.style".into());
    let seed: u64 = std::env::var("TILEPIPE_GEOM_SEED")
        .map(|s| s.parse().unwrap())
        .unwrap_or(20_130_803);
    let cases: i32 = std::env::var("TILEPIPE_GEOM_CASES")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1_000);

    let data = generate(seed, cases);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("random.osm");
    std::fs::write(&file, data.to_osm()).unwrap();

    let url = PgCluster::shared().create_database("geom_random").unwrap();
    let output = Command::new(&binary)
        .args(["-l", "-d", &url, "-S", &style])
        .arg(&file)
        .output()
        .expect("run osm2pgsql");
    assert!(
        output.status.success(),
        "osm2pgsql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Theirs, in 4326: coordinates are fixed-point / 1e7.
    let mut db = Client::connect(&url, NoTls).unwrap();
    let mut theirs: HashMap<i64, Vec<Vec<FixedRing>>> = HashMap::new();
    let degrees_to_fixed = |c: Coord<f64>| ((c.x * 1e7).round() as i32, (c.y * 1e7).round() as i32);
    for row in db
        .query("SELECT osm_id, ST_AsEWKB(way) FROM planet_osm_polygon", &[])
        .unwrap()
    {
        let Geometry::Polygon(polygon) = ewkb::read(row.get(1)).unwrap() else {
            panic!("osm2pgsql wrote a non-polygon")
        };
        theirs
            .entry(row.get(0))
            .or_default()
            .push(fixed_rings(&polygon, &degrees_to_fixed));
    }

    // Ours, in 3857, mapped back to the nodes' fixed-point locations.
    let mut location_of: HashMap<(u64, u64), (i32, i32)> = HashMap::new();
    let points = |way: &[(i32, i32)], location_of: &mut HashMap<(u64, u64), (i32, i32)>| {
        way.iter()
            .map(|&(lon, lat)| {
                let c = project(lon, lat);
                location_of.insert((c.x.to_bits(), c.y.to_bits()), (lon, lat));
                c
            })
            .collect::<Vec<_>>()
    };
    let mut ours: HashMap<i64, Vec<Vec<FixedRing>>> = HashMap::new();
    let way_points: HashMap<i64, &Vec<(i32, i32)>> =
        data.ways.iter().map(|w| (w.id, &w.points)).collect();
    let mut member_ways = Vec::new();
    for (id, members) in &data.relations {
        member_ways.clear();
        for (way, role) in members {
            member_ways.push(MemberWay {
                way_id: *way,
                role: role.clone(),
                points: points(way_points[way], &mut location_of),
            });
        }
        if let Some(mp) = assemble_multipolygon(&member_ways) {
            let to_fixed = |c: Coord<f64>| location_of[&(c.x.to_bits(), c.y.to_bits())];
            let parts = polygon_parts(mp)
                .iter()
                .map(|p| fixed_rings(p, &to_fixed))
                .collect();
            ours.insert(-id, parts);
        }
    }
    for TestWay {
        id,
        points: way,
        building,
    } in &data.ways
    {
        if !building {
            continue;
        }
        let projected = points(way, &mut location_of);
        if let Some(polygon) = way_polygon(&projected) {
            let to_fixed = |c: Coord<f64>| location_of[&(c.x.to_bits(), c.y.to_bits())];
            ours.insert(*id, vec![fixed_rings(&polygon, &to_fixed)]);
        }
    }

    let mut differences = Vec::new();
    let mut ids: Vec<i64> = theirs.keys().chain(ours.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    for id in &ids {
        let a = normalise(ours.get(id).cloned().unwrap_or_default());
        let b = normalise(theirs.get(id).cloned().unwrap_or_default());
        if a != b {
            differences.push(format!("osm_id {id}:\n  ours   {a:?}\n  theirs {b:?}"));
        }
    }
    let relations_with_rows = theirs.keys().filter(|&&id| id < 0).count();
    let ways_with_rows = theirs.keys().filter(|&&id| id > 0).count();
    eprintln!(
        "seed {seed}: {} relations ({relations_with_rows} with polygons, {} rows), {} closed ways ({ways_with_rows} with polygons); {} differences",
        data.relations.len(),
        theirs.iter().filter(|(&id, _)| id < 0).map(|(_, p)| p.len()).sum::<usize>(),
        cases,
        differences.len()
    );
    for d in differences.iter().take(10) {
        eprintln!("{d}");
    }
    assert!(differences.is_empty());
}
