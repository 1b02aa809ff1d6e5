//! `state.txt`: a feed position (sequence number and timestamp).
//!
//! Format (as osmosis and osmdbt write it, pyosmium's `ReplicationServer`
//! reads it): `KEY=VALUE` lines split on the first `=`, `#` comments
//! and blank lines ignored, unknown keys ignored. Colons in values are
//! usually escaped as `\:` (Java Properties heritage); we read both forms and
//! always write the escaped one, because pyosmium and go-osm reject
//! unescaped colons.

use chrono::{DateTime, NaiveDateTime, Utc};
use std::fmt;

/// A position in a replication feed: the contents of one `state.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationState {
    /// `sequenceNumber`: the last diff included (its files are at
    /// [`sequence_path`](super::feed::sequence_path)).
    pub sequence: u64,
    /// `timestamp`: the point in time the data reaches at this sequence
    /// (UTC, whole seconds).
    pub timestamp: DateTime<Utc>,
}

/// Why a state file could not be read. `line` is 1-based.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// A line that is neither blank, a comment nor `KEY=VALUE`.
    #[error("line {line}: expected KEY=VALUE, found {text:?}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The offending line, trimmed.
        text: String,
    },
    /// `sequenceNumber` is not a `u64`.
    #[error("line {line}: sequenceNumber {value:?} is not a non-negative integer")]
    BadSequence {
        /// 1-based line number.
        line: usize,
        /// The value, unescaped.
        value: String,
    },
    /// `timestamp` is neither `YYYY-MM-DDTHH:MM:SSZ` nor RFC 3339.
    #[error("line {line}: timestamp {value:?} is not of the form YYYY-MM-DDTHH:MM:SSZ")]
    BadTimestamp {
        /// 1-based line number.
        line: usize,
        /// The value, unescaped.
        value: String,
    },
    /// A required key (`sequenceNumber` or `timestamp`, named here) is absent.
    #[error("missing {0} (truncated state file?)")]
    Missing(&'static str),
}

impl ReplicationState {
    /// Parses the text of a state file.
    pub fn parse(text: &str) -> Result<Self, StateError> {
        let mut sequence = None;
        let mut timestamp = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(StateError::Syntax {
                    line,
                    text: trimmed.to_string(),
                });
            };
            let value = unescape(value.trim());
            match key.trim() {
                "sequenceNumber" => {
                    sequence = Some(value.parse::<u64>().map_err(|_| StateError::BadSequence {
                        line,
                        value: value.clone(),
                    })?);
                }
                "timestamp" => {
                    timestamp = Some(parse_timestamp(&value).ok_or(StateError::BadTimestamp {
                        line,
                        value: value.clone(),
                    })?);
                }
                _ => {}
            }
        }
        Ok(ReplicationState {
            sequence: sequence.ok_or(StateError::Missing("sequenceNumber"))?,
            timestamp: timestamp.ok_or(StateError::Missing("timestamp"))?,
        })
    }

    /// Formats as a state file: a date comment as the planet writes it, then
    /// `sequenceNumber` and `timestamp` with escaped colons.
    pub fn to_state_file(&self) -> String {
        format!(
            "#{}\nsequenceNumber={}\ntimestamp={}\n",
            self.timestamp.format("%a %b %d %H:%M:%S UTC %Y"),
            self.sequence,
            format_timestamp(self.timestamp).replace(':', "\\:")
        )
    }
}

impl fmt::Display for ReplicationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sequence {} ({})",
            self.sequence,
            format_timestamp(self.timestamp)
        )
    }
}

/// Drops a backslash that precedes any character (Java Properties escaping).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (the only form feeds use), also accepting
/// any RFC 3339 timestamp for robustness.
pub fn parse_timestamp(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(naive) = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%SZ") {
        return Some(naive.and_utc());
    }
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Formats a timestamp as OSM does: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_timestamp(ts: DateTime<Utc>) -> String {
    ts.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_planet_state_with_escaped_colons() {
        let text = "#Mon Aug 05 02:24:48 UTC 2024\nsequenceNumber=6205195\ntimestamp=2024-08-05T02\\:24\\:04Z\n";
        let state = ReplicationState::parse(text).unwrap();
        assert_eq!(state.sequence, 6205195);
        assert_eq!(
            state.timestamp,
            Utc.with_ymd_and_hms(2024, 8, 5, 2, 24, 4).unwrap()
        );
    }

    #[test]
    fn parses_unescaped_colons_unknown_keys_and_whitespace() {
        let text = "txnMaxQueried=1\n\n  timestamp = 2013-08-03T19:00:02Z \nsequenceNumber=9999999\nreplicationUrl=http\\://x/\n";
        let state = ReplicationState::parse(text).unwrap();
        assert_eq!(state.sequence, 9999999);
        assert_eq!(
            format_timestamp(state.timestamp),
            "2013-08-03T19:00:02Z".to_string()
        );
    }

    #[test]
    fn writes_escaped_colons_and_round_trips() {
        let state = ReplicationState {
            sequence: 42,
            timestamp: Utc.with_ymd_and_hms(2024, 8, 5, 2, 24, 4).unwrap(),
        };
        let text = state.to_state_file();
        assert!(
            text.starts_with("#Mon Aug 05 02:24:04 UTC 2024\n"),
            "{text}"
        );
        assert!(
            text.contains("timestamp=2024-08-05T02\\:24\\:04Z\n"),
            "{text}"
        );
        assert!(text.contains("sequenceNumber=42\n"));
        assert_eq!(ReplicationState::parse(&text).unwrap(), state);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            ReplicationState::parse("sequenceNumber=12\ngarbage\n"),
            Err(StateError::Syntax {
                line: 2,
                text: "garbage".into()
            })
        );
        assert_eq!(
            ReplicationState::parse("#c\nsequenceNumber=-3\n"),
            Err(StateError::BadSequence {
                line: 2,
                value: "-3".into()
            })
        );
        assert_eq!(
            ReplicationState::parse("sequenceNumber=3\ntimestamp=yesterday\n"),
            Err(StateError::BadTimestamp {
                line: 2,
                value: "yesterday".into()
            })
        );
    }

    #[test]
    fn truncated_file_is_missing_a_key() {
        assert_eq!(
            ReplicationState::parse("sequenceNumber=12\n"),
            Err(StateError::Missing("timestamp"))
        );
        assert_eq!(
            ReplicationState::parse(""),
            Err(StateError::Missing("sequenceNumber"))
        );
    }
}
