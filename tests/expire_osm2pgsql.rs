//! Tile expiry compared with osm2pgsql 1.8 (Debian's `/usr/bin/osm2pgsql`).
//!
//! The synthetic town is imported by osm2pgsql and by tilepipe into two
//! schemas of one private database; generated diffs are then applied by
//! both, osm2pgsql writing its expire list (`-e 16-18 -o LIST`), tilepipe
//! returning the old and new rows of every touched object. From those rows
//! tilepipe's expirer computes its tiles at z18 (hybrid, 20 km, as
//! osm2pgsql's `-e` maps to in 2.x), and the test checks:
//!
//! 1. osm2pgsql 1.8's list is *exactly* explained: it equals tilepipe's
//!    tiles for the point and line rows united with osm2pgsql 1.8's own rule
//!    for polygon rows (the buffered bounding box, `expire_tiles::from_bbox`) emulated here, in
//!    the same line order (z18 in quadkey order, each followed by its new
//!    z17 and z16 ancestors). So points and lines agree tile for tile.
//! 2. For polygons tilepipe's tiles are a subset of osm2pgsql 1.8's bbox
//!    tiles, and still contain every tile the old or new geometry meets.
//!    Lines and points too contain every tile they meet.
//!
//! What osm2pgsql 1.8 expires (`output-pgsql.cpp`, `expire-tiles.cpp` at
//! 1.8.0): on delete or modify of an object, every `_point`, `_line` and
//! `_polygon` row read back before deletion (relations by −id), not the
//! `_roads` rows; on add or modify, each row it writes (each ≤ 100 km line
//! piece, each polygon part without `-G`), so tag-only changes and every
//! way or relation re-processed because a member moved are expired too.
//! Points and polygons up to 20 km expire their buffered bbox, larger
//! polygons their rings, lines are walked in 0.4-tile chunks.
//!
//! Skips with a message when osm2pgsql is not installed.

use geo::{Geometry, Intersects};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use tilepipe::apply::append::{Applier, RowChange};
use tilepipe::apply::geom::ewkb;
use tilepipe::apply::import::import;
use tilepipe::apply::settings::ImportSettings;
use tilepipe::expire::raster::{Expirer, PolygonMode, RasterSettings};
use tilepipe::expire::tiles::{
    tile_bounds, tile_coords, tiles_per_side, truncate, HALF_EARTH_CIRCUMFERENCE,
};
use tilepipe::expire::tileset::TileSet;
use tilepipe::osm::{Action, Change, ChangeSet};
use tilepipe::osm::{Location, Member, Meta, Node, Object, ObjectType, Relation, Way};
use tilepipe::tile::Tile;
use tilepipe_testkit::feedgen::FeedGenerator;
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::PgCluster;

const OSM2PGSQL: &str = "/usr/bin/osm2pgsql";
const STYLE: &str = "/usr/share/osm2pgsql/default.style";
const BBOX_SIZE: f64 = 20_000.0;
const BUFFER: f64 = 0.1;
const DIFFS: usize = 8;
/// Ids of the hand-made objects, far above the town's and the generator's.
const OWN_IDS: i64 = 9_000_000;

type TileXY = (u32, u32);

fn osm2pgsql_available() -> bool {
    let ok = Path::new(OSM2PGSQL).exists()
        && Command::new(OSM2PGSQL)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: {OSM2PGSQL} (osm2pgsql 1.8) is not installed");
    }
    ok
}

fn run_osm2pgsql(url: &str, args: &[&str], file: &Path) {
    let out = Command::new(OSM2PGSQL)
        .args(["--slim", "-d", url, "--number-processes", "1", "-S", STYLE])
        .args([
            "--middle-schema=osm2pgsql",
            "--output-pgsql-schema=osm2pgsql",
        ])
        .args(args)
        .arg(file)
        .output()
        .expect("osm2pgsql runs");
    assert!(
        out.status.success(),
        "osm2pgsql {args:?} {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn expire_config(zoom: u8, mode: PolygonMode) -> RasterSettings {
    let mut config = RasterSettings::new(zoom);
    config.mode = mode;
    config.full_area_limit = BBOX_SIZE;
    config.buffer = BUFFER;
    config
}

fn tile_set(zoom: u8, tiles: &BTreeSet<TileXY>) -> TileSet {
    let mut set = TileSet::new(zoom);
    for &(x, y) in tiles {
        set.insert(x, y);
    }
    set
}

fn xy(set: &TileSet) -> BTreeSet<TileXY> {
    set.tiles().map(|t| (t.x, t.y)).collect()
}

/// osm2pgsql 1.8's rule for one polygon row (`expire_tiles::from_bbox`):
/// the envelope of the outer rings; over the bbox size the rings as lines
/// (the same line walk as 2.3), else the buffered rectangle clamped to
/// [0, 2^z] (sic).
fn osm2pgsql_18_polygon(zoom: u8, geometry: &Geometry<f64>) -> BTreeSet<TileXY> {
    let outers: Vec<&geo::LineString<f64>> = match geometry {
        Geometry::Polygon(p) => vec![p.exterior()],
        Geometry::MultiPolygon(mp) => mp.0.iter().map(|p| p.exterior()).collect(),
        other => panic!("not a polygon row: {other:?}"),
    };
    let (mut min, mut max) = ((f64::MAX, f64::MAX), (f64::MIN, f64::MIN));
    for c in outers.iter().flat_map(|r| r.0.iter()) {
        min = (min.0.min(c.x), min.1.min(c.y));
        max = (max.0.max(c.x), max.1.max(c.y));
    }
    let (width, height) = (max.0 - min.0, max.1 - min.1);
    assert!(
        width <= HALF_EARTH_CIRCUMFERENCE + 1.0,
        "antimeridian split not emulated"
    );
    if width > BBOX_SIZE || height > BBOX_SIZE {
        let mut boundary = Expirer::new(expire_config(zoom, PolygonMode::BoundaryOnly)).unwrap();
        boundary.expire("1.8 boundary", geometry);
        return xy(boundary.tiles());
    }
    let w = i64::from(tiles_per_side(zoom));
    let top_left = tile_coords(geo::Coord { x: min.0, y: max.1 }, zoom);
    let bottom_right = tile_coords(geo::Coord { x: max.0, y: min.1 }, zoom);
    let clamp = |v: f64| truncate(v).clamp(0, w);
    let mut out = BTreeSet::new();
    for x in clamp(top_left.x - BUFFER)..=clamp(bottom_right.x + BUFFER) {
        for y in clamp(top_left.y - BUFFER)..=clamp(bottom_right.y + BUFFER) {
            assert!(y < w, "1.8 would write y = 2^z here");
            out.insert(((x % w) as u32, y as u32));
        }
    }
    out
}

/// Tiles whose square meets the geometry (closed squares, so a shared
/// edge counts).
fn cover(zoom: u8, geometry: &Geometry<f64>) -> BTreeSet<TileXY> {
    use geo::BoundingRect;
    let Some(rect) = geometry.bounding_rect() else {
        return BTreeSet::new();
    };
    let w = i64::from(tiles_per_side(zoom));
    let a = tile_coords(
        geo::Coord {
            x: rect.min().x,
            y: rect.max().y,
        },
        zoom,
    );
    let b = tile_coords(
        geo::Coord {
            x: rect.max().x,
            y: rect.min().y,
        },
        zoom,
    );
    let mut out = BTreeSet::new();
    for x in (truncate(a.x) - 1).max(0)..=(truncate(b.x) + 1).min(w - 1) {
        for y in (truncate(a.y) - 1).max(0)..=(truncate(b.y) + 1).min(w - 1) {
            let tile = Tile {
                z: zoom,
                x: x as u32,
                y: y as u32,
            };
            if geometry.intersects(&tile_bounds(tile)) {
                out.insert((tile.x, tile.y));
            }
        }
    }
    out
}

/// What hybrid mode promises to cover: the area of polygons up to the
/// limit, only the rings of bigger ones.
fn hybrid_must_cover(geometry: &Geometry<f64>) -> Geometry<f64> {
    use geo::BoundingRect;
    let rect = geometry.bounding_rect().expect("non-empty polygon");
    if rect.width() > BBOX_SIZE || rect.height() > BBOX_SIZE {
        let parts: Vec<geo::Polygon<f64>> = match geometry {
            Geometry::Polygon(p) => vec![p.clone()],
            Geometry::MultiPolygon(mp) => mp.0.clone(),
            other => panic!("not a polygon row: {other:?}"),
        };
        let rings = parts
            .iter()
            .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()))
            .cloned()
            .collect();
        Geometry::MultiLineString(geo::MultiLineString::new(rings))
    } else {
        geometry.clone()
    }
}

/// The first few elements, for failure messages.
fn some<T: std::fmt::Debug>(items: &[T]) -> String {
    format!(
        "{} tiles, e.g. {:?}",
        items.len(),
        &items[..items.len().min(12)]
    )
}

fn read_list(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        // osm2pgsql writes no file when nothing was expired? It opens it
        // in append mode in any case; treat absence as empty.
        Err(_) => Vec::new(),
    }
}

/// Totals over all diffs of one run, printed for the record.
#[derive(Debug, Default)]
#[allow(dead_code)] // read through Debug
struct Figures {
    diffs: usize,
    row_changes: usize,
    unchanged_rows: usize,
    polygon_rows: usize,
    osm2pgsql_lines: usize,
    osm2pgsql_tiles: usize,
    tilepipe_tiles: usize,
    point_line_tiles: usize,
    polygon_tiles_18: usize,
    polygon_tiles_tilepipe: usize,
}

fn geometries(change: &RowChange) -> Vec<Geometry<f64>> {
    change
        .old
        .iter()
        .chain(&change.new)
        .map(|bytes| ewkb::read(bytes).expect("row EWKB"))
        .collect()
}

fn meta() -> Meta {
    Meta {
        version: Some(1),
        timestamp: Some(chrono::Utc::now()),
        changeset: Some(99_999),
        uid: Some(1),
        user: Some("tester".into()),
    }
}

fn node(id: i64, lon: f64, lat: f64, tags: &[(&str, &str)]) -> Object {
    Object::Node(Node {
        id: OWN_IDS + id,
        meta: meta(),
        location: Some(Location { lon, lat }),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

fn way(id: i64, nodes: &[i64], tags: &[(&str, &str)]) -> Object {
    Object::Way(Way {
        id: OWN_IDS + id,
        meta: meta(),
        nodes: nodes.iter().map(|n| OWN_IDS + n).collect(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

fn change(action: Action, object: Object) -> Change {
    Change { action, object }
}

/// Hand-made diffs with shapes the town lacks: a triangle and a diamond
/// multipolygon with a hole (their bbox is much bigger than their area), a
/// long diagonal track, a lake over 20 km (boundary-only in both), then a
/// reshape, a tag-only change, a moved POI, and a deletion.
fn own_diffs() -> Vec<Vec<Change>> {
    use Action::{Create, Delete, Modify};
    let create = vec![
        node(1, 10.010, 50.000, &[]),
        node(2, 10.025, 50.004, &[]),
        node(3, 10.014, 50.012, &[]),
        node(11, 10.030, 50.006, &[]),
        node(12, 10.036, 50.000, &[]),
        node(13, 10.030, 49.994, &[]),
        node(14, 10.024, 50.000, &[]),
        node(15, 10.030, 50.003, &[]),
        node(16, 10.033, 50.000, &[]),
        node(17, 10.030, 49.997, &[]),
        node(18, 10.027, 50.000, &[]),
        node(21, 9.990, 49.990, &[]),
        node(22, 10.040, 50.020, &[]),
        node(31, 9.800, 49.900, &[]),
        node(32, 10.200, 49.950, &[]),
        node(33, 10.000, 50.150, &[]),
        node(41, 10.020, 50.008, &[("amenity", "bench")]),
        way(1, &[1, 2, 3, 1], &[("landuse", "meadow")]),
        way(2, &[11, 12, 13, 14, 11], &[]),
        way(3, &[15, 16, 17, 18, 15], &[]),
        way(4, &[21, 22], &[("highway", "track")]),
        way(5, &[31, 32, 33, 31], &[("natural", "water")]),
        Object::Relation(Relation {
            id: OWN_IDS + 1,
            meta: meta(),
            members: vec![
                Member {
                    kind: ObjectType::Way,
                    id: OWN_IDS + 2,
                    role: "outer".into(),
                },
                Member {
                    kind: ObjectType::Way,
                    id: OWN_IDS + 3,
                    role: "inner".into(),
                },
            ],
            tags: vec![
                ("type".into(), "multipolygon".into()),
                ("landuse".into(), "forest".into()),
            ],
        }),
    ];
    let modify = vec![
        node(2, 10.028, 50.006, &[]),
        node(16, 10.0335, 50.0004, &[]),
        node(41, 10.021, 50.0085, &[("amenity", "bench")]),
        way(
            4,
            &[21, 22],
            &[("highway", "track"), ("name", "Long Track")],
        ),
    ];
    vec![
        create.into_iter().map(|o| change(Create, o)).collect(),
        modify.into_iter().map(|o| change(Modify, o)).collect(),
        vec![change(Delete, way(5, &[31, 32, 33, 31], &[]))],
    ]
}

/// Imports the town into both programs, applies generated and hand-made
/// diffs, and checks every diff's expiry (see the module documentation).
fn compare(zoom: u8, min_zoom: u8, seed: u64) {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let town_path = dir.path().join("town.osm");
    town.write_osm_file(&town_path).unwrap();

    let url = PgCluster::shared()
        .create_database(&format!("expire_o2p_z{zoom}"))
        .unwrap();
    let db = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    let mut client = tilepipe::db::connect(&db).unwrap();
    client
        .batch_execute("CREATE SCHEMA osm2pgsql; CREATE SCHEMA tilepipe;")
        .unwrap();
    run_osm2pgsql(&url, &["--create"], &town_path);
    let settings = ImportSettings {
        schema: "tilepipe".into(),
        ..ImportSettings::default()
    };
    import(&db, &town_path, &settings, 2).unwrap();
    let mut applier = Applier::for_settings(&settings).unwrap();

    let mut generator = FeedGenerator::new(town, seed, 1000, chrono::Utc::now(), 60);
    let mut diffs: Vec<Vec<Change>> = (0..DIFFS).map(|_| generator.next_diff().changes).collect();
    diffs.extend(own_diffs());
    let mut figures = Figures::default();
    for (n, diff) in diffs.iter().enumerate() {
        let changes: ChangeSet = diff.iter().cloned().collect();
        let osc = dir.path().join(format!("{n}.osc"));
        let mut file = std::fs::File::create(&osc).unwrap();
        tilepipe::osm::osc_write::write_osc(&mut file, "expire test", changes.iter()).unwrap();
        drop(file);
        let list = dir.path().join(format!("{n}.list"));
        let list_arg = list.to_str().unwrap();
        let zooms = format!("{min_zoom}-{zoom}");
        run_osm2pgsql(&url, &["--append", "-e", &zooms, "-o", list_arg], &osc);
        let mut tx = client.transaction().unwrap();
        let result = applier.apply(&mut tx, &changes).unwrap();
        tx.commit().unwrap();

        let mut points_lines = Expirer::new(expire_config(zoom, PolygonMode::Hybrid)).unwrap();
        let mut polygons = Expirer::new(expire_config(zoom, PolygonMode::Hybrid)).unwrap();
        let mut polygons_18 = BTreeSet::new();
        let mut must_cover_pl = BTreeSet::new();
        let mut must_cover_poly = BTreeSet::new();
        for change in &result.row_changes {
            figures.row_changes += 1;
            figures.unchanged_rows += usize::from(!change.changed);
            let label = format!("{} {}", change.table, change.osm_id);
            let rows = geometries(change);
            match change.table.trim_start_matches("planet_osm_") {
                // osm2pgsql 1.8 deletes _roads rows without expiring them;
                // they duplicate _line rows anyway.
                "roads" => continue,
                "point" | "line" => {
                    points_lines.expire_together(&label, &rows);
                    rows.iter()
                        .for_each(|g| must_cover_pl.extend(cover(zoom, g)));
                }
                "polygon" => {
                    figures.polygon_rows += rows.len();
                    polygons.expire_together(&label, &rows);
                    for g in &rows {
                        polygons_18.extend(osm2pgsql_18_polygon(zoom, g));
                        must_cover_poly.extend(cover(zoom, &hybrid_must_cover(g)));
                    }
                }
                other => panic!("unexpected table {other}"),
            }
        }
        let pl = xy(points_lines.tiles());
        let poly = xy(polygons.tiles());

        // 1. osm2pgsql's list, line by line.
        let explained: BTreeSet<TileXY> = pl.union(&polygons_18).copied().collect();
        let mut expected_lines = Vec::new();
        tile_set(zoom, &explained)
            .write_list(&mut expected_lines, min_zoom)
            .unwrap();
        let expected_lines: Vec<String> = String::from_utf8(expected_lines)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let osm2pgsql_lines = read_list(&list);
        let osm2pgsql_max: BTreeSet<TileXY> = osm2pgsql_lines
            .iter()
            .filter_map(|l| {
                let parts: Vec<u32> = l.split('/').map(|p| p.parse().unwrap()).collect();
                (parts[0] == u32::from(zoom)).then_some((parts[1], parts[2]))
            })
            .collect();
        let missing: Vec<_> = osm2pgsql_max.difference(&explained).collect();
        let extra: Vec<_> = explained.difference(&osm2pgsql_max).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "z{zoom} diff {n}: osm2pgsql's tiles not explained: {}; explained but not in osm2pgsql's list: {}",
            some(&missing),
            some(&extra)
        );
        assert_eq!(
            osm2pgsql_lines, expected_lines,
            "z{zoom} diff {n}: list order"
        );

        // 2. Subset of 1.8 for polygons, and full cover.
        let outside: Vec<_> = poly.difference(&polygons_18).collect();
        assert!(
            outside.is_empty(),
            "z{zoom} diff {n}: polygon tiles outside 1.8's bbox: {}",
            some(&outside)
        );
        let uncovered: Vec<_> = must_cover_poly.difference(&poly).collect();
        assert!(
            uncovered.is_empty(),
            "z{zoom} diff {n}: polygon tiles not expired: {}",
            some(&uncovered)
        );
        let uncovered: Vec<_> = must_cover_pl.difference(&pl).collect();
        assert!(
            uncovered.is_empty(),
            "z{zoom} diff {n}: line/point tiles not expired: {}",
            some(&uncovered)
        );
        let tilepipe: BTreeSet<TileXY> = pl.union(&poly).copied().collect();
        assert!(tilepipe.is_subset(&osm2pgsql_max));

        figures.diffs += 1;
        figures.osm2pgsql_lines += osm2pgsql_lines.len();
        figures.osm2pgsql_tiles += osm2pgsql_max.len();
        figures.tilepipe_tiles += tilepipe.len();
        figures.point_line_tiles += pl.len();
        figures.polygon_tiles_18 += polygons_18.len();
        figures.polygon_tiles_tilepipe += poly.len();
    }
    eprintln!("town, z{zoom} (list down to z{min_zoom}): {figures:#?}");
    assert!(figures.row_changes > 0 && figures.polygon_rows > 0);
    assert!(
        figures.polygon_tiles_tilepipe < figures.polygon_tiles_18,
        "the hand-made shapes expire less than their bbox"
    );
}

#[test]
fn town_z18_compared_with_osm2pgsql_1_8() {
    compare(18, 16, 17);
}

#[test]
fn town_z20_compared_with_osm2pgsql_1_8() {
    compare(20, 20, 23);
}
