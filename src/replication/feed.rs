//! The feed model: a base URL, its cadence, and the sequence ↔ path mapping.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use url::Url;

/// How often a feed publishes a diff.
///
/// In `config.yaml`: `minute`, `hour`, `day`, or a number of seconds for
/// feeds with another cadence (local feeds, tests, demos).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// The planet's `minute/` feed (60 s).
    Minute,
    /// The planet's `hour/` feed (3600 s).
    Hour,
    /// The planet's `day/` feed and Geofabrik's `-updates/` (86400 s).
    Day,
    /// Any other cadence, in seconds (at least 1).
    Seconds(u32),
}

impl Interval {
    /// The time between two diffs.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Interval::Minute => 60,
            Interval::Hour => 3600,
            Interval::Day => 86400,
            Interval::Seconds(secs) => u64::from(secs.max(1)),
        })
    }

    /// How long to wait after a "not yet published" answer (imposm3's
    /// `imposm run` pacing: 10 s for minutely feeds, 60 s for hourly, 5 min for daily; a sixth
    /// of the interval for other cadences).
    pub fn not_yet_wait(self) -> Duration {
        match self {
            Interval::Minute => Duration::from_secs(10),
            Interval::Hour => Duration::from_secs(60),
            Interval::Day => Duration::from_secs(300),
            Interval::Seconds(_) => (self.duration() / 6).max(Duration::from_millis(500)),
        }
    }

    /// Guesses the cadence from the URL (`…/minute/`, `…/hour/`, `…/day/`,
    /// Geofabrik's `-updates/` are daily). `None` when the URL says nothing.
    pub fn guess_from_url(url: &Url) -> Option<Self> {
        let path = url.path().trim_end_matches('/');
        let last = path.rsplit('/').next().unwrap_or("");
        match last {
            "minute" | "minutely" => Some(Interval::Minute),
            "hour" | "hourly" => Some(Interval::Hour),
            "day" | "daily" => Some(Interval::Day),
            s if s.ends_with("-updates") => Some(Interval::Day),
            _ => None,
        }
    }
}

/// What `config.yaml` may say: a name or a number of seconds.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum IntervalText {
    Seconds(u32),
    Name(String),
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match IntervalText::deserialize(deserializer)? {
            IntervalText::Seconds(0) => Err(serde::de::Error::custom(
                "interval: a number of seconds must be at least 1",
            )),
            IntervalText::Seconds(secs) => Ok(Interval::Seconds(secs)),
            IntervalText::Name(name) => match name.as_str() {
                "minute" => Ok(Interval::Minute),
                "hour" => Ok(Interval::Hour),
                "day" => Ok(Interval::Day),
                other => Err(serde::de::Error::custom(format!(
                    "unknown interval {other:?}: expected minute, hour, day or a number of seconds"
                ))),
            },
        }
    }
}

impl Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Interval::Seconds(secs) => IntervalText::Seconds(*secs),
            named => IntervalText::Name(named.to_string()),
        }
        .serialize(serializer)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Seconds(secs) => return write!(f, "{secs} s"),
        })
    }
}

/// A replication feed: base URL (always ending in `/`) and cadence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    base: Url,
    /// How often the feed publishes; paces polling.
    pub interval: Interval,
}

/// Why a feed's base URL was refused. URLs in it are redacted.
#[derive(Debug, thiserror::Error)]
pub enum FeedUrlError {
    /// The text does not parse as a URL.
    #[error("replication URL {url:?} is not a valid URL: {source}")]
    Invalid {
        /// The URL as configured, redacted.
        url: String,
        /// The parser's error.
        source: url::ParseError,
    },
    /// A scheme other than https, http or file (the redacted URL).
    #[error("replication URL {0:?} must use https, http or file")]
    Scheme(String),
}

impl Feed {
    /// Parses a base URL, normalising it to end in `/`. Accepts `https`,
    /// `http` and `file` URLs; a bare absolute path becomes a `file://` URL.
    pub fn new(base: &str, interval: Interval) -> Result<Self, FeedUrlError> {
        Ok(Feed {
            base: parse_base_url(base)?,
            interval,
        })
    }

    /// Like [`Feed::new`] but takes the cadence from the URL when it names
    /// one, otherwise `fallback`.
    pub fn with_guessed_interval(base: &str, fallback: Interval) -> Result<Self, FeedUrlError> {
        let url = parse_base_url(base)?;
        let interval = Interval::guess_from_url(&url).unwrap_or(fallback);
        Ok(Feed {
            base: url,
            interval,
        })
    }

    /// The base URL, ending in `/` (unredacted: `Display` redacts).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// URL of the newest state: `<base>state.txt`.
    pub fn latest_state_url(&self) -> Url {
        self.join("state.txt")
    }

    /// URL of the state file of sequence `n`.
    pub fn state_url(&self, n: u64) -> Url {
        self.join(&format!("{}.state.txt", sequence_path(n)))
    }

    /// URL of the gzip'd OsmChange diff of sequence `n`.
    pub fn diff_url(&self, n: u64) -> Url {
        self.join(&format!("{}.osc.gz", sequence_path(n)))
    }

    fn join(&self, relative: &str) -> Url {
        // The base ends in '/', so joining a relative path appends to it.
        self.base
            .join(relative)
            .expect("relative sequence paths always join onto a base URL")
    }
}

impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shown in logs and errors: without a password in the URL.
        f.write_str(&crate::redact::secrets(self.base.as_str()))
    }
}

fn parse_base_url(base: &str) -> Result<Url, FeedUrlError> {
    let mut text = base.trim().to_string();
    if text.starts_with('/') {
        text = format!("file://{text}");
    }
    if !text.ends_with('/') {
        text.push('/');
    }
    let url = Url::parse(&text).map_err(|source| FeedUrlError::Invalid {
        url: crate::redact::secrets(base).into_owned(),
        source,
    })?;
    match url.scheme() {
        "https" | "http" | "file" => Ok(url),
        _ => Err(FeedUrlError::Scheme(
            crate::redact::secrets(base).into_owned(),
        )),
    }
}

/// `AAA/BBB/CCC` for sequence `n` (osmosis's replication layout):
/// zero-padded to nine digits and split in groups of three. Sequences
/// beyond nine digits keep their extra leading digits in the first group,
/// as osmosis does.
pub fn sequence_path(n: u64) -> String {
    format!(
        "{:03}/{:03}/{:03}",
        n / 1_000_000,
        (n / 1000) % 1000,
        n % 1000
    )
}

/// The inverse of [`sequence_path`]: `006/205/195` → 6205195. Accepts an
/// optional `.state.txt`/`.osc.gz` suffix.
pub fn parse_sequence_path(path: &str) -> Option<u64> {
    let path = path
        .trim_end_matches(".state.txt")
        .trim_end_matches(".osc.gz");
    let mut parts = path.split('/');
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || b.len() != 3 || c.len() != 3 || a.len() < 3 {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|d| d.is_ascii_digit());
    if !(all_digits(a) && all_digits(b) && all_digits(c)) {
        return None;
    }
    Some(
        a.parse::<u64>().ok()? * 1_000_000
            + b.parse::<u64>().ok()? * 1000
            + c.parse::<u64>().ok()?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_paths_match_the_spec() {
        assert_eq!(sequence_path(6205195), "006/205/195");
        assert_eq!(sequence_path(0), "000/000/000");
        assert_eq!(sequence_path(999_999_999), "999/999/999");
        assert_eq!(sequence_path(1_000_000_000), "1000/000/000");
        for n in [0, 1, 999, 1000, 6205195, 999_999_999, 1_000_000_000] {
            assert_eq!(parse_sequence_path(&sequence_path(n)), Some(n));
        }
        assert_eq!(parse_sequence_path("006/205/195.osc.gz"), Some(6205195));
        assert_eq!(parse_sequence_path("06/205/195"), None);
        assert_eq!(parse_sequence_path("006/205/19x"), None);
    }

    #[test]
    fn urls_are_normalised_and_joined() {
        let feed = Feed::new(
            "https://planet.openstreetmap.org/replication/minute",
            Interval::Minute,
        )
        .unwrap();
        assert_eq!(
            feed.latest_state_url().as_str(),
            "https://planet.openstreetmap.org/replication/minute/state.txt"
        );
        assert_eq!(
            feed.diff_url(6205195).as_str(),
            "https://planet.openstreetmap.org/replication/minute/006/205/195.osc.gz"
        );
        assert_eq!(
            feed.state_url(6205195).as_str(),
            "https://planet.openstreetmap.org/replication/minute/006/205/195.state.txt"
        );
        let local = Feed::new("/srv/feed", Interval::Hour).unwrap();
        assert_eq!(
            local.diff_url(1).as_str(),
            "file:///srv/feed/000/000/001.osc.gz"
        );
        assert!(matches!(
            Feed::new("ftp://example.com/", Interval::Day),
            Err(FeedUrlError::Scheme(_))
        ));
    }

    #[test]
    fn interval_is_guessed_from_url() {
        let guess = |u: &str| {
            Feed::with_guessed_interval(u, Interval::Minute)
                .unwrap()
                .interval
        };
        assert_eq!(
            guess("https://planet.osm.org/replication/hour/"),
            Interval::Hour
        );
        assert_eq!(
            guess("https://planet.osm.org/replication/day"),
            Interval::Day
        );
        assert_eq!(
            guess("https://download.geofabrik.de/europe/liechtenstein-updates/"),
            Interval::Day
        );
        assert_eq!(guess("http://127.0.0.1:8000/feed/"), Interval::Minute);
    }
}
