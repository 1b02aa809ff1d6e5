//! The four output tables of osm2pgsql's classic schema: `PREFIX_point`,
//! `PREFIX_line`, `PREFIX_polygon`, `PREFIX_roads`, with geometry column
//! `way` in EPSG:3857, columns from the style, and the same validity
//! trigger osm2pgsql installs (rows whose geometry fails `ST_IsValid` are
//! silently discarded).

use super::geom;
use super::pgcopy::{write_hstore, CopyError, CopyStream};
use super::style::{ColumnRole, Style, TableColumn};
use super::transform::{ColumnValue, RowValues};
use super::BUILD_MEMORY_SQL;
use crate::db::quote_ident;
use postgres::GenericClient;
use std::sync::Arc;

pub use super::style::TableKind;

/// The projection of every output table.
pub const SRID: i32 = 3857;

/// A row for an output table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The object's id; relations negated, as osm2pgsql writes them.
    pub osm_id: i64,
    /// Everything between `osm_id` and `way`.
    pub values: RowValues,
    /// EWKB, SRID 3857.
    pub way: Vec<u8>,
}

/// A row as stored in an output table: what expiry needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// The object's id; relations negated.
    pub osm_id: i64,
    /// EWKB of the geometry, SRID 3857.
    pub way: Vec<u8>,
    /// Hash of every non-geometry column, to tell whether a rewrite changed
    /// anything a style could render.
    pub columns_digest: i64,
    /// Per non-geometry column (in [`OutputTables::digest_column_names`]
    /// order) a hash of its value, NULL for NULL: which columns a rewrite
    /// changed, for style-aware expiry.
    pub column_digests: Vec<Option<i64>>,
}

/// A failed statement or COPY on one output table.
#[derive(Debug, thiserror::Error)]
#[error("output table {table}: {source}")]
pub struct OutputError {
    /// The table, without schema (`planet_osm_line`).
    pub table: String,
    /// The database or COPY error.
    #[source]
    pub source: CopyError,
}

/// The output tables of one prefix and schema, with columns from a style.
#[derive(Debug, Clone)]
pub struct OutputTables {
    schema: String,
    prefix: String,
    style: Arc<Style>,
    /// Keys of the `tags` hstore hashed on their own too
    /// ([`with_digest_keys`](Self::with_digest_keys)).
    digest_keys: Vec<String>,
}

/// The name under which [`StoredRow::column_digests`] holds the hash of
/// `column -> 'key'` (a key of an hstore column), after the table's own
/// columns.
pub fn key_digest_name(column: &str, key: &str) -> String {
    format!("{column}->{key}")
}

impl OutputTables {
    /// The tables `PREFIX_point` … `PREFIX_roads` in `schema`, with the
    /// columns `style` gives them.
    pub fn new(schema: &str, prefix: &str, style: Arc<Style>) -> Self {
        OutputTables {
            schema: schema.to_string(),
            prefix: prefix.to_string(),
            style,
            digest_keys: Vec::new(),
        }
    }

    /// Hashes `tags -> 'key'` for each of `keys` beside the columns (in
    /// tables with a `tags` hstore), named by [`key_digest_name`]: the
    /// styles' SQL reads hstore keys (`tags->'golf'`), whose values the
    /// hash of the whole hstore does not tell.
    pub fn with_digest_keys(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        self.digest_keys = keys.into_iter().collect();
        self.digest_keys.sort();
        self.digest_keys.dedup();
        self
    }

    /// How many hstore keys a table's digests hold after its columns.
    fn key_count(&self, kind: TableKind) -> usize {
        match self.tags_column(kind) {
            Some(_) => self.digest_keys.len(),
            None => 0,
        }
    }

    /// The `tags` hstore column of a table, if it has one.
    fn tags_column(&self, kind: TableKind) -> Option<String> {
        self.columns(kind)
            .into_iter()
            .find(|c| c.role == ColumnRole::Tags)
            .map(|c| c.name)
    }

    /// The table's columns in order, `osm_id` first and `way` last.
    pub fn columns(&self, kind: TableKind) -> Vec<TableColumn> {
        self.style.table_columns(kind, SRID)
    }

    /// The names of the columns besides `osm_id` and the geometry, in the
    /// order of [`StoredRow::column_digests`].
    pub fn digest_column_names(&self, kind: TableKind) -> Vec<String> {
        let mut names: Vec<String> = self
            .columns(kind)
            .into_iter()
            .filter(|c| !matches!(c.role, ColumnRole::OsmId | ColumnRole::Geometry))
            .map(|c| c.name)
            .collect();
        if let Some(tags) = self.tags_column(kind) {
            names.extend(self.digest_keys.iter().map(|k| key_digest_name(&tags, k)));
        }
        names
    }

    /// SQL for the values of [`digest_column_names`](Self::digest_column_names)
    /// of a row aliased `t`.
    fn digest_expressions(&self, kind: TableKind) -> Vec<String> {
        let mut expressions: Vec<String> = self
            .columns(kind)
            .into_iter()
            .filter(|c| !matches!(c.role, ColumnRole::OsmId | ColumnRole::Geometry))
            .map(|c| format!("t.{}", quote_ident(&c.name)))
            .collect();
        if let Some(tags) = self.tags_column(kind) {
            expressions.extend(
                self.digest_keys
                    .iter()
                    .map(|k| format!("(t.{} -> '{}')", quote_ident(&tags), k.replace('\'', "''"))),
            );
        }
        expressions
    }

    /// The table's name without schema, unquoted: `PREFIX_line`.
    pub fn name(&self, kind: TableKind) -> String {
        format!("{}_{}", self.prefix, kind.suffix())
    }

    /// Schema-qualified, quoted table name.
    pub fn table(&self, kind: TableKind) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.name(kind))
        )
    }

    fn err<E: Into<CopyError>>(&self, kind: TableKind) -> impl Fn(E) -> OutputError + '_ {
        move |source| OutputError {
            table: self.name(kind),
            source: source.into(),
        }
    }

    /// The table's column names, quoted, in table order.
    fn column_names(&self, kind: TableKind) -> Vec<String> {
        self.columns(kind)
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect()
    }

    /// Drops and creates the tables for an import: unlogged staging
    /// tables without indexes for a fast load, which
    /// [`finish_import`](Self::finish_import) rewrites logged, clustered and
    /// indexed. Besides the table's columns they hold what the import
    /// worked out for each row ([`STAGING_COLUMNS`]): whether its geometry
    /// is surely valid, and its spatial sort key.
    pub fn create(&self, client: &mut impl GenericClient) -> Result<(), OutputError> {
        for kind in TableKind::ALL {
            let columns: Vec<String> = self
                .columns(kind)
                .iter()
                .map(|c| format!("{} {}", quote_ident(&c.name), c.sql_type))
                .collect();
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {table};
                     CREATE UNLOGGED TABLE {table} ({columns}, {valid} bool, {order} int8)
                       WITH (autovacuum_enabled = off);",
                    table = self.table(kind),
                    columns = columns.join(", "),
                    valid = STAGING_COLUMNS[0],
                    order = STAGING_COLUMNS[1],
                ))
                .map_err(self.err(kind))?;
        }
        Ok(())
    }

    /// After loading: rewrite each table logged, without invalid
    /// geometries and spatially ordered (osm2pgsql's clustering), then
    /// build the indexes and install the validity trigger for appends.
    ///
    /// osm2pgsql checks every row with `ST_IsValid` and sorts by the
    /// geometry itself. Here only rows the import could not prove valid
    /// reach `ST_IsValid`, and the sort is on the precomputed
    /// [`geom::postgis_sort_key`], an integer, with the geometry compared
    /// only where keys tie: PostGIS's own order, for a fraction of the
    /// comparisons' cost. Rows loaded without those facts (NULL) are
    /// checked and sort last.
    pub fn finish_import(
        &self,
        client: &mut impl GenericClient,
        kind: TableKind,
    ) -> Result<u64, OutputError> {
        let table = self.table(kind);
        let name = self.name(kind);
        let sorted = quote_ident(&format!("{name}_tilepipe_sorted"));
        let schema = quote_ident(&self.schema);
        let trigger_function = format!(
            "{schema}.{}",
            quote_ident(&format!("{name}_osm2pgsql_valid"))
        );
        // One transaction, as one batch was: no half-finished table.
        client
            .batch_execute(&format!("BEGIN; {BUILD_MEMORY_SQL}"))
            .map_err(self.err(kind))?;
        // Run alone, so that its command tag gives the rows kept.
        let kept = client
            .execute(
                &format!(
                    "CREATE TABLE {schema}.{sorted} WITH (autovacuum_enabled = on) AS
                       SELECT {columns} FROM {table}
                       WHERE {valid} OR ST_IsValid(way) ORDER BY {order}, way",
                    columns = self.column_names(kind).join(", "),
                    valid = STAGING_COLUMNS[0],
                    order = STAGING_COLUMNS[1],
                ),
                &[],
            )
            .map_err(self.err(kind))?;
        client
            .batch_execute(&format!(
                "DROP TABLE {table};
                 ALTER TABLE {schema}.{sorted} RENAME TO {plain};
                 CREATE INDEX {way_idx} ON {table} USING GIST (way) WITH (fillfactor = 100);
                 CREATE INDEX {id_idx} ON {table} USING BTREE (osm_id);
                 CREATE OR REPLACE FUNCTION {trigger_function}() RETURNS TRIGGER AS $$
                   BEGIN
                     IF ST_IsValid(NEW.way) THEN RETURN NEW; END IF;
                     RETURN NULL;
                   END; $$ LANGUAGE plpgsql;
                 CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table}
                   FOR EACH ROW EXECUTE PROCEDURE {trigger_function}();
                 ANALYZE {table};
                 COMMIT;",
                plain = quote_ident(&name),
                way_idx = quote_ident(&format!("{name}_way_idx")),
                id_idx = quote_ident(&format!("{name}_osm_id_idx")),
                trigger = quote_ident(&format!("{name}_osm2pgsql_valid")),
            ))
            .map_err(self.err(kind))?;
        Ok(kept)
    }

    /// Starts a binary COPY into one table.
    pub fn copy_writer<'c>(
        &self,
        client: &'c mut impl GenericClient,
        kind: TableKind,
    ) -> Result<RowWriter<'c>, OutputError> {
        self.start_copy(client, kind, false)
    }

    /// Loads one table of an import: streams `rows` into its staging
    /// table ([`create`](Self::create)), each row with its import facts,
    /// then [`finish_import`](Self::finish_import)es it.
    pub fn import_rows(
        &self,
        client: &mut impl GenericClient,
        kind: TableKind,
        rows: impl IntoIterator<Item = Row>,
    ) -> Result<u64, OutputError> {
        let mut writer = self.start_copy(&mut *client, kind, true)?;
        for row in rows {
            writer.write(&row)?;
        }
        writer.finish()?;
        self.finish_import(client, kind)
    }

    fn start_copy<'c>(
        &self,
        client: &'c mut impl GenericClient,
        kind: TableKind,
        staging: bool,
    ) -> Result<RowWriter<'c>, OutputError> {
        let names = self.column_names(kind);
        let mut columns: Vec<&str> = names.iter().map(String::as_str).collect();
        if staging {
            columns.extend(STAGING_COLUMNS);
        }
        let copy =
            CopyStream::start(client, &self.table(kind), &columns).map_err(self.err(kind))?;
        Ok(RowWriter {
            copy,
            table: self.name(kind),
            roles: self.columns(kind).into_iter().map(|c| c.role).collect(),
            staging,
        })
    }

    /// The rows of the given objects (relations as negative ids), in one
    /// statement per table; [`RowsQuery::Delete`] deletes them too.
    pub fn rows(
        &self,
        client: &mut impl GenericClient,
        kind: TableKind,
        osm_ids: &[i64],
        query: RowsQuery,
    ) -> Result<Vec<StoredRow>, OutputError> {
        if osm_ids.is_empty() {
            return Ok(Vec::new());
        }
        let digest_columns = self.digest_expressions(kind);
        // The whole row's digest covers the columns (the hstore covers
        // its keys).
        let own_columns = digest_columns.len() - self.key_count(kind);
        let digest = columns_digest_sql(&digest_columns[..own_columns]);
        let per_column = column_digests_sql(&digest_columns);
        // osm_id, EWKB of the geometry, digest of every other column, and
        // of each on its own.
        let fields = format!("t.osm_id, ST_AsEWKB(t.way), {digest}, {per_column}");
        let table = self.table(kind);
        let sql = match query {
            RowsQuery::Read => format!("SELECT {fields} FROM {table} t WHERE t.osm_id = ANY($1)"),
            RowsQuery::Delete => {
                format!("DELETE FROM {table} t WHERE t.osm_id = ANY($1) RETURNING {fields}")
            }
        };
        let rows = client.query(&sql, &[&osm_ids]).map_err(self.err(kind))?;
        Ok(rows
            .iter()
            .map(|r| StoredRow {
                osm_id: r.get(0),
                way: r.get(1),
                columns_digest: r.get(2),
                column_digests: r.get(3),
            })
            .collect())
    }

    /// Row counts per table, for summaries and tests.
    pub fn counts(
        &self,
        client: &mut impl GenericClient,
    ) -> Result<Vec<(TableKind, i64)>, OutputError> {
        TableKind::ALL
            .iter()
            .map(|&kind| Ok((kind, self.count(client, kind)? as i64)))
            .collect()
    }

    /// The rows of one table (`count(*)`).
    pub fn count(
        &self,
        client: &mut impl GenericClient,
        kind: TableKind,
    ) -> Result<u64, OutputError> {
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}", self.table(kind)), &[])
            .map_err(self.err(kind))?
            .get(0);
        Ok(count as u64)
    }
}

/// What [`OutputTables::rows`] does with the rows it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsQuery {
    /// Leaves them: the rows as they are now.
    Read,
    /// Deletes them (`DELETE … RETURNING`): what they held.
    Delete,
}

/// A binary COPY into one output table.
pub struct RowWriter<'c> {
    copy: CopyStream<'c>,
    table: String,
    roles: Vec<ColumnRole>,
    /// Whether rows carry the import facts ([`STAGING_COLUMNS`]).
    staging: bool,
}

impl RowWriter<'_> {
    /// Adds one row to the COPY.
    pub fn write(&mut self, row: &Row) -> Result<(), OutputError> {
        let values = &row.values;
        let copy = &mut self.copy;
        copy.begin_row().map_err(|source| OutputError {
            table: self.table.clone(),
            source,
        })?;
        for role in &self.roles {
            match role {
                ColumnRole::OsmId => copy.int8(row.osm_id),
                ColumnRole::Style(i) => match values.columns.get(*i) {
                    ColumnValue::Null => copy.null(),
                    ColumnValue::Text(text) => copy.bytes(text.as_bytes()),
                    ColumnValue::Int4(value) => copy.int4(*value),
                    ColumnValue::Real(value) => copy.float4(*value),
                },
                ColumnRole::HstorePrefix(i) => write_hstore_field(copy, &values.hstore_columns[*i]),
                ColumnRole::Tags => write_hstore_field(copy, &values.tags),
                ColumnRole::Geometry => copy.bytes(&row.way),
            }
        }
        if self.staging {
            let (valid, order) = import_facts(&row.way);
            copy.bool(valid);
            copy.int8(order);
        }
        Ok(())
    }

    /// Ends the COPY; returns how many rows PostgreSQL took.
    pub fn finish(self) -> Result<u64, OutputError> {
        let table = self.table;
        self.copy
            .finish()
            .map_err(|source| OutputError { table, source })
    }
}

/// The staging tables' extra columns: whether the row's geometry is
/// surely valid (see [`geom::validity`]), and its spatial sort key.
pub const STAGING_COLUMNS: [&str; 2] = ["tilepipe_valid", "tilepipe_order"];

/// A row's import facts, worked out in its table's writer thread: reading
/// the EWKB back is cheaper than holding geometries until they are written.
fn import_facts(way: &[u8]) -> (bool, i64) {
    match geom::ewkb::read(way) {
        Ok(geometry) => (
            geom::validity::surely_valid_geometry(&geometry),
            geom::postgis_sort_key(&geometry, SRID),
        ),
        Err(_) => (false, 0),
    }
}

fn write_hstore_field(copy: &mut CopyStream, tags: &Option<Vec<(String, String)>>) {
    match tags {
        Some(tags) => copy.with_bytes(|out| write_hstore(out, tags)),
        None => copy.null(),
    }
}

/// SQL for an `int8[]` of one hash per column of `columns` (qualified
/// names), NULL for NULL values: which columns differ between two rows.
pub(crate) fn column_digests_sql(columns: &[String]) -> String {
    let hashes: Vec<String> = columns
        .iter()
        .map(|c| format!("hashtextextended({c}::text, 0)"))
        .collect();
    format!("ARRAY[{}]::int8[]", hashes.join(", "))
}

/// SQL for a digest of a row's `columns` (qualified names), to tell
/// whether a rewrite changed anything besides the geometry; `0` when
/// there are none.
pub(crate) fn columns_digest_sql(columns: &[String]) -> String {
    if columns.is_empty() {
        "0::int8".to_string()
    } else {
        format!("hashtextextended(ROW({})::text, 0)", columns.join(", "))
    }
}
