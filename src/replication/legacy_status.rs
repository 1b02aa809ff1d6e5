//! osm2pgsql 1.8's replication state: the one-row table
//! `<prefix>_replication_status (url TEXT, sequence INTEGER, importdate
//! TIMESTAMPTZ)` in the middle schema, which its `osm2pgsql-replication`
//! script creates on `init` (drop, create, insert) and moves on after each
//! batch (`UPDATE … SET sequence, importdate`); see
//! `specs/osm2pgsql-middle.md` §5 and `specs/replication.md` §7.1.
//!
//! `tilepipe adopt` takes its position over ([`read`]) and records the
//! table's name ([`MIRROR_PROPERTY`]); from then on every stored position
//! is written to it too, in the same transaction ([`mirror`], called by
//! [`super::position::write_position`]), so `osm2pgsql-replication
//! update` carries on where tilepipe stopped.

use super::position::Position;
use crate::db::{properties, quote_ident};
use chrono::{DateTime, Utc};
use postgres::GenericClient;

/// The `osm2pgsql_properties` key naming the legacy table that mirrors the
/// position (the table name only; it lives in the properties' schema).
pub const MIRROR_PROPERTY: &str = "tilepipe_legacy_replication_table";

/// The table's name for a prefix, as osm2pgsql-replication 1.8 names it.
pub fn table_name(prefix: &str) -> String {
    format!("{prefix}_replication_status")
}

/// A query on the legacy table failed, or its row cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LegacyStatusError {
    /// A statement on the table failed.
    #[error("database error on {table}: {source}")]
    Database {
        /// `schema.table`.
        table: String,
        /// The database's error.
        #[source]
        source: postgres::Error,
    },
    /// Reading or writing the properties table failed.
    #[error(transparent)]
    Properties(#[from] properties::PropertiesError),
    /// The position does not fit the table's `sequence INTEGER`.
    #[error("{table}: sequence {sequence} does not fit its INTEGER column")]
    SequenceTooLarge {
        /// `schema.table`.
        table: String,
        /// The sequence.
        sequence: u64,
    },
}

/// What the legacy table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyStatus {
    /// A row with all three values: where osm2pgsql-replication stands.
    Set(Position),
    /// The table exists but its row is missing or has NULLs.
    Incomplete {
        /// What is missing, for messages.
        reason: String,
    },
}

fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

fn exists(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<bool, LegacyStatusError> {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2)",
            &[&schema, &table],
        )
        .map(|row| row.get(0))
        .map_err(|source| LegacyStatusError::Database {
            table: format!("{schema}.{table}"),
            source,
        })
}

/// The legacy table `table` in `schema`: `None` when it does not exist.
pub fn read(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Option<LegacyStatus>, LegacyStatusError> {
    if !exists(client, schema, table)? {
        return Ok(None);
    }
    let err = |source| LegacyStatusError::Database {
        table: format!("{schema}.{table}"),
        source,
    };
    // The script keeps one row; should there be more, the furthest one.
    let row = client
        .query_opt(
            &format!(
                "SELECT url, sequence::int8, importdate FROM {} ORDER BY sequence DESC NULLS LAST LIMIT 1",
                qualified(schema, table)
            ),
            &[],
        )
        .map_err(err)?;
    let Some(row) = row else {
        return Ok(Some(LegacyStatus::Incomplete {
            reason: format!("{schema}.{table} has no row"),
        }));
    };
    let url: Option<String> = row.get(0);
    let sequence: Option<i64> = row.get(1);
    let importdate: Option<DateTime<Utc>> = row.get(2);
    Ok(Some(match (url, sequence, importdate) {
        (Some(base_url), Some(sequence), Some(timestamp)) if sequence >= 0 && !base_url.is_empty() => {
            LegacyStatus::Set(Position {
                base_url,
                sequence: sequence as u64,
                timestamp,
            })
        }
        (url, sequence, importdate) => LegacyStatus::Incomplete {
            reason: format!(
                "{schema}.{table} holds url {url:?}, sequence {sequence:?}, importdate {importdate:?}"
            ),
        },
    }))
}

/// Writes `position` to the legacy table that [`MIRROR_PROPERTY`] names,
/// if any (and if it still exists): its one row is updated, or inserted
/// when missing. Call it in the transaction that stores the position.
pub fn mirror(
    client: &mut impl GenericClient,
    schema: &str,
    position: &Position,
) -> Result<(), LegacyStatusError> {
    let Some(table) = properties::read_property(client, schema, MIRROR_PROPERTY)? else {
        return Ok(());
    };
    if !exists(client, schema, &table)? {
        tracing::debug!("{schema}.{table} is gone: the position is no longer mirrored there");
        return Ok(());
    }
    let name = qualified(schema, &table);
    let sequence =
        i32::try_from(position.sequence).map_err(|_| LegacyStatusError::SequenceTooLarge {
            table: format!("{schema}.{table}"),
            sequence: position.sequence,
        })?;
    let err = |source| LegacyStatusError::Database {
        table: format!("{schema}.{table}"),
        source,
    };
    let url = position.base_url.as_str();
    let updated = client
        .execute(
            &format!("UPDATE {name} SET url = $1, sequence = $2, importdate = $3"),
            &[&url, &sequence, &position.timestamp],
        )
        .map_err(err)?;
    if updated == 0 {
        client
            .execute(
                &format!("INSERT INTO {name} (url, sequence, importdate) VALUES ($1, $2, $3)"),
                &[&url, &sequence, &position.timestamp],
            )
            .map_err(err)?;
    }
    Ok(())
}
