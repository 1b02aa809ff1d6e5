//! Minutely diffs for a region made of a real planet diff's edits.
//!
//! The generator of [`crate::feedgen`] makes only edits a style draws
//! (moves, renames, POIs, multipolygon members). A real minutely diff is
//! different: most of it is whatever mappers and imports did in that
//! minute, anywhere on the planet. [`RelocatedDiffs`] keeps that mix. It
//! splits a planet diff (the shared `000466354.osc.gz`, whose ids exist in
//! no extract) into edits, shuffles them, and replays a few per minute on
//! a region:
//! - **created objects** (a way with its nodes, a tagged node, a relation
//!   with its member ways) keep their shape and real tags and are moved
//!   as one piece onto a random existing node of the region (where
//!   mappers map). A created way whose nodes the diff does not hold (they
//!   were created in an earlier minute) borrows the shape of a created
//!   way of the same kind that has one;
//! - **modified objects** become the same kind of edit on an existing
//!   region object of the same kind (`building`, `highway=residential`, …;
//!   else the same key, else any tagged object of the type). A way whose
//!   nodes the diff creates or modifies had its geometry edited: the
//!   region way gets a new node a few metres off one of its segments. A
//!   node or a way edited otherwise had its tags edited: one of the diff
//!   object's own tags is set on the region object; when the region
//!   object has them all already, the edit is a move of a few metres.
//!   An untagged node is a way node moved: a node of a region way moves
//!   by a few metres. A relation gets a new version with one of the diff
//!   relation's tags;
//! - **deleted** nodes are way nodes removed from a region way; a deleted
//!   way removes a region way that no relation uses, with its own nodes.
//!
//! Later diffs build on earlier ones, as [`crate::FeedGenerator`]'s do.

use crate::feedgen::{DiffSummary, GeneratedDiff, OsmData};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use tilepipe::osm::{
    Action, Change, ChangeSet, Location, Member, Meta, Node, Object, ObjectId, ObjectType,
    Relation, Tags, Way,
};

/// Keys that say what an object is, most telling first (the keys
/// openstreetmap-carto's layers select on).
const KIND_KEYS: &[&str] = &[
    "building", "highway", "railway", "waterway", "landuse", "natural", "leisure", "amenity",
    "shop", "tourism", "power", "man_made", "barrier", "boundary", "place", "type",
];

/// Keys whose value is part of the kind (`highway=residential`); for the
/// others any value is the same kind (`building=*`).
const KIND_WITH_VALUE: &[&str] = &["highway", "railway", "waterway", "landuse", "natural"];

/// Metres a geometry edit moves a node by, at most.
const NUDGE_METRES: f64 = 8.0;
const METRES_PER_DEGREE: f64 = 111_320.0;

/// What an object is: its most telling key, with the value for some.
fn kind(tags: &Tags) -> Kind {
    KIND_KEYS.iter().find_map(|&key| {
        let value = tags.iter().find(|(k, _)| k == key).map(|(_, v)| v)?;
        Some((
            key.to_string(),
            KIND_WITH_VALUE.contains(&key).then(|| value.clone()),
        ))
    })
}

/// What an object is ([`kind`]): a key, with its value for some keys.
type Kind = Option<(String, Option<String>)>;

/// A created way's node locations, in order, and its kind.
type Shape = (Kind, Vec<Location>);

/// One edit of the planet diff, independent of where it happened.
#[derive(Debug, Clone)]
enum Edit {
    /// New objects with every node location: moved as one piece.
    Create(Vec<Object>),
    /// A new way whose nodes the diff lacks: its tags on a borrowed shape.
    CreateShapeless(Way),
    /// A new version of an existing object: `geometry` when its nodes
    /// changed in the diff.
    Modify {
        kind: ObjectType,
        tags: Tags,
        geometry: bool,
    },
    /// An object deleted.
    Delete(ObjectType),
}

/// Replays a planet diff's edits on a region. See the module documentation.
pub struct RelocatedDiffs {
    data: OsmData,
    rng: ChaCha8Rng,
    edits: Vec<Edit>,
    /// Shapes of created ways (node locations in order), by kind.
    shapes: Vec<Shape>,
    next_edit: usize,
    edits_per_diff: (usize, usize),
    sequence: u64,
    timestamp: DateTime<Utc>,
    interval_secs: i64,
    next_ids: [i64; 3],
    /// Way uses per node.
    node_uses: HashMap<i64, usize>,
    /// Ways some relation lists.
    member_ways: HashSet<i64>,
    /// Where created pieces land: nodes of the region at the start.
    anchors: Vec<Location>,
}

impl RelocatedDiffs {
    /// Edits of `planet` replayed on `region`, deterministic for `seed`;
    /// the first diff is `start_sequence + 1`, stamped `start_time +
    /// interval_secs`.
    pub fn new(
        region: OsmData,
        planet: &ChangeSet,
        seed: u64,
        start_sequence: u64,
        start_time: DateTime<Utc>,
        interval_secs: u64,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut edits, shapes) = split_edits(planet);
        edits.shuffle(&mut rng);
        let mut node_uses = HashMap::new();
        for way in region.ways.values() {
            for &n in &way.nodes {
                *node_uses.entry(n).or_insert(0) += 1;
            }
        }
        let member_ways = region
            .relations
            .values()
            .flat_map(|r| &r.members)
            .filter(|m| m.kind == ObjectType::Way)
            .map(|m| m.id)
            .collect();
        let anchors = region.nodes.values().filter_map(|n| n.location).collect();
        let [n, w, r] = region.max_ids();
        let planet_max = |kind: ObjectType| {
            planet
                .iter()
                .filter(|c| c.object_id().kind == kind)
                .map(|c| c.object_id().id)
                .max()
                .unwrap_or(0)
        };
        RelocatedDiffs {
            next_ids: [
                n.max(planet_max(ObjectType::Node)) + 1,
                w.max(planet_max(ObjectType::Way)) + 1,
                r.max(planet_max(ObjectType::Relation)) + 1,
            ],
            data: region,
            rng,
            edits,
            shapes,
            next_edit: 0,
            edits_per_diff: (1, 5),
            sequence: start_sequence,
            timestamp: start_time,
            interval_secs: interval_secs.max(1) as i64,
            node_uses,
            member_ways,
            anchors,
        }
    }

    /// How many of the planet diff's edits each diff replays, drawn
    /// uniformly from `min..=max` (default 1..=5).
    pub fn with_edits_per_diff(mut self, min: usize, max: usize) -> Self {
        self.edits_per_diff = (min.max(1), max.max(min.max(1)));
        self
    }

    /// How many edits the planet diff gave (before any is replayed).
    pub fn edit_count(&self) -> usize {
        self.edits.len()
    }

    /// The next diff, applied to the in-memory region. Edits start over
    /// when all have been replayed.
    pub fn next_diff(&mut self) -> GeneratedDiff {
        self.sequence += 1;
        let start = self.timestamp;
        self.timestamp += TimeDelta::seconds(self.interval_secs);
        let (min, max) = self.edits_per_diff;
        let target = self.rng.random_range(min..=max);
        let mut changes: BTreeMap<ObjectId, Change> = BTreeMap::new();
        let mut done = 0;
        let mut attempts = 0;
        while done < target && attempts < 50 && !self.edits.is_empty() {
            attempts += 1;
            let edit = self.edits[self.next_edit % self.edits.len()].clone();
            self.next_edit += 1;
            let meta = Meta {
                version: None,
                timestamp: Some(start + TimeDelta::seconds(1 + done as i64)),
                changeset: Some(9_000_000 + self.sequence as i64),
                uid: Some(4242),
                user: Some("relocated".into()),
            };
            let made = self.replay(&edit, &meta);
            if made.is_empty() {
                continue;
            }
            done += 1;
            for change in made {
                self.data.apply(&change);
                // A second edit of one object in the minute: the newest
                // version wins, a create stays a create.
                let id = change.object_id();
                let action = match changes.get(&id).map(|c| c.action) {
                    Some(Action::Create) if change.action == Action::Modify => Action::Create,
                    _ => change.action,
                };
                changes.insert(
                    id,
                    Change {
                        action,
                        object: change.object,
                    },
                );
            }
        }
        GeneratedDiff {
            sequence: self.sequence,
            timestamp: self.timestamp,
            changes: changes.into_values().collect(),
            summary: DiffSummary::default(),
        }
    }

    fn take_id(&mut self, kind: ObjectType) -> i64 {
        let id = self.next_ids[kind as usize];
        self.next_ids[kind as usize] += 1;
        id
    }

    fn replay(&mut self, edit: &Edit, meta: &Meta) -> Vec<Change> {
        match edit {
            Edit::Create(objects) => self.create(objects, meta),
            Edit::CreateShapeless(way) => {
                let wanted = kind(&way.tags);
                let same: Vec<&Vec<Location>> = self
                    .shapes
                    .iter()
                    .filter(|(k, _)| *k == wanted)
                    .map(|(_, s)| s)
                    .collect();
                let pool: Vec<&Vec<Location>> = if same.is_empty() {
                    self.shapes.iter().map(|(_, s)| s).collect()
                } else {
                    same
                };
                let Some(shape) = pool.choose(&mut self.rng).map(|s| (*s).clone()) else {
                    return Vec::new();
                };
                let closed = way.nodes.first() == way.nodes.last() && way.nodes.len() > 2;
                let mut objects = Vec::new();
                let mut refs = Vec::new();
                // Node ids here are placeholders: create() renumbers.
                for (i, location) in shape.iter().enumerate() {
                    if closed && i + 1 == shape.len() && shape.first() == shape.last() {
                        refs.push(refs[0]);
                        break;
                    }
                    let id = -(i as i64) - 1;
                    refs.push(id);
                    objects.push(Object::Node(Node {
                        id,
                        meta: Meta::default(),
                        location: Some(*location),
                        tags: Vec::new(),
                    }));
                }
                objects.push(Object::Way(Way {
                    nodes: refs,
                    ..way.clone()
                }));
                self.create(&objects, meta)
            }
            Edit::Modify {
                kind: ObjectType::Node,
                tags,
                ..
            } if tags.is_empty() => self.move_way_node(meta),
            Edit::Modify {
                kind: ObjectType::Node,
                tags,
                ..
            } => self.edit_node(tags, meta),
            Edit::Modify {
                kind: ObjectType::Way,
                tags,
                geometry,
            } => self.edit_way(tags, *geometry, meta),
            Edit::Modify {
                kind: ObjectType::Relation,
                tags,
                ..
            } => self.edit_relation(tags, meta),
            Edit::Delete(ObjectType::Node) => self.delete_way_node(meta),
            Edit::Delete(ObjectType::Way) => self.delete_way(meta),
            Edit::Delete(ObjectType::Relation) => Vec::new(),
        }
    }

    /// New objects moved so that their centre lands on a region node,
    /// with fresh ids; shapes keep their size in metres.
    fn create(&mut self, objects: &[Object], meta: &Meta) -> Vec<Change> {
        let locations: Vec<Location> = objects
            .iter()
            .filter_map(|o| match o {
                Object::Node(n) => n.location,
                _ => None,
            })
            .collect();
        let Some(&anchor) = self.anchors.choose(&mut self.rng) else {
            return Vec::new();
        };
        if locations.is_empty() {
            return Vec::new();
        }
        let centre_lon = locations.iter().map(|l| l.lon).sum::<f64>() / locations.len() as f64;
        let centre_lat = locations.iter().map(|l| l.lat).sum::<f64>() / locations.len() as f64;
        let stretch =
            centre_lat.to_radians().cos().max(0.01) / anchor.lat.to_radians().cos().max(0.01);
        let mut ids: HashMap<ObjectId, i64> = HashMap::new();
        for object in objects {
            let id = object.object_id();
            let fresh = self.take_id(id.kind);
            ids.insert(id, fresh);
        }
        let meta = Meta {
            version: Some(1),
            ..meta.clone()
        };
        let renumber =
            |kind: ObjectType, id: i64| -> Option<i64> { ids.get(&ObjectId { kind, id }).copied() };
        let mut changes = Vec::new();
        for object in objects {
            let object = match object {
                Object::Node(n) => Object::Node(Node {
                    id: renumber(ObjectType::Node, n.id).expect("renumbered"),
                    meta: meta.clone(),
                    location: n.location.map(|l| {
                        snap(Location {
                            lon: anchor.lon + (l.lon - centre_lon) * stretch,
                            lat: anchor.lat + (l.lat - centre_lat),
                        })
                    }),
                    tags: n.tags.clone(),
                }),
                Object::Way(w) => {
                    let nodes: Vec<i64> = w
                        .nodes
                        .iter()
                        .filter_map(|&n| renumber(ObjectType::Node, n))
                        .collect();
                    for &n in &nodes {
                        *self.node_uses.entry(n).or_insert(0) += 1;
                    }
                    Object::Way(Way {
                        id: renumber(ObjectType::Way, w.id).expect("renumbered"),
                        meta: meta.clone(),
                        nodes,
                        tags: w.tags.clone(),
                    })
                }
                Object::Relation(r) => {
                    let members: Vec<Member> = r
                        .members
                        .iter()
                        .filter_map(|m| {
                            Some(Member {
                                id: renumber(m.kind, m.id)?,
                                ..m.clone()
                            })
                        })
                        .collect();
                    for m in members.iter().filter(|m| m.kind == ObjectType::Way) {
                        self.member_ways.insert(m.id);
                    }
                    Object::Relation(Relation {
                        id: renumber(ObjectType::Relation, r.id).expect("renumbered"),
                        meta: meta.clone(),
                        members,
                        tags: r.tags.clone(),
                    })
                }
            };
            changes.push(Change {
                action: Action::Create,
                object,
            });
        }
        changes
    }
}

/// A region object of `tags`' kind: the same kind, else the same key,
/// else any tagged one.
fn same_kind<'a>(
    rng: &mut ChaCha8Rng,
    tags: &Tags,
    candidates: impl Iterator<Item = (i64, &'a Tags)> + Clone,
) -> Option<i64> {
    let wanted = kind(tags);
    let exact: Vec<i64> = candidates
        .clone()
        .filter(|(_, t)| wanted.is_some() && kind(t) == wanted)
        .map(|(id, _)| id)
        .collect();
    let same_key: Vec<i64> = candidates
        .clone()
        .filter(|(_, t)| {
            let k = kind(t);
            wanted.is_some() && k.map(|k| k.0) == wanted.as_ref().map(|w| w.0.clone())
        })
        .map(|(id, _)| id)
        .collect();
    let tagged: Vec<i64> = candidates
        .filter(|(_, t)| !t.is_empty())
        .map(|(id, _)| id)
        .collect();
    [exact, same_key, tagged]
        .into_iter()
        .find(|pool| !pool.is_empty())
        .and_then(|pool| pool.choose(rng).copied())
}

impl RelocatedDiffs {
    /// One of `tags` the object lacks, set on it; `false` when it has them all.
    fn set_one_tag(&mut self, object_tags: &mut Tags, tags: &Tags) -> bool {
        let new: Vec<&(String, String)> = tags
            .iter()
            .filter(|(k, v)| !object_tags.iter().any(|(ok, ov)| ok == k && ov == v))
            .collect();
        let Some((key, value)) = new.choose(&mut self.rng).copied() else {
            return false;
        };
        match object_tags
            .iter_mut()
            .find(|(k, _)| k.as_str() == key.as_str())
        {
            Some(slot) => slot.1 = value.clone(),
            None => object_tags.push((key.clone(), value.clone())),
        }
        true
    }

    fn nudge(&mut self, location: Location) -> Location {
        let metres = self.rng.random_range(1.0..NUDGE_METRES);
        let bearing = self.rng.random_range(0.0..std::f64::consts::TAU);
        snap(Location {
            lat: location.lat + metres * bearing.cos() / METRES_PER_DEGREE,
            lon: location.lon
                + metres * bearing.sin()
                    / (METRES_PER_DEGREE * location.lat.to_radians().cos().max(0.01)),
        })
    }

    fn modified_node(&mut self, id: i64, meta: &Meta, tags: Option<Tags>) -> Option<Change> {
        let mut node = self.data.nodes.get(&id)?.clone();
        match tags {
            Some(tags) => node.tags = tags,
            None => node.location = Some(self.nudge(node.location?)),
        }
        node.meta = next_version(&node.meta, meta);
        Some(Change {
            action: Action::Modify,
            object: Object::Node(node),
        })
    }

    fn move_way_node(&mut self, meta: &Meta) -> Vec<Change> {
        let ways: Vec<(i64, &Tags)> = self.data.ways.values().map(|w| (w.id, &w.tags)).collect();
        let Some(way) = ways.choose(&mut self.rng).map(|(id, _)| *id) else {
            return Vec::new();
        };
        let Some(&node) = self.data.ways[&way].nodes.choose(&mut self.rng) else {
            return Vec::new();
        };
        self.modified_node(node, meta, None).into_iter().collect()
    }

    fn edit_node(&mut self, tags: &Tags, meta: &Meta) -> Vec<Change> {
        let nodes = self
            .data
            .nodes
            .values()
            .filter(|n| !n.tags.is_empty())
            .map(|n| (n.id, &n.tags));
        let Some(id) = same_kind(&mut self.rng, tags, nodes) else {
            return Vec::new();
        };
        let mut node_tags = self.data.nodes[&id].tags.clone();
        let tags = self.set_one_tag(&mut node_tags, tags).then_some(node_tags);
        self.modified_node(id, meta, tags).into_iter().collect()
    }

    fn edit_way(&mut self, tags: &Tags, geometry: bool, meta: &Meta) -> Vec<Change> {
        let ways = self
            .data
            .ways
            .values()
            .filter(|w| w.nodes.len() >= 2)
            .map(|w| (w.id, &w.tags));
        let Some(id) = same_kind(&mut self.rng, tags, ways) else {
            return Vec::new();
        };
        let mut way = self.data.ways[&id].clone();
        if !geometry && self.set_one_tag(&mut way.tags, tags) {
            way.meta = next_version(&way.meta, meta);
            return vec![Change {
                action: Action::Modify,
                object: Object::Way(way),
            }];
        }
        if geometry {
            // A node added a few metres off a segment's middle.
            let at = self.rng.random_range(1..way.nodes.len());
            let (Some(a), Some(b)) = (
                self.data
                    .nodes
                    .get(&way.nodes[at - 1])
                    .and_then(|n| n.location),
                self.data.nodes.get(&way.nodes[at]).and_then(|n| n.location),
            ) else {
                return Vec::new();
            };
            let middle = self.nudge(Location {
                lon: (a.lon + b.lon) / 2.0,
                lat: (a.lat + b.lat) / 2.0,
            });
            let node = Node {
                id: self.take_id(ObjectType::Node),
                meta: Meta {
                    version: Some(1),
                    ..meta.clone()
                },
                location: Some(middle),
                tags: Vec::new(),
            };
            way.nodes.insert(at, node.id);
            *self.node_uses.entry(node.id).or_insert(0) += 1;
            way.meta = next_version(&way.meta, meta);
            return vec![
                Change {
                    action: Action::Create,
                    object: Object::Node(node),
                },
                Change {
                    action: Action::Modify,
                    object: Object::Way(way),
                },
            ];
        }
        // Nothing to add to its tags: one of its nodes moved.
        let Some(&node) = way.nodes.choose(&mut self.rng) else {
            return Vec::new();
        };
        self.modified_node(node, meta, None).into_iter().collect()
    }

    fn edit_relation(&mut self, tags: &Tags, meta: &Meta) -> Vec<Change> {
        let relations = self.data.relations.values().map(|r| (r.id, &r.tags));
        let Some(id) = same_kind(&mut self.rng, tags, relations) else {
            return Vec::new();
        };
        let mut relation = self.data.relations[&id].clone();
        self.set_one_tag(&mut relation.tags, tags);
        relation.meta = next_version(&relation.meta, meta);
        vec![Change {
            action: Action::Modify,
            object: Object::Relation(relation),
        }]
    }

    fn delete_way_node(&mut self, meta: &Meta) -> Vec<Change> {
        // An untagged inner node of one way only, of a way that keeps
        // enough nodes.
        let candidates: Vec<(i64, usize)> = self
            .data
            .ways
            .values()
            .filter(|w| w.nodes.len() >= 5)
            .flat_map(|w| {
                (1..w.nodes.len() - 1)
                    .filter(|&i| {
                        let n = w.nodes[i];
                        self.node_uses.get(&n) == Some(&1)
                            && self.data.nodes.get(&n).is_some_and(|n| n.tags.is_empty())
                    })
                    .map(move |i| (w.id, i))
            })
            .collect();
        let Some(&(way_id, at)) = candidates.choose(&mut self.rng) else {
            return Vec::new();
        };
        let mut way = self.data.ways[&way_id].clone();
        let node_id = way.nodes.remove(at);
        self.node_uses.remove(&node_id);
        way.meta = next_version(&way.meta, meta);
        let mut node = self.data.nodes[&node_id].clone();
        node.meta = next_version(&node.meta, meta);
        vec![
            Change {
                action: Action::Modify,
                object: Object::Way(way),
            },
            Change {
                action: Action::Delete,
                object: Object::Node(node),
            },
        ]
    }

    fn delete_way(&mut self, meta: &Meta) -> Vec<Change> {
        let candidates: Vec<i64> = self
            .data
            .ways
            .keys()
            .copied()
            .filter(|id| !self.member_ways.contains(id))
            .collect();
        let Some(&way_id) = candidates.choose(&mut self.rng) else {
            return Vec::new();
        };
        let mut way = self.data.ways[&way_id].clone();
        way.meta = next_version(&way.meta, meta);
        let mut changes = Vec::new();
        let mut seen = HashSet::new();
        for &n in &way.nodes {
            let uses = self.node_uses.entry(n).or_insert(1);
            *uses = uses.saturating_sub(1);
            if *uses == 0 && seen.insert(n) {
                if let Some(node) = self.data.nodes.get(&n).filter(|n| n.tags.is_empty()) {
                    let mut node = node.clone();
                    node.meta = next_version(&node.meta, meta);
                    changes.push(Change {
                        action: Action::Delete,
                        object: Object::Node(node),
                    });
                }
            }
        }
        changes.insert(
            0,
            Change {
                action: Action::Delete,
                object: Object::Way(way),
            },
        );
        changes
    }
}

/// The next version's metadata: `meta`'s stamp, one version up.
fn next_version(old: &Meta, meta: &Meta) -> Meta {
    Meta {
        version: Some(old.version.unwrap_or(1) + 1),
        ..meta.clone()
    }
}

/// On osm2pgsql's 1e-7° grid, so both importers see the same location.
fn snap(location: Location) -> Location {
    let (lon, lat) = location.to_fixed();
    Location::from_fixed(lon, lat)
}

/// The planet diff's edits, and the shapes of its created ways.
fn split_edits(planet: &ChangeSet) -> (Vec<Edit>, Vec<Shape>) {
    let mut nodes: HashMap<i64, (&Node, Action)> = HashMap::new();
    for change in planet.iter() {
        if let Object::Node(n) = &change.object {
            nodes.insert(n.id, (n, change.action));
        }
    }
    let created_ways: HashMap<i64, &Way> = planet
        .iter()
        .filter(|c| c.action == Action::Create)
        .filter_map(|c| match &c.object {
            Object::Way(w) => Some((w.id, w)),
            _ => None,
        })
        .collect();
    let complete = |w: &Way| {
        w.nodes
            .iter()
            .all(|n| nodes.get(n).is_some_and(|(n, _)| n.location.is_some()))
    };
    let with_nodes = |w: &Way, out: &mut Vec<Object>, seen: &mut HashSet<i64>| {
        for n in &w.nodes {
            if seen.insert(*n) {
                out.push(Object::Node(nodes[n].0.clone()));
            }
        }
        out.push(Object::Way(w.clone()));
    };
    let mut edits = Vec::new();
    let mut shapes = Vec::new();
    let mut in_relation: HashSet<i64> = HashSet::new();
    let mut used_nodes: HashSet<i64> = HashSet::new();
    for change in planet.iter() {
        let Object::Relation(r) = &change.object else {
            continue;
        };
        if change.action != Action::Create {
            continue;
        }
        let mut objects = Vec::new();
        let mut seen = HashSet::new();
        let mut members = Vec::new();
        for m in &r.members {
            if let Some(w) = created_ways
                .get(&m.id)
                .filter(|_| m.kind == ObjectType::Way)
            {
                if complete(w) {
                    in_relation.insert(w.id);
                    with_nodes(w, &mut objects, &mut seen);
                    members.push(m.clone());
                }
            }
        }
        used_nodes.extend(seen);
        if !members.is_empty() {
            objects.push(Object::Relation(Relation {
                members,
                ..r.clone()
            }));
            edits.push(Edit::Create(objects));
        }
    }
    let mut modified_way_nodes: HashSet<i64> = HashSet::new();
    for change in planet.iter() {
        match (&change.object, change.action) {
            (Object::Way(w), Action::Create) => {
                used_nodes.extend(w.nodes.iter().copied());
                if in_relation.contains(&w.id) {
                    continue;
                }
                if complete(w) {
                    let shape = w.nodes.iter().filter_map(|n| nodes[n].0.location).collect();
                    shapes.push((kind(&w.tags), shape));
                    let mut objects = Vec::new();
                    with_nodes(w, &mut objects, &mut HashSet::new());
                    edits.push(Edit::Create(objects));
                } else if w.nodes.len() >= 2 {
                    edits.push(Edit::CreateShapeless(w.clone()));
                }
            }
            (Object::Way(w), Action::Modify) => {
                let geometry = w.nodes.iter().any(|n| nodes.contains_key(n));
                modified_way_nodes.extend(w.nodes.iter().copied());
                edits.push(Edit::Modify {
                    kind: ObjectType::Way,
                    tags: w.tags.clone(),
                    geometry,
                });
            }
            (Object::Relation(r), Action::Modify) => edits.push(Edit::Modify {
                kind: ObjectType::Relation,
                tags: r.tags.clone(),
                geometry: false,
            }),
            (object, Action::Delete) => edits.push(Edit::Delete(object.object_id().kind)),
            _ => {}
        }
    }
    for change in planet.iter() {
        let Object::Node(n) = &change.object else {
            continue;
        };
        match change.action {
            Action::Create
                if !n.tags.is_empty() && !used_nodes.contains(&n.id) && n.location.is_some() =>
            {
                edits.push(Edit::Create(vec![change.object.clone()]));
            }
            // Untagged nodes of a modified way are part of its edit.
            Action::Modify if !(n.tags.is_empty() && modified_way_nodes.contains(&n.id)) => edits
                .push(Edit::Modify {
                    kind: ObjectType::Node,
                    tags: n.tags.clone(),
                    geometry: false,
                }),
            _ => {}
        }
    }
    (edits, shapes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tilepipe::osm::osc::parse_osc;

    const PLANET: &str = r#"<osmChange version="0.6">
<create>
  <node id="100" version="1" lat="60.0" lon="25.0"/>
  <node id="101" version="1" lat="60.0" lon="25.001"/>
  <node id="102" version="1" lat="60.001" lon="25.001"/>
  <way id="200" version="1"><nd ref="100"/><nd ref="101"/><nd ref="102"/><nd ref="100"/><tag k="building" v="yes"/></way>
  <way id="201" version="1"><nd ref="900"/><nd ref="901"/><nd ref="902"/><nd ref="900"/><tag k="building" v="house"/></way>
  <node id="103" version="1" lat="61.0" lon="26.0"><tag k="shop" v="bakery"/></node>
</create>
<modify>
  <way id="300" version="4"><nd ref="800"/><nd ref="801"/><tag k="highway" v="residential"/><tag k="surface" v="asphalt"/></way>
</modify>
<delete>
  <node id="400" version="2" lat="0" lon="0"/>
</delete>
</osmChange>"#;

    fn region() -> OsmData {
        let mut data = OsmData::new();
        for (id, lon) in [(1, 9.50), (2, 9.501), (3, 9.502), (4, 9.503), (5, 9.504)] {
            data.insert(Object::Node(Node {
                id,
                meta: Meta::default(),
                location: Some(Location { lon, lat: 47.1 }),
                tags: Vec::new(),
            }));
        }
        data.insert(Object::Way(Way {
            id: 10,
            meta: Meta::default(),
            nodes: vec![1, 2, 3, 4, 5],
            tags: vec![("highway".into(), "residential".into())],
        }));
        data
    }

    #[test]
    fn planet_edits_are_split_by_kind() {
        let planet = parse_osc(PLANET.as_bytes(), "test").unwrap();
        let (edits, shapes) = split_edits(&planet);
        assert_eq!(shapes.len(), 1, "one created way has its nodes");
        let creates = edits
            .iter()
            .filter(|e| matches!(e, Edit::Create(_)))
            .count();
        let shapeless = edits
            .iter()
            .filter(|e| matches!(e, Edit::CreateShapeless(_)))
            .count();
        assert_eq!((creates, shapeless), (2, 1), "{edits:?}");
        assert!(edits.iter().any(|e| matches!(
            e,
            Edit::Modify {
                kind: ObjectType::Way,
                geometry: false,
                ..
            }
        )));
        assert!(edits
            .iter()
            .any(|e| matches!(e, Edit::Delete(ObjectType::Node))));
    }

    #[test]
    fn replayed_edits_land_in_the_region() {
        let planet = parse_osc(PLANET.as_bytes(), "test").unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut diffs =
            RelocatedDiffs::new(region(), &planet, 7, 10, t0, 60).with_edits_per_diff(5, 5);
        let diff = diffs.next_diff();
        assert_eq!(diff.sequence, 11);
        assert!(!diff.changes.is_empty());
        for change in &diff.changes {
            if let Object::Node(Node {
                location: Some(l), ..
            }) = &change.object
            {
                if change.action != Action::Delete {
                    assert!(
                        (l.lon - 9.5).abs() < 0.02 && (l.lat - 47.1).abs() < 0.02,
                        "{l:?}"
                    );
                }
            }
            if change.action == Action::Create {
                assert!(change.object_id().id > 300, "fresh ids: {change:?}");
            }
        }
        // Every way the diff writes has all its nodes.
        for change in &diff.changes {
            if let Object::Way(w) = &change.object {
                if change.action != Action::Delete {
                    for n in &w.nodes {
                        assert!(diffs.data.nodes.contains_key(n), "way {} node {n}", w.id);
                    }
                }
            }
        }
    }
}
