//! Expire outputs of a flex config written for osm2pgsql ≥ 1.9
//! (`osm2pgsql.define_expire_output` and a column's `expire`), through
//! `tilepipe import -O flex` and `tilepipe apply`: a renamed street, a
//! renamed POI and a moved building reach the list file (zooms 14–16) and
//! the table (zoom 15) of the outputs their columns name, and only those;
//! the file is appended to, the table keeps one row per tile, and a change
//! to nothing the tables hold expires nothing. `catchup` (whose batch
//! code `run` shares) feeds the outputs too.

use chrono::{TimeZone, Utc};
use std::collections::BTreeSet;
use std::path::Path;
use tilepipe::osm::{Action, Change, Location, Object, Way};
use tilepipe::replication::ReplicationState;
use tilepipe::tile::Tile;
use tilepipe_testkit::cli::{assert_success, init_at, tilepipe};
use tilepipe_testkit::feedgen::write_feed_from_changes;
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::{OsmData, PgCluster};

fn tile_of(at: Location, z: u8) -> Tile {
    let n = f64::from(1u32 << z);
    let x = ((at.lon + 180.0) / 360.0 * n).floor() as u32;
    let lat = at.lat.to_radians();
    let y = ((1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor()
        as u32;
    Tile { z, x, y }
}

fn config(list: &Path) -> String {
    format!(
        r#"
local lists = osm2pgsql.define_expire_output{{ minzoom = 14, maxzoom = 16, filename = [[{list}]] }}
local tiles = osm2pgsql.define_expire_output{{ maxzoom = 15, table = 'expired_tiles' }}

local pois = osm2pgsql.define_node_table('pois', {{
    {{ column = 'name' }},
    {{ column = 'geom', type = 'point', not_null = true, expire = lists }},
}})
local streets = osm2pgsql.define_way_table('streets', {{
    {{ column = 'name' }},
    {{ column = 'geom', type = 'linestring', not_null = true,
      expire = {{ {{ output = lists }}, {{ output = tiles, buffer = 0 }} }} }},
}})
local buildings = osm2pgsql.define_area_table('buildings', {{
    {{ column = 'building' }},
    {{ column = 'geom', type = 'polygon', not_null = true,
      expire = {{ {{ output = tiles, mode = 'boundary-only' }} }} }},
    {{ column = 'centre', type = 'point', projection = 4326 }},
}})

function osm2pgsql.process_node(object)
    if object.tags.name then
        pois:insert{{ name = object.tags.name, geom = object:as_point() }}
    end
end

function osm2pgsql.process_way(object)
    if object.tags.highway then
        streets:insert{{ name = object.tags.name, geom = object:as_linestring() }}
    elseif object.tags.building and object.is_closed then
        local polygon = object:as_polygon()
        buildings:insert{{ building = object.tags.building, geom = polygon, centre = polygon:centroid() }}
    end
end
"#,
        list = list.display()
    )
}

fn location(town: &OsmData, node: i64) -> Location {
    town.nodes[&node].location.unwrap()
}

fn write_osc(path: &Path, changes: &[Change]) {
    let mut file = std::fs::File::create(path).unwrap();
    tilepipe::osm::osc_write::write_osc(&mut file, "test", changes.iter()).unwrap();
}

fn modify(object: Object) -> Change {
    Change {
        action: Action::Modify,
        object,
    }
}

fn renamed(way: &Way, name: &str) -> Way {
    let mut way = way.clone();
    way.tags.iter_mut().find(|(k, _)| k == "name").unwrap().1 = name.into();
    way.meta.version = way.meta.version.map(|v| v + 1);
    way
}

/// The tiles at `z` holding the points (the vertices of a geometry).
fn tiles_at(points: &[Location], z: u8) -> BTreeSet<Tile> {
    points.iter().map(|&at| tile_of(at, z)).collect()
}

/// Whether `tile` lies within one tile of the box around `points` at its
/// zoom.
fn near(tile: Tile, points: &[Location]) -> bool {
    let corners = tiles_at(points, tile.z);
    let (x0, x1) = (
        corners.iter().map(|t| t.x).min(),
        corners.iter().map(|t| t.x).max(),
    );
    let (y0, y1) = (
        corners.iter().map(|t| t.y).min(),
        corners.iter().map(|t| t.y).max(),
    );
    let (x0, x1, y0, y1) = (x0.unwrap(), x1.unwrap(), y0.unwrap(), y1.unwrap());
    (x0.saturating_sub(1)..=x1 + 1).contains(&tile.x)
        && (y0.saturating_sub(1)..=y1 + 1).contains(&tile.y)
}

#[test]
fn a_diff_reaches_the_expire_outputs_its_columns_name() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let osm = dir.path().join("town.osm");
    town.write_osm_file(&osm).unwrap();
    let list = dir.path().join("expired.tiles");
    let lua = dir.path().join("expire.lua");
    std::fs::write(&lua, config(&list)).unwrap();
    let yaml = dir.path().join("config.yaml");
    std::fs::write(&yaml, "{}\n").unwrap();
    let url = PgCluster::shared()
        .create_database("flex_expire_outputs")
        .unwrap();
    assert_success(&tilepipe(
        &yaml,
        &url,
        &[
            "import",
            "-O",
            "flex",
            "-S",
            lua.to_str().unwrap(),
            osm.to_str().unwrap(),
        ],
    ));
    let mut db = tilepipe_testkit::db::connect(&url);
    // As osm2pgsql: the output's table exists from the import on, empty,
    // in osm2pgsql 1.10's layout.
    let columns: Vec<String> = db
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_name = 'expired_tiles' ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(columns, ["zoom", "x", "y", "first", "last"]);
    let rows = |db: &mut postgres::Client| -> BTreeSet<Tile> {
        db.query("SELECT zoom, x, y FROM expired_tiles", &[])
            .unwrap()
            .iter()
            .map(|r| Tile {
                z: r.get::<_, i32>(0) as u8,
                x: r.get::<_, i32>(1) as u32,
                y: r.get::<_, i32>(2) as u32,
            })
            .collect()
    };
    assert!(rows(&mut db).is_empty());
    assert!(!list.exists(), "the import expires nothing");

    // The edits: "Rivi Street 1" (way 1, latitude 50.0) renamed, "Place 1"
    // renamed, and the building of the block at grid (4, 5), half a
    // kilometre north of the street, moved 30 m east.
    let street = town.ways[&1].clone();
    assert!(street
        .tags
        .contains(&("name".into(), "Rivi Street 1".into())));
    let street_points: Vec<Location> = street.nodes.iter().map(|&n| location(&town, n)).collect();
    let poi = town
        .nodes
        .values()
        .find(|n| n.tags.contains(&("name".into(), "Place 1".into())))
        .unwrap()
        .clone();
    let poi_at = poi.location.unwrap();
    let mut renamed_poi = poi.clone();
    renamed_poi
        .tags
        .iter_mut()
        .find(|(k, _)| k == "name")
        .unwrap()
        .1 = "Place One".into();
    renamed_poi.meta.version = renamed_poi.meta.version.map(|v| v + 1);
    let building = town
        .ways
        .values()
        .find(|w| {
            w.tags.iter().any(|(k, _)| k == "building")
                && (location(&town, w.nodes[0]).lon - 10.0042).abs() < 1e-6
                && (location(&town, w.nodes[0]).lat - 50.0052).abs() < 1e-6
        })
        .expect("a building at grid (4, 5)")
        .clone();
    let mut corners = building.nodes.clone();
    corners.pop();
    let old_corners: Vec<Location> = corners.iter().map(|&n| location(&town, n)).collect();
    let mut changes = Vec::new();
    let mut new_corners = Vec::new();
    for &id in &corners {
        let mut node = town.nodes[&id].clone();
        let at = node.location.unwrap();
        node.location = Some(Location {
            lon: at.lon + 0.0004,
            lat: at.lat,
        });
        new_corners.push(node.location.unwrap());
        node.meta.version = node.meta.version.map(|v| v + 1);
        changes.push(modify(Object::Node(node)));
    }
    changes.push(modify(Object::Node(renamed_poi)));
    changes.push(modify(Object::Way(renamed(&street, "Uusi Katu"))));
    let diff = dir.path().join("diff1.osc");
    write_osc(&diff, &changes);
    assert_success(&tilepipe(&yaml, &url, &["apply", diff.to_str().unwrap()]));

    // The list: the street's and the POI's tiles at 14–16, in osm2pgsql's
    // format; not the building, which feeds only the table.
    let text = std::fs::read_to_string(&list).unwrap();
    let listed: Vec<Tile> = text
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not z/x/y: {l:?}")))
        .collect();
    let listed_set: BTreeSet<Tile> = listed.iter().copied().collect();
    assert_eq!(listed.len(), listed_set.len(), "a tile listed twice");
    let mut list_points = street_points.clone();
    list_points.push(poi_at);
    for z in 14..=16 {
        let expected = tiles_at(&list_points, z);
        let missing: Vec<&Tile> = expected.difference(&listed_set).collect();
        assert!(missing.is_empty(), "z{z}: {missing:?} not in {text}");
    }
    for tile in &listed {
        assert!((14..=16).contains(&tile.z), "{tile} outside 14–16");
        assert!(near(*tile, &list_points), "{tile} is far from the edits");
    }
    let building_tiles: BTreeSet<Tile> = old_corners
        .iter()
        .chain(&new_corners)
        .map(|&at| tile_of(at, 16))
        .collect();
    assert!(
        building_tiles.is_disjoint(&tiles_at(&list_points, 16)),
        "the building must lie in other z16 tiles than the street and the POI"
    );
    assert!(
        building_tiles.is_disjoint(&listed_set),
        "the building's tiles are listed, but it feeds the table only"
    );

    // The table: the street's and the building's (old and new) tiles at
    // z15 only; not the POI, unless the street shares its tile.
    let table = rows(&mut db);
    let mut table_points = street_points.clone();
    table_points.extend(&old_corners);
    table_points.extend(&new_corners);
    let expected = tiles_at(&table_points, 15);
    let missing: Vec<&Tile> = expected.difference(&table).collect();
    assert!(missing.is_empty(), "{missing:?} not in the table {table:?}");
    for tile in &table {
        assert_eq!(tile.z, 15);
        assert!(near(*tile, &table_points), "{tile} is far from the edits");
    }
    let poi_tile = tile_of(poi_at, 15);
    if !tiles_at(&street_points, 15).contains(&poi_tile) {
        assert!(!table.contains(&poi_tile), "the POI feeds the list only");
    }
    let queued: i64 = db
        .query_one("SELECT count(*) FROM tilepipe_expire_output_files", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0, "written lists leave the queue");

    // Second diff: the street renamed back, and a tag none of the tables
    // keeps added to the building. The list grows by the street's tiles
    // only, the table gains no rows.
    let mut quiet = building.clone();
    quiet.tags.push(("roof:shape".into(), "flat".into()));
    quiet.meta.version = quiet.meta.version.map(|v| v + 1);
    let mut renamed_back = renamed(&street, "Rivi Street 1");
    renamed_back.meta.version = renamed_back.meta.version.map(|v| v + 1);
    let diff = dir.path().join("diff2.osc");
    write_osc(
        &diff,
        &[
            modify(Object::Way(quiet)),
            modify(Object::Way(renamed_back)),
        ],
    );
    assert_success(&tilepipe(&yaml, &url, &["apply", diff.to_str().unwrap()]));
    let grown = std::fs::read_to_string(&list).unwrap();
    let added = grown
        .strip_prefix(text.as_str())
        .expect("the list is appended to, never rewritten");
    let added: BTreeSet<Tile> = added.lines().map(|l| l.parse().unwrap()).collect();
    for z in 14..=16 {
        assert!(tiles_at(&street_points, z).is_subset(&added), "z{z}");
    }
    assert!(added.iter().all(|t| near(*t, &street_points)));
    assert_eq!(rows(&mut db), table, "the table keeps one row per tile");

    // Third: the same outputs through `catchup` (the path `run` shares):
    // the building moved back, from a feed.
    let mut moved_back = Vec::new();
    for (&id, &at) in corners.iter().zip(&old_corners) {
        let mut node = town.nodes[&id].clone();
        node.location = Some(at);
        node.meta.version = node.meta.version.map(|v| v + 2);
        moved_back.push(modify(Object::Node(node)));
    }
    let feed = dir.path().join("feed");
    let start = ReplicationState {
        sequence: 10,
        timestamp: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
    };
    write_feed_from_changes(&feed, start, 60, &[moved_back]).unwrap();
    let feed_url = format!("file://{}/", feed.display());
    init_at(&yaml, &url, &feed_url, start.sequence);
    db.batch_execute("DELETE FROM expired_tiles").unwrap();
    assert_success(&tilepipe(&yaml, &url, &["catchup"]));
    let building_rows: BTreeSet<Tile> = old_corners
        .iter()
        .chain(&new_corners)
        .map(|&at| tile_of(at, 15))
        .collect();
    assert_eq!(rows(&mut db), building_rows);
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        grown,
        "the building feeds no list"
    );
}
