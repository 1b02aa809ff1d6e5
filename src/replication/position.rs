//! The feed position stored in the database, as osm2pgsql 2.x does: three
//! rows of `osm2pgsql_properties(property, value)` in the middle schema.
//!
//! Writing takes any `GenericClient`, so the apply stage stores the position
//! inside the same transaction as the data of the batch that reaches it: a
//! crash leaves both or neither, never a position ahead of the data.

use super::state::{format_timestamp, parse_timestamp};
use chrono::{DateTime, Utc};
use postgres::GenericClient;

use crate::db::properties::{self, PropertiesError};
pub use crate::db::properties::{read_property, PROPERTIES_TABLE};

const KEY_URL: &str = "replication_base_url";
const KEY_SEQUENCE: &str = "replication_sequence_number";
const KEY_TIMESTAMP: &str = "replication_timestamp";

/// Where a database stands in its feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The feed's base URL (`replication_base_url`).
    pub base_url: String,
    /// The last sequence applied (`replication_sequence_number`).
    pub sequence: u64,
    /// That sequence's state timestamp (`replication_timestamp`).
    pub timestamp: DateTime<Utc>,
}

/// What the database knows about replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredPosition {
    /// No `osm2pgsql_properties` table: nothing was imported or initialised.
    NoTable,
    /// The table exists but lacks (valid) replication keys: `init` never ran.
    NotSetUp {
        /// Which key is missing or invalid, for messages.
        reason: String,
    },
    /// All three keys are present and valid.
    Set(Position),
}

/// Errors reading or writing the position.
#[derive(Debug, thiserror::Error)]
pub enum PositionError {
    /// Reading or writing `osm2pgsql_properties`.
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    /// Mirroring it to osm2pgsql 1.8's `<prefix>_replication_status`.
    #[error(transparent)]
    Legacy(#[from] super::legacy_status::LegacyStatusError),
}

/// Reads the stored position.
pub fn read_position(
    client: &mut impl GenericClient,
    schema: &str,
) -> Result<StoredPosition, PositionError> {
    if !properties::table_exists(client, schema)? {
        return Ok(StoredPosition::NoTable);
    }
    let url = read_property(client, schema, KEY_URL)?;
    let sequence = read_property(client, schema, KEY_SEQUENCE)?;
    let timestamp = read_property(client, schema, KEY_TIMESTAMP)?;
    let (Some(base_url), Some(sequence), Some(timestamp)) = (url, sequence, timestamp) else {
        return Ok(StoredPosition::NotSetUp {
            reason: format!(
                "{PROPERTIES_TABLE} lacks {KEY_URL}, {KEY_SEQUENCE} or {KEY_TIMESTAMP}"
            ),
        });
    };
    let Ok(sequence) = sequence.parse::<u64>() else {
        return Ok(StoredPosition::NotSetUp {
            reason: format!("{KEY_SEQUENCE} {sequence:?} is not a number"),
        });
    };
    let Some(timestamp) = parse_timestamp(&timestamp) else {
        return Ok(StoredPosition::NotSetUp {
            reason: format!("{KEY_TIMESTAMP} {timestamp:?} is not a timestamp"),
        });
    };
    Ok(StoredPosition::Set(Position {
        base_url,
        sequence,
        timestamp,
    }))
}

/// Stores the position (creating the table if needed), and mirrors it to
/// osm2pgsql 1.8's replication table when `tilepipe adopt` found one
/// ([`super::legacy_status::mirror`]). Call it inside the transaction
/// that applies the batch reaching this position.
pub fn write_position(
    client: &mut impl GenericClient,
    schema: &str,
    position: &Position,
) -> Result<(), PositionError> {
    properties::ensure_table(client, schema)?;
    let sequence = position.sequence.to_string();
    let timestamp = format_timestamp(position.timestamp);
    properties::write(
        client,
        schema,
        &[
            (KEY_URL, position.base_url.as_str()),
            (KEY_SEQUENCE, sequence.as_str()),
            (KEY_TIMESTAMP, timestamp.as_str()),
        ],
    )?;
    super::legacy_status::mirror(client, schema, position)?;
    Ok(())
}
