//! Geometries from an OSM data file, built the way osm2pgsql's
//! `osm2pgsql-expire` (2.2+) builds them, for `tilepipe expire-tiles`: a
//! debugging aid and the oracle of the expiry tests.
//!
//! - untagged objects are skipped (but their locations and node lists are
//!   kept for the objects using them);
//! - a tagged node is a point;
//! - a closed way (first node id = last node id) is a polygon, or a line
//!   where the polygon cannot be assembled; any other way is a line;
//! - a `type=multipolygon` or `type=boundary` relation is a (multi)polygon
//!   of its member ways;
//! - a `type=route` or `type=multilinestring` relation is a
//!   multilinestring, one line per member way;
//! - any other relation is a collection of its member nodes (points) and
//!   member ways (lines); member relations are ignored.
//!
//! Polygons come from tilepipe's osmium-compatible assembler
//! ([`crate::apply::geom`]); a closed way that touches itself keeps its
//! first ring only, as in osm2pgsql 1.8. Nodes a way lists but the file
//! lacks are left out (counted; logged per way at debug level). Everything
//! is kept in memory, which suits extracts and test files.

use super::raster::{Commit, Expirer};
use crate::apply::geom::{
    assemble_multipolygon, linestring, project, single_or_multi, way_polygon, MemberWay,
};
use crate::osm::input::{read_objects, InputError, Metadata};
use crate::osm::{Node, Object, ObjectId, ObjectType, Relation, Tags, Way};
use geo::{Coord, Geometry, GeometryCollection, MultiLineString, Point};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

/// Why [`expire_osm_file`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum FromOsmError {
    /// The file could not be read or decoded.
    #[error(transparent)]
    Input(#[from] InputError),
}

/// What [`expire_osm_file`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FromOsmSummary {
    /// Tagged nodes read.
    pub nodes: u64,
    /// Tagged ways read.
    pub ways: u64,
    /// Tagged relations read.
    pub relations: u64,
    /// Tagged objects without a geometry (assembly failed, members
    /// missing); each is logged at debug level.
    pub failed: u64,
    /// Ways (or member ways) built without some of their nodes, which the
    /// file lacks (usual at the edge of an extract).
    pub incomplete_ways: u64,
    /// Units the expirer dropped or ignored because of its limits.
    pub limited: u64,
}

/// Builds geometries object by object, remembering node locations and way
/// node lists for the ways and relations that follow (OSM files list
/// nodes, then ways, then relations).
#[derive(Debug, Default)]
pub struct GeometryBuilder {
    locations: HashMap<i64, Coord<f64>>,
    ways: HashMap<i64, Vec<i64>>,
    /// Ways built without some of their nodes (a cell: counted while the
    /// maps are borrowed).
    incomplete_ways: Cell<u64>,
}

impl GeometryBuilder {
    /// An empty builder (no locations or way node lists known yet).
    pub fn new() -> GeometryBuilder {
        GeometryBuilder::default()
    }

    /// Ways built so far without some of their nodes.
    pub fn incomplete_ways(&self) -> u64 {
        self.incomplete_ways.get()
    }

    /// Remembers what later objects need from `object` and returns its
    /// geometry in EPSG:3857: `None` for untagged objects, and (with a
    /// warning) where no geometry can be built.
    pub fn add(&mut self, object: &Object) -> Option<Geometry<f64>> {
        match object {
            Object::Node(node) => self.node(node),
            Object::Way(way) => self.way(way),
            Object::Relation(relation) => self.relation(relation),
        }
    }

    fn node(&mut self, node: &Node) -> Option<Geometry<f64>> {
        let location = node.location?;
        let (lon, lat) = location.to_fixed();
        let point = project(lon, lat);
        self.locations.insert(node.id, point);
        (!node.tags.is_empty()).then_some(Geometry::Point(Point(point)))
    }

    /// Projected locations of `nodes`, those the file has.
    fn points(&self, way_id: i64, nodes: &[i64]) -> Vec<Coord<f64>> {
        let points: Vec<Coord<f64>> = nodes
            .iter()
            .filter_map(|id| self.locations.get(id).copied())
            .collect();
        if points.len() != nodes.len() {
            self.incomplete_ways.set(self.incomplete_ways.get() + 1);
            tracing::debug!(
                way = way_id,
                missing = nodes.len() - points.len(),
                "way {way_id}: {} of its {} nodes are not in the file",
                nodes.len() - points.len(),
                nodes.len()
            );
        }
        points
    }

    fn way(&mut self, way: &Way) -> Option<Geometry<f64>> {
        self.ways.insert(way.id, way.nodes.clone());
        if way.tags.is_empty() {
            return None;
        }
        let points = self.points(way.id, &way.nodes);
        let closed = way.nodes.len() > 1 && way.nodes.first() == way.nodes.last();
        let geometry = closed
            .then(|| way_polygon(&points).map(Geometry::Polygon))
            .flatten()
            .or_else(|| linestring(&points).map(Geometry::LineString));
        if geometry.is_none() {
            tracing::debug!(
                way = way.id,
                "way {}: no geometry (too few distinct nodes)",
                way.id
            );
        }
        geometry
    }

    fn member_line(&self, way_id: i64) -> Option<geo::LineString<f64>> {
        let nodes = self.ways.get(&way_id)?;
        linestring(&self.points(way_id, nodes))
    }

    fn relation(&mut self, relation: &Relation) -> Option<Geometry<f64>> {
        if relation.tags.is_empty() {
            return None;
        }
        let id = relation.id;
        let known = relation.members.iter().any(|m| match m.kind {
            ObjectType::Node => self.locations.contains_key(&m.id),
            ObjectType::Way => self.ways.contains_key(&m.id),
            ObjectType::Relation => false,
        });
        if !known {
            tracing::debug!(
                relation = id,
                "relation {id}: no node or way members in the file"
            );
            return None;
        }
        let ways = || {
            relation
                .members
                .iter()
                .filter(|m| m.kind == ObjectType::Way)
        };
        let geometry = match tag(&relation.tags, "type") {
            Some("multipolygon" | "boundary") => {
                let members: Vec<MemberWay> = ways()
                    .filter_map(|m| {
                        let nodes = self.ways.get(&m.id)?;
                        Some(MemberWay {
                            way_id: m.id,
                            role: m.role.clone(),
                            points: self.points(m.id, nodes),
                        })
                    })
                    .collect();
                assemble_multipolygon(&members)
                    .filter(|mp| !mp.0.is_empty())
                    .map(single_or_multi)
            }
            Some("route" | "multilinestring") => {
                let lines: Vec<_> = ways().filter_map(|m| self.member_line(m.id)).collect();
                (!lines.is_empty()).then(|| Geometry::MultiLineString(MultiLineString::new(lines)))
            }
            _ => {
                let parts: Vec<Geometry<f64>> = relation
                    .members
                    .iter()
                    .filter_map(|m| match m.kind {
                        ObjectType::Node => self
                            .locations
                            .get(&m.id)
                            .map(|c| Geometry::Point(Point(*c))),
                        ObjectType::Way => self.member_line(m.id).map(Geometry::LineString),
                        ObjectType::Relation => None,
                    })
                    .collect();
                (!parts.is_empty())
                    .then(|| Geometry::GeometryCollection(GeometryCollection::new_from(parts)))
            }
        };
        if geometry.is_none() {
            tracing::debug!(relation = id, "relation {id}: no geometry could be built");
        }
        geometry
    }
}

fn tag<'t>(tags: &'t Tags, key: &str) -> Option<&'t str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Expires the geometry of every tagged object of the OSM file at `path`
/// (.osm, .osm.gz, .osm.pbf), each as its own unit.
pub fn expire_osm_file(path: &Path, expirer: &mut Expirer) -> Result<FromOsmSummary, FromOsmError> {
    let mut builder = GeometryBuilder::new();
    let mut summary = FromOsmSummary::default();
    read_objects(
        path,
        2,
        Metadata::Timestamps,
        |batch: Vec<Object>| -> Result<(), FromOsmError> {
            for object in &batch {
                if object.tags().is_empty() {
                    builder.add(object);
                    continue;
                }
                let id: ObjectId = object.object_id();
                match id.kind {
                    ObjectType::Node => summary.nodes += 1,
                    ObjectType::Way => summary.ways += 1,
                    ObjectType::Relation => summary.relations += 1,
                }
                let Some(geometry) = builder.add(object) else {
                    summary.failed += 1;
                    continue;
                };
                match expirer.expire(id, &geometry) {
                    Commit::Added { .. } | Commit::Degraded { .. } => {}
                    Commit::Dropped | Commit::OverallLimitReached | Commit::Ignored => {
                        summary.limited += 1
                    }
                }
            }
            Ok(())
        },
    )?;
    summary.incomplete_ways = builder.incomplete_ways();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osm::{Location, Member, Meta};

    fn node(id: i64, lon: f64, lat: f64, tags: &[(&str, &str)]) -> Object {
        Object::Node(Node {
            id,
            meta: Meta::default(),
            location: Some(Location { lon, lat }),
            tags: tags_of(tags),
        })
    }

    fn way(id: i64, nodes: &[i64], tags: &[(&str, &str)]) -> Object {
        Object::Way(Way {
            id,
            meta: Meta::default(),
            nodes: nodes.to_vec(),
            tags: tags_of(tags),
        })
    }

    fn relation(id: i64, members: &[(ObjectType, i64, &str)], tags: &[(&str, &str)]) -> Object {
        Object::Relation(Relation {
            id,
            meta: Meta::default(),
            members: members
                .iter()
                .map(|&(kind, id, role)| Member {
                    kind,
                    id,
                    role: role.into(),
                })
                .collect(),
            tags: tags_of(tags),
        })
    }

    fn tags_of(tags: &[(&str, &str)]) -> Tags {
        tags.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn kind(g: &Option<Geometry<f64>>) -> &'static str {
        match g {
            None => "none",
            Some(Geometry::Point(_)) => "point",
            Some(Geometry::LineString(_)) => "line",
            Some(Geometry::Polygon(_)) => "polygon",
            Some(Geometry::MultiPolygon(_)) => "multipolygon",
            Some(Geometry::MultiLineString(_)) => "multilinestring",
            Some(Geometry::GeometryCollection(_)) => "collection",
            Some(_) => "other",
        }
    }

    #[test]
    fn geometries_by_object_kind() {
        let mut b = GeometryBuilder::new();
        // A square of untagged nodes, a tagged node, a dangling pair.
        for (id, lon, lat) in [
            (1, 9.50, 47.10),
            (2, 9.51, 47.10),
            (3, 9.51, 47.11),
            (4, 9.50, 47.11),
        ] {
            assert_eq!(kind(&b.add(&node(id, lon, lat, &[]))), "none");
        }
        assert_eq!(
            kind(&b.add(&node(5, 9.52, 47.12, &[("amenity", "cafe")]))),
            "point"
        );
        assert_eq!(
            kind(&b.add(&way(10, &[1, 2, 3, 4, 1], &[("building", "yes")]))),
            "polygon"
        );
        assert_eq!(
            kind(&b.add(&way(11, &[1, 2, 3], &[("highway", "path")]))),
            "line"
        );
        // Closed but collapsing (there and back): falls back to a line.
        assert_eq!(
            kind(&b.add(&way(12, &[1, 2, 1], &[("barrier", "fence")]))),
            "line"
        );
        // All nodes missing: no geometry.
        assert_eq!(
            kind(&b.add(&way(13, &[98, 99], &[("highway", "path")]))),
            "none"
        );
        // Untagged way: remembered for relations only.
        assert_eq!(kind(&b.add(&way(14, &[1, 2, 3, 4, 1], &[]))), "none");
        assert_eq!(
            kind(&b.add(&relation(
                20,
                &[(ObjectType::Way, 14, "outer")],
                &[("type", "multipolygon"), ("landuse", "grass")]
            ))),
            "polygon"
        );
        assert_eq!(
            kind(&b.add(&relation(
                21,
                &[(ObjectType::Way, 11, ""), (ObjectType::Way, 14, "")],
                &[("type", "route")]
            ))),
            "multilinestring"
        );
        assert_eq!(
            kind(&b.add(&relation(
                22,
                &[
                    (ObjectType::Node, 5, ""),
                    (ObjectType::Way, 11, ""),
                    (ObjectType::Relation, 20, "")
                ],
                &[("type", "site")]
            ))),
            "collection"
        );
        // Untagged relation, relation with unknown members only.
        assert_eq!(
            kind(&b.add(&relation(23, &[(ObjectType::Way, 14, "")], &[]))),
            "none"
        );
        assert_eq!(
            kind(&b.add(&relation(
                24,
                &[(ObjectType::Way, 77, "")],
                &[("type", "route")]
            ))),
            "none"
        );
        // An open ring: the multipolygon fails.
        assert_eq!(
            kind(&b.add(&relation(
                25,
                &[(ObjectType::Way, 11, "outer")],
                &[("type", "multipolygon")]
            ))),
            "none"
        );
    }
}
