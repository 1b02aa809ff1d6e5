//! Following a feed: from a position, collect the next batch of diffs.
//!
//! A batch is a run of consecutive diffs merged into one [`ChangeSet`], never
//! beyond the server's newest state; it stops growing once it reaches the
//! configured size bound (so a single diff larger than the bound is still
//! one batch). It carries the state it reaches; the caller stores that
//! state in the same transaction as the data, so a crash anywhere
//! re-fetches the batch instead of skipping it.

use super::client::{FeedClient, FetchError};
use super::state::ReplicationState;
use crate::osm::ChangeSet;
use chrono::{DateTime, Utc};
use std::ops::RangeInclusive;
use std::time::Duration;
use tracing::{debug, info};

/// Merged diffs and the position they reach.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The diffs merged, in order (`position + 1 ..= end.sequence`).
    pub sequences: RangeInclusive<u64>,
    /// The diffs' changes merged, newest version of each object winning.
    pub changes: ChangeSet,
    /// The state of the last diff: the new position once applied.
    pub end: ReplicationState,
    /// Uncompressed XML bytes of all merged diffs.
    pub xml_bytes: u64,
}

/// Collects batches from one feed.
#[derive(Debug, Clone)]
pub struct Follower {
    client: FeedClient,
    max_batch_bytes: u64,
}

impl Follower {
    /// A follower whose batches stop growing once they reach
    /// `max_batch_bytes` of uncompressed XML (so one diff, however large,
    /// is always a batch).
    pub fn new(client: FeedClient, max_batch_bytes: u64) -> Self {
        Follower {
            client,
            max_batch_bytes: max_batch_bytes.max(1),
        }
    }

    /// The client it downloads with.
    pub fn client(&self) -> &FeedClient {
        &self.client
    }

    /// The server's newest state, checked against our position: a server
    /// behind us is a fault (a mirror out of sync, a feed swapped under us),
    /// reported as [`FetchError::Backwards`] and retried like any other.
    pub async fn latest_state(&self, position: u64) -> Result<ReplicationState, FetchError> {
        self.client
            .retrying("fetching the newest state", || async {
                let latest = self.client.latest_state_once().await?;
                if latest.sequence < position {
                    return Err(FetchError::Backwards {
                        server: latest.sequence,
                        local: position,
                    });
                }
                Ok(latest)
            })
            .await
    }

    /// The next batch after `position`, or `None` when the server has
    /// nothing newer. Reads the server's newest state first and never asks
    /// for a sequence beyond it.
    pub async fn next_batch(&self, position: u64) -> Result<Option<Batch>, FetchError> {
        let latest = self.latest_state(position).await?;
        self.next_batch_until(position, &latest).await
    }

    /// Like [`Follower::next_batch`] with the newest state already known.
    pub async fn next_batch_until(
        &self,
        position: u64,
        latest: &ReplicationState,
    ) -> Result<Option<Batch>, FetchError> {
        if latest.sequence <= position {
            return Ok(None);
        }
        let first = position + 1;
        let mut changes = ChangeSet::new();
        let mut xml_bytes = 0u64;
        let mut last = position;
        for sequence in first..=latest.sequence {
            let diff = self.fetch_published_diff(sequence, latest.sequence).await?;
            debug!(
                sequence,
                objects = diff.changes.len(),
                bytes = diff.xml_bytes,
                "downloaded diff"
            );
            xml_bytes += diff.xml_bytes;
            changes.merge(diff.changes);
            last = sequence;
            if xml_bytes >= self.max_batch_bytes {
                break;
            }
        }
        let end = self.published_state(last, latest).await?;
        info!(
            first,
            last,
            objects = changes.len(),
            mb = format_args!("{:.1}", xml_bytes as f64 / 1e6),
            "collected batch up to {}",
            end
        );
        Ok(Some(Batch {
            sequences: first..=last,
            changes,
            end,
            xml_bytes,
        }))
    }

    /// Downloads a diff the server lists as published; a 404 for it is a
    /// gap, retried rather than skipped.
    async fn fetch_published_diff(
        &self,
        sequence: u64,
        latest: u64,
    ) -> Result<super::client::Diff, FetchError> {
        self.client
            .retrying(format_args!("fetching diff {sequence}"), || async {
                match self.client.diff_once(sequence).await {
                    Err(FetchError::NotFound { .. }) => Err(FetchError::Gap { sequence, latest }),
                    other => other,
                }
            })
            .await
    }

    /// The state file of a published sequence (the newest one is already
    /// known and needs no second request).
    async fn published_state(
        &self,
        sequence: u64,
        latest: &ReplicationState,
    ) -> Result<ReplicationState, FetchError> {
        if sequence == latest.sequence {
            return Ok(*latest);
        }
        self.client
            .retrying(format_args!("fetching state {sequence}"), || async {
                self.client
                    .state_once(sequence)
                    .await?
                    .ok_or(FetchError::Gap {
                        sequence,
                        latest: latest.sequence,
                    })
            })
            .await
    }
}

/// How long to wait before polling again, given the newest state seen:
/// until one interval after its timestamp plus a margin (imposm's pacing),
/// but at least `min_wait` so a feed that publishes late is not hammered,
/// and at most one interval plus the margin: a state stamped in the future
/// (a feed's clock ahead of ours) must not stop polling until then.
pub fn poll_delay(
    latest: &ReplicationState,
    interval: Duration,
    margin: Duration,
    min_wait: Duration,
    now: DateTime<Utc>,
) -> Duration {
    let due = latest.timestamp
        + chrono::Duration::from_std(interval + margin).unwrap_or(chrono::Duration::zero());
    let until_due = (due - now).to_std().unwrap_or(Duration::ZERO);
    until_due.min(interval + margin).max(min_wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn poll_waits_until_the_next_publication() {
        let ts = Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap();
        let latest = ReplicationState {
            sequence: 5,
            timestamp: ts,
        };
        let minute = Duration::from_secs(60);
        let margin = Duration::from_secs(2);
        let min = Duration::from_secs(1);
        // 20 s after the state: 42 s to go.
        let now = ts + chrono::Duration::seconds(20);
        assert_eq!(
            poll_delay(&latest, minute, margin, min, now),
            Duration::from_secs(42)
        );
        // Overdue: poll after the minimum wait.
        let now = ts + chrono::Duration::seconds(300);
        assert_eq!(poll_delay(&latest, minute, margin, min, now), min);
    }

    #[test]
    fn a_state_from_the_future_waits_one_interval_at_most() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap();
        let latest = ReplicationState {
            sequence: 5,
            timestamp: now + chrono::Duration::days(3),
        };
        let minute = Duration::from_secs(60);
        let margin = Duration::from_secs(2);
        let min = Duration::from_secs(1);
        assert_eq!(
            poll_delay(&latest, minute, margin, min, now),
            Duration::from_secs(62)
        );
        // A day-long interval still waits a day, not three.
        let day = Duration::from_secs(86400);
        assert_eq!(poll_delay(&latest, day, margin, min, now), day + margin);
    }
}
