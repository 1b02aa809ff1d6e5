//! The admin endpoints, open to `serve.admin_networks` only: a tile's
//! `/status` and `/dirty` (mod_tile's), and `/metrics`, which hands the
//! registry the render queue's and workers' figures in its own terms.

use super::client::{client_addr, forbidden, is_admin};
use super::tiles::{planet_time, render_key};
use super::{finish, text, Shared};
use crate::metrics::{RenderQueueReport, RenderWorkerReport, RendersDone};
use crate::render::queue::{Deferral, Priority, QueueStats};
use crate::render::worker::Timings;
use crate::serve::{AppState, ServedStyle};
use crate::tile::Tile;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Freshness of the tile's metatile, telling its path (hence admin only).
pub(super) async fn status(style: &ServedStyle, tile: Tile) -> Response<Body> {
    let path = crate::metatile::tile_path(&style.dir, tile);
    let meta = match tokio::fs::metadata(&path).await {
        Ok(meta) => meta,
        Err(_) => {
            return text(
                StatusCode::OK,
                format!("Tile is missing: no metatile at file://{path}\n"),
            )
        }
    };
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let atime = meta.accessed().unwrap_or(UNIX_EPOCH);
    let ctime = |t: SystemTime| {
        chrono::DateTime::<chrono::Utc>::from(t)
            .format("%a %b %e %H:%M:%S %Y UTC")
            .to_string()
    };
    let planet = planet_time(style).await;
    let body = if mtime < crate::metatile::touched_before() {
        format!(
            "Tile is due to be rendered (marked dirty; its last render time was replaced by the marker {}). Last accessed at {}. Stored in file://{path}\n",
            ctime(mtime),
            ctime(atime)
        )
    } else if mtime < planet {
        format!(
            "Tile is due to be rendered (older than the planet time {}). Last rendered at {}. Last accessed at {}. Stored in file://{path}\n",
            ctime(planet),
            ctime(mtime),
            ctime(atime)
        )
    } else {
        format!(
            "Tile is clean. Last rendered at {}. Last accessed at {}. Stored in file://{path}\n",
            ctime(mtime),
            ctime(atime)
        )
    };
    text(StatusCode::OK, body)
}

/// Touches the tile's metatile and queues it for a re-render.
pub(super) async fn dirty(state: &AppState, style: &ServedStyle, tile: Tile) -> Response<Body> {
    let store = crate::metatile::TileStore::new(&style.config.tile_dir);
    let name = style.config.name.clone();
    let touched = tokio::task::spawn_blocking(move || store.touch(&name, tile.metatile()))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(e) = touched {
        tracing::error!("cannot mark {tile} dirty: {e}");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot mark the tile dirty\n",
        );
    }
    if let Some(queue) = &state.queue {
        queue.submit(render_key(style, tile), Priority::Expired, false);
    }
    text(StatusCode::OK, "Tile submitted for rendering\n")
}

pub(super) async fn metrics(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response<Body> {
    if !is_admin(&state, client_addr(&state, peer.ip(), &headers)) {
        return finish(&state, forbidden());
    }
    let queue = state.queue.as_ref().map(|q| queue_report(&q.stats()));
    let workers = state.renderer.as_ref().map(|r| worker_report(&r.timings()));
    let mut body = state.metrics.render(queue.as_ref(), workers.as_ref());
    let dirs: Vec<std::path::PathBuf> = state
        .styles
        .iter()
        .map(|s| s.config.tile_dir.clone())
        .collect();
    // statvfs is quick, but a hung network filesystem must not hold an
    // async worker.
    if let Ok(filesystems) = tokio::task::spawn_blocking(move || tile_filesystems(dirs)).await {
        crate::metrics::render_tile_filesystems(&mut body, &filesystems);
    }
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    finish(&state, r)
}

/// Each distinct tile directory's filesystem; directories not created yet
/// (nothing rendered) are left out.
fn tile_filesystems(
    mut dirs: Vec<std::path::PathBuf>,
) -> Vec<crate::metrics::TileFilesystemReport> {
    dirs.sort();
    dirs.dedup();
    dirs.into_iter()
        .filter_map(|dir| {
            let usage = crate::render::cache_limit::FilesystemUsage::of(&dir).ok()?;
            Some(crate::metrics::TileFilesystemReport {
                path: dir.display().to_string(),
                size_bytes: usage.size_bytes,
                avail_bytes: usage.avail_bytes,
                used_ratio: usage.used_ratio(),
            })
        })
        .collect()
}

/// The render queue's figures in the metrics registry's terms: queued and
/// rejected for every priority, highest first; renders done in the
/// queue's (priority, zoom) order, lowest priority first.
fn queue_report(stats: &QueueStats) -> RenderQueueReport {
    RenderQueueReport {
        queued: per_priority(&stats.queued),
        in_progress: stats.in_progress,
        rejected: per_priority(&stats.rejected),
        done: stats
            .done
            .iter()
            .map(|(&(priority, zoom), counters)| RendersDone {
                priority: priority.name(),
                zoom,
                rendered: counters.rendered,
                failed: counters.failed,
                render_time: counters.render_time,
            })
            .collect(),
        background_paused: stats.background_paused,
        background_pauses: stats.background_pauses,
        background_paused_time: stats.background_paused_time,
        background_in_progress: stats.background_in_progress,
        background_max_workers: stats.background_max_workers,
        deferred: Deferral::ALL
            .iter()
            .map(|d| (d.name(), stats.deferred.get(d).copied().unwrap_or(0)))
            .collect(),
    }
}

/// A per-priority count for every priority, highest first; 0 for those
/// absent.
fn per_priority<N: Copy + Default>(counts: &BTreeMap<Priority, N>) -> Vec<(&'static str, N)> {
    Priority::ALL
        .iter()
        .map(|p| (p.name(), counts.get(p).copied().unwrap_or_default()))
        .collect()
}

/// The render workers' time accounting in the metrics registry's terms.
fn worker_report(timings: &Timings) -> RenderWorkerReport {
    RenderWorkerReport {
        mapnik: timings.mapnik,
        write: timings.write,
        busy: timings.busy,
        retried: timings.retried,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, TileOutcome};
    use crate::render::queue::Counters;
    use std::time::Duration;

    /// The whole exposition for a registry with every section filled, the
    /// render stage's figures converted here, and the uptime masked: a
    /// change to the output must show here.
    #[test]
    fn full_output_is_stable() {
        let m = Metrics::new();
        let osm = m.style("osm");
        osm.record(3, TileOutcome::Fresh);
        osm.record(3, TileOutcome::Stale);
        osm.record(31, TileOutcome::Throttled);
        m.style("we\"ird\\").record(0, TileOutcome::Error);
        m.record_status(200);
        m.record_status(503);
        m.record_status(999);
        m.record_latency(Duration::from_micros(300));
        m.record_latency(Duration::from_millis(20));
        m.record_latency(Duration::from_secs(11));
        m.set_replication_position(7, UNIX_EPOCH + Duration::from_secs(1_600_000_000));
        m.set_replication_lag(Duration::from_millis(2500));
        m.record_batch(UNIX_EPOCH + Duration::from_secs(1_700_000_000), 12);
        m.record_apply_failure();
        m.set_apply_failing(UNIX_EPOCH + Duration::from_secs(1_700_000_100), "boom");
        m.add_expired(40, 3);
        m.add_purged(5);
        m.add_purge_failure();
        m.set_purge_pending(2);
        m.set_render_node(
            "b",
            crate::metrics::RenderNodeFigures {
                backlog_batches: 2,
                backlog_metatiles: 17,
                replay_lag_bytes: None,
                oldest_pending_seconds: 4.5,
                delivered_metatiles: 0,
                up: false,
            },
        );
        m.set_render_node(
            "a",
            crate::metrics::RenderNodeFigures {
                replay_lag_bytes: Some(0),
                delivered_metatiles: 30,
                up: true,
                ..Default::default()
            },
        );
        let stats = QueueStats {
            queued: [(Priority::Expired, 2), (Priority::MissingWaited, 1)].into(),
            in_progress: 1,
            rejected: [(Priority::Background, 5)].into(),
            done: [
                (
                    (Priority::MissingWaited, 12),
                    Counters {
                        rendered: 4,
                        failed: 1,
                        render_time: Duration::from_millis(1500),
                    },
                ),
                (
                    (Priority::Background, 9),
                    Counters {
                        rendered: 2,
                        failed: 0,
                        render_time: Duration::from_micros(250),
                    },
                ),
            ]
            .into(),
            refused_waiters: 0,
            background_paused: true,
            background_pauses: 3,
            background_paused_time: Duration::from_millis(4500),
            background_in_progress: 1,
            background_max_workers: 3,
            deferred: [(Deferral::Workers, 7)].into(),
        };
        let timings = Timings {
            retried: 2,
            mapnik: Duration::from_millis(1200),
            write: Duration::from_millis(300),
            busy: Duration::from_secs(2),
            ..Timings::default()
        };
        let text = m.render(Some(&queue_report(&stats)), Some(&worker_report(&timings)));
        let text: String = text
            .lines()
            .map(|line| match line.strip_prefix("tilepipe_uptime_seconds ") {
                Some(_) => "tilepipe_uptime_seconds UPTIME\n".to_owned(),
                None => format!("{line}\n"),
            })
            .collect();
        let expected = FULL_OUTPUT.replace("VERSION", env!("CARGO_PKG_VERSION"));
        assert_eq!(text, expected);
    }

    const FULL_OUTPUT: &str = r#"# HELP tilepipe_uptime_seconds Seconds since the process started.
# TYPE tilepipe_uptime_seconds gauge
tilepipe_uptime_seconds UPTIME
# HELP tilepipe_build_info Always 1; the version is a label.
# TYPE tilepipe_build_info gauge
tilepipe_build_info{version="VERSION"} 1
# HELP tilepipe_tile_requests_total Tile requests by style, zoom and outcome.
# TYPE tilepipe_tile_requests_total counter
tilepipe_tile_requests_total{style="osm",zoom="3",outcome="fresh"} 1
tilepipe_tile_requests_total{style="osm",zoom="3",outcome="stale"} 1
tilepipe_tile_requests_total{style="osm",zoom="31+",outcome="throttled"} 1
tilepipe_tile_requests_total{style="we\"ird\\",zoom="0",outcome="error"} 1
# HELP tilepipe_http_responses_total HTTP responses by status (every endpoint).
# TYPE tilepipe_http_responses_total counter
tilepipe_http_responses_total{status="200"} 1
tilepipe_http_responses_total{status="204"} 0
tilepipe_http_responses_total{status="304"} 0
tilepipe_http_responses_total{status="400"} 0
tilepipe_http_responses_total{status="403"} 0
tilepipe_http_responses_total{status="404"} 0
tilepipe_http_responses_total{status="405"} 0
tilepipe_http_responses_total{status="429"} 0
tilepipe_http_responses_total{status="500"} 0
tilepipe_http_responses_total{status="503"} 1
tilepipe_http_responses_total{status="other"} 1
# HELP tilepipe_tile_response_seconds Time from request to response for tile requests.
# TYPE tilepipe_tile_response_seconds histogram
tilepipe_tile_response_seconds_bucket{le="0.0005"} 1
tilepipe_tile_response_seconds_bucket{le="0.001"} 1
tilepipe_tile_response_seconds_bucket{le="0.002"} 1
tilepipe_tile_response_seconds_bucket{le="0.005"} 1
tilepipe_tile_response_seconds_bucket{le="0.01"} 1
tilepipe_tile_response_seconds_bucket{le="0.025"} 2
tilepipe_tile_response_seconds_bucket{le="0.05"} 2
tilepipe_tile_response_seconds_bucket{le="0.1"} 2
tilepipe_tile_response_seconds_bucket{le="0.5"} 2
tilepipe_tile_response_seconds_bucket{le="1"} 2
tilepipe_tile_response_seconds_bucket{le="3"} 2
tilepipe_tile_response_seconds_bucket{le="10"} 2
tilepipe_tile_response_seconds_bucket{le="+Inf"} 3
tilepipe_tile_response_seconds_sum 11.020300
tilepipe_tile_response_seconds_count 3
# HELP tilepipe_render_queue_length Metatiles waiting in the render queue, by priority.
# TYPE tilepipe_render_queue_length gauge
tilepipe_render_queue_length{priority="missing"} 1
tilepipe_render_queue_length{priority="dirty"} 0
tilepipe_render_queue_length{priority="expired"} 2
tilepipe_render_queue_length{priority="background"} 0
# HELP tilepipe_render_in_progress Metatiles being rendered.
# TYPE tilepipe_render_in_progress gauge
tilepipe_render_in_progress 1
# HELP tilepipe_render_rejected_total Render requests turned away by a full queue, by priority.
# TYPE tilepipe_render_rejected_total counter
tilepipe_render_rejected_total{priority="missing"} 0
tilepipe_render_rejected_total{priority="dirty"} 0
tilepipe_render_rejected_total{priority="expired"} 0
tilepipe_render_rejected_total{priority="background"} 5
# HELP tilepipe_renders_total Metatile renders finished, by priority, zoom and result.
# TYPE tilepipe_renders_total counter
tilepipe_renders_total{priority="background",zoom="9",result="ok"} 2
tilepipe_renders_total{priority="background",zoom="9",result="failed"} 0
tilepipe_renders_total{priority="missing",zoom="12",result="ok"} 4
tilepipe_renders_total{priority="missing",zoom="12",result="failed"} 1
# HELP tilepipe_render_seconds_total Time spent rendering metatiles, by priority and zoom.
# TYPE tilepipe_render_seconds_total counter
tilepipe_render_seconds_total{priority="background",zoom="9"} 0.000250
tilepipe_render_seconds_total{priority="missing",zoom="12"} 1.500000
# HELP tilepipe_render_background_paused 1 while background and expiry renders are paused for a large batch.
# TYPE tilepipe_render_background_paused gauge
tilepipe_render_background_paused 1
# HELP tilepipe_render_background_pauses_total Pauses of background and expiry renders for large batches.
# TYPE tilepipe_render_background_pauses_total counter
tilepipe_render_background_pauses_total 3
# HELP tilepipe_render_background_paused_seconds_total Time background and expiry renders spent paused.
# TYPE tilepipe_render_background_paused_seconds_total counter
tilepipe_render_background_paused_seconds_total 4.500
# HELP tilepipe_render_background_in_progress Background and expiry renders in progress.
# TYPE tilepipe_render_background_in_progress gauge
tilepipe_render_background_in_progress 1
# HELP tilepipe_render_background_max_workers Most background and expiry renders at once (the other workers stay free for clients).
# TYPE tilepipe_render_background_max_workers gauge
tilepipe_render_background_max_workers 3
# HELP tilepipe_render_background_deferred_total Times a worker left background or expiry work queued, by reason (paused, workers, load).
# TYPE tilepipe_render_background_deferred_total counter
tilepipe_render_background_deferred_total{reason="paused"} 0
tilepipe_render_background_deferred_total{reason="workers"} 7
tilepipe_render_background_deferred_total{reason="load"} 0
# HELP tilepipe_replication_lag_seconds Age of the data at the applied replication position (absent before the first position).
# TYPE tilepipe_replication_lag_seconds gauge
tilepipe_replication_lag_seconds 2.500
# HELP tilepipe_replication_sequence Sequence number of the applied replication position.
# TYPE tilepipe_replication_sequence gauge
tilepipe_replication_sequence 7
# HELP tilepipe_last_apply_timestamp_seconds Unix time of the last successfully applied batch.
# TYPE tilepipe_last_apply_timestamp_seconds gauge
tilepipe_last_apply_timestamp_seconds 1700000000.000
# HELP tilepipe_apply_failing 1 while the pending batch keeps failing to apply (retried with backoff).
# TYPE tilepipe_apply_failing gauge
tilepipe_apply_failing 1
# HELP tilepipe_apply_failing_since_timestamp_seconds Unix time of the first failed attempt at the pending batch, while it fails.
# TYPE tilepipe_apply_failing_since_timestamp_seconds gauge
tilepipe_apply_failing_since_timestamp_seconds 1700000100.000
# HELP tilepipe_batches_applied_total Replication batches applied.
# TYPE tilepipe_batches_applied_total counter
tilepipe_batches_applied_total 1
# HELP tilepipe_apply_failures_total Failed apply attempts.
# TYPE tilepipe_apply_failures_total counter
tilepipe_apply_failures_total 1
# HELP tilepipe_changes_applied_total OSM objects changed by applied batches.
# TYPE tilepipe_changes_applied_total counter
tilepipe_changes_applied_total 12
# HELP tilepipe_expired_tiles_total Tiles at the expiry zoom expired by applied batches.
# TYPE tilepipe_expired_tiles_total counter
tilepipe_expired_tiles_total 40
# HELP tilepipe_expired_metatiles_total Metatiles acted on (render, touch, delete) after applied batches.
# TYPE tilepipe_expired_metatiles_total counter
tilepipe_expired_metatiles_total 3
# HELP tilepipe_purged_keys_total Surrogate keys (metatiles) purged from the caches in front, counted once per cache.
# TYPE tilepipe_purged_keys_total counter
tilepipe_purged_keys_total 5
# HELP tilepipe_purge_failures_total Purge requests that failed (retried with backoff).
# TYPE tilepipe_purge_failures_total counter
tilepipe_purge_failures_total 1
# HELP tilepipe_purge_pending_keys Surrogate keys waiting to be purged, over all caches in front.
# TYPE tilepipe_purge_pending_keys gauge
tilepipe_purge_pending_keys 2
# HELP tilepipe_node_backlog_batches Batches whose expired metatiles the render node has not received yet.
# TYPE tilepipe_node_backlog_batches gauge
tilepipe_node_backlog_batches{node="a"} 0
tilepipe_node_backlog_batches{node="b"} 2
# HELP tilepipe_node_backlog_metatiles Expired metatiles the render node has not received yet.
# TYPE tilepipe_node_backlog_metatiles gauge
tilepipe_node_backlog_metatiles{node="a"} 0
tilepipe_node_backlog_metatiles{node="b"} 17
# HELP tilepipe_node_replay_lag_bytes WAL bytes the render node's standby has yet to replay (absent while it cannot be asked).
# TYPE tilepipe_node_replay_lag_bytes gauge
tilepipe_node_replay_lag_bytes{node="a"} 0
# HELP tilepipe_node_oldest_pending_seconds Age of the oldest batch the render node has not received (0 when none).
# TYPE tilepipe_node_oldest_pending_seconds gauge
tilepipe_node_oldest_pending_seconds{node="a"} 0
tilepipe_node_oldest_pending_seconds{node="b"} 4.5
# HELP tilepipe_node_delivered_metatiles_total Expired metatiles delivered to the render node (cmdDirty).
# TYPE tilepipe_node_delivered_metatiles_total counter
tilepipe_node_delivered_metatiles_total{node="a"} 30
tilepipe_node_delivered_metatiles_total{node="b"} 0
# HELP tilepipe_node_up 1 when the last delivery round reached the node's standby and renderer.
# TYPE tilepipe_node_up gauge
tilepipe_node_up{node="a"} 1
tilepipe_node_up{node="b"} 0
# HELP tilepipe_render_mapnik_seconds_total Time inside Mapnik (drawing and encoding), all workers.
# TYPE tilepipe_render_mapnik_seconds_total counter
tilepipe_render_mapnik_seconds_total 1.200000
# HELP tilepipe_render_write_seconds_total Time building and writing metatile files, all workers.
# TYPE tilepipe_render_write_seconds_total counter
tilepipe_render_write_seconds_total 0.300000
# HELP tilepipe_render_busy_seconds_total Time workers spent on jobs, all included.
# TYPE tilepipe_render_busy_seconds_total counter
tilepipe_render_busy_seconds_total 2.000000
# HELP tilepipe_render_retries_total Renders retried once after a lost database connection.
# TYPE tilepipe_render_retries_total counter
tilepipe_render_retries_total 2
"#;
}
