//! Applying a change set to a flex database, inside the caller's
//! transaction, by osm2pgsql 1.8's rules for the flex output
//! (`output_flex_t::*_modify`, `pending_*`, `reprocess_marked`;
//! `osmdata_t::process_dependents`):
//!
//! 1. two-stage configs: `select_relation_members` on the old version of
//!    every changed or deleted relation, before the middle changes;
//! 2. the middle and propagation, as for the classic output;
//! 3. the rows of every changed object and unchanged parent are deleted
//!    from the tables that take its type (`DELETE … RETURNING` keeps the
//!    old geometries); the diff's objects and the parents are processed
//!    again, untagged ones included (1.8's append does not filter), the
//!    relations also through `select_relation_members`;
//! 4. stage 1c and 2: the relations of marked ways are replayed with
//!    inserts disabled, then the marked ways are processed again with
//!    `osm2pgsql.stage = 2`, replacing their rows;
//! 5. the new rows are COPYed in (the validity trigger drops invalid
//!    geometries), read back and paired with the old ones.

use super::expire::ExpireOutputDef;
use super::output::{FlexTables, StoredFlexRow};
use super::runtime::{FlexRow, FlexRuntime, Mode};
use super::FlexSettings;
use crate::apply::append::{
    changed_or_parents, load_for_rebuild, middle_for, pair_rows, propagate, update_middle,
    ApplyResult, Changed, ExpireFeed, RowChange, RowState, StepTimer,
};
use crate::apply::middle::Middle;
use crate::apply::settings::ImportSettings;
use crate::apply::ApplyError;
use crate::osm::{ChangeSet, ObjectType};
use postgres::GenericClient;
use std::collections::{BTreeMap, BTreeSet};

/// Applies change sets to a database imported with a flex config.
///
/// Each batch gets a fresh Lua state, as each `osm2pgsql --append` run
/// does: data a config collects in Lua globals (two-stage route lists)
/// starts empty every batch and is rebuilt by stage 1c, so a long-running
/// daemon writes what a cron job of osm2pgsql runs would.
pub struct FlexApplier {
    middle: Middle,
    tables: FlexTables,
    runtime: FlexRuntime,
    settings: FlexSettings,
    schema: String,
    expire_outputs: Vec<ExpireOutputDef>,
}

impl FlexApplier {
    /// The applier for a flex import with `settings`, running its stored
    /// config in append mode.
    pub fn for_settings(
        settings: &ImportSettings,
        flex: &FlexSettings,
    ) -> Result<Self, ApplyError> {
        let runtime = flex.runtime(Mode::Append, &settings.schema)?;
        Ok(FlexApplier {
            middle: middle_for(settings)?,
            tables: FlexTables::new(runtime.tables()),
            expire_outputs: runtime.expire_outputs(),
            runtime,
            settings: flex.clone(),
            schema: settings.schema.clone(),
        })
    }

    /// The config's expire outputs, which [`RowChange::expire_feeds`]
    /// refer to by index.
    pub fn expire_outputs(&self) -> &[ExpireOutputDef] {
        &self.expire_outputs
    }

    /// Applies `changes` within `client`'s current transaction.
    pub fn apply(
        &mut self,
        client: &mut impl GenericClient,
        changes: &ChangeSet,
    ) -> Result<ApplyResult, ApplyError> {
        // The state the constructor loaded serves the first batch.
        if self.runtime.has_run() {
            self.runtime = self.settings.runtime(Mode::Append, &self.schema)?;
        }
        let changed = Changed::sort(changes);
        let mut timer = StepTimer::new();
        let two_stage = self.runtime.has_select_relation_members();
        let mut marked = BTreeSet::new();
        if two_stage {
            for relation in self.middle.relations(client, &changed.relation_ids.all())? {
                marked.extend(self.runtime.select_relation_members(&relation)?);
            }
            timer.step("select members");
        }
        update_middle(&self.middle, client, &changed)?;
        timer.step("middle");
        let parents = propagate(&self.middle, client, &changed)?;
        timer.step("propagation");

        let mut touched = Touched::default();
        touched.nodes.extend(changed.node_ids.all());
        touched.ways.extend(changed.way_ids.all());
        touched.ways.extend(&parents.ways);
        touched.relations.extend(changed.relation_ids.all());
        touched.relations.extend(&parents.relations);
        let mut removed = self.delete(client, &touched)?;
        timer.step("output delete");

        let mut rows = Vec::new();
        for node in &changed.nodes {
            rows.extend(self.runtime.process_node(node)?);
        }
        let rebuild_ways = changed_or_parents(&changed.way_ids, &parents.ways);
        let rebuild_relations = changed_or_parents(&changed.relation_ids, &parents.relations);
        let rebuild = load_for_rebuild(&self.middle, client, &rebuild_ways, &rebuild_relations)?;
        timer.step("rebuild load");
        for way in &rebuild.ways {
            rows.extend(self.runtime.process_way(way, &rebuild.locations)?);
        }
        for relation in &rebuild.relations {
            if two_stage {
                marked.extend(self.runtime.select_relation_members(relation)?);
            }
            rows.extend(self.runtime.process_relation(
                relation,
                &rebuild.member_ways,
                &rebuild.locations,
            )?);
        }
        timer.step("rebuild process");
        if !marked.is_empty() {
            let marked: Vec<i64> = marked.into_iter().collect();
            self.second_stage(
                client,
                &marked,
                &rebuild_relations,
                &mut rows,
                &mut touched,
                &mut removed,
            )?;
            timer.step("stage 2");
        }

        self.write(client, &rows)?;
        timer.step("output copy");
        let row_changes = self.pair(client, &touched, removed)?;
        timer.step("read back");
        tracing::debug!(steps = %timer, "applied change set (flex)");
        Ok(ApplyResult {
            row_changes,
            propagated_ways: parents.ways.len(),
            propagated_relations: parents.relations.len(),
        })
    }

    /// Stages 1c and 2 for the `marked` ways: the relations using them
    /// that were not processed already are replayed without inserts, so
    /// what the config collects is complete, then the ways are processed
    /// again at stage 2, their stage-1 rows (buffered or stored) replaced.
    fn second_stage(
        &mut self,
        client: &mut impl GenericClient,
        marked: &[i64],
        processed_relations: &[i64],
        rows: &mut Vec<FlexRow>,
        touched: &mut Touched,
        removed: &mut Vec<StoredFlexRow>,
    ) -> Result<(), ApplyError> {
        let processed: BTreeSet<i64> = processed_relations.iter().copied().collect();
        let replay: Vec<i64> = self
            .middle
            .relations_using(client, &[], marked)?
            .into_iter()
            .filter(|id| !processed.contains(id))
            .collect();
        let context = load_for_rebuild(&self.middle, client, marked, &replay)?;
        for relation in &context.relations {
            self.runtime
                .replay_relation(relation, &context.member_ways, &context.locations)?;
        }
        let marked_set: BTreeSet<i64> = marked.iter().copied().collect();
        rows.retain(|row| {
            !(row.object.kind == ObjectType::Way && marked_set.contains(&row.object.id))
        });
        let not_yet_deleted: Vec<i64> = marked
            .iter()
            .copied()
            .filter(|id| !touched.ways.contains(id))
            .collect();
        removed.extend(
            self.tables
                .delete(client, ObjectType::Way, &not_yet_deleted)?,
        );
        touched.ways.extend(marked);
        self.runtime.set_stage(2)?;
        let result = context
            .ways
            .iter()
            .try_for_each(|way| -> Result<(), ApplyError> {
                rows.extend(self.runtime.process_way(way, &context.locations)?);
                Ok(())
            });
        self.runtime.set_stage(1)?;
        result
    }

    /// Deletes the rows of every touched object, returning them.
    fn delete(
        &self,
        client: &mut impl GenericClient,
        touched: &Touched,
    ) -> Result<Vec<StoredFlexRow>, ApplyError> {
        let mut removed = Vec::new();
        for (kind, ids) in touched.by_kind() {
            removed.extend(self.tables.delete(client, kind, &ids)?);
        }
        Ok(removed)
    }

    /// COPYs the new rows, one COPY per table.
    fn write(&self, client: &mut impl GenericClient, rows: &[FlexRow]) -> Result<(), ApplyError> {
        let mut by_table: BTreeMap<usize, Vec<&FlexRow>> = BTreeMap::new();
        for row in rows {
            by_table.entry(row.table).or_default().push(row);
        }
        for (table, rows) in by_table {
            let mut writer = self.tables.copy_writer(client, table, false)?;
            for row in rows {
                writer.write(row)?;
            }
            writer.finish()?;
        }
        Ok(())
    }

    /// Reads back the rows of every touched object and pairs them with
    /// the removed ones, per table and object; rows of columns that feed
    /// expire outputs also per column.
    fn pair(
        &self,
        client: &mut impl GenericClient,
        touched: &Touched,
        removed: Vec<StoredFlexRow>,
    ) -> Result<Vec<RowChange>, ApplyError> {
        let mut written = Vec::new();
        for (kind, ids) in touched.by_kind() {
            written.extend(self.tables.read_rows(client, kind, &ids)?);
        }
        type OldAndNew = (Vec<StoredFlexRow>, Vec<StoredFlexRow>);
        let mut by_table: BTreeMap<usize, OldAndNew> = BTreeMap::new();
        for row in removed {
            by_table.entry(row.table).or_default().0.push(row);
        }
        for row in written {
            by_table.entry(row.table).or_default().1.push(row);
        }
        let mut changes = Vec::new();
        for (table, (old, new)) in by_table {
            let definition = &self.tables.tables()[table];
            let expire = definition.geometry_column().is_some();
            let mut feeds = self.expire_feeds(table, &old, &new);
            let state = |row: StoredFlexRow| RowState {
                id: self.row_id(table, &row),
                geometries: row.geometries.into_iter().map(|(_, g)| g).collect(),
                digest: row.digest,
                column_digests: row.column_digests,
            };
            let columns: Vec<String> = definition
                .digest_columns()
                .map(|c| c.name.clone())
                .collect();
            let mut paired = pair_rows(
                &definition.name,
                &columns,
                expire,
                old.into_iter().map(state),
                new.into_iter().map(state),
            );
            for change in &mut paired {
                change.expire_feeds = feeds.remove(&change.osm_id).unwrap_or_default();
            }
            changes.extend(paired);
        }
        Ok(changes)
    }

    /// Per stored id, what each column with an `expire` field feeds its
    /// outputs: the column's old and new geometries.
    fn expire_feeds(
        &self,
        table: usize,
        old: &[StoredFlexRow],
        new: &[StoredFlexRow],
    ) -> BTreeMap<i64, Vec<ExpireFeed>> {
        let definition = &self.tables.tables()[table];
        let expiring: Vec<usize> = (0..definition.columns.len())
            .filter(|&c| !definition.columns[c].expire.is_empty())
            .collect();
        let mut feeds: BTreeMap<i64, Vec<ExpireFeed>> = BTreeMap::new();
        if expiring.is_empty() {
            return feeds;
        }
        let mut by_id: BTreeMap<i64, [Vec<&StoredFlexRow>; 2]> = BTreeMap::new();
        for (side, rows) in [old, new].into_iter().enumerate() {
            for row in rows {
                by_id.entry(self.row_id(table, row)).or_default()[side].push(row);
            }
        }
        let values = |rows: &[&StoredFlexRow], column: usize| -> Vec<Vec<u8>> {
            rows.iter()
                .flat_map(|row| row.geometries.iter())
                .filter(|(c, _)| *c == column)
                .map(|(_, g)| g.clone())
                .collect()
        };
        for (id, [before, after]) in by_id {
            for &column in &expiring {
                let (old, new) = (values(&before, column), values(&after, column));
                if old.is_empty() && new.is_empty() {
                    continue;
                }
                for config in &definition.columns[column].expire {
                    feeds.entry(id).or_default().push(ExpireFeed {
                        config: config.clone(),
                        old: old.clone(),
                        new: new.clone(),
                    });
                }
            }
        }
        feeds
    }

    /// A stored row's id as the table stores it.
    fn row_id(&self, table: usize, row: &StoredFlexRow) -> i64 {
        let ids = self.tables.tables()[table].ids.as_ref();
        ids.map_or(row.object.id, |ids| ids.id_value(row.object))
    }
}

/// The objects whose rows an apply replaces, by type.
#[derive(Default)]
struct Touched {
    nodes: BTreeSet<i64>,
    ways: BTreeSet<i64>,
    relations: BTreeSet<i64>,
}

impl Touched {
    fn by_kind(&self) -> [(ObjectType, Vec<i64>); 3] {
        [
            (ObjectType::Node, self.nodes.iter().copied().collect()),
            (ObjectType::Way, self.ways.iter().copied().collect()),
            (
                ObjectType::Relation,
                self.relations.iter().copied().collect(),
            ),
        ]
    }
}
