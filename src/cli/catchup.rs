//! `tilepipe catchup [--once]`: apply everything the feed has published
//! since the stored position, in bounded batches, then exit.
//!
//! Each batch is applied in one transaction together with its new feed
//! position: a crash at any moment leaves the database at a batch
//! boundary, and the next run continues from there. Exit codes follow
//! `osm2pgsql-replication update`: 0 done (or already up to date), 1 not
//! set up or the server unreachable, 3 a batch failed to apply; and 4
//! another `tilepipe run` or `catchup` is applying to the database (they
//! share one advisory lock, see [`crate::daemon::take_instance_lock`]).

use crate::apply::settings::ImportSettings;
use crate::config::Config;
use crate::daemon::{act_on_expired, apply_batch, take_instance_lock};
use crate::replication::client::{FeedClient, RetryPolicy};
use crate::replication::follower::Follower;
use crate::replication::position::{read_position, StoredPosition};
use crate::replication::state::format_timestamp;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tracing::{error, info};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Apply one batch only, even when more is pending.
    #[arg(long)]
    once: bool,
}

/// Exit code when another `tilepipe run` or `catchup` holds the database.
pub const LOCKED: u8 = 4;

/// How long to wait for the lock: a killed earlier run's server process
/// keeps it until PostgreSQL notices the client is gone (at its next read
/// or write on the socket), which may be a moment after the kill.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A command-line run rides out short network trouble with the configured
/// backoff, then gives up (the daemon retries forever instead).
const CATCHUP_ATTEMPTS: u32 = 6;

pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let schema = config.database.middle_schema.as_str();
    let mut db = super::connect_db(config)?;
    // The lock `run` holds: the two never apply the same batch at once.
    // Held by this connection until the process exits.
    let db_config = crate::db::resolve(&config.database.url, &crate::db::ProcessEnv)?;
    let deadline = Instant::now() + LOCK_WAIT;
    while let Err(locked) = take_instance_lock(&mut db, &db_config)? {
        if Instant::now() >= deadline {
            error!("{}", locked.message);
            return Ok(ExitCode::from(LOCKED));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Not imported: the error ends the process with exit code 1.
    let settings = ImportSettings::require(&mut db, schema)?;
    crate::apply::flatnodes::check_configured(
        settings.flat_nodes.as_deref(),
        config.import.flat_nodes.as_deref(),
    )?;
    let mut position = match read_position(&mut db, schema)? {
        StoredPosition::Set(position) => position,
        StoredPosition::NoTable | StoredPosition::NotSetUp { .. } => {
            error!("replication is not set up: run `tilepipe init` first");
            return Ok(ExitCode::from(1));
        }
    };
    let client = FeedClient::from_config(&position.base_url, &config.replication)?;
    let retry = RetryPolicy {
        max_attempts: Some(CATCHUP_ATTEMPTS),
        ..client.retry_policy()
    };
    let client = client.with_retry(retry);
    let follower = Follower::new(client, config.replication.max_batch_bytes());
    let runtime = super::runtime()?;
    let latest = match runtime.block_on(follower.latest_state(position.sequence)) {
        Ok(latest) => latest,
        Err(e) => {
            error!(
                "cannot reach the replication server {}: {e}",
                crate::redact::secrets(&position.base_url)
            );
            return Ok(ExitCode::from(1));
        }
    };
    if latest.sequence <= position.sequence {
        info!(
            "database already up to date at sequence {}",
            position.sequence
        );
        return Ok(ExitCode::SUCCESS);
    }
    info!(
        "applying sequences {}..={} from {} ({} behind)",
        position.sequence + 1,
        latest.sequence,
        crate::redact::secrets(&position.base_url),
        super::status::format_span((latest.timestamp - position.timestamp).num_seconds())
    );

    // Tiles of batches committed before a crash are acted on first.
    act_on_expired(&mut db, config, &runtime, None, None, None)?;
    let mut applier = crate::daemon::applier_for(&settings, config)?;
    let progress = CatchupProgress::new(position.sequence, latest.sequence);

    while position.sequence < latest.sequence {
        let batch = match runtime.block_on(follower.next_batch_until(position.sequence, &latest)) {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e) => {
                error!("download failed: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        let started = Instant::now();
        match apply_batch(&mut db, &mut applier, config, &position, &batch) {
            Ok((next, _)) => position = next,
            Err(e) => {
                error!(
                    "applying sequences {}..={} failed, nothing of it was committed: {e:#}",
                    batch.sequences.start(),
                    batch.sequences.end()
                );
                return Ok(ExitCode::from(3));
            }
        }
        if let Err(e) = act_on_expired(&mut db, config, &runtime, None, None, None) {
            error!("expiry: {e:#}");
        }
        progress.advance(position.sequence);
        info!(
            first = batch.sequences.start(),
            last = batch.sequences.end(),
            objects = batch.changes.len(),
            seconds = format_args!("{:.2}", started.elapsed().as_secs_f64()),
            "data imported until {}; backlog remaining: {}",
            format_timestamp(position.timestamp),
            super::status::format_span((chrono::Utc::now() - position.timestamp).num_seconds())
        );
        if args.once {
            break;
        }
    }
    progress.finish();
    Ok(ExitCode::SUCCESS)
}

/// A bar over the pending sequences with an ETA, on a terminal only.
struct CatchupProgress {
    bar: indicatif::ProgressBar,
    first: u64,
}

impl CatchupProgress {
    fn new(position: u64, latest: u64) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(latest - position),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} sequences, {per_sec}, ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        CatchupProgress {
            bar,
            first: position,
        }
    }

    fn advance(&self, position: u64) {
        self.bar.set_position(position - self.first);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
