//! Lua values to column values, as osm2pgsql 1.8's `flex_write_column`
//! (`flex-write.cpp`) converts them: the text a `COPY … FROM STDIN`
//! field carries, or NULL. Geometry columns are converted by the caller,
//! which holds the geometry objects.
//!
//! `nil` is NULL for every type; functions and threads are errors; other
//! mismatches are errors naming the Lua type and the column type, in
//! upstream's words (`Invalid type 'boolean' for text column.`).

use super::table::{ColumnDef, ColumnType};
use mlua::{Lua, Table, Value};

/// Converts `value` for `column`: `Ok(None)` is NULL.
pub fn convert(lua: &Lua, column: &ColumnDef, value: &Value) -> Result<Option<String>, String> {
    let mut text = String::new();
    Ok(convert_into(lua, column, value, &mut text)?.then_some(text))
}

/// [`convert`] into `out`, which the caller clears and reuses: the import
/// converts every column of every row, and the text and hstore columns
/// (tags) built in fresh strings were a tenth of its allocations (perf,
/// flex import of Liechtenstein ×10). `Ok(false)` is NULL.
pub fn convert_into(
    lua: &Lua,
    column: &ColumnDef,
    value: &Value,
    out: &mut String,
) -> Result<bool, String> {
    let text = match convert_text(lua, column, value, out)? {
        Converted::Null => return Ok(false),
        Converted::Written => return Ok(true),
        Converted::Text(text) => text,
    };
    out.push_str(&text);
    Ok(true)
}

/// What [`convert_text`] made: text, text already written into the
/// caller's buffer, or NULL.
enum Converted {
    Null,
    Written,
    Text(String),
}

impl From<Option<String>> for Converted {
    fn from(text: Option<String>) -> Self {
        text.map_or(Converted::Null, Converted::Text)
    }
}

fn convert_text(
    lua: &Lua,
    column: &ColumnDef,
    value: &Value,
    out: &mut String,
) -> Result<Converted, String> {
    if matches!(value, Value::Function(_) | Value::Thread(_)) {
        return Err("Can not add Lua objects of type function or thread.".into());
    }
    if value.is_nil() {
        return Ok(Converted::Null);
    }
    let kind = value.type_name();
    let invalid = |column_type: &str| format!("Invalid type '{kind}' for {column_type} column.");
    let simple = match column.column_type {
        ColumnType::Text => match value {
            Value::String(_) | Value::Integer(_) | Value::Number(_) => {
                push_lua_tostring(lua, value, out);
                return Ok(Converted::Written);
            }
            _ => Err(invalid("text")),
        },
        ColumnType::Boolean => match value {
            Value::Boolean(b) => Ok(Some(bool_text(*b))),
            Value::Integer(i) => Ok(Some(bool_text(*i != 0))),
            Value::Number(n) => Ok(Some(bool_text(*n != 0.0))),
            Value::String(s) => Ok(match s.as_bytes().as_ref() {
                b"yes" | b"true" | b"1" => Some(bool_text(true)),
                b"no" | b"false" | b"0" => Some(bool_text(false)),
                _ => None,
            }),
            _ => Err(invalid("boolean")),
        },
        ColumnType::Int2 => {
            integer(value, i16::MIN.into(), i16::MAX.into()).ok_or_else(|| invalid("int2"))
        }
        ColumnType::Int4 => {
            integer(value, i32::MIN.into(), i32::MAX.into()).ok_or_else(|| invalid("int4"))
        }
        ColumnType::Int8 => integer(value, i64::MIN, i64::MAX).ok_or_else(|| invalid("int8")),
        ColumnType::Real => match value {
            Value::Integer(i) => Ok(Some(i.to_string())),
            Value::Number(n) => Ok(Some(fmt_double(*n))),
            Value::String(s) => Ok(strtod_whole(&s.to_string_lossy()).map(fmt_double)),
            _ => Err(invalid("real")),
        },
        ColumnType::Direction => match value {
            Value::Boolean(b) => Ok(Some(i32::from(*b).to_string())),
            Value::Integer(i) => Ok(Some(i.signum().to_string())),
            Value::Number(n) => Ok(Some(sign(*n).to_string())),
            Value::String(s) => Ok(match s.as_bytes().as_ref() {
                b"yes" | b"1" => Some("1".into()),
                b"no" | b"0" => Some("0".into()),
                b"-1" => Some("-1".into()),
                _ => None,
            }),
            _ => Err(invalid("direction")),
        },
        ColumnType::Hstore => match value {
            Value::Table(table) => {
                hstore(lua, table, out)?;
                return Ok(Converted::Written);
            }
            _ => Err(invalid("hstore")),
        },
        ColumnType::Json | ColumnType::Jsonb => {
            write_json(lua, value, out, &mut Vec::new())?;
            return Ok(Converted::Written);
        }
        ColumnType::Area => {
            Err("Column type 'area' not allowed with 'insert()'. Maybe use 'real'?".into())
        }
        ColumnType::Geometry(_) | ColumnType::IdType | ColumnType::IdNum => Err(format!(
            "Column '{}' is not written from Lua values.",
            column.name
        )),
    };
    simple.map(Converted::from)
}

fn bool_text(value: bool) -> String {
    (if value { "t" } else { "f" }).to_string()
}

/// `sgn` in `flex-write.cpp`: NaN is 0.
fn sign(value: f64) -> i32 {
    if value > 0.0 {
        1
    } else if value < 0.0 {
        -1
    } else {
        0
    }
}

/// The text Lua's `lua_tolstring` gives a string or number (`%.14g`
/// floats, `4.0` for integral floats, `-nan`).
fn push_lua_tostring(lua: &Lua, value: &Value, out: &mut String) {
    match value {
        // A string is its own text: borrowed when it is UTF-8, as tags are.
        Value::String(s) => match s.to_str() {
            Ok(text) => out.push_str(&text),
            Err(_) => out.push_str(&s.to_string_lossy()),
        },
        Value::Integer(i) => {
            use std::fmt::Write;
            let _ = write!(out, "{i}");
        }
        _ => {
            if let Some(text) = lua_tostring(lua, value) {
                out.push_str(&text);
            }
        }
    }
}

/// [`push_lua_tostring`] into a new string; `None` for what Lua cannot
/// coerce to a string.
fn lua_tostring(lua: &Lua, value: &Value) -> Option<String> {
    if let Value::String(s) = value {
        // A string is its own text: no coercion round trip.
        return Some(s.to_string_lossy());
    }
    lua.coerce_string(value.clone())
        .ok()
        .flatten()
        .map(|s| s.to_string_lossy())
}

/// An integer column: numbers through `lua_tointeger` (a float without an
/// exact integer value is 0), strings through `strtoll` on the whole
/// string, booleans 1/0; out of range is NULL. `None` = the Lua type is
/// not accepted.
fn integer(value: &Value, min: i64, max: i64) -> Option<Option<String>> {
    let number = match value {
        Value::Boolean(b) => Some(i64::from(*b)),
        Value::Integer(i) => Some(*i),
        Value::Number(n) => Some(lua_tointeger(*n)),
        Value::String(s) => strtoll_whole(&s.to_string_lossy()),
        _ => return None,
    };
    Some(
        number
            .filter(|n| (min..=max).contains(n))
            .map(|n| n.to_string()),
    )
}

/// Lua 5.3's `lua_tointeger` on a float: its value if integral and in
/// range, else 0.
fn lua_tointeger(value: f64) -> i64 {
    // i64's range as floats: -2^63 is exact, 2^63 is the first float past it.
    const RANGE: std::ops::Range<f64> = -9.223_372_036_854_776e18..9.223_372_036_854_776e18;
    if value.fract() == 0.0 && RANGE.contains(&value) {
        value as i64
    } else {
        0
    }
}

/// C's `strtoll(text, &end, 10)` accepting only when the whole string is
/// used: leading whitespace and a sign are fine, trailing anything is not,
/// overflow is `None` (errno).
fn strtoll_whole(text: &str) -> Option<i64> {
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if digits.is_empty() || digits.starts_with(['+']) {
        return None;
    }
    let body = digits.strip_prefix('-').unwrap_or(digits);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()
}

/// C's `strtod` accepting only when the whole string is used: decimal and
/// hexadecimal numbers, `inf`/`infinity`/`nan` in any case, leading
/// whitespace; empty is `None`.
fn strtod_whole(text: &str) -> Option<f64> {
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    if trimmed.is_empty() {
        return None;
    }
    let (negative, body) = match trimmed.as_bytes()[0] {
        b'-' => (true, &trimmed[1..]),
        b'+' => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let magnitude = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        parse_hex_float(hex)?
    } else {
        let lower = body.to_ascii_lowercase();
        match lower.as_str() {
            "inf" | "infinity" => f64::INFINITY,
            "nan" => f64::NAN,
            _ if lower.starts_with("nan(") && lower.ends_with(')') => f64::NAN,
            _ if body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) =>
            {
                body.parse::<f64>().ok()?
            }
            _ => return None,
        }
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// The digits of a C hexadecimal float after `0x` (`10`, `1.8p3`).
fn parse_hex_float(text: &str) -> Option<f64> {
    let (mantissa, exponent) = match text.find(['p', 'P']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut value = 0.0f64;
    for c in whole.chars() {
        value = value * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in fraction.chars() {
        value += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    Some(value * 2f64.powi(exponent))
}

/// A double as fmt's `{}` writes it (osm2pgsql's COPY and JSON writers):
/// shortest round-trip digits, exponent form below 1e-4 or from 1e16
/// (`1e+300`), `nan`, `inf`.
pub fn fmt_double(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let mut text = format!("{value:e}");
    let e_at = text.find('e').expect("{:e} has an exponent");
    let exponent: i32 = text[e_at + 1..].parse().expect("integer exponent");
    if !(-4..16).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        let magnitude = exponent.abs();
        text.truncate(e_at + 1);
        text.push(sign);
        if magnitude < 10 {
            text.push('0');
        }
        text.push_str(&magnitude.to_string());
        return text;
    }
    // The same shortest digits, placed: what `format!("{value}")` writes,
    // without formatting the number a second time (area columns hold a
    // double per row).
    let negative = value < 0.0;
    let digits: Vec<u8> = text.as_bytes()[..e_at]
        .iter()
        .copied()
        .filter(u8::is_ascii_digit)
        .collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if exponent < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.extend(digits.iter().map(|&d| d as char));
    } else {
        let whole = exponent as usize + 1;
        for i in 0..whole.max(digits.len()) {
            if i == whole {
                out.push('.');
            }
            out.push(digits.get(i).map_or('0', |&d| d as char));
        }
    }
    out
}

/// hstore's text form: `"k"=>"v"` pairs, `"` and `\\` escaped, written
/// into `out`. Keys and values must be strings or numbers (`lua_tostring`).
fn hstore(lua: &Lua, table: &Table, out: &mut String) -> Result<(), String> {
    let mut first = true;
    for pair in table.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        if !is_text(&key) {
            return Err(format!(
                "NULL key for hstore. Possibly this is due to an incorrect data type '{}' as key.",
                key.type_name()
            ));
        }
        if !is_text(&value) {
            let mut key_text = String::new();
            push_lua_tostring(lua, &key, &mut key_text);
            return Err(format!(
                "NULL value for hstore. Possibly this is due to an incorrect data type '{}' for key '{key_text}'.",
                value.type_name()
            ));
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_hstore_quoted(lua, &key, out);
        out.push_str("=>");
        push_hstore_quoted(lua, &value, out);
    }
    Ok(())
}

/// Whether `lua_tostring` gives `value` a text: strings and numbers.
fn is_text(value: &Value) -> bool {
    matches!(
        value,
        Value::String(_) | Value::Integer(_) | Value::Number(_)
    )
}

/// `value`'s text between double quotes, `"` and `\\` escaped.
fn push_hstore_quoted(lua: &Lua, value: &Value, out: &mut String) {
    out.push('"');
    let start = out.len();
    push_lua_tostring(lua, value, out);
    if out[start..].contains(['"', '\\']) {
        let text = out.split_off(start);
        for c in text.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
}

/// JSON as osm2pgsql's `write_json` writes it: an empty table is `{}`, a
/// sequence 1..n an array, string keys an object; other keys and loops
/// are errors.
fn write_json(
    lua: &Lua,
    value: &Value,
    out: &mut String,
    seen: &mut Vec<usize>,
) -> Result<(), String> {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::Number(n) => {
            let integral = lua_tointeger(*n);
            if n.fract() == 0.0 && integral as f64 == *n {
                out.push_str(&integral.to_string());
            } else if n.is_finite() {
                out.push_str(&fmt_double(*n));
            } else {
                out.push_str("null");
            }
        }
        Value::String(s) => push_json_string(out, &s.to_string_lossy()),
        Value::Table(table) => write_json_table(lua, table, out, seen)?,
        other => {
            return Err(format!(
                "Invalid type '{}' for json/jsonb column.",
                other.type_name()
            ))
        }
    }
    Ok(())
}

fn write_json_table(
    lua: &Lua,
    table: &Table,
    out: &mut String,
    seen: &mut Vec<usize>,
) -> Result<(), String> {
    let address = table.to_pointer() as usize;
    if seen.contains(&address) {
        return Err("Loop detected in table".into());
    }
    seen.push(address);
    let pairs: Vec<(Value, Value)> = table
        .pairs::<Value, Value>()
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let length = table.raw_len();
    if pairs.is_empty() {
        out.push_str("{}");
    } else if length == pairs.len() {
        out.push('[');
        for i in 1..=length {
            if i > 1 {
                out.push(',');
            }
            let item: Value = table.raw_get(i).map_err(|e| e.to_string())?;
            write_json(lua, &item, out, seen)?;
        }
        out.push(']');
    } else {
        out.push('{');
        for (i, (key, item)) in pairs.iter().enumerate() {
            let Value::String(key) = key else {
                return Err(format!("Incorrect data type '{}' as key.", key.type_name()));
            };
            if i > 0 {
                out.push(',');
            }
            push_json_string(out, &key.to_string_lossy());
            out.push(':');
            write_json(lua, item, out, seen)?;
        }
        out.push('}');
    }
    seen.pop();
    Ok(())
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) <= 0x1f => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `text` as a field in COPY's text format: backslash, tab,
/// newline and carriage return escaped (PostgreSQL's `CopyReadAttributesText`
/// reads them back). Most fields hold none of them and are copied whole.
pub fn escape_copy_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let special = |b: &u8| matches!(b, b'\\' | b'\t' | b'\n' | b'\r');
    if !bytes.iter().any(special) {
        out.extend_from_slice(bytes);
        return;
    }
    for &byte in bytes {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(byte),
        }
    }
}

/// Appends the decimal digits of `value` (a COPY text field needs no
/// escaping for them) without a temporary string.
pub fn write_integer(out: &mut Vec<u8>, value: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

/// A column's value as [`read_columns`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSlot {
    /// NULL: the row has no value for the column (or, for numbers, one
    /// out of the column's range, as [`convert`] makes it).
    Null,
    /// Converted and COPY-escaped: these bytes of the output buffer.
    Text(std::ops::Range<usize>),
    /// Not read here: geometry and id columns, and values that need
    /// [`convert`] (tables, booleans, coercions, errors).
    Convert,
}

/// Reads the plain columns of `row` straight off the Lua stack: `names`
/// is a sequence of the written columns' names, `columns` their
/// definitions. Strings for text columns and numbers for integer and real
/// columns (most of a row's values) are converted here, exactly as
/// [`convert`] converts them, into `out`; missing values are NULL;
/// everything else is left to [`convert`].
///
/// Why: looking each of a row's columns up through mlua made a value
/// reference per column, and a row of openstreetmap-carto's tables has
/// about forty, most of them empty; this is one protected call per row
/// (perf, flex import of Liechtenstein ×100: a quarter of `insert`).
pub fn read_columns<'a>(
    lua: &Lua,
    row: &Table,
    names: &Table,
    columns: impl Iterator<Item = &'a ColumnDef>,
    out: &mut Vec<u8>,
    slots: &mut Vec<ColumnSlot>,
) -> mlua::Result<()> {
    use mlua::ffi;
    slots.clear();
    // SAFETY: the closure runs inside mlua's protected call with `row`
    // at stack index 1 and `names` at 2; it only reads with raw accesses
    // (which never raise errors) and leaves the stack as it found it
    // apart from what exec_raw discards.
    unsafe {
        lua.exec_raw::<()>((row, names), |state| {
            // A value, and raw_hstore's key, value and copy on top of it;
            // without the room every column is left to convert().
            let room = ffi::lua_checkstack(state, 8) != 0;
            for (index, column) in columns.enumerate() {
                if !room {
                    slots.push(ColumnSlot::Convert);
                    continue;
                }
                let slot = match column.column_type {
                    ColumnType::Text
                    | ColumnType::Int2
                    | ColumnType::Int4
                    | ColumnType::Int8
                    | ColumnType::Real
                    | ColumnType::Hstore => {
                        ffi::lua_rawgeti(state, 2, index as ffi::lua_Integer + 1);
                        ffi::lua_rawget(state, 1);
                        let slot = raw_slot(state, column.column_type, out);
                        ffi::lua_settop(state, 2);
                        slot
                    }
                    _ => ColumnSlot::Convert,
                };
                slots.push(slot);
            }
        })
    }
}

/// The slot of the value at the top of the stack for a column of `kind`.
///
/// # Safety
/// `state` must be a valid Lua state with at least one value on its stack.
unsafe fn raw_slot(
    state: *mut mlua::ffi::lua_State,
    kind: ColumnType,
    out: &mut Vec<u8>,
) -> ColumnSlot {
    use mlua::ffi;
    let start = out.len();
    // SAFETY: the caller guarantees a value at the top of the stack; the
    // string slice is used before anything can pop it.
    unsafe {
        match ffi::lua_type(state, -1) {
            ffi::LUA_TNIL => ColumnSlot::Null,
            ffi::LUA_TSTRING if kind == ColumnType::Text => {
                let mut len = 0usize;
                let data = ffi::lua_tolstring(state, -1, &mut len);
                let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
                // Not UTF-8: convert() replaces what is invalid.
                match std::str::from_utf8(bytes) {
                    Ok(text) => {
                        escape_copy_text(out, text);
                        ColumnSlot::Text(start..out.len())
                    }
                    Err(_) => ColumnSlot::Convert,
                }
            }
            ffi::LUA_TNUMBER if ffi::lua_isinteger(state, -1) != 0 => {
                let value = ffi::lua_tointegerx(state, -1, std::ptr::null_mut());
                let range = match kind {
                    ColumnType::Int2 => i64::from(i16::MIN)..=i64::from(i16::MAX),
                    ColumnType::Int4 => i64::from(i32::MIN)..=i64::from(i32::MAX),
                    ColumnType::Int8 | ColumnType::Real => i64::MIN..=i64::MAX,
                    _ => return ColumnSlot::Convert,
                };
                if !range.contains(&value) {
                    return ColumnSlot::Null;
                }
                write_integer(out, value);
                ColumnSlot::Text(start..out.len())
            }
            ffi::LUA_TTABLE if kind == ColumnType::Hstore => {
                if raw_hstore(state, out) {
                    ColumnSlot::Text(start..out.len())
                } else {
                    out.truncate(start);
                    ColumnSlot::Convert
                }
            }
            ffi::LUA_TNUMBER if kind == ColumnType::Real => {
                let value = ffi::lua_tonumberx(state, -1, std::ptr::null_mut());
                out.extend_from_slice(fmt_double(value).as_bytes());
                ColumnSlot::Text(start..out.len())
            }
            _ => ColumnSlot::Convert,
        }
    }
}

/// [`hstore`]'s text of the table at the top of the stack, COPY-escaped,
/// appended to `out`; `false` (with `out` partly written) where
/// [`convert`] must decide: a key or value that is neither a string nor
/// a number, or text that is not UTF-8.
///
/// # Safety
/// `state` must be a valid Lua state with a table at the top of its stack
/// and room for three more values.
unsafe fn raw_hstore(state: *mut mlua::ffi::lua_State, out: &mut Vec<u8>) -> bool {
    use mlua::ffi;
    // SAFETY: lua_next walks the table at -2 (below the pushed nil/key);
    // keys are converted on a copy, never in place, which would confuse
    // lua_next; every path leaves the stack as it found it.
    unsafe {
        let table = ffi::lua_absindex(state, -1);
        let mut first = true;
        ffi::lua_pushnil(state);
        while ffi::lua_next(state, table) != 0 {
            if !first {
                out.push(b',');
            }
            first = false;
            // The key at -2, then the value at -1 (each copied to the top
            // before conversion; the copy is popped again).
            for (index, separator) in [(-2, &b"=>"[..]), (-1, &b""[..])] {
                if !matches!(
                    ffi::lua_type(state, index),
                    ffi::LUA_TSTRING | ffi::LUA_TNUMBER
                ) {
                    ffi::lua_settop(state, -3);
                    return false;
                }
                ffi::lua_pushvalue(state, index);
                let mut len = 0usize;
                let data = ffi::lua_tolstring(state, -1, &mut len);
                let text = std::str::from_utf8(std::slice::from_raw_parts(data.cast::<u8>(), len));
                let Ok(text) = text else {
                    ffi::lua_settop(state, -4);
                    return false;
                };
                push_copy_hstore_quoted(out, text);
                ffi::lua_settop(state, -2);
                out.extend_from_slice(separator);
            }
            ffi::lua_settop(state, -2);
        }
        true
    }
}

/// `text` quoted for hstore (`"`, with `"` and `\` escaped by a
/// backslash), then escaped for COPY: [`push_hstore_quoted`] followed by
/// [`escape_copy_text`] in one pass.
fn push_copy_hstore_quoted(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\\\""),
            b'\\' => out.extend_from_slice(b"\\\\\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes() {
        let mut out = Vec::new();
        escape_copy_text(&mut out, "a\tb\\c\nd\re");
        assert_eq!(out, b"a\\tb\\\\c\\nd\\re");
        out.clear();
        escape_copy_text(&mut out, "plain text");
        assert_eq!(out, b"plain text");
    }

    #[test]
    fn integers_written_in_decimal() {
        for value in [0, 7, -7, 1234567890, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_integer(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
        }
    }
    use crate::apply::flex::table::ColumnType;

    fn column(type_name: &str) -> ColumnDef {
        ColumnDef {
            name: "c".into(),
            column_type: ColumnType::parse(type_name).unwrap(),
            sql_type: None,
            not_null: false,
            create_only: false,
            srid: 3857,
            expire: Vec::new(),
        }
    }

    #[test]
    fn read_columns_agrees_with_convert() {
        let cases = [
            ("text", "'plain'"),
            ("text", "'tab\\there, back\\\\slash, \\nnewline \"quoted\"'"),
            ("text", "'\\255not utf-8'"),
            ("text", "42"),
            ("text", "2.5"),
            ("text", "nil"),
            ("int2", "40000"),
            ("int4", "-7"),
            ("int8", "3.0"),
            ("int8", "'12'"),
            ("real", "7"),
            ("real", "0.1"),
            ("real", "'2.5'"),
            ("hstore", "{}"),
            (
                "hstore",
                "{ a = 'x\"y', ['k\\\\'] = 1.5, n = 3, t = 'a\\tb' }",
            ),
            ("hstore", "{ [1] = 'one' }"),
            ("hstore", "{ a = '\\255' }"),
            ("hstore", "{ a = true }"),
            ("hstore", "{ a = {} }"),
            ("bool", "'yes'"),
        ];
        let lua = Lua::new();
        let row = lua.create_table().unwrap();
        let names = lua.create_table().unwrap();
        let mut columns = Vec::new();
        for (i, (type_name, source)) in cases.iter().enumerate() {
            let name = format!("c{i}");
            let value: Value = lua.load(*source).eval().unwrap();
            row.raw_set(name.as_str(), value).unwrap();
            names.raw_set(i + 1, name.as_str()).unwrap();
            columns.push(ColumnDef {
                name,
                ..column(type_name)
            });
        }
        let (mut out, mut slots) = (Vec::new(), Vec::new());
        read_columns(&lua, &row, &names, columns.iter(), &mut out, &mut slots).unwrap();
        assert_eq!(slots.len(), cases.len());
        let mut fast = 0;
        for ((slot, column), (type_name, source)) in slots.iter().zip(&columns).zip(cases) {
            let value: Value = row.raw_get(column.name.as_str()).unwrap();
            let expected = convert(&lua, column, &value);
            match slot {
                ColumnSlot::Convert => continue,
                ColumnSlot::Null => assert_eq!(expected, Ok(None), "{type_name} {source}"),
                ColumnSlot::Text(range) => {
                    let mut escaped = Vec::new();
                    escape_copy_text(&mut escaped, &expected.unwrap().unwrap());
                    assert_eq!(out[range.clone()], escaped, "{type_name} {source}");
                }
            }
            fast += 1;
        }
        assert_eq!(fast, 10, "{slots:?}");
    }

    /// Converts the Lua expression `source` for a column of `type_name`.
    fn run(type_name: &str, source: &str) -> Result<Option<String>, String> {
        let lua = Lua::new();
        let value: Value = lua.load(source).eval().unwrap();
        convert(&lua, &column(type_name), &value)
    }

    fn ok(type_name: &str, source: &str) -> Option<String> {
        run(type_name, source).unwrap()
    }

    #[test]
    fn text() {
        assert_eq!(ok("text", "'abc'").as_deref(), Some("abc"));
        assert_eq!(ok("text", "12").as_deref(), Some("12"));
        assert_eq!(ok("text", "3.5").as_deref(), Some("3.5"));
        assert_eq!(ok("text", "4.0").as_deref(), Some("4.0"));
        assert_eq!(ok("text", "1e300").as_deref(), Some("1e+300"));
        assert_eq!(ok("text", "1/0").as_deref(), Some("inf"));
        assert_eq!(ok("text", "nil"), None);
        assert_eq!(
            run("text", "true").unwrap_err(),
            "Invalid type 'boolean' for text column."
        );
        assert_eq!(
            run("text", "{}").unwrap_err(),
            "Invalid type 'table' for text column."
        );
        assert_eq!(
            run("text", "print").unwrap_err(),
            "Can not add Lua objects of type function or thread."
        );
    }

    #[test]
    fn booleans_and_directions() {
        for (source, expected) in [
            ("true", Some("t")),
            ("0", Some("f")),
            ("2", Some("t")),
            ("0/0", Some("t")),
            ("'yes'", Some("t")),
            ("'false'", Some("f")),
            ("'Yes'", None),
        ] {
            assert_eq!(ok("boolean", source).as_deref(), expected, "{source}");
        }
        for (source, expected) in [
            ("true", Some("1")),
            ("-7", Some("-1")),
            ("0.5", Some("1")),
            ("0/0", Some("0")),
            ("'yes'", Some("1")),
            ("'-1'", Some("-1")),
            ("'reverse'", None),
        ] {
            assert_eq!(ok("direction", source).as_deref(), expected, "{source}");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(ok("int4", "12").as_deref(), Some("12"));
        assert_eq!(ok("int4", "4.0").as_deref(), Some("4"));
        assert_eq!(ok("int4", "3.5").as_deref(), Some("0"));
        assert_eq!(ok("int4", "1e300").as_deref(), Some("0"));
        assert_eq!(ok("int4", "true").as_deref(), Some("1"));
        assert_eq!(ok("int4", "' +12'").as_deref(), Some("12"));
        assert_eq!(ok("int4", "'-3'").as_deref(), Some("-3"));
        assert_eq!(ok("int4", "'12 m'"), None);
        assert_eq!(ok("int4", "''"), None);
        assert_eq!(ok("int4", "'2147483648'"), None);
        assert_eq!(ok("int2", "40000"), None);
        assert_eq!(
            ok("int8", "'9223372036854775807'").as_deref(),
            Some("9223372036854775807")
        );
        assert_eq!(ok("int8", "'9223372036854775808'"), None);
        assert_eq!(
            run("int2", "{}").unwrap_err(),
            "Invalid type 'table' for int2 column."
        );
    }

    #[test]
    fn reals() {
        assert_eq!(ok("real", "3.5").as_deref(), Some("3.5"));
        assert_eq!(ok("real", "7").as_deref(), Some("7"));
        assert_eq!(ok("real", "'0x10'").as_deref(), Some("16"));
        assert_eq!(ok("real", "' 2.5e3'").as_deref(), Some("2500"));
        assert_eq!(ok("real", "'inf'").as_deref(), Some("inf"));
        assert_eq!(ok("real", "'nan'").as_deref(), Some("nan"));
        assert_eq!(ok("real", "'12 m'"), None);
        assert_eq!(
            run("real", "true").unwrap_err(),
            "Invalid type 'boolean' for real column."
        );
        assert_eq!(fmt_double(1e300), "1e+300");
        assert_eq!(fmt_double(1.5e-7), "1.5e-07");
        assert_eq!(fmt_double(0.0001), "0.0001");
        assert_eq!(fmt_double(1e16), "1e+16");
        assert_eq!(fmt_double(123456789012345.0), "123456789012345");
    }

    #[test]
    fn positional_doubles_match_rusts_display() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut values = vec![
            0.1, -0.1, 1.0, 10.0, 100.5, 0.000123, -9.99e15, 1234.5678, 1e-4,
        ];
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64;
            let exponent = (state % 21) as i32 - 5;
            values.push(mantissa * 10f64.powi(exponent));
        }
        for value in values {
            if value != 0.0 && (1e-4..1e16).contains(&value.abs()) {
                assert_eq!(fmt_double(value), format!("{value}"), "{value:e}");
            }
        }
    }

    #[test]
    fn hstore_and_json() {
        assert_eq!(
            ok("hstore", "{ a = 'x\"y', b = 3 }").map(|s| s.len()),
            Some(20)
        );
        let single = ok("hstore", "{ ['k\\\\'] = 1.5 }").unwrap();
        assert_eq!(single, r#""k\\"=>"1.5""#);
        assert!(run("hstore", "{ a = true }")
            .unwrap_err()
            .starts_with("NULL value for hstore."));
        assert!(run("hstore", "'a=>b'")
            .unwrap_err()
            .starts_with("Invalid type 'string' for hstore"));
        assert_eq!(ok("json", "{}").as_deref(), Some("{}"));
        assert_eq!(
            ok("jsonb", "{ 1, 'a', true, 2.5, 4.0, 0/0 }").as_deref(),
            Some(r#"[1,"a",true,2.5,4,null]"#)
        );
        assert_eq!(
            ok("json", "{ k = { 'x\\n' } }").as_deref(),
            Some(r#"{"k":["x\n"]}"#)
        );
        assert_eq!(ok("json", "'s'").as_deref(), Some(r#""s""#));
        assert_eq!(
            run("json", "{ [true] = 1 }").unwrap_err(),
            "Incorrect data type 'boolean' as key."
        );
        assert_eq!(
            run("json", "(function() local t = {} t.t = t return t end)()").unwrap_err(),
            "Loop detected in table"
        );
    }
}
