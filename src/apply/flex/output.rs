//! The tables of a flex config in the database: created for an import,
//! loaded by text COPY, reordered, indexed and guarded as osm2pgsql 1.8
//! does it (`table_connection_t::start` and `stop` in `flex-table.cpp`),
//! and read or deleted per object during updates, handing back what
//! expiry needs.
//!
//! An import loads each table into an unlogged staging table with two
//! extra columns: whether the row's checked geometries are proven valid
//! and the spatial sort key of its first geometry. The finish step then
//! does in one pass what osm2pgsql does with its validity trigger and its
//! clustering copy: rows whose checked geometries are not valid
//! (`ST_IsValid`, only asked for rows not proven valid) are dropped, the
//! rest copied in geometry order into the table created with its final
//! definition (`<name>_tmp`, renamed), indexed and analysed, and the
//! trigger installed for updates.
//!
//! Text COPY, as osm2pgsql uses, so that a column's `sql_type` may be
//! anything its text form converts to.

use super::runtime::FlexRow;
use super::table::{ColumnType, TableDef};
use super::value::write_integer;
use crate::apply::geom::ewkb;
use crate::db::quote_ident;
use crate::osm::{ObjectId, ObjectType};
use postgres::{CopyInWriter, GenericClient};
use std::io::Write;

/// A flex table statement or COPY failed.
#[derive(Debug, thiserror::Error)]
#[error("flex table {table}: {source}")]
pub struct FlexOutputError {
    /// The table it was working on.
    pub table: String,
    /// What went wrong.
    #[source]
    pub source: FlexOutputCause,
}

/// The cause of a [`FlexOutputError`].
#[derive(Debug, thiserror::Error)]
pub enum FlexOutputCause {
    /// PostgreSQL refused a statement or the COPY.
    #[error(transparent)]
    Db(#[from] postgres::Error),
    /// Sending COPY data failed.
    #[error("sending COPY data: {0}")]
    Send(#[from] std::io::Error),
}

/// A row as stored, as much as expiry needs: its object, its geometries
/// in EPSG:3857 and a digest of every other column.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFlexRow {
    /// Index of the table.
    pub table: usize,
    /// The object the row belongs to.
    pub object: ObjectId,
    /// EWKB of each non-NULL geometry column, transformed to 3857, with
    /// the column's index in [`TableDef::columns`].
    pub geometries: Vec<(usize, Vec<u8>)>,
    /// Hash of every non-geometry column.
    pub digest: i64,
    /// Per column of [`TableDef::digest_columns`] a hash of its value,
    /// NULL for NULL: which columns a rewrite changed.
    pub column_digests: Vec<Option<i64>>,
}

/// The extra columns of an import's staging tables.
const STAGING_VALID: &str = "tilepipe_valid";
const STAGING_ORDER: &str = "tilepipe_order";

/// The tables of one flex config.
#[derive(Debug, Clone)]
pub struct FlexTables {
    tables: Vec<TableDef>,
}

impl FlexTables {
    /// The tables `define_table` declared, in order.
    pub fn new(tables: Vec<TableDef>) -> FlexTables {
        FlexTables { tables }
    }

    /// The definitions.
    pub fn tables(&self) -> &[TableDef] {
        &self.tables
    }

    fn err<E: Into<FlexOutputCause>>(&self, table: usize) -> impl Fn(E) -> FlexOutputError + '_ {
        move |source| FlexOutputError {
            table: self.tables[table].name.clone(),
            source: source.into(),
        }
    }

    /// Drops the tables (with `CASCADE`, as osm2pgsql) and creates the
    /// unlogged staging tables an import loads.
    pub fn create(&self, client: &mut impl GenericClient) -> Result<(), FlexOutputError> {
        for (i, table) in self.tables.iter().enumerate() {
            let qualified = table.qualified_name();
            let tmp = format!(
                "{}.{}",
                quote_ident(&table.schema),
                quote_ident(&tmp_name(table))
            );
            let mut create = table.sql_create(&table.name, true);
            let columns_end = create.find(") WITH").expect("unlogged tables have options");
            create.insert_str(
                columns_end,
                &format!(", {STAGING_VALID} bool, {STAGING_ORDER} int8"),
            );
            client
                .batch_execute(&format!(
                    "SET client_min_messages = WARNING;
                     DROP TABLE IF EXISTS {qualified} CASCADE;
                     DROP TABLE IF EXISTS {tmp};
                     RESET client_min_messages;
                     {create};"
                ))
                .map_err(self.err(i))?;
        }
        Ok(())
    }

    /// Starts a COPY into table `table`; `staging` adds the import facts
    /// of [`create`](Self::create)'s staging tables to every row.
    pub fn copy_writer<'c>(
        &self,
        client: &'c mut impl GenericClient,
        table: usize,
        staging: bool,
    ) -> Result<FlexCopy<'c>, FlexOutputError> {
        let definition = &self.tables[table];
        let mut columns: Vec<String> = definition
            .written_columns()
            .map(|c| quote_ident(&c.name))
            .collect();
        if staging {
            columns.push(STAGING_VALID.into());
            columns.push(STAGING_ORDER.into());
        }
        let statement = format!(
            "COPY {} ({}) FROM STDIN",
            definition.qualified_name(),
            columns.join(", ")
        );
        let sink = client.copy_in(&statement).map_err(self.err(table))?;
        Ok(FlexCopy {
            sink,
            buf: Vec::with_capacity(COPY_CHUNK + 4096),
            table: definition.name.clone(),
            staging,
        })
    }

    /// Turns a loaded staging table into the final one: invalid rows
    /// dropped, ordered by geometry when clustered, indexes, id index,
    /// validity trigger, `ANALYZE`.
    pub fn finish_import(
        &self,
        client: &mut impl GenericClient,
        table: usize,
    ) -> Result<u64, FlexOutputError> {
        let definition = &self.tables[table];
        let qualified = definition.qualified_name();
        let tmp = tmp_name(definition);
        let columns: Vec<String> = definition
            .written_columns()
            .map(|c| quote_ident(&c.name))
            .collect();
        let columns = columns.join(", ");
        let checks = validity_checks(definition, "");
        let keep = if checks.is_empty() {
            String::new()
        } else {
            format!(" WHERE {STAGING_VALID} OR ({checks})")
        };
        // The key is PostGIS's order of the first geometry; the geometry
        // itself only breaks ties, as in osm2pgsql's `ORDER BY geom`.
        let order = match definition.geometry_column().filter(|_| definition.cluster) {
            Some(geometry) => format!(" ORDER BY {STAGING_ORDER}, {}", quote_ident(&geometry.name)),
            None => String::new(),
        };
        let schema = quote_ident(&definition.schema);
        let tmp_quoted = quote_ident(&tmp);
        client
            .batch_execute(&format!(
                "BEGIN;
                 {memory}
                 SET client_min_messages = WARNING;
                 {create};",
                memory = crate::apply::BUILD_MEMORY_SQL,
                create = definition.sql_create(&tmp, false),
            ))
            .map_err(self.err(table))?;
        // Run alone, so that its command tag gives the rows kept.
        let kept = client
            .execute(
                &format!(
                    "INSERT INTO {schema}.{tmp_quoted} ({columns}) \
                     SELECT {columns} FROM {qualified}{keep}{order}"
                ),
                &[],
            )
            .map_err(self.err(table))?;
        let mut sql = format!(
            "DROP TABLE {qualified};
             ALTER TABLE {schema}.{tmp_quoted} RENAME TO {name};
             RESET client_min_messages;",
            name = quote_ident(&definition.name),
        );
        for index in &definition.indexes {
            sql.push_str(&index.sql_create(&qualified));
            sql.push_str(";\n");
        }
        if let Some(id_index) = definition.sql_id_index() {
            sql.push_str(&id_index);
            sql.push_str(";\n");
        }
        sql.push_str(&trigger_sql(definition));
        sql.push_str(&format!("ANALYZE {qualified}; COMMIT;"));
        client.batch_execute(&sql).map_err(self.err(table))?;
        Ok(kept)
    }

    /// The tables rows of `kind` objects go to, with an id column.
    fn tables_for(&self, kind: ObjectType) -> impl Iterator<Item = (usize, &TableDef)> {
        self.tables
            .iter()
            .enumerate()
            .filter(move |(_, t)| t.ids.as_ref().is_some_and(|ids| ids.kind.accepts(kind)))
    }

    /// Deletes the rows of the `kind` objects `ids` from every table that
    /// takes them, returning what they held.
    pub fn delete(
        &self,
        client: &mut impl GenericClient,
        kind: ObjectType,
        ids: &[i64],
    ) -> Result<Vec<StoredFlexRow>, FlexOutputError> {
        self.rows_of(
            client,
            kind,
            ids,
            "DELETE FROM {table} t WHERE {match} RETURNING {fields}",
        )
    }

    /// The rows of the `kind` objects `ids` as they are now, shaped as
    /// [`delete`](Self::delete) returns them.
    pub fn read_rows(
        &self,
        client: &mut impl GenericClient,
        kind: ObjectType,
        ids: &[i64],
    ) -> Result<Vec<StoredFlexRow>, FlexOutputError> {
        self.rows_of(
            client,
            kind,
            ids,
            "SELECT {fields} FROM {table} t WHERE {match}",
        )
    }

    fn rows_of(
        &self,
        client: &mut impl GenericClient,
        kind: ObjectType,
        ids: &[i64],
        template: &str,
    ) -> Result<Vec<StoredFlexRow>, FlexOutputError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut stored = Vec::new();
        for (index, table) in self.tables_for(kind) {
            let spec = table
                .ids
                .as_ref()
                .expect("tables_for keeps tables with ids");
            let mapped: Vec<i64> = ids
                .iter()
                .map(|&id| spec.id_value(ObjectId { kind, id }))
                .collect();
            let id_column = format!("t.{}", quote_ident(&spec.id_column));
            let condition = match &spec.type_column {
                Some(type_column) => format!(
                    "t.{} = '{}' AND {id_column} = ANY($1)",
                    quote_ident(type_column),
                    kind.letter().to_ascii_uppercase()
                ),
                None => format!("{id_column} = ANY($1)"),
            };
            let geometry_columns: Vec<usize> = table
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.column_type.geometry().is_some())
                .map(|(i, _)| i)
                .collect();
            let geometry_fields: Vec<String> = geometry_columns
                .iter()
                .map(|&i| &table.columns[i])
                .map(|c| {
                    let column = format!("t.{}", quote_ident(&c.name));
                    if c.srid == 3857 {
                        format!("ST_AsEWKB({column})")
                    } else {
                        format!("ST_AsEWKB(ST_Transform({column}, 3857))")
                    }
                })
                .collect();
            let digest_columns: Vec<String> = table
                .digest_columns()
                .map(|c| format!("t.{}", quote_ident(&c.name)))
                .collect();
            let digest = crate::apply::output::columns_digest_sql(&digest_columns);
            let per_column = crate::apply::output::column_digests_sql(&digest_columns);
            // id, digest, the geometries, then the per-column hashes.
            let mut fields = vec![id_column.clone(), digest];
            fields.extend(geometry_fields);
            fields.push(per_column);
            let sql = template
                .replace("{table}", &table.qualified_name())
                .replace("{match}", &condition)
                .replace("{fields}", &fields.join(", "));
            let rows = client.query(&sql, &[&mapped]).map_err(self.err(index))?;
            let original: std::collections::HashMap<i64, i64> =
                mapped.iter().copied().zip(ids.iter().copied()).collect();
            for row in rows {
                let mapped_id: i64 = row.get(0);
                let id = original.get(&mapped_id).copied().unwrap_or(mapped_id);
                let geometries = geometry_columns
                    .iter()
                    .enumerate()
                    .filter_map(|(field, &column)| {
                        row.get::<_, Option<Vec<u8>>>(field + 2)
                            .map(|ewkb| (column, ewkb))
                    })
                    .collect();
                stored.push(StoredFlexRow {
                    table: index,
                    object: ObjectId { kind, id },
                    geometries,
                    digest: row.get(1),
                    column_digests: row.get(2 + geometry_columns.len()),
                });
            }
        }
        Ok(stored)
    }

    /// Row counts per table, for summaries and tests.
    pub fn counts(
        &self,
        client: &mut impl GenericClient,
    ) -> Result<Vec<(String, i64)>, FlexOutputError> {
        self.tables
            .iter()
            .enumerate()
            .map(|(i, table)| {
                let count: i64 = client
                    .query_one(
                        &format!("SELECT count(*) FROM {}", table.qualified_name()),
                        &[],
                    )
                    .map_err(self.err(i))?
                    .get(0);
                Ok((table.name.clone(), count))
            })
            .collect()
    }
}

/// The name a table is rebuilt under at the end of an import.
fn tmp_name(table: &TableDef) -> String {
    format!("{}_tmp", table.name)
}

/// The validity condition of a table's checked geometry columns (not
/// points, not 4326; osm2pgsql's `needs_isvalid`), on `prefix`-qualified
/// columns (`NEW.` in the trigger).
fn validity_checks(table: &TableDef, prefix: &str) -> String {
    table
        .columns
        .iter()
        .filter(|c| needs_isvalid(c.column_type, c.srid, c.create_only))
        .map(|c| {
            let column = format!("{prefix}{}", quote_ident(&c.name));
            format!("({column} IS NULL OR ST_IsValid({column}))")
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn needs_isvalid(column_type: ColumnType, srid: i32, create_only: bool) -> bool {
    !create_only
        && srid != 4326
        && matches!(column_type.geometry(), Some(kind) if kind != super::table::GeometryKind::Point)
}

/// Whether osm2pgsql installs the validity trigger (`TABLE_osm2pgsql_valid`)
/// on this table: only if a geometry column of it is checked.
pub fn has_validity_trigger(table: &TableDef) -> bool {
    !validity_checks(table, "NEW.").is_empty()
}

/// The trigger osm2pgsql installs on updatable tables: rows with a
/// checked geometry that is not valid are silently not written.
fn trigger_sql(table: &TableDef) -> String {
    let checks = validity_checks(table, "NEW.");
    if checks.is_empty() {
        return String::new();
    }
    let schema = quote_ident(&table.schema);
    let name = format!("{}_osm2pgsql_valid", table.name);
    format!(
        "CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS TRIGGER AS $$
           BEGIN
             IF {checks} THEN RETURN NEW; END IF;
             RETURN NULL;
           END; $$ LANGUAGE plpgsql;
         CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table}
           FOR EACH ROW EXECUTE PROCEDURE {schema}.{function}();\n",
        function = quote_ident(&name),
        trigger = quote_ident(&name),
        table = table.qualified_name(),
    )
}

/// Text COPY data goes out in chunks of about this size.
const COPY_CHUNK: usize = 256 << 10;

/// A text COPY into one flex table.
pub struct FlexCopy<'c> {
    sink: CopyInWriter<'c>,
    buf: Vec<u8>,
    table: String,
    staging: bool,
}

impl FlexCopy<'_> {
    /// Writes one row: its fields in order, then (staging) its import
    /// facts.
    pub fn write(&mut self, row: &FlexRow) -> Result<(), FlexOutputError> {
        self.buf.extend_from_slice(&row.line);
        if self.staging {
            self.buf
                .extend_from_slice(if row.surely_valid { b"\tt\t" } else { b"\tf\t" });
            match row.order_key {
                Some(key) => write_integer(&mut self.buf, key),
                None => self.buf.extend_from_slice(b"\\N"),
            }
        }
        self.buf.push(b'\n');
        if self.buf.len() >= COPY_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FlexOutputError> {
        let result = self.sink.write_all(&self.buf);
        self.buf.clear();
        result.map_err(|e| FlexOutputError {
            table: self.table.clone(),
            source: e.into(),
        })
    }

    /// Ends the COPY; the number of rows PostgreSQL took.
    pub fn finish(mut self) -> Result<u64, FlexOutputError> {
        self.flush()?;
        let table = self.table;
        self.sink.finish().map_err(|e| FlexOutputError {
            table,
            source: e.into(),
        })
    }
}

/// Hex EWKB of a geometry for a COPY field.
pub fn hex_ewkb(bytes: &[u8]) -> String {
    ewkb::to_hex(bytes)
}
