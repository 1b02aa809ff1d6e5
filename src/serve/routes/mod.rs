//! The endpoints.
//!
//! | path | what |
//! |---|---|
//! | `/<style>/<z>/<x>/<y>.<ext>` | a tile (GET, HEAD; OPTIONS for CORS) |
//! | `/<style>/<z>/<x>/<y>.<ext>/status` | admin: freshness of its metatile |
//! | `/<style>/<z>/<x>/<y>.<ext>/dirty` | admin: mark dirty, queue a re-render |
//! | `/<style>/tile.json` (`tile-layer.json`) | TileJSON 3.0.0 |
//! | `/styles.json` | every style's TileJSON |
//! | `/` | the map page (Leaflet) |
//! | `/metrics` | admin: Prometheus text |
//! | `/health` | 200, or 503 by replication lag or a failing apply |
//! | `/status.json` | the pipeline at a glance, for the map page's panel |
//!
//! This module assembles the router and dispatches what is below a style;
//! the handlers live by concern, in private modules:
//!
//! - `tiles`: tile decisions (fresh, dirty, missing; waiting for renders);
//! - `admin`: `/status`, `/dirty`, `/metrics`;
//! - `tilejson`: `tile.json` and `/styles.json`;
//! - `assets`: the map page and Leaflet's files;
//! - `health`: the `/health` endpoint;
//! - `status`: the `/status.json` endpoint;
//! - `cors`: `Access-Control-*` headers and preflights;
//! - `client`: who the client is (trusted proxies) and whether it is an
//!   admin.

mod admin;
mod assets;
mod client;
mod cors;
mod health;
mod status;
mod tilejson;
mod tiles;

use super::tiles::{parse_tile_url, Op};
use super::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use client::client_addr;
pub(crate) use tiles::LoadSnapshot;

/// First path segments the server uses itself; no style may take them.
pub const RESERVED: [&str; 7] = [
    "static",
    "metrics",
    "health",
    "styles.json",
    "status.json",
    "favicon.ico",
    "",
];

type Shared = Arc<AppState>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(assets::page))
        .route("/styles.json", get(tilejson::catalogue))
        .route("/metrics", get(admin::metrics))
        .route("/health", get(health::health))
        .route("/status.json", get(status::status))
        .route("/static/map.js", get(assets::map_js))
        .route("/static/map.css", get(assets::map_css))
        .route("/static/leaflet/{*path}", get(assets::leaflet))
        .fallback(style_request)
        .with_state(state)
}

fn text(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Counts the response's status; every handler's answer goes through here.
fn finish(state: &AppState, response: Response<Body>) -> Response<Body> {
    state.metrics.record_status(response.status().as_u16());
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Everything that is not a fixed route: tiles, their `/status` and
/// `/dirty`, and TileJSON.
async fn style_request(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response<Body> {
    use tracing::Instrument;
    let client = client_addr(&state, peer.ip(), request.headers());
    let span = tracing::info_span!("request", %client);
    style_request_from(state, client, request)
        .instrument(span)
        .await
}

async fn style_request_from(
    state: Shared,
    client: IpAddr,
    request: Request<Body>,
) -> Response<Body> {
    let started = Instant::now();
    let (parts, _) = request.into_parts();
    let path = parts.uri.path();
    let Some((style_name, rest)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return finish(&state, text(StatusCode::NOT_FOUND, "Not found\n"));
    };
    let Some(&index) = state.by_name.get(style_name) else {
        return finish(&state, text(StatusCode::NOT_FOUND, "No such style\n"));
    };
    let style = &state.styles[index];
    if rest == "tile.json" || rest == "tile-layer.json" {
        let response = tilejson::tilejson(&state, style, &parts.headers);
        return finish(&state, response);
    }
    let Some(url) = parse_tile_url(rest) else {
        return finish(
            &state,
            text(
                StatusCode::BAD_REQUEST,
                "Bad request: tile URLs are /<style>/<z>/<x>/<y>.<ext>\n",
            ),
        );
    };
    let response = match parts.method {
        Method::GET | Method::HEAD => {
            let response = tiles::tile(&state, style, url, client, &parts.headers).await;
            if url.op == Op::Tile {
                state.metrics.record_latency(started.elapsed());
            }
            response
        }
        Method::OPTIONS => cors::preflight(&state, &parts.headers),
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            r
        }
    };
    finish(&state, response)
}
