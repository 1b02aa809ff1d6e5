//! `tilepipe init`: choose where replication starts and store it.
//!
//! Start points, as `osm2pgsql-replication init` offers them: a date (or N
//! minutes before the newest imported data), a PBF file's replication
//! header, or an explicit sequence. Re-running `init` is how to switch
//! feeds or roll back.

use crate::config::Config;
use crate::osm::pbf_header::read_pbf_header;
use crate::replication::client::{FeedClient, RetryPolicy};
use crate::replication::position::{
    read_position, read_property, write_position, Position, StoredPosition,
};
use crate::replication::search::timestamp_to_sequence;
use crate::replication::state::{format_timestamp, parse_timestamp};
use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing::info;

/// Default wind-back before the newest imported data (osm2pgsql-replication).
const DEFAULT_WIND_BACK_MINUTES: i64 = 180;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("start").args(["start_at", "from_pbf", "sequence"])))]
pub struct Args {
    /// Replication feed base URL (default: replication.url from the config).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Start at a date (ISO 8601, UTC unless a zone is given) or at N
    /// minutes before the newest data in the database.
    #[arg(long, value_name = "ISO8601|MINUTES")]
    start_at: Option<String>,
    /// Start where the extract was cut: the PBF header's replication fields.
    /// With --server, only the header's timestamp is used and the sequence
    /// is searched on that server.
    #[arg(long, value_name = "FILE")]
    from_pbf: Option<PathBuf>,
    /// Start after this sequence number (the next diff applied is N+1).
    #[arg(long, value_name = "N")]
    sequence: Option<u64>,
}

/// A point in time given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartAt {
    Date(DateTime<Utc>),
    MinutesBeforeData(i64),
}

fn parse_start_at(text: &str) -> anyhow::Result<StartAt> {
    let text = text.trim();
    if let Ok(minutes) = text.parse::<i64>() {
        if minutes < 0 {
            bail!("--start-at {text}: minutes must not be negative");
        }
        return Ok(StartAt::MinutesBeforeData(minutes));
    }
    if let Some(ts) = parse_timestamp(text) {
        return Ok(StartAt::Date(ts));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(StartAt::Date(naive.and_utc()));
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(StartAt::Date(
            date.and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc(),
        ));
    }
    bail!("--start-at {text:?}: expected an ISO 8601 date such as 2024-08-05T02:24:04Z, or a number of minutes")
}

/// `init` talks to the server a few times; a short retry rides out a blip
/// without hanging an interactive command.
const INIT_RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(8),
    max_attempts: Some(4),
};

pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let schema = &config.database.middle_schema;
    let mut db = super::connect_db(config)?;
    let runtime = super::runtime()?;
    let server_url = args.server.as_deref().unwrap_or(&config.replication.url);
    let client = |url: &str| -> anyhow::Result<FeedClient> {
        Ok(FeedClient::from_config(url, &config.replication)?.with_retry(INIT_RETRY))
    };

    let position = if let Some(path) = &args.from_pbf {
        let header = read_pbf_header(path)?;
        match (&args.server, &header.base_url, header.sequence, header.timestamp) {
            (None, Some(url), Some(sequence), timestamp) => {
                let client = client(url)?;
                let timestamp = match timestamp {
                    Some(ts) => ts,
                    None => runtime
                        .block_on(client.state(sequence))?
                        .with_context(|| format!("{}: sequence {sequence} from {} has no state on the server", client.feed(), path.display()))?
                        .timestamp,
                };
                Position { base_url: client.feed().base_url().to_string(), sequence, timestamp }
            }
            (server, url, _, Some(timestamp)) if server.is_some() || url.is_some() => {
                let url = server.as_deref().or(url.as_deref()).expect("checked above");
                runtime.block_on(position_for_date(&client(url)?, timestamp))?
            }
            _ => bail!(
                "{}: no usable replication headers (needs a base URL with a sequence or timestamp); use --server with --start-at instead",
                path.display()
            ),
        }
    } else if let Some(sequence) = args.sequence {
        let client = client(server_url)?;
        let state = runtime.block_on(client.state(sequence))?.with_context(|| {
            format!(
                "{}: sequence {sequence} has no state file on the server",
                client.feed()
            )
        })?;
        Position {
            base_url: client.feed().base_url().to_string(),
            sequence,
            timestamp: state.timestamp,
        }
    } else {
        let stored = read_position(&mut db, schema)?;
        if let (None, None, StoredPosition::Set(position)) = (&args.start_at, &args.server, &stored)
        {
            // osm2pgsql-replication keeps the position an import stored.
            info!(
                "keeping the stored start point: {} sequence {} ({})",
                crate::redact::secrets(&position.base_url),
                position.sequence,
                format_timestamp(position.timestamp)
            );
            return Ok(ExitCode::SUCCESS);
        }
        let start = match &args.start_at {
            Some(text) => parse_start_at(text)?,
            None => StartAt::MinutesBeforeData(DEFAULT_WIND_BACK_MINUTES),
        };
        let date = match start {
            StartAt::Date(date) => date,
            StartAt::MinutesBeforeData(minutes) => {
                let newest = newest_data_timestamp(&mut db, schema)?.context(
                    "the database records no import timestamp (current_timestamp in osm2pgsql_properties); give --start-at as a date, --from-pbf or --sequence",
                )?;
                newest - chrono::Duration::minutes(minutes)
            }
        };
        runtime.block_on(position_for_date(&client(server_url)?, date))?
    };

    let mut tx = db.transaction()?;
    write_position(&mut tx, schema, &position)?;
    tx.commit()?;
    info!(
        "initialised updates from {}: starting after sequence {} ({})",
        crate::redact::secrets(&position.base_url),
        position.sequence,
        format_timestamp(position.timestamp)
    );
    Ok(ExitCode::SUCCESS)
}

/// The position for data up to `date`: the newest sequence before it. The
/// stored timestamp is the requested date, as osm2pgsql-replication does,
/// because that is how far the data in the database reaches.
async fn position_for_date(client: &FeedClient, date: DateTime<Utc>) -> anyhow::Result<Position> {
    let sequence = timestamp_to_sequence(client, date)
        .await
        .with_context(|| format!("searching {} for {}", client.feed(), format_timestamp(date)))?;
    let state = client.state(sequence).await?.with_context(|| {
        format!(
            "{}: the state of sequence {sequence} vanished during the search",
            client.feed()
        )
    })?;
    if state.timestamp > date {
        bail!(
            "{} does not have diff files for the requested date {}: its oldest available state is sequence {} at {}",
            client.feed(),
            format_timestamp(date),
            state.sequence,
            format_timestamp(state.timestamp)
        );
    }
    Ok(Position {
        base_url: client.feed().base_url().to_string(),
        sequence,
        timestamp: date,
    })
}

/// The newest object timestamp of the imported data, as osm2pgsql records it.
fn newest_data_timestamp(
    db: &mut postgres::Client,
    schema: &str,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    if matches!(read_position(db, schema)?, StoredPosition::NoTable) {
        return Ok(None);
    }
    Ok(read_property(db, schema, "current_timestamp")?.and_then(|v| parse_timestamp(&v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn start_at_accepts_dates_and_minutes() {
        let expect = StartAt::Date(Utc.with_ymd_and_hms(2024, 8, 5, 2, 24, 4).unwrap());
        assert_eq!(parse_start_at("2024-08-05T02:24:04Z").unwrap(), expect);
        assert_eq!(parse_start_at("2024-08-05T02:24:04").unwrap(), expect);
        assert_eq!(parse_start_at("2024-08-05T04:24:04+02:00").unwrap(), expect);
        assert_eq!(
            parse_start_at("2024-08-05").unwrap(),
            StartAt::Date(Utc.with_ymd_and_hms(2024, 8, 5, 0, 0, 0).unwrap())
        );
        assert_eq!(
            parse_start_at("60").unwrap(),
            StartAt::MinutesBeforeData(60)
        );
        assert!(parse_start_at("-5").is_err());
        assert!(parse_start_at("yesterday")
            .unwrap_err()
            .to_string()
            .contains("yesterday"));
    }
}
