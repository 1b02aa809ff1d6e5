//! `tilepipe run`: the long-running loop from published diff to applied
//! batch and acted-on expiry. The CLI (`src/cli/run.rs`) starts the HTTP
//! server, the renderer and the renderd protocol server beside it (through
//! [`crate::services`], whose [`Shutdown`] the loop waits on too) and hands
//! the loop the renderer and the metrics registry.
//!
//! Shape: one thread owns the database work (the synchronous `postgres`
//! client must not run on async threads) and drives a tokio runtime for
//! the feed. Each turn: read the server's newest state, apply what is
//! pending in bounded batches (each in one transaction with its
//! position), then sleep until the next diff is due (the newest state's
//! timestamp plus one interval plus a margin). Every wait is interruptible
//! by SIGTERM/SIGINT; a batch in progress commits or rolls back before
//! the process exits. A batch that fails (an error or a panic) is rolled
//! back and retried with capped backoff; the process never exits for it.

pub mod expire_to_render;

use crate::apply::append::{raise_current_timestamp, Applier, ApplyResult};
use crate::apply::settings::{DataBounds, ImportSettings};
use crate::config::Config;
use crate::expire::batch::{self as expiry, LocalRenderer};
use crate::expire::style_aware::StyleReads;
use crate::metrics::Metrics;
use crate::replication::client::FeedClient;
use crate::replication::follower::{poll_delay, Batch, Follower};
use crate::replication::position::{read_position, write_position, Position, StoredPosition};
use crate::replication::state::format_timestamp;
use crate::serve::purge::PurgeSender;
use crate::services::Shutdown;
use anyhow::{bail, Context};
use expire_to_render::BuiltinRenderer;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tracing::{error, info, info_span, warn};

/// The advisory lock key that keeps two appliers (`run`, `catchup`) off
/// one database (the characters "tilepipe" as an integer).
const INSTANCE_LOCK: i64 = 0x7469_6c65_7069_7065;

/// The instance lock is held by another connection.
#[derive(Debug)]
pub struct Locked {
    /// The backend holding it, when PostgreSQL still lists it.
    pub holder: Option<i32>,
    /// What to tell the operator: the database and, if known, the pid.
    pub message: String,
}

/// Takes the single-instance advisory lock on `client`'s session (it
/// lasts until the connection closes, across transactions), so `run` and
/// `catchup` never apply the same batch at once. `Ok(Ok(pid))` gives the
/// backend pid of `client`'s session (which holds the lock now);
/// `Ok(Err(_))` when another connection holds it.
pub fn take_instance_lock(
    client: &mut postgres::Client,
    db: &postgres::Config,
) -> Result<Result<i32, Locked>, postgres::Error> {
    let row = client.query_one(
        "SELECT pg_try_advisory_lock($1), pg_backend_pid()",
        &[&INSTANCE_LOCK],
    )?;
    if row.get::<_, bool>(0) {
        return Ok(Ok(row.get(1)));
    }
    // A bigint advisory key is listed split in two: classid holds the high
    // half, objid the low one, objsubid 1 (PostgreSQL docs, pg_locks).
    let holder: Option<i32> = client
        .query_opt(
            "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted \
             AND objsubid = 1 AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
             AND (classid::bigint << 32 | objid::bigint) = $1 LIMIT 1",
            &[&INSTANCE_LOCK],
        )?
        .map(|row| row.get(0));
    Ok(Err(Locked {
        holder,
        message: format!(
            "another `tilepipe run` or `tilepipe catchup` holds this database ({}{}); only one may apply diffs",
            crate::db::describe(db),
            holder.map_or(String::new(), |pid| format!(", backend pid {pid}"))
        ),
    }))
}

/// Database state the loop needs, rebuilt after a reconnect. Its
/// connection holds the single-instance advisory lock (session-scoped, so
/// it survives the transactions; a reconnect takes it again).
struct Session {
    client: postgres::Client,
    applier: Applier,
    /// The server process of this connection: after a reconnect it tells
    /// our own old connection (still holding the lock) from another daemon.
    backend_pid: i32,
}

impl Session {
    /// Still usable after a failed batch: open and answering.
    fn is_healthy(&mut self) -> bool {
        !self.client.is_closed() && self.client.simple_query("SELECT 1").is_ok()
    }
}

/// Why a session could not be opened.
enum SessionError {
    /// Another connection holds the lock.
    Locked(Locked),
    /// Worth retrying (database down, restarting).
    Unavailable(anyhow::Error),
}

/// The `tilepipe run` loop: [`Daemon::start`] checks and connects,
/// [`Daemon::run`] follows the feed until shutdown.
pub struct Daemon {
    config: Config,
    db: postgres::Config,
    settings: ImportSettings,
    shutdown: Shutdown,
    /// `None` after a failed batch left the connection unusable: dropped
    /// at once (which releases its lock), opened again before the retry.
    session: Option<Session>,
    /// Backend pids of this process's earlier connections.
    old_backends: Vec<i32>,
    /// tilepipe's own renderer, when `run` starts one: expired metatiles
    /// of its styles are queued for it.
    renderer: Option<BuiltinRenderer>,
    /// The process's metrics (served on `/metrics` by `run`).
    metrics: Option<Arc<Metrics>>,
    /// Where the HTTP server reads the data's bounds (TileJSON, the map
    /// page); refreshed after each batch.
    data_bounds: Option<crate::serve::DataBoundsHandle>,
    /// Where metatiles touched or deleted without a render go, to be
    /// purged from the caches in front (`serve.purge`).
    purge: Option<PurgeSender>,
    /// Delivery threads of `expire.nodes`, while `run` runs.
    nodes: Option<crate::expire::nodes::Delivery>,
}

impl Daemon {
    /// Start-up self-checks with clear messages: database reachable,
    /// PostGIS and an import present, replication set up, no other
    /// instance running.
    pub fn start(config: Config, shutdown: Shutdown) -> anyhow::Result<Daemon> {
        let db = crate::db::resolve(&config.database.url, &crate::db::ProcessEnv)?;
        let mut client = crate::db::connect(&db).context("start-up check: database")?;
        crate::apply::check_extensions(&mut client).context("start-up check: extensions")?;
        let schema = config.database.middle_schema.clone();
        let settings = ImportSettings::require(&mut client, &schema).context("start-up check")?;
        crate::apply::flatnodes::check_configured(
            settings.flat_nodes.as_deref(),
            config.import.flat_nodes.as_deref(),
        )
        .context("start-up check")?;
        match read_position(&mut client, &schema)? {
            StoredPosition::Set(_) => {}
            _ => bail!("start-up check: replication is not set up; run `tilepipe init` first"),
        }
        let session = match open_session(&db, &settings, &config) {
            Ok(session) => session,
            Err(SessionError::Locked(locked)) => bail!(locked.message),
            Err(SessionError::Unavailable(e)) => return Err(e.context("start-up check: database")),
        };
        Ok(Daemon {
            config,
            db,
            settings,
            shutdown,
            session: Some(session),
            old_backends: Vec::new(),
            renderer: None,
            metrics: None,
            data_bounds: None,
            purge: None,
            nodes: None,
        })
    }

    /// Publishes the stored data bounds to `handle` now and after every
    /// applied batch (which widens them, or a `tilepipe bounds
    /// --recompute` changed them).
    pub fn with_data_bounds(mut self, handle: crate::serve::DataBoundsHandle) -> Daemon {
        self.data_bounds = Some(handle);
        self.publish_data_bounds();
        self
    }

    /// Best effort: bounds that cannot be read leave the last ones shown.
    fn publish_data_bounds(&mut self) {
        let Some(handle) = self.data_bounds.clone() else {
            return;
        };
        let schema = self.config.database.middle_schema.clone();
        let Ok(client) = self.client() else { return };
        match DataBounds::load(client, &schema) {
            Ok(bounds) => handle.set(bounds),
            Err(e) => warn!("reading the data bounds: {e}"),
        }
    }

    /// Reports the position, each batch and each expiry to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Daemon {
        self.metrics = Some(metrics);
        self
    }

    fn report_position(&self, position: &Position) {
        if let Some(metrics) = &self.metrics {
            metrics.set_replication_position(position.sequence, position.timestamp.into());
        }
    }

    /// Purges metatiles expiry touches or deletes from the caches in
    /// front (re-rendered ones are purged by the server after the render).
    pub fn with_purge(mut self, purge: PurgeSender) -> Daemon {
        self.purge = Some(purge);
        self
    }

    /// Sends re-renders of expired metatiles to tilepipe's own renderer.
    pub fn with_renderer(mut self, renderer: BuiltinRenderer) -> Daemon {
        self.renderer = Some(renderer);
        self
    }

    /// Connects again, retrying with capped backoff until the database
    /// answers (e.g. after a PostgreSQL restart). `Ok(None)` on shutdown.
    /// Our own old connection may still hold the lock for a moment (the
    /// server ends its backend asynchronously, or only notices a dead
    /// client later): that is waited out, never fatal. Another process
    /// holding it is fatal, as at start.
    fn reconnect(&mut self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Option<Session>> {
        if let Some(old) = self.session.take() {
            self.old_backends.push(old.backend_pid);
        }
        let mut delay = Duration::from_millis(500);
        loop {
            match open_session(&self.db, &self.settings, &self.config) {
                Ok(session) => {
                    info!("database connection restored");
                    return Ok(Some(session));
                }
                Err(SessionError::Locked(Locked {
                    holder: Some(pid), ..
                })) if self.old_backends.contains(&pid) => {
                    warn!("our previous connection (backend pid {pid}) still holds the instance lock; ending it and retrying");
                    if let Ok(mut client) = crate::db::connect(&self.db) {
                        if let Err(e) = client.execute("SELECT pg_terminate_backend($1)", &[&pid]) {
                            warn!("ending backend {pid}: {e}");
                        }
                    }
                }
                // Released between the attempt and the look-up: try again.
                Err(SessionError::Locked(Locked { holder: None, .. })) => {}
                Err(SessionError::Locked(locked)) => bail!(locked.message),
                Err(SessionError::Unavailable(e)) => {
                    warn!(
                        "database unavailable: {e:#}; retrying in {:.1} s",
                        delay.as_secs_f64()
                    )
                }
            }
            if !runtime.block_on(self.shutdown.sleep(delay)) {
                return Ok(None);
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// The connection, as long as no failed batch dropped it.
    fn client(&mut self) -> anyhow::Result<&mut postgres::Client> {
        match &mut self.session {
            Some(session) => Ok(&mut session.client),
            None => bail!("no database connection"),
        }
    }

    fn position(&mut self) -> anyhow::Result<Position> {
        let schema = self.config.database.middle_schema.clone();
        match read_position(self.client()?, &schema)? {
            StoredPosition::Set(position) => Ok(position),
            _ => bail!("the replication position vanished from the database"),
        }
    }

    /// Runs until shutdown. `on_ready` is called once the loop is about
    /// to poll for the first time (for sd_notify).
    pub fn run(
        mut self,
        runtime: &tokio::runtime::Runtime,
        on_ready: impl FnOnce(),
    ) -> anyhow::Result<()> {
        let mut position = self.position()?;
        // The daemon never gives up on the feed: it retries forever.
        let client = FeedClient::from_config(&position.base_url, &self.config.replication)?;
        let interval = client.feed().interval;
        let follower = Follower::new(client, self.config.replication.max_batch_bytes());
        // A clear word at start-up if the feed cannot be reached; the loop
        // keeps retrying it with backoff.
        match runtime.block_on(follower.client().latest_state_once()) {
            Ok(state) => info!(
                "start-up check: feed {} reachable, newest sequence {}",
                position.base_url, state.sequence
            ),
            Err(e) => error!(
                "start-up check: feed {} not reachable ({e}); retrying with backoff",
                position.base_url
            ),
        }
        self.report_position(&position);
        let margin = Duration::from_secs(self.config.replication.poll_margin_secs);
        // Each style's XML is analysed now, so the log says at start what
        // style-aware expiry understood.
        style_reads(&self.config);
        // Tiles of batches committed before a crash are acted on first.
        let client = match &mut self.session {
            Some(session) => &mut session.client,
            None => bail!("no database connection"),
        };
        act_on_expired(
            client,
            &self.config,
            runtime,
            self.renderer.as_ref(),
            self.metrics.as_deref(),
            self.purge.as_ref(),
        )?;
        self.start_node_delivery()?;
        let scheduler = runtime.block_on(crate::expire::schedule::start(
            &self.config.expire,
            self.renderer
                .clone()
                .map(|r| Arc::new(r) as Arc<dyn LocalRenderer>),
        ))?;
        info!(
            "following {} from sequence {} ({})",
            position.base_url,
            position.sequence,
            format_timestamp(position.timestamp)
        );
        on_ready();

        while !self.shutdown.is_requested() {
            let Some(latest) =
                runtime.block_on(self.until_shutdown(follower.latest_state(position.sequence)))
            else {
                break;
            };
            let latest = latest?;
            if latest.sequence > position.sequence {
                let Some(batch) = runtime.block_on(
                    self.until_shutdown(follower.next_batch_until(position.sequence, &latest)),
                ) else {
                    break;
                };
                let Some(batch) = batch? else { continue };
                let span = info_span!(
                    "batch",
                    first = batch.sequences.start(),
                    last = batch.sequences.end()
                );
                let _entered = span.enter();
                match self.apply_with_retry(runtime, &position, &batch)? {
                    Some(next) => position = next,
                    None => break,
                }
                continue;
            }
            let wait = poll_delay(
                &latest,
                interval.duration(),
                margin,
                // Once a diff is due, poll often: every second it waits
                // unseen is a second of staleness on the map.
                interval.not_yet_wait().min(Duration::from_secs(1)),
                chrono::Utc::now(),
            );
            if !runtime.block_on(self.shutdown.sleep(wait)) {
                break;
            }
        }
        if let Some(mut scheduler) = scheduler {
            if let Err(e) = runtime.block_on(scheduler.shutdown()) {
                warn!("stopping the low-zoom schedule: {e}");
            }
        }
        if let Some(nodes) = self.nodes.take() {
            nodes.stop();
        }
        info!("stopped at sequence {}", position.sequence);
        Ok(())
    }

    /// Starts a delivery thread per `expire.nodes` entry, reporting each
    /// node's backlog and replay lag to the metrics.
    fn start_node_delivery(&mut self) -> anyhow::Result<()> {
        let nodes = &self.config.expire.nodes;
        if nodes.is_empty() {
            return Ok(());
        }
        let metrics = self.metrics.clone();
        let report: crate::expire::nodes::StatusSink = Arc::new(move |name, status| {
            if let Some(metrics) = &metrics {
                metrics.set_render_node(
                    name,
                    crate::metrics::RenderNodeFigures {
                        backlog_batches: status.backlog_batches,
                        backlog_metatiles: status.backlog_metatiles,
                        replay_lag_bytes: status.replay_lag_bytes,
                        oldest_pending_seconds: status.oldest_pending_seconds,
                        delivered_metatiles: status.delivered_metatiles,
                        up: status.up,
                    },
                );
            }
        });
        let delivery = crate::expire::nodes::Delivery::start(
            nodes,
            &self.db,
            &self.config.database.middle_schema,
            report,
        )
        .context("starting the render nodes' delivery")?;
        info!(
            nodes = nodes.len(),
            "delivering expired metatiles to render nodes once their standbys replayed each batch"
        );
        self.nodes = Some(delivery);
        Ok(())
    }

    /// Runs `work` unless shutdown comes first (`None` then).
    async fn until_shutdown<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            result = work => Some(result),
            _ = self.shutdown.wait() => None,
        }
    }

    /// Applies one batch until it commits: a failed attempt (an error, or
    /// a panic inside the applier) is rolled back, logged, counted and
    /// retried after a capped exponential backoff (the feed's
    /// `retry_initial_secs` doubling to `retry_max_secs`), on the same
    /// connection if it still answers, else on a new one. The position
    /// never moves past the batch meanwhile. `Ok(None)` on shutdown, which
    /// also interrupts the backoff.
    fn apply_with_retry(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        position: &Position,
        batch: &Batch,
    ) -> anyhow::Result<Option<Position>> {
        let replication = &self.config.replication;
        let max_delay = Duration::from_secs(replication.retry_max_secs.max(1));
        let mut delay = Duration::from_secs(replication.retry_initial_secs.max(1)).min(max_delay);
        let mut failing_since: Option<SystemTime> = None;
        let mut failures = 0u32;
        // The failure not yet recorded in the database (its connection was
        // unusable): written once a new one is open.
        let mut unrecorded: Option<String> = None;
        let queue = self.renderer.as_ref().map(|r| r.queue.clone());
        loop {
            if self.session.is_none() {
                match self.reconnect(runtime)? {
                    Some(session) => self.session = Some(session),
                    None => return Ok(None),
                }
            }
            let Some(session) = self.session.as_mut() else {
                continue;
            };
            if let Some(record) = unrecorded.take() {
                record_failure(&mut session.client, &self.config, &record);
            }
            let started = Instant::now();
            // Rendering yields to a large batch (Tirex's rendering control
            // stops its queues around an osm2pgsql run): background and
            // expiry renders wait until it commits or fails; renders for
            // waiting clients go on.
            let threshold = self.config.render.pause_background_over_changes;
            let pause = match &queue {
                Some(queue) if threshold > 0 && batch.changes.len() > threshold => {
                    Some(queue.pause_background())
                }
                _ => None,
            };
            let attempt = catch_unwind(AssertUnwindSafe(|| {
                apply_batch(
                    &mut session.client,
                    &mut session.applier,
                    &self.config,
                    position,
                    batch,
                )
            }));
            drop(pause);
            let (error, panicked) = match attempt {
                Ok(Ok((next, result))) => {
                    info!(
                        objects = batch.changes.len(),
                        rows_changed = result.changed_rows().count(),
                        seconds = format_args!("{:.3}", started.elapsed().as_secs_f64()),
                        "applied up to {}",
                        format_timestamp(next.timestamp)
                    );
                    if failures > 0 {
                        info!("the batch applied after {failures} failed attempt(s)");
                    }
                    if let Some(metrics) = &self.metrics {
                        metrics
                            .record_batch(std::time::SystemTime::now(), batch.changes.len() as u64);
                        metrics.set_replication_position(next.sequence, next.timestamp.into());
                        metrics.clear_apply_failing();
                    }
                    self.publish_data_bounds();
                    let Some(session) = self.session.as_mut() else {
                        return Ok(Some(next));
                    };
                    if let Some(nodes) = &self.nodes {
                        nodes.wake();
                    }
                    if let Err(e) = act_on_expired(
                        &mut session.client,
                        &self.config,
                        runtime,
                        self.renderer.as_ref(),
                        self.metrics.as_deref(),
                        self.purge.as_ref(),
                    ) {
                        warn!("expiry: {e:#}");
                    }
                    return Ok(Some(next));
                }
                Ok(Err(e)) => (describe_apply_error(&e), false),
                Err(payload) => (
                    format!(
                        "panic while applying ({}): {}",
                        describe_objects(batch),
                        panic_message(payload.as_ref())
                    ),
                    true,
                ),
            };
            failures += 1;
            let since = *failing_since.get_or_insert_with(SystemTime::now);
            error!(
                attempt = failures,
                "applying sequences {}..={} failed, rolled back (position stays at {}); retrying in {} s: {error}",
                batch.sequences.start(),
                batch.sequences.end(),
                position.sequence,
                delay.as_secs()
            );
            if let Some(metrics) = &self.metrics {
                metrics.record_apply_failure();
                metrics.set_apply_failing(since, &error);
            }
            let record = serde_json::json!({
                "since": chrono::DateTime::<chrono::Utc>::from(since).to_rfc3339(),
                "first_sequence": batch.sequences.start(),
                "last_sequence": batch.sequences.end(),
                "attempts": failures,
                "error": error,
            })
            .to_string();
            // After a panic the applier's state is unknown: start afresh.
            // A connection that no longer answers is dropped now, which
            // releases its lock before the reconnect takes it again.
            if !panicked && session.is_healthy() {
                record_failure(&mut session.client, &self.config, &record);
            } else {
                if let Some(old) = self.session.take() {
                    self.old_backends.push(old.backend_pid);
                }
                unrecorded = Some(record);
            }
            if !runtime.block_on(self.shutdown.sleep(delay)) {
                return Ok(None);
            }
            delay = (delay * 2).min(max_delay);
        }
    }
}

/// Where `tilepipe status` finds the failure of the batch the daemon keeps
/// retrying (JSON; removed by the commit of the next applied batch).
pub const APPLY_FAILURE_PROPERTY: &str = "tilepipe_apply_failure";

/// Stores the failure for `tilepipe status`, in its own autocommit
/// statement (the batch's transaction is gone). Best effort: the failure
/// may be the database itself.
fn record_failure(client: &mut postgres::Client, config: &Config, record: &str) {
    let schema = config.database.middle_schema.as_str();
    if let Err(e) =
        crate::db::properties::write(client, schema, &[(APPLY_FAILURE_PROPERTY, record)])
    {
        warn!("recording the failure for `tilepipe status`: {e}");
    }
}

/// An apply error with what PostgreSQL says about where it happened (the
/// table, constraint and statement context its error report carries), which
/// its `Display` leaves out.
fn describe_apply_error(error: &anyhow::Error) -> String {
    let mut text = format!("{error:#}");
    let db = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<postgres::error::DbError>());
    if let Some(db) = db {
        if let Some(table) = db.table() {
            text.push_str(&format!(" (table {table}"));
            if let Some(constraint) = db.constraint() {
                text.push_str(&format!(", constraint {constraint}"));
            }
            text.push(')');
        }
        if let Some(context) = db.where_() {
            text.push_str(&format!("\nCONTEXT: {context}"));
        }
    }
    text
}

/// The objects of a batch, for a failure no error names one of: all of
/// them when few, else the first ones and a count.
fn describe_objects(batch: &Batch) -> String {
    const SHOWN: usize = 10;
    let ids: Vec<String> = batch
        .changes
        .iter()
        .take(SHOWN)
        .map(|change| change.object_id().to_string())
        .collect();
    let more = batch.changes.len().saturating_sub(SHOWN);
    if more > 0 {
        format!("objects {} and {more} more", ids.join(", "))
    } else {
        format!("objects {}", ids.join(", "))
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Fault injection for the daemon tests (tests/daemon.rs): with
/// `TILEPIPE_FAULT_PANIC_APPLIES=N` set, the first N apply attempts of the
/// process panic inside the open transaction, as a bug in the applier
/// would. No input makes the applier panic on purpose.
fn injected_panic() {
    static LEFT: OnceLock<AtomicU32> = OnceLock::new();
    let left = LEFT.get_or_init(|| {
        let n = std::env::var("TILEPIPE_FAULT_PANIC_APPLIES").ok();
        AtomicU32::new(n.and_then(|n| n.parse().ok()).unwrap_or(0))
    });
    if left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        panic!("injected fault (TILEPIPE_FAULT_PANIC_APPLIES)");
    }
}

/// Connects, takes the single-instance lock, prepares the applier.
fn open_session(
    db: &postgres::Config,
    settings: &ImportSettings,
    config: &Config,
) -> Result<Session, SessionError> {
    let unavailable = |e: anyhow::Error| SessionError::Unavailable(e);
    let mut client = crate::db::connect(db).map_err(|e| unavailable(e.into()))?;
    let backend_pid = take_instance_lock(&mut client, db)
        .map_err(|e| unavailable(e.into()))?
        .map_err(SessionError::Locked)?;
    let applier = applier_for(settings, config).map_err(|e| unavailable(e.into()))?;
    Ok(Session {
        client,
        applier,
        backend_pid,
    })
}

/// The applier for a database imported with `settings`, hashing the
/// hstore keys the configured styles' value conditions read
/// ([`StyleReads::hstore_keys`]) so that style-aware expiry knows them.
/// Shared by `run` and `catchup`.
pub fn applier_for(
    settings: &ImportSettings,
    config: &Config,
) -> Result<Applier, crate::apply::ApplyError> {
    // The hstore keys' hashes serve the value conditions only.
    let keys: std::collections::BTreeSet<String> = if config.expire.value_conditions {
        style_reads(config)
            .iter()
            .flat_map(StyleReads::hstore_keys)
            .collect()
    } else {
        Default::default()
    };
    Ok(Applier::for_settings(settings)?.with_digest_keys(keys))
}

/// One batch, its position and its expired tiles, in one transaction.
/// Shared by `run` and `catchup`.
pub fn apply_batch(
    client: &mut postgres::Client,
    applier: &mut Applier,
    config: &Config,
    position: &Position,
    batch: &Batch,
) -> anyhow::Result<(Position, ApplyResult)> {
    let schema = config.database.middle_schema.as_str();
    let mut tx = client.transaction()?;
    let result = applier.apply(&mut tx, &batch.changes)?;
    injected_panic();
    raise_current_timestamp(&mut tx, schema, &batch.changes)?;
    DataBounds::widen_stored(&mut tx, schema, &batch.changes)?;
    // A flex config's own expire outputs (osm2pgsql ≥ 1.9), beside
    // `expire:`; their files are written by `act_on_expired`.
    crate::expire::outputs::record_batch(
        &mut tx,
        schema,
        applier.expire_outputs(),
        &result.row_changes,
        config.expire.all_changes,
    )?;
    if config.expire.is_active() {
        let tiles = expiry::tiles_for_batch_with(
            &result.row_changes,
            &config.expire.raster(),
            config.expire.all_changes,
            &style_reads(config),
            config.expire.value_conditions,
        )?;
        expiry::enqueue(&mut tx, schema, batch.end.sequence, &tiles)?;
        crate::expire::nodes::enqueue(
            &mut tx,
            schema,
            batch.end.sequence,
            &tiles,
            &config.expire.nodes,
        )?;
    }
    let next = Position {
        base_url: position.base_url.clone(),
        sequence: batch.end.sequence,
        timestamp: batch.end.timestamp,
    };
    write_position(&mut tx, schema, &next)?;
    // A failure `run` recorded is over once a batch commits.
    crate::db::properties::remove(&mut tx, schema, APPLY_FAILURE_PROPERTY)?;
    tx.commit()?;
    if !config.expire.nodes.is_empty() {
        // Best effort: a row left unstamped is stamped by its delivery
        // thread, with a later (so still safe) position.
        if let Err(e) = crate::expire::nodes::record_commit_lsn(client, schema, batch.end.sequence)
        {
            warn!("recording the commit position for the render nodes: {e}");
        }
    }
    Ok((next, result))
}

/// What the styles of `expire.styles` read, for style-aware expiry: the
/// XML of the `styles:` entry of the same name (styles tilepipe renders),
/// else the entry's own `xml` (256 px tiles, scale 1); empty with
/// `expire.style_aware: false`. Each XML file is analysed once per
/// process (the first call logs what was understood); a style whose XML
/// cannot be read gets every expired tile, with a warning.
pub fn style_reads(config: &Config) -> Arc<Vec<StyleReads>> {
    type Key = (String, std::path::PathBuf, u32, u64);
    static CACHE: OnceLock<Mutex<HashMap<Key, Option<Arc<StyleReads>>>>> = OnceLock::new();
    if !config.expire.style_aware {
        return Arc::new(Vec::new());
    }
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut reads = Vec::new();
    // Styles of render nodes count too, when this configuration has
    // their XML (a `styles:` entry of the same name).
    let mut names: Vec<&String> = config.expire.styles.iter().map(|s| &s.name).collect();
    for node in &config.expire.nodes {
        names.extend(&node.styles);
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(*name));
    for name in names {
        let rendered = config.styles.iter().find(|s| &s.name == name);
        let own_xml = config
            .expire
            .styles
            .iter()
            .find(|s| &s.name == name)
            .and_then(|s| s.xml.as_ref());
        let (xml, tile_size, scale) = match (rendered, own_xml) {
            (Some(style), _) => (&style.xml, style.tile_size, style.scale),
            (None, Some(xml)) => (xml, 256, 1.0),
            (None, None) => continue,
        };
        let key = (name.clone(), xml.clone(), tile_size, scale.to_bits());
        let entry =
            cache.entry(key).or_insert_with(|| {
                match crate::render::style_reads::read_style(name, xml, tile_size, scale) {
                    Ok(reads) => Some(Arc::new(reads)),
                    Err(e) => {
                        warn!(style = %name, "style-aware expiry off for this style: {e}");
                        None
                    }
                }
            });
        if let Some(r) = entry {
            reads.push(StyleReads::clone(r));
        }
    }
    Arc::new(reads)
}

/// Acts on every committed batch's expired tiles not acted on yet (after a
/// crash, those of earlier runs too): the tile lists of a flex config's
/// expire outputs, then the `expire:` section's actions; metatiles touched
/// or deleted go to `purge` for the caches in front. Entries whose
/// actions failed stay queued and are tried again after the next batch.
pub fn act_on_expired(
    client: &mut postgres::Client,
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    renderer: Option<&BuiltinRenderer>,
    metrics: Option<&Metrics>,
    purge: Option<&PurgeSender>,
) -> anyhow::Result<()> {
    let schema = config.database.middle_schema.as_str();
    crate::expire::outputs::write_files(client, schema)?;
    if !config.expire.is_active() {
        return Ok(());
    }
    for (batch_end, tiles) in expiry::pending(client, schema)? {
        info!(
            batch_end,
            tiles = tiles.all.len(),
            zoom = tiles.all.zoom(),
            "expiring tiles"
        );
        if runtime.block_on(expiry::act(
            &config.expire,
            batch_end,
            &tiles,
            renderer.map(|r| r as &dyn LocalRenderer),
        )) {
            if let Some(metrics) = metrics {
                let metatiles = tiles.all.metatiles(tiles.all.zoom()).count() as u64;
                metrics.add_expired(tiles.all.len(), metatiles);
            }
            if let Some(purge) = purge {
                let builtin = renderer.map(|r| r as &dyn LocalRenderer);
                for (style, metatile) in expiry::unrendered(&config.expire, &tiles, builtin) {
                    purge.purge(&style, metatile);
                }
            }
            expiry::done(client, schema, batch_end)?;
        }
    }
    Ok(())
}

/// Tells systemd the service is ready (`Type=notify`), when started by it.
pub fn notify_systemd_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(socket) => socket,
        Err(e) => return warn!("sd_notify: {e}"),
    };
    let path = path.to_string_lossy().into_owned();
    let result = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|addr| socket.send_to_addr(b"READY=1\n", &addr))
    } else {
        socket.send_to(b"READY=1\n", &path)
    };
    if let Err(e) = result {
        warn!("sd_notify to {path}: {e}");
    }
}
