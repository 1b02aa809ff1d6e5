//! Where the expire stage meets the render stage: tilepipe's own renderer
//! as a render sink for expired metatiles.
//!
//! Expire only knows its [`RenderSink`] and [`LocalRenderer`] traits, so it
//! never depends on the render stage; this adapter lives with the daemon,
//! which wires the stages together (`tilepipe run` builds a
//! [`BuiltinRenderer`] from its render queue and hands it to the daemon and
//! the low-zoom schedules).

use crate::expire::actions::{
    self, ExpireError, ExpirePolicy, ExpireSummary, RenderReport, RenderSink,
};
use crate::expire::batch::{LocalRenderer, RenderReason};
use crate::metatile::TileStore;
use crate::render::queue::{Priority, RenderKey, RenderQueue, Submitted};
use crate::tile::Metatile;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// tilepipe's own renderer, when the process runs one (`tilepipe run` with
/// styles): its queue and the styles it draws.
#[derive(Clone)]
pub struct BuiltinRenderer {
    /// The queue its workers take metatiles from.
    pub queue: Arc<RenderQueue>,
    /// Names of the styles it draws; other styles' expired metatiles go
    /// to their `renderd` endpoint, or are only marked dirty.
    pub styles: BTreeSet<String>,
}

impl LocalRenderer for BuiltinRenderer {
    fn draws(&self, style: &str) -> bool {
        self.styles.contains(style)
    }

    fn expire<'a>(
        &'a self,
        store: &'a TileStore,
        policy: &'a ExpirePolicy,
        metatiles: Box<dyn Iterator<Item = Metatile> + Send + 'a>,
        reason: RenderReason,
    ) -> Pin<Box<dyn Future<Output = Result<ExpireSummary, ExpireError>> + Send + 'a>> {
        // Edits go before background refreshes, behind renders a viewer
        // waits for.
        let priority = match reason {
            RenderReason::Expired => Priority::Expired,
            RenderReason::Scheduled => Priority::Background,
        };
        Box::pin(async move {
            let mut sink = QueueSink::new(self.queue.clone(), store.clone(), priority);
            actions::expire(store, policy, metatiles, &mut sink).await
        })
    }
}

/// Renders with tilepipe's own renderer, through its [`RenderQueue`].
///
/// Each metatile is first marked dirty on disk, then queued without
/// waiting: the apply loop goes on while the workers render, the cache
/// tells the truth meanwhile (`/status` says dirty, the server re-renders
/// it for a viewer first), and a crash or a full queue leaves a dirty
/// metatile that is re-rendered when someone views it, never a stale one
/// that looks fresh. Queued renders count as done, rejections as not done.
pub struct QueueSink {
    queue: Arc<RenderQueue>,
    store: TileStore,
    priority: Priority,
    report: RenderReport,
}

impl QueueSink {
    /// Marks metatiles dirty in `store` and queues them at `priority`.
    pub fn new(queue: Arc<RenderQueue>, store: TileStore, priority: Priority) -> QueueSink {
        QueueSink {
            queue,
            store,
            priority,
            report: RenderReport::default(),
        }
    }
}

impl RenderSink for QueueSink {
    type Error = std::convert::Infallible;

    async fn submit(&mut self, style: &str, metatile: Metatile) -> Result<(), Self::Error> {
        // A metatile that cannot be marked dirty is still re-rendered, but
        // the batch counts as failed so its expiry is tried again.
        let touched = self.store.touch(style, metatile);
        let key = RenderKey {
            style: style.to_string(),
            metatile,
        };
        let (submitted, _) = self.queue.submit(key, self.priority, false);
        let counts = self.report.zooms.entry(metatile.z).or_default();
        match (touched, submitted) {
            (Err(e), _) => {
                tracing::warn!("{metatile}: {e}");
                self.report.error.get_or_insert_with(|| e.to_string());
                counts.failed += 1;
            }
            (Ok(_), Submitted::Rejected) => counts.not_done += 1,
            (Ok(_), _) => counts.done += 1,
        }
        Ok(())
    }

    async fn finish(&mut self) -> RenderReport {
        std::mem::take(&mut self.report)
    }
}
