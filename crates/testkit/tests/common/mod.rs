//! Helpers shared by the integration tests: an independent OsmChange
//! parser (so the generator is not checked with code it shares) and a
//! whole-feed consistency check.
#![allow(dead_code)]

use chrono::{DateTime, NaiveDateTime, Utc};
use flate2::read::GzDecoder;
use quick_xml::events::{BytesStart, Event};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use tilepipe::osm::{Action, Change};
use tilepipe::osm::{Location, Member, Meta, Node, Object, ObjectId, ObjectType, Relation, Way};
use tilepipe::replication::feed::sequence_path;
use tilepipe::replication::ReplicationState;
use tilepipe_testkit::feedgen::{GeneratedDiff, OsmData};

pub fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("valid gzip");
    text
}

fn attrs(e: &BytesStart<'_>) -> HashMap<String, String> {
    e.attributes()
        .map(|a| {
            let a = a.expect("well-formed attribute");
            (
                String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                a.unescape_value().expect("valid escape").into_owned(),
            )
        })
        .collect()
}

fn meta(a: &HashMap<String, String>) -> Meta {
    Meta {
        version: a.get("version").map(|v| v.parse().unwrap()),
        timestamp: a.get("timestamp").map(|t| {
            NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%SZ")
                .unwrap()
                .and_utc()
        }),
        changeset: a.get("changeset").map(|v| v.parse().unwrap()),
        uid: a.get("uid").map(|v| v.parse().unwrap()),
        user: a.get("user").cloned(),
    }
}

/// Parses an OsmChange document into changes, in file order.
pub fn parse_osc(xml: &str) -> Vec<Change> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut changes = Vec::new();
    let mut action = None;
    let mut current: Option<Object> = None;
    loop {
        let event = reader.read_event().expect("well-formed XML");
        let (e, empty) = match &event {
            Event::Start(e) => (e.clone(), false),
            Event::Empty(e) => (e.clone(), true),
            Event::End(e) => {
                match e.name().as_ref() {
                    b"create" | b"modify" | b"delete" => action = None,
                    b"node" | b"way" | b"relation" => changes.push(Change {
                        action: action.expect("object inside an action"),
                        object: current.take().expect("open object"),
                    }),
                    _ => {}
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let a = attrs(&e);
        let id = || a["id"].parse::<i64>().unwrap();
        let object = match e.name().as_ref() {
            b"create" => {
                action = Some(Action::Create);
                None
            }
            b"modify" => {
                action = Some(Action::Modify);
                None
            }
            b"delete" => {
                action = Some(Action::Delete);
                None
            }
            b"node" => Some(Object::Node(Node {
                id: id(),
                meta: meta(&a),
                location: a.get("lat").map(|lat| Location {
                    lat: lat.parse().unwrap(),
                    lon: a["lon"].parse().unwrap(),
                }),
                tags: vec![],
            })),
            b"way" => Some(Object::Way(Way {
                id: id(),
                meta: meta(&a),
                nodes: vec![],
                tags: vec![],
            })),
            b"relation" => Some(Object::Relation(Relation {
                id: id(),
                meta: meta(&a),
                members: vec![],
                tags: vec![],
            })),
            b"tag" => {
                let tag = (a["k"].clone(), a["v"].clone());
                match current.as_mut().expect("tag inside an object") {
                    Object::Node(n) => n.tags.push(tag),
                    Object::Way(w) => w.tags.push(tag),
                    Object::Relation(r) => r.tags.push(tag),
                }
                None
            }
            b"nd" => {
                match current.as_mut() {
                    Some(Object::Way(w)) => w.nodes.push(a["ref"].parse().unwrap()),
                    _ => panic!("nd outside a way"),
                }
                None
            }
            b"member" => {
                match current.as_mut() {
                    Some(Object::Relation(r)) => r.members.push(Member {
                        kind: ObjectType::from_name(&a["type"]).unwrap(),
                        id: a["ref"].parse().unwrap(),
                        role: a["role"].clone(),
                    }),
                    _ => panic!("member outside a relation"),
                }
                None
            }
            _ => None,
        };
        if let Some(object) = object {
            if empty {
                changes.push(Change {
                    action: action.expect("object inside an action"),
                    object,
                });
            } else {
                current = Some(object);
            }
        }
    }
    changes
}

pub fn read_state(path: &Path) -> ReplicationState {
    ReplicationState::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Checks a written feed against the generated diffs and the rules every
/// realistic feed keeps. Returns the data after the last diff.
pub fn check_feed(
    initial: &OsmData,
    dir: &Path,
    start: ReplicationState,
    interval_secs: i64,
    diffs: &[GeneratedDiff],
) -> OsmData {
    let [max_node, max_way, max_relation] = initial.max_ids();
    let mut model = initial.clone();
    let mut deleted: HashSet<ObjectId> = HashSet::new();
    let mut previous = start;
    assert_eq!(
        read_state(&dir.join(format!("{}.state.txt", sequence_path(start.sequence)))),
        start
    );
    for (i, diff) in diffs.iter().enumerate() {
        let expected = ReplicationState {
            sequence: start.sequence + i as u64 + 1,
            timestamp: start.timestamp + chrono::Duration::seconds(interval_secs * (i as i64 + 1)),
        };
        assert_eq!(diff.state(), expected);
        let path = dir.join(sequence_path(expected.sequence));
        assert_eq!(read_state(&path.with_extension("state.txt")), expected);
        let compressed = std::fs::read(path.with_extension("osc.gz")).unwrap();
        // The project's own parser reads it too, to the same change set.
        let parsed_by_tilepipe =
            tilepipe::osm::osc::parse_osc_gz(&compressed, "generated diff").unwrap();
        assert_eq!(
            parsed_by_tilepipe,
            diff.changes
                .iter()
                .cloned()
                .collect::<tilepipe::osm::ChangeSet>()
        );
        let xml = gunzip(&compressed);
        assert!(xml.contains("generator=\"tilepipe-testkit\""));
        let changes = parse_osc(&xml);
        assert_eq!(
            changes.len(),
            diff.changes.len(),
            "diff {} change count",
            diff.sequence
        );
        for (parsed, generated) in changes.iter().zip(&diff.changes) {
            assert_eq!(
                parsed, generated,
                "diff {} parses back to what was generated",
                diff.sequence
            );
        }

        let mut seen = HashSet::new();
        for change in &changes {
            let id = change.object_id();
            assert!(
                seen.insert(id),
                "{id} changed twice in diff {}",
                diff.sequence
            );
            assert!(!deleted.contains(&id), "{id} changed after its deletion");
            let meta = change.object.meta();
            let ts: DateTime<Utc> = meta.timestamp.expect("timestamp");
            assert!(
                ts > previous.timestamp && ts <= expected.timestamp,
                "{id} at {ts}"
            );
            assert!(meta.changeset.is_some() && meta.uid.is_some() && meta.user.is_some());
            match change.action {
                Action::Create => {
                    assert!(!model.contains(id), "{id} created twice");
                    let max = match id.kind {
                        ObjectType::Node => max_node,
                        ObjectType::Way => max_way,
                        ObjectType::Relation => max_relation,
                    };
                    assert!(id.id > max, "new {id} is above the extract's ids");
                    assert_eq!(meta.version, Some(1));
                }
                Action::Modify | Action::Delete => {
                    let old = model
                        .get(id)
                        .unwrap_or_else(|| panic!("{id} changed but absent"));
                    assert_eq!(
                        meta.version,
                        Some(old.meta().version.unwrap_or(1) + 1),
                        "{id}"
                    );
                }
            }
            if change.action == Action::Delete {
                deleted.insert(id);
            }
            model.apply(change);
        }
        // Nothing left references what this diff deleted, and everything
        // created or modified references only existing objects.
        for way in model.ways.values() {
            for node in &way.nodes {
                assert!(
                    !deleted.contains(&ObjectId {
                        kind: ObjectType::Node,
                        id: *node
                    }),
                    "way {} uses deleted node {node}",
                    way.id
                );
            }
        }
        for relation in model.relations.values() {
            for m in &relation.members {
                assert!(
                    !deleted.contains(&ObjectId {
                        kind: m.kind,
                        id: m.id
                    }),
                    "relation {} lists deleted {} {}",
                    relation.id,
                    m.kind,
                    m.id
                );
            }
        }
        for change in changes.iter().filter(|c| c.action != Action::Delete) {
            if let Object::Way(way) = &change.object {
                for node in &way.nodes {
                    assert!(
                        model.nodes.contains_key(node),
                        "way {} uses missing node {node}",
                        way.id
                    );
                }
            }
        }
        // The summary matches the data.
        let s = &diff.summary;
        for (way, _old, new) in &s.renamed_streets {
            let w = &model.ways[way];
            assert!(w.tags.iter().any(|(k, _)| k == "highway"));
            assert!(w.tags.iter().any(|(k, v)| k == "name" && v == new));
        }
        for moved in &s.moved_nodes {
            assert_ne!(moved.from, moved.to);
            assert_eq!(model.nodes[&moved.id].location, Some(moved.to));
        }
        for id in &s.created {
            assert!(changes
                .iter()
                .any(|c| c.object_id() == *id && c.action == Action::Create));
        }
        for id in &s.deleted {
            assert!(changes
                .iter()
                .any(|c| c.object_id() == *id && c.action == Action::Delete));
        }
        previous = expected;
    }
    let last = diffs.last().map(|d| d.state()).unwrap_or(start);
    assert_eq!(
        read_state(&dir.join("state.txt")),
        last,
        "top-level state is the last diff's"
    );
    // No temporary files left behind.
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                assert!(
                    !path.to_string_lossy().ends_with(".tmp"),
                    "{}",
                    path.display()
                );
            }
        }
    }
    model
}
