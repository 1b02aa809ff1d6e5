//! Finding the sequence to start from for a point in time.
//!
//! The answer is the newest sequence whose state timestamp is strictly
//! before `T` (a conservative start: the first diff applied is that
//! sequence + 1, so nothing after `T` is missed). The search is pyosmium's
//! `ReplicationServer.timestamp_to_sequence`: find a lower bound (bisecting
//! upwards when the server pruned its old states), then interpolate
//! between the bounds by timestamp, probing around states that are missing.

use super::client::{FeedClient, FetchError};
use super::state::ReplicationState;
use chrono::{DateTime, Utc};
use std::future::Future;

/// Where states come from: the feed client, or a table in tests.
pub trait StateSource {
    /// The newest state (`state.txt`).
    fn latest(&self) -> impl Future<Output = Result<ReplicationState, FetchError>>;
    /// `None` when the server has no state for `sequence`.
    fn state(
        &self,
        sequence: u64,
    ) -> impl Future<Output = Result<Option<ReplicationState>, FetchError>>;
}

impl StateSource for FeedClient {
    async fn latest(&self) -> Result<ReplicationState, FetchError> {
        self.latest_state().await
    }

    async fn state(&self, sequence: u64) -> Result<Option<ReplicationState>, FetchError> {
        FeedClient::state(self, sequence).await
    }
}

/// The newest sequence whose timestamp is before `target`; see the module
/// documentation. On a server whose oldest available state is already
/// newer than `target`, this is the oldest available sequence: callers
/// check its timestamp to tell "no history that far back".
pub async fn timestamp_to_sequence(
    source: &impl StateSource,
    target: DateTime<Utc>,
) -> Result<u64, FetchError> {
    let mut upper = source.latest().await?;
    if target >= upper.timestamp || upper.sequence == 0 {
        return Ok(upper.sequence);
    }

    // A lower bound older than the target. Sequence 0 first; on a pruned
    // server, bisect upwards until some state exists.
    let mut lower_id = 0;
    let mut lower = loop {
        match source.state(lower_id).await? {
            Some(state) if state.timestamp < target => break state,
            Some(state) => {
                // Already too new: it becomes the upper bound.
                if state.sequence == 0 || state.sequence + 1 >= upper.sequence {
                    return Ok(state.sequence);
                }
                upper = state;
                lower_id = 0;
            }
            None => {}
        }
        let next = (lower_id + upper.sequence) / 2;
        if next <= lower_id {
            return Ok(upper.sequence);
        }
        lower_id = next;
    };

    while lower.sequence + 1 < upper.sequence {
        let guess = interpolate(&lower, &upper, target);
        let Some(split) = nearest_existing(source, guess, lower.sequence, upper.sequence).await?
        else {
            return Ok(lower.sequence);
        };
        if split.timestamp < target {
            lower = split;
        } else {
            upper = split;
        }
    }
    Ok(lower.sequence)
}

/// Where `target` should be if sequences were evenly spread in time,
/// strictly between the bounds. Falls back to the midpoint when timestamps
/// do not increase (diff timestamps are not guaranteed to be monotonic).
fn interpolate(lower: &ReplicationState, upper: &ReplicationState, target: DateTime<Utc>) -> u64 {
    let span_secs = (upper.timestamp - lower.timestamp).num_seconds();
    let span_seqs = upper.sequence - lower.sequence;
    let guess = if span_secs <= 0 {
        lower.sequence + span_seqs / 2
    } else {
        let goal_secs = (target - lower.timestamp).num_seconds().max(0) as u128;
        let step = (goal_secs * span_seqs as u128).div_ceil(span_secs as u128);
        lower.sequence + step.min(span_seqs as u128) as u64
    };
    guess.clamp(lower.sequence + 1, upper.sequence - 1)
}

/// The state at `guess`, else the nearest existing one below it (down to
/// the lower bound), else above it (up to the upper bound).
async fn nearest_existing(
    source: &impl StateSource,
    guess: u64,
    lower: u64,
    upper: u64,
) -> Result<Option<ReplicationState>, FetchError> {
    if let Some(state) = source.state(guess).await? {
        return Ok(Some(state));
    }
    for sequence in (lower + 1..guess).rev() {
        if let Some(state) = source.state(sequence).await? {
            return Ok(Some(state));
        }
    }
    for sequence in guess + 1..upper {
        if let Some(state) = source.state(sequence).await? {
            return Ok(Some(state));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use std::cell::Cell;
    use std::collections::BTreeMap;

    /// A feed held in memory; counts requests.
    struct Table {
        states: BTreeMap<u64, ReplicationState>,
        requests: Cell<usize>,
    }

    impl Table {
        /// Sequences `first..=last`, one minute apart with a little jitter
        /// (and one pair out of order, as planet diffs can be).
        fn minutely(first: u64, last: u64) -> Self {
            let start = Utc.with_ymd_and_hms(2024, 8, 5, 0, 0, 0).unwrap();
            let states = (first..=last)
                .map(|seq| {
                    let jitter = ((seq * 7919) % 13) as i64;
                    let mut ts = start + Duration::seconds(seq as i64 * 60 + jitter);
                    if seq == first + 500 {
                        ts -= Duration::seconds(90);
                    }
                    (
                        seq,
                        ReplicationState {
                            sequence: seq,
                            timestamp: ts,
                        },
                    )
                })
                .collect();
            Table {
                states,
                requests: Cell::new(0),
            }
        }

        /// What the search must return: the newest sequence strictly before
        /// `target`, else the oldest available.
        fn expected(&self, target: DateTime<Utc>) -> u64 {
            // Newest sequence such that it and the search's monotonic view
            // agree: scan for the last state before target whose successor
            // is not before target.
            let mut best = *self.states.keys().next().unwrap();
            for (seq, st) in &self.states {
                if st.timestamp < target {
                    best = *seq;
                }
            }
            best
        }
    }

    impl StateSource for Table {
        async fn latest(&self) -> Result<ReplicationState, FetchError> {
            self.requests.set(self.requests.get() + 1);
            Ok(*self.states.values().next_back().unwrap())
        }
        async fn state(&self, sequence: u64) -> Result<Option<ReplicationState>, FetchError> {
            self.requests.set(self.requests.get() + 1);
            Ok(self.states.get(&sequence).copied())
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn finds_newest_sequence_before_the_target_on_a_full_feed() {
        let table = Table::minutely(0, 5000);
        for seq in [1u64, 2, 17, 1234, 2999, 4998, 4999] {
            // Targets exactly at a state's timestamp and just after it.
            let ts = table.states[&seq].timestamp;
            for target in [ts, ts + Duration::seconds(1)] {
                let found = block_on(timestamp_to_sequence(&table, target)).unwrap();
                let st = table.states[&found];
                assert!(
                    st.timestamp < target,
                    "seq {seq}: found {found} not before target"
                );
                let next = table.states[&(found + 1)];
                assert!(
                    next.timestamp >= target,
                    "seq {seq}: found {found} but {} is also before the target",
                    found + 1
                );
            }
        }
    }

    #[test]
    fn works_on_a_pruned_feed_and_uses_few_requests() {
        // History before 3_000_000 pruned, as Geofabrik and planet mirrors do.
        let table = Table::minutely(3_000_000, 3_010_000);
        let target = table.states[&3_006_543].timestamp + Duration::seconds(5);
        table.requests.set(0);
        let found = block_on(timestamp_to_sequence(&table, target)).unwrap();
        assert_eq!(found, table.expected(target));
        assert_eq!(found, 3_006_543);
        assert!(
            table.requests.get() < 60,
            "{} requests",
            table.requests.get()
        );
    }

    #[test]
    fn target_before_oldest_available_gives_oldest() {
        let table = Table::minutely(3_000_000, 3_001_000);
        let target = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        let found = block_on(timestamp_to_sequence(&table, target)).unwrap();
        assert_eq!(found, 3_000_000);
        assert!(table.states[&found].timestamp > target);
    }

    #[test]
    fn target_after_newest_gives_newest() {
        let table = Table::minutely(10, 100);
        let target = table.states[&100].timestamp + Duration::hours(1);
        assert_eq!(
            block_on(timestamp_to_sequence(&table, target)).unwrap(),
            100
        );
    }

    #[test]
    fn survives_holes_in_the_middle() {
        let mut table = Table::minutely(0, 2000);
        for seq in 900..1100 {
            table.states.remove(&seq);
        }
        let target = table.states[&1500].timestamp + Duration::seconds(1);
        assert_eq!(
            block_on(timestamp_to_sequence(&table, target)).unwrap(),
            1500
        );
        // A target inside the hole: the newest existing state before it.
        let target =
            Utc.with_ymd_and_hms(2024, 8, 5, 0, 0, 0).unwrap() + Duration::seconds(1000 * 60);
        assert_eq!(
            block_on(timestamp_to_sequence(&table, target)).unwrap(),
            899
        );
    }
}
