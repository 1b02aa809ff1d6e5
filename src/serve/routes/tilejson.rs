//! TileJSON 3.0.0: `/<style>/tile.json` for one style, `/styles.json` for
//! all of them (the map page reads it). Tile URLs start at
//! `serve.public_url`, else at the request's Host.

use super::cors::add_cors;
use super::{finish, header_str, Shared};
use crate::serve::cache;
use crate::serve::{AppState, ServedStyle};
use crate::tile::MAX_ZOOM;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let public = state.settings.public_url.trim_end_matches('/');
    if !public.is_empty() {
        return public.to_string();
    }
    let host = header_str(headers, header::HOST).unwrap_or("localhost");
    format!("http://{host}")
}

/// TileJSON 3.0.0 of one style (plus `tile_size`, which the page uses).
fn tilejson_value(style: &ServedStyle, base: &str) -> serde_json::Value {
    let c = &style.config;
    let max_zoom = c.max_zoom.min(MAX_ZOOM);
    serde_json::json!({
        "tilejson": "3.0.0",
        "name": c.name,
        "description": c.description,
        "attribution": c.attribution,
        "scheme": "xyz",
        "tiles": [format!("{base}/{}/{{z}}/{{x}}/{{y}}.{}", c.name, c.format.extension())],
        "minzoom": c.min_zoom,
        "maxzoom": max_zoom,
        "bounds": [-180.0, -85.051_128_779_806_59, 180.0, 85.051_128_779_806_59],
        "center": [0.0, 0.0, c.min_zoom.max(2).min(max_zoom)],
        "tile_size": c.tile_size,
    })
}

/// A JSON answer with an ETag of its body, so clients revalidate cheaply.
fn json_response(state: &AppState, request: &HeaderMap, body: String) -> Response<Body> {
    let etag = cache::etag(body.as_bytes());
    let mut response = if header_str(request, header::IF_NONE_MATCH)
        .is_some_and(|tags| cache::none_match(tags, &etag))
    {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Body::from(body))
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    add_cors(state, request, &mut response);
    response
}

pub(super) fn tilejson(
    state: &AppState,
    style: &ServedStyle,
    headers: &HeaderMap,
) -> Response<Body> {
    let body = tilejson_value(style, &base_url(state, headers)).to_string();
    json_response(state, headers, body)
}

pub(super) async fn catalogue(State(state): State<Shared>, headers: HeaderMap) -> Response<Body> {
    let base = base_url(&state, &headers);
    let all: Vec<_> = state
        .styles
        .iter()
        .map(|s| tilejson_value(s, &base))
        .collect();
    let body = serde_json::Value::Array(all).to_string();
    finish(&state, json_response(&state, &headers, body))
}
