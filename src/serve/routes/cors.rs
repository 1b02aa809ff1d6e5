//! CORS: `Access-Control-Allow-Origin` on answers, and OPTIONS preflights,
//! by `serve.cors_origins` (`*`, or a list of origins echoed back with
//! `Vary: Origin`).

use super::AppState;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};

/// `Access-Control-Allow-Origin` for the request's origin, if the policy
/// allows it, and whether the answer varies by origin.
fn cors_origin(state: &AppState, headers: &HeaderMap) -> Option<(HeaderValue, bool)> {
    let origins = &state.settings.cors_origins;
    if origins.is_empty() {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    if origins.iter().any(|o| o == "*") {
        return Some((HeaderValue::from_static("*"), false));
    }
    let text = origin.to_str().ok()?;
    origins
        .iter()
        .any(|o| o == text)
        .then(|| (origin.clone(), true))
}

pub(super) fn add_cors(state: &AppState, request: &HeaderMap, response: &mut Response<Body>) {
    if let Some((allow, vary)) = cors_origin(state, request) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if vary {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

pub(super) fn preflight(state: &AppState, request: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    if cors_origin(state, request).is_none() {
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    }
    add_cors(state, request, &mut response);
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("604800"),
    );
    response
}
