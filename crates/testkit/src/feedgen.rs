//! Fixture replication feeds: realistic minutely diffs over a real extract.
//!
//! [`FeedGenerator`] keeps the extract in memory and, diff after diff,
//! changes it the way mappers do: nodes nudged by a few metres (reshaping
//! ways and multipolygon outlines), tags edited, POIs and small ways created
//! and deleted, multipolygon members edited, streets renamed. Later diffs
//! build on earlier ones, so no diff ever touches a deleted object. Every
//! effect is listed in a [`DiffSummary`] so tests can assert on it.
//!
//! [`FeedWriter`] publishes diffs the way osmdbt does (`osmdbt-create-diff`):
//! the `.osc.gz`, then its `.state.txt`, then the top-level `state.txt`,
//! each written to a temporary name and renamed into place.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use flate2::write::GzEncoder;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use tilepipe::osm::osc_write::write_osc;
use tilepipe::osm::{Action, Change};
use tilepipe::osm::{
    Location, Member, Meta, Node, Object, ObjectId, ObjectType, Relation, Tags, Way,
};
use tilepipe::replication::feed::{parse_sequence_path, sequence_path};
use tilepipe::replication::ReplicationState;

/// The `generator` attribute of the OsmChange files we write.
pub const GENERATOR: &str = "tilepipe-testkit";

/// An OSM data set in memory, keyed by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OsmData {
    /// Nodes by id.
    pub nodes: BTreeMap<i64, Node>,
    /// Ways by id.
    pub ways: BTreeMap<i64, Way>,
    /// Relations by id.
    pub relations: BTreeMap<i64, Relation>,
}

impl OsmData {
    /// An empty data set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a `.osm.pbf` extract: nodes with locations, tags and metadata,
    /// ways, relations.
    pub fn from_pbf(path: &Path) -> Result<Self> {
        let reader = osmpbf::ElementReader::from_path(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut data = OsmData::new();
        reader
            .for_each(|element| data.insert(pbf_element_to_object(element)))
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(data)
    }

    /// The data set of `objects`; a later object replaces an earlier one
    /// with the same type and id.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut data = OsmData::new();
        for object in objects {
            data.insert(object);
        }
        data
    }

    /// Adds or replaces an object.
    pub fn insert(&mut self, object: Object) {
        match object {
            Object::Node(n) => {
                self.nodes.insert(n.id, n);
            }
            Object::Way(w) => {
                self.ways.insert(w.id, w);
            }
            Object::Relation(r) => {
                self.relations.insert(r.id, r);
            }
        }
    }

    /// Removes an object, returning it if it was there.
    pub fn remove(&mut self, id: ObjectId) -> Option<Object> {
        match id.kind {
            ObjectType::Node => self.nodes.remove(&id.id).map(Object::Node),
            ObjectType::Way => self.ways.remove(&id.id).map(Object::Way),
            ObjectType::Relation => self.relations.remove(&id.id).map(Object::Relation),
        }
    }

    /// A copy of the object with this id.
    pub fn get(&self, id: ObjectId) -> Option<Object> {
        match id.kind {
            ObjectType::Node => self.nodes.get(&id.id).cloned().map(Object::Node),
            ObjectType::Way => self.ways.get(&id.id).cloned().map(Object::Way),
            ObjectType::Relation => self.relations.get(&id.id).cloned().map(Object::Relation),
        }
    }

    /// Whether the object with this id is present.
    pub fn contains(&self, id: ObjectId) -> bool {
        match id.kind {
            ObjectType::Node => self.nodes.contains_key(&id.id),
            ObjectType::Way => self.ways.contains_key(&id.id),
            ObjectType::Relation => self.relations.contains_key(&id.id),
        }
    }

    /// Applies one change: creates and modifies store the object, deletes
    /// remove it.
    pub fn apply(&mut self, change: &Change) {
        match change.action {
            Action::Create | Action::Modify => self.insert(change.object.clone()),
            Action::Delete => {
                self.remove(change.object_id());
            }
        }
    }

    /// Number of objects of all three types.
    pub fn len(&self) -> usize {
        self.nodes.len() + self.ways.len() + self.relations.len()
    }

    /// Whether there is no object at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Largest id per type (0 when there is none): new objects get ids
    /// above these.
    pub fn max_ids(&self) -> [i64; 3] {
        [
            self.nodes.keys().next_back().copied().unwrap_or(0).max(0),
            self.ways.keys().next_back().copied().unwrap_or(0).max(0),
            self.relations
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0)
                .max(0),
        ]
    }

    /// All objects in importer order: nodes, ways, relations, each by id.
    pub fn objects(&self) -> impl Iterator<Item = Object> + '_ {
        let nodes = self.nodes.values().cloned().map(Object::Node);
        let ways = self.ways.values().cloned().map(Object::Way);
        let relations = self.relations.values().cloned().map(Object::Relation);
        nodes.chain(ways).chain(relations)
    }

    /// Writes the data as a plain OSM XML file (`.osm`) in importer order.
    pub fn write_osm_file(&self, path: &Path) -> Result<()> {
        let file =
            fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let objects: Vec<Object> = self.objects().collect();
        tilepipe::osm::osc_write::write_osm(&mut out, GENERATOR, &objects)?;
        out.flush()?;
        Ok(())
    }
}

fn pbf_element_to_object(element: osmpbf::Element<'_>) -> Object {
    use osmpbf::Element;
    fn meta(info: &osmpbf::Info<'_>) -> Meta {
        Meta {
            version: info.version().map(|v| v as u32),
            timestamp: info
                .milli_timestamp()
                .and_then(DateTime::from_timestamp_millis),
            changeset: info.changeset(),
            uid: info.uid().map(i64::from),
            user: info.user().and_then(|u| u.ok()).map(str::to_string),
        }
    }
    fn tags<'a>(iter: impl Iterator<Item = (&'a str, &'a str)>) -> Tags {
        iter.map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
    match element {
        Element::Node(n) => Object::Node(Node {
            id: n.id(),
            meta: meta(&n.info()),
            location: Some(Location::from_fixed(n.decimicro_lon(), n.decimicro_lat())),
            tags: tags(n.tags()),
        }),
        Element::DenseNode(n) => Object::Node(Node {
            id: n.id(),
            meta: n
                .info()
                .map(|info| Meta {
                    version: Some(info.version() as u32),
                    timestamp: DateTime::from_timestamp_millis(info.milli_timestamp()),
                    changeset: Some(info.changeset()),
                    uid: Some(i64::from(info.uid())),
                    user: info.user().ok().map(str::to_string),
                })
                .unwrap_or_default(),
            location: Some(Location::from_fixed(n.decimicro_lon(), n.decimicro_lat())),
            tags: tags(n.tags()),
        }),
        Element::Way(w) => Object::Way(Way {
            id: w.id(),
            meta: meta(&w.info()),
            nodes: w.refs().collect(),
            tags: tags(w.tags()),
        }),
        Element::Relation(r) => Object::Relation(Relation {
            id: r.id(),
            meta: meta(&r.info()),
            members: r
                .members()
                .map(|m| Member {
                    kind: match m.member_type {
                        osmpbf::RelMemberType::Node => ObjectType::Node,
                        osmpbf::RelMemberType::Way => ObjectType::Way,
                        osmpbf::RelMemberType::Relation => ObjectType::Relation,
                    },
                    id: m.member_id,
                    role: m.role().unwrap_or("").to_string(),
                })
                .collect(),
            tags: tags(r.tags()),
        }),
    }
}

/// What one generated diff did, with ids, for assertions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiffSummary {
    /// Nodes moved by a few metres, POIs and way nodes alike.
    pub moved_nodes: Vec<MovedNode>,
    /// Tag edits other than street renames.
    pub tag_changes: Vec<TagChange>,
    /// `(way id, old name, new name)` of `highway=*` ways.
    pub renamed_streets: Vec<(i64, String, String)>,
    /// Every object the diff creates (nodes of new ways included).
    pub created: Vec<ObjectId>,
    /// Every object the diff deletes.
    pub deleted: Vec<ObjectId>,
    /// Edits of multipolygon relations and their member ways.
    pub multipolygon_edits: Vec<MultipolygonEdit>,
}

/// A node moved by a generated diff.
#[derive(Debug, Clone, PartialEq)]
pub struct MovedNode {
    /// The node's id.
    pub id: i64,
    /// Its location before the diff.
    pub from: Location,
    /// Its location after the diff.
    pub to: Location,
    /// Ways using the node, whose shapes therefore changed.
    pub ways: Vec<i64>,
}

/// A tag set, changed or removed; `None` means absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagChange {
    /// The object whose tag changed.
    pub object: ObjectId,
    /// The tag's key.
    pub key: String,
    /// Its value before the diff.
    pub old: Option<String>,
    /// Its value after the diff.
    pub new: Option<String>,
}

/// One edit of a multipolygon relation, as [`DiffSummary`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipolygonEdit {
    /// The relation's id.
    pub relation: i64,
    /// What changed.
    pub kind: MultipolygonEditKind,
}

/// The kinds of [`MultipolygonEdit`]; `way` is always the member way
/// concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipolygonEditKind {
    /// A node of an outer way moved (listed in `moved_nodes` too).
    OuterNodeMoved {
        /// The outer way.
        way: i64,
        /// The node moved.
        node: i64,
    },
    /// A member's role toggled between `outer` and the empty role.
    RoleChanged {
        /// The member way.
        way: i64,
        /// Its role before.
        old: String,
        /// Its role after.
        new: String,
    },
    /// A new small closed way added as an `inner` member (hole).
    InnerAdded {
        /// The new way.
        way: i64,
    },
    /// An `inner` member removed; the way itself was deleted too when
    /// nothing else used it.
    InnerRemoved {
        /// The former member way.
        way: i64,
        /// Whether the way was deleted as well.
        way_deleted: bool,
    },
}

/// One generated minutely diff.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedDiff {
    /// The diff's sequence number.
    pub sequence: u64,
    /// The state timestamp: end of the diff's interval. Every object
    /// timestamp in the diff is after the previous state's and not after
    /// this one.
    pub timestamp: DateTime<Utc>,
    /// The changes, in the order the `.osc.gz` lists them.
    pub changes: Vec<Change>,
    /// What the changes do, for assertions.
    pub summary: DiffSummary,
}

impl GeneratedDiff {
    /// The state file this diff publishes (its sequence and timestamp).
    pub fn state(&self) -> ReplicationState {
        ReplicationState {
            sequence: self.sequence,
            timestamp: self.timestamp,
        }
    }
}

/// Kinds of mapper edit the generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    MovePoi,
    ReshapeWay,
    MoveOuterNode,
    ChangeTag,
    CreatePoi,
    DeletePoi,
    CreateWay,
    DeleteWay,
    Multipolygon,
    RenameStreet,
}

/// Each diff starts with one of each of these (as far as the data allows
/// and the size target leaves room), so tests can count on every kind of
/// effect in every diff; the rest is drawn from [`EDIT_WEIGHTS`].
const EDITS_IN_EVERY_DIFF: &[Edit] = &[
    Edit::RenameStreet,
    Edit::ReshapeWay,
    Edit::MoveOuterNode,
    Edit::ChangeTag,
    Edit::CreatePoi,
    Edit::DeletePoi,
    Edit::CreateWay,
    Edit::DeleteWay,
    Edit::Multipolygon,
];

const EDIT_WEIGHTS: &[(Edit, u32)] = &[
    (Edit::MovePoi, 10),
    (Edit::ReshapeWay, 16),
    (Edit::MoveOuterNode, 4),
    (Edit::ChangeTag, 16),
    (Edit::CreatePoi, 8),
    (Edit::DeletePoi, 4),
    (Edit::CreateWay, 5),
    (Edit::DeleteWay, 3),
    (Edit::Multipolygon, 3),
    (Edit::RenameStreet, 4),
];

/// Mappers delete small things (buildings, paths); keeping deleted ways
/// small also keeps each diff near its size target.
const MAX_DELETED_WAY_NODES: usize = 12;

const MAPPERS: &[(i64, &str)] = &[
    (9_000_001, "testkit_anna"),
    (9_000_002, "testkit_bruno"),
    (9_000_003, "testkit_chiara"),
    (9_000_004, "testkit_dario"),
];

const STREET_STEMS: &[&str] = &[
    "Linden", "Birken", "Rhein", "Schloss", "Kirch", "Mühle", "Sonnen", "Wiesen", "Rosen",
    "Eschen", "Quellen", "Reben", "Ahorn", "Tannen",
];
const STREET_SUFFIXES: &[&str] = &["strasse", "weg", "gasse", "platz", "halde", "rain"];
const POI_KINDS: &[(&str, &str, &str)] = &[
    ("amenity", "cafe", "Café"),
    ("amenity", "restaurant", "Gasthaus"),
    ("shop", "bakery", "Bäckerei"),
    ("shop", "kiosk", "Kiosk"),
    ("amenity", "pharmacy", "Apotheke"),
    ("tourism", "hotel", "Hotel"),
];
const SURNAMES: &[&str] = &[
    "Frick",
    "Büchel",
    "Marxer",
    "Ospelt",
    "Kaiser",
    "Beck",
    "Wohlwend",
    "Hasler",
    "Vogt",
    "Meier & Söhne",
];
const OPENING_HOURS: &[&str] = &[
    "Mo-Fr 08:00-18:00",
    "Mo-Sa 07:00-12:00,13:30-18:30",
    "24/7",
    "Tu-Su 10:00-22:00",
    "Mo-Fr 09:00-17:00; Sa 09:00-12:00",
];
const SOURCES: &[&str] = &["survey", "bing", "gps", "local knowledge"];

/// Generates minutely diffs over an extract. See the module documentation.
pub struct FeedGenerator {
    data: OsmData,
    rng: ChaCha8Rng,
    start: ReplicationState,
    sequence: u64,
    timestamp: DateTime<Utc>,
    interval_secs: i64,
    changes_per_diff: (usize, usize),
    next_ids: [i64; 3],
    next_changeset: i64,
    /// Node → ways using it (each way once).
    node_ways: HashMap<i64, Vec<i64>>,
    /// Member → relations listing it.
    member_of: HashMap<ObjectId, Vec<i64>>,
    // Candidate pools, in id order for determinism. They may hold ids that
    // no longer qualify; picks re-check.
    pois: Vec<i64>,
    ways: Vec<i64>,
    streets: Vec<i64>,
    multipolygons: Vec<i64>,
}

/// Per-diff scratch state.
struct DiffInProgress {
    sequence: u64,
    changes: Vec<Change>,
    summary: DiffSummary,
    touched: HashSet<ObjectId>,
    target: usize,
    interval_start: DateTime<Utc>,
    changeset: i64,
    mapper: (i64, &'static str),
}

impl FeedGenerator {
    /// `start_sequence`/`start_time` is the feed position the extract
    /// corresponds to; the first diff is `start_sequence + 1`, stamped
    /// `start_time + interval_secs`. Deterministic for a given `seed`.
    pub fn new(
        data: OsmData,
        seed: u64,
        start_sequence: u64,
        start_time: DateTime<Utc>,
        interval_secs: u64,
    ) -> Self {
        let [max_node, max_way, max_relation] = data.max_ids();
        let max_changeset = data
            .nodes
            .values()
            .map(|n| n.meta.changeset)
            .chain(data.ways.values().map(|w| w.meta.changeset))
            .chain(data.relations.values().map(|r| r.meta.changeset))
            .flatten()
            .max()
            .unwrap_or(0);
        let mut generator = FeedGenerator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            start: ReplicationState {
                sequence: start_sequence,
                timestamp: start_time,
            },
            sequence: start_sequence,
            timestamp: start_time,
            interval_secs: interval_secs.max(1) as i64,
            changes_per_diff: (20, 60),
            next_ids: [max_node + 1, max_way + 1, max_relation + 1],
            next_changeset: max_changeset + 1,
            node_ways: HashMap::new(),
            member_of: HashMap::new(),
            pois: Vec::new(),
            ways: Vec::new(),
            streets: Vec::new(),
            multipolygons: Vec::new(),
            data: OsmData::new(),
        };
        for way in data.ways.values() {
            generator.index_way(way);
        }
        for relation in data.relations.values() {
            generator.index_relation(relation);
        }
        generator.pois = data
            .nodes
            .values()
            .filter(|n| !n.tags.is_empty() && !generator.node_ways.contains_key(&n.id))
            .map(|n| n.id)
            .collect();
        generator.ways = data.ways.keys().copied().collect();
        generator.streets = data
            .ways
            .values()
            .filter(|w| is_named_street(w))
            .map(|w| w.id)
            .collect();
        generator.multipolygons = data
            .relations
            .values()
            .filter(|r| tag(&r.tags, "type") == Some("multipolygon"))
            .map(|r| r.id)
            .collect();
        generator.data = data;
        generator
    }

    /// Sets how many changes each diff holds, drawn uniformly from
    /// `min..=max` (default 20..=60). A diff can end up slightly larger,
    /// since an edit such as creating a way is never split.
    pub fn with_changes_per_diff(mut self, min: usize, max: usize) -> Self {
        self.changes_per_diff = (min.max(1), max.max(min.max(1)));
        self
    }

    /// The position before the first diff.
    pub fn start_state(&self) -> ReplicationState {
        self.start
    }

    /// The position after the last generated diff.
    pub fn current_state(&self) -> ReplicationState {
        ReplicationState {
            sequence: self.sequence,
            timestamp: self.timestamp,
        }
    }

    /// The data as of the last generated diff.
    pub fn data(&self) -> &OsmData {
        &self.data
    }

    /// Generates the next diff and applies it to the in-memory data.
    pub fn next_diff(&mut self) -> GeneratedDiff {
        let interval_start = self.timestamp;
        self.sequence += 1;
        self.timestamp += TimeDelta::seconds(self.interval_secs);
        let (min, max) = self.changes_per_diff;
        let mut diff = DiffInProgress {
            sequence: self.sequence,
            changes: Vec::new(),
            summary: DiffSummary::default(),
            touched: HashSet::new(),
            target: self.rng.random_range(min..=max),
            interval_start,
            changeset: self.take_changeset_id(),
            mapper: *MAPPERS.choose(&mut self.rng).expect("mappers"),
        };
        for &edit in EDITS_IN_EVERY_DIFF {
            if diff.changes.len() >= diff.target {
                break;
            }
            self.try_edit(edit, &mut diff);
        }
        let total_weight: u32 = EDIT_WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut failures = 0;
        while diff.changes.len() < diff.target && failures < 200 {
            // Mappers upload in a few changesets per minute.
            if self.rng.random_bool(0.15) {
                diff.changeset = self.take_changeset_id();
                diff.mapper = *MAPPERS.choose(&mut self.rng).expect("mappers");
            }
            let mut pick = self.rng.random_range(0..total_weight);
            let edit = EDIT_WEIGHTS
                .iter()
                .find(|(_, weight)| {
                    let hit = pick < *weight;
                    pick = pick.saturating_sub(*weight);
                    hit
                })
                .map(|(edit, _)| *edit)
                .expect("pick below the total weight");
            if !self.try_edit(edit, &mut diff) {
                failures += 1;
            }
        }
        GeneratedDiff {
            sequence: self.sequence,
            timestamp: self.timestamp,
            changes: diff.changes,
            summary: diff.summary,
        }
    }

    fn take_changeset_id(&mut self) -> i64 {
        self.next_changeset += 1;
        self.next_changeset - 1
    }

    fn try_edit(&mut self, edit: Edit, diff: &mut DiffInProgress) -> bool {
        match edit {
            Edit::MovePoi => self.move_poi(diff),
            Edit::ReshapeWay => self.reshape_way(diff),
            Edit::MoveOuterNode => self.move_outer_node(diff),
            Edit::ChangeTag => self.change_tag(diff),
            Edit::CreatePoi => self.create_poi(diff),
            Edit::DeletePoi => self.delete_poi(diff),
            Edit::CreateWay => self.create_way(diff),
            Edit::DeleteWay => self.delete_some_way(diff),
            Edit::Multipolygon => self.edit_multipolygon(diff),
            Edit::RenameStreet => self.rename_street(diff),
        }
    }

    // ---- edits -------------------------------------------------------

    fn move_poi(&mut self, diff: &mut DiffInProgress) -> bool {
        let Some(id) = self.pick(Pool::Pois, |g, id| {
            g.is_free_poi(id, diff) && g.data.nodes[&id].location.is_some()
        }) else {
            return false;
        };
        self.move_node(id, diff);
        true
    }

    fn reshape_way(&mut self, diff: &mut DiffInProgress) -> bool {
        for _ in 0..20 {
            let Some(way_id) = self.pick(Pool::Ways, |_, _| true) else {
                return false;
            };
            let nodes = self.data.ways[&way_id].nodes.clone();
            if let Some(&node) = nodes.choose(&mut self.rng) {
                if self.is_movable(node, diff) {
                    self.move_node(node, diff);
                    return true;
                }
            }
        }
        false
    }

    fn move_outer_node(&mut self, diff: &mut DiffInProgress) -> bool {
        for _ in 0..20 {
            let Some(relation) = self.pick(Pool::Multipolygons, |_, _| true) else {
                return false;
            };
            let outers = self.outer_ways(relation);
            let Some(&way) = outers.choose(&mut self.rng) else {
                continue;
            };
            let nodes = self.data.ways[&way].nodes.clone();
            let Some(&node) = nodes.choose(&mut self.rng) else {
                continue;
            };
            if self.is_movable(node, diff) {
                self.move_node(node, diff);
                diff.summary.multipolygon_edits.push(MultipolygonEdit {
                    relation,
                    kind: MultipolygonEditKind::OuterNodeMoved { way, node },
                });
                return true;
            }
        }
        false
    }

    fn change_tag(&mut self, diff: &mut DiffInProgress) -> bool {
        let target = if self.rng.random_bool(0.5) {
            self.pick(Pool::Pois, |g, id| g.is_free_poi(id, diff))
                .map(|id| ObjectId {
                    kind: ObjectType::Node,
                    id,
                })
        } else {
            self.pick(Pool::Ways, |g, id| {
                !g.data.ways[&id].tags.is_empty() && !diff.touched.contains(&way_id(id))
            })
            .map(way_id)
        };
        let Some(target) = target else {
            return false;
        };
        let mut object = self.data.get(target).expect("picked objects exist");
        let tags = tags_mut(&mut object);
        let key = *["name", "opening_hours", "note", "source", "note"]
            .choose(&mut self.rng)
            .expect("keys");
        let old = tag(tags, key).map(str::to_string);
        let removable = matches!(key, "note" | "source");
        let new = if removable && old.is_some() && self.rng.random_bool(0.3) {
            None
        } else {
            Some(loop {
                let candidate = match key {
                    "name" => self.poi_name(),
                    "opening_hours" => OPENING_HOURS.choose(&mut self.rng).unwrap().to_string(),
                    "source" => SOURCES.choose(&mut self.rng).unwrap().to_string(),
                    _ => format!(
                        "checked in diff {} (#{})",
                        diff.sequence,
                        self.rng.random_range(1..1000)
                    ),
                };
                if old.as_deref() != Some(candidate.as_str()) {
                    break candidate;
                }
            })
        };
        set_tag(tags, key, new.as_deref());
        diff.summary.tag_changes.push(TagChange {
            object: target,
            key: key.to_string(),
            old,
            new,
        });
        self.emit_modify(object, diff);
        true
    }

    fn create_poi(&mut self, diff: &mut DiffInProgress) -> bool {
        let Some(anchor) = self.anchor_location() else {
            return false;
        };
        let location = offset_by_metres(
            anchor,
            self.rng.random_range(5.0..50.0),
            self.rng.random_range(0.0..std::f64::consts::TAU),
        );
        let (key, value, label) = *POI_KINDS.choose(&mut self.rng).expect("kinds");
        let name = format!("{label} {}", SURNAMES.choose(&mut self.rng).unwrap());
        let id = self.take_id(ObjectType::Node);
        let node = Node {
            id,
            meta: Meta::default(),
            location: Some(location),
            tags: vec![(key.into(), value.into()), ("name".into(), name)],
        };
        self.emit(Action::Create, Object::Node(node), diff);
        true
    }

    fn delete_poi(&mut self, diff: &mut DiffInProgress) -> bool {
        let Some(id) = self.pick(Pool::Pois, |g, id| {
            g.is_free_poi(id, diff)
                && !g.member_of.contains_key(&ObjectId {
                    kind: ObjectType::Node,
                    id,
                })
        }) else {
            return false;
        };
        let node = self.data.nodes[&id].clone();
        self.emit(Action::Delete, Object::Node(node), diff);
        true
    }

    fn create_way(&mut self, diff: &mut DiffInProgress) -> bool {
        let Some(anchor) = self.anchor_location() else {
            return false;
        };
        let heading = self.rng.random_range(0.0..std::f64::consts::TAU);
        let start = offset_by_metres(anchor, self.rng.random_range(10.0..60.0), heading);
        let (locations, closed, tags): (Vec<Location>, bool, Tags) = if self.rng.random_bool(0.5) {
            let side = self.rng.random_range(8.0..20.0);
            (
                square_corners(start, side, heading),
                true,
                vec![("building".into(), "yes".into())],
            )
        } else {
            let count = self.rng.random_range(3..=6);
            let mut points = vec![start];
            for _ in 1..count {
                let bend = heading + self.rng.random_range(-0.4..0.4);
                let last = *points.last().expect("non-empty");
                points.push(offset_by_metres(
                    last,
                    self.rng.random_range(10.0..30.0),
                    bend,
                ));
            }
            let tags = if self.rng.random_bool(0.5) {
                vec![
                    ("highway".into(), "residential".into()),
                    ("name".into(), self.street_name()),
                ]
            } else {
                vec![("highway".into(), "footway".into())]
            };
            (points, false, tags)
        };
        let mut node_ids = Vec::new();
        for location in locations {
            let id = self.take_id(ObjectType::Node);
            node_ids.push(id);
            let node = Node {
                id,
                meta: Meta::default(),
                location: Some(location),
                tags: Tags::new(),
            };
            self.emit(Action::Create, Object::Node(node), diff);
        }
        if closed {
            node_ids.push(node_ids[0]);
        }
        let way = Way {
            id: self.take_id(ObjectType::Way),
            meta: Meta::default(),
            nodes: node_ids,
            tags,
        };
        self.emit(Action::Create, Object::Way(way), diff);
        true
    }

    fn delete_some_way(&mut self, diff: &mut DiffInProgress) -> bool {
        let Some(id) = self.pick(Pool::Ways, |g, id| {
            let way = &g.data.ways[&id];
            way.nodes.len() <= MAX_DELETED_WAY_NODES && g.can_delete_way(id, diff)
        }) else {
            return false;
        };
        self.delete_way_and_lonely_nodes(id, diff);
        true
    }

    fn edit_multipolygon(&mut self, diff: &mut DiffInProgress) -> bool {
        let Some(relation_id) = self.pick(Pool::Multipolygons, |g, id| {
            !diff.touched.contains(&relation_ref(id)) && !g.outer_ways(id).is_empty()
        }) else {
            return false;
        };
        let roll: f64 = self.rng.random();
        if roll < 0.35 && self.add_inner(relation_id, diff) {
            return true;
        }
        if roll < 0.7 && self.remove_inner(relation_id, diff) {
            return true;
        }
        self.toggle_outer_role(relation_id, diff)
    }

    fn toggle_outer_role(&mut self, relation_id: i64, diff: &mut DiffInProgress) -> bool {
        let mut relation = self.data.relations[&relation_id].clone();
        let outers: Vec<usize> = relation
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind == ObjectType::Way && matches!(m.role.as_str(), "outer" | ""))
            .map(|(i, _)| i)
            .collect();
        let Some(&index) = outers.choose(&mut self.rng) else {
            return false;
        };
        let member = &mut relation.members[index];
        let old = std::mem::take(&mut member.role);
        // Both mean "outer" to osm2pgsql, so the geometry stays valid.
        member.role = if old == "outer" {
            String::new()
        } else {
            "outer".into()
        };
        let edit = MultipolygonEditKind::RoleChanged {
            way: member.id,
            old,
            new: member.role.clone(),
        };
        diff.summary.multipolygon_edits.push(MultipolygonEdit {
            relation: relation_id,
            kind: edit,
        });
        self.emit_modify(Object::Relation(relation), diff);
        true
    }

    /// Adds a ~10 m square hole inside one of the outer rings.
    fn add_inner(&mut self, relation_id: i64, diff: &mut DiffInProgress) -> bool {
        let rings: Vec<Vec<Location>> = self
            .outer_ways(relation_id)
            .into_iter()
            .filter_map(|w| self.closed_ring(w))
            .collect();
        let inner_rings: Vec<Vec<Location>> = self.data.relations[&relation_id]
            .members
            .iter()
            .filter(|m| m.kind == ObjectType::Way && m.role == "inner")
            .filter_map(|m| self.closed_ring(m.id))
            .collect();
        let Some(ring) = rings.choose(&mut self.rng).cloned() else {
            return false;
        };
        let (min, max) = bounding_box(&ring);
        let mut square = None;
        for _ in 0..40 {
            let centre = snap_to_grid(Location {
                lon: self.rng.random_range(min.lon..=max.lon),
                lat: self.rng.random_range(min.lat..=max.lat),
            });
            let corners = square_corners(centre, 10.0, 0.0);
            let fits = corners.iter().chain([&centre]).all(|c| {
                point_in_ring(*c, &ring) && !inner_rings.iter().any(|r| point_in_ring(*c, r))
            });
            if fits {
                square = Some(corners);
                break;
            }
        }
        let Some(corners) = square else {
            return false;
        };
        let mut node_ids = Vec::new();
        for location in corners {
            let id = self.take_id(ObjectType::Node);
            node_ids.push(id);
            let node = Node {
                id,
                meta: Meta::default(),
                location: Some(location),
                tags: Tags::new(),
            };
            self.emit(Action::Create, Object::Node(node), diff);
        }
        node_ids.push(node_ids[0]);
        let way_id = self.take_id(ObjectType::Way);
        let way = Way {
            id: way_id,
            meta: Meta::default(),
            nodes: node_ids,
            tags: Tags::new(),
        };
        self.emit(Action::Create, Object::Way(way), diff);
        let mut relation = self.data.relations[&relation_id].clone();
        relation.members.push(Member {
            kind: ObjectType::Way,
            id: way_id,
            role: "inner".into(),
        });
        self.emit_modify(Object::Relation(relation), diff);
        diff.summary.multipolygon_edits.push(MultipolygonEdit {
            relation: relation_id,
            kind: MultipolygonEditKind::InnerAdded { way: way_id },
        });
        true
    }

    fn remove_inner(&mut self, relation_id: i64, diff: &mut DiffInProgress) -> bool {
        let mut relation = self.data.relations[&relation_id].clone();
        let inners: Vec<usize> = relation
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind == ObjectType::Way && m.role == "inner")
            .map(|(i, _)| i)
            .collect();
        let Some(&index) = inners.choose(&mut self.rng) else {
            return false;
        };
        let removed = relation.members.remove(index);
        self.emit_modify(Object::Relation(relation), diff);
        // An untagged way that was only this hole is now useless: delete it.
        let way_deleted = self
            .data
            .ways
            .get(&removed.id)
            .is_some_and(|w| w.tags.is_empty() && w.nodes.len() <= MAX_DELETED_WAY_NODES)
            && self.can_delete_way(removed.id, diff);
        if way_deleted {
            self.delete_way_and_lonely_nodes(removed.id, diff);
        }
        diff.summary.multipolygon_edits.push(MultipolygonEdit {
            relation: relation_id,
            kind: MultipolygonEditKind::InnerRemoved {
                way: removed.id,
                way_deleted,
            },
        });
        true
    }

    fn rename_street(&mut self, diff: &mut DiffInProgress) -> bool {
        let Some(id) = self.pick(Pool::Streets, |g, id| {
            is_named_street(&g.data.ways[&id]) && !diff.touched.contains(&way_id(id))
        }) else {
            return false;
        };
        let mut way = self.data.ways[&id].clone();
        let old = tag(&way.tags, "name").unwrap_or_default().to_string();
        let new = loop {
            let candidate = self.street_name();
            if candidate != old {
                break candidate;
            }
        };
        set_tag(&mut way.tags, "name", Some(&new));
        diff.summary.renamed_streets.push((id, old, new));
        self.emit_modify(Object::Way(way), diff);
        true
    }

    // ---- helpers -----------------------------------------------------

    fn move_node(&mut self, id: i64, diff: &mut DiffInProgress) {
        let mut node = self.data.nodes[&id].clone();
        let from = node.location.expect("movable nodes have a location");
        let to = offset_by_metres(
            from,
            self.rng.random_range(1.0..5.0),
            self.rng.random_range(0.0..std::f64::consts::TAU),
        );
        node.location = Some(to);
        diff.summary.moved_nodes.push(MovedNode {
            id,
            from,
            to,
            ways: self.node_ways.get(&id).cloned().unwrap_or_default(),
        });
        self.emit_modify(Object::Node(node), diff);
    }

    fn is_movable(&self, node: i64, diff: &DiffInProgress) -> bool {
        self.data
            .nodes
            .get(&node)
            .is_some_and(|n| n.location.is_some())
            && !diff.touched.contains(&node_ref(node))
    }

    fn is_free_poi(&self, id: i64, diff: &DiffInProgress) -> bool {
        self.data.nodes.get(&id).is_some_and(|n| !n.tags.is_empty())
            && !self.node_ways.contains_key(&id)
            && !diff.touched.contains(&node_ref(id))
    }

    fn can_delete_way(&self, id: i64, diff: &DiffInProgress) -> bool {
        self.data.ways.get(&id).is_some_and(|way| {
            !self.member_of.contains_key(&way_id(id))
                && !diff.touched.contains(&way_id(id))
                && !way
                    .nodes
                    .iter()
                    .any(|n| diff.touched.contains(&node_ref(*n)))
        })
    }

    /// Deletes a way and those of its nodes nothing else needs: used by no
    /// other way or relation and without tags.
    fn delete_way_and_lonely_nodes(&mut self, id: i64, diff: &mut DiffInProgress) {
        let way = self.data.ways[&id].clone();
        self.emit(Action::Delete, Object::Way(way.clone()), diff);
        let mut seen = HashSet::new();
        for node_id in way.nodes {
            if !seen.insert(node_id) {
                continue;
            }
            let lonely = self
                .data
                .nodes
                .get(&node_id)
                .is_some_and(|n| n.tags.is_empty())
                && !self.node_ways.contains_key(&node_id)
                && !self.member_of.contains_key(&node_ref(node_id));
            if lonely {
                let node = self.data.nodes[&node_id].clone();
                self.emit(Action::Delete, Object::Node(node), diff);
            }
        }
    }

    /// Outer member ways of a multipolygon that exist with all their nodes.
    fn outer_ways(&self, relation: i64) -> Vec<i64> {
        let Some(relation) = self.data.relations.get(&relation) else {
            return Vec::new();
        };
        relation
            .members
            .iter()
            .filter(|m| m.kind == ObjectType::Way && matches!(m.role.as_str(), "outer" | ""))
            .filter(|m| {
                self.data.ways.get(&m.id).is_some_and(|w| {
                    !w.nodes.is_empty() && w.nodes.iter().all(|n| self.data.nodes.contains_key(n))
                })
            })
            .map(|m| m.id)
            .collect()
    }

    fn closed_ring(&self, way: i64) -> Option<Vec<Location>> {
        let way = self.data.ways.get(&way)?;
        if way.nodes.len() < 4 || way.nodes.first() != way.nodes.last() {
            return None;
        }
        way.nodes
            .iter()
            .map(|n| self.data.nodes.get(n).and_then(|n| n.location))
            .collect()
    }

    /// A location near existing data, for new objects.
    fn anchor_location(&mut self) -> Option<Location> {
        for _ in 0..20 {
            let candidate = if self.rng.random_bool(0.5) {
                self.pick(Pool::Pois, |_, _| true)
            } else {
                self.pick(Pool::Ways, |_, _| true).and_then(|w| {
                    let nodes = &self.data.ways[&w].nodes;
                    nodes.choose(&mut self.rng).copied()
                })
            };
            if let Some(location) = candidate
                .and_then(|id| self.data.nodes.get(&id))
                .and_then(|n| n.location)
            {
                return Some(location);
            }
        }
        None
    }

    /// A random id from `pool` that still exists and passes `accept`.
    fn pick(&mut self, pool: Pool, accept: impl Fn(&Self, i64) -> bool) -> Option<i64> {
        for _ in 0..100 {
            let ids = match pool {
                Pool::Pois => &self.pois,
                Pool::Ways => &self.ways,
                Pool::Streets => &self.streets,
                Pool::Multipolygons => &self.multipolygons,
            };
            let &id = ids.choose(&mut self.rng)?;
            let exists = match pool {
                Pool::Pois => self.data.nodes.contains_key(&id),
                Pool::Ways | Pool::Streets => self.data.ways.contains_key(&id),
                Pool::Multipolygons => self.data.relations.contains_key(&id),
            };
            if exists && accept(self, id) {
                return Some(id);
            }
        }
        None
    }

    fn take_id(&mut self, kind: ObjectType) -> i64 {
        let slot = &mut self.next_ids[kind as usize];
        *slot += 1;
        *slot - 1
    }

    fn street_name(&mut self) -> String {
        format!(
            "{}{}",
            STREET_STEMS.choose(&mut self.rng).unwrap(),
            STREET_SUFFIXES.choose(&mut self.rng).unwrap()
        )
    }

    fn poi_name(&mut self) -> String {
        let (_, _, label) = POI_KINDS.choose(&mut self.rng).unwrap();
        format!("{label} {}", SURNAMES.choose(&mut self.rng).unwrap())
    }

    fn emit_modify(&mut self, object: Object, diff: &mut DiffInProgress) {
        self.emit(Action::Modify, object, diff);
    }

    /// Stamps `object` with its new version and this diff's metadata,
    /// records the change and applies it to the data and indexes.
    fn emit(&mut self, action: Action, mut object: Object, diff: &mut DiffInProgress) {
        let id = object.object_id();
        let version = match action {
            Action::Create => 1,
            _ => {
                self.data
                    .get(id)
                    .and_then(|o| o.meta().version)
                    .unwrap_or(1)
                    + 1
            }
        };
        // Spread edits over the minute in order, all after the previous
        // state's timestamp and none after this diff's.
        let progress = diff.changes.len().min(diff.target) as i64;
        let offset = 1 + progress * (self.interval_secs - 1) / diff.target.max(1) as i64;
        let (uid, user) = diff.mapper;
        let meta = Meta {
            version: Some(version),
            timestamp: Some(diff.interval_start + TimeDelta::seconds(offset)),
            changeset: Some(diff.changeset),
            uid: Some(uid),
            user: Some(user.to_string()),
        };
        if action == Action::Delete {
            // Deletes carry only metadata, as osmdbt writes them.
            object = match object {
                Object::Node(n) => Object::Node(Node {
                    id: n.id,
                    meta,
                    location: None,
                    tags: Tags::new(),
                }),
                Object::Way(w) => Object::Way(Way {
                    id: w.id,
                    meta,
                    nodes: Vec::new(),
                    tags: Tags::new(),
                }),
                Object::Relation(r) => Object::Relation(Relation {
                    id: r.id,
                    meta,
                    members: Vec::new(),
                    tags: Tags::new(),
                }),
            };
        } else {
            *meta_mut(&mut object) = meta;
        }
        if let Some(old) = self.data.get(id) {
            self.unindex(&old);
        }
        match action {
            Action::Create => diff.summary.created.push(id),
            Action::Delete => diff.summary.deleted.push(id),
            Action::Modify => {}
        }
        let change = Change { action, object };
        self.data.apply(&change);
        if action != Action::Delete {
            self.index(&change.object);
            if action == Action::Create {
                self.add_to_pools(&change.object);
            }
        }
        diff.touched.insert(id);
        diff.changes.push(change);
    }

    /// Records which ways use which nodes and which relations list which
    /// members.
    fn index(&mut self, object: &Object) {
        match object {
            Object::Node(_) => {}
            Object::Way(way) => self.index_way(way),
            Object::Relation(relation) => self.index_relation(relation),
        }
    }

    fn index_way(&mut self, way: &Way) {
        for node in distinct(&way.nodes) {
            self.node_ways.entry(node).or_default().push(way.id);
        }
    }

    fn index_relation(&mut self, relation: &Relation) {
        for member in &relation.members {
            let member = ObjectId {
                kind: member.kind,
                id: member.id,
            };
            let users = self.member_of.entry(member).or_default();
            if !users.contains(&relation.id) {
                users.push(relation.id);
            }
        }
    }

    fn unindex(&mut self, object: &Object) {
        match object {
            Object::Node(_) => {}
            Object::Way(way) => {
                for node in distinct(&way.nodes) {
                    remove_from_index(&mut self.node_ways, node, way.id);
                }
            }
            Object::Relation(relation) => {
                for member in &relation.members {
                    let member = ObjectId {
                        kind: member.kind,
                        id: member.id,
                    };
                    remove_from_index(&mut self.member_of, member, relation.id);
                }
            }
        }
    }

    /// Adds a new object to the candidate pools it belongs to.
    fn add_to_pools(&mut self, object: &Object) {
        match object {
            Object::Node(node) => {
                if !node.tags.is_empty() && !self.node_ways.contains_key(&node.id) {
                    self.pois.push(node.id);
                }
            }
            Object::Way(way) => {
                self.ways.push(way.id);
                if is_named_street(way) {
                    self.streets.push(way.id);
                }
            }
            Object::Relation(relation) => {
                if tag(&relation.tags, "type") == Some("multipolygon") {
                    self.multipolygons.push(relation.id);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Pool {
    Pois,
    Ways,
    Streets,
    Multipolygons,
}

fn remove_from_index<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, Vec<i64>>,
    key: K,
    value: i64,
) {
    if let Some(values) = index.get_mut(&key) {
        values.retain(|v| *v != value);
        if values.is_empty() {
            index.remove(&key);
        }
    }
}

fn distinct(ids: &[i64]) -> Vec<i64> {
    let mut seen = HashSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

fn node_ref(id: i64) -> ObjectId {
    ObjectId {
        kind: ObjectType::Node,
        id,
    }
}

fn way_id(id: i64) -> ObjectId {
    ObjectId {
        kind: ObjectType::Way,
        id,
    }
}

fn relation_ref(id: i64) -> ObjectId {
    ObjectId {
        kind: ObjectType::Relation,
        id,
    }
}

fn is_named_street(way: &Way) -> bool {
    tag(&way.tags, "highway").is_some() && tag(&way.tags, "name").is_some()
}

fn tag<'a>(tags: &'a Tags, key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Sets (in place, keeping tag order) or removes a tag.
fn set_tag(tags: &mut Tags, key: &str, value: Option<&str>) {
    match (tags.iter().position(|(k, _)| k == key), value) {
        (Some(i), Some(v)) => tags[i].1 = v.to_string(),
        (Some(i), None) => {
            tags.remove(i);
        }
        (None, Some(v)) => tags.push((key.to_string(), v.to_string())),
        (None, None) => {}
    }
}

fn tags_mut(object: &mut Object) -> &mut Tags {
    match object {
        Object::Node(n) => &mut n.tags,
        Object::Way(w) => &mut w.tags,
        Object::Relation(r) => &mut r.tags,
    }
}

fn meta_mut(object: &mut Object) -> &mut Meta {
    match object {
        Object::Node(n) => &mut n.meta,
        Object::Way(w) => &mut w.meta,
        Object::Relation(r) => &mut r.meta,
    }
}

const METRES_PER_DEGREE: f64 = 111_320.0;

/// Moves `from` by `metres` in direction `bearing` (radians from north),
/// on the 1e-7° grid.
fn offset_by_metres(from: Location, metres: f64, bearing: f64) -> Location {
    let lat = from.lat + metres * bearing.cos() / METRES_PER_DEGREE;
    let lon = from.lon
        + metres * bearing.sin() / (METRES_PER_DEGREE * from.lat.to_radians().cos().max(0.01));
    snap_to_grid(Location { lon, lat })
}

/// Rounds to the 1e-7° grid OSM stores, so a location survives being
/// written and read back unchanged.
fn snap_to_grid(location: Location) -> Location {
    let (lon, lat) = location.to_fixed();
    Location::from_fixed(lon, lat)
}

/// Four corners of a square of side `metres` starting at `origin`.
fn square_corners(origin: Location, metres: f64, heading: f64) -> Vec<Location> {
    let right = heading + std::f64::consts::FRAC_PI_2;
    let b = offset_by_metres(origin, metres, heading);
    let c = offset_by_metres(b, metres, right);
    let d = offset_by_metres(origin, metres, right);
    vec![origin, b, c, d]
}

fn bounding_box(ring: &[Location]) -> (Location, Location) {
    let mut min = ring[0];
    let mut max = ring[0];
    for p in ring {
        min.lon = min.lon.min(p.lon);
        min.lat = min.lat.min(p.lat);
        max.lon = max.lon.max(p.lon);
        max.lat = max.lat.max(p.lat);
    }
    (min, max)
}

/// Even-odd rule ray casting.
fn point_in_ring(p: Location, ring: &[Location]) -> bool {
    let mut inside = false;
    for pair in ring.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if (a.lat > p.lat) != (b.lat > p.lat) {
            let lon_at = a.lon + (p.lat - a.lat) / (b.lat - a.lat) * (b.lon - a.lon);
            if p.lon < lon_at {
                inside = !inside;
            }
        }
    }
    inside
}

// ---- writing feeds ---------------------------------------------------

/// Writes a replication feed directory in osmdbt's publish order.
#[derive(Debug, Clone)]
pub struct FeedWriter {
    dir: PathBuf,
}

impl FeedWriter {
    /// Starts a feed in `dir` (created if needed) at position `start`:
    /// writes `start`'s per-sequence state file and the top-level
    /// `state.txt`. The first diff written must be `start.sequence + 1`.
    pub fn create(dir: &Path, start: ReplicationState) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let writer = FeedWriter {
            dir: dir.to_path_buf(),
        };
        let state_path = writer.sequence_file(start.sequence, "state.txt");
        writer.publish(&state_path, start.to_state_file().as_bytes())?;
        writer.publish(&dir.join("state.txt"), start.to_state_file().as_bytes())?;
        Ok(writer)
    }

    /// Continues an existing feed in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let writer = FeedWriter {
            dir: dir.to_path_buf(),
        };
        writer.latest_state()?;
        Ok(writer)
    }

    /// The feed's base directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The top-level `state.txt`.
    pub fn latest_state(&self) -> Result<ReplicationState> {
        read_state_file(&self.dir.join("state.txt"))
    }

    /// Publishes one diff: `.osc.gz`, then `.state.txt`, then the
    /// top-level `state.txt`, each atomically by rename.
    pub fn write_diff(&self, state: ReplicationState, changes: &[Change]) -> Result<()> {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        write_osc(&mut gz, GENERATOR, changes)?;
        let compressed = gz.finish()?;
        self.publish(&self.sequence_file(state.sequence, "osc.gz"), &compressed)?;
        let state_text = state.to_state_file();
        self.publish(
            &self.sequence_file(state.sequence, "state.txt"),
            state_text.as_bytes(),
        )?;
        self.publish(&self.dir.join("state.txt"), state_text.as_bytes())
    }

    /// [`FeedWriter::write_diff`] of a generated diff.
    pub fn write_generated(&self, diff: &GeneratedDiff) -> Result<()> {
        self.write_diff(diff.state(), &diff.changes)
    }

    fn sequence_file(&self, sequence: u64, extension: &str) -> PathBuf {
        self.dir
            .join(format!("{}.{extension}", sequence_path(sequence)))
    }

    /// Writes to a hidden temporary name beside `path`, then renames.
    fn publish(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let parent = path.parent().expect("feed files have a parent");
        fs::create_dir_all(parent)?;
        let file_name = path.file_name().expect("feed files have a name");
        let temporary = parent.join(format!(".{}.tmp", file_name.to_string_lossy()));
        {
            let mut out = BufWriter::new(fs::File::create(&temporary)?);
            out.write_all(bytes)?;
            out.flush()?;
        }
        fs::rename(&temporary, path).with_context(|| format!("cannot publish {}", path.display()))
    }
}

/// Writes a whole generated feed: the start state, then each diff.
pub fn write_feed(dir: &Path, start: ReplicationState, diffs: &[GeneratedDiff]) -> Result<()> {
    let writer = FeedWriter::create(dir, start)?;
    for (expected, diff) in (start.sequence + 1..).zip(diffs) {
        if diff.sequence != expected {
            bail!("diff {} follows sequence {}", diff.sequence, expected - 1);
        }
        writer.write_generated(diff)?;
    }
    Ok(())
}

/// Writes a small hand-made feed: diff `start.sequence + i + 1` holds
/// `diffs[i]` in the order given, stamped `interval_secs` apart. Returns
/// the states written (start first).
pub fn write_feed_from_changes(
    dir: &Path,
    start: ReplicationState,
    interval_secs: u64,
    diffs: &[Vec<Change>],
) -> Result<Vec<ReplicationState>> {
    let writer = FeedWriter::create(dir, start)?;
    let mut states = vec![start];
    for (i, changes) in diffs.iter().enumerate() {
        let state = ReplicationState {
            sequence: start.sequence + i as u64 + 1,
            timestamp: start.timestamp + TimeDelta::seconds(interval_secs as i64 * (i as i64 + 1)),
        };
        writer.write_diff(state, changes)?;
        states.push(state);
    }
    Ok(states)
}

/// Reads an extract and writes a feed of `count` generated diffs to `dir`.
/// Returns the generated diffs (for their summaries).
pub fn generate_feed_from_pbf(
    pbf: &Path,
    dir: &Path,
    count: usize,
    seed: u64,
    start: ReplicationState,
    interval_secs: u64,
) -> Result<Vec<GeneratedDiff>> {
    let data = OsmData::from_pbf(pbf)?;
    let mut generator =
        FeedGenerator::new(data, seed, start.sequence, start.timestamp, interval_secs);
    let writer = FeedWriter::create(dir, start)?;
    let mut diffs = Vec::with_capacity(count);
    for _ in 0..count {
        let diff = generator.next_diff();
        writer.write_generated(&diff)?;
        diffs.push(diff);
    }
    Ok(diffs)
}

/// Reads and parses a state file (`state.txt` or `<n>.state.txt`).
pub fn read_state_file(path: &Path) -> Result<ReplicationState> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ReplicationState::parse(&text).with_context(|| format!("bad state file {}", path.display()))
}

/// The lowest and highest sequence that have a per-sequence state file in
/// a feed directory, or `None` for an empty one.
pub fn feed_range(dir: &Path) -> Result<Option<(u64, u64)>> {
    let mut range: Option<(u64, u64)> = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in
            fs::read_dir(&current).with_context(|| format!("cannot list {}", current.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let Ok(relative) = path.strip_prefix(dir) else {
                continue;
            };
            let relative = relative.to_string_lossy();
            if !relative.ends_with(".state.txt") {
                continue;
            }
            if let Some(sequence) = parse_sequence_path(&relative) {
                range = Some(match range {
                    None => (sequence, sequence),
                    Some((lo, hi)) => (lo.min(sequence), hi.max(sequence)),
                });
            }
        }
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_a_few_metres_and_on_the_grid() {
        let from = Location {
            lon: 9.52,
            lat: 47.14,
        };
        let to = offset_by_metres(from, 3.0, 1.0);
        let dx = (to.lon - from.lon) * METRES_PER_DEGREE * from.lat.to_radians().cos();
        let dy = (to.lat - from.lat) * METRES_PER_DEGREE;
        let distance = (dx * dx + dy * dy).sqrt();
        assert!((distance - 3.0).abs() < 0.05, "{distance}");
        let (lon, lat) = to.to_fixed();
        assert_eq!(Location::from_fixed(lon, lat), to);
    }

    #[test]
    fn point_in_ring_handles_a_square() {
        let ring: Vec<Location> = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]
            .iter()
            .map(|&(lon, lat)| Location { lon, lat })
            .collect();
        assert!(point_in_ring(Location { lon: 0.5, lat: 0.5 }, &ring));
        assert!(!point_in_ring(Location { lon: 1.5, lat: 0.5 }, &ring));
    }

    #[test]
    fn set_tag_keeps_order() {
        let mut tags: Tags = vec![("a".into(), "1".into()), ("b".into(), "2".into())];
        set_tag(&mut tags, "a", Some("3"));
        set_tag(&mut tags, "c", Some("4"));
        set_tag(&mut tags, "b", None);
        assert_eq!(
            tags,
            vec![("a".into(), "3".into()), ("c".into(), "4".into())]
        );
    }
}
