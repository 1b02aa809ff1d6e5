//! `/status.json`: the pipeline at a glance (replication, the last batch,
//! the render queue) as JSON, for the map page's status panel, so a person
//! can watch it move without reading Prometheus text. Open to everyone,
//! like `/health`: counts and times only, no paths or errors.

use super::Shared;
use crate::render::queue::Priority;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode};

pub(super) async fn status(State(state): State<Shared>) -> Response<Body> {
    let metrics = &state.metrics;
    let rfc3339 = |t: std::time::SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
    let last_batch = metrics.last_apply().map(|applied_at| {
        serde_json::json!({
            "applied_at": rfc3339(applied_at),
            "age_seconds": applied_at.elapsed().map_or(0.0, |d| d.as_secs_f64()),
            "changes": metrics.last_batch_changes(),
        })
    });
    let render = state.queue.as_ref().map(|queue| {
        let stats = queue.stats();
        let queued: serde_json::Map<String, serde_json::Value> = Priority::ALL
            .iter()
            .map(|p| {
                let n = stats.queued.get(p).copied().unwrap_or(0);
                (p.name().to_owned(), n.into())
            })
            .collect();
        let rendered: u64 = stats.done.values().map(|c| c.rendered).sum();
        let failed: u64 = stats.done.values().map(|c| c.failed).sum();
        serde_json::json!({
            "queued": queued,
            "queued_total": stats.queued.values().sum::<usize>(),
            "in_progress": stats.in_progress,
            "rendered_total": rendered,
            "failed_total": failed,
            "background_paused": stats.background_paused,
        })
    });
    let body = serde_json::json!({
        "replication": {
            "sequence": metrics.replication_sequence(),
            "lag_seconds": metrics.replication_lag().map(|l| l.as_secs_f64()),
            "apply_failing": metrics.apply_failing().is_some(),
        },
        "last_batch": last_batch,
        "render": render,
    });
    super::health::live_json(&state, StatusCode::OK, &body)
}
