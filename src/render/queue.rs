//! The render queue: what renderd's request queues do, with the fixes
//! users ask for.
//!
//! - Four priorities, highest first: a missing tile a client waits for, a
//!   dirty tile a client waits for, expired metatiles, background work.
//! - One entry per (style, zoom, metatile): a request for a metatile that
//!   is already queued joins it, and is raised to the higher priority
//!   (renderd never upgrades); one that is being rendered joins the render
//!   and is woken when it is written.
//! - Bounded: each priority holds at most `capacity` entries. A full queue
//!   rejects the new request, explicitly and counted, never silently;
//!   waiters of a rejected request are told at once.
//! - At most [`MAX_WAITERS`] waiters per metatile: a flood of identical
//!   requests cannot grow one entry's waiter list without bound. Waiters
//!   that gave up are pruned first; beyond the cap a new waiter is told
//!   `Rejected` at once (the render itself stays queued).
//! - Statistics per priority and zoom: queue lengths, renders, failures
//!   and render time.
//! - Rendering yields to updates and to waiting clients, as Tirex's
//!   rendering control does (`tirex-rendering-control --stop` around an
//!   osm2pgsql update; a bucket's `maxproc` and `maxload` in tirex.conf):
//!   background and expiry work is left queued while the apply stage
//!   holds a [`BackgroundPause`], while [`BackgroundLimits::max_workers`]
//!   workers already render such work (the others stay free for clients)
//!   and while the load average is above [`BackgroundLimits::max_load`].
//!   Renders for waiting clients are never held back.
//!
//! Workers (OS threads, Mapnik is CPU-bound) block in [`RenderQueue::take`]
//! and report with [`RenderQueue::complete`]; async callers wait on the
//! receiver [`RenderQueue::submit`] hands back.

use crate::tile::Metatile;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most clients waiting for one metatile. Apache's default
/// MaxRequestWorkers (400) bounds what mod_tile can send for one metatile
/// at once; past this cap a flood, not a crowd of viewers, is asking.
pub const MAX_WAITERS: usize = 1024;

/// Limits on background and expiry renders, so they never take every
/// worker from clients (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackgroundLimits {
    /// Most background and expiry renders at once.
    pub max_workers: usize,
    /// No background or expiry render starts while the 1-minute load
    /// average (`/proc/loadavg`) is above this; `None` = no limit.
    pub max_load: Option<f64>,
}

impl Default for BackgroundLimits {
    fn default() -> Self {
        BackgroundLimits {
            max_workers: usize::MAX,
            max_load: None,
        }
    }
}

/// Why background and expiry work was left in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Deferral {
    /// A large batch is being applied.
    Paused,
    /// [`BackgroundLimits::max_workers`] such renders are running.
    Workers,
    /// The load average is above [`BackgroundLimits::max_load`].
    Load,
}

impl Deferral {
    /// Every reason, in the order `/metrics` prints them.
    pub const ALL: [Deferral; 3] = [Deferral::Paused, Deferral::Workers, Deferral::Load];

    /// The label in metrics: `paused`, `workers` or `load`.
    pub fn name(self) -> &'static str {
        match self {
            Deferral::Paused => "paused",
            Deferral::Workers => "workers",
            Deferral::Load => "load",
        }
    }
}

/// The 1-minute load average, from `/proc/loadavg`; `None` where it
/// cannot be read (then no load limit applies).
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Why a metatile is rendered; higher variants are served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Scheduled refreshes and bulk pre-rendering.
    Background = 0,
    /// Expired by an applied diff.
    Expired = 1,
    /// Dirty (stale) tile a client is waiting for.
    DirtyWaited = 2,
    /// Missing tile a client is waiting for.
    MissingWaited = 3,
}

impl Priority {
    /// Whether renders of this priority yield (to a pause, the worker
    /// limit and the load limit): nobody waits for them.
    pub fn yields(self) -> bool {
        self <= Priority::Expired
    }

    /// Every priority, highest first.
    pub const ALL: [Priority; 4] = [
        Priority::MissingWaited,
        Priority::DirtyWaited,
        Priority::Expired,
        Priority::Background,
    ];

    /// The label in metrics and logs: `missing`, `dirty`, `expired` or
    /// `background`.
    pub fn name(self) -> &'static str {
        match self {
            Priority::MissingWaited => "missing",
            Priority::DirtyWaited => "dirty",
            Priority::Expired => "expired",
            Priority::Background => "background",
        }
    }
}

/// A metatile of a style: the unit of rendering and de-duplication.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RenderKey {
    /// The style's name.
    pub style: String,
    /// The metatile, by any of its tiles (workers render the one holding
    /// it).
    pub metatile: Metatile,
}

/// What a waiter learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The metatile was written.
    Rendered,
    /// Rendering failed; the message says why.
    Failed(String),
    /// The queue was full for this priority.
    Rejected,
    /// The queue shut down before the render.
    Shutdown,
}

/// What [`RenderQueue::submit`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// A new entry.
    Queued,
    /// Joined an entry already queued at the same or a higher priority.
    Joined,
    /// Joined an entry queued lower, and raised it.
    Raised,
    /// Joined a render in progress.
    JoinedRender,
    /// The priority's queue is full.
    Rejected,
}

/// A render handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// What to render.
    pub key: RenderKey,
    /// The queue it was taken from.
    pub priority: Priority,
}

/// Counters per priority (the queue it was taken from) and zoom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Renders completed with success.
    pub rendered: u64,
    /// Renders completed with an error.
    pub failed: u64,
    /// Time from `take` to `complete`, summed over both.
    pub render_time: Duration,
}

/// A snapshot of the queue, for `/metrics` and the server's load checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries waiting, per priority.
    pub queued: BTreeMap<Priority, usize>,
    /// Metatiles taken by a worker and not completed yet.
    pub in_progress: usize,
    /// Requests turned away because their queue was full.
    pub rejected: BTreeMap<Priority, u64>,
    /// Renders done, per (priority, zoom).
    pub done: BTreeMap<(Priority, u8), Counters>,
    /// Waiters turned away because their metatile had [`MAX_WAITERS`].
    pub refused_waiters: u64,
    /// Whether background and expiry renders are paused now.
    pub background_paused: bool,
    /// Pauses since the start.
    pub background_pauses: u64,
    /// Time spent paused, the current pause included.
    pub background_paused_time: Duration,
    /// Background and expiry renders in progress.
    pub background_in_progress: usize,
    /// [`BackgroundLimits::max_workers`].
    pub background_max_workers: usize,
    /// Times a worker found background or expiry work and left it, by
    /// reason (counted once per reason per wait).
    pub deferred: BTreeMap<Deferral, u64>,
}

struct Entry {
    priority: Priority,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

#[derive(Default)]
struct State {
    /// FIFO per priority; a raised entry's old position is left as a
    /// stale key and skipped when reached.
    queues: HashMap<Priority, VecDeque<RenderKey>>,
    queued: HashMap<RenderKey, Entry>,
    in_progress: HashMap<RenderKey, (Priority, Instant, Vec<oneshot::Sender<Outcome>>)>,
    rejected: BTreeMap<Priority, u64>,
    done: BTreeMap<(Priority, u8), Counters>,
    refused_waiters: u64,
    shutdown: bool,
    /// Holders of a [`BackgroundPause`].
    pausers: usize,
    pauses: u64,
    paused_since: Option<Instant>,
    paused_time: Duration,
    deferred: BTreeMap<Deferral, u64>,
}

/// Adds `sender` to a metatile's waiters unless they are at
/// [`MAX_WAITERS`] even after dropping those whose receiver is gone; a
/// refused waiter is told `Rejected` at once. True when it was refused.
fn add_waiter(
    waiters: &mut Vec<oneshot::Sender<Outcome>>,
    sender: Option<oneshot::Sender<Outcome>>,
) -> bool {
    let Some(sender) = sender else {
        return false;
    };
    if waiters.len() >= MAX_WAITERS {
        waiters.retain(|w| !w.is_closed());
    }
    if waiters.len() >= MAX_WAITERS {
        let _ = sender.send(Outcome::Rejected);
        return true;
    }
    waiters.push(sender);
    false
}

impl State {
    /// Whether `priority`'s queue has a live entry first, dropping the
    /// stale positions a raise left in front.
    fn has_live_front(&mut self, priority: Priority) -> bool {
        let Some(queue) = self.queues.get_mut(&priority) else {
            return false;
        };
        while let Some(key) = queue.front() {
            if self.queued.get(key).map(|e| e.priority) == Some(priority) {
                return true;
            }
            queue.pop_front();
        }
        false
    }

    fn background_in_progress(&self) -> usize {
        self.in_progress
            .values()
            .filter(|(priority, _, _)| priority.yields())
            .count()
    }

    fn queued_count(&self, priority: Priority) -> usize {
        self.queued
            .values()
            .filter(|e| e.priority == priority)
            .count()
    }
}

/// See the module documentation.
pub struct RenderQueue {
    state: Mutex<State>,
    work: Condvar,
    capacity: usize,
    /// Told of every metatile written (e.g. to purge an HTTP cache).
    rendered_listeners: Mutex<Vec<RenderedListener>>,
    limits: BackgroundLimits,
    load: Box<dyn Fn() -> Option<f64> + Send + Sync>,
}

/// A function [`RenderQueue::complete`] calls with each metatile written.
/// It runs on a render worker's thread: it must only hand the key on.
pub type RenderedListener = Box<dyn Fn(&RenderKey) + Send + Sync>;

/// Background and expiry renders are paused while this lives (see
/// [`RenderQueue::pause_background`]).
pub struct BackgroundPause<'a> {
    queue: &'a RenderQueue,
}

impl Drop for BackgroundPause<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.pausers = state.pausers.saturating_sub(1);
        if state.pausers == 0 {
            if let Some(since) = state.paused_since.take() {
                state.paused_time += since.elapsed();
            }
        }
        drop(state);
        self.queue.work.notify_all();
    }
}

/// How long a worker held back by the load limit waits before looking
/// again: the load average changes without telling anyone.
const LOAD_RECHECK: Duration = Duration::from_secs(1);

impl RenderQueue {
    /// A queue holding at most `capacity` entries per priority.
    pub fn new(capacity: usize) -> RenderQueue {
        RenderQueue::with_limits(capacity, BackgroundLimits::default())
    }

    /// A queue whose background and expiry renders obey `limits`, the
    /// load read from `/proc/loadavg`.
    pub fn with_limits(capacity: usize, limits: BackgroundLimits) -> RenderQueue {
        RenderQueue::with_load_source(capacity, limits, load_average)
    }

    /// [`RenderQueue::with_limits`] with the load read by `load` (tests
    /// choose it).
    pub fn with_load_source(
        capacity: usize,
        limits: BackgroundLimits,
        load: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> RenderQueue {
        RenderQueue {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            capacity: capacity.max(1),
            rendered_listeners: Mutex::new(Vec::new()),
            limits: BackgroundLimits {
                max_workers: limits.max_workers.max(1),
                ..limits
            },
            load: Box::new(load),
        }
    }

    /// Pauses background and expiry renders until the returned guard is
    /// dropped (renders in progress finish); renders for waiting clients
    /// go on. Pauses nest.
    pub fn pause_background(&self) -> BackgroundPause<'_> {
        let mut state = self.lock();
        if state.pausers == 0 {
            state.pauses += 1;
            state.paused_since = Some(Instant::now());
        }
        state.pausers += 1;
        BackgroundPause { queue: self }
    }

    /// Why background and expiry work cannot start now, if it cannot.
    fn background_blocked(&self, state: &State) -> Option<Deferral> {
        if state.pausers > 0 {
            return Some(Deferral::Paused);
        }
        if state.background_in_progress() >= self.limits.max_workers {
            return Some(Deferral::Workers);
        }
        let max_load = self.limits.max_load?;
        ((self.load)()? > max_load).then_some(Deferral::Load)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks for `key` at `priority`. The receiver, if one was asked for
    /// with `wait`, gets the outcome (a waiter that gives up just drops it).
    pub fn submit(
        &self,
        key: RenderKey,
        priority: Priority,
        wait: bool,
    ) -> (Submitted, Option<oneshot::Receiver<Outcome>>) {
        let (sender, receiver) = if wait {
            let (s, r) = oneshot::channel();
            (Some(s), Some(r))
        } else {
            (None, None)
        };
        let mut state = self.lock();
        if state.shutdown {
            if let Some(s) = sender {
                let _ = s.send(Outcome::Shutdown);
            }
            return (Submitted::Rejected, receiver);
        }
        if let Some((_, _, waiters)) = state.in_progress.get_mut(&key) {
            let refused = add_waiter(waiters, sender);
            state.refused_waiters += u64::from(refused);
            return (Submitted::JoinedRender, receiver);
        }
        if let Some(entry) = state.queued.get(&key) {
            let current = entry.priority;
            if priority <= current {
                let entry = state.queued.get_mut(&key).expect("just found");
                let refused = add_waiter(&mut entry.waiters, sender);
                state.refused_waiters += u64::from(refused);
                return (Submitted::Joined, receiver);
            }
            // Raising needs room in the higher queue, like any new entry.
            if state.queued_count(priority) >= self.capacity {
                *state.rejected.entry(priority).or_default() += 1;
                // The request still rides along at its old priority.
                let entry = state.queued.get_mut(&key).expect("just found");
                let refused = add_waiter(&mut entry.waiters, sender);
                state.refused_waiters += u64::from(refused);
                return (Submitted::Joined, receiver);
            }
            let entry = state.queued.get_mut(&key).expect("just found");
            entry.priority = priority;
            let refused = add_waiter(&mut entry.waiters, sender);
            state.refused_waiters += u64::from(refused);
            state.queues.entry(priority).or_default().push_back(key);
            drop(state);
            self.work.notify_one();
            return (Submitted::Raised, receiver);
        }
        if state.queued_count(priority) >= self.capacity {
            *state.rejected.entry(priority).or_default() += 1;
            if let Some(s) = sender {
                let _ = s.send(Outcome::Rejected);
            }
            return (Submitted::Rejected, receiver);
        }
        state.queued.insert(
            key.clone(),
            Entry {
                priority,
                waiters: sender.into_iter().collect(),
            },
        );
        state.queues.entry(priority).or_default().push_back(key);
        drop(state);
        self.work.notify_one();
        (Submitted::Queued, receiver)
    }

    /// The next job, highest priority first, FIFO within a priority;
    /// blocks until there is one. `None` once shut down.
    /// Background and expiry work waits while it yields (see the module
    /// documentation); work for clients is taken meanwhile.
    pub fn take(&self) -> Option<Job> {
        let mut state = self.lock();
        let mut counted = None;
        loop {
            if state.shutdown {
                return None;
            }
            match self.pop(&mut state) {
                Ok(Some(job)) => return Some(job),
                Ok(None) => state = self.work.wait(state).unwrap_or_else(|p| p.into_inner()),
                Err(reason) => {
                    if counted != Some(reason) {
                        *state.deferred.entry(reason).or_default() += 1;
                        counted = Some(reason);
                    }
                    state = self
                        .work
                        .wait_timeout(state, LOAD_RECHECK)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// Like [`RenderQueue::take`] without blocking.
    pub fn try_take(&self) -> Option<Job> {
        let mut state = self.lock();
        if state.shutdown {
            return None;
        }
        match self.pop(&mut state) {
            Ok(job) => job,
            Err(reason) => {
                *state.deferred.entry(reason).or_default() += 1;
                None
            }
        }
    }

    /// The next job; `Err` when only background or expiry work is queued
    /// and it has to wait.
    fn pop(&self, state: &mut State) -> Result<Option<Job>, Deferral> {
        for priority in Priority::ALL {
            if priority.yields() && state.has_live_front(priority) {
                if let Some(reason) = self.background_blocked(state) {
                    return Err(reason);
                }
            }
            while let Some(key) = state
                .queues
                .get_mut(&priority)
                .and_then(VecDeque::pop_front)
            {
                // Skip positions left behind by a raise.
                let current = state.queued.get(&key).map(|e| e.priority);
                if current != Some(priority) {
                    continue;
                }
                let entry = state.queued.remove(&key).expect("checked above");
                state
                    .in_progress
                    .insert(key.clone(), (priority, Instant::now(), entry.waiters));
                return Ok(Some(Job { key, priority }));
            }
        }
        Ok(None)
    }

    /// Calls `listener` with the key of every metatile written from now
    /// on (after it is on disk, before its waiters wake).
    pub fn on_rendered(&self, listener: RenderedListener) {
        self.rendered_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
    }

    /// Reports a finished render; wakes everyone waiting for it.
    pub fn complete(&self, job: &Job, result: Result<(), String>) {
        let mut state = self.lock();
        let Some((priority, started, waiters)) = state.in_progress.remove(&job.key) else {
            return;
        };
        let counters = state
            .done
            .entry((priority, job.key.metatile.z))
            .or_default();
        counters.render_time += started.elapsed();
        let outcome = match result {
            Ok(()) => {
                counters.rendered += 1;
                Outcome::Rendered
            }
            Err(message) => {
                counters.failed += 1;
                Outcome::Failed(message)
            }
        };
        drop(state);
        if outcome == Outcome::Rendered {
            let listeners = self
                .rendered_listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for listener in listeners.iter() {
                listener(&job.key);
            }
        }
        // A worker may wait for this render's background slot.
        if priority.yields() {
            self.work.notify_all();
        }
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }

    /// Stops handing out work and tells every waiter of queued entries;
    /// renders in progress finish and report as usual.
    pub fn shutdown(&self) {
        let mut state = self.lock();
        state.shutdown = true;
        let queued: Vec<Entry> = state.queued.drain().map(|(_, e)| e).collect();
        state.queues.clear();
        drop(state);
        self.work.notify_all();
        for entry in queued {
            for waiter in entry.waiters {
                let _ = waiter.send(Outcome::Shutdown);
            }
        }
    }

    /// Lengths and counters since the start.
    pub fn stats(&self) -> QueueStats {
        let state = self.lock();
        let mut queued = BTreeMap::new();
        for entry in state.queued.values() {
            *queued.entry(entry.priority).or_default() += 1;
        }
        QueueStats {
            queued,
            in_progress: state.in_progress.len(),
            rejected: state.rejected.clone(),
            done: state.done.clone(),
            refused_waiters: state.refused_waiters,
            background_paused: state.pausers > 0,
            background_pauses: state.pauses,
            background_paused_time: state.paused_time
                + state
                    .paused_since
                    .map_or(Duration::ZERO, |since| since.elapsed()),
            background_in_progress: state.background_in_progress(),
            background_max_workers: self.limits.max_workers,
            deferred: state.deferred.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(style: &str, z: u8, x: u32) -> RenderKey {
        RenderKey {
            style: style.into(),
            metatile: Metatile { z, x, y: 0 },
        }
    }

    #[test]
    fn highest_priority_first_fifo_within() {
        let q = RenderQueue::new(10);
        q.submit(key("a", 10, 0), Priority::Background, false);
        q.submit(key("a", 10, 8), Priority::Expired, false);
        q.submit(key("a", 10, 16), Priority::Expired, false);
        q.submit(key("a", 10, 24), Priority::MissingWaited, false);
        q.submit(key("a", 10, 32), Priority::DirtyWaited, false);
        let order: Vec<u32> = std::iter::from_fn(|| q.try_take())
            .map(|j| j.key.metatile.x)
            .collect();
        assert_eq!(order, vec![24, 32, 8, 16, 0]);
    }

    #[test]
    fn duplicates_join_and_raise_never_lost() {
        let q = RenderQueue::new(10);
        let (s, low) = q.submit(key("a", 12, 0), Priority::Expired, true);
        assert_eq!(s, Submitted::Queued);
        // Same style, zoom and metatile: joins.
        let (s, same) = q.submit(key("a", 12, 0), Priority::Background, true);
        assert_eq!(s, Submitted::Joined);
        // Another style is another entry.
        assert_eq!(
            q.submit(key("b", 12, 0), Priority::Expired, false).0,
            Submitted::Queued
        );
        // A waiting client raises it above the other style's entry.
        let (s, high) = q.submit(key("a", 12, 0), Priority::MissingWaited, true);
        assert_eq!(s, Submitted::Raised);
        let job = q.try_take().unwrap();
        assert_eq!(
            (job.key.style.as_str(), job.priority),
            ("a", Priority::MissingWaited)
        );
        // Joining the render in progress.
        let (s, late) = q.submit(key("a", 12, 0), Priority::DirtyWaited, true);
        assert_eq!(s, Submitted::JoinedRender);
        q.complete(&job, Ok(()));
        for rx in [low, same, high, late] {
            assert_eq!(rx.unwrap().blocking_recv().unwrap(), Outcome::Rendered);
        }
        // The raised entry's old position is skipped: only "b" is left.
        assert_eq!(q.try_take().unwrap().key.style, "b");
        assert!(q.try_take().is_none());
    }

    #[test]
    fn full_queue_rejects_explicitly_and_counts() {
        let q = RenderQueue::new(2);
        q.submit(key("a", 5, 0), Priority::Expired, false);
        q.submit(key("a", 5, 8), Priority::Expired, false);
        let (s, rx) = q.submit(key("a", 5, 16), Priority::Expired, true);
        assert_eq!(s, Submitted::Rejected);
        assert_eq!(rx.unwrap().blocking_recv().unwrap(), Outcome::Rejected);
        // Other priorities have their own room.
        assert_eq!(
            q.submit(key("a", 5, 16), Priority::MissingWaited, false).0,
            Submitted::Queued
        );
        let stats = q.stats();
        assert_eq!(stats.rejected[&Priority::Expired], 1);
        assert_eq!(stats.queued[&Priority::Expired], 2);
        assert_eq!(stats.queued[&Priority::MissingWaited], 1);
    }

    #[test]
    fn waiters_per_metatile_are_capped() {
        let q = RenderQueue::new(10);
        let mut receivers: Vec<_> = (0..MAX_WAITERS + 500)
            .map(|_| q.submit(key("a", 12, 0), Priority::DirtyWaited, true))
            .map(|(_, rx)| rx.unwrap())
            .collect();
        // Past the cap: told at once, the render stays queued.
        let mut extra = receivers.split_off(MAX_WAITERS);
        for rx in &mut extra {
            assert_eq!(rx.try_recv().unwrap(), Outcome::Rejected);
        }
        assert_eq!(q.stats().refused_waiters, 500);
        // Waiters that gave up make room again, also during the render.
        receivers.truncate(MAX_WAITERS - 10);
        let job = q.try_take().unwrap();
        let more: Vec<_> = (0..20)
            .map(|_| q.submit(key("a", 12, 0), Priority::DirtyWaited, true))
            .map(|(s, rx)| (s, rx.unwrap()))
            .collect();
        assert!(more.iter().all(|(s, _)| *s == Submitted::JoinedRender));
        q.complete(&job, Ok(()));
        let outcomes: Vec<_> = more
            .into_iter()
            .map(|(_, rx)| rx.blocking_recv().unwrap())
            .collect();
        assert_eq!(
            outcomes.iter().filter(|o| **o == Outcome::Rendered).count(),
            10
        );
        assert_eq!(q.stats().refused_waiters, 510);
        for rx in receivers {
            assert_eq!(rx.blocking_recv().unwrap(), Outcome::Rendered);
        }
    }

    #[test]
    fn listeners_hear_of_written_metatiles_only() {
        let q = RenderQueue::new(10);
        let heard = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        q.on_rendered(Box::new(move |key| sink.lock().unwrap().push(key.clone())));
        q.submit(key("a", 7, 0), Priority::Expired, false);
        q.submit(key("a", 9, 0), Priority::Expired, false);
        let failed = q.try_take().unwrap();
        q.complete(&failed, Err("mapnik: boom".into()));
        let written = q.try_take().unwrap();
        q.complete(&written, Ok(()));
        assert_eq!(*heard.lock().unwrap(), [key("a", 9, 0)]);
    }

    #[test]
    fn failures_and_stats_per_zoom() {
        let q = RenderQueue::new(10);
        let (_, rx) = q.submit(key("a", 7, 0), Priority::Expired, true);
        q.submit(key("a", 9, 0), Priority::Expired, false);
        let first = q.try_take().unwrap();
        q.complete(&first, Err("mapnik: boom".into()));
        assert_eq!(
            rx.unwrap().blocking_recv().unwrap(),
            Outcome::Failed("mapnik: boom".into())
        );
        let second = q.try_take().unwrap();
        q.complete(&second, Ok(()));
        let stats = q.stats();
        assert_eq!(stats.done[&(Priority::Expired, 7)].failed, 1);
        assert_eq!(stats.done[&(Priority::Expired, 9)].rendered, 1);
        assert_eq!(stats.in_progress, 0);
    }

    #[test]
    fn background_and_expiry_yield_to_a_pause_clients_do_not() {
        let q = RenderQueue::new(10);
        q.submit(key("a", 10, 0), Priority::Background, false);
        q.submit(key("a", 10, 8), Priority::Expired, false);
        let pause = q.pause_background();
        let nested = q.pause_background();
        assert!(q.try_take().is_none());
        // A waiting client's render is taken during the pause.
        q.submit(key("a", 10, 16), Priority::MissingWaited, false);
        let job = q.try_take().unwrap();
        assert_eq!(job.priority, Priority::MissingWaited);
        q.complete(&job, Ok(()));
        drop(nested);
        assert!(q.try_take().is_none(), "still paused by the outer pause");
        let stats = q.stats();
        assert!(stats.background_paused);
        assert_eq!(stats.background_pauses, 1);
        assert_eq!(stats.deferred[&Deferral::Paused], 2);
        drop(pause);
        assert_eq!(q.try_take().unwrap().priority, Priority::Expired);
        assert!(!q.stats().background_paused);
    }

    #[test]
    fn a_blocked_worker_wakes_when_the_pause_ends() {
        let q = Arc::new(RenderQueue::new(10));
        q.submit(key("a", 10, 0), Priority::Expired, false);
        let pause = q.pause_background();
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || q.take().map(|job| job.priority))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!worker.is_finished());
        drop(pause);
        assert_eq!(worker.join().unwrap(), Some(Priority::Expired));
    }

    #[test]
    fn background_work_keeps_workers_free_for_clients() {
        let limits = BackgroundLimits {
            max_workers: 1,
            max_load: None,
        };
        let q = RenderQueue::with_limits(10, limits);
        q.submit(key("a", 10, 0), Priority::Background, false);
        q.submit(key("a", 10, 8), Priority::Expired, false);
        let first = q.try_take().unwrap();
        assert_eq!(first.priority, Priority::Expired);
        // One background render at a time: the second waits ...
        assert!(q.try_take().is_none());
        // ... while a client's render goes to a free worker.
        q.submit(key("a", 10, 16), Priority::DirtyWaited, false);
        assert_eq!(q.try_take().unwrap().priority, Priority::DirtyWaited);
        let stats = q.stats();
        assert_eq!(stats.background_in_progress, 1);
        assert_eq!(stats.deferred[&Deferral::Workers], 1);
        q.complete(&first, Ok(()));
        assert_eq!(q.try_take().unwrap().priority, Priority::Background);
    }

    #[test]
    fn background_work_waits_for_the_load_to_drop() {
        let load = Arc::new(Mutex::new(Some(8.0)));
        let source = load.clone();
        let limits = BackgroundLimits {
            max_workers: 4,
            max_load: Some(4.0),
        };
        let q = RenderQueue::with_load_source(10, limits, move || *source.lock().unwrap());
        q.submit(key("a", 10, 0), Priority::Background, false);
        assert!(q.try_take().is_none());
        q.submit(key("a", 10, 8), Priority::MissingWaited, false);
        assert_eq!(q.try_take().unwrap().priority, Priority::MissingWaited);
        assert_eq!(q.stats().deferred[&Deferral::Load], 1);
        *load.lock().unwrap() = Some(2.0);
        assert_eq!(q.try_take().unwrap().priority, Priority::Background);
        // An unreadable load sets no limit.
        q.submit(key("a", 10, 16), Priority::Background, false);
        *load.lock().unwrap() = None;
        assert!(q.try_take().is_some());
    }

    #[test]
    fn workers_block_until_work_and_stop_on_shutdown() {
        let q = Arc::new(RenderQueue::new(100));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut done = 0;
                    while let Some(job) = q.take() {
                        q.complete(&job, Ok(()));
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let receivers: Vec<_> = (0..20)
            .map(|i| {
                q.submit(key("a", 14, i * 8), Priority::Expired, true)
                    .1
                    .unwrap()
            })
            .collect();
        for rx in receivers {
            assert_eq!(rx.blocking_recv().unwrap(), Outcome::Rendered);
        }
        // Queued but never taken: told at shutdown.
        let stopped = RenderQueue::new(10);
        let (_, rx) = stopped.submit(key("a", 3, 0), Priority::Background, true);
        stopped.shutdown();
        assert_eq!(rx.unwrap().blocking_recv().unwrap(), Outcome::Shutdown);
        q.shutdown();
        let total: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(total, 20);
    }
}
