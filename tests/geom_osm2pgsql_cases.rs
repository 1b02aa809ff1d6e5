//! Geometry module against osm2pgsql 1.8 itself: `tests/fixtures/geom/
//! cases.osm` (made by `gen_cases.py`) holds small synthetic areas, routes
//! and lines exercising the tricky cases (touching rings, shared and
//! duplicate segments, ways split and reversed, self-intersections, long
//! lines); `cases.expected` is what `osm2pgsql -S default.style` 1.8.0 wrote
//! for it (`line|polygon osm_id hex(ST_AsEWKB(way))`, sorted). We rebuild
//! every row and require byte-identical EWKB.

use geo::{Coord, LineString};
use std::collections::BTreeMap;
use tilepipe::apply::geom::{
    assemble_multipolygon, ewkb, linestring, merge_lines, polygon_parts, project, split_line,
    way_polygon, MemberWay, MAX_LINE_LENGTH,
};

const OSM: &str = include_str!("fixtures/geom/cases.osm");
const EXPECTED: &str = include_str!("fixtures/geom/cases.expected");

type Tags = Vec<(String, String)>;
/// Way member: way id and role.
type Members = Vec<(i64, String)>;

#[derive(Default)]
struct Data {
    nodes: BTreeMap<i64, (i32, i32)>,
    ways: BTreeMap<i64, (Vec<i64>, Tags)>,
    relations: BTreeMap<i64, (Members, Tags)>,
}

fn attribute<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!(" {name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + name.len()
        + 3;
    let end = start + line[start..].find('"').expect("closing quote");
    &line[start..end]
}

/// "47.0100000" → 470100000: the file always has seven decimals.
fn fixed(degrees: &str) -> i32 {
    degrees
        .replace('.', "")
        .parse()
        .expect("fixed-point degrees")
}

/// The file has one element per line, as written by gen_cases.py.
fn parse(osm: &str) -> Data {
    enum Current {
        None,
        Way(i64),
        Relation(i64),
    }
    let mut data = Data::default();
    let mut current = Current::None;
    for line in osm.lines().map(str::trim) {
        let id = || attribute(line, "id").parse::<i64>().unwrap();
        if line.starts_with("<node ") {
            data.nodes.insert(
                id(),
                (fixed(attribute(line, "lon")), fixed(attribute(line, "lat"))),
            );
        } else if line.starts_with("<way ") {
            data.ways.insert(id(), Default::default());
            current = Current::Way(id());
        } else if line.starts_with("<relation ") {
            data.relations.insert(id(), Default::default());
            current = Current::Relation(id());
        } else if line.starts_with("<nd ") {
            let Current::Way(w) = current else {
                panic!("nd outside way")
            };
            let node = attribute(line, "ref").parse().unwrap();
            data.ways.get_mut(&w).unwrap().0.push(node);
        } else if line.starts_with("<member ") {
            let Current::Relation(r) = current else {
                panic!("member outside relation")
            };
            assert_eq!(attribute(line, "type"), "way");
            let member = (
                attribute(line, "ref").parse().unwrap(),
                attribute(line, "role").to_string(),
            );
            data.relations.get_mut(&r).unwrap().0.push(member);
        } else if line.starts_with("<tag ") {
            let tag = (
                attribute(line, "k").to_string(),
                attribute(line, "v").to_string(),
            );
            match current {
                Current::Way(w) => data.ways.get_mut(&w).unwrap().1.push(tag),
                Current::Relation(r) => data.relations.get_mut(&r).unwrap().1.push(tag),
                Current::None => panic!("tag outside object"),
            }
        }
    }
    data
}

fn tag<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn way_points(data: &Data, way: i64) -> Vec<Coord<f64>> {
    data.ways[&way]
        .0
        .iter()
        .map(|n| {
            let (lon, lat) = data.nodes[n];
            project(lon, lat)
        })
        .collect()
}

fn push_lines(rows: &mut Vec<String>, osm_id: i64, lines: Vec<LineString<f64>>) {
    for line in lines {
        for piece in split_line(&line, MAX_LINE_LENGTH) {
            rows.push(format!(
                "line {osm_id} {}",
                ewkb::to_hex(&ewkb::linestring(&piece))
            ));
        }
    }
}

/// The rows osm2pgsql writes for the fixture, with the tag decisions of the
/// default style reduced to what the fixture uses.
fn rows(data: &Data) -> Vec<String> {
    let mut rows = Vec::new();
    for (&id, (nodes, tags)) in &data.ways {
        let points = way_points(data, id);
        if tag(tags, "building").is_some() && nodes.first() == nodes.last() {
            if let Some(polygon) = way_polygon(&points) {
                rows.push(format!(
                    "polygon {id} {}",
                    ewkb::to_hex(&ewkb::polygon(&polygon))
                ));
            }
        } else if tag(tags, "highway").is_some() {
            push_lines(&mut rows, id, linestring(&points).into_iter().collect());
        }
    }
    for (&id, (members, tags)) in &data.relations {
        let kind = tag(tags, "type").unwrap();
        if kind == "route" || kind == "boundary" {
            let lines = members
                .iter()
                .filter_map(|(way, _)| linestring(&way_points(data, *way)))
                .collect();
            push_lines(&mut rows, -id, merge_lines(lines));
        }
        if kind == "multipolygon" || kind == "boundary" {
            let ways: Vec<MemberWay> = members
                .iter()
                .map(|(way, role)| MemberWay {
                    way_id: *way,
                    role: role.clone(),
                    points: way_points(data, *way),
                })
                .collect();
            if let Some(multipolygon) = assemble_multipolygon(&ways) {
                for part in polygon_parts(multipolygon) {
                    rows.push(format!(
                        "polygon {} {}",
                        -id,
                        ewkb::to_hex(&ewkb::polygon(&part))
                    ));
                }
            }
        }
    }
    // same order as the expected file
    let key = |row: &String| {
        let mut fields = row.split(' ');
        let table = fields.next().unwrap().to_string();
        let id: i64 = fields.next().unwrap().parse().unwrap();
        (table, id, fields.next().unwrap().to_string())
    };
    rows.sort_by_key(key);
    rows
}

#[test]
fn rows_are_byte_identical_to_osm2pgsql() {
    let data = parse(OSM);
    assert_eq!(data.nodes.len(), 241);
    let ours = rows(&data);
    let expected: Vec<&str> = EXPECTED.lines().collect();
    let missing: Vec<&&str> = expected
        .iter()
        .filter(|e| !ours.iter().any(|o| o == **e))
        .collect();
    let extra: Vec<&String> = ours
        .iter()
        .filter(|o| !expected.contains(&o.as_str()))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    assert_eq!(ours.len(), expected.len());
}
