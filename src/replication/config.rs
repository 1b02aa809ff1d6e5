//! The `replication:` section of `config.yaml`: the feed, its limits and
//! the retry pacing. `src/config.rs` assembles it with the other
//! stages' sections.

use super::Interval;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `replication:` section; every key is optional and defaults as
/// noted on each field.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Base URL of the feed (https, http or file; default the planet's
    /// minutely feed).
    pub url: String,
    /// Feed cadence; guessed from the URL (`…/minute/`, `…/hour/`, `…/day/`)
    /// when absent, else minute.
    pub interval: Option<Interval>,
    /// Upper bound of one merged batch, in MB of uncompressed XML
    /// (fractions allowed; default 500).
    pub max_diff_size_mb: f64,
    /// Most MB one download (a diff or state file) may have, counted as it
    /// arrives; a guard against broken or hostile servers (default 512).
    pub max_download_mb: u64,
    /// Most MB one diff may inflate to, counted while decompressing
    /// (default 4096).
    pub max_uncompressed_mb: u64,
    /// Sent with every request; the default names tilepipe and its version.
    pub user_agent: Option<String>,
    /// Time allowed to establish a connection (default 30 s).
    pub connect_timeout_secs: u64,
    /// Whole-request timeout (headers and body; default 300 s).
    pub timeout_secs: u64,
    /// Extra HTTP headers, e.g. an authorisation token.
    pub headers: BTreeMap<String, String>,
    /// Value of a `Cookie` header, for feeds behind a login.
    pub cookie: Option<String>,
    /// Hosts (`name` or `name:port`) besides the feed's own host and port
    /// that redirects may lead to. `headers` and `cookie` are never sent
    /// to them.
    pub allow_redirect_hosts: Vec<String>,
    /// First retry delay after a failed download or a batch that failed to
    /// apply (`tilepipe run`); doubles up to the cap (default 2 s).
    pub retry_initial_secs: u64,
    /// Cap of the retry delay (default 300 s).
    pub retry_max_secs: u64,
    /// Extra wait after the expected publication time before polling
    /// (default 2 s).
    pub poll_margin_secs: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            url: "https://planet.openstreetmap.org/replication/minute/".into(),
            interval: None,
            max_diff_size_mb: 500.0,
            max_download_mb: 512,
            max_uncompressed_mb: 4096,
            user_agent: None,
            connect_timeout_secs: 30,
            timeout_secs: 300,
            headers: BTreeMap::new(),
            cookie: None,
            allow_redirect_hosts: Vec::new(),
            retry_initial_secs: 2,
            retry_max_secs: 300,
            poll_margin_secs: 2,
        }
    }
}

impl ReplicationConfig {
    /// The replication section's checks.
    pub fn validate(&self) -> Result<(), String> {
        let r = self;
        super::Feed::new(&r.url, Interval::Minute).map_err(|e| format!("replication.url: {e}"))?;
        if r.max_diff_size_mb.is_nan() || r.max_diff_size_mb <= 0.0 {
            return Err("replication.max_diff_size_mb: must be a positive number".into());
        }
        for (i, host) in r.allow_redirect_hosts.iter().enumerate() {
            let bare = host.rsplit_once(':').map_or(host.as_str(), |(name, port)| {
                if port.parse::<u16>().is_ok() {
                    name
                } else {
                    host
                }
            });
            let ipv6 = bare.starts_with('[') && bare.ends_with(']');
            if bare.is_empty() || bare.contains(['/', '@', ' ']) || (bare.contains(':') && !ipv6) {
                return Err(format!(
                    "replication.allow_redirect_hosts[{i}]: {host:?} is not a host name or host:port"
                ));
            }
        }
        if r.max_download_mb == 0 {
            return Err("replication.max_download_mb: must be at least 1".into());
        }
        if r.max_uncompressed_mb == 0 {
            return Err("replication.max_uncompressed_mb: must be at least 1".into());
        }
        if r.timeout_secs == 0 || r.connect_timeout_secs == 0 {
            return Err(
                "replication.timeout_secs and connect_timeout_secs must be at least 1".into(),
            );
        }
        if r.retry_initial_secs == 0 || r.retry_max_secs < r.retry_initial_secs {
            return Err(
                "replication.retry_initial_secs must be at least 1 and at most retry_max_secs"
                    .into(),
            );
        }
        // Durations added to instants and timestamps (poll pacing, request
        // deadlines) must not overflow.
        for (key, secs) in [
            ("connect_timeout_secs", r.connect_timeout_secs),
            ("timeout_secs", r.timeout_secs),
            ("retry_initial_secs", r.retry_initial_secs),
            ("retry_max_secs", r.retry_max_secs),
            ("poll_margin_secs", r.poll_margin_secs),
        ] {
            if secs > 86_400 {
                return Err(format!("replication.{key}: must be at most 86400 seconds"));
            }
        }
        Ok(())
    }
    /// The batch bound in bytes (`max_diff_size_mb` · 10^6).
    pub fn max_batch_bytes(&self) -> u64 {
        (self.max_diff_size_mb * 1e6) as u64
    }

    /// `max_download_mb` in bytes (MB are 10^6 bytes throughout).
    pub fn max_download_bytes(&self) -> u64 {
        self.max_download_mb.saturating_mul(1_000_000)
    }

    /// `max_uncompressed_mb` in bytes.
    pub fn max_uncompressed_bytes(&self) -> u64 {
        self.max_uncompressed_mb.saturating_mul(1_000_000)
    }

    /// `connect_timeout_secs` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// `timeout_secs` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}
