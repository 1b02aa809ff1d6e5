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
//!
//! Tile decisions (mod_tile's table, with the render queue's depth in
//! place of the load average):
//!
//! | state | answer |
//! |---|---|
//! | clean | 200 |
//! | dirty, queue not overloaded | re-render at "dirty, waited" priority, wait `request_timeout`; 200 new, else 200 stale |
//! | dirty, overloaded | queue at expiry priority, 200 stale |
//! | missing | render at "missing, waited" priority, wait `missing_request_timeout`; 200, else 404 |
//! | missing, overloaded or queue full | queue at expiry priority, 503 + Retry-After |
//! | outside the style's zooms or the world, wrong extension | 404 at once |
//! | not a tile URL below a known style | 400 |
//! | client over its token bucket | 429 + Retry-After |

use super::cache;
use super::throttle::Verdict;
use super::tiles::{self, Op, Read};
use super::{AppState, ServedStyle};
use crate::metrics::TileOutcome;
use crate::render::queue::{Outcome, Priority, RenderKey, Submitted};
use crate::tile::{Tile, MAX_ZOOM};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// First path segments the server uses itself; no style may take them.
pub const RESERVED: [&str; 6] = [
    "static",
    "metrics",
    "health",
    "styles.json",
    "favicon.ico",
    "",
];

type Shared = Arc<AppState>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/styles.json", get(catalogue))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/static/map.js", get(map_js))
        .route("/static/map.css", get(map_css))
        .route("/static/leaflet/{*path}", get(leaflet))
        .fallback(tile_request)
        .with_state(state)
}

/// The render queue's load, refreshed at most every 20 ms so that
/// overloaded moments do not lock the queue once per request.
#[derive(Default)]
pub(crate) struct LoadSnapshot {
    /// Milliseconds since the epoch of the last refresh.
    at: AtomicU64,
    /// Metatiles queued for waiting clients (missing + dirty priorities).
    waited: AtomicU64,
}

impl LoadSnapshot {
    fn waited(&self, state: &AppState) -> u64 {
        let now = now_ms();
        if now.saturating_sub(self.at.load(Relaxed)) >= 20 {
            if let Some(queue) = &state.queue {
                let stats = queue.stats();
                let waited = [Priority::MissingWaited, Priority::DirtyWaited]
                    .iter()
                    .map(|p| stats.queued.get(p).copied().unwrap_or(0) as u64)
                    .sum();
                self.waited.store(waited, Relaxed);
            }
            self.at.store(now, Relaxed);
        }
        self.waited.load(Relaxed)
    }
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

fn finish(state: &AppState, response: Response<Body>) -> Response<Body> {
    state.metrics.record_status(response.status().as_u16());
    response
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's IPv4 peers) as
/// IPv4, so that IPv4 networks match them.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_networks(networks: &[ipnet::IpNet], ip: IpAddr) -> bool {
    networks.iter().any(|net| net.contains(&ip))
}

/// `client` is the address from [`client_addr`].
fn is_admin(state: &AppState, client: IpAddr) -> bool {
    in_networks(&state.admin, canonical(client))
}

/// Every `X-Forwarded-For` entry, over all its header lines in order
/// (RFC 9110 5.3: repeated lines are one comma-separated list). A line
/// that is not text reads as one unparsable entry.
fn forwarded_entries(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("?").split(','))
        .map(str::trim)
}

/// An `X-Forwarded-For` entry: an address, or one with a port as some
/// proxies write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

/// The client of a request: its TCP peer, unless the peer is one of
/// `serve.trusted_proxies`; then the rightmost `X-Forwarded-For` entry
/// that is not a trusted proxy (nginx's realip module with
/// `real_ip_recursive on`). Entries left of the first untrusted one are
/// the client's own claims and are not believed. An unparsable entry ends
/// the walk at the last trusted hop.
pub(crate) fn client_addr(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = canonical(peer);
    if !in_networks(&state.trusted, peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_entries(headers).rev() {
        let Some(ip) = parse_forwarded(entry) else {
            break;
        };
        client = canonical(ip);
        if !in_networks(&state.trusted, client) {
            break;
        }
    }
    client
}

fn forbidden() -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        "Forbidden: this endpoint is open to serve.admin_networks only\n",
    )
}

/// The client address throttling counts: with trusted proxies the
/// established `client`; without, the peer or the `X-Forwarded-For` entry
/// `throttle.x_forwarded_for` picks (mod_tile's
/// `ModTileEnableTileThrottlingXForward`, unverified).
fn throttle_ip(state: &AppState, client: IpAddr, headers: &HeaderMap) -> IpAddr {
    use super::config::ForwardedFor;
    if !state.trusted.is_empty() {
        return client;
    }
    let mut entries = forwarded_entries(headers).filter(|s| !s.is_empty());
    let entry = match state.settings.throttle.x_forwarded_for {
        ForwardedFor::None => None,
        ForwardedFor::First => entries.next(),
        ForwardedFor::Last => entries.next_back(),
    };
    entry.and_then(parse_forwarded).unwrap_or(client)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Access-Control-Allow-Origin` for `origin`, if the policy allows it.
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

fn add_cors(state: &AppState, request: &HeaderMap, response: &mut Response<Body>) {
    if let Some((allow, vary)) = cors_origin(state, request) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if vary {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

fn preflight(state: &AppState, request: &HeaderMap) -> Response<Body> {
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

/// Everything that is not a fixed route: tiles, their `/status` and
/// `/dirty`, and TileJSON.
async fn tile_request(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response<Body> {
    use tracing::Instrument;
    let client = client_addr(&state, peer.ip(), request.headers());
    let span = tracing::info_span!("request", %client);
    tile_request_from(state, client, request)
        .instrument(span)
        .await
}

async fn tile_request_from(
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
        let response = tilejson(&state, style, &parts.headers);
        return finish(&state, response);
    }
    let Some(url) = tiles::parse_tile_url(rest) else {
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
            let response = tile(&state, style, url, client, &parts.headers).await;
            if url.op == Op::Tile {
                state.metrics.record_latency(started.elapsed());
            }
            response
        }
        Method::OPTIONS => preflight(&state, &parts.headers),
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

/// The tile of a valid URL, or 404 when it is outside the style.
fn in_range(style: &ServedStyle, url: &tiles::TileUrl<'_>) -> Option<Tile> {
    let config = &style.config;
    if url.ext != config.format.extension()
        || url.z < u64::from(config.min_zoom)
        || url.z > u64::from(config.max_zoom.min(MAX_ZOOM))
    {
        return None;
    }
    let side = 1u64 << url.z;
    if url.x >= side || url.y >= side {
        return None;
    }
    Tile::new(url.z as u8, url.x as u32, url.y as u32).ok()
}

/// How long a looked-up planet time is trusted (mod_tile stats the file
/// on every request; touching it is a rare, manual act).
const PLANET_TTL_MS: u64 = 1000;
/// Cached "no planet-import-complete file".
const NO_PLANET_FILE: i64 = i64::MIN;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Freshness as mod_tile decides it: a metatile is dirty when it is older
/// than the planet time, the mtime of `<style>/planet-import-complete`,
/// else of `planet-import-complete`, else now minus 3 days. Looked up at
/// most once a second per style.
async fn planet_time(style: &ServedStyle) -> SystemTime {
    let now = now_ms();
    let checked = style.planet_checked_ms.load(Relaxed);
    let nanos = if checked != 0 && now.saturating_sub(checked) < PLANET_TTL_MS {
        style.planet_nanos.load(Relaxed)
    } else {
        // tokio::fs: a stat on slow storage must not hold a worker thread.
        let mut found = None;
        for file in &style.planet_files {
            if let Ok(modified) = tokio::fs::metadata(file).await.and_then(|m| m.modified()) {
                found = Some(modified);
                break;
            }
        }
        let nanos = found.map_or(NO_PLANET_FILE, |t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        });
        style.planet_nanos.store(nanos, Relaxed);
        style.planet_checked_ms.store(now.max(1), Relaxed);
        nanos
    };
    match nanos {
        NO_PLANET_FILE => SystemTime::now() - crate::metatile::DEFAULT_PLANET_AGE,
        n if n >= 0 => UNIX_EPOCH + Duration::from_nanos(n as u64),
        n => UNIX_EPOCH - Duration::from_nanos(n.unsigned_abs()),
    }
}

/// The tile from its metatile, on the blocking pool: the `stat` and
/// reads wait on storage, which may be slow (NFS, a busy disk) and must
/// not stall the async workers that answer everything else.
#[allow(clippy::result_large_err)]
async fn read(state: &AppState, path: &str, tile: Tile) -> Result<Read, Response<Body>> {
    let cache = state.tile_cache.clone();
    let owned = path.to_string();
    let read = tokio::task::spawn_blocking(move || cache.read(&owned, tile))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    // The path and error go to the log only; the body tells no paths.
    read.map_err(|e| {
        tracing::error!(path, "cannot read metatile: {e}");
        text(StatusCode::INTERNAL_SERVER_ERROR, "Cannot read the tile\n")
    })
}

async fn tile(
    state: &AppState,
    style: &ServedStyle,
    url: tiles::TileUrl<'_>,
    client: IpAddr,
    headers: &HeaderMap,
) -> Response<Body> {
    let zoom = url.z.min(u64::from(u32::MAX)) as u32;
    let Some(tile) = in_range(style, &url) else {
        style.counters.record(zoom, TileOutcome::OutOfRange);
        return text(StatusCode::NOT_FOUND, "No such tile in this style\n");
    };
    match url.op {
        Op::Tile => {}
        Op::Status | Op::Dirty if !is_admin(state, client) => return forbidden(),
        Op::Status => return status(style, tile).await,
        Op::Dirty => return dirty(state, style, tile).await,
    }
    let path = crate::metatile::tile_path(&style.dir, tile);
    let found = match read(state, &path, tile).await {
        Ok(found) => found,
        Err(response) => {
            style.counters.record(zoom, TileOutcome::Error);
            return response;
        }
    };
    if let Some(throttle) = &state.throttle {
        let render = matches!(found, Read::Missing);
        if let Verdict::Refused { retry_after } =
            throttle.check(throttle_ip(state, client, headers), render)
        {
            style.counters.record(zoom, TileOutcome::Throttled);
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests from this client; see Retry-After\n",
            );
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
    }
    match found {
        Read::Found { mtime, bytes, gzip } => {
            if mtime >= planet_time(style).await {
                let served = TileOutcome::Fresh;
                return respond(state, style, headers, tile, mtime, bytes, gzip, served);
            }
            let (mtime, bytes, gzip, served) = match rerender_dirty(state, style, &path, tile).await
            {
                Some(Read::Found { mtime, bytes, gzip }) => {
                    (mtime, bytes, gzip, TileOutcome::Rendered)
                }
                _ => (mtime, bytes, gzip, TileOutcome::Stale),
            };
            respond(state, style, headers, tile, mtime, bytes, gzip, served)
        }
        Read::Missing => render_missing(state, style, headers, &path, tile).await,
    }
}

fn key(style: &ServedStyle, tile: Tile) -> RenderKey {
    RenderKey {
        style: style.config.name.clone(),
        metatile: tile.metatile(),
    }
}

/// Waits for a render of `tile`'s metatile at `priority`; the re-read
/// tile on success.
async fn wait_render(
    state: &AppState,
    style: &ServedStyle,
    path: &str,
    tile: Tile,
    priority: Priority,
    timeout: Duration,
) -> Result<Read, Outcome> {
    let queue = state.queue.as_ref().ok_or(Outcome::Shutdown)?;
    let Ok(_permit) = state.waiting.try_acquire() else {
        queue.submit(key(style, tile), priority, false);
        return Err(Outcome::Rejected);
    };
    let (submitted, receiver) = queue.submit(key(style, tile), priority, true);
    if submitted == Submitted::Rejected {
        return Err(Outcome::Rejected);
    }
    let receiver = receiver.expect("asked to wait");
    match tokio::time::timeout(timeout, receiver).await {
        Ok(Ok(Outcome::Rendered)) => read(state, path, tile)
            .await
            .map_err(|_| Outcome::Failed("the rendered metatile cannot be read".into())),
        Ok(Ok(other)) => Err(other),
        Ok(Err(_)) => Err(Outcome::Shutdown),
        // Not in time: the render goes on and later requests find it.
        Err(_) => Err(Outcome::Failed("timeout".into())),
    }
}

/// A fresh copy of a dirty tile if it can be had within the timeout.
async fn rerender_dirty(
    state: &AppState,
    style: &ServedStyle,
    path: &str,
    tile: Tile,
) -> Option<Read> {
    let queue = state.queue.as_ref()?;
    if state.load.waited(state) >= state.settings.max_queued_dirty as u64 {
        queue.submit(key(style, tile), Priority::Expired, false);
        return None;
    }
    let timeout = state.settings.request_timeout();
    match wait_render(state, style, path, tile, Priority::DirtyWaited, timeout).await {
        Ok(read @ Read::Found { .. }) => Some(read),
        Ok(Read::Missing) => None,
        Err(outcome) => {
            tracing::debug!(style = style.config.name, %tile, ?outcome, "serving a dirty tile stale");
            None
        }
    }
}

async fn render_missing(
    state: &AppState,
    style: &ServedStyle,
    headers: &HeaderMap,
    path: &str,
    tile: Tile,
) -> Response<Body> {
    let zoom = u32::from(tile.z);
    let Some(queue) = &state.queue else {
        style.counters.record(zoom, TileOutcome::NotRendered);
        return not_rendered("No such tile, and no renderer\n");
    };
    if state.load.waited(state) >= state.settings.max_queued_missing as u64 {
        queue.submit(key(style, tile), Priority::Expired, false);
        style.counters.record(zoom, TileOutcome::Overloaded);
        return overloaded();
    }
    let timeout = state.settings.missing_request_timeout();
    match wait_render(state, style, path, tile, Priority::MissingWaited, timeout).await {
        Ok(Read::Found { mtime, bytes, gzip }) => {
            let served = TileOutcome::Rendered;
            respond(state, style, headers, tile, mtime, bytes, gzip, served)
        }
        Ok(Read::Missing) => {
            style.counters.record(zoom, TileOutcome::NotRendered);
            not_rendered("Tile was rendered but cannot be read\n")
        }
        Err(Outcome::Rejected | Outcome::Shutdown) => {
            style.counters.record(zoom, TileOutcome::Overloaded);
            overloaded()
        }
        Err(Outcome::Failed(message)) => {
            if message != "timeout" {
                tracing::warn!(style = style.config.name, %tile, "render failed: {message}");
            }
            style.counters.record(zoom, TileOutcome::NotRendered);
            not_rendered("Missing tile was not rendered in time\n")
        }
        Err(Outcome::Rendered) => unreachable!("a rendered outcome is Ok"),
    }
}

fn not_rendered(message: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::NOT_FOUND, message);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn overloaded() -> Response<Body> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "The renderer is overloaded; the tile is queued, try again later\n",
    );
    let headers = r.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn http_date(time: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(time)).expect("an HTTP date is a header value")
}

/// The 200 or 304 for a tile that exists (or 404 for an empty slot);
/// `served` is how a 200 is counted: fresh, stale (dirty cache headers)
/// or rendered.
#[allow(clippy::too_many_arguments)]
fn respond(
    state: &AppState,
    style: &ServedStyle,
    request: &HeaderMap,
    tile: Tile,
    mtime: SystemTime,
    bytes: Option<bytes::Bytes>,
    gzip: bool,
    served: TileOutcome,
) -> Response<Body> {
    let dirty = served == TileOutcome::Stale;
    let zoom = u32::from(tile.z);
    let Some(bytes) = bytes else {
        style.counters.record(zoom, TileOutcome::Empty);
        return text(StatusCode::NOT_FOUND, "No such tile in this metatile\n");
    };
    let touched = mtime < crate::metatile::touched_before();
    let now = SystemTime::now();
    let age = now.duration_since(mtime).unwrap_or_default();
    let host = header_str(request, header::HOST);
    let max_age = cache::max_age(
        &state.settings.cache,
        zoom,
        dirty,
        age,
        host,
        rand::random::<f64>(),
    );
    let etag = cache::etag(&bytes);
    // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2). A
    // touched metatile's mtime is a marker, not a modification time.
    let not_modified = match header_str(request, header::IF_NONE_MATCH) {
        Some(tags) => cache::none_match(tags, &etag),
        None => {
            !touched
                && header_str(request, header::IF_MODIFIED_SINCE)
                    .is_some_and(|since| cache::not_modified_since(since, mtime))
        }
    };
    let mut response = if not_modified {
        style.counters.record(zoom, TileOutcome::NotModified);
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        style.counters.record(zoom, served);
        let mut r = Response::new(Body::from(bytes));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(style.config.format.mime_type()),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a header value"),
    );
    if !touched {
        headers.insert(header::LAST_MODIFIED, http_date(mtime));
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("max-age={max_age}")).expect("ascii"),
    );
    headers.insert(
        header::EXPIRES,
        http_date(now + Duration::from_secs(max_age)),
    );
    add_cors(state, request, &mut response);
    response
}

/// Admin only: tells the metatile's path.
async fn status(style: &ServedStyle, tile: Tile) -> Response<Body> {
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

async fn dirty(state: &AppState, style: &ServedStyle, tile: Tile) -> Response<Body> {
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
        queue.submit(key(style, tile), Priority::Expired, false);
    }
    text(StatusCode::OK, "Tile submitted for rendering\n")
}

// ---- TileJSON, page, metrics, health ----

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let public = state.settings.public_url.trim_end_matches('/');
    if !public.is_empty() {
        return public.to_string();
    }
    let host = header_str(headers, header::HOST).unwrap_or("localhost");
    format!("http://{host}")
}

/// TileJSON 3.0.0 of one style (plus `tile_size`, which the page uses).
pub(crate) fn tilejson_value(style: &ServedStyle, base: &str) -> serde_json::Value {
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

fn tilejson(state: &AppState, style: &ServedStyle, headers: &HeaderMap) -> Response<Body> {
    let body = tilejson_value(style, &base_url(state, headers)).to_string();
    json_response(state, headers, body)
}

async fn catalogue(State(state): State<Shared>, headers: HeaderMap) -> Response<Body> {
    let base = base_url(&state, &headers);
    let all: Vec<_> = state
        .styles
        .iter()
        .map(|s| tilejson_value(s, &base))
        .collect();
    let body = serde_json::Value::Array(all).to_string();
    finish(&state, json_response(&state, &headers, body))
}

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

async fn page(State(state): State<Shared>) -> Response<Body> {
    finish(
        &state,
        asset(
            "text/html; charset=utf-8",
            include_str!("../../web/index.html"),
        ),
    )
}

async fn map_js(State(state): State<Shared>) -> Response<Body> {
    finish(
        &state,
        asset(
            "text/javascript; charset=utf-8",
            include_str!("../../web/map.js"),
        ),
    )
}

async fn map_css(State(state): State<Shared>) -> Response<Body> {
    finish(
        &state,
        asset("text/css; charset=utf-8", include_str!("../../web/map.css")),
    )
}

/// Files of Leaflet's `dist` directory (the npm package), read from
/// `serve.leaflet_dir`.
async fn leaflet(
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

async fn metrics(
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

async fn health(State(state): State<Shared>) -> Response<Body> {
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
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = if unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    finish(&state, r)
}
