//! `tilepipe adopt`: taking over, in place, a database that osm2pgsql
//! imported in slim mode, so that tilepipe updates it from then on while
//! `osm2pgsql --append` still can (no lock-in). Two layouts: osm2pgsql
//! 1.8's legacy one, and the new one of 1.9+/2.x (`db_format` 2 in
//! `osm2pgsql_properties`), whose recorded settings ([`Osm2pgsqlRecord`])
//! are taken as they are and checked against the options given.
//!
//! [`inspect`] only reads: it finds the middle tables and checks they are
//! osm2pgsql 1.8's legacy slim layout or the new one
//! (`specs/osm2pgsql-middle.md` §1 and §3, "Detecting the format"), that
//! the indexes osm2pgsql builds at the
//! end of a slim import exist (tilepipe uses them as they are and builds
//! none), that the output tables have exactly the columns the given
//! style and options give them, and where osm2pgsql-replication 1.8 left
//! its position. Anything it cannot take over is an [`AdoptError`] saying
//! why. [`record`] then stores what tilepipe's appliers need in
//! `osm2pgsql_properties` (created if missing; osm2pgsql 1.8 never reads
//! it): the import settings and the middle layout
//! ([`LEGACY18_MIDDLE_FORMAT`] or [`NEW_MIDDLE_FORMAT`]), and the
//! replication position. None of osm2pgsql's own keys (`db_format`,
//! `updatable`, …) are written, so an osm2pgsql 1.9–1.11 that meets the
//! table still takes a 1.8 database for the legacy format it is, and a
//! 2.x finds its own records unchanged. The replication position of the
//! new layout is osm2pgsql's own `replication_*` keys, which tilepipe
//! reads and moves on in every batch's transaction, so
//! `osm2pgsql-replication update` (2.x) carries on after tilepipe.

use super::flex::runtime::Mode;
use super::middle::{
    MiddleLayout, LEGACY18_MIDDLE_FORMAT, MIDDLE_FORMAT_PROPERTY, NEW_MIDDLE_FORMAT,
    NODE_BUCKET_SHIFT,
};
use super::output::{OutputTables, TableKind};
use super::settings::{ImportSettings, SETTINGS_PROPERTY};
use crate::db::properties::{self, PropertiesError, PROPERTIES_TABLE};
use crate::db::quote_ident;
use crate::replication::legacy_status::{self, LegacyStatus, LegacyStatusError};
use crate::replication::position::{self, Position, PositionError, StoredPosition};
use crate::replication::state::format_timestamp;
use postgres::GenericClient;
use std::collections::BTreeSet;
use std::fmt::Write;

/// The `osm2pgsql_properties` key holding when the database was adopted.
pub const ADOPTED_PROPERTY: &str = "tilepipe_adopted";

/// Why a database cannot be adopted, or adopting it failed.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// A catalogue query or statement failed.
    #[error("database: {0}")]
    Postgres(#[from] postgres::Error),
    /// Reading or writing `osm2pgsql_properties`.
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    /// Reading or writing the replication position.
    #[error(transparent)]
    Position(#[from] PositionError),
    /// Reading osm2pgsql-replication 1.8's table.
    #[error(transparent)]
    LegacyStatus(#[from] LegacyStatusError),
    /// The style, Lua transform or flex config given could not be loaded.
    #[error(transparent)]
    Apply(#[from] Box<super::ApplyError>),
    /// Neither middle nor output tables with this prefix in this schema.
    #[error(
        "no osm2pgsql import in schema {schema} with prefix {prefix}: none of {prefix}_ways, \
         {prefix}_rels or the output tables exist (check -d, --prefix and database.middle_schema)"
    )]
    NoImport {
        /// The schema looked in.
        schema: String,
        /// The prefix looked for.
        prefix: String,
    },
    /// Output tables but no middle tables: osm2pgsql ran without `--slim`
    /// (or with `--drop`), and the database cannot be updated.
    #[error(
        "{schema} has the output tables of prefix {prefix} but no middle tables \
         ({prefix}_ways, {prefix}_rels): it was imported without --slim (or with --drop), so \
         neither osm2pgsql --append nor tilepipe can update it; import it again with \
         `tilepipe import` or `osm2pgsql --slim`"
    )]
    NotSlim {
        /// The schema.
        schema: String,
        /// The prefix.
        prefix: String,
    },
    /// A table the import must have is missing.
    #[error("{table} is missing: {why}")]
    MissingTable {
        /// `schema.table`.
        table: String,
        /// What it is and what its absence suggests.
        why: String,
    },
    /// No nodes table, and no flat-nodes file given.
    #[error(
        "{table} is missing: osm2pgsql was run with --flat-nodes and keeps node locations in \
         that file; pass the same file with --flat-nodes FILE"
    )]
    FlatNodes {
        /// `schema.PREFIX_nodes`.
        table: String,
    },
    /// A flat-nodes file given, but the database has a nodes table.
    #[error(
        "--flat-nodes {file} given, but {table} exists: osm2pgsql was run without --flat-nodes \
         and keeps node locations in that table; adopt without --flat-nodes"
    )]
    NodesTableAndFlatNodes {
        /// `schema.PREFIX_nodes`.
        table: String,
        /// The file given.
        file: String,
    },
    /// osm2pgsql 1.9+ recorded a flat-nodes file and there is a nodes
    /// table too (`--middle-with-nodes`, tagged nodes kept in the table).
    #[error(
        "{table} exists beside the flat-nodes file {file} osm2pgsql recorded: it was run with \
         --middle-with-nodes (tagged nodes in the table as well), which tilepipe does not \
         support"
    )]
    MiddleWithNodes {
        /// `schema.PREFIX_nodes`.
        table: String,
        /// The file.
        file: String,
    },
    /// The flat-nodes file given cannot be this database's.
    #[error("flat-nodes file {file}: {why}")]
    FlatNodesFile {
        /// The file given.
        file: String,
        /// What is wrong with it.
        why: String,
    },
    /// `osm2pgsql_properties` records a `db_format` this tilepipe does not
    /// know.
    #[error(
        "{schema}.{PROPERTIES_TABLE} says db_format {format}: unknown middle format (known: \
         1 legacy, 2 new, as osm2pgsql 1.9 to 2.x write them)"
    )]
    UnknownDbFormat {
        /// The schema.
        schema: String,
        /// The recorded value.
        format: String,
    },
    /// An option given differs from what osm2pgsql recorded.
    #[error(
        "{given} was given, but osm2pgsql recorded {property} = {recorded:?} in \
         {schema}.{PROPERTIES_TABLE}; {advice}"
    )]
    RecordedConflict {
        /// The schema.
        schema: String,
        /// The option and its value, as on the command line (`--prefix
        /// other`).
        given: String,
        /// osm2pgsql's property.
        property: String,
        /// Its recorded value.
        recorded: String,
        /// What to do.
        advice: String,
    },
    /// osm2pgsql 1.9+ recorded `attributes` true (`-x`).
    #[error(
        "{schema}.{PROPERTIES_TABLE} says attributes = true: osm2pgsql ran with \
         -x/--extra-attributes, and databases imported with -x are not supported by tilepipe"
    )]
    RecordedAttributes {
        /// The schema.
        schema: String,
    },
    /// osm2pgsql 1.9+ recorded the database as not updatable.
    #[error(
        "{schema}.{PROPERTIES_TABLE} says db_format 0 / updatable false: osm2pgsql imported it \
         without --slim or with --drop, so it cannot be updated"
    )]
    NotUpdatable {
        /// The schema.
        schema: String,
    },
    /// The database is a `tilepipe import` already.
    #[error(
        "schema {schema} already holds a tilepipe import (tilepipe's middle layout, recorded \
         in {PROPERTIES_TABLE}): there is nothing to adopt, `tilepipe apply`/`run` update it \
         as it is"
    )]
    AlreadyTilepipe {
        /// The schema.
        schema: String,
    },
    /// A middle table's columns are not those of the layout osm2pgsql
    /// recorded or the tables show.
    #[error("{table} is not an osm2pgsql {layout} middle table: {mismatch}")]
    UnknownMiddle {
        /// Which layout it was taken for (`1.8`, `1.9+/2.x new-format`).
        layout: String,
        /// `schema.table`.
        table: String,
        /// Which columns differ.
        mismatch: String,
    },
    /// An output table's columns do not match the style and options given.
    #[error(
        "output table {table} does not match the style and options given: {mismatch}; pass \
         the style (-S), --hstore/--hstore-all/-z, --tag-transform-script or -O flex -S CONFIG \
         that osm2pgsql was run with"
    )]
    OutputColumns {
        /// `schema.table`.
        table: String,
        /// Which columns are missing, extra or of another type.
        mismatch: String,
    },
    /// An index osm2pgsql builds at the end of a slim import is missing.
    #[error(
        "{table} has no {index}: osm2pgsql builds it at the end of a slim import, so the import \
         did not finish (or the index was dropped); tilepipe does not build indexes on \
         osm2pgsql's tables: create it, or import again"
    )]
    MissingIndex {
        /// `schema.table`.
        table: String,
        /// Which index.
        index: String,
    },
    /// osm2pgsql ran with `-x`: metadata is in the middle's tags.
    #[error(
        "{table} holds osm2pgsql's -x/--extra-attributes pseudo-tags (osm_version, \
         osm_timestamp, …): databases imported with -x are not supported by tilepipe"
    )]
    ExtraAttributes {
        /// `schema.PREFIX_ways`.
        table: String,
    },
    /// The validity trigger osm2pgsql installs on a slim import's output
    /// tables is missing.
    #[error(
        "{table} has no trigger {trigger}: osm2pgsql installs it at the end of a slim import \
         to keep invalid geometries out, appends included; the import did not finish (or the \
         trigger was dropped): import again"
    )]
    MissingTrigger {
        /// `schema.table`.
        table: String,
        /// The trigger's name.
        trigger: String,
    },
    /// Adopted before with other options.
    #[error(
        "schema {schema} was adopted with other options; differences (adopted → now): {}; \
         run adopt with the options it was adopted with",
        differences.join("; ")
    )]
    Conflict {
        /// The schema.
        schema: String,
        /// One line per differing setting.
        differences: Vec<String>,
    },
}

impl From<super::ApplyError> for AdoptError {
    fn from(e: super::ApplyError) -> Self {
        AdoptError::Apply(Box::new(e))
    }
}

/// Where the node locations are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeLocations {
    /// In `PREFIX_nodes`.
    Table,
    /// In an osm2pgsql flat-nodes file (`--flat-nodes`); no nodes table.
    FlatNodes {
        /// The file.
        path: std::path::PathBuf,
        /// Its size in slots (8 bytes each, one per node id).
        slots: u64,
    },
}

/// An output table found, with what matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTableFound {
    /// `schema.table`.
    pub table: String,
    /// Its columns, in table order.
    pub columns: Vec<String>,
    /// The index that finds rows by object id.
    pub id_index: String,
    /// Estimated rows (`pg_class.reltuples`).
    pub rows: i64,
}

/// Where replication stands, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationFound {
    /// osm2pgsql-replication 1.8's table with a full row.
    Legacy {
        /// The table, without schema.
        table: String,
        /// Its position.
        position: Position,
        /// A different position `osm2pgsql_properties` held (an earlier
        /// adopt, after which osm2pgsql-replication ran again), which
        /// this one replaces.
        replaces: Option<Position>,
    },
    /// That table exists but its row is unusable.
    LegacyIncomplete {
        /// The table, without schema.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// Only a position in `osm2pgsql_properties` (an earlier adopt, or
    /// osm2pgsql 1.9+'s `replication_*` keys).
    Properties(Position),
    /// Nothing: `tilepipe init` must set a start point.
    None,
}

/// What [`inspect`] found: everything [`record`] needs and the report.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The settings to record (the ones asked for, with the layout found).
    pub settings: ImportSettings,
    /// Which program's records were found.
    pub origin: String,
    /// Which osm2pgsql layout the middle tables have, for people.
    pub middle_kind: String,
    /// Middle tables with estimated rows: nodes (unless in a flat-nodes
    /// file), ways, rels.
    pub middle_rows: Vec<(String, i64)>,
    /// How ways are found by node.
    pub way_lookup: String,
    /// How relations are found by member.
    pub relation_lookup: String,
    /// Where node locations are.
    pub node_locations: NodeLocations,
    /// The output tables.
    pub outputs: Vec<OutputTableFound>,
    /// The replication position found.
    pub replication: ReplicationFound,
    /// Whether the properties table exists already.
    pub properties_table: bool,
    /// Adopted before with the same options.
    pub already_adopted: bool,
}

/// A column as the catalogue has it.
struct Column {
    name: String,
    type_text: String,
    type_oid: u32,
}

fn columns_of(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Vec<Column>, AdoptError> {
    Ok(client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
               AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&schema, &table],
        )?
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_text: r.get(1),
            type_oid: r.get(2),
        })
        .collect())
}

/// Compares a table's columns with the expected `(name, SQL type)` list:
/// `None` when they match (same names; same base types where the type
/// text is one PostgreSQL knows), else what differs.
fn column_mismatch(
    client: &mut impl GenericClient,
    found: &[Column],
    expected: &[(String, String)],
) -> Result<Option<String>, AdoptError> {
    let found_names: BTreeSet<&str> = found.iter().map(|c| c.name.as_str()).collect();
    let expected_names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<&str> = expected
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !found_names.contains(n))
        .collect();
    let extra: Vec<&str> = found
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !expected_names.contains(n))
        .collect();
    // Base types only: typmods (geometry subtype, char length) are the
    // writer's business and PostgreSQL enforces them on insert.
    let types: Vec<String> = expected.iter().map(|(_, t)| t.clone()).collect();
    let oids: Vec<Option<u32>> = client
        .query(
            "SELECT to_regtype(t)::oid FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
            &[&types],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut wrong_type = Vec::new();
    for ((name, sql_type), oid) in expected.iter().zip(oids) {
        if let (Some(column), Some(oid)) = (found.iter().find(|c| &c.name == name), oid) {
            if column.type_oid != oid {
                wrong_type.push(format!(
                    "{name} is {} (expected {sql_type})",
                    column.type_text
                ));
            }
        }
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing column(s) {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("extra column(s) {}", extra.join(", ")));
    }
    if !wrong_type.is_empty() {
        parts.push(wrong_type.join(", "));
    }
    Ok((!parts.is_empty()).then(|| parts.join("; ")))
}

fn table_exists(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<bool, AdoptError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2)",
            &[&schema, &table],
        )?
        .get(0))
}

fn estimated_rows(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<i64, AdoptError> {
    Ok(client
        .query_one(
            "SELECT greatest(c.reltuples, 0)::int8 FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )?
        .get(0))
}

/// The name of an index of `table` whose first key column is one of
/// `columns` (for lookups by that column), or which is the primary key
/// when `columns` is empty.
fn index_on(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
    columns: &[&str],
) -> Result<Option<String>, AdoptError> {
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    Ok(client
        .query_opt(
            "SELECT i.relname::text FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
             WHERE n.nspname = $1 AND t.relname = $2 AND x.indisvalid
               AND (CASE WHEN cardinality($3::text[]) = 0 THEN x.indisprimary
                         ELSE a.attname::text = ANY($3) END)
             ORDER BY x.indisprimary DESC, 1 LIMIT 1",
            &[&schema, &table, &columns],
        )?
        .map(|r| r.get(0)))
}

/// Whether a trigger of this name exists on `table`.
fn has_trigger(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
    trigger: &str,
) -> Result<bool, AdoptError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_trigger g
             JOIN pg_class t ON t.oid = g.tgrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = $1 AND t.relname = $2 AND g.tgname = $3",
            &[&schema, &table, &trigger],
        )?
        .is_some())
}

/// Whether an index of this name exists on `table`.
fn named_index(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
    index: &str,
) -> Result<bool, AdoptError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 AND indexname = $3",
            &[&schema, &table, &index],
        )?
        .is_some())
}

/// Whether the ways' tags hold the pseudo-tags osm2pgsql 1.8 adds with
/// `-x` (`buffer_store_tags` in middle-pgsql.cpp appends `osm_user`,
/// `osm_uid`, `osm_version`, `osm_timestamp`, `osm_changeset` to every way
/// of input with metadata). A sample of the first tagged ways tells: with
/// `-x` every one has them.
fn has_extra_attributes(
    client: &mut impl GenericClient,
    schema: &str,
    ways: &str,
) -> Result<bool, AdoptError> {
    const PSEUDO_TAGS: [&str; 4] = ["osm_version", "osm_timestamp", "osm_changeset", "osm_uid"];
    let rows = client.query(
        &format!(
            "SELECT tags FROM {}.{} WHERE tags IS NOT NULL LIMIT 100",
            quote_ident(schema),
            quote_ident(ways)
        ),
        &[],
    )?;
    Ok(rows.iter().any(|row| {
        let tags: Vec<String> = row.get(0);
        tags.chunks(2)
            .any(|pair| PSEUDO_TAGS.contains(&pair[0].as_str()))
    }))
}

/// What an output table of the classic output or of the flex config must
/// have.
struct ExpectedTable {
    schema: String,
    name: String,
    /// `(column, SQL type)` in table order.
    columns: Vec<(String, String)>,
    /// The columns rows are found by; none for a flex table without ids.
    ids: Vec<String>,
    /// Whether osm2pgsql installs `NAME_osm2pgsql_valid` on it, which
    /// drops rows with invalid geometries on insert, appends included.
    validity_trigger: bool,
}

fn expected_outputs(settings: &ImportSettings) -> Result<Vec<ExpectedTable>, AdoptError> {
    if let Some(flex) = &settings.flex {
        let runtime = flex
            .runtime(Mode::Append, &settings.schema)
            .map_err(super::ApplyError::from)?;
        return Ok(runtime
            .tables()
            .into_iter()
            .map(|table| {
                let columns = table
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.sql_type()))
                    .collect();
                ExpectedTable {
                    validity_trigger: super::flex::output::has_validity_trigger(&table),
                    // The id index is on `(type, id)` for `any` ids with
                    // a type column, else on `(id)`, as TableDef::
                    // sql_id_index builds it after osm2pgsql 1.8 (seen on
                    // values.lua's flex_named).
                    ids: table
                        .ids
                        .iter()
                        .flat_map(|ids| ids.type_column.iter().chain([&ids.id_column]))
                        .cloned()
                        .collect(),
                    schema: table.schema,
                    name: table.name,
                    columns,
                }
            })
            .collect());
    }
    let style = settings
        .transform
        .style()
        .map_err(super::ApplyError::from)?;
    let tables = OutputTables::new(
        &settings.schema,
        &settings.prefix,
        std::sync::Arc::new(style),
    );
    Ok(TableKind::ALL
        .iter()
        .map(|&kind| {
            let columns = tables
                .columns(kind)
                .into_iter()
                .map(|c| (c.name, c.sql_type))
                .collect();
            ExpectedTable {
                schema: settings.schema.clone(),
                name: tables.name(kind),
                columns,
                ids: vec!["osm_id".to_string()],
                validity_trigger: true,
            }
        })
        .collect())
}

/// What an earlier tilepipe left in `osm2pgsql_properties`, and what
/// osm2pgsql 1.9+ recorded there.
enum Recorded {
    Nothing,
    /// osm2pgsql 1.9–1.11 with the legacy format (`db_format` 1).
    Osm2pgsqlLegacy {
        version: String,
    },
    /// osm2pgsql 1.9+/2.x with the new format (`db_format` 2).
    Osm2pgsqlNew(Osm2pgsqlRecord),
    /// Adopted before, with these settings.
    Adopted(Box<ImportSettings>),
}

fn recorded(client: &mut impl GenericClient, schema: &str) -> Result<Recorded, AdoptError> {
    if !properties::table_exists(client, schema)? {
        return Ok(Recorded::Nothing);
    }
    let read = |client: &mut _, key| properties::read_property(client, schema, key);
    let format = read(client, MIDDLE_FORMAT_PROPERTY)?;
    let settings = read(client, SETTINGS_PROPERTY)?;
    match (format.as_deref(), settings) {
        (Some(LEGACY18_MIDDLE_FORMAT | NEW_MIDDLE_FORMAT), Some(text)) => {
            let stored: ImportSettings = serde_json::from_str(&text).map_err(|e| {
                super::ApplyError::NotImported(format!(
                    "{SETTINGS_PROPERTY} in {schema}.{PROPERTIES_TABLE} is not valid: {e}"
                ))
            })?;
            return Ok(Recorded::Adopted(Box::new(stored)));
        }
        // Cannot be left by `record` (one transaction); adopting repairs it.
        (Some(LEGACY18_MIDDLE_FORMAT | NEW_MIDDLE_FORMAT), None) => {}
        (Some(_), _) | (None, Some(_)) => {
            return Err(AdoptError::AlreadyTilepipe {
                schema: schema.to_string(),
            })
        }
        (None, None) => {}
    }
    match read(client, "db_format")?.as_deref() {
        None => Ok(Recorded::Nothing),
        Some("1") => Ok(Recorded::Osm2pgsqlLegacy {
            version: read(client, "version")?.unwrap_or_else(|| "1.9+".into()),
        }),
        Some("0") => Err(AdoptError::NotUpdatable {
            schema: schema.to_string(),
        }),
        Some("2") => Ok(Recorded::Osm2pgsqlNew(
            read_osm2pgsql_record(client, schema)?.expect("db_format is recorded"),
        )),
        Some(other) => Err(AdoptError::UnknownDbFormat {
            schema: schema.to_string(),
            format: other.to_string(),
        }),
    }
}

/// What osm2pgsql 1.9+ records about an import in `osm2pgsql_properties`
/// (osm2pgsql's `store_properties` in `src/osm2pgsql.cpp`; keys in
/// specs/osm2pgsql-middle.md, "osm2pgsql_properties"): the options it
/// remembers, which `tilepipe adopt` takes over instead of asking for
/// them again. Empty values (`style`, `flat_node_file`) read as `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Osm2pgsqlRecord {
    /// `db_format`: 0 not updatable, 1 legacy, 2 new.
    pub db_format: String,
    /// `version`, osm2pgsql's short version.
    pub version: Option<String>,
    /// `updatable`: slim and not `--drop`.
    pub updatable: Option<bool>,
    /// `attributes`: `-x`.
    pub attributes: Option<bool>,
    /// `prefix`.
    pub prefix: Option<String>,
    /// `output`: `pgsql`, `flex`, …
    pub output: Option<String>,
    /// `style`: the classic style or the flex config, absolute.
    pub style: Option<String>,
    /// `flat_node_file`, absolute.
    pub flat_node_file: Option<String>,
}

/// osm2pgsql's record in `schema`, `None` when there is none: no
/// properties table, or no `db_format` (osm2pgsql 1.8), or tilepipe's own
/// import (which writes osm2pgsql's keys too, for osm2pgsql-replication).
pub fn read_osm2pgsql_record(
    client: &mut impl GenericClient,
    schema: &str,
) -> Result<Option<Osm2pgsqlRecord>, AdoptError> {
    if !properties::table_exists(client, schema)? {
        return Ok(None);
    }
    let mut read = |key| properties::read_property(client, schema, key);
    if read(MIDDLE_FORMAT_PROPERTY)?.as_deref() == Some(super::middle::MIDDLE_FORMAT) {
        return Ok(None);
    }
    let Some(db_format) = read("db_format")? else {
        return Ok(None);
    };
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    let flag = |value: Option<String>| value.map(|v| v == "true");
    Ok(Some(Osm2pgsqlRecord {
        db_format,
        version: read("version")?,
        updatable: flag(read("updatable")?),
        attributes: flag(read("attributes")?),
        prefix: non_empty(read("prefix")?),
        output: non_empty(read("output")?),
        style: non_empty(read("style")?),
        flat_node_file: non_empty(read("flat_node_file")?),
    }))
}

/// Whether two paths name the same file: equal once made canonical, or,
/// when one cannot be (gone), equal as written.
fn same_file(a: &str, b: &str) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The options given checked against osm2pgsql's record: prefix, output,
/// style (or flex config) and flat-nodes file must be the recorded ones;
/// `-x` and non-updatable imports are refused.
fn check_record(
    schema: &str,
    record: &Osm2pgsqlRecord,
    requested: &ImportSettings,
) -> Result<(), AdoptError> {
    if record.updatable == Some(false) {
        return Err(AdoptError::NotUpdatable {
            schema: schema.into(),
        });
    }
    if record.attributes == Some(true) {
        return Err(AdoptError::RecordedAttributes {
            schema: schema.into(),
        });
    }
    let conflict = |option: &str, given: &str, property: &str, recorded: &str, advice: &str| {
        AdoptError::RecordedConflict {
            schema: schema.into(),
            given: format!("{option} {given}").trim_end().to_string(),
            property: property.into(),
            recorded: recorded.into(),
            advice: advice.into(),
        }
    };
    let omit = "leave the option out to take the recorded value";
    if let Some(prefix) = &record.prefix {
        if *prefix != requested.prefix {
            return Err(conflict(
                "--prefix",
                &requested.prefix,
                "prefix",
                prefix,
                omit,
            ));
        }
    }
    let output = if requested.flex.is_some() {
        "flex"
    } else {
        "pgsql"
    };
    if let Some(recorded) = &record.output {
        if recorded != output {
            return Err(conflict(
                "-O/--output",
                output,
                "output",
                recorded,
                "tilepipe updates the pgsql and flex outputs only; leave -O out to take the \
                 recorded output",
            ));
        }
    }
    let style = match &requested.flex {
        Some(flex) => Some(flex.config_path.clone()),
        None => requested.transform.style_path.clone(),
    };
    match (&record.style, &style) {
        (Some(recorded), Some(given)) if !same_file(recorded, given) => {
            return Err(conflict("-S/--style", given, "style", recorded, omit));
        }
        (Some(recorded), None) => {
            return Err(conflict(
                "no -S/--style (tilepipe's built-in default.style)",
                "",
                "style",
                recorded,
                &format!("pass -S {recorded}"),
            ));
        }
        _ => {}
    }
    let flat_nodes = requested
        .flat_nodes
        .as_ref()
        .map(|p| p.display().to_string());
    match (&record.flat_node_file, &flat_nodes) {
        (Some(recorded), Some(given)) if !same_file(recorded, given) => Err(conflict(
            "--flat-nodes",
            given,
            "flat_node_file",
            recorded,
            omit,
        )),
        (Some(recorded), None) => Err(conflict(
            "no --flat-nodes",
            "",
            "flat_node_file",
            recorded,
            &format!("pass --flat-nodes {recorded}"),
        )),
        (None, Some(given)) => Err(conflict(
            "--flat-nodes",
            given,
            "flat_node_file",
            "",
            "osm2pgsql ran without --flat-nodes and keeps node locations in the nodes table; \
             adopt without --flat-nodes",
        )),
        _ => Ok(()),
    }
}

/// The differences between two settings, as `path: old → new` lines
/// (long texts, the style or config file contents, only as "differs").
fn differences(old: &ImportSettings, new: &ImportSettings) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for key in keys {
                    let null = Value::Null;
                    let sub = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(
                        &sub,
                        x.get(key).unwrap_or(&null),
                        y.get(key).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a == b => {}
            _ => {
                let (ta, tb) = (a.to_string(), b.to_string());
                if ta.len() > 80 || tb.len() > 80 {
                    out.push(format!("{path} differs"));
                } else {
                    out.push(format!("{path}: {ta} → {tb}"));
                }
            }
        }
    }
    let mut out = Vec::new();
    let a = serde_json::to_value(old).expect("settings serialise");
    let b = serde_json::to_value(new).expect("settings serialise");
    walk("", &a, &b, &mut out);
    out
}

/// The middle tables of one schema and prefix, named for queries and
/// messages.
struct MiddleTables<'a> {
    schema: &'a str,
    prefix: &'a str,
    nodes: String,
    ways: String,
    rels: String,
}

impl<'a> MiddleTables<'a> {
    fn new(schema: &'a str, prefix: &'a str) -> Self {
        MiddleTables {
            schema,
            prefix,
            nodes: format!("{prefix}_nodes"),
            ways: format!("{prefix}_ways"),
            rels: format!("{prefix}_rels"),
        }
    }

    /// `schema.table`, for messages.
    fn qualified(&self, table: &str) -> String {
        format!("{}.{table}", self.schema)
    }

    /// The tables there are: all three, or without nodes when their
    /// locations are in a flat-nodes file.
    fn tables(&self, node_locations: &NodeLocations) -> Vec<&String> {
        match node_locations {
            NodeLocations::Table => vec![&self.nodes, &self.ways, &self.rels],
            NodeLocations::FlatNodes { .. } => vec![&self.ways, &self.rels],
        }
    }
}

/// Looks at the database `requested` (schema, prefix, style and options)
/// points to, and either says what it found or why it cannot be adopted.
/// Reads only.
pub fn inspect(
    client: &mut impl GenericClient,
    requested: &ImportSettings,
) -> Result<Inspection, AdoptError> {
    let schema = requested.schema.as_str();
    let middle = MiddleTables::new(schema, &requested.prefix);
    let properties_table = properties::table_exists(client, schema)?;
    let recorded = recorded(client, schema)?;
    if let Some(record) = read_osm2pgsql_record(client, schema)? {
        if record.db_format == "2" {
            check_record(schema, &record, requested)?;
        }
    }
    let expected = expected_outputs(requested)?;
    let recorded_flat_nodes = matches!(&recorded, Recorded::Osm2pgsqlNew(record)
        if record.flat_node_file.is_some());
    let node_locations = check_slim(
        client,
        &middle,
        &expected,
        requested.flat_nodes.as_deref(),
        recorded_flat_nodes,
    )?;
    let (layout, way_lookup, relation_lookup) = check_middle(client, &middle, &node_locations)?;
    let recorded_new = match &recorded {
        Recorded::Osm2pgsqlNew(_) => Some(true),
        Recorded::Osm2pgsqlLegacy { .. } => Some(false),
        Recorded::Nothing | Recorded::Adopted(_) => None,
    };
    let found_new = matches!(layout, MiddleLayout::Osm2pgsqlNew { .. });
    if recorded_new.is_some_and(|new| new != found_new) {
        let (says, found) = if found_new {
            ("db_format 1 (legacy)", "the new format's (tags jsonb)")
        } else {
            ("db_format 2 (new)", "the legacy format's (tags text[])")
        };
        return Err(AdoptError::UnknownMiddle {
            layout: if found_new {
                "1.8"
            } else {
                "1.9+/2.x new-format"
            }
            .into(),
            table: middle.qualified(&middle.ways),
            mismatch: format!(
                "{schema}.{PROPERTIES_TABLE} says {says}, but the middle tables are {found}"
            ),
        });
    }
    let middle_kind = match layout {
        MiddleLayout::Osm2pgsqlNew { .. } => "osm2pgsql 1.9+/2.x new-format tables",
        _ => "osm2pgsql 1.8 legacy slim tables",
    }
    .to_string();
    let outputs = check_outputs(client, &expected, requested.flex.is_some())?;
    let replication = find_replication(client, schema, &requested.prefix)?;

    let mut settings = requested.clone();
    settings.middle = layout;
    let (origin, already_adopted) = match recorded {
        Recorded::Nothing => ("osm2pgsql 1.8 (no osm2pgsql_properties)".to_string(), false),
        Recorded::Osm2pgsqlLegacy { version } => (
            format!("osm2pgsql {version} with the legacy middle format (db_format 1)"),
            false,
        ),
        Recorded::Osm2pgsqlNew(record) => (
            format!(
                "osm2pgsql {} with the new middle format (db_format 2; prefix, output, style \
                 and flat-nodes file as recorded in {PROPERTIES_TABLE})",
                record.version.as_deref().unwrap_or("1.9+")
            ),
            false,
        ),
        Recorded::Adopted(stored) => {
            let mut stored = *stored;
            stored.middle = layout;
            let differences = differences(&stored, &settings);
            if !differences.is_empty() {
                return Err(AdoptError::Conflict {
                    schema: schema.into(),
                    differences,
                });
            }
            let program = match layout {
                MiddleLayout::Osm2pgsqlNew { .. } => "osm2pgsql 1.9+/2.x",
                _ => "osm2pgsql 1.8",
            };
            (format!("{program}, adopted by tilepipe before"), true)
        }
    };
    let mut middle_rows = Vec::new();
    for table in middle.tables(&node_locations) {
        middle_rows.push((table.clone(), estimated_rows(client, schema, table)?));
    }
    Ok(Inspection {
        settings,
        origin,
        middle_kind,
        middle_rows,
        way_lookup,
        relation_lookup,
        node_locations,
        outputs,
        replication,
        properties_table,
        already_adopted,
    })
}

/// Slim or not, flat nodes or not: which of the middle tables exist,
/// beside the output tables.
fn check_slim(
    client: &mut impl GenericClient,
    middle: &MiddleTables,
    expected: &[ExpectedTable],
    flat_nodes: Option<&std::path::Path>,
    recorded_flat_nodes: bool,
) -> Result<NodeLocations, AdoptError> {
    let (schema, prefix) = (middle.schema, middle.prefix);
    let has_ways = table_exists(client, schema, &middle.ways)?;
    let has_rels = table_exists(client, schema, &middle.rels)?;
    match (has_ways, has_rels) {
        (false, false) => {
            let mut any_output = false;
            for table in expected {
                any_output |= table_exists(client, &table.schema, &table.name)?;
            }
            return Err(if any_output {
                AdoptError::NotSlim {
                    schema: schema.into(),
                    prefix: prefix.into(),
                }
            } else {
                AdoptError::NoImport {
                    schema: schema.into(),
                    prefix: prefix.into(),
                }
            });
        }
        (true, false) | (false, true) => {
            let (missing, present) = if has_ways {
                (&middle.rels, &middle.ways)
            } else {
                (&middle.ways, &middle.rels)
            };
            return Err(AdoptError::MissingTable {
                table: middle.qualified(missing),
                why: format!(
                    "{} exists, so osm2pgsql imported in slim mode, but this middle table is gone",
                    middle.qualified(present)
                ),
            });
        }
        (true, true) => {}
    }
    // osm2pgsql 1.8 creates no nodes table with --flat-nodes, and
    // records the file nowhere (specs/osm2pgsql-middle.md §2).
    let nodes_table = table_exists(client, schema, &middle.nodes)?;
    match (nodes_table, flat_nodes) {
        (true, None) => Ok(NodeLocations::Table),
        (true, Some(file)) if recorded_flat_nodes => Err(AdoptError::MiddleWithNodes {
            table: middle.qualified(&middle.nodes),
            file: file.display().to_string(),
        }),
        (true, Some(file)) => Err(AdoptError::NodesTableAndFlatNodes {
            table: middle.qualified(&middle.nodes),
            file: file.display().to_string(),
        }),
        (false, None) => Err(AdoptError::FlatNodes {
            table: middle.qualified(&middle.nodes),
        }),
        (false, Some(file)) => check_flat_nodes_file(client, middle, file),
    }
}

/// The smallest flat-nodes file osm2pgsql writes: a new one holds
/// 1 048 576 slots of 8 bytes (libosmium's growth step,
/// specs/osm2pgsql-middle.md §2). A smaller file is not one of its, and
/// opening it would extend it, which a look must not do.
const MIN_FLAT_NODES_BYTES: u64 = 8 << 20;

/// How many ways' node lists are looked up in a flat-nodes file to tell
/// whether it is this database's.
const FLAT_NODES_SAMPLE_WAYS: i64 = 20;

/// Checks that `file` is an osm2pgsql flat-nodes file holding this
/// database's node locations: the nodes of the first ways read are in it.
fn check_flat_nodes_file(
    client: &mut impl GenericClient,
    middle: &MiddleTables,
    file: &std::path::Path,
) -> Result<NodeLocations, AdoptError> {
    let bad = |why: String| AdoptError::FlatNodesFile {
        file: file.display().to_string(),
        why,
    };
    let size = match std::fs::metadata(file) {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        Ok(_) => return Err(bad("not a file".into())),
        Err(e) => return Err(bad(e.to_string())),
    };
    if size < MIN_FLAT_NODES_BYTES {
        return Err(bad(format!(
            "{size} bytes, less than the 8 MiB osm2pgsql gives every flat-nodes file: not one \
             of its files"
        )));
    }
    let nodes = super::flatnodes::FlatNodes::open(file)
        .map_err(|e| bad(format!("cannot be opened: {e}")))?;
    let rows = client.query(
        &format!(
            "SELECT id, nodes FROM {}.{} LIMIT {FLAT_NODES_SAMPLE_WAYS}",
            quote_ident(middle.schema),
            quote_ident(&middle.ways)
        ),
        &[],
    )?;
    let (mut found, mut missing) = (0usize, Vec::new());
    for row in &rows {
        let way: i64 = row.get(0);
        for node in row.get::<_, Vec<i64>>(1) {
            if nodes.get(node).is_some() {
                found += 1;
            } else {
                missing.push((way, node));
            }
        }
    }
    // An extract's ways may lack a few nodes; a wrong file lacks them all.
    if missing.len() > found {
        let (way, node) = missing[0];
        return Err(bad(format!(
            "it has no location for {} of the {} nodes of the first ways of {} (e.g. node {node} \
             of way {way}): not the file osm2pgsql was run with on this database",
            missing.len(),
            missing.len() + found,
            middle.qualified(&middle.ways)
        )));
    }
    Ok(NodeLocations::FlatNodes {
        path: file.to_path_buf(),
        slots: nodes.slots(),
    })
}

/// The middle's columns, layout and the indexes osm2pgsql builds for
/// appends (`create_fw_dep_indexes` and the primary keys): the layout and
/// how ways and relations are found, for the report. osm2pgsql 1.8's
/// legacy layout (`ways.tags` `text[]`) or 1.9+/2.x's new one (`jsonb`,
/// without tilepipe's `node_buckets`).
fn check_middle(
    client: &mut impl GenericClient,
    middle: &MiddleTables,
    node_locations: &NodeLocations,
) -> Result<(MiddleLayout, String, String), AdoptError> {
    let (schema, prefix) = (middle.schema, middle.prefix);
    let (nodes, ways, rels) = (&middle.nodes, &middle.ways, &middle.rels);
    let ways_columns = columns_of(client, schema, ways)?;
    let tags_type = ways_columns
        .iter()
        .find(|c| c.name == "tags")
        .map(|c| c.type_text.as_str());
    let new_format = tags_type == Some("jsonb");
    if new_format && ways_columns.iter().any(|c| c.name == "node_buckets") {
        return Err(AdoptError::AlreadyTilepipe {
            schema: schema.into(),
        });
    }
    let typed = |name: &str, t: &str| (name.to_string(), t.to_string());
    let middle_expected = if new_format {
        // osm2pgsql 2.x's `middle_pgsql_t` tables without -x.
        [
            (
                nodes,
                vec![
                    typed("id", "int8"),
                    typed("lat", "int4"),
                    typed("lon", "int4"),
                    typed("tags", "jsonb"),
                ],
            ),
            (
                ways,
                vec![
                    typed("id", "int8"),
                    typed("nodes", "int8[]"),
                    typed("tags", "jsonb"),
                ],
            ),
            (
                rels,
                vec![
                    typed("id", "int8"),
                    typed("members", "jsonb"),
                    typed("tags", "jsonb"),
                ],
            ),
        ]
    } else {
        [
            (
                nodes,
                vec![
                    typed("id", "int8"),
                    typed("lat", "int4"),
                    typed("lon", "int4"),
                ],
            ),
            (
                ways,
                vec![
                    typed("id", "int8"),
                    typed("nodes", "int8[]"),
                    typed("tags", "text[]"),
                ],
            ),
            (
                rels,
                vec![
                    typed("id", "int8"),
                    typed("way_off", "int2"),
                    typed("rel_off", "int2"),
                    typed("parts", "int8[]"),
                    typed("members", "text[]"),
                    typed("tags", "text[]"),
                ],
            ),
        ]
    };
    let layout_name = if new_format {
        "1.9+/2.x new-format"
    } else {
        "1.8"
    };
    let present = middle.tables(node_locations);
    for (table, expected) in middle_expected.iter().filter(|(t, _)| present.contains(t)) {
        let found = columns_of(client, schema, table)?;
        if let Some(mismatch) = column_mismatch(client, &found, expected)? {
            return Err(AdoptError::UnknownMiddle {
                layout: layout_name.into(),
                table: middle.qualified(table),
                mismatch,
            });
        }
    }
    // The new format keeps -x attributes in columns, which the column
    // check refuses; 1.8 keeps them as pseudo-tags.
    if !new_format && has_extra_attributes(client, schema, ways)? {
        return Err(AdoptError::ExtraAttributes {
            table: middle.qualified(ways),
        });
    }
    let layout =
        match MiddleLayout::detect(client, schema, prefix).map_err(super::ApplyError::from)? {
            Some(layout @ (MiddleLayout::Legacy18 { .. } | MiddleLayout::Osm2pgsqlNew { .. })) => {
                layout
            }
            _ => {
                return Err(AdoptError::UnknownMiddle {
                    layout: layout_name.into(),
                    table: middle.qualified(ways),
                    mismatch: "not detected as one of osm2pgsql's layouts".into(),
                })
            }
        };

    for table in present {
        if index_on(client, schema, table, &[])?.is_none() {
            return Err(AdoptError::MissingIndex {
                table: middle.qualified(table),
                index: "primary key on id".into(),
            });
        }
    }
    let bucket_index = format!("{prefix}_ways_nodes_bucket_idx");
    let way_lookup = match layout {
        MiddleLayout::Legacy18 { bucket_index: true }
        | MiddleLayout::Osm2pgsqlNew { bucket_index: true } => format!(
            "bucket index {bucket_index} on {prefix}_index_bucket(nodes) (node id >> {NODE_BUCKET_SHIFT})"
        ),
        _ => {
            // `--middle-way-node-index-id-shift 0`: a plain GIN index on
            // nodes, which PostgreSQL names `PREFIX_ways_nodes_idx`.
            let plain = format!("{prefix}_ways_nodes_idx");
            if !named_index(client, schema, ways, &plain)? {
                return Err(AdoptError::MissingIndex {
                    table: middle.qualified(ways),
                    index: format!("{bucket_index} (or {plain}) for finding ways by node"),
                });
            }
            format!("GIN index {plain} on nodes (no bucket index)")
        }
    };
    let member_indexes = if new_format {
        // osm2pgsql 2.x's `create_fw_dep_indexes`: one expression index
        // per member type looked up (nodes, ways).
        vec![
            format!("{prefix}_rels_node_members_idx"),
            format!("{prefix}_rels_way_members_idx"),
        ]
    } else {
        vec![format!("{prefix}_rels_parts_idx")]
    };
    for index in &member_indexes {
        if !named_index(client, schema, rels, index)? {
            return Err(AdoptError::MissingIndex {
                table: middle.qualified(rels),
                index: format!("{index} for finding relations by member"),
            });
        }
    }
    let relation_lookup = if new_format {
        format!(
            "GIN indexes {} on {prefix}_member_ids(members, 'N'/'W')",
            member_indexes.join(", ")
        )
    } else {
        format!("GIN index {} on parts", member_indexes[0])
    };
    Ok((layout, way_lookup, relation_lookup))
}

/// The output tables: present, with the columns the options give, an
/// index by object id and osm2pgsql's validity trigger.
fn check_outputs(
    client: &mut impl GenericClient,
    expected: &[ExpectedTable],
    flex: bool,
) -> Result<Vec<OutputTableFound>, AdoptError> {
    let mut outputs = Vec::new();
    for ExpectedTable {
        schema,
        name: table,
        columns,
        ids,
        validity_trigger,
    } in expected
    {
        let name = format!("{schema}.{table}");
        let found = columns_of(client, schema, table)?;
        if found.is_empty() {
            return Err(AdoptError::MissingTable {
                table: name,
                why: if flex {
                    "the flex config given defines it; was osm2pgsql run with this config?".into()
                } else {
                    "an output table of osm2pgsql's pgsql output; was osm2pgsql run with \
                     another --prefix or --output-pgsql-schema, or -O flex?"
                        .into()
                },
            });
        }
        if let Some(mismatch) = column_mismatch(client, &found, columns)? {
            return Err(AdoptError::OutputColumns {
                table: name,
                mismatch,
            });
        }
        let id_columns: Vec<&str> = ids.iter().map(String::as_str).collect();
        let id_index = if id_columns.is_empty() {
            // A flex table without ids is never updated.
            String::new()
        } else {
            index_on(client, schema, table, &id_columns)?.ok_or_else(|| {
                AdoptError::MissingIndex {
                    table: name.clone(),
                    index: format!("index on {}", id_columns.join(", ")),
                }
            })?
        };
        let trigger = format!("{table}_osm2pgsql_valid");
        if *validity_trigger && !has_trigger(client, schema, table, &trigger)? {
            return Err(AdoptError::MissingTrigger {
                table: name,
                trigger,
            });
        }
        outputs.push(OutputTableFound {
            table: name,
            columns: found.into_iter().map(|c| c.name).collect(),
            id_index,
            rows: estimated_rows(client, schema, table)?,
        });
    }
    Ok(outputs)
}

/// Where replication stands: osm2pgsql-replication 1.8's table first (the
/// cron script moves it on), else what the properties hold.
fn find_replication(
    client: &mut impl GenericClient,
    schema: &str,
    prefix: &str,
) -> Result<ReplicationFound, AdoptError> {
    let status_table = legacy_status::table_name(prefix);
    let stored = match position::read_position(client, schema)? {
        StoredPosition::Set(position) => Some(position),
        _ => None,
    };
    Ok(match legacy_status::read(client, schema, &status_table)? {
        Some(LegacyStatus::Set(position)) => ReplicationFound::Legacy {
            table: status_table,
            replaces: stored.filter(|stored| *stored != position),
            position,
        },
        Some(LegacyStatus::Incomplete { reason }) => ReplicationFound::LegacyIncomplete {
            table: status_table,
            reason,
        },
        None => match stored {
            Some(position) => ReplicationFound::Properties(position),
            None => ReplicationFound::None,
        },
    })
}

/// Records what tilepipe needs, in one transaction of `client` (the
/// caller commits): settings, layout and the replication position.
/// Touches no table but `osm2pgsql_properties` and, with the position
/// it already holds, osm2pgsql-replication's.
pub fn record(client: &mut impl GenericClient, inspection: &Inspection) -> Result<(), AdoptError> {
    let settings = &inspection.settings;
    let schema = settings.schema.as_str();
    properties::ensure_table(client, schema)?;
    let json = serde_json::to_string(settings).expect("settings serialise");
    let now = format_timestamp(chrono::Utc::now());
    let mut pairs = vec![
        (SETTINGS_PROPERTY, json.as_str()),
        (MIDDLE_FORMAT_PROPERTY, settings.middle.format_property()),
    ];
    if !inspection.already_adopted {
        pairs.push((ADOPTED_PROPERTY, now.as_str()));
    }
    match &inspection.replication {
        ReplicationFound::Legacy { table, .. }
        | ReplicationFound::LegacyIncomplete { table, .. } => {
            pairs.push((legacy_status::MIRROR_PROPERTY, table.as_str()));
        }
        ReplicationFound::Properties(_) | ReplicationFound::None => {}
    }
    properties::write(client, schema, &pairs)?;
    if let ReplicationFound::Legacy { position, .. } = &inspection.replication {
        position::write_position(client, schema, position)?;
    }
    Ok(())
}

impl Inspection {
    /// What was found and what adopting does, for people: one line each.
    pub fn report(&self) -> Vec<String> {
        let s = &self.settings;
        let mut lines = Vec::new();
        let mut line = |text: String| lines.push(text);
        line(format!(
            "found in schema {}, prefix {}: {}",
            s.schema, s.prefix, self.origin
        ));
        let rows: Vec<String> = self
            .middle_rows
            .iter()
            .map(|(table, rows)| format!("{table} (~{rows} rows)"))
            .collect();
        line(format!(
            "  middle: {} {}",
            self.middle_kind,
            rows.join(", ")
        ));
        line(format!("  ways by node: {}", self.way_lookup));
        line(format!("  relations by member: {}", self.relation_lookup));
        match &self.node_locations {
            NodeLocations::Table => line(format!(
                "  node locations: in {}_nodes (no flat-nodes file)",
                s.prefix
            )),
            NodeLocations::FlatNodes { path, slots } => line(format!(
                "  node locations: in the flat-nodes file {} ({slots} slots; no {}_nodes table)",
                path.display(),
                s.prefix
            )),
        }
        let output = if s.flex.is_some() { "flex" } else { "pgsql" };
        line(format!(
            "  output: {output}, {} tables matching the {}",
            self.outputs.len(),
            if s.flex.is_some() {
                "flex config"
            } else {
                "style and options"
            }
        ));
        for table in &self.outputs {
            let mut text = format!("    {} (~{} rows", table.table, table.rows);
            if !table.id_index.is_empty() {
                let _ = write!(text, ", id index {}", table.id_index);
            }
            let _ = write!(text, "): {}", table.columns.join(", "));
            line(text);
        }
        match &self.replication {
            ReplicationFound::Legacy {
                table,
                position,
                replaces,
            } => {
                line(format!(
                    "  replication: {table} (osm2pgsql-replication 1.8) at {} sequence {} ({})",
                    crate::redact::secrets(&position.base_url),
                    position.sequence,
                    format_timestamp(position.timestamp)
                ));
                if let Some(old) = replaces {
                    line(format!(
                        "    (tilepipe's stored position, sequence {} ({}), is replaced by it)",
                        old.sequence,
                        format_timestamp(old.timestamp)
                    ));
                }
            }
            ReplicationFound::LegacyIncomplete { table, reason } => line(format!(
                "  replication: {table} exists but holds no usable position ({reason})"
            )),
            ReplicationFound::Properties(position) => line(format!(
                "  replication: {PROPERTIES_TABLE} at {} sequence {} ({})",
                crate::redact::secrets(&position.base_url),
                position.sequence,
                format_timestamp(position.timestamp)
            )),
            ReplicationFound::None => line("  replication: no position found".into()),
        }

        if self.already_adopted {
            line("already adopted with these options: the settings are recorded again".into());
        } else {
            line("adopting:".into());
        }
        line(format!(
            "  record the import settings ({}) and middle layout {} in {}.{PROPERTIES_TABLE}{}",
            describe_all(s),
            s.middle.format_property(),
            s.schema,
            if self.properties_table {
                ""
            } else {
                " (created; osm2pgsql 1.8 does not use it)"
            }
        ));
        line("  leave every table and index as it is: updates use the indexes listed above".into());
        match &self.replication {
            ReplicationFound::Legacy {
                table, position, ..
            } => line(format!(
                "  continue replication after sequence {}: `tilepipe run` or `tilepipe catchup`; \
                 every batch also moves {table} on, so osm2pgsql-replication can take over again",
                position.sequence
            )),
            ReplicationFound::LegacyIncomplete { table, .. } => line(format!(
                "  no start point: run `tilepipe init` (--start-at DATE, --sequence N or \
                 --from-pbf FILE); {table} is kept in step with tilepipe's position from then on"
            )),
            ReplicationFound::Properties(position) => line(format!(
                "  continue replication after sequence {}: `tilepipe run` or `tilepipe catchup`",
                position.sequence
            )),
            ReplicationFound::None => line(
                "  no start point: run `tilepipe init` (--start-at DATE of the extract, \
                 --sequence N or --from-pbf FILE) before `tilepipe run`/`catchup`"
                    .into(),
            ),
        }
        lines
    }
}

/// The settings in a few words for the report.
fn describe_settings(s: &ImportSettings) -> String {
    if let Some(flex) = &s.flex {
        return format!("flex config {}", flex.config_path);
    }
    let t = &s.transform;
    let mut parts = vec![format!("style {}", s.style_name())];
    match t.hstore {
        super::style::HstoreMode::None => {}
        super::style::HstoreMode::Match => parts.push("--hstore".into()),
        super::style::HstoreMode::All => parts.push("--hstore-all".into()),
    }
    if t.hstore_match_only {
        parts.push("--hstore-match-only".into());
    }
    for column in &t.hstore_columns {
        parts.push(format!("-z {column}"));
    }
    if t.multi_geometry {
        parts.push("-G".into());
    }
    if t.keep_coastlines {
        parts.push("--keep-coastlines".into());
    }
    if let Some(script) = &t.lua_script_path {
        parts.push(format!("--tag-transform-script {script}"));
    }
    parts.join(", ")
}

/// The settings in a few words for the report: output options, then the
/// flat-nodes file if any.
fn describe_all(s: &ImportSettings) -> String {
    match &s.flat_nodes {
        Some(path) => format!("{}, --flat-nodes {}", describe_settings(s), path.display()),
        None => describe_settings(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::style::HstoreMode;

    #[test]
    fn differences_name_the_setting_and_both_values() {
        let old = ImportSettings::default();
        let mut new = old.clone();
        new.transform.hstore = HstoreMode::Match;
        new.transform.multi_geometry = true;
        new.transform.style_text = Some("x".repeat(200));
        let lines = differences(&old, &new);
        assert_eq!(
            lines,
            [
                "transform.hstore: \"none\" → \"match\"",
                "transform.multi_geometry: false → true",
                "transform.style_text differs",
            ],
            "{lines:?}"
        );
        assert!(differences(&old, &old.clone()).is_empty());
    }
}
