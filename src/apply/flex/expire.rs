//! Expire outputs of configs written for osm2pgsql ≥ 1.9:
//! `osm2pgsql.define_expire_output{…}` and the `expire` field of a
//! geometry column, read and checked as osm2pgsql does it
//! (`flex-lua-expire-output.cpp`, `parse_and_set_expire_options` in
//! `flex-lua-table.cpp`, `expire-config.hpp`).
//!
//! This module only describes them: which outputs exist (zoom range, list
//! file, table) and which geometry columns feed which output how (polygon
//! mode, buffer). The apply stage hands both on with its row changes; the
//! expire stage (`crate::expire::outputs`) turns them into tiles and
//! writes them.

use super::table::{check_identifier, ColumnDef};
use mlua::{MetaMethod, Table, UserData, UserDataMethods, Value};

/// osm2pgsql's `max_tiles_geometry` default.
pub const DEFAULT_MAX_TILES_GEOMETRY: u64 = 10_000_000;
/// osm2pgsql's `max_tiles_overall` default.
pub const DEFAULT_MAX_TILES_OVERALL: u64 = 50_000_000;
/// Largest `max_tiles_geometry` / `max_tiles_overall` a config may set.
const MAX_TILES_LIMIT: u64 = 4 << 20;
/// `buffer` of an expire config that does not set one (a fraction of a
/// tile at the output's max zoom).
pub const DEFAULT_BUFFER: f64 = 0.1;

/// One `osm2pgsql.define_expire_output{…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpireOutputDef {
    /// `filename`: the `z/x/y` list appended to; `None` when not set.
    pub filename: Option<String>,
    /// `schema` of the table (the default schema unless set).
    pub schema: String,
    /// `table`: the table (`zoom, x, y, first, last`) tiles are inserted
    /// into; `None` when not set.
    pub table: Option<String>,
    /// `minzoom`: the lowest zoom listed (`maxzoom` unless set).
    pub minzoom: u8,
    /// `maxzoom` (1..=20): the zoom tiles are computed at. A config that
    /// leaves it out gets 0, as from osm2pgsql: every change expires the
    /// one tile `0/0/0`.
    pub maxzoom: u8,
    /// `max_tiles_geometry`: tiles one object's geometries may expire.
    pub max_tiles_geometry: u64,
    /// `max_tiles_overall`: tiles one batch may expire.
    pub max_tiles_overall: u64,
}

impl ExpireOutputDef {
    /// The table as `"schema"."table"`, when the output has one.
    pub fn qualified_table(&self) -> Option<String> {
        self.table.as_ref().map(|table| {
            format!(
                "{}.{}",
                crate::db::quote_ident(&self.schema),
                crate::db::quote_ident(table)
            )
        })
    }
}

/// How one expire config treats polygons (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpireMode {
    /// `full-area` (the default): boundary and interior.
    #[default]
    FullArea,
    /// `boundary-only`: the rings only.
    BoundaryOnly,
    /// `hybrid`: boundary only when the envelope is wider or taller than
    /// `full_area_limit`.
    Hybrid,
}

/// One entry of a geometry column's `expire` field: the output it feeds
/// and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnExpire {
    /// Index of the output among the config's expire outputs, in
    /// definition order.
    pub output: usize,
    /// `mode`.
    pub mode: ExpireMode,
    /// `full_area_limit` (EPSG:3857 metres; hybrid mode only; default 0,
    /// so every polygon with an extent is boundary-only).
    pub full_area_limit: f64,
    /// `buffer`, a fraction of a tile at the output's max zoom (default
    /// 0.1).
    pub buffer: f64,
    /// `diff_expire` (osm2pgsql 2.3): accepted; tilepipe always expires
    /// old ∪ new, which covers the difference osm2pgsql would expire.
    pub diff_expire: bool,
}

impl ColumnExpire {
    /// The defaults osm2pgsql gives `expire = eo`.
    pub fn new(output: usize) -> ColumnExpire {
        ColumnExpire {
            output,
            mode: ExpireMode::FullArea,
            full_area_limit: 0.0,
            buffer: DEFAULT_BUFFER,
            diff_expire: false,
        }
    }
}

/// What `define_expire_output` returns (`osm2pgsql.ExpireOutput`): its
/// index and a copy of its definition for the accessor methods.
#[derive(Debug, Clone)]
pub struct ExpireOutputHandle {
    /// Index among the config's expire outputs.
    pub index: usize,
    /// The definition.
    pub definition: ExpireOutputDef,
}

impl UserData for ExpireOutputHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            let d = &this.definition;
            Ok(format!(
                "osm2pgsql.ExpireOutput[minzoom={},maxzoom={},filename={},schema={},table={}]",
                d.minzoom,
                d.maxzoom,
                d.filename.as_deref().unwrap_or(""),
                d.schema,
                d.table.as_deref().unwrap_or("")
            ))
        });
        methods.add_method("filename", |_, this, ()| {
            Ok(this.definition.filename.clone().unwrap_or_default())
        });
        methods.add_method("schema", |_, this, ()| Ok(this.definition.schema.clone()));
        methods.add_method("table", |_, this, ()| {
            Ok(this.definition.table.clone().unwrap_or_default())
        });
        methods.add_method("minzoom", |_, this, ()| Ok(this.definition.minzoom));
        methods.add_method("maxzoom", |_, this, ()| Ok(this.definition.maxzoom));
        methods.add_method("max_tiles_geometry", |_, this, ()| {
            Ok(this.definition.max_tiles_geometry)
        });
        methods.add_method("max_tiles_overall", |_, this, ()| {
            Ok(this.definition.max_tiles_overall)
        });
    }
}

/// An optional string field with a default (`luaX_get_table_string` with
/// default value): only a string or nil.
fn string_or_default(table: &Table, key: &str, default: &str) -> Result<String, String> {
    match table.raw_get::<Value>(key) {
        Ok(Value::Nil) => Ok(default.to_string()),
        Ok(Value::String(s)) => Ok(s.to_string_lossy()),
        _ => Err(format!(
            "The expire output field must contain a '{key}' string field (or nil for default: '{default}')."
        )),
    }
}

/// A number as Lua's `lua_isnumber`/`lua_tonumber` see it: numbers and
/// strings that read as one.
fn lua_number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        Value::String(s) => s.to_string_lossy().trim().parse().ok(),
        _ => None,
    }
}

/// An optional unsigned field in `min..=max`; 0 when nil
/// (`luaX_get_table_optional_uint32/64`).
fn optional_unsigned(
    table: &Table,
    key: &str,
    min: u64,
    max: u64,
    range: &str,
) -> Result<u64, String> {
    let what = format!("The '{key}' field in a expire output");
    let value = table.raw_get::<Value>(key).unwrap_or(Value::Nil);
    if value == Value::Nil {
        return Ok(0);
    }
    let Some(number) = lua_number(&value) else {
        return Err(format!("{what} must contain an integer."));
    };
    if number.is_nan() || number < min as f64 || number > max as f64 {
        return Err(format!("{what} must be between {range}."));
    }
    Ok(number as u64)
}

/// Reads one `define_expire_output` argument; `default_schema` applies
/// when it names no schema.
pub fn parse_expire_output(
    definition: &Value,
    default_schema: &str,
) -> Result<ExpireOutputDef, String> {
    let Value::Table(definition) = definition else {
        return Err("Argument #1 to 'define_expire_output' must be a Lua table.".into());
    };
    let filename = string_or_default(definition, "filename", "")?;
    let schema = string_or_default(definition, "schema", default_schema)?;
    check_identifier(&schema, "schema field")?;
    let table = string_or_default(definition, "table", "")?;
    check_identifier(&table, "table field")?;
    if filename.is_empty() && table.is_empty() {
        return Err("Must set 'filename' and/or 'table' on expire output.".into());
    }
    let maxzoom = optional_unsigned(definition, "maxzoom", 1, 20, "1 and 20")?;
    let minzoom = match optional_unsigned(definition, "minzoom", 1, maxzoom, "1 and 'maxzoom'")? {
        0 => maxzoom,
        minzoom => minzoom,
    };
    let limit = |key: &str, default: u64| -> Result<u64, String> {
        Ok(
            match optional_unsigned(definition, key, 1, MAX_TILES_LIMIT, "1 and 4 << 20")? {
                0 => default,
                n => n,
            },
        )
    };
    Ok(ExpireOutputDef {
        filename: Some(filename).filter(|f| !f.is_empty()),
        schema,
        table: Some(table).filter(|t| !t.is_empty()),
        minzoom: minzoom as u8,
        maxzoom: maxzoom as u8,
        max_tiles_geometry: limit("max_tiles_geometry", DEFAULT_MAX_TILES_GEOMETRY)?,
        max_tiles_overall: limit("max_tiles_overall", DEFAULT_MAX_TILES_OVERALL)?,
    })
}

/// The output index of an `ExpireOutput` userdata.
fn output_index(value: &Value, outputs: usize) -> Result<usize, String> {
    let wrong = || "Expire output must be of type ExpireOutput.".to_string();
    let Value::UserData(data) = value else {
        return Err(wrong());
    };
    let index = data
        .borrow::<ExpireOutputHandle>()
        .map_err(|_| wrong())?
        .index;
    if index >= outputs {
        return Err("Internal error in expire output code.".into());
    }
    Ok(index)
}

/// Whether a Lua table is an array (osm2pgsql's `luaX_is_array`: keys
/// 1..n and nothing else; an empty table is one).
fn is_array(table: &Table) -> bool {
    let length = table.raw_len();
    table.pairs::<Value, Value>().count() == length
        && (1..=length).all(|i| !matches!(table.raw_get::<Value>(i), Ok(Value::Nil) | Err(_)))
}

/// Reads the `expire` field of `column` (already parsed up to its
/// projection); `outputs` is the number of expire outputs defined so far.
pub fn parse_column_expire(
    value: &Value,
    column: &ColumnDef,
    outputs: usize,
) -> Result<Vec<ColumnExpire>, String> {
    if *value == Value::Nil {
        return Ok(Vec::new());
    }
    if column.column_type.geometry().is_none() || column.srid != 3857 {
        return Err("Expire only allowed for geometry columns in Web Mercator projection.".into());
    }
    if let Value::UserData(_) = value {
        return Ok(vec![ColumnExpire::new(output_index(value, outputs)?)]);
    }
    let not_array = || "Expire field must be a Lua array table".to_string();
    let Value::Table(entries) = value else {
        return Err(not_array());
    };
    if !is_array(entries) {
        return Err(not_array());
    }
    let mut configs = Vec::new();
    for entry in entries.sequence_values::<Value>() {
        let entry = entry.map_err(|e| e.to_string())?;
        let entry = match entry {
            Value::Table(entry) if !is_array(&entry) => entry,
            _ => return Err("Expire config must be a Lua table".into()),
        };
        let field = |key: &str| entry.raw_get::<Value>(key).unwrap_or(Value::Nil);
        let mut config = ColumnExpire::new(output_index(&field("output"), outputs)?);
        config.mode = match field("mode") {
            Value::Nil => ExpireMode::FullArea,
            value @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => {
                let mode = match &value {
                    Value::String(s) => s.to_string_lossy(),
                    other => lua_number(other).unwrap_or_default().to_string(),
                };
                match mode.as_str() {
                    "" | "full-area" => ExpireMode::FullArea,
                    "boundary-only" => ExpireMode::BoundaryOnly,
                    "hybrid" => ExpireMode::Hybrid,
                    _ => return Err(format!("Unknown expire mode '{mode}'.")),
                }
            }
            _ => return Err("Optional expire field 'mode' must contain a string.".into()),
        };
        let number = |key: &str| -> Result<Option<f64>, String> {
            match field(key) {
                Value::Nil => Ok(None),
                value => lua_number(&value)
                    .map(Some)
                    .ok_or_else(|| format!("Optional expire field '{key}' must contain a number.")),
            }
        };
        if let Some(limit) = number("full_area_limit")? {
            if config.mode != ExpireMode::Hybrid {
                tracing::warn!(
                    "Ignoring 'full_area_limit' setting in expire config, because 'mode' is not set to 'hybrid'."
                );
            }
            // Stricter than osm2pgsql, which takes anything: the
            // rasteriser needs a size.
            if limit.is_nan() || limit < 0.0 {
                return Err(format!(
                    "Optional expire field 'full_area_limit' must be a number ≥ 0 (not {limit})."
                ));
            }
            config.full_area_limit = limit;
        }
        if let Some(buffer) = number("buffer")? {
            if !(buffer.is_finite() && buffer >= 0.0) {
                return Err(format!(
                    "Optional expire field 'buffer' must be a number ≥ 0 (not {buffer})."
                ));
            }
            config.buffer = buffer;
        }
        config.diff_expire = match field("diff_expire") {
            Value::Nil => false,
            Value::Boolean(b) => b,
            _ => return Err("Optional expire field 'diff_expire' must contain a boolean.".into()),
        };
        configs.push(config);
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::flex::table::ColumnType;
    use mlua::Lua;

    fn output(lua: &Lua, source: &str) -> Result<ExpireOutputDef, String> {
        let value: Value = lua.load(source).eval().unwrap();
        parse_expire_output(&value, "public")
    }

    #[test]
    fn output_definitions() {
        let lua = Lua::new();
        let eo = output(&lua, "{ maxzoom = 14, filename = 'pois.tiles' }").unwrap();
        assert_eq!(
            eo,
            ExpireOutputDef {
                filename: Some("pois.tiles".into()),
                schema: "public".into(),
                table: None,
                minzoom: 14,
                maxzoom: 14,
                max_tiles_geometry: DEFAULT_MAX_TILES_GEOMETRY,
                max_tiles_overall: DEFAULT_MAX_TILES_OVERALL,
            }
        );
        let eo = output(
            &lua,
            "{ minzoom = 10, maxzoom = '14', table = 'tiles', schema = 'exp', max_tiles_overall = 1000 }",
        )
        .unwrap();
        assert_eq!((eo.minzoom, eo.maxzoom), (10, 14));
        assert_eq!(eo.qualified_table().unwrap(), "\"exp\".\"tiles\"");
        assert_eq!(eo.filename, None);
        assert_eq!(eo.max_tiles_overall, 1000);
        // No maxzoom: zoom 0, as osm2pgsql.
        let eo = output(&lua, "{ table = 't' }").unwrap();
        assert_eq!((eo.minzoom, eo.maxzoom), (0, 0));
    }

    #[test]
    fn output_errors_read_like_osm2pgsql() {
        let lua = Lua::new();
        let cases = [
            ("nil", "Argument #1 to 'define_expire_output' must be a Lua table."),
            ("{ filename = false }", "The expire output field must contain a 'filename' string field (or nil for default: '')."),
            ("{ table = 'bar', schema = false }", "The expire output field must contain a 'schema' string field (or nil for default: 'public')."),
            ("{ table = false }", "The expire output field must contain a 'table' string field (or nil for default: '')."),
            ("{ table = 'a.b' }", "Special characters are not allowed in table field: 'a.b'."),
            ("{ maxzoom = 12 }", "Must set 'filename' and/or 'table' on expire output."),
            ("{ maxzoom = 'bar', filename = 'x' }", "The 'maxzoom' field in a expire output must contain an integer."),
            ("{ maxzoom = 12, minzoom = 'bar', filename = 'x' }", "The 'minzoom' field in a expire output must contain an integer."),
            ("{ maxzoom = 123, filename = 'x' }", "The 'maxzoom' field in a expire output must be between 1 and 20."),
            ("{ maxzoom = 12, minzoom = -3, filename = 'x' }", "The 'minzoom' field in a expire output must be between 1 and 'maxzoom'."),
            ("{ maxzoom = 12, minzoom = 14, filename = 'x' }", "The 'minzoom' field in a expire output must be between 1 and 'maxzoom'."),
            ("{ maxzoom = 12, filename = 'x', max_tiles_geometry = 12345678901234567890 }", "The 'max_tiles_geometry' field in a expire output must be between 1 and 4 << 20."),
            ("{ maxzoom = 12, filename = 'x', max_tiles_overall = -1 }", "The 'max_tiles_overall' field in a expire output must be between 1 and 4 << 20."),
        ];
        for (source, expected) in cases {
            assert_eq!(output(&lua, source).unwrap_err(), expected, "{source}");
        }
    }

    fn geometry_column(srid: i32) -> ColumnDef {
        let mut column = ColumnDef::new(
            "geom",
            ColumnType::Geometry(crate::apply::flex::table::GeometryKind::Any),
        );
        column.srid = srid;
        column
    }

    fn column_expire(
        lua: &Lua,
        source: &str,
        column: &ColumnDef,
    ) -> Result<Vec<ColumnExpire>, String> {
        let handle = ExpireOutputHandle {
            index: 0,
            definition: output(lua, "{ maxzoom = 12, filename = 'x' }").unwrap(),
        };
        lua.globals().set("eo", handle).unwrap();
        let value: Value = lua.load(source).eval().unwrap();
        parse_column_expire(&value, column, 1)
    }

    #[test]
    fn column_configs() {
        let lua = Lua::new();
        let geom = geometry_column(3857);
        assert_eq!(column_expire(&lua, "nil", &geom).unwrap(), vec![]);
        assert_eq!(column_expire(&lua, "{}", &geom).unwrap(), vec![]);
        assert_eq!(
            column_expire(&lua, "eo", &geom).unwrap(),
            vec![ColumnExpire::new(0)]
        );
        let configs = column_expire(
            &lua,
            "{ { output = eo, mode = 'hybrid', full_area_limit = 10000, buffer = 0.2 },
               { output = eo, mode = 'boundary-only', diff_expire = true } }",
            &geom,
        )
        .unwrap();
        assert_eq!(
            configs,
            vec![
                ColumnExpire {
                    mode: ExpireMode::Hybrid,
                    full_area_limit: 10000.0,
                    buffer: 0.2,
                    ..ColumnExpire::new(0)
                },
                ColumnExpire {
                    mode: ExpireMode::BoundaryOnly,
                    diff_expire: true,
                    ..ColumnExpire::new(0)
                },
            ]
        );
    }

    #[test]
    fn column_errors_read_like_osm2pgsql() {
        let lua = Lua::new();
        let geom = geometry_column(3857);
        let cases = [
            (
                "{ { output = 'abc' } }",
                "Expire output must be of type ExpireOutput.",
            ),
            (
                "{ { mode = 'full-area' } }",
                "Expire output must be of type ExpireOutput.",
            ),
            ("'eo'", "Expire field must be a Lua array table"),
            ("{ a = eo }", "Expire field must be a Lua array table"),
            ("{ eo }", "Expire config must be a Lua table"),
            ("{ {} }", "Expire config must be a Lua table"),
            (
                "{ { output = eo, buffer = 'notvalid' } }",
                "Optional expire field 'buffer' must contain a number.",
            ),
            (
                "{ { output = eo, mode = 'foo' } }",
                "Unknown expire mode 'foo'.",
            ),
            (
                "{ { output = eo, mode = {} } }",
                "Optional expire field 'mode' must contain a string.",
            ),
            (
                "{ { output = eo, full_area_limit = true } }",
                "Optional expire field 'full_area_limit' must contain a number.",
            ),
            (
                "{ { output = eo, diff_expire = 'foo' } }",
                "Optional expire field 'diff_expire' must contain a boolean.",
            ),
            (
                "{ { output = eo, buffer = -1 } }",
                "Optional expire field 'buffer' must be a number ≥ 0 (not -1).",
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(
                column_expire(&lua, source, &geom).unwrap_err(),
                expected,
                "{source}"
            );
        }
        let message = "Expire only allowed for geometry columns in Web Mercator projection.";
        assert_eq!(
            column_expire(&lua, "eo", &geometry_column(4326)).unwrap_err(),
            message
        );
        let text = ColumnDef::new("name", ColumnType::Text);
        assert_eq!(
            column_expire(&lua, "{ { output = eo } }", &text).unwrap_err(),
            message
        );
    }
}
