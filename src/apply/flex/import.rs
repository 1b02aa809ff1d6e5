//! The flex output in an import: objects go through the config's
//! callbacks (nodes and ways on the Lua workers of [`super::workers`] when
//! there are several, relations on the reading thread), rows to one
//! staging table per flex table; after reading, stage 2 processes the ways marked by
//! `select_relation_members` again (replacing their rows), then every
//! table is finished (osm2pgsql's `output_flex_t::reprocess_marked` and
//! `table_connection_t::stop`).
//!
//! As in osm2pgsql 1.8, an import hands only tagged objects to the
//! callbacks (`osmdata_t::node_add` and siblings).

use super::output::FlexTables;
use super::runtime::{FlexRow, FlexRuntime};
use super::workers::LuaWorkers;
use crate::apply::import::{Batches, RowSink, RowSource, SecondStage, TableRows};
use crate::apply::process::{NodeLocations, WayLookup};
use crate::apply::ApplyError;
use crate::osm::{Node, ObjectType, Relation, Way};
use postgres::Client;
use tracing::info;

/// The flex config as an import's row source.
pub struct FlexSource {
    runtime: FlexRuntime,
    /// Lua states on other threads for the nodes and ways, if any.
    workers: Option<LuaWorkers>,
    /// Ways `select_relation_members` returned.
    marked: Vec<i64>,
}

impl FlexSource {
    /// Wraps a config loaded in create mode; with `workers`, nodes and
    /// ways go to them and only relations and the second stage run in
    /// `runtime`.
    pub fn new(runtime: FlexRuntime, workers: Option<LuaWorkers>) -> FlexSource {
        FlexSource {
            runtime,
            workers,
            marked: Vec::new(),
        }
    }

    /// Ends the workers once the ways are done, with their last state
    /// check.
    fn end_workers(&mut self) -> Result<(), ApplyError> {
        if let Some(workers) = self.workers.take() {
            workers.finish()?;
        }
        Ok(())
    }
}

fn add_rows(rows: &mut TableRows<FlexRow>, produced: Vec<FlexRow>) {
    for row in produced {
        rows.entry(row.table).or_default().push(row);
    }
}

impl RowSource for FlexSource {
    type Row = FlexRow;

    fn nodes(&mut self, nodes: &[Node], rows: &mut TableRows<FlexRow>) -> Result<(), ApplyError> {
        if let Some(workers) = &self.workers {
            add_rows(rows, workers.nodes(nodes)?);
            return Ok(());
        }
        for node in nodes.iter().filter(|node| !node.tags.is_empty()) {
            add_rows(rows, self.runtime.process_node(node)?);
        }
        Ok(())
    }

    fn ways(
        &mut self,
        ways: &[Way],
        locations: &(dyn NodeLocations + Sync),
        rows: &mut TableRows<FlexRow>,
    ) -> Result<(), ApplyError> {
        if let Some(workers) = &self.workers {
            add_rows(rows, workers.ways(ways, locations)?);
            return Ok(());
        }
        for way in ways.iter().filter(|way| !way.tags.is_empty()) {
            add_rows(rows, self.runtime.process_way(way, locations)?);
        }
        Ok(())
    }

    fn relation(
        &mut self,
        relation: &Relation,
        ways: &dyn WayLookup,
        locations: &dyn NodeLocations,
        rows: &mut TableRows<FlexRow>,
    ) -> Result<(), ApplyError> {
        self.end_workers()?;
        if relation.tags.is_empty() {
            return Ok(());
        }
        self.marked
            .extend(self.runtime.select_relation_members(relation)?);
        add_rows(
            rows,
            self.runtime.process_relation(relation, ways, locations)?,
        );
        Ok(())
    }

    fn second_stage(
        &mut self,
        ways: &dyn WayLookup,
        locations: &dyn NodeLocations,
    ) -> Result<SecondStage<FlexRow>, ApplyError> {
        self.end_workers()?;
        if self.marked.is_empty() {
            return Ok(None);
        }
        let mut marked = std::mem::take(&mut self.marked);
        marked.sort_unstable();
        marked.dedup();
        info!("stage 2: processing {} marked ways again", marked.len());
        self.runtime.set_stage(2)?;
        let mut rows = TableRows::new();
        for id in &marked {
            if let Some(way) = ways.way(*id) {
                add_rows(&mut rows, self.runtime.process_way(&way, locations)?);
            }
        }
        Ok(Some((marked, rows)))
    }
}

impl RowSink for FlexTables {
    type Row = FlexRow;

    fn table_count(&self) -> usize {
        self.tables().len()
    }

    fn qualified_name(&self, table: usize) -> String {
        self.tables()[table].qualified_name()
    }

    fn node_only(&self, table: usize) -> bool {
        self.tables()[table]
            .ids
            .as_ref()
            .is_some_and(|ids| ids.kind == super::table::IdType::Node)
    }

    fn load(
        &self,
        client: &mut Client,
        table: usize,
        rows: Batches<FlexRow>,
    ) -> Result<Option<u64>, ApplyError> {
        let mut writer = self.copy_writer(client, table, true)?;
        for row in rows {
            writer.write(&row)?;
        }
        writer.finish()?;
        // Staged rows: the finish step may still drop invalid ones.
        Ok(None)
    }

    /// Tables only nodes write to are complete once the nodes are read
    /// (a second stage rewrites way rows only), so they are finished
    /// while the ways and relations are read, as the classic output's
    /// point table is. (A `way` table takes relations too in osm2pgsql
    /// 1.8, so it waits for the end.)
    fn finished_after_load(&self, table: usize) -> bool {
        self.node_only(table)
    }

    fn replace_ways(
        &self,
        client: &mut Client,
        ways: &[i64],
        mut rows: TableRows<FlexRow>,
    ) -> Result<(), ApplyError> {
        self.delete(client, ObjectType::Way, ways)?;
        for (table, rows) in rows.drain() {
            let mut writer = self.copy_writer(client, table, true)?;
            for row in &rows {
                writer.write(row)?;
            }
            writer.finish()?;
        }
        Ok(())
    }

    fn finish(&self, client: &mut Client, table: usize) -> Result<Option<u64>, ApplyError> {
        Ok(Some(self.finish_import(client, table)?))
    }

    fn counts(
        &self,
        client: &mut Client,
        known: &[Option<u64>],
    ) -> Result<Vec<(String, u64)>, ApplyError> {
        let mut counted = None;
        let mut counts = Vec::with_capacity(self.tables().len());
        for (i, table) in self.tables().iter().enumerate() {
            let count = match known.get(i).copied().flatten() {
                Some(count) => count,
                None => {
                    let all = match &counted {
                        Some(all) => all,
                        None => counted.insert(FlexTables::counts(self, client)?),
                    };
                    all[i].1 as u64
                }
            };
            counts.push((table.name.clone(), count));
        }
        Ok(counts)
    }
}
