//! Expiry for render nodes on streaming standbys: each node of
//! `expire.nodes` draws from its own standby of the writer's database, and
//! gets the metatiles a batch expired (renderd's `cmdDirty`) only once its
//! standby has replayed that batch's commit, so no node redraws a tile from
//! data older than the edit.
//!
//! - [`enqueue`] writes, inside the batch's transaction, one backlog row per
//!   node and style (`tilepipe_expire_node_backlog`): the expiry survives
//!   a crash and a node that is down or lagging keeps it until delivered.
//! - [`record_commit_lsn`] stamps the rows, after the commit, with the
//!   primary's WAL insert position: the commit record lies before it, so a
//!   standby whose replay position passed it sees the batch. A crash
//!   before the stamp leaves it NULL; delivery then stamps the current
//!   position (later still, so still safe).
//! - [`Delivery`] runs one thread per node: it compares the standby's
//!   `pg_last_wal_replay_lsn()` with each row's commit position (the check
//!   PostgreSQL's docs suggest for read-your-writes on a hot standby,
//!   "Monitoring" of high availability: `pg_last_wal_replay_lsn`), sends
//!   the replayed rows' metatiles over the renderd protocol and deletes
//!   them; anything failing is retried with capped backoff.

use super::actions::FIRST_EXPIRED_ZOOM;
use super::batch::BatchTiles;
use crate::db::quote_ident;
use crate::renderd::{Client, Command, Endpoint, Request};
use crate::tile::Metatile;
use postgres::GenericClient;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// The backlog table, in the middle schema beside the expire queue.
const BACKLOG_TABLE: &str = "tilepipe_expire_node_backlog";

/// One render node of `expire.nodes`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RenderNode {
    /// A name for logs and metrics (`node` label).
    pub name: String,
    /// The node's renderd protocol listener (`host:port`, or a socket
    /// path): `tilepipe serve` with `render.tcp`, or renderd itself.
    pub renderd: String,
    /// Connection to the standby the node renders from (URL or
    /// conninfo), for its replay position.
    pub standby: String,
    /// Styles the node draws; each gets the metatiles expired for it.
    pub styles: Vec<String>,
    /// Lowest zoom sent (default 10; never below z3).
    #[serde(default = "default_min_zoom")]
    pub min_zoom: u8,
    /// Highest zoom sent (default 18; at most `expire.max_zoom`).
    #[serde(default = "default_max_zoom")]
    pub max_zoom: u8,
}

fn default_min_zoom() -> u8 {
    10
}

fn default_max_zoom() -> u8 {
    18
}

impl RenderNode {
    /// Checks what serde cannot; messages name the key.
    pub fn validate(&self, expire_max_zoom: u8) -> Result<(), String> {
        let key = format!("expire.nodes[{}]", self.name);
        if self.name.is_empty() {
            return Err("expire.nodes: a node has an empty name".into());
        }
        if self.styles.is_empty() {
            return Err(format!("{key}.styles is empty: the node would get nothing"));
        }
        if self.min_zoom > self.max_zoom {
            return Err(format!(
                "{key}.min_zoom {} is above its max_zoom {}",
                self.min_zoom, self.max_zoom
            ));
        }
        if self.max_zoom > expire_max_zoom {
            return Err(format!(
                "{key}.max_zoom {} is above expire.max_zoom {expire_max_zoom}: tiles are only computed up to it",
                self.max_zoom
            ));
        }
        Endpoint::parse(&self.renderd).map_err(|e| format!("{key}.renderd: {e}"))?;
        if self.standby.trim().is_empty() {
            return Err(format!(
                "{key}.standby is empty: give the connection to the standby the node renders from"
            ));
        }
        crate::db::resolve(&self.standby, &crate::db::ProcessEnv)
            .map_err(|e| format!("{key}.standby: {e}"))?;
        Ok(())
    }

    /// The zooms sent to the node.
    fn zooms(&self) -> std::ops::RangeInclusive<u8> {
        self.min_zoom.max(FIRST_EXPIRED_ZOOM)..=self.max_zoom
    }
}

/// Checks the node list: each node valid, names unique.
pub fn validate_nodes(nodes: &[RenderNode], expire_max_zoom: u8) -> Result<(), String> {
    for (i, node) in nodes.iter().enumerate() {
        node.validate(expire_max_zoom)?;
        if nodes[..i].iter().any(|other| other.name == node.name) {
            return Err(format!("expire.nodes: two nodes are named {:?}", node.name));
        }
    }
    Ok(())
}

/// Why the backlog could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    /// A database error on the primary.
    #[error("node backlog: {0}")]
    Db(#[from] postgres::Error),
    /// A stored row whose metatiles do not decode.
    #[error("node backlog row of node {node}, batch {batch}, style {style}: {message}")]
    Corrupt {
        /// The row's node.
        node: String,
        /// The row's `batch_end`.
        batch: i64,
        /// The row's style.
        style: String,
        /// What is wrong.
        message: String,
    },
}

fn backlog_table(schema: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(BACKLOG_TABLE))
}

/// Metatiles as stored: zoom (1 byte), x and y (4 bytes each, big endian).
fn metatiles_to_bytes(metatiles: &[Metatile]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(metatiles.len() * 9);
    for m in metatiles {
        bytes.push(m.z);
        bytes.extend_from_slice(&m.x.to_be_bytes());
        bytes.extend_from_slice(&m.y.to_be_bytes());
    }
    bytes
}

fn metatiles_from_bytes(bytes: &[u8]) -> Result<Vec<Metatile>, String> {
    if bytes.len() % 9 != 0 {
        return Err(format!(
            "{} bytes is not a whole number of metatiles",
            bytes.len()
        ));
    }
    bytes
        .chunks_exact(9)
        .map(|c| {
            let metatile = Metatile {
                z: c[0],
                x: u32::from_be_bytes([c[1], c[2], c[3], c[4]]),
                y: u32::from_be_bytes([c[5], c[6], c[7], c[8]]),
            };
            let side = 1u64 << metatile.z.min(31);
            if metatile.z > crate::tile::MAX_ZOOM
                || u64::from(metatile.x) >= side
                || u64::from(metatile.y) >= side
            {
                return Err(format!("{metatile} is outside the world"));
            }
            Ok(metatile)
        })
        .collect()
}

/// Queues a batch's expired metatiles for every node, inside the batch's
/// transaction; `commit_lsn` stays NULL until [`record_commit_lsn`].
pub fn enqueue(
    client: &mut impl GenericClient,
    schema: &str,
    batch_end: u64,
    tiles: &BatchTiles,
    nodes: &[RenderNode],
) -> Result<(), BacklogError> {
    if nodes.is_empty() {
        return Ok(());
    }
    let table = backlog_table(schema);
    client.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             node text NOT NULL, batch_end int8 NOT NULL, style text NOT NULL,
             metatiles bytea NOT NULL, count int4 NOT NULL, commit_lsn pg_lsn,
             queued timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (node, batch_end, style))"
    ))?;
    let insert = client.prepare(&format!(
        "INSERT INTO {table} (node, batch_end, style, metatiles, count) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (node, batch_end, style) DO UPDATE
         SET metatiles = EXCLUDED.metatiles, count = EXCLUDED.count, commit_lsn = NULL, queued = now()"
    ))?;
    for node in nodes {
        for style in &node.styles {
            let metatiles: Vec<Metatile> = node
                .zooms()
                .flat_map(|z| tiles.metatiles(style, z))
                .collect();
            if metatiles.is_empty() {
                continue;
            }
            client.execute(
                &insert,
                &[
                    &node.name,
                    &(batch_end as i64),
                    style,
                    &metatiles_to_bytes(&metatiles),
                    &(metatiles.len() as i32),
                ],
            )?;
        }
    }
    Ok(())
}

/// Stamps the backlog rows of `batch_end` with the primary's WAL insert
/// position, right after the batch's commit: the commit record ends at or
/// before it (PostgreSQL docs, `pg_current_wal_insert_lsn`).
pub fn record_commit_lsn(
    client: &mut impl GenericClient,
    schema: &str,
    batch_end: u64,
) -> Result<(), BacklogError> {
    if !backlog_exists(client, schema)? {
        return Ok(());
    }
    client.execute(
        &format!(
            "UPDATE {} SET commit_lsn = pg_current_wal_insert_lsn() WHERE batch_end = $1 AND commit_lsn IS NULL",
            backlog_table(schema)
        ),
        &[&(batch_end as i64)],
    )?;
    Ok(())
}

fn backlog_exists(client: &mut impl GenericClient, schema: &str) -> Result<bool, postgres::Error> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
            &[&schema, &BACKLOG_TABLE],
        )?
        .get(0))
}

/// One node's backlog as the table holds it (`tilepipe status`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BacklogSummary {
    /// Batches with rows left.
    pub batches: u64,
    /// Metatiles left, over all styles.
    pub metatiles: u64,
    /// Seconds since the oldest row left was queued (0 when none).
    pub oldest_pending_seconds: f64,
}

/// Every node's backlog, by node name, from the table in `schema`; a node
/// without rows (or no table yet) is absent.
pub fn backlog_summary(
    client: &mut impl GenericClient,
    schema: &str,
) -> Result<std::collections::BTreeMap<String, BacklogSummary>, BacklogError> {
    let mut summary = std::collections::BTreeMap::new();
    if !backlog_exists(client, schema)? {
        return Ok(summary);
    }
    let rows = client.query(
        &format!(
            "SELECT node, count(DISTINCT batch_end)::int8, sum(count)::int8,
                    extract(epoch FROM now() - min(queued))::float8
             FROM {} GROUP BY node",
            backlog_table(schema)
        ),
        &[],
    )?;
    for row in &rows {
        let batches: i64 = row.get(1);
        let metatiles: i64 = row.get(2);
        let oldest: f64 = row.get(3);
        summary.insert(
            row.get(0),
            BacklogSummary {
                batches: batches as u64,
                metatiles: metatiles as u64,
                oldest_pending_seconds: oldest.max(0.0),
            },
        );
    }
    Ok(summary)
}

/// The primary's WAL insert position, as a byte offset.
fn insert_lsn(client: &mut impl GenericClient) -> Result<u64, postgres::Error> {
    let lsn: i64 = client
        .query_one(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8",
            &[],
        )?
        .get(0);
    Ok(lsn as u64)
}

/// Whether the server is in recovery, and how far it has replayed: a
/// server that is not in recovery (the node reads the primary itself, or
/// a promoted standby) has everything committed, its own insert position.
fn replay_position(client: &mut impl GenericClient) -> Result<(bool, u64), postgres::Error> {
    let row = client.query_one(
        "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery()
                THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8
                ELSE (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8 END",
        &[],
    )?;
    // NULL: a standby that has replayed nothing since it started.
    Ok((row.get(0), row.get::<_, Option<i64>>(1).unwrap_or(0) as u64))
}

/// How many WAL bytes `node`'s standby has still to replay to reach the
/// primary's insert position now; the error says why the standby could
/// not be asked (`tilepipe status` shows it, it is no failure there).
pub fn replay_lag_bytes(
    primary: &mut impl GenericClient,
    node: &RenderNode,
) -> Result<u64, String> {
    let mut standby = crate::db::resolve(&node.standby, &crate::db::ProcessEnv)
        .map_err(|e| format!("expire.nodes[{}].standby: {e}", node.name))?;
    standby.connect_timeout(DB_CONNECT_TIMEOUT);
    let primary_lsn = insert_lsn(primary).map_err(|e| format!("primary: {e}"))?;
    let mut client = standby
        .connect(postgres::NoTls)
        .map_err(|e| crate::redact::secrets(&e.to_string()).into_owned())?;
    let (_, replayed) = replay_position(&mut client).map_err(|e| e.to_string())?;
    Ok(primary_lsn.saturating_sub(replayed))
}

/// One backlog row.
#[derive(Debug, Clone)]
struct BacklogRow {
    batch_end: i64,
    style: String,
    metatiles: Vec<Metatile>,
    /// The commit position as a byte offset.
    commit_lsn: u64,
}

/// A node's backlog and replication state, as last seen by its delivery
/// thread; for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStatus {
    /// Batches with metatiles not yet delivered.
    pub backlog_batches: u64,
    /// Metatiles not yet delivered.
    pub backlog_metatiles: u64,
    /// WAL bytes the standby's replay is behind the primary's insert
    /// position; `None` while the standby cannot be asked.
    pub replay_lag_bytes: Option<u64>,
    /// Seconds since the oldest undelivered batch was queued (0 when the
    /// backlog is empty).
    pub oldest_pending_seconds: f64,
    /// Metatiles delivered since the process started.
    pub delivered_metatiles: u64,
    /// Whether the last round reached the standby and the renderer.
    pub up: bool,
}

/// Where delivery threads report each node's [`NodeStatus`] (the daemon
/// passes one that writes the metrics registry).
pub type StatusSink = Arc<dyn Fn(&str, &NodeStatus) + Send + Sync>;

/// How often a delivery thread looks again while its backlog waits for
/// the standby's replay (replay is usually well under a second behind).
const REPLAY_POLL: Duration = Duration::from_millis(200);
/// How often it refreshes the figures of an idle node.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Backoff after a failed round (database, standby or node down).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Limits on the renderd connection: a node that does not answer a
/// `cmdDirty` (answered at once by renderd and tilepipe) is taken for down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The delivery threads, one per node. [`Delivery::wake`] after each
/// commit; [`Delivery::stop`] joins them.
pub struct Delivery {
    wake: Vec<Arc<Notify>>,
    stopping: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Delivery {
    /// Starts a thread per node reading the backlog in `schema` of the
    /// database `primary`.
    pub fn start(
        nodes: &[RenderNode],
        primary: &postgres::Config,
        schema: &str,
        report: StatusSink,
    ) -> std::io::Result<Delivery> {
        let stopping = Arc::new(AtomicBool::new(false));
        let mut delivery = Delivery {
            wake: Vec::new(),
            stopping: stopping.clone(),
            threads: Vec::new(),
        };
        for node in nodes {
            let wake = Arc::new(Notify::new());
            let mut standby = crate::db::resolve(&node.standby, &crate::db::ProcessEnv)
                .expect("validated with the configuration");
            standby.connect_timeout(DB_CONNECT_TIMEOUT);
            let mut primary = primary.clone();
            primary.connect_timeout(DB_CONNECT_TIMEOUT);
            let worker = NodeWorker {
                node: node.clone(),
                endpoint: Endpoint::parse(&node.renderd).expect("validated with the configuration"),
                primary,
                standby,
                schema: schema.to_string(),
                report: report.clone(),
                wake: wake.clone(),
                stopping: stopping.clone(),
                primary_client: None,
                standby_client: None,
                status: NodeStatus::default(),
                warned_not_standby: false,
            };
            let thread = std::thread::Builder::new()
                .name(format!("node-{}", node.name))
                .spawn(move || worker.run())?;
            delivery.wake.push(wake);
            delivery.threads.push(thread);
        }
        Ok(delivery)
    }

    /// Tells every node a batch committed.
    pub fn wake(&self) {
        for wake in &self.wake {
            wake.notify_one();
        }
    }

    /// Stops the threads (a delivery in progress ends after its current
    /// metatile) and waits for them.
    pub fn stop(mut self) {
        self.signal_stop();
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
    }

    fn signal_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // `notify_one` keeps a permit for a thread not waiting yet, so a
        // thread between its check and its wait still wakes at once.
        self.wake();
    }
}

impl Drop for Delivery {
    /// Without [`Delivery::stop`] (an error ended `run`), the threads are
    /// told to stop but not waited for.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// What one delivery round found.
enum Round {
    /// Nothing left, or nothing the standby has replayed yet.
    Idle,
    /// Rows wait for the standby's replay.
    WaitingForReplay,
}

struct NodeWorker {
    node: RenderNode,
    endpoint: Endpoint,
    primary: postgres::Config,
    standby: postgres::Config,
    schema: String,
    report: StatusSink,
    wake: Arc<Notify>,
    stopping: Arc<AtomicBool>,
    primary_client: Option<postgres::Client>,
    standby_client: Option<postgres::Client>,
    status: NodeStatus,
    /// The "standby" answered as a primary (logged once until it changes).
    warned_not_standby: bool,
}

impl NodeWorker {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn run(mut self) {
        // The sync `postgres` client runs its own runtime, so database
        // calls stay outside this one, which only drives the renderd
        // client and the waits.
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return warn!(node = %self.node.name, "no delivery to this node: {e}"),
        };
        let mut client = Client::new(self.endpoint.clone())
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_reply_timeout(Some(REPLY_TIMEOUT));
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        while !self.stopping() {
            let wait = match self.round(&runtime, &mut client) {
                Ok(round) => {
                    if failing {
                        info!(node = %self.node.name, "node reachable again; delivering its backlog");
                        failing = false;
                    }
                    backoff = FIRST_BACKOFF;
                    self.status.up = true;
                    match round {
                        Round::Idle => IDLE_POLL,
                        Round::WaitingForReplay => REPLAY_POLL,
                    }
                }
                Err(e) => {
                    if !failing {
                        warn!(node = %self.node.name, "delivery: {e:#}; its backlog is kept and retried with backoff");
                    }
                    failing = true;
                    self.status.up = false;
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            (self.report)(&self.node.name, &self.status);
            if self.stopping() {
                break;
            }
            let wake = self.wake.clone();
            runtime.block_on(async {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake.notified() => {}
                }
            });
        }
    }

    /// Reads the backlog, asks the standby how far it replayed, delivers
    /// what it has.
    fn round(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client: &mut Client,
    ) -> anyhow::Result<Round> {
        let (rows, primary_lsn) = match self.read_backlog() {
            Ok(found) => found,
            Err(e) => {
                self.primary_client = None;
                return Err(e.into());
            }
        };
        let replayed = match self.replay_lsn() {
            Ok(lsn) => lsn,
            Err(e) => {
                self.standby_client = None;
                self.status.replay_lag_bytes = None;
                return Err(anyhow::anyhow!("standby: {e}"));
            }
        };
        self.status.replay_lag_bytes = Some(primary_lsn.saturating_sub(replayed));
        let mut round = Round::Idle;
        let mut delivered = 0;
        'rows: for row in &rows {
            if row.commit_lsn > replayed {
                round = Round::WaitingForReplay;
                break;
            }
            for &metatile in &row.metatiles {
                if self.stopping() {
                    break 'rows;
                }
                let request = Request::for_metatile(Command::Dirty, metatile, &row.style);
                // Any reply means the node has it queued: renderd answers
                // `cmdDirty` with `cmdNotDone` at once (mod_tile's
                // request_queue.c, `request_queue_add_request`), and so
                // does tilepipe's protocol server.
                if let Err(e) = runtime.block_on(client.request(&request)) {
                    self.set_backlog(&rows[delivered..]);
                    return Err(anyhow::anyhow!("{e}"));
                }
            }
            if let Err(e) = self.delete_row(row) {
                self.set_backlog(&rows[delivered..]);
                return Err(e.into());
            }
            self.status.delivered_metatiles += row.metatiles.len() as u64;
            delivered += 1;
        }
        self.set_backlog(&rows[delivered..]);
        Ok(round)
    }

    /// The backlog figures of the rows still undelivered.
    fn set_backlog(&mut self, rows: &[BacklogRow]) {
        let batches: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.batch_end).collect();
        self.status.backlog_batches = batches.len() as u64;
        self.status.backlog_metatiles = rows.iter().map(|r| r.metatiles.len() as u64).sum();
        if rows.is_empty() {
            self.status.oldest_pending_seconds = 0.0;
        }
    }

    fn primary(&mut self) -> Result<&mut postgres::Client, postgres::Error> {
        if self.primary_client.as_mut().is_none_or(|c| c.is_closed()) {
            self.primary_client = Some(self.primary.connect(postgres::NoTls)?);
        }
        Ok(self.primary_client.as_mut().expect("connected above"))
    }

    /// The node's rows, oldest batch first, and the primary's WAL insert
    /// position. Rows a crash left unstamped get the current position.
    fn read_backlog(&mut self) -> Result<(Vec<BacklogRow>, u64), BacklogError> {
        let schema = self.schema.clone();
        let node = self.node.name.clone();
        let client = self.primary()?;
        let primary_lsn = insert_lsn(client)?;
        if !backlog_exists(client, &schema)? {
            self.set_backlog(&[]);
            return Ok((Vec::new(), primary_lsn));
        }
        let table = backlog_table(&schema);
        // Visible here means committed: the position now is past it.
        client.execute(
            &format!(
                "UPDATE {table} SET commit_lsn = pg_current_wal_insert_lsn() WHERE node = $1 AND commit_lsn IS NULL"
            ),
            &[&node],
        )?;
        let rows = client.query(
            &format!(
                "SELECT batch_end, style, metatiles, (commit_lsn - '0/0'::pg_lsn)::int8,
                        extract(epoch FROM now() - queued)::float8
                 FROM {table} WHERE node = $1 ORDER BY batch_end, style"
            ),
            &[&node],
        )?;
        let mut backlog = Vec::with_capacity(rows.len());
        let mut oldest: f64 = 0.0;
        for row in &rows {
            let batch_end: i64 = row.get(0);
            let style: String = row.get(1);
            let metatiles =
                metatiles_from_bytes(row.get(2)).map_err(|message| BacklogError::Corrupt {
                    node: node.clone(),
                    batch: batch_end,
                    style: style.clone(),
                    message,
                })?;
            let lsn: i64 = row.get(3);
            oldest = oldest.max(row.get(4));
            backlog.push(BacklogRow {
                batch_end,
                style,
                metatiles,
                commit_lsn: lsn as u64,
            });
        }
        self.set_backlog(&backlog);
        self.status.oldest_pending_seconds = oldest;
        Ok((backlog, primary_lsn))
    }

    /// The standby's replay position (see [`replay_position`]).
    fn replay_lsn(&mut self) -> Result<u64, postgres::Error> {
        if self.standby_client.as_mut().is_none_or(|c| c.is_closed()) {
            self.standby_client = Some(self.standby.connect(postgres::NoTls)?);
        }
        let client = self.standby_client.as_mut().expect("connected above");
        let (in_recovery, replayed) = replay_position(client)?;
        if !in_recovery && !self.warned_not_standby {
            // Right for a node reading the primary itself; a mistake if
            // the connection was meant for a standby.
            warn!(
                node = %self.node.name,
                "expire.nodes[{}].standby is not a standby (not in recovery): its data counts as up to date",
                self.node.name
            );
        }
        self.warned_not_standby = !in_recovery;
        Ok(replayed)
    }

    fn delete_row(&mut self, row: &BacklogRow) -> Result<(), BacklogError> {
        let table = backlog_table(&self.schema);
        let node = self.node.name.clone();
        self.primary()?.execute(
            &format!("DELETE FROM {table} WHERE node = $1 AND batch_end = $2 AND style = $3"),
            &[&node, &row.batch_end, &row.style],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metatiles_round_trip_and_bad_bytes_are_refused() {
        let metatiles = [
            Metatile { z: 3, x: 0, y: 0 },
            Metatile {
                z: 18,
                x: 262_136,
                y: 8,
            },
        ];
        let bytes = metatiles_to_bytes(&metatiles);
        assert_eq!(metatiles_from_bytes(&bytes).unwrap(), metatiles);
        assert!(metatiles_from_bytes(&bytes[..10]).is_err());
        let outside = metatiles_to_bytes(&[Metatile { z: 3, x: 8, y: 0 }]);
        assert!(metatiles_from_bytes(&outside)
            .unwrap_err()
            .contains("outside"));
    }

    #[test]
    fn the_expire_section_reads_nodes() {
        let text = "nodes:\n  - name: a\n    renderd: 10.0.0.11:7654\n    standby: \"host=10.0.0.11 dbname=gis\"\n    styles: [osm]\n";
        let config: crate::expire::batch::ExpireConfig = yaml_serde::from_str(text).unwrap();
        assert!(config.is_active(), "nodes alone make expiry run");
        assert_eq!(config.nodes[0].zooms(), 10..=18);
        config.validate().unwrap();
        let typo = text.replace("styles:", "style:");
        let err = yaml_serde::from_str::<crate::expire::batch::ExpireConfig>(&typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("style"), "{err}");
    }

    #[test]
    fn nodes_are_checked() {
        let node = RenderNode {
            name: "a".into(),
            renderd: "127.0.0.2:7654".into(),
            standby: "host=127.0.0.1 port=5433 dbname=gis".into(),
            styles: vec!["osm".into()],
            min_zoom: 10,
            max_zoom: 18,
        };
        assert!(validate_nodes(std::slice::from_ref(&node), 18).is_ok());
        let err = validate_nodes(&[node.clone(), node.clone()], 18).unwrap_err();
        assert!(err.contains("two nodes"), "{err}");
        let err = node.validate(16).unwrap_err();
        assert!(err.contains("expire.nodes[a].max_zoom"), "{err}");
        let empty = RenderNode {
            styles: Vec::new(),
            ..node.clone()
        };
        assert!(empty.validate(18).unwrap_err().contains("styles is empty"));
        let bad = RenderNode {
            renderd: "".into(),
            ..node.clone()
        };
        assert!(bad.validate(18).unwrap_err().contains("renderd"));
        let no_standby = RenderNode {
            standby: " ".into(),
            ..node
        };
        assert!(no_standby
            .validate(18)
            .unwrap_err()
            .contains("standby is empty"));
    }
}
