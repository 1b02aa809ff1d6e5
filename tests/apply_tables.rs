//! Middle and output tables on a real PostGIS: DDL, binary COPY, the
//! validity trigger, deletes that hand back old geometries, lookups.

use std::sync::Arc;
use tilepipe::apply::middle::Middle;
use tilepipe::apply::output::{OutputTables, Row, RowsQuery, TableKind};
use tilepipe::apply::style::{HstoreMode, HstoreOptions, Style};
use tilepipe::apply::transform::{ColumnValue, RowValues};
use tilepipe::osm::{Location, Member, Meta, Node, ObjectType, Relation, Way};
use tilepipe_testkit::PgCluster;

fn connect(url: &str) -> postgres::Client {
    let config = tilepipe::db::resolve(url, &tilepipe::db::ProcessEnv).unwrap();
    tilepipe::db::connect(&config).unwrap()
}

/// EWKB of a point in EPSG:3857.
fn point(x: f64, y: f64) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&(1u32 | 0x2000_0000).to_le_bytes());
    out.extend_from_slice(&3857u32.to_le_bytes());
    out.extend_from_slice(&x.to_le_bytes());
    out.extend_from_slice(&y.to_le_bytes());
    out
}

/// EWKB of a bow-tie polygon, which ST_IsValid rejects.
fn bow_tie() -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&(3u32 | 0x2000_0000).to_le_bytes());
    out.extend_from_slice(&3857u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&5u32.to_le_bytes());
    for (x, y) in [(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)] {
        out.extend_from_slice(&f64::to_le_bytes(x));
        out.extend_from_slice(&f64::to_le_bytes(y));
    }
    out
}

fn style() -> Arc<Style> {
    let style = Style::parse(
        "node,way name text linear\nnode,way z_order int4 linear\nway way_area real linear\n",
        "test.style",
    )
    .unwrap()
    .with_hstore(HstoreOptions {
        mode: HstoreMode::Match,
        ..HstoreOptions::default()
    })
    .unwrap();
    Arc::new(style)
}

fn values(columns: Vec<ColumnValue>, tags: Option<Vec<(String, String)>>) -> RowValues {
    RowValues {
        columns: columns.into(),
        hstore_columns: vec![],
        tags,
    }
}

#[test]
fn output_tables_load_validate_and_delete() {
    let url = PgCluster::shared().create_database("tables").unwrap();
    let mut client = connect(&url);
    let tables = OutputTables::new("public", "planet_osm", style());
    tables.create(&mut client).unwrap();

    let mut writer = tables.copy_writer(&mut client, TableKind::Point).unwrap();
    for id in 1..=3 {
        writer
            .write(&Row {
                osm_id: id,
                values: values(
                    vec![
                        ColumnValue::Text(format!("p{id}")),
                        ColumnValue::Int4(id as i32),
                    ],
                    Some(vec![
                        ("shop".into(), "bakery".into()),
                        ("a b".into(), "\"q\"".into()),
                    ]),
                ),
                way: point(id as f64 * 10.0, 5.0),
            })
            .unwrap();
    }
    assert_eq!(writer.finish().unwrap(), 3);
    let mut writer = tables.copy_writer(&mut client, TableKind::Polygon).unwrap();
    writer
        .write(&Row {
            osm_id: -7,
            values: values(
                vec![ColumnValue::Null, ColumnValue::Null, ColumnValue::Real(1.5)],
                None,
            ),
            way: bow_tie(),
        })
        .unwrap();
    writer.finish().unwrap();
    for kind in TableKind::ALL {
        tables.finish_import(&mut client, kind).unwrap();
    }
    let counts = tables.counts(&mut client).unwrap();
    assert_eq!(
        counts,
        vec![
            (TableKind::Point, 3),
            (TableKind::Line, 0),
            (TableKind::Polygon, 0), // the invalid polygon was dropped
            (TableKind::Roads, 0)
        ]
    );
    let row = client
        .query_one(
            "SELECT name, z_order, tags -> 'a b', ST_AsText(way), ST_SRID(way) FROM planet_osm_point WHERE osm_id = 2",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "p2");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, String>(2), "\"q\"");
    assert_eq!(row.get::<_, String>(3), "POINT(20 5)");
    assert_eq!(row.get::<_, i32>(4), 3857);

    // Appends go through the trigger too.
    let mut tx = client.transaction().unwrap();
    let mut writer = tables.copy_writer(&mut tx, TableKind::Polygon).unwrap();
    writer
        .write(&Row {
            osm_id: 8,
            values: values(
                vec![ColumnValue::Null, ColumnValue::Null, ColumnValue::Null],
                Some(vec![]),
            ),
            way: bow_tie(),
        })
        .unwrap();
    writer.finish().unwrap();
    // Deleting hands back old geometries and a digest of the columns.
    let removed = tables
        .rows(&mut tx, TableKind::Point, &[2, 3, 99], RowsQuery::Delete)
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(
        removed.iter().find(|r| r.osm_id == 2).unwrap().way,
        point(20.0, 5.0)
    );
    assert_ne!(removed[0].columns_digest, removed[1].columns_digest);
    assert_eq!(
        tables.counts(&mut client).unwrap()[..3],
        [
            (TableKind::Point, 1),
            (TableKind::Line, 0),
            (TableKind::Polygon, 0)
        ]
    );
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'planet_osm_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(indexes, 8);
}

#[test]
fn middle_stores_and_finds_parents() {
    let url = PgCluster::shared().create_database("middle").unwrap();
    let mut client = connect(&url);
    let middle = Middle::new("public", "planet_osm");
    middle.create(&mut client).unwrap();
    let node = |id: i64| Node {
        id,
        meta: Meta::default(),
        location: Some(Location {
            lon: 9.5 + id as f64 * 1e-4,
            lat: 47.1,
        }),
        tags: if id == 1 {
            vec![("amenity".into(), "cafe".into())]
        } else {
            vec![]
        },
    };
    let nodes: Vec<Node> = (1..=5).map(node).collect();
    middle.copy_nodes(&mut client, &nodes).unwrap();
    let ways = vec![
        Way {
            id: 10,
            meta: Meta::default(),
            nodes: vec![1, 2, 3],
            tags: vec![("highway".into(), "path".into())],
        },
        Way {
            id: 11,
            meta: Meta::default(),
            nodes: vec![3, 4],
            tags: vec![],
        },
    ];
    middle.copy_ways(&mut client, &ways).unwrap();
    let relations = vec![Relation {
        id: 20,
        meta: Meta::default(),
        members: vec![
            Member {
                kind: ObjectType::Way,
                id: 11,
                role: "outer".into(),
            },
            Member {
                kind: ObjectType::Node,
                id: 5,
                role: "label".into(),
            },
        ],
        tags: vec![("type".into(), "multipolygon".into())],
    }];
    middle.copy_relations(&mut client, &relations).unwrap();
    middle.index_nodes(&mut client).unwrap();
    middle.index_ways(&mut client).unwrap();
    middle.index_relations(&mut client).unwrap();

    let locations = middle.node_locations(&mut client, &[1, 4, 99]).unwrap();
    assert_eq!(locations.len(), 2);
    assert_eq!(
        locations[&4].to_fixed(),
        node(4).location.unwrap().to_fixed()
    );
    assert_eq!(
        middle.ways_using_nodes(&mut client, &[3]).unwrap(),
        vec![10, 11]
    );
    assert_eq!(
        middle.ways_using_nodes(&mut client, &[1]).unwrap(),
        vec![10]
    );
    assert_eq!(
        middle.relations_using(&mut client, &[], &[11]).unwrap(),
        vec![20]
    );
    assert_eq!(
        middle.relations_using(&mut client, &[5], &[]).unwrap(),
        vec![20]
    );
    assert!(middle
        .relations_using(&mut client, &[1], &[10])
        .unwrap()
        .is_empty());
    let read = middle.ways(&mut client, &[10]).unwrap();
    assert_eq!(read[0].nodes, vec![1, 2, 3]);
    assert_eq!(read[0].tags, ways[0].tags);
    let read = middle.relations(&mut client, &[20]).unwrap();
    assert_eq!(read[0].members, relations[0].members);
    assert_eq!(
        middle
            .delete(&mut client, ObjectType::Way, &[10, 99])
            .unwrap(),
        1
    );
    assert_eq!(
        middle.ways_using_nodes(&mut client, &[1]).unwrap(),
        Vec::<i64>::new()
    );
}
