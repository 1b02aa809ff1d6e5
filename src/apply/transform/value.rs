//! Column values from tag values, as osm2pgsql 1.8's `table_t::escape_type`
//! converts them, and the text form of computed numbers.
//!
//! osm2pgsql parses with `sscanf("%18lld-%18lld")` (int4) and
//! `sscanf("%lf-%lf")` (real); the small scanners here reproduce glibc's
//! behaviour on those formats, checked against osm2pgsql 1.8.0 on
//! PostgreSQL 15 (see the tests for the cases).

use crate::apply::style::ValueType;

/// A value for one column of an output row.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValue {
    /// A `text` column's value, or any type osm2pgsql passes through as
    /// text.
    Text(String),
    /// An integer column's value, in the int4 range.
    Int4(i32),
    /// float4; may be NaN or ±infinity (PostgreSQL's `NaN`, `Infinity`),
    /// as osm2pgsql writes them for `nan`/`inf` tag values.
    Real(f32),
    /// No value: the tag is absent or does not convert.
    Null,
}

impl ColumnValue {
    /// Converts a tag value for a column of this type.
    pub fn from_tag(value: &str, value_type: ValueType) -> ColumnValue {
        match value_type {
            ValueType::Text => ColumnValue::Text(value.to_string()),
            ValueType::Int4 => int4_value(value).map_or(ColumnValue::Null, ColumnValue::Int4),
            ValueType::Real => real_value(value).map_or(ColumnValue::Null, ColumnValue::Real),
        }
    }
}

/// int4 conversion: the first integer in the value, or the mean of `a-b`
/// (rounded toward zero); NULL when there is no leading integer or the
/// result is outside int32 (osm2pgsql 1.8 does not clamp). Each number reads
/// at most 18 characters, sign included, after leading whitespace.
///
/// `"5;6"` → 5, `" 12 m"` → 12, `"3-4"` → 3, `"-3-5"` → 1, `"1e3"` → 1,
/// `"2147483648"` → NULL, `"3 - 5"` → 3 (no whitespace before `-`).
pub fn int4_value(value: &str) -> Option<i32> {
    let bytes = value.as_bytes();
    let mut pos = 0;
    let from = scan_integer(bytes, &mut pos)?;
    let to = if bytes.get(pos) == Some(&b'-') {
        pos += 1;
        scan_integer(bytes, &mut pos)
    } else {
        None
    };
    let result = match to {
        None => from,
        // The mean without overflow, as osm2pgsql computes it (truncating).
        Some(to) => from / 2 + to / 2 + (from % 2 + to % 2) / 2,
    };
    i32::try_from(result).ok()
}

/// real conversion: `,` counts as `.`; the first number (C `strtod` syntax,
/// so also `inf`, `nan`, hex) or the mean of `a-b`; if the whole value ends
/// in `ft` the result is multiplied by 0.3048. NULL when no number leads.
/// Results that float4 cannot hold (overflow, underflow to 0) are NULL too:
/// osm2pgsql 1.8 aborts the import on them.
///
/// `"1,5"` → 1.5, `"5ft"` → 1.524, `"3-5"` → 4, `"12 m"` → 12, `"5;6"` → 5.
pub fn real_value(value: &str) -> Option<f32> {
    let escaped = value.replace(',', ".");
    let bytes = escaped.as_bytes();
    let mut pos = 0;
    let from = scan_double(bytes, &mut pos)?;
    let to = if bytes.get(pos) == Some(&b'-') {
        pos += 1;
        scan_double(bytes, &mut pos)
    } else {
        None
    };
    let feet = escaped.len() > 1 && escaped.ends_with("ft");
    let scale = |v: f64| if feet { v * 0.3048 } else { v };
    let result = match to {
        None => scale(from),
        Some(to) => (scale(from) + scale(to)) / 2.0,
    };
    to_float4(result)
}

/// A double as it reaches a float4 column: osm2pgsql writes the shortest
/// text that reads back as the same double, PostgreSQL parses that text.
/// None where PostgreSQL rejects it as out of range.
pub fn to_float4(value: f64) -> Option<f32> {
    pg_float4(&value.to_string())
}

/// PostgreSQL's float4 input (`float4in`): surrounding whitespace allowed,
/// `inf`/`infinity`/`nan` in any case; None for text it rejects and for
/// finite values that overflow or underflow to zero.
pub fn pg_float4(text: &str) -> Option<f32> {
    let text = text.trim_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
    let narrow: f32 = text.parse().ok()?;
    let wide: f64 = text.parse().ok()?;
    if (narrow.is_infinite() && wide.is_finite()) || (narrow == 0.0 && wide != 0.0) {
        return None;
    }
    Some(narrow)
}

/// C `isspace` in the "C" locale.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn skip_space(bytes: &[u8], pos: &mut usize) {
    while bytes.get(*pos).is_some_and(|&b| is_c_space(b)) {
        *pos += 1;
    }
}

/// `%18lld`: whitespace, then at most 18 characters of sign and digits.
fn scan_integer(bytes: &[u8], pos: &mut usize) -> Option<i64> {
    const WIDTH: usize = 18;
    skip_space(bytes, pos);
    let mut used = 0;
    let mut negative = false;
    if let Some(&sign @ (b'+' | b'-')) = bytes.get(*pos) {
        negative = sign == b'-';
        *pos += 1;
        used += 1;
    }
    let mut magnitude: i64 = 0;
    let mut digits = 0;
    while used < WIDTH {
        match bytes.get(*pos) {
            Some(&d) if d.is_ascii_digit() => {
                // 18 characters cannot overflow i64.
                magnitude = magnitude * 10 + i64::from(d - b'0');
                *pos += 1;
                used += 1;
                digits += 1;
            }
            _ => break,
        }
    }
    if digits == 0 {
        return None;
    }
    Some(if negative { -magnitude } else { magnitude })
}

fn starts_with_ignore_case(bytes: &[u8], pos: usize, word: &[u8]) -> bool {
    bytes
        .get(pos..pos + word.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(word))
}

/// `%lf` as glibc reads it: whitespace, sign, then `inf[inity]`, `nan`,
/// a hex float (`0x…[p…]`), or a decimal float. An exponent marker without
/// digits is consumed and ignored (`"1e"` → 1).
fn scan_double(bytes: &[u8], pos: &mut usize) -> Option<f64> {
    skip_space(bytes, pos);
    let mut negative = false;
    if let Some(&sign @ (b'+' | b'-')) = bytes.get(*pos) {
        negative = sign == b'-';
        *pos += 1;
    }
    let magnitude = if starts_with_ignore_case(bytes, *pos, b"inf") {
        *pos += 3;
        if starts_with_ignore_case(bytes, *pos, b"inity") {
            *pos += 5;
        }
        f64::INFINITY
    } else if starts_with_ignore_case(bytes, *pos, b"nan") {
        *pos += 3;
        f64::NAN
    } else if bytes.get(*pos) == Some(&b'0') && matches!(bytes.get(*pos + 1), Some(b'x' | b'X')) {
        *pos += 2;
        scan_hex_float(bytes, pos)?
    } else {
        scan_decimal_float(bytes, pos)?
    };
    Some(if negative { -magnitude } else { magnitude })
}

fn scan_digits(bytes: &[u8], pos: &mut usize, is_digit: fn(&u8) -> bool) -> usize {
    let start = *pos;
    while bytes.get(*pos).is_some_and(is_digit) {
        *pos += 1;
    }
    *pos - start
}

/// Reads `[e[sign]digits]`; returns the exponent text (sign and digits).
fn scan_exponent<'a>(bytes: &'a [u8], pos: &mut usize, markers: [u8; 2]) -> &'a [u8] {
    if !bytes.get(*pos).is_some_and(|b| markers.contains(b)) {
        return b"";
    }
    *pos += 1;
    let start = *pos;
    if matches!(bytes.get(*pos), Some(b'+' | b'-')) {
        *pos += 1;
    }
    if scan_digits(bytes, pos, u8::is_ascii_digit) == 0 {
        return b"";
    }
    &bytes[start..*pos]
}

fn scan_decimal_float(bytes: &[u8], pos: &mut usize) -> Option<f64> {
    let start = *pos;
    let integer_digits = scan_digits(bytes, pos, u8::is_ascii_digit);
    let mut mantissa_end = *pos;
    let mut fraction_digits = 0;
    if bytes.get(*pos) == Some(&b'.') {
        *pos += 1;
        fraction_digits = scan_digits(bytes, pos, u8::is_ascii_digit);
        mantissa_end = *pos;
    }
    if integer_digits + fraction_digits == 0 {
        return None;
    }
    let exponent = scan_exponent(bytes, pos, [b'e', b'E']);
    // Rebuild a string Rust's correctly rounding parser accepts.
    let mut text = String::with_capacity(mantissa_end - start + exponent.len() + 3);
    text.push('0');
    text.push_str(std::str::from_utf8(&bytes[start..mantissa_end]).ok()?);
    if text.ends_with('.') {
        text.push('0');
    }
    if !exponent.is_empty() {
        text.push('e');
        text.push_str(std::str::from_utf8(exponent).ok()?);
    }
    text.parse::<f64>().ok()
}

fn scan_hex_float(bytes: &[u8], pos: &mut usize) -> Option<f64> {
    let mut mantissa: f64 = 0.0;
    let mut digits = 0;
    let mut binary_exponent: i64 = 0;
    let mut seen_point = false;
    loop {
        match bytes.get(*pos) {
            Some(&b) if b.is_ascii_hexdigit() => {
                let value = (b as char).to_digit(16)? as f64;
                mantissa = mantissa * 16.0 + value;
                if seen_point {
                    binary_exponent -= 4;
                }
                digits += 1;
                *pos += 1;
            }
            Some(b'.') if !seen_point => {
                seen_point = true;
                *pos += 1;
            }
            _ => break,
        }
    }
    if digits == 0 {
        return None;
    }
    let exponent = scan_exponent(bytes, pos, [b'p', b'P']);
    if !exponent.is_empty() {
        let text = std::str::from_utf8(exponent).ok()?;
        binary_exponent += text.parse::<i64>().unwrap_or(if text.starts_with('-') {
            i64::MIN / 2
        } else {
            i64::MAX / 2
        });
    }
    let exponent = binary_exponent.clamp(-2000, 2000) as i32;
    Some(mantissa * 2f64.powi(exponent))
}

/// `printf("%g")`-style text with 6 significant digits, trailing zeros
/// removed: how osm2pgsql (`util::double_to_buffer`, fmt `{:g}`) writes a
/// computed `way_area` before PostgreSQL reads it into the real column, e.g.
/// `311.289`, `1.8206e+06`.
pub fn format_general6(value: f64) -> String {
    const PRECISION: i32 = 6;
    if value.is_nan() {
        return "nan".to_string();
    }
    if value.is_infinite() {
        return if value < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let scientific = format!("{:.*e}", (PRECISION - 1) as usize, value);
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("Rust's {:e} output has an exponent");
    let exponent: i32 = exponent.parse().expect("integer exponent");
    if !(-4..PRECISION).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{}e{}{:02}",
            strip_fraction_zeros(mantissa),
            sign,
            exponent.abs()
        )
    } else {
        let decimals = (PRECISION - 1 - exponent) as usize;
        strip_fraction_zeros(&format!("{value:.decimals$}")).to_string()
    }
}

fn strip_fraction_zeros(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

/// The float4 a computed area becomes: osm2pgsql writes it with six
/// significant digits and PostgreSQL parses that text.
pub fn way_area_value(area: f64) -> ColumnValue {
    pg_float4(&format_general6(area)).map_or(ColumnValue::Null, ColumnValue::Real)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases checked against osm2pgsql 1.8.0 writing into PostgreSQL 15.
    #[test]
    fn int4_like_osm2pgsql() {
        let cases: &[(&str, Option<i32>)] = &[
            ("5;6", Some(5)),
            (" 12 m", Some(12)),
            ("12", Some(12)),
            ("-3", Some(-3)),
            ("3-5", Some(4)),
            ("3-4", Some(3)),
            ("-3-5", Some(1)),
            ("-3--4", Some(-3)),
            ("3--5", Some(-1)),
            ("3- 5", Some(4)),
            ("3 - 5", Some(3)),
            ("  -7-  -9", Some(-8)),
            ("5-", Some(5)),
            ("3-x", Some(3)),
            ("2147483647", Some(i32::MAX)),
            ("2147483648", None),
            ("-2147483648", Some(i32::MIN)),
            ("-2147483649", None),
            ("99999999999999999999", None),
            ("1234567890123456789", None),
            ("000000000000000000012", Some(0)),
            ("123456789012345678-5", None),
            ("4000000000-4000000000", None),
            ("3000000000-1000000000", Some(2_000_000_000)),
            ("abc", None),
            ("", None),
            ("-", None),
            ("- 5", None),
            ("--5", None),
            ("1e3", Some(1)),
            ("0x10", Some(0)),
            ("+5", Some(5)),
            (" 7", Some(7)),
            ("\t8", Some(8)),
            ("7 ", Some(7)),
            ("1,5", Some(1)),
            ("5ft", Some(5)),
            ("12abc", Some(12)),
        ];
        for (input, expected) in cases {
            assert_eq!(int4_value(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn real_like_osm2pgsql() {
        let cases: &[(&str, Option<f32>)] = &[
            ("1,5", Some(1.5)),
            ("5ft", Some(1.524)),
            ("3-5", Some(4.0)),
            ("3-5ft", Some(1.2192)),
            ("12 m", Some(12.0)),
            ("abc", None),
            ("1e3", Some(1000.0)),
            ("0x10", Some(16.0)),
            ("0x1p3", Some(8.0)),
            ("0x1.8p1", Some(3.0)),
            ("0x", None),
            (" 2.5", Some(2.5)),
            ("5 ft", Some(1.524)),
            ("-", None),
            ("5;6", Some(5.0)),
            ("-3--5", Some(-4.0)),
            ("ft", None),
            ("2ft", Some(0.6096)),
            ("1,5-2,5", Some(2.0)),
            ("0.1", Some(0.1)),
            ("1/2", Some(1.0)),
            ("3.3333333333333", Some(3.333_333_3)),
            ("7 FT", Some(7.0)),
            ("12'", Some(12.0)),
            ("1e", Some(1.0)),
            ("1e+", Some(1.0)),
            ("1.", Some(1.0)),
            (".5", Some(0.5)),
            ("-.5", Some(-0.5)),
            ("1e5ft", Some(30480.0)),
            ("1.5.6", Some(1.5)),
            ("3-", Some(3.0)),
            ("3-ft", Some(0.9144)),
            ("3 -5", Some(3.0)),
            ("1.5e3-2", Some(751.0)),
            ("  4ft ", Some(4.0)),
            ("4 ft.", Some(4.0)),
            ("1,5ft", Some(0.4572)),
            ("1e38-1e38", Some(1e38)),
            ("3.4e38", Some(3.4e38)),
            // osm2pgsql aborts the import on these; we write NULL.
            ("1.5e40", None),
            ("1e-50", None),
        ];
        for (input, expected) in cases {
            assert_eq!(real_value(input), *expected, "{input:?}");
        }
        assert_eq!(real_value("inf"), Some(f32::INFINITY));
        assert_eq!(real_value("Infinity"), Some(f32::INFINITY));
        assert_eq!(real_value("-inf"), Some(f32::NEG_INFINITY));
        assert_eq!(real_value("1e309"), Some(f32::INFINITY));
        assert_eq!(real_value("inf-inf"), Some(f32::INFINITY));
        assert!(real_value("nan").unwrap().is_nan());
        assert!(real_value("NaN-3").unwrap().is_nan());
        assert!(real_value("-0").unwrap().is_sign_negative());
    }

    #[test]
    fn column_values() {
        assert_eq!(
            ColumnValue::from_tag(" 12 m", ValueType::Text),
            ColumnValue::Text(" 12 m".into())
        );
        assert_eq!(
            ColumnValue::from_tag(" 12 m", ValueType::Int4),
            ColumnValue::Int4(12)
        );
        assert_eq!(
            ColumnValue::from_tag("x", ValueType::Real),
            ColumnValue::Null
        );
    }

    #[test]
    fn general_format() {
        assert_eq!(format_general6(311.289_123), "311.289");
        assert_eq!(format_general6(1_820_600.4), "1.8206e+06");
        assert_eq!(format_general6(2_080_117.114_934_634), "2.08012e+06");
        assert_eq!(format_general6(999_999.7), "1e+06");
        assert_eq!(format_general6(999_999.4), "999999");
        assert_eq!(format_general6(0.000_123_456_7), "0.000123457");
        assert_eq!(format_general6(0.000_012_345_67), "1.23457e-05");
        assert_eq!(format_general6(1.5e-300), "1.5e-300");
        assert_eq!(format_general6(100.0), "100");
        assert_eq!(format_general6(0.0), "0");
        assert_eq!(
            way_area_value(1_956.616_959_064_717_5),
            ColumnValue::Real(1956.62)
        );
        assert_eq!(
            way_area_value(270_928_980.628_704_2),
            ColumnValue::Real(270_929_000.0)
        );
    }
}
