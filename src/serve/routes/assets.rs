//! The map page: `/`, `/static/map.{js,css}` (built into the binary) and
//! Leaflet's files under `/static/leaflet/` (read from
//! `serve.leaflet_dir`).

use super::client::{client_addr, is_admin};
use super::{finish, text, Shared};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use std::net::SocketAddr;

fn asset(content_type: &'static str, body: impl Into<Body>) -> Response<Body> {
    let mut r = Response::new(body.into());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r
}

pub(super) async fn page(State(state): State<Shared>) -> Response<Body> {
    finish(
        &state,
        asset(
            "text/html; charset=utf-8",
            include_str!("../../../web/index.html"),
        ),
    )
}

pub(super) async fn map_js(State(state): State<Shared>) -> Response<Body> {
    finish(
        &state,
        asset(
            "text/javascript; charset=utf-8",
            include_str!("../../../web/map.js"),
        ),
    )
}

pub(super) async fn map_css(State(state): State<Shared>) -> Response<Body> {
    finish(
        &state,
        asset(
            "text/css; charset=utf-8",
            include_str!("../../../web/map.css"),
        ),
    )
}

/// Files of Leaflet's `dist` directory (the npm package), read from
/// `serve.leaflet_dir`.
pub(super) async fn leaflet(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(path): UrlPath<String>,
) -> Response<Body> {
    let safe = !path.is_empty()
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\\'));
    if !safe {
        return finish(&state, text(StatusCode::NOT_FOUND, "Not found\n"));
    }
    let file = state.settings.leaflet_dir.join(&path);
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("map") | Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let response = match tokio::fs::read(&file).await {
        Ok(bytes) => asset(content_type, bytes),
        // Where Leaflet is looked for is the server's business: only
        // admins are told the path.
        Err(_) if is_admin(&state, client_addr(&state, peer.ip(), &headers)) => text(
            StatusCode::NOT_FOUND,
            format!(
                "Not found: {} (install Leaflet with `npm install --prefix web`, or set serve.leaflet_dir)\n",
                file.display()
            ),
        ),
        Err(_) => text(StatusCode::NOT_FOUND, "Not found\n"),
    };
    finish(&state, response)
}
