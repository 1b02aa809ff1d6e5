//! The process-wide metrics registry, which every stage reports to; the
//! serve stage renders it as Prometheus text at `/metrics`.
//!
//! It sits below the stages so that replication, apply and expire report
//! without depending on serve. Counters are plain atomics, so the request
//! path only increments; the other stages report through the setters
//! (`set_replication_position`, `record_batch`, `add_expired`, …). The
//! render stage's figures are not kept here: whoever serves `/metrics`
//! reads them at scrape time and hands them to [`Metrics::render`] as a
//! [`RenderQueueReport`] and a [`RenderWorkerReport`], plain labelled
//! values, so this module depends on no stage.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Zoom slots per style: 0–30, and one for anything larger.
pub const ZOOM_SLOTS: usize = 32;

/// How one tile request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileOutcome {
    /// 200 from a clean metatile.
    Fresh,
    /// 200 with a dirty tile (overload, render failed or too slow).
    Stale,
    /// 200 after waiting for a render (missing or dirty tile).
    Rendered,
    /// 304 (ETag or Last-Modified matched).
    NotModified,
    /// 404: missing and not rendered in time (or no renderer).
    NotRendered,
    /// 404: the metatile exists but this tile's slot is empty.
    Empty,
    /// 404: zoom, x or y outside the style's range, or wrong extension.
    OutOfRange,
    /// 429: the client's token bucket is empty.
    Throttled,
    /// 503: missing tile while the render queue is overloaded or full.
    Overloaded,
    /// 500: the metatile could not be read.
    Error,
}

impl TileOutcome {
    /// Every outcome, in the order of the counters.
    pub const ALL: [TileOutcome; 10] = [
        TileOutcome::Fresh,
        TileOutcome::Stale,
        TileOutcome::Rendered,
        TileOutcome::NotModified,
        TileOutcome::NotRendered,
        TileOutcome::Empty,
        TileOutcome::OutOfRange,
        TileOutcome::Throttled,
        TileOutcome::Overloaded,
        TileOutcome::Error,
    ];

    /// The `outcome` label on `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            TileOutcome::Fresh => "fresh",
            TileOutcome::Stale => "stale",
            TileOutcome::Rendered => "rendered",
            TileOutcome::NotModified => "not_modified",
            TileOutcome::NotRendered => "not_rendered",
            TileOutcome::Empty => "empty",
            TileOutcome::OutOfRange => "out_of_range",
            TileOutcome::Throttled => "throttled",
            TileOutcome::Overloaded => "overloaded",
            TileOutcome::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Tile request counters of one style, by zoom and outcome.
pub struct StyleCounters {
    name: String,
    counts: Vec<AtomicU64>,
}

impl StyleCounters {
    fn new(name: &str) -> StyleCounters {
        StyleCounters {
            name: name.to_string(),
            counts: (0..ZOOM_SLOTS * TileOutcome::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// The style's name, the `style` label on `/metrics`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts one request; zooms above 30 share the last slot.
    pub fn record(&self, zoom: u32, outcome: TileOutcome) {
        let zoom = (zoom as usize).min(ZOOM_SLOTS - 1);
        self.counts[zoom * TileOutcome::ALL.len() + outcome.index()].fetch_add(1, Relaxed);
    }

    /// Requests counted at `zoom` (above 30: all of them) with `outcome`.
    pub fn get(&self, zoom: u32, outcome: TileOutcome) -> u64 {
        let zoom = (zoom as usize).min(ZOOM_SLOTS - 1);
        self.counts[zoom * TileOutcome::ALL.len() + outcome.index()].load(Relaxed)
    }

    /// Sum over zooms.
    pub fn total(&self, outcome: TileOutcome) -> u64 {
        (0..ZOOM_SLOTS as u32).map(|z| self.get(z, outcome)).sum()
    }
}

/// The render queue at scrape time, with priorities reduced to the label
/// they carry on `/metrics` (`priority="missing"`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderQueueReport {
    /// Metatiles waiting, per priority, in the order they are printed.
    pub queued: Vec<(&'static str, usize)>,
    /// Metatiles being rendered.
    pub in_progress: usize,
    /// Requests turned away by a full queue, per priority, in the order
    /// they are printed.
    pub rejected: Vec<(&'static str, u64)>,
    /// Renders finished, per priority and zoom, in the order printed.
    pub done: Vec<RendersDone>,
    /// Whether background and expiry renders are paused for a batch.
    pub background_paused: bool,
    /// Pauses since the start.
    pub background_pauses: u64,
    /// Time spent paused.
    pub background_paused_time: Duration,
    /// Background and expiry renders in progress.
    pub background_in_progress: usize,
    /// Most of them at once.
    pub background_max_workers: usize,
    /// Times background or expiry work was left waiting, per reason label,
    /// in the order printed.
    pub deferred: Vec<(&'static str, u64)>,
}

/// Renders finished from one priority's queue at one zoom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RendersDone {
    /// The priority's label.
    pub priority: &'static str,
    /// Zoom of the metatiles.
    pub zoom: u8,
    /// Metatiles written.
    pub rendered: u64,
    /// Renders that failed.
    pub failed: u64,
    /// Time spent on these renders, failed ones included.
    pub render_time: Duration,
}

/// The render workers' cumulative time accounting, all workers summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderWorkerReport {
    /// Time inside Mapnik (drawing and encoding).
    pub mapnik: Duration,
    /// Time building and writing metatile files.
    pub write: Duration,
    /// Time workers spent on jobs, all included.
    pub busy: Duration,
    /// Renders retried once after a lost database connection.
    pub retried: u64,
}

/// The filesystem under one tile directory at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct TileFilesystemReport {
    /// The tile directory (the `path` label).
    pub path: String,
    /// Total size, bytes.
    pub size_bytes: u64,
    /// Space still usable, bytes (`df`'s "Avail").
    pub avail_bytes: u64,
    /// How full, 0 to 1, as `df`'s "Use%".
    pub used_ratio: f64,
}

/// Appends the tile directories' filesystem figures to a `/metrics` body.
pub fn render_tile_filesystems(w: &mut String, filesystems: &[TileFilesystemReport]) {
    if filesystems.is_empty() {
        return;
    }
    type Field = fn(&TileFilesystemReport) -> f64;
    let gauges: [(&str, &str, Field); 3] = [
        (
            "tilepipe_tile_filesystem_size_bytes",
            "Size of the filesystem holding the tile directory.",
            |f| f.size_bytes as f64,
        ),
        (
            "tilepipe_tile_filesystem_avail_bytes",
            "Space still usable on the filesystem holding the tile directory (df's Avail).",
            |f| f.avail_bytes as f64,
        ),
        (
            "tilepipe_tile_filesystem_used_ratio",
            "How full the filesystem holding the tile directory is, 0 to 1 (df's Use%).",
            |f| f.used_ratio,
        ),
    ];
    for (name, help, field) in gauges {
        header(w, name, "gauge", help);
        for filesystem in filesystems {
            let _ = writeln!(
                w,
                "{name}{{path=\"{}\"}} {}",
                escape(&filesystem.path),
                field(filesystem)
            );
        }
    }
}

/// Upper bounds (seconds) of the tile response time histogram.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0,
];

/// HTTP statuses counted one by one; the rest are "other".
const STATUSES: [u16; 10] = [200, 204, 304, 400, 403, 404, 405, 429, 500, 503];

fn f64_cell(value: f64) -> AtomicU64 {
    AtomicU64::new(value.to_bits())
}

/// The registry: one per process, shared as `Arc<Metrics>` by the stages
/// that report and the server that renders it (see the module
/// documentation).
pub struct Metrics {
    started: Instant,
    styles: RwLock<Vec<Arc<StyleCounters>>>,
    statuses: [AtomicU64; STATUSES.len() + 1],
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    // Replication and apply, set by the daemon.
    replication_known: AtomicBool,
    replication_sequence: AtomicU64,
    /// Timestamp of the data at the applied position (f64 seconds).
    replication_timestamp: AtomicU64,
    /// Explicit lag (f64 seconds), when the daemon sets one.
    replication_lag: AtomicU64,
    lag_known: AtomicBool,
    last_apply: AtomicU64,
    batches_applied: AtomicU64,
    apply_failures: AtomicU64,
    /// Since when the current batch keeps failing (f64 seconds; 0 when
    /// apply is not failing), and the last error.
    apply_failing_since: AtomicU64,
    apply_error: std::sync::Mutex<String>,
    changes_applied: AtomicU64,
    /// Objects changed by the last applied batch.
    last_batch_changes: AtomicU64,
    expired_tiles: AtomicU64,
    expired_metatiles: AtomicU64,
    /// The tile cache as the last limit sweep found it; `None` before one
    /// (or without cache limits).
    tile_cache: std::sync::Mutex<Option<TileCacheReport>>,
    tile_cache_evicted: AtomicU64,
    tile_cache_evicted_bytes: AtomicU64,
    purged_keys: AtomicU64,
    purge_failures: AtomicU64,
    purge_pending: AtomicU64,
    /// Render nodes of `expire.nodes`, by name.
    render_nodes: std::sync::Mutex<std::collections::BTreeMap<String, RenderNodeFigures>>,
    /// Set once the start-up style change check ran
    /// (`render.style_change_dirty`); its counters are shown from then.
    style_change_checked: AtomicBool,
    style_change_marked: AtomicU64,
    style_change_queued: AtomicU64,
}

/// The tile cache after a limit sweep (`render.max_cache_gb`,
/// `render.cache_high_water_percent`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TileCacheReport {
    /// Metatiles in the cache.
    pub metatiles: u64,
    /// Their disk use, bytes.
    pub bytes: u64,
    /// `render.max_cache_gb` in bytes, when set.
    pub limit_bytes: Option<u64>,
    /// When the sweep finished.
    pub swept_at: SystemTime,
}

/// A render node's expiry delivery as last seen by `run` (see
/// `expire.nodes`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderNodeFigures {
    /// Batches with metatiles not yet delivered to the node.
    pub backlog_batches: u64,
    /// Metatiles not yet delivered.
    pub backlog_metatiles: u64,
    /// WAL bytes the node's standby replay is behind the primary; `None`
    /// while the standby cannot be asked.
    pub replay_lag_bytes: Option<u64>,
    /// Age of the oldest undelivered batch.
    pub oldest_pending_seconds: f64,
    /// Metatiles delivered since the process started.
    pub delivered_metatiles: u64,
    /// Whether the last round reached the standby and the node.
    pub up: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn unix_secs(time: SystemTime) -> f64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

impl Metrics {
    /// An empty registry; the uptime counts from now.
    pub fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            styles: RwLock::new(Vec::new()),
            statuses: Default::default(),
            latency: Default::default(),
            latency_sum_micros: AtomicU64::new(0),
            replication_known: AtomicBool::new(false),
            replication_sequence: AtomicU64::new(0),
            replication_timestamp: f64_cell(0.0),
            replication_lag: f64_cell(0.0),
            lag_known: AtomicBool::new(false),
            last_apply: f64_cell(0.0),
            batches_applied: AtomicU64::new(0),
            apply_failures: AtomicU64::new(0),
            apply_failing_since: f64_cell(0.0),
            apply_error: std::sync::Mutex::new(String::new()),
            changes_applied: AtomicU64::new(0),
            last_batch_changes: AtomicU64::new(0),
            expired_tiles: AtomicU64::new(0),
            expired_metatiles: AtomicU64::new(0),
            tile_cache: std::sync::Mutex::new(None),
            tile_cache_evicted: AtomicU64::new(0),
            tile_cache_evicted_bytes: AtomicU64::new(0),
            render_nodes: Default::default(),
            purged_keys: AtomicU64::new(0),
            purge_failures: AtomicU64::new(0),
            purge_pending: AtomicU64::new(0),
            style_change_checked: AtomicBool::new(false),
            style_change_marked: AtomicU64::new(0),
            style_change_queued: AtomicU64::new(0),
        }
    }

    /// Records a tile cache limit sweep: the cache it left and what it
    /// deleted.
    pub fn record_tile_cache_sweep(
        &self,
        cache: TileCacheReport,
        evicted: u64,
        evicted_bytes: u64,
    ) {
        *self.tile_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(cache);
        self.tile_cache_evicted.fetch_add(evicted, Relaxed);
        self.tile_cache_evicted_bytes
            .fetch_add(evicted_bytes, Relaxed);
    }

    /// Records one style's start-up style change check: metatiles older
    /// than the XML marked dirty, and those queued for a re-render at once.
    pub fn record_style_change(&self, marked: u64, queued: u64) {
        self.style_change_marked.fetch_add(marked, Relaxed);
        self.style_change_queued.fetch_add(queued, Relaxed);
        self.style_change_checked.store(true, Relaxed);
    }

    /// The style change counters, once a check ran.
    fn render_style_change(&self, w: &mut String) {
        if !self.style_change_checked.load(Relaxed) {
            return;
        }
        for (name, help, value) in [
            (
                "tilepipe_style_change_dirty_metatiles_total",
                "Metatiles older than their style's XML marked dirty at start.",
                &self.style_change_marked,
            ),
            (
                "tilepipe_style_change_rerenders_queued_total",
                "Of those, low-zoom metatiles queued for a re-render at once.",
                &self.style_change_queued,
            ),
        ] {
            header(w, name, "counter", help);
            let _ = writeln!(w, "{name} {}", value.load(Relaxed));
        }
    }

    /// The cache as the last sweep left it.
    pub fn tile_cache(&self) -> Option<TileCacheReport> {
        *self.tile_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Metatiles the cache limits deleted, and their bytes.
    pub fn tile_cache_evicted(&self) -> (u64, u64) {
        (
            self.tile_cache_evicted.load(Relaxed),
            self.tile_cache_evicted_bytes.load(Relaxed),
        )
    }

    /// The tile cache limit's figures, once a sweep ran.
    fn render_tile_cache(&self, w: &mut String) {
        let Some(cache) = self.tile_cache() else {
            return;
        };
        let (evicted, evicted_bytes) = self.tile_cache_evicted();
        let mut gauges = vec![
            (
                "tilepipe_tile_cache_metatiles",
                "gauge",
                "Metatiles in the tile cache at the last limit sweep.",
                cache.metatiles as f64,
            ),
            (
                "tilepipe_tile_cache_bytes",
                "gauge",
                "Disk use of the tile cache's metatiles at the last limit sweep.",
                cache.bytes as f64,
            ),
            (
                "tilepipe_tile_cache_last_sweep_timestamp_seconds",
                "gauge",
                "Unix time of the last tile cache limit sweep.",
                unix_secs(cache.swept_at),
            ),
            (
                "tilepipe_tile_cache_evicted_metatiles_total",
                "counter",
                "Least recently used metatiles deleted by the tile cache limits.",
                evicted as f64,
            ),
            (
                "tilepipe_tile_cache_evicted_bytes_total",
                "counter",
                "Disk space freed by the tile cache limits.",
                evicted_bytes as f64,
            ),
        ];
        if let Some(limit) = cache.limit_bytes {
            gauges.push((
                "tilepipe_tile_cache_limit_bytes",
                "gauge",
                "render.max_cache_gb in bytes.",
                limit as f64,
            ));
        }
        for (name, kind, help, value) in gauges {
            header(w, name, kind, help);
            let _ = writeln!(w, "{name} {value}");
        }
    }

    /// The counters of a style, created on first use (the server looks
    /// them up once per style at start, not per request).
    pub fn style(&self, name: &str) -> Arc<StyleCounters> {
        if let Some(found) = self
            .styles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|s| s.name == name)
        {
            return found.clone();
        }
        let mut styles = self.styles.write().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = styles.iter().find(|s| s.name == name) {
            return found.clone();
        }
        let counters = Arc::new(StyleCounters::new(name));
        styles.push(counters.clone());
        counters
    }

    /// Counts an HTTP response by status.
    pub fn record_status(&self, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.statuses[slot].fetch_add(1, Relaxed);
    }

    /// Responses counted with `status`.
    pub fn status_count(&self, status: u16) -> u64 {
        STATUSES
            .iter()
            .position(|&s| s == status)
            .map_or(0, |slot| self.statuses[slot].load(Relaxed))
    }

    /// Adds a tile response time to the histogram.
    pub fn record_latency(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[slot].fetch_add(1, Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    // ---- setters for the other stages ----

    /// The applied replication position: its sequence number and the
    /// timestamp of its data. The lag (`now - timestamp`) is computed when
    /// read, so it keeps growing if the daemon stops applying.
    pub fn set_replication_position(&self, sequence: u64, data_timestamp: SystemTime) {
        self.replication_sequence.store(sequence, Relaxed);
        self.replication_timestamp
            .store(unix_secs(data_timestamp).to_bits(), Relaxed);
        self.replication_known.store(true, Relaxed);
    }

    /// An explicit lag in seconds (e.g. the feed's newest state minus the
    /// applied one); when set, it is reported instead of `now - timestamp`.
    pub fn set_replication_lag(&self, lag: Duration) {
        self.replication_lag
            .store(lag.as_secs_f64().to_bits(), Relaxed);
        self.lag_known.store(true, Relaxed);
    }

    /// A batch was applied and committed at `applied_at`, with `changes`
    /// objects changed.
    pub fn record_batch(&self, applied_at: SystemTime, changes: u64) {
        self.last_apply
            .store(unix_secs(applied_at).to_bits(), Relaxed);
        self.batches_applied.fetch_add(1, Relaxed);
        self.changes_applied.fetch_add(changes, Relaxed);
        self.last_batch_changes.store(changes, Relaxed);
    }

    /// An apply attempt failed (it will be retried).
    pub fn record_apply_failure(&self) {
        self.apply_failures.fetch_add(1, Relaxed);
    }

    /// The batch being applied keeps failing since `since`; `error` is the
    /// latest attempt's error (served on `/health`).
    pub fn set_apply_failing(&self, since: SystemTime, error: &str) {
        *self.apply_error.lock().unwrap_or_else(|p| p.into_inner()) = error.to_owned();
        self.apply_failing_since
            .store(unix_secs(since).max(f64::MIN_POSITIVE).to_bits(), Relaxed);
    }

    /// A batch applied again after failures.
    pub fn clear_apply_failing(&self) {
        self.apply_failing_since.store(0f64.to_bits(), Relaxed);
    }

    /// Since when apply is failing and the latest error, if it is.
    pub fn apply_failing(&self) -> Option<(SystemTime, String)> {
        let secs = f64::from_bits(self.apply_failing_since.load(Relaxed));
        (secs > 0.0).then(|| {
            let error = self.apply_error.lock().unwrap_or_else(|p| p.into_inner());
            (UNIX_EPOCH + Duration::from_secs_f64(secs), error.clone())
        })
    }

    /// Tiles (at the expiry zoom) and metatiles a batch expired.
    pub fn add_expired(&self, tiles: u64, metatiles: u64) {
        self.expired_tiles.fetch_add(tiles, Relaxed);
        self.expired_metatiles.fetch_add(metatiles, Relaxed);
    }

    /// The replication lag now, if any replication position was reported.
    pub fn replication_lag(&self) -> Option<Duration> {
        if self.lag_known.load(Relaxed) {
            return Some(Duration::from_secs_f64(
                f64::from_bits(self.replication_lag.load(Relaxed)).max(0.0),
            ));
        }
        if !self.replication_known.load(Relaxed) {
            return None;
        }
        let timestamp = f64::from_bits(self.replication_timestamp.load(Relaxed));
        let lag = unix_secs(SystemTime::now()) - timestamp;
        Some(Duration::from_secs_f64(lag.max(0.0)))
    }

    /// Objects changed by the last applied batch (0 before one).
    pub fn last_batch_changes(&self) -> u64 {
        self.last_batch_changes.load(Relaxed)
    }

    /// Time of the last successful apply, if any.
    pub fn last_apply(&self) -> Option<SystemTime> {
        let secs = f64::from_bits(self.last_apply.load(Relaxed));
        (secs > 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(secs))
    }

    /// Sequence number of the applied replication position, if any was
    /// reported.
    pub fn replication_sequence(&self) -> Option<u64> {
        self.replication_known
            .load(Relaxed)
            .then(|| self.replication_sequence.load(Relaxed))
    }

    /// Counts surrogate keys purged from a cache in front.
    pub fn add_purged(&self, keys: u64) {
        self.purged_keys.fetch_add(keys, Relaxed);
    }

    /// Counts a failed purge request.
    pub fn add_purge_failure(&self) {
        self.purge_failures.fetch_add(1, Relaxed);
    }

    /// Sets the keys waiting to be purged (over all caches).
    pub fn set_purge_pending(&self, keys: u64) {
        self.purge_pending.store(keys, Relaxed);
    }

    /// Records a render node's delivery figures.
    pub fn set_render_node(&self, name: &str, figures: RenderNodeFigures) {
        self.render_nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), figures);
    }

    /// Prometheus text exposition (format 0.0.4) of the registry, with the
    /// render queue's and workers' figures when there is a renderer.
    pub fn render(
        &self,
        queue: Option<&RenderQueueReport>,
        workers: Option<&RenderWorkerReport>,
    ) -> String {
        let mut out = String::with_capacity(8192);
        let w = &mut out;
        self.render_process(w);
        self.render_tile_requests(w);
        self.render_statuses(w);
        self.render_latency(w);
        if let Some(queue) = queue {
            render_queue(w, queue);
            render_done(w, queue);
            render_yielding(w, queue);
        }
        self.render_replication(w);
        self.render_apply_failing(w);
        self.render_totals(w);
        self.render_tile_cache(w);
        self.render_nodes(w);
        self.render_style_change(w);
        if let Some(workers) = workers {
            render_workers(w, workers);
        }
        out
    }

    /// Uptime and build information.
    fn render_process(&self, w: &mut String) {
        header(
            w,
            "tilepipe_uptime_seconds",
            "gauge",
            "Seconds since the process started.",
        );
        let _ = writeln!(
            w,
            "tilepipe_uptime_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        header(
            w,
            "tilepipe_build_info",
            "gauge",
            "Always 1; the version is a label.",
        );
        let _ = writeln!(
            w,
            "tilepipe_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
    }

    /// Tile requests per style, zoom and outcome; only the non-zero ones.
    fn render_tile_requests(&self, w: &mut String) {
        header(
            w,
            "tilepipe_tile_requests_total",
            "counter",
            "Tile requests by style, zoom and outcome.",
        );
        for style in self.styles.read().unwrap_or_else(|p| p.into_inner()).iter() {
            for zoom in 0..ZOOM_SLOTS as u32 {
                for outcome in TileOutcome::ALL {
                    let n = style.get(zoom, outcome);
                    if n > 0 {
                        let _ = writeln!(
                            w,
                            "tilepipe_tile_requests_total{{style=\"{}\",zoom=\"{}\",outcome=\"{}\"}} {n}",
                            escape(&style.name),
                            zoom_label(zoom),
                            outcome.name()
                        );
                    }
                }
            }
        }
    }

    /// HTTP responses per status, every counted status and "other".
    fn render_statuses(&self, w: &mut String) {
        header(
            w,
            "tilepipe_http_responses_total",
            "counter",
            "HTTP responses by status (every endpoint).",
        );
        for (slot, count) in self.statuses.iter().enumerate() {
            let status = STATUSES
                .get(slot)
                .map_or_else(|| "other".to_string(), |s| s.to_string());
            let _ = writeln!(
                w,
                "tilepipe_http_responses_total{{status=\"{status}\"}} {}",
                count.load(Relaxed)
            );
        }
    }

    /// The tile response time histogram: cumulative buckets, sum, count.
    fn render_latency(&self, w: &mut String) {
        header(
            w,
            "tilepipe_tile_response_seconds",
            "histogram",
            "Time from request to response for tile requests.",
        );
        let mut cumulative = 0;
        for (slot, count) in self.latency.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = LATENCY_BUCKETS
                .get(slot)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                w,
                "tilepipe_tile_response_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            w,
            "tilepipe_tile_response_seconds_sum {:.6}",
            self.latency_sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(w, "tilepipe_tile_response_seconds_count {cumulative}");
    }

    /// The applied replication position: lag, sequence and the last apply;
    /// each value is absent until first reported.
    fn render_replication(&self, w: &mut String) {
        header(
            w,
            "tilepipe_replication_lag_seconds",
            "gauge",
            "Age of the data at the applied replication position (absent before the first position).",
        );
        if let Some(lag) = self.replication_lag() {
            let _ = writeln!(
                w,
                "tilepipe_replication_lag_seconds {:.3}",
                lag.as_secs_f64()
            );
        }
        header(
            w,
            "tilepipe_replication_sequence",
            "gauge",
            "Sequence number of the applied replication position.",
        );
        if let Some(sequence) = self.replication_sequence() {
            let _ = writeln!(w, "tilepipe_replication_sequence {sequence}");
        }
        header(
            w,
            "tilepipe_last_apply_timestamp_seconds",
            "gauge",
            "Unix time of the last successfully applied batch.",
        );
        if let Some(time) = self.last_apply() {
            let _ = writeln!(
                w,
                "tilepipe_last_apply_timestamp_seconds {:.3}",
                unix_secs(time)
            );
        }
    }

    /// Whether the pending batch keeps failing, and since when.
    fn render_apply_failing(&self, w: &mut String) {
        let failing = self.apply_failing();
        header(
            w,
            "tilepipe_apply_failing",
            "gauge",
            "1 while the pending batch keeps failing to apply (retried with backoff).",
        );
        let _ = writeln!(w, "tilepipe_apply_failing {}", u8::from(failing.is_some()));
        header(
            w,
            "tilepipe_apply_failing_since_timestamp_seconds",
            "gauge",
            "Unix time of the first failed attempt at the pending batch, while it fails.",
        );
        if let Some((since, _)) = failing {
            let _ = writeln!(
                w,
                "tilepipe_apply_failing_since_timestamp_seconds {:.3}",
                unix_secs(since)
            );
        }
    }

    /// The apply and expire counters: batches, failures, changes, expiry.
    fn render_totals(&self, w: &mut String) {
        for (name, help, value) in [
            (
                "tilepipe_batches_applied_total",
                "Replication batches applied.",
                &self.batches_applied,
            ),
            (
                "tilepipe_apply_failures_total",
                "Failed apply attempts.",
                &self.apply_failures,
            ),
            (
                "tilepipe_changes_applied_total",
                "OSM objects changed by applied batches.",
                &self.changes_applied,
            ),
            (
                "tilepipe_expired_tiles_total",
                "Tiles at the expiry zoom expired by applied batches.",
                &self.expired_tiles,
            ),
            (
                "tilepipe_expired_metatiles_total",
                "Metatiles acted on (render, touch, delete) after applied batches.",
                &self.expired_metatiles,
            ),
            (
                "tilepipe_purged_keys_total",
                "Surrogate keys (metatiles) purged from the caches in front, counted once per cache.",
                &self.purged_keys,
            ),
            (
                "tilepipe_purge_failures_total",
                "Purge requests that failed (retried with backoff).",
                &self.purge_failures,
            ),
        ] {
            header(w, name, "counter", help);
            let _ = writeln!(w, "{name} {}", value.load(Relaxed));
        }
        header(
            w,
            "tilepipe_purge_pending_keys",
            "gauge",
            "Surrogate keys waiting to be purged, over all caches in front.",
        );
        let _ = writeln!(
            w,
            "tilepipe_purge_pending_keys {}",
            self.purge_pending.load(Relaxed)
        );
    }
}

impl Metrics {
    /// Per render node: backlog, replay lag, deliveries; nothing without
    /// `expire.nodes`.
    fn render_nodes(&self, w: &mut String) {
        let nodes = self
            .render_nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if nodes.is_empty() {
            return;
        }
        type Value = fn(&RenderNodeFigures) -> Option<f64>;
        let series: [(&str, &str, &str, Value); 6] = [
            (
                "tilepipe_node_backlog_batches",
                "gauge",
                "Batches whose expired metatiles the render node has not received yet.",
                |f| Some(f.backlog_batches as f64),
            ),
            (
                "tilepipe_node_backlog_metatiles",
                "gauge",
                "Expired metatiles the render node has not received yet.",
                |f| Some(f.backlog_metatiles as f64),
            ),
            (
                "tilepipe_node_replay_lag_bytes",
                "gauge",
                "WAL bytes the render node's standby has yet to replay (absent while it cannot be asked).",
                |f| f.replay_lag_bytes.map(|b| b as f64),
            ),
            (
                "tilepipe_node_oldest_pending_seconds",
                "gauge",
                "Age of the oldest batch the render node has not received (0 when none).",
                |f| Some(f.oldest_pending_seconds),
            ),
            (
                "tilepipe_node_delivered_metatiles_total",
                "counter",
                "Expired metatiles delivered to the render node (cmdDirty).",
                |f| Some(f.delivered_metatiles as f64),
            ),
            (
                "tilepipe_node_up",
                "gauge",
                "1 when the last delivery round reached the node's standby and renderer.",
                |f| Some(f64::from(u8::from(f.up))),
            ),
        ];
        for (name, kind, help, value) in series {
            header(w, name, kind, help);
            for (node, figures) in &nodes {
                if let Some(v) = value(figures) {
                    let _ = writeln!(w, "{name}{{node=\"{}\"}} {v}", escape(node));
                }
            }
        }
    }
}

/// A zoom's label; the last slot holds every zoom from 31 up ("31+").
fn zoom_label(zoom: u32) -> String {
    if zoom as usize == ZOOM_SLOTS - 1 {
        format!("{}+", ZOOM_SLOTS - 1)
    } else {
        zoom.to_string()
    }
}

/// The render queue now: waiting per priority, in progress, rejected.
fn render_queue(w: &mut String, stats: &RenderQueueReport) {
    header(
        w,
        "tilepipe_render_queue_length",
        "gauge",
        "Metatiles waiting in the render queue, by priority.",
    );
    for (priority, n) in &stats.queued {
        let _ = writeln!(
            w,
            "tilepipe_render_queue_length{{priority=\"{priority}\"}} {n}"
        );
    }
    header(
        w,
        "tilepipe_render_in_progress",
        "gauge",
        "Metatiles being rendered.",
    );
    let _ = writeln!(w, "tilepipe_render_in_progress {}", stats.in_progress);
    header(
        w,
        "tilepipe_render_rejected_total",
        "counter",
        "Render requests turned away by a full queue, by priority.",
    );
    for (priority, n) in &stats.rejected {
        let _ = writeln!(
            w,
            "tilepipe_render_rejected_total{{priority=\"{priority}\"}} {n}"
        );
    }
}

/// How background and expiry renders yield to batches and clients.
fn render_yielding(w: &mut String, stats: &RenderQueueReport) {
    let figures = [
        (
            "tilepipe_render_background_paused",
            "gauge",
            "1 while background and expiry renders are paused for a large batch.",
            u64::from(stats.background_paused).to_string(),
        ),
        (
            "tilepipe_render_background_pauses_total",
            "counter",
            "Pauses of background and expiry renders for large batches.",
            stats.background_pauses.to_string(),
        ),
        (
            "tilepipe_render_background_paused_seconds_total",
            "counter",
            "Time background and expiry renders spent paused.",
            format!("{:.3}", stats.background_paused_time.as_secs_f64()),
        ),
        (
            "tilepipe_render_background_in_progress",
            "gauge",
            "Background and expiry renders in progress.",
            stats.background_in_progress.to_string(),
        ),
        (
            "tilepipe_render_background_max_workers",
            "gauge",
            "Most background and expiry renders at once (the other workers stay free for clients).",
            stats.background_max_workers.to_string(),
        ),
    ];
    for (name, kind, help, value) in figures {
        header(w, name, kind, help);
        let _ = writeln!(w, "{name} {value}");
    }
    header(
        w,
        "tilepipe_render_background_deferred_total",
        "counter",
        "Times a worker left background or expiry work queued, by reason (paused, workers, load).",
    );
    for (reason, n) in &stats.deferred {
        let _ = writeln!(
            w,
            "tilepipe_render_background_deferred_total{{reason=\"{reason}\"}} {n}"
        );
    }
}

/// Renders finished, and the time they took, per priority and zoom.
fn render_done(w: &mut String, stats: &RenderQueueReport) {
    header(
        w,
        "tilepipe_renders_total",
        "counter",
        "Metatile renders finished, by priority, zoom and result.",
    );
    for done in &stats.done {
        for (result, n) in [("ok", done.rendered), ("failed", done.failed)] {
            let _ = writeln!(
                w,
                "tilepipe_renders_total{{priority=\"{}\",zoom=\"{}\",result=\"{result}\"}} {n}",
                done.priority, done.zoom
            );
        }
    }
    header(
        w,
        "tilepipe_render_seconds_total",
        "counter",
        "Time spent rendering metatiles, by priority and zoom.",
    );
    for done in &stats.done {
        let _ = writeln!(
            w,
            "tilepipe_render_seconds_total{{priority=\"{}\",zoom=\"{}\"}} {:.6}",
            done.priority,
            done.zoom,
            done.render_time.as_secs_f64()
        );
    }
}

/// The render workers' time accounting: where render time goes (Mapnik,
/// writing metatiles, everything a worker does), and renders retried after
/// a lost database connection.
fn render_workers(w: &mut String, timings: &RenderWorkerReport) {
    for (name, help, value) in [
        (
            "tilepipe_render_mapnik_seconds_total",
            "Time inside Mapnik (drawing and encoding), all workers.",
            timings.mapnik.as_secs_f64(),
        ),
        (
            "tilepipe_render_write_seconds_total",
            "Time building and writing metatile files, all workers.",
            timings.write.as_secs_f64(),
        ),
        (
            "tilepipe_render_busy_seconds_total",
            "Time workers spent on jobs, all included.",
            timings.busy.as_secs_f64(),
        ),
    ] {
        header(w, name, "counter", help);
        let _ = writeln!(w, "{name} {value:.6}");
    }
    header(
        w,
        "tilepipe_render_retries_total",
        "counter",
        "Renders retried once after a lost database connection.",
    );
    let _ = writeln!(w, "tilepipe_render_retries_total {}", timings.retried);
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::new();
        let s = m.style("osm");
        s.record(12, TileOutcome::Fresh);
        s.record(12, TileOutcome::Fresh);
        s.record(40, TileOutcome::OutOfRange);
        assert!(Arc::ptr_eq(&s, &m.style("osm")));
        m.record_status(200);
        m.record_status(418);
        m.record_latency(Duration::from_micros(700));
        let text = m.render(None, None);
        assert!(text.contains(
            "tilepipe_tile_requests_total{style=\"osm\",zoom=\"12\",outcome=\"fresh\"} 2"
        ));
        assert!(text.contains("zoom=\"31+\",outcome=\"out_of_range\"} 1"));
        assert!(text.contains("tilepipe_http_responses_total{status=\"other\"} 1"));
        assert!(text.contains("tilepipe_tile_response_seconds_bucket{le=\"0.001\"} 1"));
        assert!(!text.contains("\ntilepipe_replication_lag_seconds "));
    }

    #[test]
    fn lag_grows_from_the_position() {
        let m = Metrics::new();
        assert_eq!(m.replication_lag(), None);
        m.set_replication_position(42, SystemTime::now() - Duration::from_secs(100));
        let lag = m.replication_lag().unwrap().as_secs_f64();
        assert!((99.0..110.0).contains(&lag), "{lag}");
        m.record_batch(SystemTime::now(), 10);
        let text = m.render(None, None);
        assert!(text.contains("tilepipe_replication_sequence 42"));
        assert!(text.contains("tilepipe_batches_applied_total 1"));
        m.set_replication_lag(Duration::from_secs(5));
        assert_eq!(m.replication_lag(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn apply_failing_gauge_and_since() {
        let m = Metrics::new();
        assert!(m.render(None, None).contains("tilepipe_apply_failing 0\n"));
        let since = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        m.record_apply_failure();
        m.set_apply_failing(since, "db error: deadlock");
        let text = m.render(None, None);
        assert!(text.contains("tilepipe_apply_failing 1\n"), "{text}");
        assert!(text.contains("tilepipe_apply_failing_since_timestamp_seconds 1700000000.000"));
        assert!(text.contains("tilepipe_apply_failures_total 1"));
        assert_eq!(
            m.apply_failing(),
            Some((since, "db error: deadlock".to_owned()))
        );
        m.clear_apply_failing();
        assert_eq!(m.apply_failing(), None);
        assert!(m.render(None, None).contains("tilepipe_apply_failing 0\n"));
    }
}
