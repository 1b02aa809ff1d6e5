//! What to do with expired metatiles, per style and zoom, on a mod_tile
//! tile cache: the policy mod_tile's `render_expired` offers (re-render,
//! touch, delete), done without its defects.
//!
//! - [`ExpirePolicy`] picks the action per zoom: below `touch_from`
//!   re-render, from `touch_from` touch, from `delete_from` delete.
//! - [`expire`] applies it to a set of metatiles on a [`TileStore`]: touch
//!   and delete act on the `.meta` files directly, renders go to a
//!   [`RenderSink`] such as [`RenderdSink`] (renderd over its protocol,
//!   N requests in flight like `render_expired -n N`).
//! - [`write_tile_list`] writes `z/x/y` lists for other tools.
//!
//! Input is plain [`Metatile`] collections, so callers can feed them from
//! any tile set.

use crate::metatile::{MetatileError, TileState, TileStore, TouchOutcome};
use crate::renderd::{Client, Command, Endpoint, RenderdError, Request};
use crate::tile::{Metatile, Tile, MAX_ZOOM, METATILE};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Zooms below this are never expired, as in `render_expired`, which
/// raises its minimum zoom to log2(METATILE) = 3. At z0–z2 a single
/// metatile is the whole world: every edit anywhere would expire it, and it
/// is among the slowest to render. Refresh those on a schedule instead.
pub const FIRST_EXPIRED_ZOOM: u8 = 3;

/// What happens to an expired metatile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Ask a renderer for a new one; the old one is served meanwhile.
    Render,
    /// Mark it dirty ([`TileStore::touch`]); mod_tile re-renders it when
    /// someone views it and serves the stale one until then.
    Touch,
    /// Remove it; the next view renders it (and waits for it).
    Delete,
}

/// Per-style, per-zoom expiry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpirePolicy {
    /// The style (mod_tile's "xml name"), i.e. the tile directory's
    /// subdirectory and renderd's style name.
    pub style: String,
    /// Lowest zoom acted on; raised to `zoom_floor`.
    pub min_zoom: u8,
    /// Zooms below this are never acted on: [`FIRST_EXPIRED_ZOOM`] for
    /// expiry after edits, 0 for scheduled refreshes of the low zooms.
    pub zoom_floor: u8,
    /// Highest zoom acted on (≤ [`MAX_ZOOM`]).
    pub max_zoom: u8,
    /// Zooms from this one up are touched instead of re-rendered.
    pub touch_from: Option<u8>,
    /// Zooms from this one up are deleted (wins over `touch_from`).
    pub delete_from: Option<u8>,
    /// Also ask for renders of metatiles that are not on disk.
    /// `render_expired` skips them (nobody has viewed them, so nobody
    /// needs them fresh), which is the default here too.
    pub render_missing: bool,
}

/// Why an [`ExpirePolicy`] is refused ([`ExpirePolicy::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `min_zoom` is above `max_zoom`.
    #[error("minimum zoom {min} is above maximum zoom {max}")]
    ZoomOrder {
        /// The policy's `min_zoom`.
        min: u8,
        /// The policy's `max_zoom`.
        max: u8,
    },
    /// A zoom setting is above [`MAX_ZOOM`].
    #[error("{name} {zoom} is above {max}", max = MAX_ZOOM)]
    Zoom {
        /// Which setting, as messages name it ("touch-from zoom").
        name: &'static str,
        /// Its value.
        zoom: u8,
    },
    /// The style name cannot be a tile directory name (empty, too long,
    /// containing `/`, or `.`/`..`).
    #[error("invalid style name {0:?}")]
    Style(String),
}

impl ExpirePolicy {
    /// Re-render z3–z18 (`render_expired`'s defaults), nothing touched or
    /// deleted, missing metatiles skipped.
    pub fn new(style: &str) -> ExpirePolicy {
        ExpirePolicy {
            style: style.to_string(),
            min_zoom: 0,
            zoom_floor: FIRST_EXPIRED_ZOOM,
            max_zoom: 18,
            touch_from: None,
            delete_from: None,
            render_missing: false,
        }
    }

    /// Checks zooms against each other and [`MAX_ZOOM`], and the style
    /// name against the tile directory's rules.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (name, zoom) in [
            ("maximum zoom", Some(self.max_zoom)),
            ("minimum zoom", Some(self.min_zoom)),
            ("touch-from zoom", self.touch_from),
            ("delete-from zoom", self.delete_from),
        ] {
            if let Some(zoom) = zoom.filter(|&z| z > MAX_ZOOM) {
                return Err(PolicyError::Zoom { name, zoom });
            }
        }
        if self.min_zoom > self.max_zoom {
            return Err(PolicyError::ZoomOrder {
                min: self.min_zoom,
                max: self.max_zoom,
            });
        }
        // The store checks names too; failing here reports it before any
        // work.
        crate::metatile::relative_path(&self.style, Metatile { z: 0, x: 0, y: 0 }, None)
            .map_err(|_| PolicyError::Style(self.style.clone()))?;
        Ok(())
    }

    /// The zooms acted on (empty when max is below the floor).
    pub fn zooms(&self) -> RangeInclusive<u8> {
        self.min_zoom.max(self.zoom_floor)..=self.max_zoom
    }

    /// The action at `zoom`; `None` outside [`Self::zooms`].
    pub fn action(&self, zoom: u8) -> Option<Action> {
        if !self.zooms().contains(&zoom) {
            None
        } else if self.delete_from.is_some_and(|from| zoom >= from) {
            Some(Action::Delete)
        } else if self.touch_from.is_some_and(|from| zoom >= from) {
            Some(Action::Touch)
        } else {
            Some(Action::Render)
        }
    }

    /// Whether some zoom is re-rendered, i.e. a renderer is needed.
    pub fn renders(&self) -> bool {
        self.zooms().any(|z| self.action(z) == Some(Action::Render))
    }
}

/// Render replies per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderCounts {
    /// `cmdDone`: rendered and stored.
    pub done: u64,
    /// `cmdNotDone`: renderd failed, or put it in its dirty queue.
    pub not_done: u64,
    /// `cmdIgnore`: outside the style's zooms or extent.
    pub ignored: u64,
    /// No reply: connection errors, timeouts.
    pub failed: u64,
    /// Of the not done and failed ones, those marked dirty instead (or
    /// found so), so a viewer's request re-renders them.
    pub marked_dirty: u64,
    /// Not rendered and not marked dirty either (a tile directory error):
    /// the expiry is lost unless tried again.
    pub unmarked: u64,
}

impl RenderCounts {
    fn add(&mut self, other: &RenderCounts) {
        self.done += other.done;
        self.not_done += other.not_done;
        self.ignored += other.ignored;
        self.failed += other.failed;
        self.marked_dirty += other.marked_dirty;
        self.unmarked += other.unmarked;
    }
}

/// What a [`RenderSink`] reports when its renders are answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderReport {
    /// Replies per zoom.
    pub zooms: BTreeMap<u8, RenderCounts>,
    /// Why renders failed, if they did.
    pub error: Option<String>,
}

/// Where render requests go.
pub trait RenderSink {
    /// Why the sink cannot take more work.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Queues a render; may wait until the sink has room. An error means
    /// the sink cannot take more work.
    fn submit(
        &mut self,
        style: &str,
        metatile: Metatile,
    ) -> impl Future<Output = Result<(), Self::Error>>;

    /// Waits until every submitted render is answered; reports the replies
    /// since the last `finish`. The sink can be used again afterwards.
    fn finish(&mut self) -> impl Future<Output = RenderReport>;
}

/// A sink for policies that render nothing: every submit is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRender;

/// [`NoRender`]'s refusal, naming the metatile that needed a renderer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no renderer configured for re-rendering {0}")]
pub struct NoRenderError(pub Metatile);

impl RenderSink for NoRender {
    type Error = NoRenderError;

    async fn submit(&mut self, _: &str, metatile: Metatile) -> Result<(), NoRenderError> {
        Err(NoRenderError(metatile))
    }

    async fn finish(&mut self) -> RenderReport {
        RenderReport::default()
    }
}

/// How [`RenderdSink`] talks to renderd.
#[derive(Debug, Clone)]
pub struct RenderdSinkOptions {
    /// Requests in flight, each on its own connection (`render_expired -n`).
    /// Keep it below renderd's queue limit (32 in 0.6.1, 256 later): what
    /// overflows a queue goes to the dirty queue unanswered.
    pub concurrency: usize,
    /// `cmdRenderBulk` like the `render_*` utilities; `cmdDirty` queues
    /// without waiting for the render (renderd answers `cmdNotDone` at
    /// once).
    pub command: Command,
    /// Limit per reply; `None` waits as long as the render takes (low
    /// zooms can take many minutes).
    pub reply_timeout: Option<Duration>,
    /// Tries per request before a connection error is final.
    pub attempts: u32,
    /// Pause between tries.
    pub retry_delay: Duration,
}

impl Default for RenderdSinkOptions {
    fn default() -> RenderdSinkOptions {
        RenderdSinkOptions {
            concurrency: 1,
            command: Command::RenderBulk,
            reply_timeout: None,
            attempts: 3,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// Sends render requests to renderd with a bounded number in flight.
///
/// `concurrency` workers (tokio tasks, one reused connection each) take
/// requests from a queue no longer than the number of workers, so
/// [`RenderSink::submit`] waits while all are busy. A request that cannot
/// be delivered after `attempts` tries is final: it and every later
/// request count as failed and `submit` returns the error, so a missing
/// renderd ends a run quickly instead of failing each request in turn;
/// [`RenderSink::finish`] reports it and lets the next batch try again.
///
/// A metatile renderd does not render (`cmdNotDone`: its queues were full
/// and it dropped or deferred the request, or the render failed; or no
/// reply at all) is marked dirty in `store` at once, as `render_expired`'s
/// touch does, so it is re-rendered when someone views it instead of
/// being served stale as if fresh.
/// Must be created inside a tokio runtime; dropping it aborts the workers.
pub struct RenderdSink {
    queue: mpsc::Sender<Request>,
    command: Command,
    shared: Arc<SinkShared>,
    _workers: JoinSet<()>,
}

struct SinkShared {
    state: Mutex<SinkState>,
    /// Signalled when the last pending request is answered.
    idle: Notify,
}

#[derive(Default)]
struct SinkState {
    pending: u64,
    report: RenderReport,
    fatal: Option<Arc<RenderdError>>,
}

/// Error of [`RenderdSink`]: renderd could not be reached or answered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RenderdSinkError(pub Arc<RenderdError>);

impl RenderdSink {
    /// A sink for metatiles of the tile directory `store` (where renderd
    /// writes them).
    pub fn new(endpoint: Endpoint, store: TileStore, options: RenderdSinkOptions) -> RenderdSink {
        let concurrency = options.concurrency.max(1);
        let (queue, receiver) = mpsc::channel(concurrency);
        // tokio's channel has one consumer; the workers share it.
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let shared = Arc::new(SinkShared {
            state: Mutex::new(SinkState::default()),
            idle: Notify::new(),
        });
        let mut workers = JoinSet::new();
        for _ in 0..concurrency {
            let client = Client::new(endpoint.clone()).with_reply_timeout(options.reply_timeout);
            workers.spawn(render_worker(
                client,
                store.clone(),
                receiver.clone(),
                shared.clone(),
                options.clone(),
            ));
        }
        RenderdSink {
            queue,
            command: options.command,
            shared,
            _workers: workers,
        }
    }

    fn fatal(&self) -> Option<RenderdSinkError> {
        let state = self.shared.state.lock().expect("sink state");
        state.fatal.clone().map(RenderdSinkError)
    }
}

async fn render_worker(
    mut client: Client,
    store: TileStore,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Request>>>,
    shared: Arc<SinkShared>,
    options: RenderdSinkOptions,
) {
    loop {
        let Some(request) = queue.lock().await.recv().await else {
            return;
        };
        let mut attempt = 1;
        let reply = loop {
            if let Some(fatal) = shared.state.lock().expect("sink state").fatal.clone() {
                break Err(fatal);
            }
            match client.request(&request).await {
                Ok(command) => break Ok(command),
                Err(e) if attempt < options.attempts => {
                    tracing::warn!("{e}; trying again");
                    attempt += 1;
                    tokio::time::sleep(options.retry_delay).await;
                }
                Err(e) => break Err(Arc::new(e)),
            }
        };
        let rendered = matches!(reply, Ok(Command::Done | Command::Ignore));
        // Not rendered: mark it dirty before counting it answered (a short
        // futimens between awaits, as in `expire`).
        let marked = (!rendered).then(|| mark_dirty(&store, &request));
        let mut state = shared.state.lock().expect("sink state");
        if let Some(Err(e)) = &marked {
            tracing::warn!("{request}: not rendered, and cannot be marked dirty: {e}");
            let message = format!("cannot mark a metatile renderd did not render dirty: {e}");
            state.report.error.get_or_insert(message);
        }
        let zoom = u8::try_from(request.z).unwrap_or(u8::MAX);
        let counts = state.report.zooms.entry(zoom).or_default();
        match marked {
            Some(Ok(())) => counts.marked_dirty += 1,
            Some(Err(_)) => counts.unmarked += 1,
            None => {}
        }
        match reply {
            Ok(Command::Done) => counts.done += 1,
            Ok(Command::Ignore) => counts.ignored += 1,
            Ok(other) => {
                tracing::debug!("renderd answered {other} to {request}");
                counts.not_done += 1;
            }
            Err(e) => {
                counts.failed += 1;
                if state.fatal.is_none() {
                    tracing::error!("{e}");
                    state.report.error = Some(e.to_string());
                    state.fatal = Some(e);
                }
            }
        }
        state.pending -= 1;
        if state.pending == 0 {
            shared.idle.notify_waiters();
        }
    }
}

/// Marks the metatile of `request` dirty; a missing one needs nothing, it
/// is rendered when viewed. The sink only sends requests it built from
/// metatiles ([`Request::for_metatile`]), so the tile is always valid.
fn mark_dirty(store: &TileStore, request: &Request) -> Result<(), MetatileError> {
    match request.tile() {
        Some(tile) => store.touch(&request.style, tile.metatile()).map(|_| ()),
        None => Ok(()),
    }
}

impl RenderSink for RenderdSink {
    type Error = RenderdSinkError;

    async fn submit(&mut self, style: &str, metatile: Metatile) -> Result<(), RenderdSinkError> {
        if let Some(fatal) = self.fatal() {
            return Err(fatal);
        }
        let request = Request::for_metatile(self.command, metatile, style);
        self.shared.state.lock().expect("sink state").pending += 1;
        // Workers only stop when the sink is dropped, so sending succeeds.
        self.queue
            .send(request)
            .await
            .expect("render workers outlive the sink");
        Ok(())
    }

    async fn finish(&mut self) -> RenderReport {
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            // Register before checking, so a notification in between is
            // not lost.
            idle.as_mut().enable();
            {
                let mut state = self.shared.state.lock().expect("sink state");
                if state.pending == 0 {
                    // The next batch tries renderd again.
                    state.fatal = None;
                    return std::mem::take(&mut state.report);
                }
            }
            idle.await;
        }
    }
}

/// Counts per zoom of what [`expire`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZoomSummary {
    /// Renders asked for; `replies` breaks them down.
    pub rendered: u64,
    /// How the sink answered those renders.
    pub replies: RenderCounts,
    /// Touched now.
    pub touched: u64,
    /// Found already touched (mtime before 2000) and left.
    pub already_touched: u64,
    /// Deleted (`.meta` file unlinked).
    pub deleted: u64,
    /// Not on disk, so nothing done (as `render_expired`).
    pub missing: u64,
    /// Acted on though already dirty by the planet time (mtime older than
    /// `planet-import-complete`, or than 3 days without it).
    pub already_dirty: u64,
    /// Store errors (unreadable directory, permissions); the first few are
    /// logged.
    pub errors: u64,
}

impl ZoomSummary {
    fn add(&mut self, other: &ZoomSummary) {
        self.rendered += other.rendered;
        self.replies.add(&other.replies);
        self.touched += other.touched;
        self.already_touched += other.already_touched;
        self.deleted += other.deleted;
        self.missing += other.missing;
        self.already_dirty += other.already_dirty;
        self.errors += other.errors;
    }
}

/// What [`expire`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireSummary {
    /// Counts per zoom acted on.
    pub zooms: BTreeMap<u8, ZoomSummary>,
    /// Metatiles given outside the policy's zooms, left alone.
    pub outside_zooms: u64,
    /// Why renders failed, if they did.
    pub render_error: Option<String>,
    /// The first store error.
    pub store_error: Option<String>,
}

impl ExpireSummary {
    /// Sums over all zooms.
    pub fn total(&self) -> ZoomSummary {
        let mut total = ZoomSummary::default();
        for zoom in self.zooms.values() {
            total.add(zoom);
        }
        total
    }

    /// Nothing expired is lost: renders were answered and no store error
    /// happened. A render answered not done counts only once its metatile
    /// is marked dirty (a viewer's request re-renders it then, as after a
    /// touch); one that could not be marked is a failure, so the batch's
    /// expiry is kept and tried again.
    pub fn is_success(&self) -> bool {
        let total = self.total();
        total.errors == 0 && total.replies.failed == 0 && total.replies.unmarked == 0
    }
}

impl fmt::Display for ExpireSummary {
    /// A table per zoom and a total line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "zoom  rendered      done  not-done   ignored    failed   dirtied   touched  was-touched   deleted   missing  was-dirty    errors"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, label: &str, z: &ZoomSummary| {
            writeln!(
                f,
                "{label:>4}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>11}  {:>8}  {:>8}  {:>9}  {:>8}",
                z.rendered,
                z.replies.done,
                z.replies.not_done,
                z.replies.ignored,
                z.replies.failed,
                z.replies.marked_dirty,
                z.touched,
                z.already_touched,
                z.deleted,
                z.missing,
                z.already_dirty,
                z.errors
            )
        };
        for (zoom, summary) in &self.zooms {
            row(f, &zoom.to_string(), summary)?;
        }
        row(f, "all", &self.total())
    }
}

/// Why [`expire`] did nothing at all (errors on single metatiles are
/// counted in the summary instead).
#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The tile directory is unusable for the style (reading its
    /// `planet-import-complete` failed).
    #[error(transparent)]
    Store(#[from] MetatileError),
}

/// Store errors logged individually before only counting them.
const LOGGED_STORE_ERRORS: u64 = 10;

/// Applies `policy` to `metatiles` (any tile of a metatile names it;
/// duplicates are merged) on the tile directory `store`: from the highest
/// zoom down, each metatile on disk is deleted, touched or sent to `sink`
/// to be re-rendered; missing ones are skipped unless the policy renders
/// them. Waits for the renders to be answered.
///
/// Store errors (permissions, a broken directory) are counted and the run
/// goes on; a sink that stops accepting work fails the remaining renders
/// but not the touches and deletes.
///
/// The planet time is looked up once per call. A metatile counts as
/// `already_dirty` when its mtime is before it; it is acted on all the
/// same (a touch makes it very old, so mod_tile re-renders it with
/// priority). The tile directory is used with short blocking calls (stat,
/// futimens, unlink) between the awaits.
pub async fn expire<S: RenderSink>(
    store: &TileStore,
    policy: &ExpirePolicy,
    metatiles: impl IntoIterator<Item = Metatile>,
    sink: &mut S,
) -> Result<ExpireSummary, ExpireError> {
    policy.validate()?;
    let mut summary = ExpireSummary::default();
    let mut by_zoom: BTreeMap<u8, BTreeSet<Metatile>> = BTreeMap::new();
    for metatile in metatiles {
        if policy.action(metatile.z).is_none() {
            summary.outside_zooms += 1;
            continue;
        }
        let origin = Metatile {
            z: metatile.z,
            x: metatile.x & !(METATILE - 1),
            y: metatile.y & !(METATILE - 1),
        };
        by_zoom.entry(origin.z).or_default().insert(origin);
    }
    let style = policy.style.as_str();
    let planet = store.planet_import_complete(style)?;
    let mut run = Run {
        store,
        policy,
        planet_time: planet.time,
        sink,
        sink_open: true,
    };
    for (&zoom, metatiles) in by_zoom.iter().rev() {
        let action = policy.action(zoom).expect("filtered above");
        let counts = summary.zooms.entry(zoom).or_default();
        for &metatile in metatiles {
            if let Err(e) = run.act(action, metatile, counts).await {
                counts.errors += 1;
                if counts.errors <= LOGGED_STORE_ERRORS {
                    tracing::warn!("{metatile}: {e}");
                }
                summary.store_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let report = sink.finish().await;
    for (zoom, replies) in &report.zooms {
        summary.zooms.entry(*zoom).or_default().replies.add(replies);
    }
    if let Some(error) = report.error {
        summary.render_error.get_or_insert(error);
    }
    Ok(summary)
}

/// The state of one [`expire`] call.
struct Run<'a, S> {
    store: &'a TileStore,
    policy: &'a ExpirePolicy,
    planet_time: std::time::SystemTime,
    sink: &'a mut S,
    /// False once the sink refused work: later renders fail at once.
    sink_open: bool,
}

impl<S: RenderSink> Run<'_, S> {
    /// One metatile: stat, then the policy's action.
    async fn act(
        &mut self,
        action: Action,
        metatile: Metatile,
        counts: &mut ZoomSummary,
    ) -> Result<(), MetatileError> {
        let style = self.policy.style.as_str();
        let state = self.store.stat_against(style, metatile, self.planet_time)?;
        let render_missing = action == Action::Render && self.policy.render_missing;
        if !state.exists() && !render_missing {
            counts.missing += 1;
            return Ok(());
        }
        if matches!(state, TileState::Dirty { .. }) {
            counts.already_dirty += 1;
        }
        match action {
            Action::Delete => match self.store.delete(style, metatile)? {
                true => counts.deleted += 1,
                false => counts.missing += 1,
            },
            Action::Touch => match self.store.touch(style, metatile)? {
                TouchOutcome::Touched => counts.touched += 1,
                TouchOutcome::AlreadyTouched => counts.already_touched += 1,
                TouchOutcome::Missing => counts.missing += 1,
            },
            Action::Render => {
                counts.rendered += 1;
                if !self.sink_open {
                    counts.replies.failed += 1;
                } else if let Err(e) = self.sink.submit(style, metatile).await {
                    tracing::error!("no more renders: {e}");
                    self.sink_open = false;
                    counts.replies.failed += 1;
                }
            }
        }
        Ok(())
    }
}

/// What a tile list holds per metatile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListGranularity {
    /// One `z/x/y` line per metatile, its top-left tile.
    Metatiles,
    /// Every tile the metatile draws (64, or 1/4/16 at z0–z2).
    Tiles,
}

/// How a tile list file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMode {
    /// Replaced atomically (temporary file in the same directory, renamed).
    Replace,
    /// Appended in a single write, so concurrent appenders do not mix lines.
    Append,
}

/// Writes `z/x/y` lines for `metatiles`; returns the number of lines.
pub fn write_tile_list(
    path: &Path,
    metatiles: impl IntoIterator<Item = Metatile>,
    granularity: ListGranularity,
    mode: ListMode,
) -> Result<u64, MetatileError> {
    let mut text = String::new();
    let mut lines = 0;
    for metatile in metatiles {
        let mut line = |tile: Tile| {
            use fmt::Write as _;
            let _ = writeln!(text, "{tile}");
            lines += 1;
        };
        match granularity {
            ListGranularity::Metatiles => line(Tile {
                z: metatile.z,
                x: metatile.x,
                y: metatile.y,
            }),
            ListGranularity::Tiles => metatile.tiles().for_each(line),
        }
    }
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| MetatileError::Io { path, source }
    };
    match mode {
        ListMode::Append => OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(io_error(path))?,
        ListMode::Replace => {
            let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
            temp_name.push(format!(".{}.tmp", std::process::id()));
            let temp: PathBuf = path.with_file_name(temp_name);
            let written = fs::write(&temp, text.as_bytes())
                .map_err(io_error(&temp))
                .and_then(|()| fs::rename(&temp, path).map_err(io_error(path)));
            if written.is_err() {
                let _ = fs::remove_file(&temp);
            }
            written?;
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_actions_per_zoom() {
        let mut policy = ExpirePolicy::new("s");
        policy.min_zoom = 0;
        policy.max_zoom = 19;
        policy.touch_from = Some(15);
        policy.delete_from = Some(18);
        assert_eq!(policy.zooms(), 3..=19);
        assert_eq!(policy.action(2), None, "z0-z2 are never expired");
        assert_eq!(policy.action(3), Some(Action::Render));
        assert_eq!(policy.action(14), Some(Action::Render));
        assert_eq!(policy.action(15), Some(Action::Touch));
        assert_eq!(policy.action(18), Some(Action::Delete));
        assert_eq!(policy.action(19), Some(Action::Delete));
        assert_eq!(policy.action(20), None);
        assert!(policy.renders());
        policy.touch_from = Some(3);
        assert!(!policy.renders());
        // Delete wins over touch.
        policy.delete_from = Some(10);
        policy.touch_from = Some(12);
        assert_eq!(policy.action(13), Some(Action::Delete));
        assert_eq!(policy.action(9), Some(Action::Render));

        policy.max_zoom = 21;
        assert!(matches!(policy.validate(), Err(PolicyError::Zoom { .. })));
        policy.max_zoom = 2;
        policy.min_zoom = 5;
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::ZoomOrder { .. })
        ));
        policy.min_zoom = 0;
        assert!(policy.validate().is_ok());
        assert!(policy.zooms().is_empty());
        policy.style = "a/b".into();
        assert!(matches!(policy.validate(), Err(PolicyError::Style(_))));
    }
}
