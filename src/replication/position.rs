//! The feed position stored in the database, as osm2pgsql 2.x does: three
//! rows of `osm2pgsql_properties(property, value)` in the middle schema.
//!
//! Writing takes any `GenericClient`, so the apply stage stores the position
//! inside the same transaction as the data of the batch that reaches it: a
//! crash leaves both or neither, never a position ahead of the data.

use super::state::{format_timestamp, parse_timestamp};
use crate::db::quote_ident;
use chrono::{DateTime, Utc};
use postgres::GenericClient;

pub const PROPERTIES_TABLE: &str = "osm2pgsql_properties";
const KEY_URL: &str = "replication_base_url";
const KEY_SEQUENCE: &str = "replication_sequence_number";
const KEY_TIMESTAMP: &str = "replication_timestamp";

/// Where a database stands in its feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub base_url: String,
    pub sequence: u64,
    pub timestamp: DateTime<Utc>,
}

/// What the database knows about replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredPosition {
    /// No `osm2pgsql_properties` table: nothing was imported or initialised.
    NoTable,
    /// The table exists but lacks (valid) replication keys: `init` never ran.
    NotSetUp {
        reason: String,
    },
    Set(Position),
}

#[derive(Debug, thiserror::Error)]
pub enum PositionError {
    #[error("database error on {table}: {source}")]
    Db {
        table: String,
        source: postgres::Error,
    },
}

fn table_name(schema: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(PROPERTIES_TABLE))
}

fn db_error(schema: &str) -> impl Fn(postgres::Error) -> PositionError + '_ {
    move |source| PositionError::Db {
        table: format!("{schema}.{PROPERTIES_TABLE}"),
        source,
    }
}

/// Creates the properties table if missing (same definition as osm2pgsql).
pub fn ensure_table(client: &mut impl GenericClient, schema: &str) -> Result<(), PositionError> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (property TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
            table_name(schema)
        ))
        .map_err(db_error(schema))
}

/// Reads one property, `None` when absent.
pub fn read_property(
    client: &mut impl GenericClient,
    schema: &str,
    property: &str,
) -> Result<Option<String>, PositionError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT value FROM {} WHERE property = $1",
                table_name(schema)
            ),
            &[&property],
        )
        .map_err(db_error(schema))?;
    Ok(row.map(|r| r.get(0)))
}

/// Upserts properties, as osm2pgsql does (`ON CONFLICT DO UPDATE`).
pub fn write_properties(
    client: &mut impl GenericClient,
    schema: &str,
    properties: &[(&str, &str)],
) -> Result<(), PositionError> {
    let statement = format!(
        "INSERT INTO {} (property, value) VALUES ($1, $2) \
         ON CONFLICT (property) DO UPDATE SET value = EXCLUDED.value",
        table_name(schema)
    );
    for (property, value) in properties {
        client
            .execute(&statement, &[property, value])
            .map_err(db_error(schema))?;
    }
    Ok(())
}

/// Reads the stored position.
pub fn read_position(
    client: &mut impl GenericClient,
    schema: &str,
) -> Result<StoredPosition, PositionError> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2)",
            &[&schema, &PROPERTIES_TABLE],
        )
        .map_err(db_error(schema))?
        .get(0);
    if !exists {
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

/// Stores the position (creating the table if needed). Call it inside the
/// transaction that applies the batch reaching this position.
pub fn write_position(
    client: &mut impl GenericClient,
    schema: &str,
    position: &Position,
) -> Result<(), PositionError> {
    ensure_table(client, schema)?;
    let sequence = position.sequence.to_string();
    let timestamp = format_timestamp(position.timestamp);
    write_properties(
        client,
        schema,
        &[
            (KEY_URL, position.base_url.as_str()),
            (KEY_SEQUENCE, sequence.as_str()),
            (KEY_TIMESTAMP, timestamp.as_str()),
        ],
    )
}
