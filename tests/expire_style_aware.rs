//! Style-aware expiry through `tilepipe catchup` with the project's style
//! (`styles/tilepipe/tilepipe.xml`): a building's tag change touches its
//! metatiles only from z14 on, where the style draws buildings, while a
//! change of a major road's class still touches z10–z12 (drawn there from
//! `planet_osm_roads`); with `expire.style_aware: false` the building
//! change touches z10–z12 too, as before. Value conditions: a polygon no
//! rule of the style can draw expires nothing.

use chrono::{TimeZone, Utc};
use std::path::Path;
use std::process::Command;
use tilepipe::metatile::{TileState, TileStore};
use tilepipe::osm::{Action, Change, Object, ObjectId, ObjectType, Way};
use tilepipe::replication::ReplicationState;
use tilepipe::tile::{Metatile, Tile};
use tilepipe_testkit::feedgen::{write_feed_from_changes, OsmData};
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::PgCluster;

const START: u64 = 100;
const STYLE: &str = "default";

fn tile_of(lon: f64, lat: f64, z: u8) -> Tile {
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n).floor() as u32;
    let lat = lat.to_radians();
    let y = ((1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor()
        as u32;
    Tile { z, x, y }
}

/// Runs tilepipe; returns its log (stderr).
fn tilepipe(config: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", config.to_str().unwrap(), "-d", url])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first node's location of `way`.
fn where_is(town: &OsmData, way: &Way) -> (f64, f64) {
    let location = town.nodes[&way.nodes[0]].location.unwrap();
    (location.lon, location.lat)
}

/// A node location of the town, where new objects are drawn.
fn first_location(town: &OsmData) -> (f64, f64) {
    town.nodes
        .values()
        .find_map(|n| n.location.map(|l| (l.lon, l.lat)))
        .unwrap()
}

/// The metadata of an edit's objects.
fn meta(version: u32) -> tilepipe::osm::Meta {
    tilepipe::osm::Meta {
        version: Some(version),
        timestamp: Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 1, 0).unwrap()),
        ..Default::default()
    }
}

fn modified(way: &Way, key: &str, value: &str) -> Change {
    let mut way = way.clone();
    way.tags.iter_mut().find(|(k, _)| k == key).unwrap().1 = value.into();
    way.meta.version = way.meta.version.map(|v| v + 1);
    Change {
        action: Action::Modify,
        object: Object::Way(way),
    }
}

/// Zooms 10–18 whose metatile around `(lon, lat)` was touched.
fn touched_zooms(store: &TileStore, (lon, lat): (f64, f64)) -> Vec<u8> {
    (10..=18u8)
        .filter(|&z| {
            matches!(
                store.stat(STYLE, tile_of(lon, lat, z).metatile()).unwrap(),
                TileState::Dirty { touched: true, .. }
            )
        })
        .collect()
}

/// Imports the town, then applies the building change and the road change
/// as two batches; returns the zooms touched after each and the log of
/// the first catchup.
fn run(dir: &Path, style_aware: bool) -> (Vec<u8>, Vec<u8>, String) {
    let town = synthetic_town();
    let osm = dir.join("town.osm");
    town.write_osm_file(&osm).unwrap();
    // Way 1 is "Rivi Street 1", a primary road (in planet_osm_roads).
    let Some(Object::Way(road)) = town.get(ObjectId {
        kind: ObjectType::Way,
        id: 1,
    }) else {
        panic!("way 1 missing")
    };
    let building = town
        .ways
        .values()
        .find(|w| w.tags.iter().any(|(k, v)| k == "building" && v == "yes"))
        .expect("a building")
        .clone();
    let feed = dir.join("feed");
    let start = ReplicationState {
        sequence: START,
        timestamp: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
    };
    write_feed_from_changes(
        &feed,
        start,
        60,
        &[
            vec![modified(&building, "building", "house")],
            vec![modified(&road, "highway", "secondary")],
        ],
    )
    .unwrap();

    // A cache with the metatiles around both at z10–z18.
    let tiles_dir = dir.join("tiles");
    let store = TileStore::new(&tiles_dir);
    let mut cached: Vec<Metatile> = Vec::new();
    for place in [where_is(&town, &building), where_is(&town, &road)] {
        for z in 10..=18u8 {
            let m = tile_of(place.0, place.1, z).metatile();
            if !cached.contains(&m) {
                store.write(STYLE, m, &vec![b"png".to_vec(); 64]).unwrap();
                cached.push(m);
            }
        }
    }
    let xml = Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/tilepipe/tilepipe.xml");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "replication:\n  max_diff_size_mb: 0.0001\nexpire:\n  style_aware: {style_aware}\n  styles:\n    - name: {STYLE}\n      tile_dir: {tiles}\n      min_zoom: 10\n      max_zoom: 18\nstyles:\n  - name: {STYLE}\n    xml: {xml}\n    tile_dir: {tiles}\n",
            tiles = tiles_dir.display(),
            xml = xml.display(),
        ),
    )
    .unwrap();
    let url = PgCluster::shared()
        .create_database(&format!("expire_style_aware_{style_aware}"))
        .unwrap();
    tilepipe(&config, &url, &["import", osm.to_str().unwrap()]);
    let feed_url = format!("file://{}/", feed.display());
    let sequence = START.to_string();
    tilepipe(
        &config,
        &url,
        &["init", "--server", &feed_url, "--sequence", &sequence],
    );

    let log = tilepipe(&config, &url, &["catchup", "--once"]);
    let after_building = touched_zooms(&store, where_is(&town, &building));
    tilepipe(&config, &url, &["catchup"]);
    let after_road = touched_zooms(&store, where_is(&town, &road));
    (after_building, after_road, log)
}

#[test]
fn style_aware_expiry_skips_zooms_the_style_does_not_draw() {
    let dir = tempfile::tempdir().unwrap();
    let (building, road, log) = run(dir.path(), true);
    assert_eq!(building, (14..=18).collect::<Vec<_>>(), "building change");
    assert_eq!(road, (10..=18).collect::<Vec<_>>(), "road class change");
    assert_eq!(
        log.matches("style-aware expiry: 15 of 15 layers understood")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn without_style_awareness_every_zoom_is_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (building, road, log) = run(dir.path(), false);
    assert_eq!(building, (10..=18).collect::<Vec<_>>(), "building change");
    assert_eq!(road, (10..=18).collect::<Vec<_>>(), "road class change");
    assert!(!log.contains("style-aware expiry"), "{log}");
}

/// Generated minutely diffs over the town, applied in-process: per zoom,
/// the metatiles the project's style gets with style-aware expiry against
/// those every style gets without it, counted per changed row (as if each
/// row were in a part of the map of its own: the town is one metatile
/// wide at low zooms, so per batch every diff touches it). Never more;
/// fewer in total.
/// The town imported into a database of its own (classic output, default
/// settings): a client, an applier for it, and the project style's reads.
fn imported_town(
    dir: &Path,
    town: &OsmData,
    database: &str,
) -> (
    postgres::Client,
    tilepipe::apply::append::Applier,
    [tilepipe::expire::style_aware::StyleReads; 1],
) {
    use tilepipe::apply::settings::ImportSettings;
    let osm = dir.join("town.osm");
    town.write_osm_file(&osm).unwrap();
    let url = PgCluster::shared().create_database(database).unwrap();
    let db = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    tilepipe::apply::import::import(&db, &osm, &ImportSettings::default(), 1).unwrap();
    let mut client = tilepipe::db::connect(&db).unwrap();
    let settings = ImportSettings::load(&mut client, "public")
        .unwrap()
        .unwrap();
    let applier = tilepipe::apply::append::Applier::for_settings(&settings).unwrap();
    let xml = Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/tilepipe/tilepipe.xml");
    let reads = [tilepipe::render::style_reads::read_style(STYLE, &xml, 256, 1.0).unwrap()];
    (client, applier, reads)
}

#[test]
fn generated_diffs_expire_fewer_metatiles() {
    use tilepipe::expire::batch::{tiles_for_batch, ExpireConfig};
    use tilepipe::osm::ChangeSet;

    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let (mut client, mut applier, reads) =
        imported_town(dir.path(), &town, "expire_style_aware_generated");
    let raster = ExpireConfig::default().raster();
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let mut generator = tilepipe_testkit::FeedGenerator::new(town, 17, START, start, 60);
    // Per zoom 10..=18: (style-aware, all).
    let mut counts = [(0usize, 0usize); 9];
    // Changed rows, and of them those whose geometry stayed the same.
    let (mut rows, mut same_geometry) = (0, 0);
    for _ in 0..30 {
        let changes: ChangeSet = generator.next_diff().changes.into_iter().collect();
        let mut tx = client.transaction().unwrap();
        let result = applier.apply(&mut tx, &changes).unwrap();
        tx.commit().unwrap();
        for change in result.row_changes.iter().filter(|c| c.changed) {
            rows += 1;
            same_geometry += usize::from(change.changed_columns.is_some());
            let row = std::slice::from_ref(change);
            let batch = tiles_for_batch(row, &raster, false, &reads).unwrap();
            for (i, z) in (10..=18u8).enumerate() {
                let aware = batch.metatiles(STYLE, z).len();
                // `_roads` rows repeat `_line` rows: the plain set skips them.
                let all = batch.all.metatiles(z).count();
                if change.expire {
                    assert!(aware <= all, "z{z}: {aware} > {all} for {change:?}");
                }
                counts[i].0 += aware;
                counts[i].1 += all;
            }
        }
    }
    for (i, (aware, all)) in counts.iter().enumerate() {
        eprintln!("z{}: {aware} of {all} metatiles", i + 10);
    }
    let (aware, all) = counts.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    eprintln!("total: {aware} of {all} metatiles; {same_geometry} of {rows} changed rows kept their geometry");
    assert!(aware < all, "{aware} of {all}");
}

/// Expiry skips rows rewritten without a change (a tag the style does not
/// read), so the project style must draw the same pixels whatever order
/// PostgreSQL finds tied rows in: every layer orders by `osm_id` last.
/// Central Helsinki's footways (one `z_order`, meeting at every corner)
/// are rendered, every output table is rewritten in reverse order (as
/// many rewrites would leave it), and rendered again: the same bytes.
/// Without the `osm_id` tie-breakers the expiry accuracy benchmark found
/// a rewritten sidewalk moving pixels at footway junctions.
#[test]
fn rewritten_rows_leave_the_project_style_unchanged() {
    use tilepipe::render::config::{RenderConfig, StyleConfig, TileFormat};
    use tilepipe::render::worker::Renderer;
    use tilepipe::tile::metatiles_at;

    let Some(helsinki) = tilepipe_testkit::paths::shared_data("helsinki.osm.pbf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = PgCluster::shared()
        .create_database("expire_style_aware_rewrites")
        .unwrap();
    let db = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    tilepipe::apply::import::import(&db, &helsinki, &Default::default(), 1).unwrap();
    let style = StyleConfig {
        name: STYLE.into(),
        xml: Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/tilepipe/tilepipe.xml"),
        tile_dir: dir.path().join("tiles"),
        database: Some(url.clone()),
        format: TileFormat::Png,
        ..StyleConfig::default()
    };
    let renderer = Renderer::start(
        std::slice::from_ref(&style),
        &RenderConfig {
            threads: 2,
            ..RenderConfig::default()
        },
    )
    .unwrap();
    // The middle of the sample, where its sidewalks are.
    let bbox = "24.940,60.166,24.948,60.174".parse().unwrap();
    let metatiles: Vec<Metatile> = (16..=18u8)
        .flat_map(|z| metatiles_at(z, Some(&bbox)).collect::<Vec<_>>())
        .collect();
    let store = TileStore::new(dir.path().join("tiles"));
    let render_all = || -> Vec<Vec<u8>> {
        tilepipe_testkit::render::render_all(&renderer, STYLE, &metatiles);
        metatiles
            .iter()
            .map(|&m| std::fs::read(store.path(STYLE, m, None).unwrap()).unwrap())
            .collect()
    };
    let before = render_all();
    let mut client = tilepipe::db::connect(&db).unwrap();
    for table in [
        "planet_osm_point",
        "planet_osm_line",
        "planet_osm_roads",
        "planet_osm_polygon",
    ] {
        client
            .batch_execute(&format!(
                "CREATE TEMP TABLE reversed AS SELECT * FROM {table} ORDER BY osm_id DESC;
                 DELETE FROM {table};
                 INSERT INTO {table} SELECT * FROM reversed;
                 DROP TABLE reversed;"
            ))
            .unwrap();
    }
    let after = render_all();
    renderer.shutdown();
    let changed: Vec<Metatile> = metatiles
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| b != a)
        .map(|(m, _)| *m)
        .collect();
    assert!(
        changed.is_empty(),
        "{} of {} metatiles changed: {changed:?}",
        changed.len(),
        metatiles.len()
    );
}

/// Value conditions: the project style's land cover layers draw a polygon
/// only when its `landuse` maps to a kind (`CASE WHEN landuse IN (…) THEN
/// … END AS kind … WHERE kind IS NOT NULL`). A new `landuse=military`
/// area (no kind, no name) is drawn by no layer: it expires nothing with
/// the rows' values, and every land cover zoom without them (the layers'
/// `landuse IS NOT NULL` alone lets it through). Retagged as forest, it
/// is drawn from z10 on, and expires there.
#[test]
fn value_conditions_skip_rows_no_rule_draws() {
    use tilepipe::apply::append::RowChange;
    use tilepipe::expire::batch::{tiles_for_batch, ExpireConfig};
    use tilepipe::osm::{ChangeSet, Location, Node};

    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let (mut client, mut applier, reads) =
        imported_town(dir.path(), &town, "expire_style_aware_values");
    let raster = ExpireConfig::default().raster();

    let [max_node, max_way, _] = town.max_ids();
    let (lon, lat) = first_location(&town);
    let corners = [(0.0, 0.0), (0.002, 0.0), (0.002, 0.002), (0.0, 0.002)];
    let mut changes: Vec<Change> = corners
        .iter()
        .enumerate()
        .map(|(i, (dx, dy))| Change {
            action: Action::Create,
            object: Object::Node(Node {
                id: max_node + 1 + i as i64,
                meta: meta(1),
                location: Some(Location {
                    lon: lon + dx,
                    lat: lat + dy,
                }),
                tags: Vec::new(),
            }),
        })
        .collect();
    let area = Way {
        id: max_way + 1,
        meta: meta(1),
        nodes: (1..=4).chain([1]).map(|i| max_node + i).collect(),
        tags: vec![("landuse".into(), "military".into())],
    };
    changes.push(Change {
        action: Action::Create,
        object: Object::Way(area.clone()),
    });
    let mut apply = |changes: Vec<Change>| -> Vec<RowChange> {
        let set: ChangeSet = changes.into_iter().collect();
        let mut tx = client.transaction().unwrap();
        let result = applier.apply(&mut tx, &set).unwrap();
        tx.commit().unwrap();
        result.row_changes
    };
    let zooms = |rows: &[RowChange]| -> Vec<u8> {
        let batch = tiles_for_batch(rows, &raster, false, &reads).unwrap();
        (10..=18u8)
            .filter(|&z| !batch.metatiles(STYLE, z).is_empty())
            .collect()
    };
    let hashless = |rows: &[RowChange]| -> Vec<RowChange> {
        rows.iter()
            .map(|r| RowChange {
                column_digests: None,
                ..r.clone()
            })
            .collect()
    };

    let created = apply(changes);
    assert!(
        created.iter().any(|r| r.column_digests.is_some()),
        "{created:?}"
    );
    assert_eq!(zooms(&created), Vec::<u8>::new(), "military area");
    assert_eq!(
        zooms(&hashless(&created)),
        (10..=18).collect::<Vec<_>>(),
        "military area without values"
    );

    let forest = apply(vec![modified(
        &Way {
            meta: meta(1),
            ..area
        },
        "landuse",
        "forest",
    )]);
    assert_eq!(zooms(&forest), (10..=18).collect::<Vec<_>>(), "forest");
}

/// A carto-like style (openstreetmap-carto's pattern): a land cover
/// layer whose rules test `feature`, a `COALESCE` of aliases named like
/// the table's columns (`'landuse_' || CASE WHEN landuse IN (…) THEN
/// landuse END AS landuse`), one of them from an hstore key
/// (`tags->'golf'`); buildings from z14.
const CARTO_LIKE: &str = r#"<?xml version="1.0"?>
<Map srs="epsg:3857">
  <Style name="landcover">
    <Rule><MaxScaleDenominator>750000</MaxScaleDenominator><Filter>([feature] = 'landuse_forest') and ([way_pixels] &gt;= 4)</Filter><PolygonSymbolizer/></Rule>
    <Rule><MaxScaleDenominator>100000</MaxScaleDenominator><Filter>([feature] = 'golf_tee')</Filter><PolygonSymbolizer/></Rule>
  </Style>
  <Style name="buildings"><Rule><MaxScaleDenominator>50000</MaxScaleDenominator><PolygonSymbolizer/></Rule></Style>
  <Layer name="landcover" maximum-scale-denominator="750000"><StyleName>landcover</StyleName>
    <Datasource><Parameter name="type">postgis</Parameter><Parameter name="table">(SELECT
        way, way_pixels, COALESCE(golf, landuse) AS feature
      FROM (SELECT way,
          ('golf_' || (CASE WHEN (tags->'golf') IN ('tee', 'green') THEN tags->'golf' ELSE NULL END)) AS golf,
          ('landuse_' || (CASE WHEN landuse IN ('forest', 'grass') THEN landuse END)) AS landuse,
          way_area/NULLIF(POW(!scale_denominator!*0.001*0.28,2),0) AS way_pixels
        FROM planet_osm_polygon
        WHERE (landuse IS NOT NULL OR (tags->'golf') IS NOT NULL OR building IS NOT NULL)
          AND way_area &gt; 1*!pixel_width!::real*!pixel_height!::real
      ) AS landcover ORDER BY way_area DESC, feature) AS features</Parameter></Datasource>
  </Layer>
  <Layer name="buildings" maximum-scale-denominator="750000"><StyleName>buildings</StyleName>
    <Datasource><Parameter name="type">postgis</Parameter><Parameter name="table">(SELECT way, building FROM planet_osm_polygon WHERE building IS NOT NULL AND building != 'no') AS buildings</Parameter></Datasource>
  </Layer>
</Map>"#;

/// The carto-like style over the town imported with `--hstore`: a new
/// building with a tag kept in the hstore (`roof:colour`) is drawn by no land
/// cover rule (its `feature` is NULL), so it expires z14 on, where
/// buildings are drawn, once the applier hashes the style's hstore keys;
/// without them `tags->'golf'` may be a tee, drawn from z13. A golf tee
/// expires z13 on, a forest z10 on.
#[test]
fn a_carto_like_style_draws_a_building_only_where_buildings_are() {
    use tilepipe::apply::append::{Applier, RowChange};
    use tilepipe::apply::settings::ImportSettings;
    use tilepipe::apply::style::HstoreMode;
    use tilepipe::expire::batch::{tiles_for_batch, ExpireConfig};
    use tilepipe::osm::{ChangeSet, Location, Node};

    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let osm = dir.path().join("town.osm");
    town.write_osm_file(&osm).unwrap();
    let url = PgCluster::shared()
        .create_database("expire_style_aware_carto_like")
        .unwrap();
    let db = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    let mut settings = ImportSettings::default();
    settings.transform.hstore = HstoreMode::Match;
    tilepipe::apply::import::import(&db, &osm, &settings, 1).unwrap();
    let mut client = tilepipe::db::connect(&db).unwrap();
    let settings = ImportSettings::load(&mut client, "public")
        .unwrap()
        .unwrap();
    let reads =
        [tilepipe::render::style_reads::analyse_style(STYLE, CARTO_LIKE, 256, 1.0).unwrap()];
    assert_eq!(
        reads[0].hstore_keys().into_iter().collect::<Vec<_>>(),
        ["golf"]
    );
    let mut hashing = Applier::for_settings(&settings)
        .unwrap()
        .with_digest_keys(reads[0].hstore_keys());
    let raster = ExpireConfig::default().raster();

    let [max_node, max_way, _] = town.max_ids();
    let (lon, lat) = first_location(&town);
    // Three squares side by side, each its own way.
    let mut changes = Vec::new();
    let mut square = |n: i64, tags: Vec<(String, String)>| {
        let first = max_node + 1 + 4 * n;
        let x = lon + 0.003 * n as f64;
        for (i, (dx, dy)) in [(0.0, 0.0), (0.002, 0.0), (0.002, 0.002), (0.0, 0.002)]
            .iter()
            .enumerate()
        {
            changes.push(Change {
                action: Action::Create,
                object: Object::Node(Node {
                    id: first + i as i64,
                    meta: meta(1),
                    location: Some(Location {
                        lon: x + dx,
                        lat: lat + dy,
                    }),
                    tags: Vec::new(),
                }),
            });
        }
        changes.push(Change {
            action: Action::Create,
            object: Object::Way(Way {
                id: max_way + 1 + n,
                meta: meta(1),
                nodes: (0..4).chain([0]).map(|i| first + i).collect(),
                tags,
            }),
        });
    };
    let tags = |t: &[(&str, &str)]| {
        t.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    square(0, tags(&[("building", "yes"), ("roof:colour", "red")]));
    square(1, tags(&[("leisure", "golf_course"), ("golf", "tee")]));
    square(2, tags(&[("landuse", "forest"), ("roof:colour", "red")]));
    let set: ChangeSet = changes.into_iter().collect();
    // Without the key's hash, the building may be a golf tee.
    let mut plain = Applier::for_settings(&settings).unwrap();
    let mut tx = client.transaction().unwrap();
    let unhashed = plain.apply(&mut tx, &set).unwrap().row_changes;
    tx.rollback().unwrap();
    let mut tx = client.transaction().unwrap();
    let created = hashing.apply(&mut tx, &set).unwrap().row_changes;
    tx.commit().unwrap();
    let zooms_of = |rows: &[RowChange], way: i64| -> Vec<u8> {
        let rows: Vec<RowChange> = rows
            .iter()
            .filter(|r| r.table == "planet_osm_polygon" && r.osm_id == max_way + 1 + way)
            .cloned()
            .collect();
        assert_eq!(rows.len(), 1, "way {way}: {rows:?}");
        let batch = tiles_for_batch(&rows, &raster, false, &reads).unwrap();
        (10..=18u8)
            .filter(|&z| !batch.metatiles(STYLE, z).is_empty())
            .collect()
    };
    let building = created
        .iter()
        .find(|r| r.table == "planet_osm_polygon" && r.osm_id == max_way + 1)
        .unwrap();
    let digests = building.column_digests.as_ref().unwrap();
    assert!(
        digests.columns.contains(&"tags->golf".to_string()),
        "{digests:?}"
    );
    assert_eq!(
        zooms_of(&created, 0),
        (14..=18).collect::<Vec<_>>(),
        "building"
    );
    assert_eq!(
        zooms_of(&created, 1),
        (13..=18).collect::<Vec<_>>(),
        "golf tee"
    );
    assert_eq!(
        zooms_of(&created, 2),
        (10..=18).collect::<Vec<_>>(),
        "forest"
    );

    assert_eq!(
        zooms_of(&unhashed, 0),
        (13..=18).collect::<Vec<_>>(),
        "building, no key hash"
    );

    // A change of a tag no layer reads, kept in the hstore: the keys the
    // layers read kept their hashes, so nothing is expired.
    let Some(Change {
        object: Object::Way(way),
        ..
    }) = set.get(ObjectId {
        kind: ObjectType::Way,
        id: max_way + 1,
    })
    else {
        panic!("no building in {set:?}");
    };
    let recoloured = ChangeSet::from_iter([modified(way, "roof:colour", "grey")]);
    let mut tx = client.transaction().unwrap();
    let rows = hashing.apply(&mut tx, &recoloured).unwrap().row_changes;
    tx.commit().unwrap();
    let changed = rows
        .iter()
        .find(|r| r.table == "planet_osm_polygon")
        .unwrap();
    assert_eq!(
        changed.changed_columns.as_deref(),
        Some(&["tags".to_string()][..])
    );
    assert_eq!(zooms_of(&rows, 0), Vec::<u8>::new(), "roof colour change");
}
