//! The fixture feed generator, on a tiny hand-made data set and on the
//! Liechtenstein extract.

use crate::common::{check_feed, gunzip, parse_osc, read_state};
use chrono::{TimeZone, Utc};
use std::time::Instant;
use tilepipe::osm::{Action, Change};
use tilepipe::osm::{Location, Member, Meta, Node, Object, ObjectType, Relation, Way};
use tilepipe::replication::ReplicationState;
use tilepipe_testkit::feedgen::{
    feed_range, write_feed, write_feed_from_changes, FeedGenerator, GeneratedDiff,
    MultipolygonEditKind, OsmData,
};
use tilepipe_testkit::shared_data;

fn meta(version: u32) -> Meta {
    Meta {
        version: Some(version),
        ..Meta::default()
    }
}

fn node(id: i64, lon: f64, lat: f64, tags: &[(&str, &str)]) -> Object {
    Object::Node(Node {
        id,
        meta: meta(3),
        location: Some(Location { lon, lat }),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

fn way(id: i64, nodes: &[i64], tags: &[(&str, &str)]) -> Object {
    Object::Way(Way {
        id,
        meta: meta(2),
        nodes: nodes.to_vec(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

/// A village: a meadow multipolygon with a hole, a street, a building and
/// a few POIs.
fn tiny_village() -> OsmData {
    let mut objects = vec![
        node(1, 9.50, 47.10, &[]),
        node(2, 9.52, 47.10, &[]),
        node(3, 9.52, 47.12, &[]),
        node(4, 9.50, 47.12, &[]),
        node(5, 9.505, 47.105, &[]),
        node(6, 9.507, 47.105, &[]),
        node(7, 9.507, 47.107, &[]),
        node(8, 9.505, 47.107, &[]),
        node(
            10,
            9.53,
            47.13,
            &[("amenity", "cafe"), ("name", "Café Vaduz")],
        ),
        node(11, 9.531, 47.131, &[("shop", "bakery")]),
        node(12, 9.532, 47.132, &[("amenity", "bench")]),
        node(
            13,
            9.533,
            47.133,
            &[("tourism", "viewpoint"), ("name", "Aussicht")],
        ),
        node(20, 9.54, 47.14, &[]),
        node(21, 9.541, 47.14, &[]),
        node(22, 9.542, 47.141, &[]),
        node(30, 9.55, 47.15, &[]),
        node(31, 9.5502, 47.15, &[]),
        node(32, 9.5502, 47.1502, &[]),
        node(33, 9.55, 47.1502, &[]),
    ];
    objects.push(way(
        100,
        &[20, 21, 22],
        &[("highway", "residential"), ("name", "Hauptstrasse")],
    ));
    objects.push(way(101, &[1, 2, 3, 4, 1], &[]));
    objects.push(way(102, &[5, 6, 7, 8, 5], &[]));
    objects.push(way(103, &[30, 31, 32, 33, 30], &[("building", "yes")]));
    objects.push(Object::Relation(Relation {
        id: 200,
        meta: meta(5),
        members: vec![
            Member {
                kind: ObjectType::Way,
                id: 101,
                role: "outer".into(),
            },
            Member {
                kind: ObjectType::Way,
                id: 102,
                role: "inner".into(),
            },
        ],
        tags: vec![
            ("type".into(), "multipolygon".into()),
            ("landuse".into(), "meadow".into()),
        ],
    }));
    OsmData::from_objects(objects)
}

fn start_state() -> ReplicationState {
    ReplicationState {
        sequence: 1000,
        timestamp: Utc.with_ymd_and_hms(2013, 8, 3, 19, 0, 2).unwrap(),
    }
}

#[test]
fn tiny_data_set_feed_is_consistent() {
    let data = tiny_village();
    let start = start_state();
    let mut generator = FeedGenerator::new(data.clone(), 7, start.sequence, start.timestamp, 60)
        .with_changes_per_diff(5, 15);
    let diffs: Vec<GeneratedDiff> = (0..30).map(|_| generator.next_diff()).collect();
    let dir = tempfile::tempdir().unwrap();
    write_feed(dir.path(), start, &diffs).unwrap();
    let model = check_feed(&data, dir.path(), start, 60, &diffs);
    assert_eq!(
        &model,
        generator.data(),
        "generator's model matches the feed"
    );
    assert_eq!(feed_range(dir.path()).unwrap(), Some((1000, 1030)));

    let all = |f: &dyn Fn(&GeneratedDiff) -> usize| diffs.iter().map(f).sum::<usize>();
    assert!(all(&|d| d.summary.renamed_streets.len()) > 0);
    assert!(all(&|d| d.summary.moved_nodes.len()) > 0);
    assert!(all(&|d| d.summary.multipolygon_edits.len()) > 0);
    assert!(all(&|d| d.summary.deleted.len()) > 0);
    // The original street was renamed at least once, in the first diff.
    assert_eq!(diffs[0].summary.renamed_streets[0].0, 100);
    assert_eq!(diffs[0].summary.renamed_streets[0].1, "Hauptstrasse");
    for d in &diffs {
        assert!(
            d.changes.len() >= 5,
            "diff {} has {} changes",
            d.sequence,
            d.changes.len()
        );
    }
}

#[test]
fn many_seeds_keep_the_rules_on_tiny_data() {
    let data = tiny_village();
    let start = start_state();
    for seed in 0..40 {
        let mut generator =
            FeedGenerator::new(data.clone(), seed, start.sequence, start.timestamp, 60)
                .with_changes_per_diff(3, 30);
        let diffs: Vec<GeneratedDiff> = (0..40).map(|_| generator.next_diff()).collect();
        let dir = tempfile::tempdir().unwrap();
        write_feed(dir.path(), start, &diffs).unwrap();
        let model = check_feed(&data, dir.path(), start, 60, &diffs);
        assert_eq!(&model, generator.data(), "seed {seed}");
    }
}

#[test]
fn same_seed_same_feed() {
    let start = start_state();
    let run = |seed| {
        let mut g = FeedGenerator::new(tiny_village(), seed, start.sequence, start.timestamp, 60);
        (0..5).map(|_| g.next_diff()).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn hand_made_feed_has_exact_content() {
    let dir = tempfile::tempdir().unwrap();
    let start = start_state();
    let cafe = Change {
        action: Action::Create,
        object: node(
            500,
            9.5,
            47.1,
            &[("amenity", "cafe"), ("name", "A & B \"<Café>\"")],
        ),
    };
    let gone = Change {
        action: Action::Delete,
        object: Object::Node(Node {
            id: 500,
            meta: meta(2),
            location: None,
            tags: vec![],
        }),
    };
    let states = write_feed_from_changes(
        dir.path(),
        start,
        60,
        &[vec![cafe.clone()], vec![], vec![gone.clone()]],
    )
    .unwrap();
    assert_eq!(states.len(), 4);
    assert_eq!(states[3].sequence, 1003);
    assert_eq!(
        states[3].timestamp,
        start.timestamp + chrono::Duration::seconds(180)
    );
    let osc = |seq: &str| parse_osc(&gunzip(&std::fs::read(dir.path().join(seq)).unwrap()));
    assert_eq!(osc("000/001/001.osc.gz"), vec![cafe]);
    assert_eq!(osc("000/001/002.osc.gz"), vec![]);
    assert_eq!(osc("000/001/003.osc.gz"), vec![gone]);
    assert_eq!(read_state(&dir.path().join("state.txt")), states[3]);
    assert_eq!(read_state(&dir.path().join("000/001/000.state.txt")), start);
}

#[test]
fn liechtenstein_feed_is_consistent() {
    let Some(pbf) = shared_data("liechtenstein-2013-08-03.osm.pbf") else {
        return;
    };
    let t = Instant::now();
    let data = OsmData::from_pbf(&pbf).unwrap();
    eprintln!(
        "loaded {} nodes, {} ways, {} relations in {:?}",
        data.nodes.len(),
        data.ways.len(),
        data.relations.len(),
        t.elapsed()
    );
    assert_eq!(
        (data.nodes.len(), data.ways.len(), data.relations.len()),
        (65733, 7121, 113)
    );
    let start = ReplicationState {
        sequence: 9_999_999,
        timestamp: Utc.with_ymd_and_hms(2013, 8, 3, 19, 0, 2).unwrap(),
    };
    let t = Instant::now();
    let mut generator = FeedGenerator::new(data.clone(), 42, start.sequence, start.timestamp, 60);
    let diffs: Vec<GeneratedDiff> = (0..10).map(|_| generator.next_diff()).collect();
    let dir = tempfile::tempdir().unwrap();
    write_feed(dir.path(), start, &diffs).unwrap();
    eprintln!("generated and wrote 10 diffs in {:?}", t.elapsed());
    // The sequence crosses a directory boundary: 009/999/999 → 010/000/000.
    assert!(dir.path().join("010/000/009.osc.gz").exists());
    let model = check_feed(&data, dir.path(), start, 60, &diffs);
    assert_eq!(&model, generator.data());
    for d in &diffs {
        let s = &d.summary;
        eprintln!(
            "diff {}: {} changes, {} moved, {} tag edits, {} renamed, {} created, {} deleted, {} multipolygon edits",
            d.sequence,
            d.changes.len(),
            s.moved_nodes.len(),
            s.tag_changes.len(),
            s.renamed_streets.len(),
            s.created.len(),
            s.deleted.len(),
            s.multipolygon_edits.len()
        );
        assert!(
            (20..=90).contains(&d.changes.len()),
            "{} changes",
            d.changes.len()
        );
        assert!(!s.renamed_streets.is_empty());
        assert!(
            s.moved_nodes.iter().any(|m| !m.ways.is_empty()),
            "a way was reshaped"
        );
        assert!(!s.tag_changes.is_empty());
        assert!(!s.created.is_empty() && !s.deleted.is_empty());
        assert!(!s.multipolygon_edits.is_empty());
        assert!(d
            .changes
            .iter()
            .any(|c| c.action == Action::Delete && c.object_id().kind == ObjectType::Way));
    }
    let kinds: Vec<&MultipolygonEditKind> = diffs
        .iter()
        .flat_map(|d| d.summary.multipolygon_edits.iter().map(|e| &e.kind))
        .collect();
    assert!(kinds
        .iter()
        .any(|k| matches!(k, MultipolygonEditKind::OuterNodeMoved { .. })));
    assert!(kinds.iter().any(|k| matches!(
        k,
        MultipolygonEditKind::RoleChanged { .. }
            | MultipolygonEditKind::InnerAdded { .. }
            | MultipolygonEditKind::InnerRemoved { .. }
    )));
}
