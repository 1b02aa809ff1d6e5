//! An import's `process_node` and `process_way` calls spread over several
//! threads, each with a Lua state of its own running the config.
//!
//! osm2pgsql runs every callback in one Lua state (behind `lua_mutex` in
//! output-flex.cpp), so a config may keep state from one callback to the
//! next. Worker states share nothing, so they give the same rows only if
//! the node and way callbacks leave the state as the config loaded it,
//! which is what configs do (openstreetmap-carto's builds its lookup
//! tables while loading; data for the second stage is collected in
//! `process_relation`, which stays in the import's main state with
//! everything after it). Each worker checks that: it compares a summary
//! of its state ([`FlexRuntime::state_summary`]) with the one it loaded,
//! often enough to stop early and always at the end of the ways, and a
//! change fails the import with [`FlexError::KeepsState`], which tells to
//! import with one worker.

use super::runtime::{FlexError, FlexRow, FlexRuntime, Mode};
use super::FlexSettings;
use crate::apply::process::NodeLocations;
use crate::osm::{Node, Way};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Callback time per state check at least: checks cost at most a fiftieth
/// of the Lua work.
const CHECK_RATIO: u32 = 50;

/// Objects per job at least: smaller runs are not worth a thread switch.
const MIN_CHUNK: usize = 64;

thread_local! {
    /// The Lua state of a worker thread, made by its first job. A pool's
    /// threads serve only that pool's [`LuaWorkers`] and end with it.
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// One worker thread's state.
struct Worker {
    runtime: FlexRuntime,
    /// The state's summary as loaded.
    loaded: BTreeMap<String, String>,
    /// Callback time since the last check.
    since_check: Duration,
    /// What the last check took.
    check_cost: Duration,
}

/// Lua states on worker threads for the first stage of an import.
pub struct LuaWorkers {
    pool: rayon::ThreadPool,
    settings: FlexSettings,
    schema: String,
    /// The main state's tables: every worker must define the same.
    tables: Vec<String>,
    count: usize,
}

impl LuaWorkers {
    /// `count` worker threads running the config of `settings`, whose
    /// main state defined `tables` (qualified names, in order).
    pub fn new(
        settings: &FlexSettings,
        schema: &str,
        tables: Vec<String>,
        count: usize,
    ) -> Result<LuaWorkers, FlexError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(count)
            .thread_name(|i| format!("tilepipe-lua-{i}"))
            .build()
            .map_err(|e| FlexError::Load {
                config: settings.config_path.clone(),
                message: format!("cannot start {count} Lua worker threads: {e}"),
            })?;
        Ok(LuaWorkers {
            pool,
            settings: settings.clone(),
            schema: schema.to_string(),
            tables,
            count,
        })
    }

    /// The rows of `nodes`, in their order; untagged nodes are skipped,
    /// as in an osm2pgsql import.
    pub fn nodes(&self, nodes: &[Node]) -> Result<Vec<FlexRow>, FlexError> {
        self.run(nodes, |runtime, node| {
            if node.tags.is_empty() {
                return Ok(Vec::new());
            }
            runtime.process_node(node)
        })
    }

    /// The rows of `ways`, in their order; untagged ways are skipped.
    pub fn ways(
        &self,
        ways: &[Way],
        locations: &(dyn NodeLocations + Sync),
    ) -> Result<Vec<FlexRow>, FlexError> {
        self.run(ways, |runtime, way| {
            if way.tags.is_empty() {
                return Ok(Vec::new());
            }
            runtime.process_way(way, locations)
        })
    }

    /// Checks every worker's state a last time; call once the nodes and
    /// ways are done.
    pub fn finish(&self) -> Result<(), FlexError> {
        let results = self.pool.broadcast(|_| {
            WORKER.with(|cell| match cell.borrow_mut().as_mut() {
                Some(worker) => self.check(worker),
                None => Ok(()),
            })
        });
        results.into_iter().collect()
    }

    /// Runs `process` over `objects` in chunks on the workers and joins
    /// the rows in object order.
    fn run<T: Sync>(
        &self,
        objects: &[T],
        process: impl Fn(&FlexRuntime, &T) -> Result<Vec<FlexRow>, FlexError> + Sync,
    ) -> Result<Vec<FlexRow>, FlexError> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        // A few chunks per worker, so that one slow chunk does not hold
        // the others up.
        let chunk = objects.len().div_ceil(self.count * 4).max(MIN_CHUNK);
        let chunks: Vec<&[T]> = objects.chunks(chunk).collect();
        let mut results: Vec<Option<Result<Vec<FlexRow>, FlexError>>> =
            chunks.iter().map(|_| None).collect();
        let process = &process;
        self.pool.scope(|scope| {
            for (slot, chunk) in results.iter_mut().zip(&chunks) {
                scope.spawn(move |_| {
                    *slot = Some(self.with_worker(|runtime| {
                        let mut rows = Vec::new();
                        for object in *chunk {
                            rows.extend(process(runtime, object)?);
                        }
                        Ok(rows)
                    }));
                });
            }
        });
        let mut rows = Vec::new();
        for result in results {
            rows.extend(result.expect("every chunk ran")?);
        }
        Ok(rows)
    }

    /// Runs `f` on this worker thread's state, made on first use, and
    /// checks the state when it is time to.
    fn with_worker(
        &self,
        f: impl FnOnce(&FlexRuntime) -> Result<Vec<FlexRow>, FlexError>,
    ) -> Result<Vec<FlexRow>, FlexError> {
        WORKER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let worker = match slot.as_mut() {
                Some(worker) => worker,
                None => slot.insert(self.start_worker()?),
            };
            let started = Instant::now();
            let rows = f(&worker.runtime)?;
            worker.since_check += started.elapsed();
            if worker.since_check >= worker.check_cost * CHECK_RATIO {
                self.check(worker)?;
            }
            Ok(rows)
        })
    }

    fn start_worker(&self) -> Result<Worker, FlexError> {
        let runtime = self.settings.runtime(Mode::Create, &self.schema)?;
        let tables: Vec<String> = runtime
            .tables()
            .iter()
            .map(|t| t.qualified_name())
            .collect();
        if tables != self.tables {
            return Err(FlexError::Load {
                config: self.settings.config_path.clone(),
                message: format!(
                    "the config defined tables {tables:?} in a second Lua state but {:?} in the first: \
                     tilepipe's Lua workers need a config that defines the same tables every time it loads",
                    self.tables
                ),
            });
        }
        let started = Instant::now();
        let loaded = runtime.state_summary()?;
        Ok(Worker {
            runtime,
            loaded,
            since_check: Duration::ZERO,
            check_cost: started.elapsed(),
        })
    }

    fn check(&self, worker: &mut Worker) -> Result<(), FlexError> {
        let started = Instant::now();
        let now = worker.runtime.state_summary()?;
        worker.check_cost = started.elapsed();
        worker.since_check = Duration::ZERO;
        if now == worker.loaded {
            return Ok(());
        }
        let mut changed: Vec<&str> = now
            .iter()
            .filter(|(name, summary)| worker.loaded.get(*name) != Some(summary))
            .map(|(name, _)| name.as_str())
            .chain(
                worker
                    .loaded
                    .keys()
                    .filter(|name| !now.contains_key(*name))
                    .map(String::as_str),
            )
            .collect();
        changed.sort_unstable();
        changed.dedup();
        Err(FlexError::KeepsState {
            config: self.settings.config_path.clone(),
            changed: changed.join(", "),
            workers: self.count,
        })
    }
}
