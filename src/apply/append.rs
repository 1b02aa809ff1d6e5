//! Applying a change set to an imported database, inside the caller's
//! transaction (which also stores the replication position).
//!
//! Steps, each one batched query or COPY per table, never per object:
//! 1. the middle: delete every changed object, COPY the new versions;
//! 2. propagation (osm2pgsql's `--append` rules, `osmdata_t` and
//!    `dependency_manager_t`): ways using changed nodes, relations using
//!    changed nodes or changed/affected ways, minus what the diff itself
//!    changes;
//! 3. the output: delete the rows of every changed or affected object
//!    (`DELETE … RETURNING` hands back the old geometries), rebuild the
//!    rows from the middle and COPY them in;
//! 4. read back the new rows' geometries and column digests, and pair old
//!    with new per output row: the [`RowChange`]s the expiry stage needs.
//!
//! Re-applying a diff leaves the same database: creates of existing
//! objects replace them (everything is deleted first), deletes of missing
//! objects are no-ops, and nodes a way references but nobody has are
//! skipped when building its geometry, as osm2pgsql does.

use super::middle::Middle;
use super::output::{OutputTables, Row, RowsQuery, StoredRow, TableKind};
use super::process::{NodeLocations, Processor};
use super::settings::ImportSettings;
use super::ApplyError;
use crate::osm::{Action, ChangeSet};
use crate::osm::{Location, Object, ObjectType, Way};
use postgres::GenericClient;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What happened to the rows of one object in one output table.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub table: TableKind,
    /// Negative for relations, as in the tables.
    pub osm_id: i64,
    /// EWKB of the rows before the batch.
    pub old: Vec<Vec<u8>>,
    /// EWKB of the rows after the batch (rows the validity trigger refused
    /// are not here).
    pub new: Vec<Vec<u8>>,
    /// Whether any geometry or any column differs: a rewrite that changes
    /// nothing a style reads does not need new tiles.
    pub changed: bool,
}

/// The outcome of one applied change set.
#[derive(Debug, Clone, Default)]
pub struct ApplyResult {
    pub row_changes: Vec<RowChange>,
    /// Objects rebuilt because something they use changed.
    pub propagated_ways: usize,
    pub propagated_relations: usize,
}

impl ApplyResult {
    /// Row changes that alter what a map shows.
    pub fn changed_rows(&self) -> impl Iterator<Item = &RowChange> {
        self.row_changes.iter().filter(|c| c.changed)
    }
}

/// Applies change sets to one database layout.
pub struct Applier {
    middle: Middle,
    tables: OutputTables,
    processor: Processor,
}

#[derive(Default)]
struct Ids {
    upserted: BTreeSet<i64>,
    deleted: BTreeSet<i64>,
}

impl Ids {
    fn all(&self) -> Vec<i64> {
        self.upserted.union(&self.deleted).copied().collect()
    }
}

impl NodeLocations for HashMap<i64, Location> {
    fn location(&self, id: i64) -> Option<Location> {
        self.get(&id).copied()
    }
}

impl Applier {
    pub fn new(middle: Middle, tables: OutputTables, processor: Processor) -> Self {
        Applier {
            middle,
            tables,
            processor,
        }
    }

    /// The applier for a database imported with `settings` (the ones
    /// [`ImportSettings::load`] reads back): middle and output tables of its
    /// schema and prefix, rows built with its style and transform.
    pub fn for_settings(settings: &ImportSettings) -> Result<Self, ApplyError> {
        let processor = Processor::new(settings)?;
        let tables = OutputTables::new(
            &settings.schema,
            &settings.prefix,
            processor.style().clone(),
        );
        let middle = Middle::new(&settings.schema, &settings.prefix);
        Ok(Applier::new(middle, tables, processor))
    }

    /// Applies `changes` within `client`'s current transaction.
    pub fn apply(
        &mut self,
        client: &mut impl GenericClient,
        changes: &ChangeSet,
    ) -> Result<ApplyResult, ApplyError> {
        let mut ids: BTreeMap<ObjectType, Ids> = BTreeMap::new();
        let mut nodes = Vec::new();
        let mut ways = Vec::new();
        let mut relations = Vec::new();
        for change in changes.iter() {
            let id = change.object_id();
            let entry = ids.entry(id.kind).or_default();
            if change.action == Action::Delete {
                entry.deleted.insert(id.id);
                continue;
            }
            entry.upserted.insert(id.id);
            match &change.object {
                Object::Node(n) => nodes.push(n),
                Object::Way(w) => ways.push(w),
                Object::Relation(r) => relations.push(r),
            }
        }
        let node_ids = ids.remove(&ObjectType::Node).unwrap_or_default();
        let way_ids = ids.remove(&ObjectType::Way).unwrap_or_default();
        let relation_ids = ids.remove(&ObjectType::Relation).unwrap_or_default();

        let mut timer = StepTimer::new();
        // 1. Middle.
        self.middle
            .delete(client, ObjectType::Node, &node_ids.all())?;
        self.middle
            .delete(client, ObjectType::Way, &way_ids.all())?;
        self.middle
            .delete(client, ObjectType::Relation, &relation_ids.all())?;
        self.middle.copy_nodes(client, nodes.iter().copied())?;
        self.middle.copy_ways(client, ways.iter().copied())?;
        self.middle
            .copy_relations(client, relations.iter().copied())?;

        timer.step("middle");
        // 2. Propagation. Deletes are not propagated: their parents are
        // expected in the same diff (osm2pgsql's rule).
        let moved_nodes: Vec<i64> = node_ids.upserted.iter().copied().collect();
        let mut parent_ways: BTreeSet<i64> = self
            .middle
            .ways_using_nodes(client, &moved_nodes)?
            .into_iter()
            .collect();
        for id in way_ids.upserted.iter().chain(&way_ids.deleted) {
            parent_ways.remove(id);
        }
        let changed_ways: Vec<i64> = way_ids.upserted.union(&parent_ways).copied().collect();
        let mut parent_relations: BTreeSet<i64> = self
            .middle
            .relations_using(client, &moved_nodes, &changed_ways)?
            .into_iter()
            .collect();
        for id in relation_ids.upserted.iter().chain(&relation_ids.deleted) {
            parent_relations.remove(id);
        }

        timer.step("propagation");
        // 3. Output: delete old rows, rebuild.
        let rebuild_ways: Vec<i64> = changed_ways.clone();
        let rebuild_relations: Vec<i64> = relation_ids
            .upserted
            .union(&parent_relations)
            .copied()
            .collect();
        let point_ids = node_ids.all();
        let mut area_ids: Vec<i64> = way_ids
            .all()
            .into_iter()
            .chain(parent_ways.iter().copied())
            .collect();
        area_ids.extend(
            relation_ids
                .all()
                .iter()
                .chain(&parent_relations)
                .map(|id| -id),
        );
        area_ids.sort_unstable();
        area_ids.dedup();

        let mut removed: HashMap<TableKind, Vec<StoredRow>> = HashMap::new();
        removed.insert(
            TableKind::Point,
            self.tables
                .rows(client, TableKind::Point, &point_ids, RowsQuery::Delete)?,
        );
        for kind in [TableKind::Line, TableKind::Polygon, TableKind::Roads] {
            removed.insert(
                kind,
                self.tables
                    .rows(client, kind, &area_ids, RowsQuery::Delete)?,
            );
        }

        timer.step("output delete");
        let mut new_rows: HashMap<TableKind, Vec<Row>> = HashMap::new();
        for node in &nodes {
            for (kind, row) in self.processor.node(node)? {
                new_rows.entry(kind).or_default().push(row);
            }
        }
        let way_objects = self.middle.ways(client, &rebuild_ways)?;
        let relation_objects = self.middle.relations(client, &rebuild_relations)?;
        let member_way_ids: Vec<i64> = relation_objects
            .iter()
            .flat_map(|r| r.members.iter())
            .filter(|m| m.kind == ObjectType::Way)
            .map(|m| m.id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut member_ways: HashMap<i64, Way> = self
            .middle
            .ways(client, &member_way_ids)?
            .into_iter()
            .map(|w| (w.id, w))
            .collect();
        for way in &way_objects {
            member_ways.entry(way.id).or_insert_with(|| way.clone());
        }
        let needed_nodes: Vec<i64> = member_ways
            .values()
            .flat_map(|w| w.nodes.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let locations = self.middle.node_locations(client, &needed_nodes)?;
        for way in &way_objects {
            for (kind, row) in self.processor.way(way, &locations)? {
                new_rows.entry(kind).or_default().push(row);
            }
        }
        for relation in &relation_objects {
            for (kind, row) in self
                .processor
                .relation(relation, &member_ways, &locations)?
            {
                new_rows.entry(kind).or_default().push(row);
            }
        }
        timer.step("rebuild");
        for kind in TableKind::ALL {
            let Some(rows) = new_rows.get(&kind).filter(|rows| !rows.is_empty()) else {
                continue;
            };
            let mut writer = self.tables.copy_writer(client, kind)?;
            for row in rows {
                writer.write(row)?;
            }
            writer.finish()?;
        }

        timer.step("output copy");
        // 4. Pair old and new rows.
        let mut row_changes = Vec::new();
        for kind in TableKind::ALL {
            let ids: Vec<i64> = if kind == TableKind::Point {
                point_ids.clone()
            } else {
                area_ids.clone()
            };
            let written = self.tables.rows(client, kind, &ids, RowsQuery::Read)?;
            row_changes.extend(pair_rows(
                kind,
                removed.remove(&kind).unwrap_or_default(),
                written,
            ));
        }
        timer.step("read back");
        tracing::debug!(steps = %timer, "applied change set");
        Ok(ApplyResult {
            row_changes,
            propagated_ways: parent_ways.len(),
            propagated_relations: parent_relations.len(),
        })
    }
}

/// Groups old and new rows by object and compares them.
/// The rows of one object, order-independent: geometry and column digest.
fn fingerprint(rows: &[StoredRow]) -> Vec<(&[u8], i64)> {
    let mut f: Vec<(&[u8], i64)> = rows
        .iter()
        .map(|r| (r.way.as_slice(), r.columns_digest))
        .collect();
    f.sort();
    f
}

fn pair_rows(kind: TableKind, old: Vec<StoredRow>, new: Vec<StoredRow>) -> Vec<RowChange> {
    let mut by_id: BTreeMap<i64, (Vec<StoredRow>, Vec<StoredRow>)> = BTreeMap::new();
    for row in old {
        by_id.entry(row.osm_id).or_default().0.push(row);
    }
    for row in new {
        by_id.entry(row.osm_id).or_default().1.push(row);
    }
    by_id
        .into_iter()
        .map(|(osm_id, (old, new))| {
            let changed = fingerprint(&old) != fingerprint(&new);
            RowChange {
                table: kind,
                osm_id,
                old: old.into_iter().map(|r| r.way).collect(),
                new: new.into_iter().map(|r| r.way).collect(),
                changed,
            }
        })
        .collect()
}

/// Raises `current_timestamp` in the properties to the newest object
/// timestamp of `changes`, as osm2pgsql does after an append (it is what
/// `init --start-at MINUTES` counts back from).
pub fn raise_current_timestamp(
    client: &mut impl GenericClient,
    schema: &str,
    changes: &ChangeSet,
) -> Result<(), ApplyError> {
    let Some(newest) = changes
        .iter()
        .filter_map(|c| c.object.meta().timestamp)
        .max()
    else {
        return Ok(());
    };
    let current = crate::db::properties::read_property(client, schema, "current_timestamp")?
        .and_then(|v| crate::replication::state::parse_timestamp(&v));
    if current.is_none_or(|c| c < newest) {
        let text = crate::replication::state::format_timestamp(newest);
        crate::db::properties::write(client, schema, &[("current_timestamp", &text)])?;
    }
    Ok(())
}

/// Durations of an apply's steps, for the debug log.
struct StepTimer {
    last: std::time::Instant,
    steps: Vec<(&'static str, std::time::Duration)>,
}

impl StepTimer {
    fn new() -> Self {
        StepTimer {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    fn step(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for StepTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, took)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.0} ms", took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}
