//! The admin endpoints, open to `serve.admin_networks` only: a tile's
//! `/status` and `/dirty` (mod_tile's), and `/metrics`.

use super::client::{client_addr, forbidden, is_admin};
use super::tiles::{planet_time, render_key};
use super::{finish, text, Shared};
use crate::render::queue::Priority;
use crate::serve::{AppState, ServedStyle};
use crate::tile::Tile;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
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
    let stats = state.queue.as_ref().map(|q| q.stats());
    let mut body = state.metrics.render(stats.as_ref());
    if let Some(renderer) = &state.renderer {
        crate::metrics::render_timings(&mut body, &renderer.timings());
    }
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    finish(&state, r)
}
