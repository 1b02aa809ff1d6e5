//! Compares the geometry module with what osm2pgsql 1.8 wrote into a
//! database it imported in slim mode (legacy middle format), e.g. from the
//! Liechtenstein extract with the default style.
//!
//! Runs only when `TILEPIPE_REF_DB` names such a database (CI has none).
//! Geometries are rebuilt from the middle tables for every output row
//! (osm_id > 0: the way; osm_id < 0: the relation) and compared byte for
//! byte; differing rows are reported with their Hausdorff distance. Our
//! polygons that PostGIS finds invalid are left out, as osm2pgsql's
//! `ST_IsValid` trigger drops them. Relations of type multipolygon or
//! boundary that we cannot assemble must have no polygon rows.

use geo::{Geometry, HausdorffDistance, LineString, MultiLineString, MultiPolygon, Point};
use postgres::{Client, NoTls};
use std::collections::{BTreeMap, HashMap};
use tilepipe::apply::geom::{
    assemble_multipolygon, ewkb, linestring, merge_lines, polygon_parts, project, split_line,
    way_polygon, MemberWay, MAX_LINE_LENGTH,
};

/// Way members (id, role) in member order, and the `type` tag.
type RelationMembers = (Vec<(i64, String)>, Option<String>);

struct Middle {
    nodes: HashMap<i64, (i32, i32)>,
    ways: HashMap<i64, Vec<i64>>,
    relations: HashMap<i64, RelationMembers>,
}

impl Middle {
    fn load(db: &mut Client) -> Self {
        let nodes = db
            .query("SELECT id, lon, lat FROM planet_osm_nodes", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i64>(0), (r.get::<_, i32>(1), r.get::<_, i32>(2))))
            .collect();
        let ways = db
            .query("SELECT id, nodes FROM planet_osm_ways", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<i64>>(1)))
            .collect();
        let relations = db
            .query("SELECT id, members, tags FROM planet_osm_rels", &[])
            .unwrap()
            .iter()
            .map(|r| {
                let members: Vec<String> = r.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
                let ways = members
                    .chunks(2)
                    .filter(|m| m[0].starts_with('w'))
                    .map(|m| (m[0][1..].parse().unwrap(), m[1].clone()))
                    .collect();
                let tags: Vec<String> = r.get::<_, Option<Vec<String>>>(2).unwrap_or_default();
                let kind = tags
                    .chunks(2)
                    .find(|t| t[0] == "type")
                    .map(|t| t[1].clone());
                (r.get::<_, i64>(0), (ways, kind))
            })
            .collect();
        Middle {
            nodes,
            ways,
            relations,
        }
    }

    /// Projected locations of a way's nodes, nodes without location left
    /// out; `None` if the way is missing.
    fn way_points(&self, way: i64) -> Option<Vec<geo::Coord<f64>>> {
        let nodes = self.ways.get(&way)?;
        Some(
            nodes
                .iter()
                .filter_map(|n| self.nodes.get(n))
                .map(|&(lon, lat)| project(lon, lat))
                .collect(),
        )
    }

    fn member_ways(&self, relation: i64) -> Vec<MemberWay> {
        self.relations[&relation]
            .0
            .iter()
            .filter_map(|(way, role)| {
                Some(MemberWay {
                    way_id: *way,
                    role: role.clone(),
                    points: self.way_points(*way)?,
                })
            })
            .collect()
    }
}

fn load_rows(db: &mut Client, table: &str) -> BTreeMap<i64, Vec<Vec<u8>>> {
    let mut rows: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
    for r in db
        .query(&format!("SELECT osm_id, ST_AsEWKB(way) FROM {table}"), &[])
        .unwrap()
    {
        rows.entry(r.get(0)).or_default().push(r.get(1));
    }
    rows
}

#[derive(Default)]
struct Tally {
    objects: usize,
    identical_objects: usize,
    rows_db: usize,
    rows_ours: usize,
    rows_identical: usize,
    max_hausdorff: f64,
    differences: Vec<String>,
}

impl Tally {
    /// Compares our rows with the database's for one object, as multisets.
    fn compare(&mut self, what: &str, osm_id: i64, ours: Vec<Vec<u8>>, theirs: &[Vec<u8>]) {
        self.objects += 1;
        self.rows_db += theirs.len();
        self.rows_ours += ours.len();
        let mut unmatched: Vec<&Vec<u8>> = theirs.iter().collect();
        let mut ours_unmatched = Vec::new();
        for row in &ours {
            if let Some(i) = unmatched.iter().position(|t| *t == row) {
                unmatched.remove(i);
                self.rows_identical += 1;
            } else {
                ours_unmatched.push(row);
            }
        }
        if unmatched.is_empty() && ours_unmatched.is_empty() {
            self.identical_objects += 1;
            return;
        }
        let distance = hausdorff(&ours, theirs);
        if distance.is_finite() {
            self.max_hausdorff = self.max_hausdorff.max(distance);
        }
        self.differences.push(format!(
            "{what} {osm_id}: ours {} rows, osm2pgsql {} rows, {} differ, Hausdorff {distance:.6}",
            ours.len(),
            theirs.len(),
            ours_unmatched.len() + unmatched.len()
        ));
    }
}

/// Hausdorff distance between the unions of two row sets (infinite if one
/// side is empty).
fn hausdorff(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    fn collect(rows: &[Vec<u8>]) -> Option<Geometry<f64>> {
        let geometries: Vec<Geometry<f64>> = rows.iter().map(|r| ewkb::read(r).unwrap()).collect();
        match geometries.first()? {
            Geometry::Polygon(_) => Some(Geometry::MultiPolygon(MultiPolygon::new(
                geometries
                    .into_iter()
                    .map(|g| match g {
                        Geometry::Polygon(p) => p,
                        other => panic!("mixed {other:?}"),
                    })
                    .collect(),
            ))),
            Geometry::LineString(_) => Some(Geometry::MultiLineString(MultiLineString::new(
                geometries
                    .into_iter()
                    .map(|g| match g {
                        Geometry::LineString(l) => l,
                        other => panic!("mixed {other:?}"),
                    })
                    .collect::<Vec<LineString<f64>>>(),
            ))),
            other => Some(other.clone()),
        }
    }
    match (collect(a), collect(b)) {
        (Some(a), Some(b)) => a.hausdorff_distance(&b),
        _ => f64::INFINITY,
    }
}

fn is_valid(db: &mut Client, bytes: &[u8]) -> bool {
    db.query_one("SELECT ST_IsValid(ST_GeomFromEWKB($1))", &[&bytes])
        .unwrap()
        .get(0)
}

fn line_rows(lines: Vec<LineString<f64>>) -> Vec<Vec<u8>> {
    lines
        .iter()
        .flat_map(|l| split_line(l, MAX_LINE_LENGTH))
        .map(|piece| ewkb::linestring(&piece))
        .collect()
}

#[test]
fn geometries_match_osm2pgsql_reference_database() {
    let Ok(url) = std::env::var("TILEPIPE_REF_DB") else {
        eprintln!("skipped: set TILEPIPE_REF_DB to a database osm2pgsql 1.8 imported (--slim)");
        return;
    };
    let mut db = Client::connect(&url, NoTls).expect("connect to the reference database");
    let middle = Middle::load(&mut db);

    // Points: projection.
    let mut points = Tally::default();
    for (id, rows) in load_rows(&mut db, "planet_osm_point") {
        let (lon, lat) = middle.nodes[&id];
        let ours = vec![ewkb::point(&Point(project(lon, lat)))];
        points.compare("point", id, ours, &rows);
    }

    // Lines from ways and from route/boundary relations.
    let mut way_lines = Tally::default();
    let mut relation_lines = Tally::default();
    for (id, rows) in load_rows(&mut db, "planet_osm_line") {
        if id > 0 {
            let points = middle.way_points(id).unwrap();
            let ours = line_rows(linestring(&points).into_iter().collect());
            way_lines.compare("way line", id, ours, &rows);
        } else {
            let lines = middle
                .member_ways(-id)
                .iter()
                .filter_map(|w| linestring(&w.points))
                .collect();
            relation_lines.compare("relation line", id, line_rows(merge_lines(lines)), &rows);
        }
    }

    // Polygons from ways and relations.
    let polygon_rows = load_rows(&mut db, "planet_osm_polygon");
    let mut way_polygons = Tally::default();
    let mut relation_polygons = Tally::default();
    let mut invalid_dropped = 0;
    for (&id, rows) in &polygon_rows {
        if id > 0 {
            let points = middle.way_points(id).unwrap();
            let ours: Vec<Vec<u8>> = way_polygon(&points)
                .map(|p| ewkb::polygon(&p))
                .into_iter()
                .collect();
            way_polygons.compare("way polygon", id, ours, rows);
        } else {
            let parts = assemble_multipolygon(&middle.member_ways(-id))
                .map(polygon_parts)
                .unwrap_or_default();
            let mut ours = Vec::new();
            for part in parts {
                let bytes = ewkb::polygon(&part);
                if is_valid(&mut db, &bytes) {
                    ours.push(bytes);
                } else {
                    invalid_dropped += 1;
                }
            }
            relation_polygons.compare("relation polygon", id, ours, rows);
        }
    }

    // Relations that should make polygons: assembly success versus rows.
    let mut area_relations = 0;
    let mut assembled = 0;
    let mut assembled_parts = 0;
    let mut failed_with_rows = Vec::new();
    let mut assembled_without_rows = Vec::new();
    for (&id, (_, kind)) in &middle.relations {
        if !matches!(kind.as_deref(), Some("multipolygon" | "boundary")) {
            continue;
        }
        area_relations += 1;
        let result = assemble_multipolygon(&middle.member_ways(id));
        let has_rows = polygon_rows.contains_key(&-id);
        if let Some(mp) = &result {
            assembled += 1;
            assembled_parts += mp.0.len();
        }
        match (&result, has_rows) {
            (None, true) => failed_with_rows.push(id),
            (Some(mp), false) => {
                // Without valid parts the trigger explains the missing
                // rows; otherwise the tags must (e.g. only `type`).
                let valid =
                    mp.0.iter()
                        .any(|part| is_valid(&mut db, &ewkb::polygon(part)));
                if valid {
                    assembled_without_rows.push(id);
                } else {
                    invalid_dropped += mp.0.len();
                }
            }
            _ => {}
        }
    }

    let report = |name: &str, t: &Tally| {
        eprintln!(
            "{name}: {} objects, {} identical; rows: osm2pgsql {}, ours {}, byte-identical {}; max Hausdorff of differing objects {:.6}",
            t.objects, t.identical_objects, t.rows_db, t.rows_ours, t.rows_identical, t.max_hausdorff
        );
        for d in t.differences.iter().take(20) {
            eprintln!("  {d}");
        }
    };
    report("points", &points);
    report("way lines", &way_lines);
    report("relation lines", &relation_lines);
    report("way polygons", &way_polygons);
    report("relation polygons", &relation_polygons);
    eprintln!("relation polygon parts we found invalid (trigger drops them): {invalid_dropped}");
    eprintln!(
        "multipolygon/boundary relations: {area_relations}; we assemble {assembled} ({assembled_parts} polygons); \
         failing but with rows: {failed_with_rows:?}; valid but no rows (tags): {assembled_without_rows:?}"
    );

    for t in [
        &points,
        &way_lines,
        &relation_lines,
        &way_polygons,
        &relation_polygons,
    ] {
        assert!(t.differences.is_empty(), "see the report above");
    }
    assert!(failed_with_rows.is_empty());
}
