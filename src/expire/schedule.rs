//! Scheduled refreshes of the low zooms.
//!
//! A low-zoom metatile covers a country or the world: every edit anywhere
//! would expire it, and it is among the slowest to render. So edits never
//! expire zooms below [`super::actions::FIRST_EXPIRED_ZOOM`] (and a style
//! may start later); instead, per style, a cron schedule re-renders or
//! touches a zoom range in the background.

use super::actions::{self, ExpirePolicy, ExpireSummary};
use super::batch::{ExpireConfig, LocalRenderer, RenderReason, RenderTarget, StyleExpiry};
use crate::metatile::TileStore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tracing::{info, warn};

/// Highest zoom a schedule may cover: every metatile of the world at each
/// zoom is visited (z12 has 262 144).
pub const MAX_SCHEDULED_ZOOM: u8 = 12;

/// `expire.styles[].low_zooms`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LowZoomSchedule {
    /// Cron expression with seconds, in UTC: `sec min hour day month
    /// weekday`, e.g. `"0 0 3 * * *"` for 03:00 every day.
    pub cron: String,
    /// Lowest zoom refreshed (default 0).
    #[serde(default)]
    pub min_zoom: u8,
    /// Highest zoom refreshed (at most [`MAX_SCHEDULED_ZOOM`]).
    pub max_zoom: u8,
    /// `render` (default) or `touch`.
    #[serde(default)]
    pub action: ScheduledAction,
}

/// What a scheduled refresh does with each metatile in the cache.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduledAction {
    /// Re-render it through the style's renderer (its `renderd`, else
    /// tilepipe's own); touched instead when the style has none.
    #[default]
    Render,
    /// Mark it dirty, so mod_tile re-renders it when next viewed.
    Touch,
}

impl LowZoomSchedule {
    /// Checks the zoom range and parses the cron expression; messages name
    /// the key under `expire.styles[style]`.
    pub fn validate(&self, style: &str) -> Result<(), String> {
        if self.min_zoom > self.max_zoom || self.max_zoom > MAX_SCHEDULED_ZOOM {
            return Err(format!(
                "expire.styles[{style}].low_zooms: zooms {}..{} must be ordered and at most {MAX_SCHEDULED_ZOOM}",
                self.min_zoom, self.max_zoom
            ));
        }
        // Parse the expression now, so a typo fails at start-up.
        Job::new_async(self.cron.as_str(), |_, _| Box::pin(async {}))
            .map_err(|e| format!("expire.styles[{style}].low_zooms.cron {:?}: {e}", self.cron))?;
        Ok(())
    }
}

/// Runs one refresh of a style's low zooms now. Metatiles not in the cache
/// are left alone, as for edits.
pub async fn refresh(
    settings: &ExpireConfig,
    style: &StyleExpiry,
    schedule: &LowZoomSchedule,
    builtin: Option<&dyn LocalRenderer>,
) -> Result<ExpireSummary, actions::ExpireError> {
    let mut policy = ExpirePolicy::new(&style.name);
    policy.zoom_floor = 0;
    policy.min_zoom = schedule.min_zoom;
    policy.max_zoom = schedule.max_zoom;
    let store = TileStore::new(&style.tile_dir);
    let metatiles =
        (schedule.min_zoom..=schedule.max_zoom).flat_map(|z| crate::tile::metatiles_at(z, None));
    let target = match schedule.action {
        ScheduledAction::Render => settings.render_target(style, builtin),
        ScheduledAction::Touch => RenderTarget::Nobody,
    };
    if let RenderTarget::Nobody = target {
        if schedule.action == ScheduledAction::Render {
            warn!(style = %style.name, "no renderer for this style: touching the low zooms instead of re-rendering them");
        }
        policy.touch_from = Some(schedule.min_zoom);
    }
    target
        .expire(&store, &policy, metatiles, RenderReason::Scheduled)
        .await
}

/// Starts one job per style with a schedule; `None` when none has one.
/// Keep the scheduler alive as long as the jobs should run.
pub async fn start(
    settings: &ExpireConfig,
    builtin: Option<Arc<dyn LocalRenderer>>,
) -> Result<Option<JobScheduler>, JobSchedulerError> {
    let scheduled: Vec<(StyleExpiry, LowZoomSchedule)> = settings
        .styles
        .iter()
        .filter_map(|style| {
            style
                .low_zooms
                .clone()
                .map(|schedule| (style.clone(), schedule))
        })
        .collect();
    if scheduled.is_empty() {
        return Ok(None);
    }
    let scheduler = JobScheduler::new().await?;
    for (style, schedule) in scheduled {
        info!(style = %style.name, cron = %schedule.cron, zooms = ?(schedule.min_zoom..=schedule.max_zoom), "scheduled low-zoom refresh");
        let (settings, builtin) = (settings.clone(), builtin.clone());
        let job = Job::new_async(schedule.cron.clone().as_str(), move |_, _| {
            let (settings, style, schedule) = (settings.clone(), style.clone(), schedule.clone());
            let builtin = builtin.clone();
            Box::pin(async move {
                match refresh(&settings, &style, &schedule, builtin.as_deref()).await {
                    Ok(summary) => {
                        let t = summary.total();
                        info!(style = %style.name, rendered = t.rendered, touched = t.touched, missing = t.missing, "low-zoom refresh done");
                    }
                    Err(e) => warn!(style = %style.name, "low-zoom refresh failed: {e}"),
                }
            })
        })?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    Ok(Some(scheduler))
}
