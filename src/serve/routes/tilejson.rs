//! TileJSON 3.0.0: `/<style>/tile.json` for one style, `/styles.json` for
//! all of them (the map page reads it). Tile URLs start at
//! `serve.public_url`, else at the request's Host.

use super::cors::add_cors;
use super::{finish, header_str, Shared};
use crate::apply::settings::DataBounds;
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

/// The view a client opens on when it has none of its own: a 1024 × 768
/// window, about a laptop browser's map area.
const DEFAULT_VIEW_PIXELS: (f64, f64) = (1024.0, 768.0);

/// TileJSON 3.0.0 of one style (plus `tile_size`, which the page uses).
/// `bounds` and `center` are the data's ([`crate::serve::DataBoundsHandle`]):
/// the centre's zoom fits the box in [`DEFAULT_VIEW_PIXELS`], within the
/// style's zoom range; without data bounds, the whole world.
fn tilejson_value(style: &ServedStyle, base: &str, data: Option<DataBounds>) -> serde_json::Value {
    let c = &style.config;
    let max_zoom = c.max_zoom.min(MAX_ZOOM);
    let (bounds, center) = match data {
        Some(data) => {
            let b = data.clamped_to_mercator();
            let (lon, lat) = b.center();
            let (width, height) = DEFAULT_VIEW_PIXELS;
            let zoom = b
                .fitting_zoom(width, height)
                .min(u32::from(max_zoom))
                .max(u32::from(c.min_zoom));
            (
                [b.min_lon, b.min_lat, b.max_lon, b.max_lat],
                serde_json::json!([lon, lat, zoom]),
            )
        }
        None => (
            [-180.0, -85.051_128_779_806_59, 180.0, 85.051_128_779_806_59],
            serde_json::json!([0.0, 0.0, c.min_zoom.max(2).min(max_zoom)]),
        ),
    };
    serde_json::json!({
        "tilejson": "3.0.0",
        "name": c.name,
        "description": c.description,
        "attribution": c.attribution,
        "scheme": "xyz",
        "tiles": [format!("{base}/{}/{{z}}/{{x}}/{{y}}.{}", c.name, c.format.extension())],
        "minzoom": c.min_zoom,
        "maxzoom": max_zoom,
        "bounds": bounds,
        "center": center,
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
    let body =
        tilejson_value(style, &base_url(state, headers), state.data_bounds.get()).to_string();
    json_response(state, headers, body)
}

pub(super) async fn catalogue(State(state): State<Shared>, headers: HeaderMap) -> Response<Body> {
    let base = base_url(&state, &headers);
    let data = state.data_bounds.get();
    let all: Vec<_> = state
        .styles
        .iter()
        .map(|s| tilejson_value(s, &base, data))
        .collect();
    let body = serde_json::Value::Array(all).to_string();
    finish(&state, json_response(&state, &headers, body))
}
