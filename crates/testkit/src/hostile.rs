//! Hostile diffs: random, legal-but-nasty OsmChange content for robustness
//! tests of the apply path.
//!
//! [`FeedGenerator`](crate::FeedGenerator) edits data the way careful
//! mappers do. Real feeds also carry what careless editors and broken
//! extracts produce, and the daemon must neither panic nor diverge on it:
//! nodes moved by kilometres or to the edge of the world, deletes of
//! objects the database never had, ways with zero, one or repeated nodes,
//! ways and multipolygons whose members are missing, rings that do not
//! close or cross themselves, relations that contain themselves, and tag
//! values a style trips over (`layer=abc`, empty values, long and
//! non-ASCII text).
//!
//! Every diff is also applied to an in-memory [`OsmData`], so a test can
//! import the result from scratch and compare. Objects that other objects
//! still reference are never deleted (a real feed does not do that either;
//! osm2pgsql would keep the referencing way's old geometry, as tilepipe
//! does, and a fresh import of the result could not reproduce it).

use crate::feedgen::OsmData;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashSet};
use tilepipe::osm::{Action, Change, ChangeSet};
use tilepipe::osm::{Location, Member, Meta, Node, Object, ObjectId, ObjectType, Relation, Way};

/// Tag keys and values the classic style and Lua transforms act on, with
/// values chosen to stress value parsing.
const TAGS: &[(&str, &[&str])] = &[
    ("highway", &["residential", "primary", "footway", "", "motorway"]),
    ("building", &["yes", "house", "no", ""]),
    ("landuse", &["forest", "residential", "grass"]),
    ("natural", &["water", "wood", "coastline"]),
    ("area", &["yes", "no", "maybe"]),
    ("layer", &["1", "-5", "abc", "99999999999999999999", "1;2"]),
    ("name", &["", "Å", "x", "名前", "a very long name that goes on and on and on and on and on and on and on and on and on and on and on and on"]),
    ("oneway", &["yes", "-1", "reversible", "true"]),
    ("boundary", &["administrative"]),
    ("admin_level", &["8", "two", "-1"]),
    ("waterway", &["river", "riverbank"]),
    ("amenity", &["cafe", "parking"]),
    ("width", &["3", "3 m", "wide", "1e400"]),
    ("z_order", &["1000000"]),
    ("tunnel", &["yes", "building_passage"]),
    ("bridge", &["yes"]),
    ("railway", &["rail", "platform"]),
    ("route", &["bus", "road"]),
];

const RELATION_TYPES: &[&str] = &["multipolygon", "boundary", "route", "site", ""];

/// Generates hostile diffs over a data set, keeping the data in step.
pub struct HostileDiffs {
    data: OsmData,
    rng: ChaCha8Rng,
    next_ids: [i64; 3],
    version: u32,
    /// Where the data lies (its first node), for nodes to come back to.
    home: Location,
}

impl HostileDiffs {
    /// Diffs over `data` (which they change in step); the same seed gives
    /// the same diffs. New objects get ids above `data`'s largest.
    pub fn new(data: OsmData, seed: u64) -> Self {
        let [n, w, r] = data.max_ids();
        let home = data
            .nodes
            .values()
            .find_map(|n| n.location)
            .unwrap_or(Location { lon: 0.0, lat: 0.0 });
        HostileDiffs {
            home,
            data,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_ids: [n + 1, w + 1, r + 1],
            version: 1000,
        }
    }

    /// The data every diff so far leads to.
    pub fn data(&self) -> &OsmData {
        &self.data
    }

    /// The next diff, `changes` edits long (several edits of one object
    /// merge into its newest version, as a batch does).
    pub fn next_diff(&mut self, changes: usize) -> ChangeSet {
        let mut set = ChangeSet::new();
        for _ in 0..changes {
            if let Some(change) = self.next_change() {
                self.data.apply(&change);
                set.push(change);
            }
        }
        set
    }

    fn next_change(&mut self) -> Option<Change> {
        match self.rng.random_range(0..100) {
            0..=24 => self.move_node(),
            25..=32 => Some(self.delete_missing()),
            33..=44 => Some(self.create_way()),
            45..=54 => self.modify_way(),
            55..=64 => Some(self.create_relation()),
            65..=72 => self.modify_relation(),
            73..=82 => self.retag_any(),
            83..=90 => Some(self.create_node()),
            _ => self.delete_unreferenced(),
        }
    }

    fn meta(&mut self) -> Meta {
        self.version += 1;
        Meta {
            version: Some(self.version),
            ..Meta::default()
        }
    }

    fn new_id(&mut self, kind: ObjectType) -> i64 {
        let slot = &mut self.next_ids[kind as usize];
        let id = *slot;
        *slot += 1;
        id
    }

    /// A location on the 1e-7 degree grid the middle stores: nearby
    /// (mostly), now and then far away or at the edge of the valid range.
    /// A node already far from home is usually brought back: osm2pgsql
    /// splits a line every 100 km, so ways through a node left at the
    /// other end of the world would grow to hundreds of rows each and the
    /// test would measure only that.
    fn location_near(&mut self, base: Option<Location>) -> Location {
        let grid = |v: f64| (v * 1e7).round() / 1e7;
        let far_from_home = |b: Location, home: Location| {
            (b.lon - home.lon).abs() > 0.5 || (b.lat - home.lat).abs() > 0.5
        };
        let home = self.home;
        let (lon, lat) = match (self.rng.random_range(0..100), base) {
            (0, _) => (
                *[-180.0, 180.0, 0.0].choose(&mut self.rng).unwrap(),
                *[-90.0, 90.0, 85.06, -85.06, 0.0]
                    .choose(&mut self.rng)
                    .unwrap(),
            ),
            (1, _) => (
                self.rng.random_range(-180.0..180.0),
                self.rng.random_range(-89.0..89.0),
            ),
            (2..=9, Some(b)) => (b.lon, b.lat), // a "move" to the same place
            (_, Some(b)) if far_from_home(b, home) && self.rng.random_bool(0.8) => {
                (home.lon, home.lat)
            }
            (_, base) => {
                let b = base.unwrap_or(home);
                (
                    (b.lon + self.rng.random_range(-0.01..0.01)).clamp(-180.0, 180.0),
                    (b.lat + self.rng.random_range(-0.01..0.01)).clamp(-90.0, 90.0),
                )
            }
        };
        Location {
            lon: grid(lon),
            lat: grid(lat),
        }
    }

    fn random_tags(&mut self, max: usize) -> Vec<(String, String)> {
        let count = self.rng.random_range(0..=max);
        let mut tags: Vec<(String, String)> = Vec::new();
        for _ in 0..count {
            let (key, values) = TAGS.choose(&mut self.rng).unwrap();
            let value = values.choose(&mut self.rng).unwrap();
            if !tags.iter().any(|(k, _)| k == key) {
                tags.push((key.to_string(), value.to_string()));
            }
        }
        tags
    }

    fn move_node(&mut self) -> Option<Change> {
        let id = pick(&mut self.rng, &self.data.nodes)?;
        let mut node = self.data.nodes[&id].clone();
        node.location = Some(self.location_near(node.location));
        node.meta = self.meta();
        Some(modify(Object::Node(node)))
    }

    fn create_node(&mut self) -> Change {
        let base =
            pick(&mut self.rng, &self.data.nodes).and_then(|id| self.data.nodes[&id].location);
        let node = Node {
            id: self.new_id(ObjectType::Node),
            meta: self.meta(),
            location: Some(self.location_near(base)),
            tags: self.random_tags(3),
        };
        Change {
            action: Action::Create,
            object: Object::Node(node),
        }
    }

    /// Deletes an id the data does not have (never had, or already gone).
    fn delete_missing(&mut self) -> Change {
        let kind = *[ObjectType::Node, ObjectType::Way, ObjectType::Relation]
            .choose(&mut self.rng)
            .unwrap();
        let id = self.next_ids[kind as usize] + self.rng.random_range(1_000_000..2_000_000);
        let meta = self.meta();
        let object = match kind {
            ObjectType::Node => Object::Node(Node {
                id,
                meta,
                location: None,
                tags: vec![],
            }),
            ObjectType::Way => Object::Way(Way {
                id,
                meta,
                nodes: vec![],
                tags: vec![],
            }),
            ObjectType::Relation => Object::Relation(Relation {
                id,
                meta,
                members: vec![],
                tags: vec![],
            }),
        };
        Change {
            action: Action::Delete,
            object,
        }
    }

    /// Node lists that break geometry building: empty, one node, the same
    /// node repeated, unclosed or bow-tie rings, missing nodes.
    fn nasty_node_list(&mut self) -> Vec<i64> {
        let pick = |this: &mut Self| pick(&mut this.rng, &this.data.nodes).unwrap_or(1);
        match self.rng.random_range(0..9) {
            0 => vec![],
            1 => vec![pick(self)],
            2 => {
                let a = pick(self);
                vec![a, a, a]
            }
            3 => {
                let (a, b) = (pick(self), pick(self));
                vec![a, b, a]
            }
            4 => {
                // A bow tie: closed, crossing itself.
                let ids: Vec<i64> = (0..4).map(|_| pick(self)).collect();
                vec![ids[0], ids[2], ids[1], ids[3], ids[0]]
            }
            5 => {
                // Refers to nodes that do not exist.
                let missing = self.next_ids[0] + 5_000_000;
                vec![missing, pick(self), missing + 1]
            }
            6 => {
                let n = self.rng.random_range(3..12);
                let mut ids: Vec<i64> = (0..n).map(|_| pick(self)).collect();
                ids.push(ids[0]);
                ids
            }
            _ => {
                let n = self.rng.random_range(2..8);
                (0..n).map(|_| pick(self)).collect()
            }
        }
    }

    fn create_way(&mut self) -> Change {
        let way = Way {
            id: self.new_id(ObjectType::Way),
            meta: self.meta(),
            nodes: self.nasty_node_list(),
            tags: self.random_tags(4),
        };
        Change {
            action: Action::Create,
            object: Object::Way(way),
        }
    }

    fn modify_way(&mut self) -> Option<Change> {
        let id = pick(&mut self.rng, &self.data.ways)?;
        let mut way = self.data.ways[&id].clone();
        match self.rng.random_range(0..3) {
            0 => way.nodes = self.nasty_node_list(),
            1 => way.nodes.reverse(),
            _ => {
                if !way.nodes.is_empty() {
                    let i = self.rng.random_range(0..way.nodes.len());
                    way.nodes.remove(i);
                }
            }
        }
        way.meta = self.meta();
        Some(modify(Object::Way(way)))
    }

    fn nasty_members(&mut self, self_id: i64) -> Vec<Member> {
        let count = self.rng.random_range(0..8);
        let roles = ["outer", "inner", "", "outer", "stop", "weird"];
        (0..count)
            .filter_map(|_| {
                let role = roles.choose(&mut self.rng).unwrap().to_string();
                let (kind, id) = match self.rng.random_range(0..10) {
                    0 => (ObjectType::Node, pick(&mut self.rng, &self.data.nodes)?),
                    1 => (
                        ObjectType::Relation,
                        pick(&mut self.rng, &self.data.relations)?,
                    ),
                    2 => (ObjectType::Relation, self_id),
                    3 => (ObjectType::Way, self.next_ids[1] + 7_000_000),
                    _ => (ObjectType::Way, pick(&mut self.rng, &self.data.ways)?),
                };
                Some(Member { kind, id, role })
            })
            .collect()
    }

    fn create_relation(&mut self) -> Change {
        let id = self.new_id(ObjectType::Relation);
        let mut tags = self.random_tags(3);
        let kind = RELATION_TYPES.choose(&mut self.rng).unwrap();
        if !kind.is_empty() {
            tags.push(("type".into(), kind.to_string()));
        }
        let relation = Relation {
            id,
            meta: self.meta(),
            members: self.nasty_members(id),
            tags,
        };
        Change {
            action: Action::Create,
            object: Object::Relation(relation),
        }
    }

    fn modify_relation(&mut self) -> Option<Change> {
        let id = pick(&mut self.rng, &self.data.relations)?;
        let mut relation = self.data.relations[&id].clone();
        if self.rng.random_bool(0.5) {
            relation.members = self.nasty_members(id);
        } else {
            relation.members.reverse();
        }
        relation.meta = self.meta();
        Some(modify(Object::Relation(relation)))
    }

    fn retag_any(&mut self) -> Option<Change> {
        let mut object = match self.rng.random_range(0..3) {
            0 => Object::Node(self.data.nodes[&pick(&mut self.rng, &self.data.nodes)?].clone()),
            1 => Object::Way(self.data.ways[&pick(&mut self.rng, &self.data.ways)?].clone()),
            _ => Object::Relation(
                self.data.relations[&pick(&mut self.rng, &self.data.relations)?].clone(),
            ),
        };
        let tags = self.random_tags(5);
        let meta = self.meta();
        match &mut object {
            Object::Node(n) => (n.tags, n.meta) = (tags, meta),
            Object::Way(w) => (w.tags, w.meta) = (tags, meta),
            Object::Relation(r) => {
                let kind = RELATION_TYPES.choose(&mut self.rng).unwrap();
                r.tags = tags;
                if !kind.is_empty() {
                    r.tags.push(("type".into(), kind.to_string()));
                }
                r.meta = meta;
            }
        }
        Some(modify(object))
    }

    /// Deletes an object nothing references (so a fresh import of the
    /// result is a fair comparison; see the module doc).
    fn delete_unreferenced(&mut self) -> Option<Change> {
        let referenced = self.referenced();
        let candidate = match self.rng.random_range(0..3) {
            0 => ObjectId {
                kind: ObjectType::Node,
                id: pick(&mut self.rng, &self.data.nodes)?,
            },
            1 => ObjectId {
                kind: ObjectType::Way,
                id: pick(&mut self.rng, &self.data.ways)?,
            },
            _ => ObjectId {
                kind: ObjectType::Relation,
                id: pick(&mut self.rng, &self.data.relations)?,
            },
        };
        if referenced.contains(&candidate) {
            return None;
        }
        let mut object = self.data.get(candidate)?;
        match &mut object {
            Object::Node(n) => n.meta = self.meta(),
            Object::Way(w) => w.meta = self.meta(),
            Object::Relation(r) => r.meta = self.meta(),
        }
        Some(Change {
            action: Action::Delete,
            object,
        })
    }

    fn referenced(&self) -> HashSet<ObjectId> {
        let mut out = HashSet::new();
        for way in self.data.ways.values() {
            out.extend(way.nodes.iter().map(|&id| ObjectId {
                kind: ObjectType::Node,
                id,
            }));
        }
        for relation in self.data.relations.values() {
            out.extend(relation.members.iter().map(|m| ObjectId {
                kind: m.kind,
                id: m.id,
            }));
        }
        out
    }
}

/// A random key of `map` (ids are dense enough that probing a random id
/// and taking the next one is close to uniform; BTreeMap has no rank
/// access).
fn pick<T>(rng: &mut ChaCha8Rng, map: &BTreeMap<i64, T>) -> Option<i64> {
    let low = *map.keys().next()?;
    let high = *map.keys().next_back()?;
    let probe = rng.random_range(low..=high);
    map.range(probe..).next().map(|(k, _)| *k)
}

fn modify(object: Object) -> Change {
    Change {
        action: Action::Modify,
        object,
    }
}
