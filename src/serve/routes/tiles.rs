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
//!
//! A request past the URL checks is a [`TileRequest`]; how a wait for a
//! render ends is a [`Waited`].

use super::admin;
use super::client::{forbidden, is_admin, throttle_ip};
use super::cors::add_cors;
use super::{header_str, text};
use crate::metrics::TileOutcome;
use crate::render::queue::{Outcome, Priority, RenderKey, Submitted};
use crate::serve::cache;
use crate::serve::throttle::Verdict;
use crate::serve::tiles::{Found, Op, Read, TileUrl};
use crate::serve::{AppState, ServedStyle};
use crate::tile::{Tile, MAX_ZOOM};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The tile of a valid URL, or 404 when it is outside the style.
fn in_range(style: &ServedStyle, url: &TileUrl<'_>) -> Option<Tile> {
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
pub(super) async fn planet_time(style: &ServedStyle) -> SystemTime {
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

pub(super) async fn tile(
    state: &AppState,
    style: &ServedStyle,
    url: TileUrl<'_>,
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
        Op::Status => return admin::status(style, tile).await,
        Op::Dirty => return admin::dirty(state, style, tile).await,
    }
    let path = crate::metatile::tile_path(&style.dir, tile);
    let read = match read(state, &path, tile).await {
        Ok(read) => read,
        Err(response) => {
            style.counters.record(zoom, TileOutcome::Error);
            return response;
        }
    };
    if let Some(throttle) = &state.throttle {
        let render = matches!(read, Read::Missing);
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
    let request = TileRequest {
        state,
        style,
        headers,
        path,
        tile,
    };
    let found = match read {
        Read::Found(found) => found,
        Read::Missing => return request.render_missing().await,
    };
    if found.mtime >= planet_time(style).await {
        return request.respond(found, TileOutcome::Fresh);
    }
    match request.rerender_dirty().await {
        Some(rendered) => request.respond(rendered, TileOutcome::Rendered),
        None => request.respond(found, TileOutcome::Stale),
    }
}

/// The queue's key for `tile`'s metatile.
pub(super) fn render_key(style: &ServedStyle, tile: Tile) -> RenderKey {
    RenderKey {
        style: style.config.name.clone(),
        metatile: tile.metatile(),
    }
}

/// How waiting for a render of a metatile ended.
#[derive(Debug)]
enum Waited {
    /// Rendered; the tile as read again afterwards.
    Rendered(Read),
    /// Not waited for: the queue was full for the priority, or too many
    /// clients were waiting already (the render is queued all the same).
    Rejected,
    /// No queue, or it shut down before the render.
    Shutdown,
    /// The render failed, or its metatile cannot be read; the message
    /// says why.
    Failed(String),
    /// Not in time: the render goes on and later requests find it.
    TimedOut,
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

/// A tile request past the URL checks and the throttle: what the
/// decisions below need, passed as one value.
struct TileRequest<'a> {
    state: &'a AppState,
    style: &'a ServedStyle,
    /// The request's headers (validators, Host, Origin).
    headers: &'a HeaderMap,
    /// The metatile file.
    path: String,
    tile: Tile,
}

impl TileRequest<'_> {
    /// Waits for a render of `tile`'s metatile at `priority`.
    async fn wait_render(&self, priority: Priority, timeout: Duration) -> Waited {
        let TileRequest {
            state, style, tile, ..
        } = *self;
        let Some(queue) = state.queue.as_ref() else {
            return Waited::Shutdown;
        };
        let Ok(_permit) = state.waiting.try_acquire() else {
            queue.submit(render_key(style, tile), priority, false);
            return Waited::Rejected;
        };
        let (submitted, receiver) = queue.submit(render_key(style, tile), priority, true);
        if submitted == Submitted::Rejected {
            return Waited::Rejected;
        }
        let receiver = receiver.expect("asked to wait");
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(Outcome::Rendered)) => match read(state, &self.path, tile).await {
                Ok(read) => Waited::Rendered(read),
                Err(_) => Waited::Failed("the rendered metatile cannot be read".into()),
            },
            Ok(Ok(Outcome::Failed(message))) => Waited::Failed(message),
            Ok(Ok(Outcome::Rejected)) => Waited::Rejected,
            Ok(Ok(Outcome::Shutdown) | Err(_)) => Waited::Shutdown,
            Err(_) => Waited::TimedOut,
        }
    }

    /// A fresh copy of a dirty tile if it can be had within the timeout.
    async fn rerender_dirty(&self) -> Option<Found> {
        let TileRequest {
            state, style, tile, ..
        } = *self;
        let queue = state.queue.as_ref()?;
        if state.load.waited(state) >= state.settings.max_queued_dirty as u64 {
            queue.submit(render_key(style, tile), Priority::Expired, false);
            return None;
        }
        let timeout = state.settings.request_timeout();
        match self.wait_render(Priority::DirtyWaited, timeout).await {
            Waited::Rendered(Read::Found(found)) => Some(found),
            Waited::Rendered(Read::Missing) => None,
            waited => {
                tracing::debug!(style = style.config.name, %tile, ?waited, "serving a dirty tile stale");
                None
            }
        }
    }

    /// A missing tile: rendered while the client waits, if the queue allows.
    async fn render_missing(&self) -> Response<Body> {
        let TileRequest {
            state, style, tile, ..
        } = *self;
        let zoom = u32::from(tile.z);
        let Some(queue) = &state.queue else {
            style.counters.record(zoom, TileOutcome::NotRendered);
            return not_rendered("No such tile, and no renderer\n");
        };
        if state.load.waited(state) >= state.settings.max_queued_missing as u64 {
            queue.submit(render_key(style, tile), Priority::Expired, false);
            style.counters.record(zoom, TileOutcome::Overloaded);
            return overloaded();
        }
        let timeout = state.settings.missing_request_timeout();
        match self.wait_render(Priority::MissingWaited, timeout).await {
            Waited::Rendered(Read::Found(found)) => self.respond(found, TileOutcome::Rendered),
            Waited::Rendered(Read::Missing) => {
                style.counters.record(zoom, TileOutcome::NotRendered);
                not_rendered("Tile was rendered but cannot be read\n")
            }
            Waited::Rejected | Waited::Shutdown => {
                style.counters.record(zoom, TileOutcome::Overloaded);
                overloaded()
            }
            waited @ (Waited::Failed(_) | Waited::TimedOut) => {
                if let Waited::Failed(message) = waited {
                    tracing::warn!(style = style.config.name, %tile, "render failed: {message}");
                }
                style.counters.record(zoom, TileOutcome::NotRendered);
                not_rendered("Missing tile was not rendered in time\n")
            }
        }
    }

    /// The 200 or 304 for a tile that exists (or 404 for an empty slot);
    /// `served` is how a 200 is counted: fresh, stale (dirty cache headers)
    /// or rendered.
    fn respond(&self, found: Found, served: TileOutcome) -> Response<Body> {
        let TileRequest {
            state,
            style,
            headers: request,
            tile,
            ..
        } = *self;
        let Found { mtime, bytes, gzip } = found;
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
        // The metatile's surrogate key, so a cache in front can drop all
        // its tiles at once when it is re-rendered (`serve.purge`).
        let key = super::super::purge::surrogate_key(&style.config.name, tile.metatile());
        if let Ok(value) = HeaderValue::from_str(&key) {
            headers.insert("xkey", value.clone());
            headers.insert("surrogate-key", value);
        }
        add_cors(state, request, &mut response);
        response
    }
}
