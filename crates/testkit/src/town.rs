//! A small synthetic town: OSM data the project makes itself, so tests that
//! need realistic objects run on a fresh clone without `../shared`.
//!
//! It has what the pipeline's stages care about: a street grid whose ways
//! share their intersection nodes (a moved node reshapes two streets),
//! named streets of several highway classes, a railway, closed building and
//! landuse ways, POI nodes, a multipolygon park with a hole, and a bus route
//! relation over some streets. Coordinates are around 10.0°E 50.0°N, about
//! 110 m between grid lines.

use crate::feedgen::OsmData;
use chrono::{TimeZone, Utc};
use tilepipe::osm::{Location, Member, Meta, Node, Object, ObjectType, Relation, Tags, Way};

const ORIGIN_LON: f64 = 10.0;
const ORIGIN_LAT: f64 = 50.0;
const STEP: f64 = 0.001;
/// Grid lines per direction.
const GRID: i64 = 9;

fn meta(version: u32, id: i64) -> Meta {
    Meta {
        version: Some(version),
        timestamp: Some(
            Utc.with_ymd_and_hms(2026, 10, 1, 8, 0, 0).unwrap()
                + chrono::Duration::minutes(id % 997),
        ),
        changeset: Some(1000 + id % 50),
        uid: Some(1 + id % 7),
        user: Some(format!("mapper{}", 1 + id % 7)),
    }
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Builds ids as it goes, so objects reference what exists.
struct Builder {
    objects: Vec<Object>,
    next_node: i64,
    next_way: i64,
    next_relation: i64,
}

impl Builder {
    fn node(&mut self, lon: f64, lat: f64, tags: Tags) -> i64 {
        let id = self.next_node;
        self.next_node += 1;
        self.objects.push(Object::Node(Node {
            id,
            meta: meta(1 + (id % 3) as u32, id),
            location: Some(Location { lon, lat }),
            tags,
        }));
        id
    }

    fn way(&mut self, nodes: Vec<i64>, tags: Tags) -> i64 {
        let id = self.next_way;
        self.next_way += 1;
        self.objects.push(Object::Way(Way {
            id,
            meta: meta(1 + (id % 4) as u32, id),
            nodes,
            tags,
        }));
        id
    }

    fn relation(&mut self, members: Vec<Member>, tags: Tags) -> i64 {
        let id = self.next_relation;
        self.next_relation += 1;
        self.objects.push(Object::Relation(Relation {
            id,
            meta: meta(2, id),
            members,
            tags,
        }));
        id
    }

    /// A closed way around a rectangle, counter-clockwise.
    fn rectangle(&mut self, west: f64, south: f64, east: f64, north: f64, tags: Tags) -> i64 {
        let corners = [(west, south), (east, south), (east, north), (west, north)];
        let mut nodes: Vec<i64> = corners
            .iter()
            .map(|&(lon, lat)| self.node(lon, lat, Tags::new()))
            .collect();
        nodes.push(nodes[0]);
        self.way(nodes, tags)
    }
}

fn member(kind: ObjectType, id: i64, role: &str) -> Member {
    Member {
        kind,
        id,
        role: role.into(),
    }
}

/// The synthetic town written as `town.osm` in `dir`, with its data.
pub fn write_town_file(dir: &std::path::Path) -> (OsmData, std::path::PathBuf) {
    let town = synthetic_town();
    let path = dir.join("town.osm");
    town.write_osm_file(&path)
        .expect("the town file is written");
    (town, path)
}

/// The town; see the module documentation. About 400 objects.
pub fn synthetic_town() -> OsmData {
    let mut b = Builder {
        objects: Vec::new(),
        next_node: 1,
        next_way: 1,
        next_relation: 1,
    };
    let lon = |i: i64| ORIGIN_LON + i as f64 * STEP;
    let lat = |j: i64| ORIGIN_LAT + j as f64 * STEP;

    // Intersections, shared by the streets crossing there.
    let mut grid = vec![vec![0i64; GRID as usize]; GRID as usize];
    for (i, column) in grid.iter_mut().enumerate() {
        for (j, cell) in column.iter_mut().enumerate() {
            *cell = b.node(lon(i as i64), lat(j as i64), Tags::new());
        }
    }
    let classes = [
        "primary",
        "residential",
        "secondary",
        "residential",
        "tertiary",
    ];
    let mut streets = Vec::new();
    for k in 0..GRID as usize {
        let class = classes[k % classes.len()];
        let east_west: Vec<i64> = (0..GRID as usize).map(|i| grid[i][k]).collect();
        let name = format!("Rivi Street {}", k + 1);
        streets.push(b.way(east_west, tags(&[("highway", class), ("name", &name)])));
        let north_south: Vec<i64> = grid[k].clone();
        let name = format!("Avenue {}", k + 1);
        let mut t = tags(&[("highway", class), ("name", &name)]);
        if k == 4 {
            t.push(("bridge".into(), "yes".into()));
            t.push(("layer".into(), "1".into()));
        }
        streets.push(b.way(north_south, t));
    }

    // A railway along the southern edge, just outside the grid.
    let rail: Vec<i64> = (0..GRID)
        .map(|i| b.node(lon(i), lat(-1), Tags::new()))
        .collect();
    b.way(rail, tags(&[("railway", "rail"), ("name", "Coast Line")]));

    // Buildings inside the blocks, two per block in some blocks.
    for i in 0..GRID - 1 {
        for j in 0..GRID - 1 {
            if (i + j) % 3 == 2 {
                continue;
            }
            let (w, s) = (lon(i) + STEP * 0.2, lat(j) + STEP * 0.2);
            let mut t = tags(&[("building", "yes")]);
            if (i * j) % 5 == 1 {
                t.push(("addr:housenumber".into(), format!("{}", i * 10 + j)));
                t.push(("source".into(), "survey".into()));
            }
            b.rectangle(w, s, w + STEP * 0.25, s + STEP * 0.25, t);
            if (i + j) % 4 == 0 {
                let (w, s) = (lon(i) + STEP * 0.55, lat(j) + STEP * 0.55);
                b.rectangle(
                    w,
                    s,
                    w + STEP * 0.3,
                    s + STEP * 0.3,
                    tags(&[("building", "house")]),
                );
            }
        }
    }

    // Land use around part of the town.
    b.rectangle(
        lon(0) - STEP * 0.5,
        lat(0) - STEP * 0.5,
        lon(3) + STEP * 0.5,
        lat(3) + STEP * 0.5,
        tags(&[("landuse", "residential")]),
    );
    b.rectangle(
        lon(6),
        lat(-3),
        lon(8),
        lat(-1) - STEP * 0.3,
        tags(&[("landuse", "grass"), ("note", "mown twice a year")]),
    );

    // POIs.
    let amenities = [
        ("amenity", "cafe"),
        ("shop", "bakery"),
        ("amenity", "pharmacy"),
        ("tourism", "museum"),
        ("amenity", "restaurant"),
    ];
    for n in 0..20i64 {
        let (key, value) = amenities[n as usize % amenities.len()];
        let name = format!("Place {}", n + 1);
        let mut t = tags(&[(key, value), ("name", &name)]);
        if n % 4 == 0 {
            t.push(("opening_hours".into(), "Mo-Fr 08:00-18:00".into()));
        }
        b.node(lon(n % 8) + STEP * 0.7, lat(n / 8 * 3 % 8) + STEP * 0.15, t);
    }

    // A park: multipolygon with an outer ring and a pond as a hole.
    let outer = b.rectangle(
        lon(GRID) + STEP * 0.5,
        lat(2),
        lon(GRID + 3),
        lat(6),
        Tags::new(),
    );
    let inner = b.rectangle(lon(GRID + 1), lat(3), lon(GRID + 2), lat(4), Tags::new());
    b.relation(
        vec![
            member(ObjectType::Way, outer, "outer"),
            member(ObjectType::Way, inner, "inner"),
        ],
        tags(&[
            ("type", "multipolygon"),
            ("leisure", "park"),
            ("name", "Town Park"),
        ]),
    );
    // A lake inside the park as a plain closed way.
    b.rectangle(
        lon(GRID + 1) + STEP * 0.2,
        lat(3) + STEP * 0.2,
        lon(GRID + 1) + STEP * 0.6,
        lat(3) + STEP * 0.6,
        tags(&[("natural", "water")]),
    );

    // A bus route over three streets, with a stop node.
    let stop = b.node(
        lon(1),
        lat(1) + STEP * 0.05,
        tags(&[("highway", "bus_stop"), ("name", "Central")]),
    );
    b.relation(
        vec![
            member(ObjectType::Node, stop, "stop"),
            member(ObjectType::Way, streets[0], ""),
            member(ObjectType::Way, streets[3], ""),
            member(ObjectType::Way, streets[4], ""),
        ],
        tags(&[
            ("type", "route"),
            ("route", "bus"),
            ("ref", "7"),
            ("name", "Bus 7"),
        ]),
    );

    OsmData::from_objects(b.objects)
}

/// The synthetic town written as `.osm`, a feed of generated diffs after
/// it, and the data those diffs lead to.
pub struct TownFeed {
    /// The town as an `.osm` file: `<dir>/town.osm`.
    pub osm: std::path::PathBuf,
    /// The feed's base directory: `<dir>/feed`.
    pub feed_dir: std::path::PathBuf,
    /// The town after every diff, to compare an applied database with.
    pub final_data: OsmData,
}

/// Writes [`synthetic_town`] and `count` generated diffs after it into `dir`.
pub fn town_feed(
    dir: &std::path::Path,
    seed: u64,
    start: u64,
    start_time: chrono::DateTime<Utc>,
    count: usize,
) -> TownFeed {
    let town = synthetic_town();
    let osm = dir.join("town.osm");
    town.write_osm_file(&osm).unwrap();
    let mut generator = crate::FeedGenerator::new(town, seed, start, start_time, 60);
    let diffs: Vec<_> = (0..count).map(|_| generator.next_diff()).collect();
    let feed_dir = dir.join("feed");
    crate::feedgen::write_feed(&feed_dir, generator.start_state(), &diffs).unwrap();
    TownFeed {
        osm,
        feed_dir,
        final_data: generator.data().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn town_is_consistent() {
        let town = synthetic_town();
        assert!(town.len() > 300, "{} objects", town.len());
        let [nodes, ways, relations] = town.max_ids();
        assert!(nodes > 200 && ways > 50 && relations == 2);
        // Every way node and relation member exists.
        for id in 1..=ways {
            let Some(Object::Way(way)) = town.get(tilepipe::osm::ObjectId {
                kind: ObjectType::Way,
                id,
            }) else {
                panic!("way {id} missing");
            };
            for n in &way.nodes {
                assert!(town.contains(tilepipe::osm::ObjectId {
                    kind: ObjectType::Node,
                    id: *n
                }));
            }
        }
        for id in 1..=relations {
            let Some(Object::Relation(rel)) = town.get(tilepipe::osm::ObjectId {
                kind: ObjectType::Relation,
                id,
            }) else {
                panic!("relation {id} missing");
            };
            for m in &rel.members {
                assert!(town.contains(tilepipe::osm::ObjectId {
                    kind: m.kind,
                    id: m.id
                }));
            }
        }
    }
}
