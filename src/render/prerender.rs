//! Pre-rendering: every metatile of a zoom range, for a lon/lat box or the
//! whole world, queued at background priority and awaited, lowest zoom
//! first. It is what mod_tile's `render_list -a` asks of renderd, done
//! in-process; `tilepipe render` wires it to a [`Renderer`] and a progress
//! bar.
//!
//! Which metatiles are rendered is the [`Selection`]: by default those
//! missing or dirty (older than the planet time, looked up once per zoom).
//! At most a [`window`] of renders is in flight, enough to keep every
//! worker busy without filling the queue; each metatile is reported to a
//! [`Progress`] as it settles, and counted in the [`Summary`].
//!
//! [`Renderer`]: super::worker::Renderer

use super::queue::{Outcome, Priority, RenderKey, RenderQueue};
use crate::metatile::{MetatileError, TileState, TileStore};
use crate::tile::{count_at, metatiles_at, BBox};
use std::collections::VecDeque;
use tokio::sync::oneshot;

/// Which metatiles of the area are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Missing and dirty ones (the default of `tilepipe render`).
    #[default]
    Stale,
    /// Only missing ones; dirty ones are kept (`--missing-only`).
    Missing,
    /// Every one, clean ones too (`--force`).
    All,
}

/// What to pre-render: one style's metatiles over a zoom range and area.
#[derive(Debug, Clone)]
pub struct Prerender {
    /// The style's name, as in the `styles:` section.
    pub style: String,
    /// Lowest and highest zoom, inclusive.
    pub zooms: (u8, u8),
    /// Only metatiles touching this lon/lat box; `None` is the world.
    pub bbox: Option<BBox>,
    /// Which of them to render.
    pub selection: Selection,
}

impl Prerender {
    /// Metatiles the zooms and area cover, rendered or skipped: the length
    /// of a progress bar.
    pub fn metatiles(&self) -> u64 {
        let (min, max) = self.zooms;
        (min..=max).map(|z| count_at(z, self.bbox.as_ref())).sum()
    }
}

/// Metatiles by what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rendered and written.
    pub rendered: u64,
    /// Not rendered because the [`Selection`] left them out.
    pub skipped: u64,
    /// Failed, or not rendered (queue full or shut down).
    pub failed: u64,
}

/// Why a pre-render stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum PrerenderError {
    /// The style's `planet-import-complete` could not be read.
    #[error("reading the planet time")]
    PlanetTime(#[source] MetatileError),
    /// A metatile's state on disk could not be read.
    #[error(transparent)]
    Stat(MetatileError),
}

/// Watches a pre-render; every method does nothing by default.
pub trait Progress {
    /// Zoom `z` starts.
    fn zoom(&mut self, z: u8) {
        let _ = z;
    }

    /// A metatile failed or was not rendered; `message` says why. Called
    /// before its [`Progress::settled`].
    fn failed(&mut self, key: &RenderKey, message: &str) {
        let _ = (key, message);
    }

    /// One more metatile is done with: rendered, skipped or failed.
    fn settled(&mut self) {}
}

/// No progress to show.
impl Progress for () {}

/// Renders in flight for `threads` workers: four each, within the queue's
/// `capacity` per priority.
pub fn window(threads: usize, capacity: usize) -> usize {
    (threads * 4).clamp(1, capacity.max(1))
}

/// Pre-renders `plan` through `queue`, reading the metatiles' state from
/// `store` (the style's cache), with at most `window` renders in flight.
/// Returns once every queued render has settled; fails only when the cache
/// cannot be read, renders that fail are counted.
pub fn prerender(
    queue: &RenderQueue,
    store: &TileStore,
    plan: &Prerender,
    window: usize,
    progress: &mut dyn Progress,
) -> Result<Summary, PrerenderError> {
    let style = plan.style.as_str();
    let bbox = plan.bbox.as_ref();
    let (min_zoom, max_zoom) = plan.zooms;
    let mut pending: VecDeque<(RenderKey, oneshot::Receiver<Outcome>)> = VecDeque::new();
    let mut summary = Summary::default();
    for z in min_zoom..=max_zoom {
        progress.zoom(z);
        let planet = store
            .planet_import_complete(style)
            .map_err(PrerenderError::PlanetTime)?;
        for metatile in metatiles_at(z, bbox) {
            let render = match plan.selection {
                Selection::All => true,
                selection => match store
                    .stat_against(style, metatile, planet.time)
                    .map_err(PrerenderError::Stat)?
                {
                    TileState::Missing => true,
                    TileState::Dirty { .. } => selection == Selection::Stale,
                    TileState::Clean(_) => false,
                },
            };
            if !render {
                summary.skipped += 1;
                progress.settled();
                continue;
            }
            while pending.len() >= window {
                settle(&mut pending, &mut summary, progress);
            }
            let key = RenderKey {
                style: style.to_string(),
                metatile,
            };
            let (_, receiver) = queue.submit(key.clone(), Priority::Background, true);
            pending.push_back((key, receiver.expect("asked to wait")));
        }
    }
    while !pending.is_empty() {
        settle(&mut pending, &mut summary, progress);
    }
    Ok(summary)
}

/// Waits for the oldest render in flight and counts its outcome.
fn settle(
    pending: &mut VecDeque<(RenderKey, oneshot::Receiver<Outcome>)>,
    summary: &mut Summary,
    progress: &mut dyn Progress,
) {
    let Some((key, receiver)) = pending.pop_front() else {
        return;
    };
    match receiver.blocking_recv() {
        Ok(Outcome::Rendered) => summary.rendered += 1,
        Ok(Outcome::Failed(message)) => {
            summary.failed += 1;
            progress.failed(&key, &message);
        }
        other => {
            summary.failed += 1;
            progress.failed(&key, &format!("not rendered ({other:?})"));
        }
    }
    progress.settled();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tile::Metatile;
    use std::sync::Arc;

    /// Records what a pre-render reports.
    #[derive(Default)]
    struct Seen {
        zooms: Vec<u8>,
        failed: Vec<(Metatile, String)>,
        settled: u64,
    }

    impl Progress for Seen {
        fn zoom(&mut self, z: u8) {
            self.zooms.push(z);
        }
        fn failed(&mut self, key: &RenderKey, message: &str) {
            self.failed.push((key.metatile, message.to_string()));
        }
        fn settled(&mut self) {
            self.settled += 1;
        }
    }

    /// A stand-in worker: "renders" by writing an empty metatile, and
    /// fails the one at z4 x8 y8.
    fn worker(queue: Arc<RenderQueue>, store: TileStore) -> std::thread::JoinHandle<Vec<Metatile>> {
        std::thread::spawn(move || {
            let mut done = Vec::new();
            while let Some(job) = queue.take() {
                let metatile = job.key.metatile;
                let result = if metatile == (Metatile { z: 4, x: 8, y: 8 }) {
                    Err("boom".to_string())
                } else {
                    store
                        .write(&job.key.style, metatile, &[])
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                };
                done.push(metatile);
                queue.complete(&job, result);
            }
            done
        })
    }

    fn plan(selection: Selection) -> Prerender {
        Prerender {
            style: "s".into(),
            zooms: (0, 4),
            bbox: None,
            selection,
        }
    }

    #[test]
    fn renders_what_the_selection_asks_lowest_zoom_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = TileStore::new(dir.path());
        let queue = Arc::new(RenderQueue::new(16));
        let handle = worker(queue.clone(), store.clone());
        // z0-z3 are one metatile each, z4 four: 8 metatiles, one failing.
        assert_eq!(plan(Selection::Stale).metatiles(), 8);
        let mut seen = Seen::default();
        let summary = prerender(&queue, &store, &plan(Selection::Stale), 2, &mut seen).unwrap();
        assert_eq!(
            summary,
            Summary {
                rendered: 7,
                skipped: 0,
                failed: 1
            }
        );
        assert_eq!(seen.zooms, vec![0, 1, 2, 3, 4]);
        assert_eq!(seen.settled, 8);
        assert_eq!(
            seen.failed,
            vec![(Metatile { z: 4, x: 8, y: 8 }, "boom".to_string())]
        );

        // Written ones are clean now: only the failed one is missing.
        let again = prerender(&queue, &store, &plan(Selection::Missing), 2, &mut ()).unwrap();
        assert_eq!((again.rendered, again.skipped, again.failed), (0, 7, 1));
        let forced = prerender(&queue, &store, &plan(Selection::All), 2, &mut ()).unwrap();
        assert_eq!((forced.rendered, forced.skipped, forced.failed), (7, 0, 1));

        queue.shutdown();
        let done = handle.join().unwrap();
        let first: Vec<u8> = done.iter().take(5).map(|m| m.z).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        assert_eq!(done.len(), 8 + 1 + 8);
    }

    #[test]
    fn a_shut_down_queue_counts_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = TileStore::new(dir.path());
        let queue = RenderQueue::new(16);
        queue.shutdown();
        let mut seen = Seen::default();
        let mut one = plan(Selection::Stale);
        one.zooms = (0, 0);
        let summary = prerender(&queue, &store, &one, 4, &mut seen).unwrap();
        assert_eq!(summary.failed, 1);
        assert_eq!(seen.failed[0].1, "not rendered (Ok(Shutdown))");
    }

    #[test]
    fn the_window_keeps_workers_busy_within_the_queue() {
        assert_eq!(window(2, 1000), 8);
        assert_eq!(window(0, 1000), 1);
        assert_eq!(window(64, 100), 100);
        assert_eq!(window(4, 0), 1);
    }
}
