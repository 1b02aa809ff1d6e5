//! Cache lifetimes as mod_tile's `add_expiry` computes them, and the
//! validators (ETag, Last-Modified) tilepipe adds.
//!
//! - The Host contains `extended_hostname` → `extended_duration_secs`.
//! - Dirty tile → `dirty + rand[0,1) · dirty / 2` (mod_tile ≥ 0.7; 0.6.1
//!   gave touched tiles 7 days, mod_tile issue #441).
//! - Clean tile → `max(mincache[z], age · last_modified_factor) +
//!   rand[0,1) · 10800`, at most `duration_max`, where `mincache[z]` is the
//!   low-zoom duration up to `low_zoom_level`, the medium one up to
//!   `medium_zoom_level`, else the minimum.
//!
//! The random part spreads the expiry of tiles fetched together, so a
//! client's whole view does not go stale in the same second.

use super::config::CacheConfig;
use std::time::{Duration, SystemTime};

/// Random spread added to clean tiles' max-age (mod_tile's constant).
pub const CLEAN_SPREAD_SECS: f64 = 10_800.0;

/// The `max-age` in seconds for a tile at `zoom` whose metatile is
/// `age` old; `random` is a number in [0, 1).
pub fn max_age(
    settings: &CacheConfig,
    zoom: u32,
    dirty: bool,
    age: Duration,
    host: Option<&str>,
    random: f64,
) -> u64 {
    if !settings.extended_hostname.is_empty()
        && host.is_some_and(|h| h.contains(settings.extended_hostname.as_str()))
    {
        return settings.extended_duration_secs;
    }
    if dirty {
        let dirty = settings.duration_dirty_secs as f64;
        return (dirty + random * dirty / 2.0) as u64;
    }
    let min_cache = if zoom <= u32::from(settings.low_zoom_level) {
        settings.duration_low_zoom_secs
    } else if zoom <= u32::from(settings.medium_zoom_level) {
        settings.duration_medium_zoom_secs
    } else {
        settings.duration_minimum_secs
    } as f64;
    let by_age = age.as_secs_f64() * settings.last_modified_factor;
    let secs = min_cache.max(by_age) + random * CLEAN_SPREAD_SECS;
    (secs as u64).min(settings.duration_max_secs)
}

/// A strong ETag from the tile's bytes (64-bit XXH3, quoted hex). Content
/// based, so a re-render that draws the same image keeps the client's
/// copy valid.
pub fn etag(bytes: &[u8]) -> String {
    format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// Whether an `If-None-Match` header value matches `etag` (weak
/// comparison, as RFC 9110 asks for GET; `*` matches any).
pub fn none_match(header: &str, etag: &str) -> bool {
    let etag = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// Whether an `If-Modified-Since` value says the client's copy is current:
/// the resource was not modified after that date (to the second).
pub fn not_modified_since(header: &str, modified: SystemTime) -> bool {
    match httpdate::parse_http_date(header) {
        Ok(since) => truncate_secs(modified) <= since,
        Err(_) => false,
    }
}

/// HTTP dates have whole seconds.
pub fn truncate_secs(time: SystemTime) -> SystemTime {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod_tile_defaults() {
        let s = CacheConfig::default();
        let day = Duration::from_secs(86_400);
        // z0 is "low zoom" with default level 0: 6 days (+ up to 3 h).
        assert_eq!(max_age(&s, 0, false, day, None, 0.0), 518_400);
        assert_eq!(max_age(&s, 0, false, day, None, 0.5), 518_400 + 5_400);
        // Other zooms: the 3-hour minimum plus up to 3 hours.
        assert_eq!(max_age(&s, 12, false, day, None, 0.0), 10_800);
        assert_eq!(max_age(&s, 12, false, day, None, 0.999_99), 21_599);
        // Dirty: 15 minutes plus up to half of it.
        assert_eq!(max_age(&s, 12, true, day, None, 0.0), 900);
        assert_eq!(max_age(&s, 12, true, day, None, 0.5), 1_125);
    }

    #[test]
    fn osmf_settings() {
        let s = CacheConfig {
            low_zoom_level: 9,
            medium_zoom_level: 13,
            last_modified_factor: 0.2,
            extended_hostname: "cdn".into(),
            extended_duration_secs: 42,
            ..CacheConfig::default()
        };
        let hour = Duration::from_secs(3600);
        assert_eq!(max_age(&s, 9, false, hour, None, 0.0), 518_400);
        assert_eq!(max_age(&s, 13, false, hour, None, 0.0), 86_400);
        assert_eq!(max_age(&s, 14, false, hour, None, 0.0), 10_800);
        // An old tile: a fifth of its age, capped at a week.
        let year = Duration::from_secs(365 * 86_400);
        assert_eq!(max_age(&s, 14, false, year, None, 0.0), 604_800);
        let days20 = Duration::from_secs(20 * 86_400);
        assert_eq!(max_age(&s, 14, false, days20, None, 0.0), 345_600);
        assert_eq!(max_age(&s, 14, true, hour, Some("a.cdn.example"), 0.0), 42);
    }

    #[test]
    fn validators() {
        let tag = etag(b"tile");
        assert_eq!(tag.len(), 18);
        assert!(none_match(&tag, &tag));
        assert!(none_match(&format!("\"x\", W/{tag}"), &tag));
        assert!(none_match("*", &tag));
        assert!(!none_match("\"0000\"", &tag));
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let date = httpdate::fmt_http_date(t);
        assert!(not_modified_since(&date, t));
        assert!(!not_modified_since(&date, t + Duration::from_secs(1)));
        assert!(!not_modified_since("yesterday", t));
    }
}
