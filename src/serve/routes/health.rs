//! `/health`: 200 while replication keeps up and applying works, else 503;
//! the JSON body says why.

use super::{finish, AppState, Shared};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Response, StatusCode};

pub(super) async fn health(State(state): State<Shared>) -> Response<Body> {
    let lag = state.metrics.replication_lag();
    let bound = state.settings.max_replication_lag_secs;
    let lagging = bound > 0 && lag.is_some_and(|l| l.as_secs_f64() > bound as f64);
    // A batch that keeps failing (the daemon retries it with backoff) is
    // unhealthy at once, whatever the lag bound.
    let failing = state.metrics.apply_failing();
    let unhealthy = lagging || failing.is_some();
    let rfc3339 = |t: std::time::SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
    let body = serde_json::json!({
        "status": if unhealthy { "unhealthy" } else { "ok" },
        "apply_error": failing.as_ref().map(|(_, error)| error),
        "apply_failing_since": failing.as_ref().map(|(since, _)| rfc3339(*since)),
        "replication_lag_seconds": lag.map(|l| l.as_secs_f64()),
        "max_replication_lag_seconds": bound,
        "replication_sequence": state.metrics.replication_sequence(),
        "last_apply": state.metrics.last_apply().map(rfc3339),
        "renderer": state.queue.is_some(),
    });
    let status = if unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    live_json(&state, status, &body)
}

/// A JSON answer about the process right now: never cached.
pub(super) fn live_json(
    state: &AppState,
    status: StatusCode,
    body: &serde_json::Value,
) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    finish(state, r)
}
