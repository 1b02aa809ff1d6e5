//! The change set: what one batch of diffs does to the OSM data.
//!
//! A [`ChangeSet`] is the hand-off from the replication stage to the apply
//! stage. It holds each object at most once (the newest version wins, as
//! osmium's `merge-changes --simplify` does), sorted by type then id, which is also the order
//! osm2pgsql demands of its input.

use crate::osm::{Object, ObjectId};
use std::collections::BTreeMap;

/// What a diff does with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A new object.
    Create,
    /// A new version of an existing object.
    Modify,
    /// The object is gone (its last version, often without tags).
    Delete,
}

impl Action {
    /// The OsmChange element name (`create`, `modify`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Modify => "modify",
            Action::Delete => "delete",
        }
    }
}

/// One object version and what happens to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What happens to the object.
    pub action: Action,
    /// The object version, as the diff gives it.
    pub object: Object,
}

impl Change {
    /// The changed object's type and id.
    pub fn object_id(&self) -> ObjectId {
        self.object.object_id()
    }
}

/// Counts per object type and action, for logs and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    /// Indexed `[node, way, relation][create, modify, delete]`.
    pub counts: [[u64; 3]; 3],
}

impl ChangeCounts {
    /// Counts one change.
    pub fn add(&mut self, change: &Change) {
        let t = change.object_id().kind as usize;
        let a = match change.action {
            Action::Create => 0,
            Action::Modify => 1,
            Action::Delete => 2,
        };
        self.counts[t][a] += 1;
    }

    /// All changes, of every type and action.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }
}

impl std::fmt::Display for ChangeCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "nodes {}/{}/{}, ways {}/{}/{}, relations {}/{}/{} (create/modify/delete)",
            c[0][0], c[0][1], c[0][2], c[1][0], c[1][1], c[1][2], c[2][0], c[2][1], c[2][2]
        )
    }
}

/// A merged, simplified set of changes: each object once, newest version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    changes: BTreeMap<ObjectId, Change>,
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a change, keeping the newest version of each object. Versions are
    /// compared first; on a tie (or missing versions) the change added later
    /// wins, so callers add diffs in sequence order.
    pub fn push(&mut self, change: Change) {
        let id = change.object_id();
        match self.changes.get(&id) {
            Some(existing)
                if version_of(existing) > version_of(&change) && version_of(&change).is_some() => {}
            _ => {
                self.changes.insert(id, change);
            }
        }
    }

    /// Merges a later change set into this one.
    pub fn merge(&mut self, later: ChangeSet) {
        for change in later.changes.into_values() {
            self.push(change);
        }
    }

    /// The number of objects changed.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether no object is changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Changes in osm2pgsql input order: nodes, ways, relations, each by id.
    pub fn iter(&self) -> impl Iterator<Item = &Change> {
        self.changes.values()
    }

    /// The change of one object, if the set has one.
    pub fn get(&self, id: ObjectId) -> Option<&Change> {
        self.changes.get(&id)
    }

    /// Changes counted by object type and action.
    pub fn counts(&self) -> ChangeCounts {
        let mut counts = ChangeCounts::default();
        for change in self.iter() {
            counts.add(change);
        }
        counts
    }
}

impl IntoIterator for ChangeSet {
    type Item = Change;
    type IntoIter = std::collections::btree_map::IntoValues<ObjectId, Change>;

    fn into_iter(self) -> Self::IntoIter {
        self.changes.into_values()
    }
}

impl FromIterator<Change> for ChangeSet {
    fn from_iter<I: IntoIterator<Item = Change>>(iter: I) -> Self {
        let mut set = ChangeSet::new();
        for change in iter {
            set.push(change);
        }
        set
    }
}

fn version_of(change: &Change) -> Option<u32> {
    change.object.meta().version
}
