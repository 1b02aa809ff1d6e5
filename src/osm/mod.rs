//! OpenStreetMap data and its file formats, shared by every stage: the
//! model (objects, tags, members) here, and beside it
//! - [`changeset`]: merged changes, newest version wins;
//! - [`osc`] and [`osc_write`]: OsmChange (and `.osm`) XML, read and written;
//! - [`input`]: reading an OSM file (PBF or XML) in osm2pgsql's input order;
//! - [`pbf_header`]: a PBF file's header block (replication position).
//!
//! Replication, apply, `tilepipe expire-tiles` and the test kit all read and
//! write OSM data through here, so none of them imports another stage for
//! a file format.

pub mod changeset;
pub mod input;
pub mod osc;
pub mod osc_write;
pub mod pbf_header;

pub use changeset::{Action, Change, ChangeSet};

use chrono::{DateTime, Utc};
use std::fmt;

/// The three OSM object kinds, ordered as osm2pgsql requires its input
/// (nodes, then ways, then relations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectType {
    /// A point with a location.
    Node,
    /// An ordered list of nodes.
    Way,
    /// An ordered list of members of any type, with roles.
    Relation,
}

impl ObjectType {
    /// The XML element name (`node`, `way`, `relation`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Node => "node",
            ObjectType::Way => "way",
            ObjectType::Relation => "relation",
        }
    }

    /// The one-letter code used by osm2pgsql's middle tables (`n`, `w`, `r`).
    pub fn letter(self) -> char {
        match self {
            ObjectType::Node => 'n',
            ObjectType::Way => 'w',
            ObjectType::Relation => 'r',
        }
    }

    /// Parses an XML element name or member `type` attribute.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "node" => Some(ObjectType::Node),
            "way" => Some(ObjectType::Way),
            "relation" => Some(ObjectType::Relation),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type and id pair, e.g. `way 42`; what errors and logs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// The object's type.
    pub kind: ObjectType,
    /// Its id, unique within the type.
    pub id: i64,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// Tags in file order. A small vector beats a map for the typical 0–10 tags.
pub type Tags = Vec<(String, String)>;

/// Owned tags from borrowed key/value pairs, in their order.
pub(crate) fn owned_tags<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Tags {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Tags from literal pairs, for unit tests.
#[cfg(test)]
pub(crate) fn tags(pairs: &[(&str, &str)]) -> Tags {
    owned_tags(pairs.iter().copied())
}

/// Metadata every OSM object version carries. Fields are optional because
/// extracts and some diffs omit them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The version number, from 1.
    pub version: Option<u32>,
    /// When this version was saved.
    pub timestamp: Option<DateTime<Utc>>,
    /// The changeset that saved it.
    pub changeset: Option<i64>,
    /// The id of the user who saved it.
    pub uid: Option<i64>,
    /// That user's display name (never empty).
    pub user: Option<String>,
}

/// A node location in WGS84 degrees. Absent on deleted nodes in some diffs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    /// Longitude, degrees east.
    pub lon: f64,
    /// Latitude, degrees north.
    pub lat: f64,
}

impl Location {
    /// Fixed-point 1e-7 degrees, as osm2pgsql's middle stores them.
    pub fn to_fixed(self) -> (i32, i32) {
        (
            (self.lon * 1e7).round() as i32,
            (self.lat * 1e7).round() as i32,
        )
    }

    /// From fixed-point 1e-7 degrees (the middle's, PBF's); the inverse of
    /// [`to_fixed`](Self::to_fixed).
    pub fn from_fixed(lon: i32, lat: i32) -> Self {
        Location {
            lon: lon as f64 / 1e7,
            lat: lat as f64 / 1e7,
        }
    }
}

/// One version of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The node id.
    pub id: i64,
    /// Version metadata.
    pub meta: Meta,
    /// Where it is; `None` only on deletes some diffs write without one.
    pub location: Option<Location>,
    /// Its tags, in file order.
    pub tags: Tags,
}

/// One version of a way.
#[derive(Debug, Clone, PartialEq)]
pub struct Way {
    /// The way id.
    pub id: i64,
    /// Version metadata.
    pub meta: Meta,
    /// The ids of its nodes, in order (closed when first = last).
    pub nodes: Vec<i64>,
    /// Its tags, in file order.
    pub tags: Tags,
}

/// One member of a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's type.
    pub kind: ObjectType,
    /// The member's id.
    pub id: i64,
    /// Its role in the relation (`outer`, `stop`, …; may be empty).
    pub role: String,
}

/// One version of a relation.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// The relation id.
    pub id: i64,
    /// Version metadata.
    pub meta: Meta,
    /// Its members, in order (the same object may appear more than once).
    pub members: Vec<Member>,
    /// Its tags, in file order.
    pub tags: Tags,
}

/// Any one OSM object.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A node.
    Node(Node),
    /// A way.
    Way(Way),
    /// A relation.
    Relation(Relation),
}

impl Object {
    /// The object's type and id.
    pub fn object_id(&self) -> ObjectId {
        match self {
            Object::Node(n) => ObjectId {
                kind: ObjectType::Node,
                id: n.id,
            },
            Object::Way(w) => ObjectId {
                kind: ObjectType::Way,
                id: w.id,
            },
            Object::Relation(r) => ObjectId {
                kind: ObjectType::Relation,
                id: r.id,
            },
        }
    }

    /// The object's version metadata.
    pub fn meta(&self) -> &Meta {
        match self {
            Object::Node(n) => &n.meta,
            Object::Way(w) => &w.meta,
            Object::Relation(r) => &r.meta,
        }
    }

    /// The object's tags.
    pub fn tags(&self) -> &Tags {
        match self {
            Object::Node(n) => &n.tags,
            Object::Way(w) => &w.tags,
            Object::Relation(r) => &r.tags,
        }
    }
}
