//! `tilepipe import`: a whole OSM file into empty middle and output tables.
//!
//! The file is read once, in order (nodes, ways, relations; the reader
//! refuses an unsorted file, as osm2pgsql does). Node locations and ways stay
//! in memory while reading (packed, in id order), so every geometry is built
//! without a database round trip; with a flat-nodes file
//! (`--flat-nodes`) the locations go into that file instead, memory-mapped,
//! and are read back from it, and there is no nodes table to load. Objects
//! and rows stream to one writer
//! thread per table, each with its own connection and a single binary COPY,
//! so PostgreSQL ingests while tilepipe parses. Output rows go to staging
//! tables with what the writer worked out about them (surely-valid
//! geometry, spatial sort key; see [`OutputTables::finish_import`]). Each
//! writer builds its table's indexes as soon as the table is complete: the
//! nodes table and `_point` once the reader has passed the nodes, the ways
//! table once it has passed the ways, the rest at the end, so index builds
//! overlap with reading. The import settings
//! go into `osm2pgsql_properties` last: a database without them is not a
//! finished import, and appends refuse to run on it.

use super::flatnodes::FlatNodes;
use super::import_stores::{PackedLocations, SpilledWays};
use super::middle::{Middle, MiddleError, MIDDLE_FORMAT, MIDDLE_FORMAT_PROPERTY};
use super::output::{OutputTables, Row, TableKind};
use super::process::{NodeLocations, Processor, Rows, WayLookup};
use super::settings::{DataBounds, ImportSettings, DATA_BOUNDS_PROPERTY};
use super::transform::TagTransform;
use super::ApplyError;
use crate::osm::input::{read_objects, Metadata};
use crate::osm::pbf_header::read_pbf_header;
use crate::osm::{Location, Node, Object, ObjectType, Relation, Way};
use crate::replication::state::format_timestamp;
use chrono::{DateTime, Utc};
use postgres::Client;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};
use tracing::info;

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    /// Nodes read.
    pub nodes: u64,
    /// Ways read.
    pub ways: u64,
    /// Relations read.
    pub relations: u64,
    /// Rows per output table, by name, once finished (invalid geometries
    /// dropped).
    pub rows: Vec<(String, u64)>,
    /// The newest object timestamp in the file, if any object has one.
    pub newest_timestamp: Option<DateTime<Utc>>,
    /// Reading and processing the file, with the COPYs running alongside.
    pub read_time: Duration,
    /// From the end of reading until every table is indexed and finished.
    pub index_time: Duration,
    /// The box around every node location read (stored as
    /// [`DATA_BOUNDS_PROPERTY`]); `None` when the file has no located node.
    pub bounds: Option<DataBounds>,
}

/// Where the reader sends objects and rows. A queue is closed (set to
/// `None`) when its table can receive nothing more, which lets its writer
/// finish the table and build its indexes while reading goes on.
struct Queues<R> {
    nodes: Option<SyncSender<Vec<Node>>>,
    /// Whether nodes go to the nodes table (else, with flat nodes, they
    /// are dropped once processed).
    nodes_to_table: bool,
    ways: Option<SyncSender<Vec<Way>>>,
    relations: Option<SyncSender<Vec<Relation>>>,
    /// Per output table (by index).
    rows: HashMap<usize, SyncSender<Vec<R>>>,
    /// Tables only nodes write to.
    node_only: Vec<usize>,
}

/// The part of an ordered OSM file being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Nodes,
    Ways,
    Relations,
}

impl<R> Queues<R> {
    /// Moves on to `section`, closing the queues of tables that are now
    /// complete (the reader has already refused a file out of order).
    fn enter(&mut self, section: Section) {
        if section > Section::Nodes {
            self.nodes = None;
            for table in &self.node_only {
                self.rows.remove(table);
            }
        }
        if section > Section::Ways {
            self.ways = None;
        }
    }
}

/// Rows for output tables, by table index.
pub(crate) type TableRows<R> = HashMap<usize, Vec<R>>;

/// Ways whose rows a second stage replaces, with their new rows.
pub(crate) type SecondStage<R> = Option<(Vec<i64>, TableRows<R>)>;

/// Builds rows from objects as an import reads them: the classic
/// output's [`Processor`] or a flex config's Lua. The reader hands over
/// each run of nodes or ways of a block at once, so that a source may
/// spread them over threads; relations come one by one.
pub(crate) trait RowSource {
    /// A row on its way to a table writer.
    type Row: Send;
    /// Whether nodes without tags can produce rows; when they cannot and
    /// no nodes table takes them, the reader does not hand them on.
    fn untagged_nodes(&self) -> bool {
        false
    }
    /// Rows of a run of nodes, in their order.
    fn nodes(&mut self, nodes: &[Node], rows: &mut TableRows<Self::Row>) -> Result<(), ApplyError>;
    /// Rows of a run of ways, in their order.
    fn ways(
        &mut self,
        ways: &[Way],
        locations: &(dyn NodeLocations + Sync),
        rows: &mut TableRows<Self::Row>,
    ) -> Result<(), ApplyError>;
    /// Rows of one relation.
    fn relation(
        &mut self,
        relation: &Relation,
        ways: &dyn WayLookup,
        locations: &dyn NodeLocations,
        rows: &mut TableRows<Self::Row>,
    ) -> Result<(), ApplyError>;
    /// Once everything is read: ways whose rows are to be replaced, with
    /// their new rows (the flex output's stage 2).
    fn second_stage(
        &mut self,
        _ways: &dyn WayLookup,
        _locations: &dyn NodeLocations,
    ) -> Result<SecondStage<Self::Row>, ApplyError> {
        Ok(None)
    }
}

/// Loads rows into the output tables of an import, from one writer thread
/// and connection per table.
pub(crate) trait RowSink: Sync {
    /// A row as the source builds it.
    type Row: Send;
    /// The number of output tables.
    fn table_count(&self) -> usize;
    /// Schema-qualified name of a table, for cleaning up after a failure.
    fn qualified_name(&self, table: usize) -> String;
    /// Whether only nodes write to the table.
    fn node_only(&self, table: usize) -> bool;
    /// Loads a table's rows with one COPY (and may finish it): the rows
    /// the table holds when that is already final, else `None`.
    fn load(
        &self,
        client: &mut Client,
        table: usize,
        rows: Batches<Self::Row>,
    ) -> Result<Option<u64>, ApplyError>;
    /// Whether the table's writer finishes it ([`RowSink::finish`]) as
    /// soon as it is loaded, while reading goes on; else it is finished
    /// after the second stage, with the others left.
    fn finished_after_load(&self, _table: usize) -> bool {
        true
    }
    /// Replaces the rows of `ways` in the loaded tables with `rows`.
    fn replace_ways(
        &self,
        _client: &mut Client,
        _ways: &[i64],
        _rows: TableRows<Self::Row>,
    ) -> Result<(), ApplyError> {
        Ok(())
    }
    /// Finishes one loaded table (indexes, clustering): the rows it
    /// kept, when known.
    fn finish(&self, _client: &mut Client, _table: usize) -> Result<Option<u64>, ApplyError> {
        Ok(None)
    }
    /// Row counts per table, by name: `known[table]` where loading or
    /// finishing reported it, counted in the database otherwise.
    fn counts(
        &self,
        client: &mut Client,
        known: &[Option<u64>],
    ) -> Result<Vec<(String, u64)>, ApplyError>;
}

/// The classic output's rows: a [`Processor`], with a second one on
/// another thread for the ways when the transform can be forked (the
/// classic rules; a Lua script runs on the reader's thread alone).
/// osm2pgsql 1.8 builds ways on one thread while reading; here geometry
/// building is the reader's largest cost, so two threads share it.
struct ClassicSource {
    processor: Processor,
    way_worker: Option<Processor<dyn TagTransform + Send>>,
}

/// Ways in a run below which the second thread is not worth starting.
const PARALLEL_WAYS: usize = 256;

impl ClassicSource {
    fn new(processor: Processor, threads: usize) -> Self {
        let way_worker = if threads > 1 { processor.fork() } else { None };
        ClassicSource {
            processor,
            way_worker,
        }
    }
}

impl RowSource for ClassicSource {
    type Row = Row;

    fn untagged_nodes(&self) -> bool {
        self.processor.keeps_untagged()
    }

    fn nodes(&mut self, nodes: &[Node], rows: &mut TableRows<Row>) -> Result<(), ApplyError> {
        for node in nodes {
            add_classic_rows(rows, self.processor.node(node)?);
        }
        Ok(())
    }

    fn ways(
        &mut self,
        ways: &[Way],
        locations: &(dyn NodeLocations + Sync),
        rows: &mut TableRows<Row>,
    ) -> Result<(), ApplyError> {
        let Some(worker) = self
            .way_worker
            .as_mut()
            .filter(|_| ways.len() >= PARALLEL_WAYS)
        else {
            for way in ways {
                add_classic_rows(rows, self.processor.way(way, locations)?);
            }
            return Ok(());
        };
        // The second half on the worker, the first here; rows keep the
        // ways' order.
        let (first, second) = ways.split_at(ways.len() / 2);
        let processor = &mut self.processor;
        let (first_rows, second_rows) = std::thread::scope(|scope| {
            let second = scope.spawn(move || -> Result<TableRows<Row>, ApplyError> {
                let mut rows = TableRows::new();
                for way in second {
                    add_classic_rows(&mut rows, worker.way(way, locations)?);
                }
                Ok(rows)
            });
            let mut rows = TableRows::new();
            let first = first.iter().try_for_each(|way| {
                add_classic_rows(&mut rows, processor.way(way, locations)?);
                Ok::<_, ApplyError>(())
            });
            let second = second.join().expect("way worker panicked");
            (first.map(|()| rows), second)
        });
        for part in [first_rows?, second_rows?] {
            for (table, part_rows) in part {
                rows.entry(table).or_default().extend(part_rows);
            }
        }
        Ok(())
    }

    fn relation(
        &mut self,
        relation: &Relation,
        ways: &dyn WayLookup,
        locations: &dyn NodeLocations,
        rows: &mut TableRows<Row>,
    ) -> Result<(), ApplyError> {
        add_classic_rows(rows, self.processor.relation(relation, ways, locations)?);
        Ok(())
    }
}

fn add_classic_rows(rows: &mut TableRows<Row>, produced: Rows) {
    for (kind, row) in produced {
        rows.entry(kind.index()).or_default().push(row);
    }
}

impl RowSink for OutputTables {
    type Row = Row;

    fn table_count(&self) -> usize {
        TableKind::ALL.len()
    }

    fn qualified_name(&self, table: usize) -> String {
        self.table(TableKind::ALL[table])
    }

    fn node_only(&self, table: usize) -> bool {
        TableKind::ALL[table] == TableKind::Point
    }

    fn load(
        &self,
        client: &mut Client,
        table: usize,
        rows: Batches<Row>,
    ) -> Result<Option<u64>, ApplyError> {
        Ok(Some(self.import_rows(
            client,
            TableKind::ALL[table],
            rows,
        )?))
    }

    fn counts(
        &self,
        client: &mut Client,
        known: &[Option<u64>],
    ) -> Result<Vec<(String, u64)>, ApplyError> {
        TableKind::ALL
            .iter()
            .enumerate()
            .map(|(i, &kind)| {
                let count = match known.get(i).copied().flatten() {
                    Some(count) => count,
                    None => OutputTables::count(self, client, kind)?,
                };
                Ok((self.name(kind), count))
            })
            .collect()
    }
}

/// Bounded queues: a slow table applies back-pressure to the reader.
/// Each entry is a block's worth of objects or rows; 4 keep the writers
/// fed as well as 8 did, with half the memory in flight (issue 16).
const QUEUE_DEPTH: usize = 4;

/// Relations processed between two sends to the writers (see the reader).
const RELATIONS_PER_SEND: usize = 64;

/// Imports `path` into the database `db` points at, with the classic
/// output or, when `settings.flex` is set, the flex output; `threads`
/// decode PBF blocks and as many Lua states run the flex output's node
/// and way callbacks (see [`import_with_threads`]).
pub fn import(
    db: &postgres::Config,
    path: &Path,
    settings: &ImportSettings,
    threads: usize,
) -> Result<ImportSummary, ApplyError> {
    let threads = ImportThreads {
        decode: threads,
        lua: threads,
    };
    import_with_threads(db, path, settings, &threads)
}

/// How many threads an import uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportThreads {
    /// Threads decoding PBF blocks.
    pub decode: usize,
    /// Lua states running the flex output's node and way callbacks, each
    /// on a thread of its own; 1 runs every callback in one state, as
    /// osm2pgsql does (see [`super::flex::workers`]).
    pub lua: usize,
}

/// [`import`] with the thread counts given apart.
pub fn import_with_threads(
    db: &postgres::Config,
    path: &Path,
    settings: &ImportSettings,
    threads: &ImportThreads,
) -> Result<ImportSummary, ApplyError> {
    let (threads, lua_workers) = (threads.decode, threads.lua);
    let schema = settings.schema.as_str();
    match &settings.flex {
        None => {
            let processor = Processor::new(settings)?;
            let tables = OutputTables::new(schema, &settings.prefix, processor.style().clone());
            let source = ClassicSource::new(processor, threads);
            import_with(db, path, settings, threads, source, &tables, |c| {
                Ok(tables.create(c)?)
            })
        }
        Some(flex) => {
            let runtime = flex.runtime(super::flex::runtime::Mode::Create, schema)?;
            let definitions = runtime.tables();
            let workers = if lua_workers > 1 {
                let names = definitions.iter().map(|t| t.qualified_name()).collect();
                Some(super::flex::workers::LuaWorkers::new(
                    flex,
                    schema,
                    names,
                    lua_workers,
                )?)
            } else {
                None
            };
            let tables = super::flex::output::FlexTables::new(definitions);
            let source = super::flex::import::FlexSource::new(runtime, workers);
            import_with(db, path, settings, threads, source, &tables, |c| {
                Ok(tables.create(c)?)
            })
        }
    }
}

/// The import with one output: `create` makes its (staging) tables.
fn import_with<S, K>(
    db: &postgres::Config,
    path: &Path,
    settings: &ImportSettings,
    threads: usize,
    mut source: S,
    sink: &K,
    create: impl FnOnce(&mut Client) -> Result<(), ApplyError>,
) -> Result<ImportSummary, ApplyError>
where
    S: RowSource,
    K: RowSink<Row = S::Row>,
{
    let mut control = crate::db::connect(db)?;
    super::check_extensions(&mut control)?;
    let schema = settings.schema.as_str();
    // The old import's settings go first, before any of its tables or
    // its flat-nodes file: from here on the database is not a finished
    // import, so an import killed at any later moment is refused by
    // `apply` rather than taken for the old one.
    crate::db::properties::ensure_table(&mut control, schema)?;
    control.execute(
        &format!(
            "DELETE FROM {}.{}",
            crate::db::quote_ident(schema),
            crate::db::quote_ident(crate::db::properties::PROPERTIES_TABLE)
        ),
        &[],
    )?;
    let mut middle = Middle::new(schema, &settings.prefix);
    if let Some(path) = &settings.flat_nodes {
        middle = middle.with_flat_nodes(FlatNodes::create(path).map_err(MiddleError::from)?);
    }
    middle.create(&mut control)?;
    create(&mut control)?;

    let started = Instant::now();
    let mut summary = ImportSummary::default();
    let mut read_done = started;
    let mut stores = match Stores::new(&middle) {
        Ok(stores) => stores,
        Err(e) => {
            drop_partial_import(&mut control, &middle, sink);
            return Err(e);
        }
    };
    // Rows per table as loading or finishing reported them.
    let mut known_counts = vec![None; sink.table_count()];
    let result = std::thread::scope(|scope| -> Result<(), ApplyError> {
        let middle = &middle;
        let (nodes_tx, nodes_rx) = sync_channel::<Vec<Node>>(QUEUE_DEPTH);
        let (ways_tx, ways_rx) = sync_channel::<Vec<Way>>(QUEUE_DEPTH);
        let (rels_tx, rels_rx) = sync_channel::<Vec<Relation>>(QUEUE_DEPTH);
        let mut middle_writers = vec![
            scope.spawn(move || write_middle_table(db, middle, ways_rx)),
            scope.spawn(move || write_middle_table(db, middle, rels_rx)),
        ];
        // Without a nodes table (flat nodes) no node goes to a writer.
        let nodes_tx = middle.has_nodes_table().then(|| {
            middle_writers.push(scope.spawn(move || write_middle_table(db, middle, nodes_rx)));
            nodes_tx
        });
        let mut queues = Queues {
            nodes_to_table: nodes_tx.is_some(),
            nodes: nodes_tx,
            ways: Some(ways_tx),
            relations: Some(rels_tx),
            rows: HashMap::new(),
            node_only: (0..sink.table_count())
                .filter(|&t| sink.node_only(t))
                .collect(),
        };
        let mut row_writers = Vec::new();
        for table in 0..sink.table_count() {
            let (tx, rx) = sync_channel::<Vec<S::Row>>(QUEUE_DEPTH);
            queues.rows.insert(table, tx);
            row_writers.push(scope.spawn(move || write_rows(db, sink, table, rx)));
        }

        let read = read_and_process(
            path,
            threads,
            &mut source,
            &mut queues,
            &mut stores,
            &mut summary,
        );
        read_done = Instant::now();
        // Closing the queues ends the writers; their errors explain a
        // failed send better than the send error itself.
        drop(queues);
        let mut writers_result = Ok(());
        for writer in middle_writers {
            let result = writer.join().expect("middle writer panicked");
            writers_result = writers_result.and(result);
        }
        // The rows kept are counted after validation, below.
        for (table, writer) in row_writers.into_iter().enumerate() {
            match writer.join().expect("row writer panicked") {
                Ok(count) => known_counts[table] = count,
                Err(e) => writers_result = writers_result.and(Err(e)),
            }
        }
        writers_result?;
        read?;
        if let Some((ways, rows)) = source.second_stage(&stores.ways, &stores.locations)? {
            sink.replace_ways(&mut control, &ways, rows)?;
        }
        stores.ways.check().map_err(|e| {
            ApplyError::Aborted(format!("cannot read back the import's way store: {e}"))
        })?;
        {
            let finishers: Vec<_> = (0..sink.table_count())
                .filter(|&table| !sink.finished_after_load(table))
                .map(|table| {
                    let finisher = scope.spawn(move || -> Result<Option<u64>, ApplyError> {
                        let mut client = crate::db::connect(db)?;
                        sink.finish(&mut client, table)
                    });
                    (table, finisher)
                })
                .collect();
            for (table, finisher) in finishers {
                known_counts[table] = finisher.join().expect("table finisher panicked")?;
            }
        }
        Ok(())
    });
    // The locations are on disk before the import is recorded as done.
    let result = result.and_then(|()| stores.locations.flush());
    drop(stores);
    if let Err(e) = result {
        drop_partial_import(&mut control, &middle, sink);
        return Err(e);
    }
    summary.read_time = read_done - started;
    summary.index_time = read_done.elapsed();
    info!(
        nodes = summary.nodes,
        ways = summary.ways,
        relations = summary.relations,
        "read {} in {:.1} s",
        path.display(),
        summary.read_time.as_secs_f64()
    );
    summary.rows = sink.counts(&mut control, &known_counts)?;

    write_import_properties(&mut control, path, settings, &summary)?;
    Ok(summary)
}

/// What an import keeps while reading: node locations for ways and
/// relations, ways for relations.
struct Stores<'m> {
    locations: NodeStore<'m>,
    ways: SpilledWays,
}

impl<'m> Stores<'m> {
    fn new(middle: &'m Middle) -> Result<Self, ApplyError> {
        Ok(Stores {
            locations: match middle.flat_nodes() {
                Some(file) => NodeStore::File(file, AtomicU64::new(0)),
                None => NodeStore::Memory(PackedLocations::default()),
            },
            ways: SpilledWays::new().map_err(|e| {
                ApplyError::Aborted(format!(
                    "cannot create the import's way store in {}: {e}",
                    std::env::temp_dir().display()
                ))
            })?,
        })
    }
}

/// Where the reading thread keeps node locations.
enum NodeStore<'m> {
    /// In memory, packed: the nodes table keeps them for updates.
    Memory(PackedLocations),
    /// In the middle's flat-nodes file, held for the whole import, with
    /// the node slots touched since its pages were last let go of
    /// (atomic: lookups come through a shared reference, from several
    /// threads with the flex output).
    File(MutexGuard<'m, FlatNodes>, AtomicU64),
}

/// Node slots of the flat-nodes file read or written between two
/// releases of its pages ([`FlatNodes::release_resident_pages`]): 16 MB
/// of slots written, or the nodes of about 100,000 ways read (each
/// node of a way is touched twice: defined, then looked up).
const FLAT_NODES_TOUCHES_PER_RELEASE: u64 = 2 << 20;

impl NodeStore<'_> {
    /// Lets go of the flat-nodes file's pages once enough node slots
    /// were touched: they then stay in the page cache instead of adding
    /// up in the import's memory (what "node locations live in the file,
    /// not in RAM" means for a planet's 80 GB file).
    fn settle(&self) -> Result<(), ApplyError> {
        if let NodeStore::File(file, touched) = self {
            if touched.load(Ordering::Relaxed) >= FLAT_NODES_TOUCHES_PER_RELEASE {
                file.release_resident_pages().map_err(MiddleError::from)?;
                touched.store(0, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn push(&mut self, id: i64, location: Location) -> Result<(), ApplyError> {
        match self {
            NodeStore::Memory(memory) => memory.push(id, location),
            NodeStore::File(file, touched) => {
                touched.fetch_add(1, Ordering::Relaxed);
                file.set(id, Some(location)).map_err(MiddleError::from)?
            }
        }
        Ok(())
    }

    /// The file keeps the nodes a way or relation refers to defined (see
    /// [`Middle::define_node_refs`]); nothing to do in memory.
    fn define(&mut self, ids: impl IntoIterator<Item = i64>) -> Result<(), ApplyError> {
        if let NodeStore::File(file, touched) = self {
            for id in ids {
                touched.fetch_add(1, Ordering::Relaxed);
                file.define(id).map_err(MiddleError::from)?;
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), ApplyError> {
        if let NodeStore::File(file, _) = self {
            file.flush().map_err(MiddleError::from)?;
        }
        Ok(())
    }
}

impl NodeLocations for NodeStore<'_> {
    fn location(&self, id: i64) -> Option<Location> {
        match self {
            NodeStore::Memory(memory) => memory.get(id),
            NodeStore::File(file, touched) => {
                touched.fetch_add(1, Ordering::Relaxed);
                file.get(id)
            }
        }
    }
}

fn read_and_process<S: RowSource>(
    path: &Path,
    threads: usize,
    source: &mut S,
    queues: &mut Queues<S::Row>,
    stores: &mut Stores<'_>,
    summary: &mut ImportSummary,
) -> Result<(), ApplyError> {
    let mut section = Section::Nodes;
    let progress = ReadProgress::new(path);
    // With flat nodes most nodes (untagged) go nowhere once their
    // location is stored: not moving them on saves a copy of each.
    let keep_untagged_nodes = queues.nodes_to_table || source.untagged_nodes();
    read_objects(
        path,
        threads,
        Metadata::Timestamps,
        |batch: Vec<Object>| -> Result<(), ApplyError> {
            let mut out = Outgoing::default();
            // Nodes and ways of the current section not yet processed.
            let mut pending = 0;
            for object in batch {
                if let Some(ts) = object.meta().timestamp {
                    summary.newest_timestamp = summary.newest_timestamp.max(Some(ts));
                }
                let object_section = match &object {
                    Object::Node(_) => Section::Nodes,
                    Object::Way(_) => Section::Ways,
                    Object::Relation(_) => Section::Relations,
                };
                if object_section != section {
                    // Finish and flush what belongs to the section being
                    // left first.
                    out.process(source, stores, section, pending)?;
                    pending = 0;
                    out.send(queues)?;
                    queues.enter(object_section);
                    section = object_section;
                }
                match object {
                    Object::Node(node) => {
                        summary.nodes += 1;
                        if let Some(location) = node.location {
                            stores.locations.push(node.id, location)?;
                            // Nearly free here, where a later ST_Extent
                            // would scan every output table.
                            DataBounds::extend(&mut summary.bounds, location.lon, location.lat);
                        }
                        if keep_untagged_nodes || !node.tags.is_empty() {
                            out.nodes.push(node);
                            pending += 1;
                        }
                    }
                    Object::Way(way) => {
                        summary.ways += 1;
                        stores.locations.define(way.nodes.iter().copied())?;
                        // Relations need their member ways (possibly in this
                        // very batch).
                        stores.ways.push(&way).map_err(|e| {
                            ApplyError::Aborted(format!(
                                "cannot write the import's way store in {}: {e}",
                                std::env::temp_dir().display()
                            ))
                        })?;
                        out.ways.push(way);
                        pending += 1;
                    }
                    Object::Relation(relation) => {
                        summary.relations += 1;
                        source.relation(
                            &relation,
                            &stores.ways,
                            &stores.locations,
                            &mut out.rows,
                        )?;
                        let member_nodes = relation
                            .members
                            .iter()
                            .filter(|m| m.kind == ObjectType::Node);
                        stores.locations.define(member_nodes.map(|m| m.id))?;
                        out.relations.push(relation);
                        // One relation may read the nodes of thousands
                        // of ways.
                        stores.locations.settle()?;
                        // A relation's rows can be large (a country's
                        // boundary as one multipolygon): hand them on in
                        // small groups instead of holding a whole block's.
                        if out.relations.len() >= RELATIONS_PER_SEND {
                            out.send(queues)?;
                        }
                    }
                }
            }
            out.process(source, stores, section, pending)?;
            out.send(queues)?;
            stores.locations.settle()?;
            progress.update(summary);
            Ok(())
        },
    )?;
    progress.finish(summary);
    Ok(())
}

/// A progress line with counts and rates, shown on a terminal only.
struct ReadProgress {
    bar: indicatif::ProgressBar,
    started: Instant,
}

impl ReadProgress {
    fn new(path: &Path) -> Self {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        bar.set_prefix(format!("importing {}", path.display()));
        bar.enable_steady_tick(Duration::from_millis(200));
        ReadProgress {
            bar,
            started: Instant::now(),
        }
    }

    fn update(&self, summary: &ImportSummary) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "nodes {} ({:.0}k/s), ways {} ({:.1}k/s), relations {}",
            summary.nodes,
            summary.nodes as f64 / secs / 1000.0,
            summary.ways,
            summary.ways as f64 / secs / 1000.0,
            summary.relations
        ));
    }

    fn finish(&self, summary: &ImportSummary) {
        self.update(summary);
        self.bar.finish_and_clear();
    }
}

/// What a batch of objects produced, on its way to the writers.
struct Outgoing<R> {
    nodes: Vec<Node>,
    ways: Vec<Way>,
    relations: Vec<Relation>,
    rows: TableRows<R>,
}

impl<R> Default for Outgoing<R> {
    fn default() -> Self {
        Outgoing {
            nodes: Vec::new(),
            ways: Vec::new(),
            relations: Vec::new(),
            rows: HashMap::new(),
        }
    }
}

impl<R> Outgoing<R> {
    /// Runs `source` over the last `pending` nodes or ways collected in
    /// `section`.
    fn process<S: RowSource<Row = R>>(
        &mut self,
        source: &mut S,
        stores: &Stores<'_>,
        section: Section,
        pending: usize,
    ) -> Result<(), ApplyError> {
        match section {
            Section::Nodes => {
                let run = &self.nodes[self.nodes.len() - pending..];
                source.nodes(run, &mut self.rows)
            }
            Section::Ways => {
                let run = &self.ways[self.ways.len() - pending..];
                source.ways(run, &stores.locations, &mut self.rows)
            }
            Section::Relations => Ok(()),
        }
    }

    /// Sends everything collected so far to the writers, leaving `self`
    /// empty.
    fn send(&mut self, queues: &Queues<R>) -> Result<(), ApplyError> {
        let closed = || ApplyError::Aborted("a database writer stopped".into());
        fn send<T>(queue: &Option<SyncSender<Vec<T>>>, items: &mut Vec<T>) -> Result<(), ()> {
            if items.is_empty() {
                return Ok(());
            }
            let queue = queue.as_ref().ok_or(())?;
            queue.send(std::mem::take(items)).map_err(|_| ())
        }
        if !queues.nodes_to_table {
            self.nodes.clear();
        }
        send(&queues.nodes, &mut self.nodes).map_err(|()| closed())?;
        send(&queues.ways, &mut self.ways).map_err(|()| closed())?;
        send(&queues.relations, &mut self.relations).map_err(|()| closed())?;
        for (table, rows) in self.rows.drain() {
            let queue = queues.rows.get(&table).ok_or_else(|| {
                ApplyError::Aborted(format!(
                    "a row for output table {table} after that table was finished"
                ))
            })?;
            queue.send(rows).map_err(|_| closed())?;
        }
        Ok(())
    }
}

/// A middle table's queue, read until the reader closes it.
pub(crate) type Batches<T> = std::iter::Flatten<std::sync::mpsc::IntoIter<Vec<T>>>;

/// The objects of one middle table, as the import's writers load them.
trait MiddleObject: Sized {
    /// Loads `objects` into the table with one COPY, then builds its indexes.
    fn load(
        middle: &Middle,
        client: &mut Client,
        objects: Batches<Self>,
    ) -> Result<(), MiddleError>;
}

impl MiddleObject for Node {
    fn load(middle: &Middle, client: &mut Client, nodes: Batches<Self>) -> Result<(), MiddleError> {
        middle.copy_nodes(&mut *client, nodes)?;
        middle.index_nodes(client)
    }
}

impl MiddleObject for Way {
    fn load(middle: &Middle, client: &mut Client, ways: Batches<Self>) -> Result<(), MiddleError> {
        middle.copy_ways(&mut *client, ways)?;
        middle.index_ways(client)
    }
}

impl MiddleObject for Relation {
    fn load(middle: &Middle, client: &mut Client, rels: Batches<Self>) -> Result<(), MiddleError> {
        middle.copy_relations(&mut *client, rels)?;
        middle.index_relations(client)
    }
}

/// Streams one middle table from its queue into one COPY, then builds its
/// indexes once the queue is closed.
fn write_middle_table<T: MiddleObject>(
    db: &postgres::Config,
    middle: &Middle,
    batches: Receiver<Vec<T>>,
) -> Result<(), ApplyError> {
    let mut client = crate::db::connect(db)?;
    T::load(middle, &mut client, batches.into_iter().flatten())?;
    Ok(())
}

/// Streams rows of one table into one COPY (finishing the table where
/// the output does that on load).
fn write_rows<K: RowSink>(
    db: &postgres::Config,
    sink: &K,
    table: usize,
    batches: Receiver<Vec<K::Row>>,
) -> Result<Option<u64>, ApplyError> {
    let mut client = crate::db::connect(db)?;
    let loaded = sink.load(&mut client, table, batches.into_iter().flatten())?;
    if sink.finished_after_load(table) {
        return Ok(sink.finish(&mut client, table)?.or(loaded));
    }
    Ok(loaded)
}

/// Leaves no half-imported tables behind after a failure.
fn drop_partial_import<K: RowSink>(client: &mut postgres::Client, middle: &Middle, sink: &K) {
    let mut names: Vec<String> = (0..sink.table_count())
        .map(|t| sink.qualified_name(t))
        .collect();
    names.extend([
        middle.nodes_table(),
        middle.ways_table(),
        middle.rels_table(),
    ]);
    if let Err(e) = client.batch_execute(&format!("DROP TABLE IF EXISTS {}", names.join(", "))) {
        tracing::warn!("could not drop the partial import's tables: {e}");
    }
}

/// Records what later appends and `tilepipe init` need, with osm2pgsql
/// 2.x's property names where they exist.
fn write_import_properties(
    client: &mut postgres::Client,
    path: &Path,
    settings: &ImportSettings,
    summary: &ImportSummary,
) -> Result<(), ApplyError> {
    let schema = settings.schema.as_str();
    let now = format_timestamp(Utc::now());
    let newest = summary
        .newest_timestamp
        .map(format_timestamp)
        .unwrap_or_default();
    let settings_json = serde_json::to_string(settings).expect("settings serialise");
    let mut properties: Vec<(&str, String)> = vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        (
            "output",
            if settings.flex.is_some() {
                "flex"
            } else {
                "pgsql"
            }
            .into(),
        ),
        ("updatable", "true".into()),
        ("db_format", "2".into()),
        ("prefix", settings.prefix.clone()),
        ("style", settings.style_name()),
        ("import_timestamp", newest.clone()),
        ("current_timestamp", newest),
        ("tilepipe_import_settings", settings_json),
        (MIDDLE_FORMAT_PROPERTY, MIDDLE_FORMAT.into()),
        ("tilepipe_import_finished", now),
    ];
    if let Some(bounds) = summary.bounds {
        properties.push((DATA_BOUNDS_PROPERTY, bounds.to_property()));
    }
    if let Ok(header) = read_pbf_header(path) {
        if let (Some(url), Some(ts)) = (&header.base_url, header.timestamp) {
            properties.push(("replication_base_url", url.clone()));
            properties.push(("replication_timestamp", format_timestamp(ts)));
            if let Some(sequence) = header.sequence {
                properties.push(("replication_sequence_number", sequence.to_string()));
            }
        }
    }
    let pairs: Vec<(&str, &str)> = properties.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut tx = client.transaction()?;
    crate::db::properties::write(&mut tx, schema, &pairs)?;
    tx.commit()?;
    Ok(())
}
