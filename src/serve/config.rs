//! Serve configuration (the `serve:` section of `config.yaml`).
//!
//! Names and defaults follow mod_tile's Apache directives where there is
//! one (`ModTileRequestTimeout`, `ModTileCacheDuration*`,
//! `ModTileThrottling*`); the repository's `config.yaml` spells out every
//! default, and a unit test keeps the two equal.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The HTTP tile server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Listen address; empty = no HTTP server.
    pub listen: String,
    /// Seconds a request for a dirty tile waits for its re-render before
    /// the stale tile is served (`ModTileRequestTimeout`).
    pub request_timeout_secs: f64,
    /// Seconds a request for a missing tile waits for its render before
    /// the 404 (`ModTileMissingRequestTimeout`).
    pub missing_request_timeout_secs: f64,
    /// Overload bound for dirty tiles (mod_tile's `ModTileMaxLoadOld`, but
    /// measured on the render queue instead of the load average): with at
    /// least this many metatiles queued for waiting clients, a dirty tile
    /// is served stale at once and its re-render queued at expiry priority.
    pub max_queued_dirty: usize,
    /// Overload bound for missing tiles (`ModTileMaxLoadMissing`): with at
    /// least this many metatiles queued for waiting clients, a missing tile
    /// is answered 503 at once and its render queued at expiry priority.
    pub max_queued_missing: usize,
    /// Most requests waiting for a render at once (each holds a
    /// connection); beyond it requests do not wait (stale or 503).
    pub max_waiting_requests: usize,
    /// Client networks (CIDR) allowed to use the admin endpoints
    /// (`…/dirty`, `…/status`, `/metrics`). mod_tile leaves them open.
    pub admin_networks: Vec<String>,
    /// `Access-Control-Allow-Origin` policy: empty = no CORS headers,
    /// `["*"]` = any origin, else the allowed origins.
    pub cors_origins: Vec<String>,
    /// Base URL of the tiles in TileJSON (`https://tiles.example.org`);
    /// empty = `http://` + the request's Host header.
    pub public_url: String,
    /// Leaflet's `dist` directory (npm package `leaflet`), served at
    /// `/static/leaflet/`; relative paths resolve from the working
    /// directory.
    pub leaflet_dir: PathBuf,
    /// `/health` answers 503 when the replication lag exceeds this many
    /// seconds (0 = never).
    pub max_replication_lag_secs: u64,
    /// MB of recently served tiles kept in memory (validated against the
    /// metatile's inode, size and mtime on every request); 0 = off.
    pub tile_cache_mb: f64,
    /// Seconds a client has to send a whole request head, counted from
    /// the connection's start or the first byte of a later request
    /// (Apache's `RequestReadTimeout header=`, nginx's
    /// `client_header_timeout`); then the connection is closed.
    pub header_read_timeout_secs: f64,
    /// Seconds an idle keep-alive connection (no request in flight, no
    /// bytes moving) stays open (nginx's `keepalive_timeout`).
    pub keepalive_timeout_secs: f64,
    /// Most connections open at once; beyond it new connections wait in
    /// the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// Proxy networks (CIDR or addresses) whose `X-Forwarded-For` is
    /// believed: for a request from one of them the client is the
    /// rightmost `X-Forwarded-For` entry that is not itself a trusted
    /// proxy. Empty = the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Browser cache lifetimes of tiles (`serve.cache`).
    pub cache: CacheConfig,
    /// Per-client throttling (`serve.throttle`); off by default.
    pub throttle: ThrottleConfig,
    /// Caches in front to purge when a metatile is re-rendered
    /// (`serve.purge`); none by default.
    pub purge: PurgeConfig,
}

/// HTTP caches to purge by surrogate key (see [`super::purge`]).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PurgeConfig {
    /// Base URLs of Varnish servers running `varnish/tilepipe.vcl`: each
    /// gets `PURGE /` with the keys in an `xkey` header.
    pub varnish: Vec<String>,
    /// Other purge endpoints (a CDN's API), as request templates.
    pub requests: Vec<PurgeRequest>,
    /// Most keys per purge request (default 100).
    pub max_keys: usize,
    /// Milliseconds to gather keys after the first before sending
    /// (default 100), so a burst of renders becomes few requests.
    pub delay_ms: u64,
}

impl Default for PurgeConfig {
    fn default() -> Self {
        PurgeConfig {
            varnish: Vec::new(),
            requests: Vec::new(),
            max_keys: 100,
            delay_ms: 100,
        }
    }
}

impl PurgeConfig {
    /// Whether any cache is to be purged.
    pub fn is_active(&self) -> bool {
        !self.varnish.is_empty() || !self.requests.is_empty()
    }
}

/// A purge request template: `{keys}` (space-separated; URL-encoded in
/// the URL) and `{keys_json}` (a JSON array of strings) are filled in in
/// the URL, the header values and the body.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// The URL.
    pub url: String,
    /// The HTTP method (default POST).
    #[serde(default = "default_purge_method")]
    pub method: String,
    /// Headers to send (API tokens, `Surrogate-Key: {keys}`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body; empty = none.
    #[serde(default)]
    pub body: String,
}

fn default_purge_method() -> String {
    "POST".into()
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            request_timeout_secs: 3.0,
            missing_request_timeout_secs: 10.0,
            max_queued_dirty: 16,
            max_queued_missing: 50,
            max_waiting_requests: 1024,
            admin_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            cors_origins: Vec::new(),
            public_url: String::new(),
            leaflet_dir: PathBuf::from("web/node_modules/leaflet/dist"),
            max_replication_lag_secs: 3600,
            tile_cache_mb: 256.0,
            header_read_timeout_secs: 10.0,
            keepalive_timeout_secs: 60.0,
            max_connections: 4096,
            trusted_proxies: Vec::new(),
            cache: CacheConfig::default(),
            throttle: ThrottleConfig::default(),
            purge: PurgeConfig::default(),
        }
    }
}

/// Longest cache lifetime accepted (10 years), far beyond mod_tile's
/// week-long defaults yet small enough that `now + max-age` cannot
/// overflow a timestamp.
const MAX_CACHE_SECS: u64 = 10 * 365 * 86_400;

/// Slowest refill accepted: one token in about 3 hours. A slower one would
/// make the Retry-After computed from it overflow a Duration.
const MIN_THROTTLE_RATE: f64 = 1e-4;

/// A finite number of seconds in `0..=max`, for values that become a
/// `Duration` (`Duration::from_secs_f64` panics on anything else).
fn check_secs(key: &str, value: f64, max: f64) -> Result<(), String> {
    if value.is_finite() && (0.0..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key}: must be a finite number of seconds between 0 and {max}"
        ))
    }
}

impl ServeConfig {
    /// Checks values that would make the server panic or overflow at run
    /// time; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        check_secs(
            "serve.request_timeout_secs",
            self.request_timeout_secs,
            86_400.0,
        )?;
        check_secs(
            "serve.missing_request_timeout_secs",
            self.missing_request_timeout_secs,
            86_400.0,
        )?;
        if !(self.tile_cache_mb.is_finite() && self.tile_cache_mb >= 0.0) {
            return Err("serve.tile_cache_mb: must be a finite number of MB, 0 or more".into());
        }
        if self.max_replication_lag_secs > MAX_CACHE_SECS {
            return Err(format!(
                "serve.max_replication_lag_secs: must be at most {MAX_CACHE_SECS}"
            ));
        }
        self.cache.validate()?;
        for (name, bucket) in [
            ("tiles", &self.throttle.tiles),
            ("renders", &self.throttle.renders),
        ] {
            let rate = bucket.rate;
            if !(rate == 0.0 || (rate.is_finite() && (MIN_THROTTLE_RATE..=1e6).contains(&rate))) {
                return Err(format!(
                    "serve.throttle.{name}.rate: must be 0 or a number of tokens per second between {MIN_THROTTLE_RATE} and 1000000"
                ));
            }
        }
        super::purge::validate(&self.purge)?;
        Ok(())
    }

    /// `request_timeout_secs` as a duration (a negative value is 0).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_secs.max(0.0))
    }

    /// `missing_request_timeout_secs` as a duration (a negative value is 0).
    pub fn missing_request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.missing_request_timeout_secs.max(0.0))
    }

    /// `header_read_timeout_secs` as a duration, at least 1 ms.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_read_timeout_secs.max(0.001))
    }

    /// `keepalive_timeout_secs` as a duration, at least 1 ms.
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.keepalive_timeout_secs.max(0.001))
    }
}

/// `Cache-Control: max-age` and `Expires` as mod_tile's `add_expiry`
/// computes them (`ModTileCacheDuration*` directives, same defaults).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Upper bound of any clean tile's max-age (`…DurationMax`).
    pub duration_max_secs: u64,
    /// Dirty tiles: this plus up to half of it at random (`…DurationDirty`).
    pub duration_dirty_secs: u64,
    /// Clean tiles above the medium zoom level (`…DurationMinimum`).
    pub duration_minimum_secs: u64,
    /// Zooms up to this level get `duration_low_zoom_secs`
    /// (`…DurationLowZoom <level> <secs>`).
    pub low_zoom_level: u8,
    /// Max-age of clean tiles up to `low_zoom_level` (the `<secs>` of
    /// `…DurationLowZoom`).
    pub duration_low_zoom_secs: u64,
    /// Zooms up to this level (above the low one) get
    /// `duration_medium_zoom_secs` (`…DurationMediumZoom`).
    pub medium_zoom_level: u8,
    /// Max-age of clean tiles up to `medium_zoom_level` (the `<secs>` of
    /// `…DurationMediumZoom`).
    pub duration_medium_zoom_secs: u64,
    /// A clean tile's max-age is at least its age times this
    /// (`…LastModifiedFactor`).
    pub last_modified_factor: f64,
    /// Requests whose Host contains this get `extended_duration_secs`
    /// (`ModTileCacheExtendedHostName`); empty = off.
    pub extended_hostname: String,
    /// Max-age for requests to `extended_hostname`, clean or dirty
    /// (`ModTileCacheExtendedDuration`).
    pub extended_duration_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            duration_max_secs: 604_800,
            duration_dirty_secs: 900,
            duration_minimum_secs: 10_800,
            low_zoom_level: 0,
            duration_low_zoom_secs: 518_400,
            medium_zoom_level: 0,
            duration_medium_zoom_secs: 86_400,
            last_modified_factor: 0.0,
            extended_hostname: String::new(),
            extended_duration_secs: 0,
        }
    }
}

impl CacheConfig {
    fn validate(&self) -> Result<(), String> {
        for (key, secs) in [
            ("duration_max_secs", self.duration_max_secs),
            ("duration_dirty_secs", self.duration_dirty_secs),
            ("duration_minimum_secs", self.duration_minimum_secs),
            ("duration_low_zoom_secs", self.duration_low_zoom_secs),
            ("duration_medium_zoom_secs", self.duration_medium_zoom_secs),
            ("extended_duration_secs", self.extended_duration_secs),
        ] {
            if secs > MAX_CACHE_SECS {
                return Err(format!(
                    "serve.cache.{key}: must be at most {MAX_CACHE_SECS} seconds (10 years)"
                ));
            }
        }
        let factor = self.last_modified_factor;
        if !(factor.is_finite() && factor >= 0.0) {
            return Err(
                "serve.cache.last_modified_factor: must be a finite number, 0 or more".into(),
            );
        }
        Ok(())
    }
}

/// Which address a client is throttled by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardedFor {
    /// The connection's peer address.
    #[default]
    None,
    /// The first `X-Forwarded-For` entry (the original client, as claimed).
    First,
    /// The last `X-Forwarded-For` entry (added by the nearest proxy).
    Last,
}

/// Per-client token buckets (`ModTileEnableTileThrottling`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Throttle clients at all; off by default, as in mod_tile.
    pub enabled: bool,
    /// `ModTileEnableTileThrottlingXForward` 0, 1, 2: which
    /// `X-Forwarded-For` entry throttling counts, whoever sent it. Only
    /// used while `serve.trusted_proxies` is empty; with trusted proxies
    /// the client address they establish is throttled instead.
    pub x_forwarded_for: ForwardedFor,
    /// Every tile request takes a token (`ModTileThrottlingTiles`).
    pub tiles: Bucket,
    /// A tile that needs a render (missing) also takes one of these
    /// (`ModTileThrottlingRenders`).
    pub renders: Bucket,
    /// Most clients tracked at once; idle full buckets are forgotten first.
    pub max_clients: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            enabled: false,
            x_forwarded_for: ForwardedFor::None,
            tiles: Bucket {
                size: 5000,
                rate: 1.0,
            },
            renders: Bucket {
                size: 65,
                rate: 0.2,
            },
            max_clients: 100_000,
        }
    }
}

/// A token bucket: `size` tokens at most, `rate` tokens per second back.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Most tokens a client holds: the burst it may make from a full
    /// bucket (the first number of `ModTileThrottlingTiles` and
    /// `ModTileThrottlingRenders`).
    pub size: u32,
    /// Tokens per second given back, up to `size`; 0 = none (an empty
    /// bucket stays empty).
    pub rate: f64,
}
