//! From one OSM object to its output rows, as osm2pgsql 1.8's pgsql output
//! does it (`pgsql_out_node`, `pgsql_out_way`, `pgsql_process_relation`):
//! the tag transform decides what the object becomes, the geometry code
//! builds it, the style turns tags into column values.

use super::geom::{self, ewkb, MemberWay, MAX_LINE_LENGTH};
use super::output::{Row, TableKind};
use super::settings::ImportSettings;
use super::style::Style;
use super::transform::{row_values, MemberTags, TagTransform, TransformError};
use crate::osm::{Location, Node, ObjectId, ObjectType, Relation, Way};
use geo::{Coord, LineString, Point};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Where node locations come from: memory during an import, the middle
/// during an append.
pub trait NodeLocations {
    /// The node's location; `None` when it is unknown or has none (the
    /// node is then left out of geometries, as osm2pgsql does).
    fn location(&self, id: i64) -> Option<Location>;
}

/// Where member ways come from: borrowed from a map, or rebuilt from the
/// import's packed store.
pub trait WayLookup {
    /// The way; `None` when it is unknown (the member is then left out).
    fn way(&self, id: i64) -> Option<Cow<'_, Way>>;

    /// Only the way's node ids, for geometries: a store may give them
    /// without rebuilding the way's tags.
    fn way_nodes(&self, id: i64) -> Option<Cow<'_, [i64]>> {
        self.way(id).map(|way| match way {
            Cow::Borrowed(way) => Cow::Borrowed(way.nodes.as_slice()),
            Cow::Owned(way) => Cow::Owned(way.nodes),
        })
    }
}

impl WayLookup for HashMap<i64, Way> {
    fn way(&self, id: i64) -> Option<Cow<'_, Way>> {
        self.get(&id).map(Cow::Borrowed)
    }
}

/// The tag transform failed on one object (a Lua error).
#[derive(Debug, thiserror::Error)]
#[error("{object}: {source}")]
pub struct ProcessError {
    /// The object being transformed.
    pub object: ObjectId,
    /// The transform's error.
    #[source]
    pub source: TransformError,
}

/// Builds output rows; one per thread (a Lua transform is not `Send`;
/// the classic one can be forked onto other threads, see
/// [`Processor::fork`]).
pub struct Processor<T: TagTransform + ?Sized = dyn TagTransform> {
    style: Arc<Style>,
    transform: Box<T>,
    multi_geometry: bool,
    /// The classic rules drop every untagged object, so it is skipped
    /// without a call; a Lua script may keep one, so it sees them all.
    skip_untagged: bool,
}

/// Rows produced for one object, with the table each goes to.
pub type Rows = Vec<(TableKind, Row)>;

impl Processor {
    /// A processor with the style and tag transform of `settings`.
    pub fn new(settings: &ImportSettings) -> Result<Self, TransformError> {
        let style = Arc::new(settings.transform.style()?);
        let transform = settings.transform.build(style.clone())?;
        Ok(Processor {
            style,
            transform,
            multi_geometry: settings.transform.multi_geometry,
            skip_untagged: !settings.transform.uses_lua(),
        })
    }

    /// A processor for another thread, doing what this one does, when
    /// its transform can be copied (the classic rules; not a Lua script).
    pub fn fork(&self) -> Option<Processor<dyn TagTransform + Send>> {
        Some(Processor {
            style: self.style.clone(),
            transform: self.transform.fork()?,
            multi_geometry: self.multi_geometry,
            skip_untagged: self.skip_untagged,
        })
    }
}

impl<T: TagTransform + ?Sized> Processor<T> {
    /// Whether objects without tags can produce rows (a Lua transform
    /// may keep them; the classic rules drop them).
    pub fn keeps_untagged(&self) -> bool {
        !self.skip_untagged
    }

    /// The style, with its hstore options, that decides the columns.
    pub fn style(&self) -> &Arc<Style> {
        &self.style
    }

    fn row(
        &self,
        table: TableKind,
        osm_id: i64,
        tags: &crate::osm::Tags,
        way_area: Option<f64>,
        way: Vec<u8>,
    ) -> (TableKind, Row) {
        let values = row_values(&self.style, table, tags, way_area);
        (
            table,
            Row {
                osm_id,
                values,
                way,
            },
        )
    }

    /// A tagged node becomes a point.
    pub fn node(&mut self, node: &Node) -> Result<Rows, ProcessError> {
        let Some(location) = node.location else {
            return Ok(Rows::new());
        };
        if node.tags.is_empty() && self.skip_untagged {
            return Ok(Rows::new());
        }
        let object = ObjectId {
            kind: ObjectType::Node,
            id: node.id,
        };
        let filtered = self
            .transform
            .node(&node.tags)
            .map_err(|source| ProcessError { object, source })?;
        let Some(filtered) = filtered else {
            return Ok(Rows::new());
        };
        let point = Point(project(location));
        Ok(vec![self.row(
            TableKind::Point,
            node.id,
            &filtered.tags,
            None,
            ewkb::point(&point),
        )])
    }

    /// A way becomes a polygon (area tags and closed) or line pieces (and
    /// roads rows).
    pub fn way(
        &mut self,
        way: &Way,
        locations: &(impl NodeLocations + ?Sized),
    ) -> Result<Rows, ProcessError> {
        if way.tags.is_empty() && self.skip_untagged {
            return Ok(Rows::new());
        }
        let object = ObjectId {
            kind: ObjectType::Way,
            id: way.id,
        };
        let filtered = self
            .transform
            .way(&way.tags)
            .map_err(|source| ProcessError { object, source })?;
        let Some(filtered) = filtered else {
            return Ok(Rows::new());
        };
        let points = way_points(way, locations);
        let closed = way.nodes.len() > 1 && way.nodes.first() == way.nodes.last();
        let mut rows = Rows::new();
        if filtered.polygon && closed {
            // A failed assembly writes nothing, not even a line (osm2pgsql).
            if let Some(polygon) = geom::way_polygon(&points) {
                let area = geom::area(&polygon);
                rows.push(self.row(
                    TableKind::Polygon,
                    way.id,
                    &filtered.tags,
                    Some(area),
                    ewkb::polygon(&polygon),
                ));
            }
            return Ok(rows);
        }
        if let Some(line) = geom::linestring(&points) {
            self.push_lines(
                &mut rows,
                way.id,
                &filtered.tags,
                filtered.roads,
                vec![line],
            );
        }
        Ok(rows)
    }

    /// A route, boundary or multipolygon relation becomes merged lines
    /// and/or polygons, with `osm_id` = −id.
    pub fn relation(
        &mut self,
        relation: &Relation,
        ways: &(impl WayLookup + ?Sized),
        locations: &(impl NodeLocations + ?Sized),
    ) -> Result<Rows, ProcessError> {
        let members: Vec<(Cow<'_, Way>, &str)> = relation
            .members
            .iter()
            .filter(|m| m.kind == ObjectType::Way)
            .filter_map(|m| ways.way(m.id).map(|w| (w, m.role.as_str())))
            .collect();
        let member_tags: Vec<MemberTags<'_>> = members
            .iter()
            .map(|(way, role)| MemberTags {
                tags: &way.tags,
                role,
            })
            .collect();
        let object = ObjectId {
            kind: ObjectType::Relation,
            id: relation.id,
        };
        let filtered = self
            .transform
            .relation(&relation.tags, &member_tags)
            .map_err(|source| ProcessError { object, source })?;
        let Some(filtered) = filtered else {
            return Ok(Rows::new());
        };
        let osm_id = -relation.id;
        let mut rows = Rows::new();
        if filtered.kind.writes_lines() {
            let lines: Vec<LineString<f64>> = members
                .iter()
                .filter_map(|(way, _)| geom::linestring(&way_points(way, locations)))
                .collect();
            if !lines.is_empty() {
                let merged = geom::merge_lines(lines);
                self.push_lines(&mut rows, osm_id, &filtered.tags, filtered.roads, merged);
            }
        }
        if filtered.kind.writes_polygons() {
            let member_ways: Vec<MemberWay> = members
                .iter()
                .map(|(way, role)| MemberWay {
                    way_id: way.id,
                    role: role.to_string(),
                    points: way_points(way, locations),
                })
                .collect();
            if let Some(multipolygon) = geom::assemble_multipolygon(&member_ways) {
                if self.multi_geometry {
                    let area = geom::area(&multipolygon);
                    let geometry = geom::single_or_multi(multipolygon);
                    let bytes = ewkb::write(&geometry).expect("polygons always encode");
                    rows.push(self.row(
                        TableKind::Polygon,
                        osm_id,
                        &filtered.tags,
                        Some(area),
                        bytes,
                    ));
                } else {
                    for polygon in geom::polygon_parts(multipolygon) {
                        let area = geom::area(&polygon);
                        rows.push(self.row(
                            TableKind::Polygon,
                            osm_id,
                            &filtered.tags,
                            Some(area),
                            ewkb::polygon(&polygon),
                        ));
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Line rows, split at 100 km, copied to roads when flagged.
    fn push_lines(
        &self,
        rows: &mut Rows,
        osm_id: i64,
        tags: &crate::osm::Tags,
        roads: bool,
        lines: Vec<LineString<f64>>,
    ) {
        for line in lines {
            for piece in geom::split_line(&line, MAX_LINE_LENGTH) {
                let bytes = ewkb::linestring(&piece);
                if roads {
                    rows.push(self.row(TableKind::Roads, osm_id, tags, None, bytes.clone()));
                }
                rows.push(self.row(TableKind::Line, osm_id, tags, None, bytes));
            }
        }
    }
}

fn project(location: Location) -> Coord<f64> {
    let (lon, lat) = location.to_fixed();
    geom::project(lon, lat)
}

/// The projected locations of a way's nodes; nodes nobody has (missing
/// from an extract or the middle) are skipped, as osm2pgsql does.
fn way_points(way: &Way, locations: &(impl NodeLocations + ?Sized)) -> Vec<Coord<f64>> {
    way.nodes
        .iter()
        .filter_map(|id| locations.location(*id))
        .map(project)
        .collect()
}
