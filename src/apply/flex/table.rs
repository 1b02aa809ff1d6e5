//! Table definitions of a flex config: what `osm2pgsql.define_table{…}`
//! declares, checked as osm2pgsql 1.8 checks it (`output_flex_t::
//! create_flex_table`, `setup_id_columns`, `setup_flex_table_columns`,
//! `setup_indexes` in `output-flex.cpp`; `flex-table-column.cpp`;
//! `flex-lua-index.cpp`), and the SQL each definition stands for.
//!
//! The id columns are ordinary columns of the definition, as upstream
//! models them: an `any` table's `type_column` (type `id_type`,
//! `char(1)`) comes first, then the id column (`id_num`, `int8`), both
//! `NOT NULL`, then the config's columns in order.

use super::expire::{parse_column_expire, ColumnExpire};
use crate::db::quote_ident;
use crate::osm::{ObjectId, ObjectType};
use mlua::{Table, Value};

/// Which objects a table takes and how their ids are stored
/// (`ids = {type = …}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdType {
    /// Nodes only; the node id.
    Node,
    /// Ways (id) and relations (−id).
    Way,
    /// Relations only; the relation id.
    Relation,
    /// Areas: ways (+id) and relations (−id).
    Area,
    /// Every object; with a type column the plain id, without one nodes
    /// as id, ways as −id and relations as −id − 10¹⁷.
    Any,
}

impl IdType {
    fn parse(text: &str) -> Result<IdType, String> {
        Ok(match text {
            "node" => IdType::Node,
            "way" => IdType::Way,
            "relation" => IdType::Relation,
            "area" => IdType::Area,
            "any" => IdType::Any,
            other => return Err(format!("Unknown ids type: {other}.")),
        })
    }

    /// Whether objects of `kind` may be inserted (`Trying to add …`
    /// otherwise).
    pub fn accepts(self, kind: ObjectType) -> bool {
        match self {
            IdType::Node => kind == ObjectType::Node,
            IdType::Way | IdType::Area => kind != ObjectType::Node,
            IdType::Relation => kind == ObjectType::Relation,
            IdType::Any => true,
        }
    }
}

/// The `ids` field of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdSpec {
    /// Which objects the table takes.
    pub kind: IdType,
    /// Name of the `int8` id column.
    pub id_column: String,
    /// `any` tables only: name of the `char(1)` column holding `N`/`W`/`R`.
    pub type_column: Option<String>,
    /// `create_index = 'always'`: build the id index even where the table
    /// cannot be updated (tilepipe tables always can, so it is built anyway).
    pub always_index: bool,
}

impl IdSpec {
    /// The id column's value for `object` (osm2pgsql's `flex_table_t::
    /// map_id`).
    pub fn id_value(&self, object: ObjectId) -> i64 {
        match (self.kind, object.kind) {
            (IdType::Any, _) if self.type_column.is_some() => object.id,
            (IdType::Any, ObjectType::Node) => object.id,
            (IdType::Any, ObjectType::Way) => -object.id,
            (IdType::Any, ObjectType::Relation) => -object.id - 100_000_000_000_000_000,
            (IdType::Way | IdType::Area, ObjectType::Relation) => -object.id,
            _ => object.id,
        }
    }
}

/// A column's type as the config names it (case-insensitive, with
/// osm2pgsql's aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `text`.
    Text,
    /// `boolean` / `bool`.
    Boolean,
    /// `int2` / `smallint`.
    Int2,
    /// `int4` / `int` / `integer`.
    Int4,
    /// `int8` / `bigint`.
    Int8,
    /// `real`.
    Real,
    /// `hstore`: a Lua table of strings.
    Hstore,
    /// `json`.
    Json,
    /// `jsonb`.
    Jsonb,
    /// `direction`: −1, 0 or 1 in an `int2` (`oneway` values).
    Direction,
    /// A geometry column of this kind.
    Geometry(GeometryKind),
    /// `area` (deprecated, `add_row` only): the area of the first geometry.
    Area,
    /// The object type letter of an `any` table (the type column).
    IdType,
    /// The object id (the id column).
    IdNum,
}

/// The geometry kinds a column may be declared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryKind {
    /// `geometry`: any kind.
    Any,
    /// `point`.
    Point,
    /// `linestring`.
    LineString,
    /// `polygon`.
    Polygon,
    /// `multipoint` (a point is wrapped).
    MultiPoint,
    /// `multilinestring` (a linestring is wrapped).
    MultiLineString,
    /// `multipolygon` (a polygon is wrapped).
    MultiPolygon,
    /// `geometrycollection`.
    GeometryCollection,
}

impl GeometryKind {
    /// PostGIS's name in `Geometry(<name>, srid)`.
    pub fn postgis_name(self) -> &'static str {
        match self {
            GeometryKind::Any => "GEOMETRY",
            GeometryKind::Point => "POINT",
            GeometryKind::LineString => "LINESTRING",
            GeometryKind::Polygon => "POLYGON",
            GeometryKind::MultiPoint => "MULTIPOINT",
            GeometryKind::MultiLineString => "MULTILINESTRING",
            GeometryKind::MultiPolygon => "MULTIPOLYGON",
            GeometryKind::GeometryCollection => "GEOMETRYCOLLECTION",
        }
    }
}

impl ColumnType {
    /// Parses a `type` field; the names are lower-cased first.
    pub fn parse(text: &str) -> Result<ColumnType, String> {
        use GeometryKind as G;
        Ok(match text.to_ascii_lowercase().as_str() {
            "text" => ColumnType::Text,
            "boolean" | "bool" => ColumnType::Boolean,
            "int2" | "smallint" => ColumnType::Int2,
            "int4" | "int" | "integer" => ColumnType::Int4,
            "int8" | "bigint" => ColumnType::Int8,
            "real" => ColumnType::Real,
            "hstore" => ColumnType::Hstore,
            "json" => ColumnType::Json,
            "jsonb" => ColumnType::Jsonb,
            "direction" => ColumnType::Direction,
            "geometry" => ColumnType::Geometry(G::Any),
            "point" => ColumnType::Geometry(G::Point),
            "linestring" => ColumnType::Geometry(G::LineString),
            "polygon" => ColumnType::Geometry(G::Polygon),
            "multipoint" => ColumnType::Geometry(G::MultiPoint),
            "multilinestring" => ColumnType::Geometry(G::MultiLineString),
            "multipolygon" => ColumnType::Geometry(G::MultiPolygon),
            "geometrycollection" => ColumnType::Geometry(G::GeometryCollection),
            "area" => ColumnType::Area,
            "id_type" => ColumnType::IdType,
            "id_num" => ColumnType::IdNum,
            _ => return Err(format!("Unknown column type '{text}'.")),
        })
    }

    /// The geometry kind of a geometry column.
    pub fn geometry(self) -> Option<GeometryKind> {
        match self {
            ColumnType::Geometry(kind) => Some(kind),
            _ => None,
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// How Lua values are converted for it.
    pub column_type: ColumnType,
    /// `sql_type`: the SQL type written verbatim instead of the one
    /// `column_type` implies (values are still converted by `column_type`).
    pub sql_type: Option<String>,
    /// `NOT NULL`: a row with NULL here is not written (`insert` returns
    /// false and the reason).
    pub not_null: bool,
    /// Created but never written (filled by a default or later SQL).
    pub create_only: bool,
    /// SRID of a geometry or area column: 3857 unless `projection` says
    /// otherwise.
    pub srid: i32,
    /// The expire outputs the column's geometries feed (`expire`, osm2pgsql
    /// 1.9+; 3857 geometry columns only).
    pub expire: Vec<ColumnExpire>,
}

impl ColumnDef {
    pub(crate) fn new(name: &str, column_type: ColumnType) -> ColumnDef {
        ColumnDef {
            name: name.to_string(),
            column_type,
            sql_type: None,
            not_null: false,
            create_only: false,
            srid: 3857,
            expire: Vec::new(),
        }
    }

    /// The column's SQL type (`flex_table_column_t::sql_type_name`).
    pub fn sql_type(&self) -> String {
        if let Some(sql_type) = &self.sql_type {
            return sql_type.clone();
        }
        match self.column_type {
            ColumnType::Text => "text".into(),
            ColumnType::Boolean => "boolean".into(),
            ColumnType::Int2 | ColumnType::Direction => "int2".into(),
            ColumnType::Int4 => "int4".into(),
            ColumnType::Int8 | ColumnType::IdNum => "int8".into(),
            ColumnType::Real | ColumnType::Area => "real".into(),
            ColumnType::Hstore => "hstore".into(),
            ColumnType::Json => "json".into(),
            ColumnType::Jsonb => "jsonb".into(),
            ColumnType::IdType => "char(1)".into(),
            ColumnType::Geometry(kind) => {
                format!("Geometry({}, {})", kind.postgis_name(), self.srid)
            }
        }
    }

    /// The column's part of `CREATE TABLE`.
    pub fn sql_create(&self) -> String {
        let not_null = if self.not_null { " NOT NULL" } else { "" };
        format!("{} {}{not_null}", quote_ident(&self.name), self.sql_type())
    }

    /// Whether this is the id or type column.
    pub fn is_id(&self) -> bool {
        matches!(self.column_type, ColumnType::IdType | ColumnType::IdNum)
    }
}

/// One entry of a table's `indexes` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// Index method (`btree`, `gist`, …).
    pub method: String,
    /// Indexed columns, or empty when `expression` is set.
    pub columns: Vec<String>,
    /// An SQL expression indexed instead of columns.
    pub expression: Option<String>,
    /// `INCLUDE` columns.
    pub include: Vec<String>,
    /// Tablespace of the index.
    pub tablespace: Option<String>,
    /// `UNIQUE`.
    pub unique: bool,
    /// A partial index's `WHERE` condition.
    pub where_condition: Option<String>,
    /// `WITH (fillfactor = …)`; 0 = PostgreSQL's default.
    pub fillfactor: u8,
}

impl IndexDef {
    /// The `CREATE INDEX` statement (`flex_index_t::create_index`); the
    /// index name is left to PostgreSQL, as osm2pgsql 1.8 does.
    pub fn sql_create(&self, qualified_table: &str) -> String {
        let mut sql = String::from("CREATE ");
        if self.unique {
            sql.push_str("UNIQUE ");
        }
        sql.push_str(&format!(
            "INDEX ON {qualified_table} USING {} ",
            self.method
        ));
        match &self.expression {
            Some(expression) => sql.push_str(&format!("({expression})")),
            None => sql.push_str(&column_list(&self.columns)),
        }
        if !self.include.is_empty() {
            sql.push_str(&format!(" INCLUDE {}", column_list(&self.include)));
        }
        if self.fillfactor != 0 {
            sql.push_str(&format!(" WITH (fillfactor = {})", self.fillfactor));
        }
        if let Some(tablespace) = &self.tablespace {
            sql.push_str(&format!(" TABLESPACE {}", quote_ident(tablespace)));
        }
        if let Some(condition) = &self.where_condition {
            sql.push_str(&format!(" WHERE {condition}"));
        }
        sql
    }
}

fn column_list(columns: &[String]) -> String {
    let quoted: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    format!("({})", quoted.join(","))
}

/// One table of a flex config.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// Table name.
    pub name: String,
    /// Schema; `public` unless the config says otherwise.
    pub schema: String,
    /// How objects map to rows; `None` = no id column (rows are never
    /// updated or deleted, with a warning at definition).
    pub ids: Option<IdSpec>,
    /// All columns in table order, id columns first.
    pub columns: Vec<ColumnDef>,
    /// `cluster = 'auto'` (the default): sort by the first geometry column
    /// at the end of an import.
    pub cluster: bool,
    /// `data_tablespace`.
    pub data_tablespace: Option<String>,
    /// `index_tablespace`, also the default of every index.
    pub index_tablespace: Option<String>,
    /// The indexes built after an import (by default one GIST index on the
    /// first geometry column).
    pub indexes: Vec<IndexDef>,
}

impl TableDef {
    /// Schema-qualified, quoted name.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The first geometry column, which clustering and the default index use.
    pub fn geometry_column(&self) -> Option<&ColumnDef> {
        self.columns
            .iter()
            .find(|c| c.column_type.geometry().is_some())
    }

    /// The columns besides the id and geometry columns, in order: those
    /// [`super::output::StoredFlexRow::column_digests`] hash.
    pub fn digest_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.columns
            .iter()
            .filter(|c| c.column_type.geometry().is_none() && !c.is_id())
    }

    /// Columns written by `insert` (all but `create_only` ones), in order.
    pub fn written_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.columns.iter().filter(|c| !c.create_only)
    }

    /// `CREATE TABLE` for this definition under `name` (the table's own
    /// name, or a temporary one while an import reorders it).
    pub fn sql_create(&self, name: &str, unlogged: bool) -> String {
        let columns: Vec<String> = self.columns.iter().map(ColumnDef::sql_create).collect();
        let mut sql = format!(
            "CREATE {}TABLE {}.{} ({})",
            if unlogged { "UNLOGGED " } else { "" },
            quote_ident(&self.schema),
            quote_ident(name),
            columns.join(", ")
        );
        if unlogged {
            sql.push_str(" WITH (autovacuum_enabled = off)");
        }
        if let Some(tablespace) = &self.data_tablespace {
            sql.push_str(&format!(" TABLESPACE {}", quote_ident(tablespace)));
        }
        sql
    }

    /// The id index (`btree` on the id column, or on type and id), built
    /// on every tilepipe table since every one is updated.
    pub fn sql_id_index(&self) -> Option<String> {
        let ids = self.ids.as_ref()?;
        let mut columns = Vec::new();
        if let Some(type_column) = &ids.type_column {
            columns.push(type_column.clone());
        }
        columns.push(ids.id_column.clone());
        let tablespace = self
            .index_tablespace
            .as_ref()
            .map(|t| format!(" TABLESPACE {}", quote_ident(t)))
            .unwrap_or_default();
        Some(format!(
            "CREATE INDEX ON {} USING BTREE {}{tablespace}",
            self.qualified_name(),
            column_list(&columns)
        ))
    }
}

/// Characters osm2pgsql refuses in names (`check_identifier` in
/// `pgsql.cpp`).
const SPECIAL_CHARACTERS: &[char] = &[
    '"', '\'', ',', '.', ';', '$', '%', '&', '/', '(', ')', '<', '>', '{', '}', '=', '?', '^', '*',
    '#',
];

pub(crate) fn check_identifier(name: &str, what: &str) -> Result<(), String> {
    if name.contains(SPECIAL_CHARACTERS) {
        return Err(format!(
            "Special characters are not allowed in {what}: '{name}'."
        ));
    }
    Ok(())
}

/// A required string field (`luaX_get_table_string` without default).
fn required_string(table: &Table, key: &str, context: &str) -> Result<String, String> {
    match table.raw_get::<Value>(key) {
        Ok(Value::String(s)) => Ok(s.to_string_lossy()),
        Ok(Value::Integer(i)) => Ok(i.to_string()),
        Ok(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!("{context} must contain a '{key}' string field.")),
    }
}

/// An optional string field (`luaX_get_table_string` with default).
fn optional_string(table: &Table, key: &str, context: &str) -> Result<Option<String>, String> {
    match table.raw_get::<Value>(key) {
        Ok(Value::Nil) => Ok(None),
        Ok(Value::String(s)) => Ok(Some(s.to_string_lossy())),
        _ => Err(format!("{context} field '{key}' must be a string field.")),
    }
}

/// An optional boolean field (`luaX_get_table_bool`).
fn optional_bool(table: &Table, key: &str, context: &str) -> Result<bool, String> {
    match table.raw_get::<Value>(key) {
        Ok(Value::Nil) => Ok(false),
        Ok(Value::Boolean(b)) => Ok(b),
        _ => Err(format!("{context} field '{key}' must be a boolean field.")),
    }
}

/// The entries of a Lua array, or `error` when `value` is not one.
fn array_entries(value: &Value, error: &str) -> Result<Vec<Value>, String> {
    let Value::Table(table) = value else {
        return Err(error.to_string());
    };
    let length = table.raw_len();
    let entries: Vec<Value> = (1..=length)
        .map(|i| table.raw_get::<Value>(i).unwrap_or(Value::Nil))
        .collect();
    if table.pairs::<Value, Value>().count() != length {
        return Err(error.to_string());
    }
    Ok(entries)
}

/// Reads one `define_table` argument. `default_schema` applies when the
/// table names none; `existing` are the tables defined so far and
/// `expire_outputs` the number of expire outputs.
pub fn parse_table(
    definition: &Table,
    default_schema: &str,
    existing: &[TableDef],
    expire_outputs: usize,
) -> Result<TableDef, String> {
    let name = required_string(definition, "name", "The table")?;
    check_identifier(&name, "table names")?;
    if existing.iter().any(|t| t.name == name) {
        return Err(format!("Table with name '{name}' already exists."));
    }
    let schema = match optional_string(definition, "schema", "The table")? {
        Some(schema) => {
            check_identifier(&schema, "schema field")?;
            schema
        }
        None => default_schema.to_string(),
    };
    let cluster = match definition.raw_get::<Value>("cluster") {
        Ok(Value::Nil) => true,
        Ok(Value::String(s)) => match s.to_string_lossy().as_str() {
            "auto" => true,
            "no" => false,
            other => {
                return Err(format!(
                    "Unknown value '{other}' for 'cluster' table option (use 'auto' or 'no')."
                ))
            }
        },
        _ => return Err("Unknown value for 'cluster' table option: Must be string.".into()),
    };
    let data_tablespace = optional_string(definition, "data_tablespace", "The table")?;
    let index_tablespace = optional_string(definition, "index_tablespace", "The table")?;
    for tablespace in data_tablespace.iter().chain(&index_tablespace) {
        check_identifier(tablespace, "tablespace fields")?;
    }
    let mut table = TableDef {
        name,
        schema,
        ids: None,
        columns: Vec::new(),
        cluster,
        data_tablespace,
        index_tablespace,
        indexes: Vec::new(),
    };
    parse_ids(definition, &mut table)?;
    parse_columns(definition, &mut table, expire_outputs)?;
    parse_indexes(definition, &mut table)?;
    Ok(table)
}

fn parse_ids(definition: &Table, table: &mut TableDef) -> Result<(), String> {
    let Ok(Value::Table(ids)) = definition.raw_get::<Value>("ids") else {
        tracing::warn!(
            "Table '{}' doesn't have an id column. Two-stage processing, updates and expire will not work!",
            table.name
        );
        return Ok(());
    };
    let kind = IdType::parse(&required_string(&ids, "type", "The ids field")?)?;
    let type_column = if kind == IdType::Any {
        match ids.raw_get::<Value>("type_column") {
            Ok(Value::Nil) => None,
            Ok(Value::String(s)) => Some(s.to_string_lossy()),
            _ => return Err("type_column must be a string or nil.".into()),
        }
    } else {
        None
    };
    let id_column = required_string(&ids, "id_column", "The ids field")?;
    check_identifier(&id_column, "column names")?;
    let always_index = match optional_string(&ids, "create_index", "The ids field")?.as_deref() {
        None | Some("auto") => false,
        Some("always") => true,
        Some(other) => {
            return Err(format!(
                "Unknown value '{other}' for 'create_index' field of ids"
            ))
        }
    };
    if let Some(type_column) = &type_column {
        check_identifier(type_column, "column names")?;
        let mut column = ColumnDef::new(type_column, ColumnType::IdType);
        column.not_null = true;
        table.columns.push(column);
    }
    let mut column = ColumnDef::new(&id_column, ColumnType::IdNum);
    column.not_null = true;
    table.columns.push(column);
    table.ids = Some(IdSpec {
        kind,
        id_column,
        type_column,
        always_index,
    });
    Ok(())
}

fn parse_columns(
    definition: &Table,
    table: &mut TableDef,
    expire_outputs: usize,
) -> Result<(), String> {
    let columns = definition.raw_get::<Value>("columns").unwrap_or(Value::Nil);
    if !matches!(columns, Value::Table(_)) {
        return Err(format!(
            "No 'columns' field (or not an array) in table '{}'.",
            table.name
        ));
    }
    let entries = array_entries(&columns, "The 'columns' field must contain an array.")?;
    for entry in &entries {
        let Value::Table(entry) = entry else {
            return Err("The entries in the 'columns' array must be tables.".into());
        };
        let column = parse_column(entry, expire_outputs)
            .map_err(|e| format!("table '{}': {e}", table.name))?;
        if table.columns.iter().any(|c| c.name == column.name) {
            return Err(format!(
                "table '{}': column '{}' is defined twice.",
                table.name, column.name
            ));
        }
        table.columns.push(column);
    }
    if entries.is_empty() && table.ids.is_none() {
        return Err(format!("No columns defined for table '{}'.", table.name));
    }
    Ok(())
}

fn parse_column(entry: &Table, expire_outputs: usize) -> Result<ColumnDef, String> {
    let type_name =
        optional_string(entry, "type", "Column entry")?.unwrap_or_else(|| "text".into());
    let name = required_string(entry, "column", "Column entry")?;
    check_identifier(&name, "column names")?;
    let column_type = ColumnType::parse(&type_name).map_err(|e| format!("column '{name}': {e}"))?;
    let mut column = ColumnDef::new(&name, column_type);
    column.sql_type = optional_string(entry, "sql_type", "Column entry")?.filter(|s| !s.is_empty());
    column.not_null = optional_bool(entry, "not_null", "Entry 'not_null'")?;
    column.create_only = optional_bool(entry, "create_only", "Entry 'create_only'")?;
    match entry.raw_get::<Value>("projection") {
        Ok(Value::Nil) => {}
        Ok(value) => {
            if column_type.geometry().is_none() && column_type != ColumnType::Area {
                return Err(format!(
                    "column '{name}': Projection can only be set on geometry and area columns."
                ));
            }
            column.srid = parse_projection(&value).map_err(|e| format!("column '{name}': {e}"))?;
        }
        Err(e) => return Err(e.to_string()),
    }
    let expire = entry.raw_get::<Value>("expire").unwrap_or(Value::Nil);
    column.expire = parse_column_expire(&expire, &column, expire_outputs)
        .map_err(|e| format!("column '{name}': {e}"))?;
    Ok(column)
}

/// `projection`: a number, or `merc(ator)` / `latlon(g)` / `wgs84`
/// (`flex_table_column_t::set_projection`).
fn parse_projection(value: &Value) -> Result<i32, String> {
    let text = match value {
        Value::Integer(i) => {
            return i32::try_from(*i).map_err(|_| format!("Unknown projection: '{i}'."))
        }
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e9 => return Ok(*n as i32),
        Value::String(s) => s.to_string_lossy(),
        other => return Err(format!("Unknown projection: '{other:?}'.")),
    };
    match text.to_ascii_lowercase().as_str() {
        "" | "merc" | "mercator" => Ok(3857),
        "latlong" | "latlon" | "wgs84" => Ok(4326),
        _ => text
            .parse::<i32>()
            .map_err(|_| format!("Unknown projection: '{text}'.")),
    }
}

fn parse_indexes(definition: &Table, table: &mut TableDef) -> Result<(), String> {
    let indexes = definition.raw_get::<Value>("indexes").unwrap_or(Value::Nil);
    if matches!(indexes, Value::Nil) {
        if let Some(geometry) = table.geometry_column() {
            // Tilepipe tables are always updatable, so osm2pgsql's
            // fillfactor 100 for read-only tables never applies.
            table.indexes.push(IndexDef {
                method: "gist".into(),
                columns: vec![geometry.name.clone()],
                expression: None,
                include: Vec::new(),
                tablespace: table.index_tablespace.clone(),
                unique: false,
                where_condition: None,
                fillfactor: 0,
            });
        }
        return Ok(());
    }
    if !matches!(indexes, Value::Table(_)) {
        return Err(format!(
            "The 'indexes' field in definition of table '{}' is not an array.",
            table.name
        ));
    }
    for entry in array_entries(&indexes, "The 'indexes' field must contain an array.")? {
        let Value::Table(entry) = entry else {
            return Err("The entries in the 'indexes' array must be Lua tables.".into());
        };
        let index =
            parse_index(&entry, table).map_err(|e| format!("table '{}': {e}", table.name))?;
        table.indexes.push(index);
    }
    Ok(())
}

/// A string or an array of strings naming columns of `table`.
fn index_columns(value: &Value, table: &TableDef, field: &str) -> Result<Vec<String>, String> {
    let names = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::String(s) => vec![s.to_string_lossy()],
        Value::Table(_) => array_entries(value, "")
            .ok()
            .and_then(|entries| {
                entries
                    .into_iter()
                    .map(|e| match e {
                        Value::String(s) => Some(s.to_string_lossy()),
                        _ => None,
                    })
                    .collect::<Option<Vec<String>>>()
            })
            .ok_or_else(|| format!("The entries in the '{field}' array must be strings."))?,
        _ => {
            return Err(format!(
                "The '{field}' field in an index definition must contain a string or an array."
            ))
        }
    };
    for name in &names {
        if !table.columns.iter().any(|c| &c.name == name) {
            return Err(format!(
                "Unknown column '{name}' in table '{}'.",
                table.name
            ));
        }
    }
    Ok(names)
}

fn parse_index(entry: &Table, table: &TableDef) -> Result<IndexDef, String> {
    let method = required_string(entry, "method", "Index definition")?;
    const METHODS: &[&str] = &["btree", "hash", "gist", "spgist", "gin", "brin"];
    if !METHODS.contains(&method.to_ascii_lowercase().as_str()) {
        return Err(format!("Unknown index method '{method}'."));
    }
    let column_value = entry.raw_get::<Value>("column").unwrap_or(Value::Nil);
    let columns = index_columns(&column_value, table, "column")?;
    if matches!(column_value, Value::Table(_)) && columns.is_empty() {
        return Err("The 'column' field in an index definition can not be an empty array.".into());
    }
    let expression =
        optional_string(entry, "expression", "Index definition")?.filter(|e| !e.is_empty());
    if columns.is_empty() == expression.is_none() {
        return Err(
            "You must set either the 'column' or the 'expression' field in index definition."
                .into(),
        );
    }
    let include_value = entry.raw_get::<Value>("include").unwrap_or(Value::Nil);
    let include = index_columns(&include_value, table, "include")?;
    let tablespace = optional_string(entry, "tablespace", "Index definition")?
        .filter(|t| !t.is_empty())
        .or_else(|| table.index_tablespace.clone());
    if let Some(tablespace) = &tablespace {
        check_identifier(tablespace, "tablespace")?;
    }
    Ok(IndexDef {
        method,
        columns,
        expression,
        include,
        tablespace,
        unique: optional_bool(entry, "unique", "Index definition")?,
        where_condition: optional_string(entry, "where", "Index definition")?
            .filter(|w| !w.is_empty()),
        fillfactor: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    fn parse(lua_source: &str) -> Result<TableDef, String> {
        let lua = Lua::new();
        let table: Table = lua.load(lua_source).eval().unwrap();
        parse_table(&table, "public", &[], 0)
    }

    #[test]
    fn carto_style_table() {
        let t = parse(
            "{ name = 'planet_osm_polygon', ids = { type = 'area', id_column = 'osm_id' },
               columns = { { column = 'name', type = 'text' }, { column = 'tags', type = 'hstore' },
                           { column = 'way_area', type = 'real' },
                           { column = 'way', type = 'geometry', not_null = true } } }",
        )
        .unwrap();
        assert_eq!(t.schema, "public");
        assert!(t.cluster);
        let sql: Vec<String> = t.columns.iter().map(ColumnDef::sql_create).collect();
        assert_eq!(
            sql,
            [
                "\"osm_id\" int8 NOT NULL",
                "\"name\" text",
                "\"tags\" hstore",
                "\"way_area\" real",
                "\"way\" Geometry(GEOMETRY, 3857) NOT NULL"
            ]
        );
        assert_eq!(
            t.indexes[0].sql_create(&t.qualified_name()),
            "CREATE INDEX ON \"public\".\"planet_osm_polygon\" USING gist (\"way\")"
        );
        assert_eq!(
            t.sql_id_index().unwrap(),
            "CREATE INDEX ON \"public\".\"planet_osm_polygon\" USING BTREE (\"osm_id\")"
        );
    }

    #[test]
    fn any_table_with_type_column_and_projection() {
        let t = parse(
            "{ name = 'pois', ids = { type = 'any', id_column = 'osm_id', type_column = 'osm_type' },
               columns = { { column = 'Geom', type = 'Point', projection = 4326 },
                           { column = 'd', type = 'direction' }, { column = 'n', sql_type = 'serial', create_only = true } },
               indexes = { { method = 'btree', column = { 'd' }, where = 'd <> 0' } } }",
        )
        .unwrap();
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["osm_type", "osm_id", "Geom", "d", "n"]);
        assert_eq!(t.columns[0].sql_type(), "char(1)");
        assert_eq!(t.columns[2].sql_type(), "Geometry(POINT, 4326)");
        assert_eq!(t.columns[3].sql_type(), "int2");
        assert_eq!(t.columns[4].sql_type(), "serial");
        assert_eq!(t.written_columns().count(), 4);
        assert_eq!(
            t.indexes[0].sql_create("t"),
            "CREATE INDEX ON t USING btree (\"d\") WHERE d <> 0"
        );
        assert_eq!(
            t.sql_id_index().unwrap(),
            "CREATE INDEX ON \"public\".\"pois\" USING BTREE (\"osm_type\",\"osm_id\")"
        );
    }

    #[test]
    fn id_values() {
        let spec = |kind, type_column: Option<&str>| IdSpec {
            kind,
            id_column: "id".into(),
            type_column: type_column.map(String::from),
            always_index: false,
        };
        let object = |kind, id| ObjectId { kind, id };
        let any = spec(IdType::Any, None);
        assert_eq!(any.id_value(object(ObjectType::Node, 7)), 7);
        assert_eq!(any.id_value(object(ObjectType::Way, 7)), -7);
        assert_eq!(
            any.id_value(object(ObjectType::Relation, 113)),
            -100_000_000_000_000_113
        );
        let typed = spec(IdType::Any, Some("t"));
        assert_eq!(typed.id_value(object(ObjectType::Relation, 113)), 113);
        let area = spec(IdType::Area, None);
        assert_eq!(area.id_value(object(ObjectType::Way, 5)), 5);
        assert_eq!(area.id_value(object(ObjectType::Relation, 5)), -5);
        assert!(!IdType::Area.accepts(ObjectType::Node));
        assert!(IdType::Way.accepts(ObjectType::Relation));
        assert!(!IdType::Relation.accepts(ObjectType::Way));
    }

    #[test]
    fn errors_read_like_osm2pgsql() {
        let cases = [
            ("{ columns = {} }", "The table must contain a 'name' string field."),
            ("{ name = 'a.b', columns = {} }", "Special characters are not allowed in table names: 'a.b'."),
            ("{ name = 't', ids = { type = 'thing', id_column = 'id' }, columns = {} }", "Unknown ids type: thing."),
            ("{ name = 't', ids = { type = 'node' }, columns = {} }", "The ids field must contain a 'id_column' string field."),
            ("{ name = 't', columns = {} }", "No columns defined for table 't'."),
            ("{ name = 't' }", "No 'columns' field (or not an array) in table 't'."),
            ("{ name = 't', columns = { { column = 'x', type = 'txt' } } }", "table 't': column 'x': Unknown column type 'txt'."),
            ("{ name = 't', columns = { { column = 'x', projection = 4326 } } }", "table 't': column 'x': Projection can only be set on geometry and area columns."),
            ("{ name = 't', cluster = 'yes', columns = { { column = 'x' } } }", "Unknown value 'yes' for 'cluster' table option (use 'auto' or 'no')."),
            ("{ name = 't', columns = { { column = 'x', not_null = 'yes' } } }", "table 't': Entry 'not_null' field 'not_null' must be a boolean field."),
            ("{ name = 't', columns = { { column = 'x' } }, indexes = { { method = 'btree', column = 'y' } } }", "table 't': Unknown column 'y' in table 't'."),
            ("{ name = 't', columns = { { column = 'x' } }, indexes = { { method = 'btree' } } }", "table 't': You must set either the 'column' or the 'expression' field in index definition."),
        ];
        for (source, expected) in cases {
            assert_eq!(parse(source).unwrap_err(), expected, "{source}");
        }
        let lua = Lua::new();
        let first: Table = lua
            .load("{ name = 't', columns = { { column = 'x' } } }")
            .eval()
            .unwrap();
        let t = parse_table(&first, "public", &[], 0).unwrap();
        assert_eq!(
            parse_table(&first, "public", &[t], 0).unwrap_err(),
            "Table with name 't' already exists."
        );
    }
}
