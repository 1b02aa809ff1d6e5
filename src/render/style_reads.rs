//! What a style's Mapnik XML reads from the database, for style-aware
//! expiry ([`crate::expire::style_aware`]).
//!
//! Per `<Layer>`: the tables and columns its PostGIS `table` parameter
//! reads (a table name or a `(SELECT …) AS x` subquery) and the zooms at
//! which it can draw: the layer's `minimum-`/`maximum-scale-denominator`
//! and the `MinScaleDenominator`/`MaxScaleDenominator` of the rules of
//! the styles it names. Mapnik's tests (`layer::visible`, `rule::active`)
//! are `min - 1e-6 <= scale < max + 1e-6`; the scale denominator of zoom
//! z is 559082264.028 / 2^z for 256 px tiles (Mapnik's
//! `scale_denominator` with 0.28 mm pixels), scaled by 256 / tile size and
//! by the scale factor (Mapnik multiplies the denominator by it).
//!
//! [`where_requirements`] reads the `WHERE` of the one `SELECT` that
//! reads a table for the columns a row needs not NULL to be drawn.
//!
//! The SQL is not parsed, only tokenised, and read conservatively: every
//! identifier counts as a column (aliases and function names included,
//! which can only expire more), tables are the names after `FROM` and
//! `JOIN`. A layer falls back to reading every table and column over its
//! whole zoom range when the SQL has a `*` select list, a function in a
//! `FROM` clause, a call of a function that is not a known PostgreSQL or
//! PostGIS builtin (it might read other tables), or a Mapnik `!token!`
//! where a table belongs. Non-PostGIS layers (shapefiles, GDAL) read no
//! table.

use super::style_conditions::{self, SqlView};
#[cfg(test)]
use crate::expire::style_aware::RowFacts;
use crate::expire::style_aware::{
    key_column, Condition, LayerReads, Reads, RowView, StyleReads, ZoomMask,
};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::collections::{BTreeSet, HashMap};
use tracing::{debug, info};

/// Scale denominator of zoom 0 for 256 px tiles (Mapnik, osm2pgsql and
/// openstreetmap-carto use this value).
pub const SCALE_Z0: f64 = 559_082_264.028;

/// Highest zoom computed.
const MAX_ZOOM: u8 = 31;

/// Why a style's reads could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum StyleReadsError {
    /// The file could not be read.
    #[error("cannot read style {path}: {source}")]
    Read {
        /// The style's XML file.
        path: std::path::PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Malformed XML.
    #[error("style XML error at byte {position}: {message}")]
    Xml {
        /// Byte offset of the error.
        position: u64,
        /// The XML parser's message.
        message: String,
    },
}

/// Reads `path` and analyses it as [`analyse_style`] does, logging one
/// info line with the counts and one debug line per layer.
pub fn read_style(
    style: &str,
    path: &std::path::Path,
    tile_size: u32,
    scale: f64,
) -> Result<StyleReads, StyleReadsError> {
    let xml = std::fs::read_to_string(path).map_err(|source| StyleReadsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let xml = expand_entities(&xml, base, 0)?;
    let reads = analyse_style(style, &xml, tile_size, scale)?;
    for layer in &reads.layers {
        debug!(
            style,
            layer = %layer.name,
            understood = layer.understood(),
            values_followed = !layer.views.is_empty(),
            tables = %describe(&layer.tables),
            columns = %describe(&layer.columns),
            zooms = %layer.zooms,
            "style-aware expiry: layer"
        );
    }
    let (understood, fell_back) = reads.counts();
    let valued = reads.layers.iter().filter(|l| !l.views.is_empty()).count();
    info!(
        style,
        understood,
        fell_back,
        values_followed = valued,
        "style-aware expiry: {understood} of {} layers understood, {fell_back} read everything at their zooms; rows' values followed in {valued}",
        reads.layers.len()
    );
    Ok(reads)
}

/// Replaces the general entities a DOCTYPE declares (`<!ENTITY name
/// "text">`, `<!ENTITY name SYSTEM "file.xml">`, files relative to
/// `base`) by their text, as libxml2 does for Mapnik (`XML_PARSE_NOENT`);
/// styles split into files (older openstreetmap-carto) need it.
fn expand_entities(
    xml: &str,
    base: &std::path::Path,
    depth: usize,
) -> Result<String, StyleReadsError> {
    let Some(start) = xml.find("<!DOCTYPE") else {
        return Ok(xml.to_string());
    };
    let Some(open) = xml[start..].find('[').map(|i| start + i) else {
        return Ok(xml.to_string());
    };
    let Some(close) = xml[open..].find("]>").map(|i| open + i) else {
        return Ok(xml.to_string());
    };
    let mut entities: Vec<(String, String)> = Vec::new();
    let mut rest = &xml[open + 1..close];
    while let Some(i) = rest.find("<!ENTITY") {
        rest = &rest[i + "<!ENTITY".len()..];
        let end = rest.find('>').unwrap_or(rest.len());
        let decl = rest[..end].trim();
        rest = &rest[end..];
        if decl.starts_with('%') {
            continue;
        }
        let (name, def) = decl.split_once(char::is_whitespace).unwrap_or((decl, ""));
        let def = def.trim();
        let quoted = |t: &str| {
            let q = t.chars().next()?;
            (q == '"' || q == '\'').then(|| t[1..].split(q).next().unwrap_or("").to_string())
        };
        let value = if let Some(system) = def.strip_prefix("SYSTEM") {
            let file = quoted(system.trim()).unwrap_or_default();
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|source| StyleReadsError::Read { path, source })?;
            // An included file may start with its own XML declaration.
            match text.strip_prefix("<?xml") {
                Some(t) => t
                    .split_once("?>")
                    .map_or(String::new(), |(_, t)| t.to_string()),
                None => text,
            }
        } else {
            quoted(def).unwrap_or_default()
        };
        entities.push((name.to_string(), value));
    }
    let mut body = xml[close + 2..].to_string();
    for (name, value) in &entities {
        body = body.replace(&format!("&{name};"), value);
    }
    // Entities using entities: expand again, a few levels deep.
    if depth < 8
        && entities
            .iter()
            .any(|(n, _)| body.contains(&format!("&{n};")))
    {
        let again = format!("{}{}", &xml[..close + 2], body);
        return expand_entities(&again, base, depth + 1);
    }
    Ok(format!("{}{body}", &xml[..start]))
}

fn describe(reads: &Reads) -> String {
    match reads {
        Reads::Everything => "everything".into(),
        Reads::Only(names) => names.iter().cloned().collect::<Vec<_>>().join(","),
    }
}

/// Scale denominator of `zoom` for `tile_size` px tiles at `scale`.
pub fn scale_denominator(zoom: u8, tile_size: u32, scale: f64) -> f64 {
    SCALE_Z0 / f64::from(1u32 << zoom) * 256.0 / f64::from(tile_size) * scale
}

/// The zooms whose scale denominators lie in `[min, max)` (Mapnik's test,
/// with its 1e-6 tolerance).
pub fn zooms_between(min: f64, max: f64, tile_size: u32, scale: f64) -> ZoomMask {
    (0..=MAX_ZOOM)
        .filter(|&z| {
            let s = scale_denominator(z, tile_size, scale);
            s >= min - 1e-6 && s < max + 1e-6
        })
        .fold(ZoomMask::NONE, |m, z| m.union(ZoomMask::range(z, z)))
}

#[derive(Default)]
struct Layer {
    name: String,
    min_scale: f64,
    max_scale: f64,
    styles: Vec<String>,
    datasource: DatasourceDef,
}

#[derive(Default, Clone)]
struct DatasourceDef {
    base: Option<String>,
    params: HashMap<String, String>,
}

#[derive(Default)]
struct Rule {
    min_scale: f64,
    max_scale: f64,
    /// Its `Filter` text; `None` for none (an `ElseFilter` rule counts
    /// as matching every row).
    filter: Option<String>,
}

/// Where the parser is.
#[derive(PartialEq)]
enum Inside {
    Other,
    StyleName,
    Parameter(String),
    MinScale,
    MaxScale,
    Filter,
}

/// Analyses a style's XML text: what each layer reads and where it draws.
pub fn analyse_style(
    style: &str,
    xml: &str,
    tile_size: u32,
    scale: f64,
) -> Result<StyleReads, StyleReadsError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(false);
    let mut templates: HashMap<String, DatasourceDef> = HashMap::new();
    let mut styles: HashMap<String, Vec<Rule>> = HashMap::new();
    let mut layers: Vec<Layer> = Vec::new();
    // Open elements we track.
    let mut style_open: Option<(String, Vec<Rule>)> = None;
    let mut rule_open: Option<Rule> = None;
    let mut layer_depth: Vec<Layer> = Vec::new();
    let mut datasource_open: Option<(Option<String>, DatasourceDef)> = None;
    let mut inside = Inside::Other;
    let mut text = String::new();
    // An entity nobody expanded may hide layers: nothing can be assumed.
    let mut unresolved = false;
    loop {
        let event = reader.read_event().map_err(|e| StyleReadsError::Xml {
            position: reader.buffer_position(),
            message: e.to_string(),
        })?;
        match event {
            Event::Eof => break,
            Event::Start(e) => {
                text.clear();
                match e.name().as_ref() {
                    b"Style" => style_open = Some((attribute(&e, "name"), Vec::new())),
                    b"Rule" => rule_open = Some(Rule::unbounded()),
                    b"Layer" => layer_depth.push(Layer::from_start(&e)),
                    b"StyleName" => inside = Inside::StyleName,
                    b"Datasource" => {
                        let def = DatasourceDef {
                            base: non_empty(attribute(&e, "base")),
                            params: HashMap::new(),
                        };
                        datasource_open = Some((non_empty(attribute(&e, "name")), def));
                    }
                    b"Parameter" => inside = Inside::Parameter(attribute(&e, "name")),
                    b"MinScaleDenominator" => inside = Inside::MinScale,
                    b"MaxScaleDenominator" => inside = Inside::MaxScale,
                    b"Filter" => inside = Inside::Filter,
                    _ => {}
                }
            }
            Event::Empty(e) if e.name().as_ref() == b"Layer" => {
                layers.push(Layer::from_start(&e));
            }
            Event::Text(t) => text.push_str(&String::from_utf8_lossy(t.as_ref())),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(t.as_ref())),
            Event::GeneralRef(r) => {
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                match resolve_reference(&name) {
                    Some(resolved) => text.push_str(&resolved),
                    None => {
                        tracing::warn!(
                            style,
                            entity = %name,
                            "style-aware expiry: entity &{name}; not expanded, the style counts as reading everything"
                        );
                        unresolved = true;
                    }
                }
            }
            Event::End(e) => {
                let value = std::mem::take(&mut text);
                match e.name().as_ref() {
                    b"Style" => {
                        if let Some((name, rules)) = style_open.take() {
                            styles.insert(name, rules);
                        }
                    }
                    b"Rule" => {
                        if let (Some(rule), Some((_, rules))) = (rule_open.take(), &mut style_open)
                        {
                            rules.push(rule);
                        }
                    }
                    b"Layer" => {
                        if let Some(layer) = layer_depth.pop() {
                            layers.push(layer);
                        }
                    }
                    b"StyleName" => {
                        if let Some(layer) = layer_depth.last_mut() {
                            layer.styles.push(value.trim().to_string());
                        }
                        inside = Inside::Other;
                    }
                    b"Parameter" => {
                        if let (Inside::Parameter(name), Some((_, def))) =
                            (&inside, &mut datasource_open)
                        {
                            def.params.insert(name.clone(), value);
                        }
                        inside = Inside::Other;
                    }
                    b"Datasource" => {
                        if let Some((name, def)) = datasource_open.take() {
                            match (layer_depth.last_mut(), name) {
                                (Some(layer), _) => layer.datasource = def,
                                (None, Some(name)) => {
                                    templates.insert(name, def);
                                }
                                (None, None) => {}
                            }
                        }
                    }
                    b"Filter" => {
                        if let Some(rule) = rule_open.as_mut() {
                            rule.filter = Some(value.trim().to_string());
                        }
                        inside = Inside::Other;
                    }
                    b"MinScaleDenominator" | b"MaxScaleDenominator" => {
                        if let Some(rule) = rule_open.as_mut() {
                            // Unparsable bounds stay open: conservative.
                            if let Ok(v) = value.trim().parse::<f64>() {
                                if inside == Inside::MinScale {
                                    rule.min_scale = v;
                                } else {
                                    rule.max_scale = v;
                                }
                            }
                        }
                        inside = Inside::Other;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if unresolved {
        return Ok(StyleReads::everything(style));
    }
    let layers = layers
        .iter()
        .map(|layer| layer_reads(layer, &templates, &styles, tile_size, scale))
        .collect();
    Ok(StyleReads {
        style: style.to_string(),
        layers,
    })
}

impl Rule {
    fn unbounded() -> Rule {
        Rule {
            min_scale: 0.0,
            max_scale: f64::INFINITY,
            filter: None,
        }
    }
}

impl Layer {
    fn from_start(e: &BytesStart) -> Layer {
        // Mapnik 2 called them minzoom/maxzoom (scale denominators all the
        // same); load_map.cpp still reads both.
        let scale = |names: [&str; 2], default: f64| {
            names
                .iter()
                .find_map(|n| attribute_opt(e, n))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(default)
        };
        Layer {
            name: attribute(e, "name"),
            min_scale: scale(["minimum-scale-denominator", "minzoom"], 0.0),
            max_scale: scale(["maximum-scale-denominator", "maxzoom"], f64::INFINITY),
            ..Layer::default()
        }
    }
}

fn layer_reads(
    layer: &Layer,
    templates: &HashMap<String, DatasourceDef>,
    styles: &HashMap<String, Vec<Rule>>,
    tile_size: u32,
    scale: f64,
) -> LayerReads {
    let layer_zooms = zooms_between(layer.min_scale, layer.max_scale, tile_size, scale);
    // A style the XML does not define: assume it draws everywhere.
    let rule_zooms = layer
        .styles
        .iter()
        .flat_map(|name| match styles.get(name) {
            Some(rules) => rules
                .iter()
                .map(|r| zooms_between(r.min_scale, r.max_scale, tile_size, scale))
                .collect(),
            None => vec![ZoomMask::ALL],
        })
        .fold(ZoomMask::NONE, ZoomMask::union);
    let zooms = ZoomMask(layer_zooms.0 & rule_zooms.0);
    let params = resolve_params(&layer.datasource, templates);
    let kind = params.get("type").map(|t| t.trim()).unwrap_or("");
    let mut requires = Vec::new();
    let mut sql_views: Option<Vec<SqlView>> = None;
    let (tables, columns) = match kind {
        "postgis" | "pgraster" => match params.get("table") {
            Some(sql) => {
                requires = where_requirements(sql);
                let tokens = tokenize(sql);
                let bare = tokens
                    .iter()
                    .all(|t| matches!(t, Token::Word(_) | Token::Quoted(_) | Token::Symbol('.')));
                sql_views = if bare {
                    match tokens.last() {
                        Some(Token::Word(name) | Token::Quoted(name)) => {
                            Some(vec![SqlView::table(name)])
                        }
                        _ => None,
                    }
                } else {
                    style_conditions::sql_views(&tokens)
                };
                analyse_sql(sql, params.get("geometry_field").map(String::as_str))
            }
            None => (Reads::Everything, Reads::Everything),
        },
        // Files and other sources do not change with the database.
        "shape" | "gdal" | "ogr" | "geojson" | "csv" | "raster" | "topojson" => {
            (Reads::Only(BTreeSet::new()), Reads::Only(BTreeSet::new()))
        }
        _ => (Reads::Everything, Reads::Everything),
    };
    if tables == Reads::Everything {
        requires.clear();
        sql_views = None;
    }
    // Each rule's filter, over the layer's output columns; a style the
    // XML does not define may draw anything at the layer's zooms.
    let filters: Vec<(ZoomMask, Condition)> = layer
        .styles
        .iter()
        .flat_map(|name| match styles.get(name) {
            Some(rules) => rules
                .iter()
                .map(|r| {
                    let active = zooms_between(r.min_scale, r.max_scale, tile_size, scale);
                    let filter = match &r.filter {
                        Some(f) => style_conditions::filter_condition(f),
                        None => Condition::All(Vec::new()),
                    };
                    (ZoomMask(active.0 & layer_zooms.0), filter)
                })
                .collect(),
            None => vec![(layer_zooms, Condition::Unknown)],
        })
        .collect();
    let views = sql_views
        .unwrap_or_default()
        .iter()
        // A view of a table the reads do not know would be a parsing
        // mistake: leave it out (the table then counts at every zoom).
        .filter(|view| tables.includes(&view.table))
        .map(|view| {
            let mut outputs = Vec::new();
            let rules = filters
                .iter()
                .map(|(zooms, filter)| {
                    let filter = style_conditions::filter_for_view(filter, view, &mut outputs);
                    (*zooms, filter)
                })
                .collect();
            RowView {
                table: view.table.clone(),
                condition: view.condition.clone(),
                outputs: outputs.into_iter().map(|(_, value)| value).collect(),
                rules,
            }
        })
        .collect();
    LayerReads {
        name: layer.name.clone(),
        tables,
        columns,
        zooms,
        requires,
        views,
    }
}

/// A datasource's parameters with those of its `base` templates (Mapnik's
/// `Datasource base="…"`), own values first.
fn resolve_params(
    def: &DatasourceDef,
    templates: &HashMap<String, DatasourceDef>,
) -> HashMap<String, String> {
    let mut params = def.params.clone();
    let mut base = def.base.clone();
    let mut seen = 0;
    while let Some(name) = base.take() {
        let Some(template) = templates.get(&name) else {
            break;
        };
        for (k, v) in &template.params {
            params.entry(k.clone()).or_insert_with(|| v.clone());
        }
        base = template.base.clone();
        seen += 1;
        if seen > 16 {
            break;
        }
    }
    params
}

fn attribute_opt(e: &BytesStart, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn attribute(e: &BytesStart, name: &str) -> String {
    attribute_opt(e, name).unwrap_or_default()
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The text of a predefined entity or a character reference (`&lt;`,
/// `&#62;`); `None` for anything else.
fn resolve_reference(name: &str) -> Option<String> {
    match name {
        "lt" => Some("<".into()),
        "gt" => Some(">".into()),
        "amp" => Some("&".into()),
        "quot" => Some("\"".into()),
        "apos" => Some("'".into()),
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x") {
                u32::from_str_radix(hex, 16).ok()
            } else {
                name.strip_prefix('#').and_then(|d| d.parse().ok())
            };
            code.and_then(char::from_u32).map(String::from)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    /// Unquoted identifier or keyword, lower case.
    Word(String),
    /// `"quoted"` identifier, as written.
    Quoted(String),
    /// A Mapnik token such as `!bbox!`.
    Mapnik(String),
    /// A `'text'` literal, unescaped.
    Literal(String),
    /// Any other symbol (operators, parentheses, commas); numbers are
    /// dropped.
    Symbol(char),
}

pub(crate) fn tokenize(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            // String literal, '' escapes a quote.
            i += 1;
            let mut text = String::new();
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        text.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                text.push(chars[i]);
                i += 1;
            }
            tokens.push(Token::Literal(text));
            i += 1;
        } else if c == '"' {
            let start = i + 1;
            i = start;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            tokens.push(Token::Quoted(
                chars[start..i.min(chars.len())].iter().collect(),
            ));
            i += 1;
        } else if c == '!'
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_alphabetic() || *n == '_')
        {
            let start = i + 1;
            let mut j = start;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            if chars.get(j) == Some(&'!') {
                tokens.push(Token::Mapnik(chars[start..j].iter().collect()));
                i = j + 1;
            } else {
                tokens.push(Token::Symbol('!'));
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(Token::Word(word.to_ascii_lowercase()));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            // A cast: the type name that follows is not a column.
            i += 2;
            tokens.push(Token::Symbol(':'));
        } else {
            tokens.push(Token::Symbol(c));
            i += 1;
        }
    }
    tokens
}

/// SQL words that are not columns.
pub(crate) const KEYWORDS: &[&str] = &[
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "as",
    "on",
    "join",
    "left",
    "right",
    "inner",
    "outer",
    "full",
    "cross",
    "lateral",
    "union",
    "all",
    "distinct",
    "order",
    "by",
    "group",
    "having",
    "limit",
    "offset",
    "case",
    "when",
    "then",
    "else",
    "end",
    "is",
    "null",
    "in",
    "like",
    "ilike",
    "between",
    "asc",
    "desc",
    "nulls",
    "first",
    "last",
    "true",
    "false",
    "with",
    "values",
    "exists",
    "any",
    "some",
    "cast",
    "using",
    "over",
    "partition",
    "filter",
    "within",
    "except",
    "intersect",
    "similar",
    "to",
    "escape",
    "collate",
    "array",
    "interval",
    "row",
    "only",
    "natural",
    "recursive",
    "window",
    "fetch",
    "next",
    "rows",
    "ties",
    "at",
    "time",
    "zone",
    "both",
    "leading",
    "trailing",
    "for",
];

/// Functions known not to read tables: PostgreSQL and PostGIS builtins
/// (every `st_` function counts too).
const BUILTINS: &[&str] = &[
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "concat",
    "concat_ws",
    "replace",
    "substring",
    "substr",
    "left",
    "right",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "lower",
    "upper",
    "initcap",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "split_part",
    "strpos",
    "position",
    "reverse",
    "repeat",
    "lpad",
    "rpad",
    "ascii",
    "chr",
    "md5",
    "format",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "string_to_array",
    "array_to_string",
    "array_length",
    "array_upper",
    "array_lower",
    "array_position",
    "array_remove",
    "array_append",
    "array_cat",
    "array_agg",
    "string_agg",
    "cardinality",
    "unnest",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "trunc",
    "abs",
    "sign",
    "sqrt",
    "pow",
    "power",
    "exp",
    "ln",
    "log",
    "mod",
    "pi",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "atan",
    "atan2",
    "max",
    "min",
    "sum",
    "avg",
    "count",
    "bool_or",
    "bool_and",
    "every",
    "row_number",
    "rank",
    "dense_rank",
    "to_char",
    "to_number",
    "to_date",
    "to_timestamp",
    "now",
    "extract",
    "date_part",
    "date_trunc",
    "age",
    "text",
    "int",
    "integer",
    "numeric",
    "real",
    "float",
    "varchar",
    "hstore",
    "akeys",
    "avals",
    "exist",
    "defined",
    "isexists",
    "isdefined",
    "slice",
    "delete",
    "jsonb_build_object",
    "json_build_object",
    "generate_series",
    "ascii",
    "quote_ident",
    "quote_literal",
    "translate",
    "overlay",
    "convert_to",
    "encode",
    "decode",
    "starts_with",
];

fn is_builtin(name: &str) -> bool {
    name.starts_with("st_") || BUILTINS.contains(&name)
}

/// Why a layer's SQL is read as reading everything.
struct Fallback;

/// Clause words that end a `FROM` list.
const FROM_ENDS: &[&str] = &[
    "where",
    "group",
    "order",
    "limit",
    "having",
    "union",
    "except",
    "intersect",
    "offset",
    "window",
    "fetch",
    "for",
];

/// Reads one item of a `FROM` list starting at `j`: records a table name
/// and marks the name and its alias as not being columns; true when it
/// was a table. Subqueries are read by the main scan.
fn from_item(
    tokens: &[Token],
    mut j: usize,
    tables: &mut BTreeSet<String>,
    not_columns: &mut BTreeSet<usize>,
) -> Result<bool, Fallback> {
    while matches!(tokens.get(j), Some(Token::Word(w)) if w == "lateral" || w == "only") {
        j += 1;
    }
    match tokens.get(j) {
        Some(Token::Symbol('(')) => Ok(false),
        Some(Token::Word(_) | Token::Quoted(_)) => {
            // schema.table: the last name.
            let mut k = j;
            while matches!(tokens.get(k + 1), Some(Token::Symbol('.'))) {
                not_columns.insert(k);
                k += 2;
            }
            if matches!(tokens.get(k + 1), Some(Token::Symbol('('))) {
                // A function in FROM: only builtins read no table.
                return match tokens.get(k) {
                    Some(Token::Word(f)) if is_builtin(f) => Ok(false),
                    _ => Err(Fallback),
                };
            }
            match tokens.get(k) {
                Some(Token::Word(name) | Token::Quoted(name)) => {
                    tables.insert(name.to_ascii_lowercase());
                    not_columns.insert(k);
                }
                _ => return Err(Fallback),
            }
            // An alias, with or without AS.
            let mut a = k + 1;
            if matches!(tokens.get(a), Some(Token::Word(w)) if w == "as") {
                a += 1;
            }
            let alias = match tokens.get(a) {
                Some(Token::Word(w)) => {
                    !KEYWORDS.contains(&w.as_str()) && !FROM_ENDS.contains(&w.as_str())
                }
                Some(Token::Quoted(_)) => true,
                _ => false,
            };
            if alias {
                not_columns.insert(a);
            }
            Ok(true)
        }
        // `FROM !bbox!`-style tricks and anything else.
        _ => Err(Fallback),
    }
}

/// One `SELECT` of a layer's SQL, for [`where_requirements`].
#[derive(Default)]
struct SelectScope {
    /// Items of its FROM list (tables, subqueries, functions, joins).
    from_items: usize,
    /// The tables among them.
    tables: Vec<String>,
    /// Token range of its WHERE condition.
    condition: Option<(usize, usize)>,
}

/// What the `WHERE` of the one `SELECT` reading a table needs of a row
/// ([`LayerReads::requires`]): sets of columns one of which must not be
/// NULL. Only understood for SQL where a single `SELECT` reads tables, from
/// a single FROM item; comparisons, `IS NOT NULL`, `IN` and `LIKE` of a
/// column need it not NULL (SQL's three-valued logic: a comparison with
/// NULL is not true). Anything else needs nothing.
pub fn where_requirements(sql: &str) -> Vec<BTreeSet<String>> {
    let tokens = tokenize(sql);
    let mut scopes: Vec<SelectScope> = Vec::new();
    // Per depth, the scope open there.
    let mut open: Vec<Option<usize>> = vec![None];
    let mut from_open: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let word = |t: Option<&Token>, w: &str| matches!(t, Some(Token::Word(x)) if x == w);
    let close_condition = |scopes: &mut Vec<SelectScope>, scope: Option<usize>, end: usize| {
        if let Some(scope) = scope.and_then(|i| scopes.get_mut(i)) {
            if let Some((start, usize::MAX)) = scope.condition {
                scope.condition = Some((start, end));
            }
        }
    };
    for (i, token) in tokens.iter().enumerate() {
        let scope = open.get(depth).copied().flatten();
        match token {
            Token::Symbol('(') => {
                depth += 1;
                if open.len() <= depth {
                    open.push(None);
                }
                open[depth] = None;
            }
            Token::Symbol(')') => {
                close_condition(&mut scopes, scope, i);
                open[depth] = None;
                depth = depth.saturating_sub(1);
                from_open.retain(|&d| d <= depth);
            }
            Token::Word(w) if w == "select" => {
                close_condition(&mut scopes, scope, i);
                scopes.push(SelectScope::default());
                open[depth] = Some(scopes.len() - 1);
            }
            Token::Word(w) if w == "from" || w == "join" => {
                from_open.retain(|&d| d < depth);
                from_open.push(depth);
                if let Some(scope) = scope.and_then(|i| scopes.get_mut(i)) {
                    count_from_item(&tokens, i + 1, scope);
                }
            }
            Token::Symbol(',') if from_open.last() == Some(&depth) => {
                if let Some(scope) = scope.and_then(|i| scopes.get_mut(i)) {
                    count_from_item(&tokens, i + 1, scope);
                }
            }
            Token::Word(w) if w == "where" => {
                from_open.retain(|&d| d < depth);
                if let Some(scope) = scope.and_then(|i| scopes.get_mut(i)) {
                    scope.condition = Some((i + 1, usize::MAX));
                }
            }
            Token::Word(w) if FROM_ENDS.contains(&w.as_str()) => {
                from_open.retain(|&d| d < depth);
                close_condition(&mut scopes, scope, i);
            }
            _ => {}
        }
    }
    for scope in open.iter().copied() {
        close_condition(&mut scopes, scope, tokens.len());
    }
    let mut reading = scopes.iter().filter(|s| !s.tables.is_empty());
    let (Some(scope), None) = (reading.next(), reading.next()) else {
        return Vec::new();
    };
    let Some((start, end)) = scope.condition else {
        return Vec::new();
    };
    if scope.from_items != 1 || end == usize::MAX || end <= start {
        return Vec::new();
    }
    let condition = &tokens[start..end];
    // CASE … WHEN a AND b and BETWEEN x AND y hide ANDs that are no
    // conjunctions.
    if condition
        .iter()
        .any(|t| word(Some(t), "case") || word(Some(t), "between"))
    {
        return Vec::new();
    }
    requirements(condition)
}

fn count_from_item(tokens: &[Token], mut j: usize, scope: &mut SelectScope) {
    scope.from_items += 1;
    while matches!(tokens.get(j), Some(Token::Word(w)) if w == "lateral" || w == "only") {
        j += 1;
    }
    let mut k = j;
    while matches!(tokens.get(k + 1), Some(Token::Symbol('.'))) {
        k += 2;
    }
    if matches!(tokens.get(k + 1), Some(Token::Symbol('('))) {
        return;
    }
    if let Some(Token::Word(name) | Token::Quoted(name)) = tokens.get(k) {
        scope.tables.push(name.to_ascii_lowercase());
    }
}

/// Splits `tokens` at the top-level (parenthesis depth 0) word `at`.
fn split_top_level<'t>(tokens: &'t [Token], at: &str) -> Vec<&'t [Token]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => depth -= 1,
            Token::Word(w) if depth == 0 && w == at => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

/// Removes parentheses around the whole of `tokens`.
pub(crate) fn strip_parens(mut tokens: &[Token]) -> &[Token] {
    while let [Token::Symbol('('), inner @ .., Token::Symbol(')')] = tokens {
        // Only when the first parenthesis closes at the end.
        let mut depth = 0i32;
        let wraps = inner.iter().all(|t| {
            match t {
                Token::Symbol('(') => depth += 1,
                Token::Symbol(')') => depth -= 1,
                _ => {}
            }
            depth >= 0
        });
        if !wraps {
            break;
        }
        tokens = inner;
    }
    tokens
}

/// Sets of columns one of which a condition needs not NULL (a CNF of
/// "not NULL" atoms; conditions it does not understand need nothing).
fn requirements(tokens: &[Token]) -> Vec<BTreeSet<String>> {
    let tokens = strip_parens(tokens);
    let alternatives = split_top_level(tokens, "or");
    if alternatives.len() > 1 {
        // One alternative holds, so all its needs do: one column of the
        // union of each alternative's smallest set is not NULL.
        let mut union = BTreeSet::new();
        for alternative in alternatives {
            let needs = requirements(alternative);
            let Some(smallest) = needs.iter().min_by_key(|s| s.len()) else {
                return Vec::new();
            };
            union.extend(smallest.iter().cloned());
        }
        return vec![union];
    }
    let conjuncts = split_top_level(tokens, "and");
    if conjuncts.len() > 1 {
        return conjuncts.into_iter().flat_map(requirements).collect();
    }
    atom_column(tokens)
        .map(|c| vec![BTreeSet::from([c])])
        .unwrap_or_default()
}

/// The column an atom needs not NULL: `col IS NOT NULL`, `col <op> …`
/// with a comparison operator, `col [NOT] IN|LIKE|ILIKE …` (`t.col` too).
fn atom_column(tokens: &[Token]) -> Option<String> {
    let mut tokens = tokens;
    if let [Token::Word(_) | Token::Quoted(_), Token::Symbol('.'), rest @ ..] = tokens {
        tokens = rest;
    }
    let (column, rest) = match tokens {
        [Token::Word(w), rest @ ..] if !KEYWORDS.contains(&w.as_str()) => (w.clone(), rest),
        [Token::Quoted(q), rest @ ..] => (q.to_ascii_lowercase(), rest),
        _ => return None,
    };
    let is = |t: &Token, w: &str| matches!(t, Token::Word(x) if x == w);
    let needs = match rest {
        [a, b, c] if is(a, "is") && is(b, "not") && is(c, "null") => true,
        [Token::Symbol('=' | '<' | '>' | '!' | '~'), ..] => {
            // `col || 'x' = …` or `col::text …` start otherwise; `IS`
            // forms other than IS NOT NULL are not atoms.
            true
        }
        [a, ..] if is(a, "in") || is(a, "like") || is(a, "ilike") => true,
        [n, a, ..] if is(n, "not") && (is(a, "in") || is(a, "like") || is(a, "ilike")) => true,
        _ => false,
    };
    needs.then_some(column)
}

/// The tables and columns of a PostGIS layer's `table` parameter.
/// `geometry_field` is read too.
pub fn analyse_sql(sql: &str, geometry_field: Option<&str>) -> (Reads, Reads) {
    match analyse_tokens(&tokenize(sql), geometry_field) {
        Ok(reads) => reads,
        Err(Fallback) => (Reads::Everything, Reads::Everything),
    }
}

fn analyse_tokens(
    tokens: &[Token],
    geometry_field: Option<&str>,
) -> Result<(Reads, Reads), Fallback> {
    let mut tables = BTreeSet::new();
    let mut columns = BTreeSet::new();
    if let Some(g) = geometry_field {
        columns.insert(g.trim().to_ascii_lowercase());
    }
    // A bare table name (`planet_osm_line`, `public.planet_osm_line`).
    let bare = tokens
        .iter()
        .all(|t| matches!(t, Token::Word(_) | Token::Quoted(_) | Token::Symbol('.')));
    if bare {
        return match tokens.last() {
            Some(Token::Word(name) | Token::Quoted(name)) => {
                tables.insert(name.to_ascii_lowercase());
                // Mapnik selects every column of a bare table.
                Ok((Reads::Only(tables), Reads::Everything))
            }
            _ => Err(Fallback),
        };
    }
    // Token positions that name tables or aliases, not columns.
    let mut not_columns = BTreeSet::new();
    // Parenthesis depths at which a FROM list is open.
    let mut from_open: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    // Depths of `*` select lists and of FROM items naming tables: a star
    // over subqueries only reads their columns, which the scan sees; a
    // star at a depth that names a table reads every column.
    let mut star_depths = BTreeSet::new();
    let mut table_depths = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1);
        let prev = i.checked_sub(1).map(|p| &tokens[p]);
        match token {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => {
                depth = depth.saturating_sub(1);
                from_open.retain(|&d| d <= depth);
            }
            Token::Symbol(',') if from_open.last() == Some(&depth) => {
                if from_item(tokens, i + 1, &mut tables, &mut not_columns)? {
                    table_depths.insert(depth);
                }
            }
            Token::Word(w) if w == "from" || w == "join" => {
                from_open.retain(|&d| d < depth);
                from_open.push(depth);
                if from_item(tokens, i + 1, &mut tables, &mut not_columns)? {
                    table_depths.insert(depth);
                }
            }
            Token::Word(w) if FROM_ENDS.contains(&w.as_str()) => {
                from_open.retain(|&d| d < depth);
            }
            Token::Symbol('*') => {
                // `SELECT *`, `t.*`, `, *`: every column. `count(*)` and
                // multiplication read nothing.
                let star_list = matches!(prev, Some(Token::Word(w)) if w == "select" || w == "distinct")
                    || matches!(prev, Some(Token::Symbol(',' | '.')));
                if star_list {
                    star_depths.insert(depth);
                }
            }
            Token::Word(w) if matches!(next, Some(Token::Symbol('('))) => {
                let alias_list = matches!(prev, Some(Token::Word(p)) if p == "as");
                let keyword = KEYWORDS.contains(&w.as_str());
                let cast_type = matches!(prev, Some(Token::Symbol(':')));
                if !(alias_list || keyword || cast_type || is_builtin(w)) {
                    return Err(Fallback);
                }
            }
            Token::Word(w) => {
                // `x AS name` names an output column, `(…) name` a
                // subquery; `::type` is a cast.
                let named = matches!(prev, Some(Token::Word(p)) if p == "as")
                    || matches!(prev, Some(Token::Symbol(':' | ')')));
                if !KEYWORDS.contains(&w.as_str()) && !named && !not_columns.contains(&i) {
                    // `tags -> 'key'` reads one key of the hstore: named
                    // so, the hstore's other keys changing is no change
                    // to the layer (when the rows hash the key).
                    match (next, tokens.get(i + 2), tokens.get(i + 3)) {
                        (
                            Some(Token::Symbol('-')),
                            Some(Token::Symbol('>')),
                            Some(Token::Literal(key)),
                        ) => columns.insert(key_column(w, key)),
                        _ => columns.insert(w.clone()),
                    };
                }
            }
            Token::Quoted(q) => {
                let named = matches!(prev, Some(Token::Word(p)) if p == "as");
                if !named && !not_columns.contains(&i) {
                    columns.insert(q.to_ascii_lowercase());
                }
            }
            Token::Mapnik(_) | Token::Symbol(_) | Token::Literal(_) => {}
        }
    }
    if tables.is_empty() || star_depths.intersection(&table_depths).next().is_some() {
        return Err(Fallback);
    }
    Ok((Reads::Only(tables), Reads::Only(columns)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> Reads {
        Reads::Only(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn scale_denominators_become_zooms() {
        // z13 = 68247, z14 = 34124: "from z14 on" is max 50000.
        assert_eq!(
            zooms_between(0.0, 50_000.0, 256, 1.0),
            ZoomMask::range(14, 31)
        );
        assert_eq!(
            zooms_between(100_000.0, 750_000.0, 256, 1.0),
            ZoomMask::range(10, 12)
        );
        // min <= scale < max: a bound on a zoom's own denominator
        // includes it as minimum, excludes it as maximum.
        let z12 = scale_denominator(12, 256, 1.0);
        assert!(zooms_between(z12, f64::INFINITY, 256, 1.0).contains(12));
        assert!(!zooms_between(0.0, z12 - 1.0, 256, 1.0).contains(12));
        // 512 px tiles at scale 1 are one zoom further in; at scale 2 the same.
        assert_eq!(
            zooms_between(0.0, 50_000.0, 512, 1.0),
            ZoomMask::range(13, 31)
        );
        assert_eq!(
            zooms_between(0.0, 50_000.0, 512, 2.0),
            ZoomMask::range(14, 31)
        );
    }

    #[test]
    fn sql_tables_and_columns() {
        let (tables, columns) = analyse_sql("planet_osm_line", Some("way"));
        assert_eq!(tables, only(&["planet_osm_line"]));
        assert_eq!(columns, Reads::Everything);
        let (tables, columns) = analyse_sql(
            "(SELECT way, \"natural\", name FROM public.planet_osm_polygon p WHERE way && !bbox! AND building IS NOT NULL AND tags->'x' = 'y' AND way_area > 0.01::real) AS q",
            Some("way"),
        );
        assert_eq!(tables, only(&["planet_osm_polygon"]));
        let Reads::Only(columns) = columns else {
            panic!()
        };
        for c in ["way", "natural", "name", "building", "tags->x", "way_area"] {
            assert!(columns.contains(c), "{c} in {columns:?}");
        }
        // Read through `->` only: the key, not the whole hstore.
        assert!(!columns.contains("tags"), "{columns:?}");
        let (_, keyed) = analyse_sql(
            "(SELECT way, tags->'a' AS a FROM planet_osm_point WHERE tags ? 'b') AS x",
            None,
        );
        assert_eq!(keyed, only(&["tags", "tags->a", "way"]));
        assert!(!columns.contains("real") && !columns.contains("bbox"));
        // Subqueries, joins and FROM lists.
        let (tables, _) = analyse_sql(
            "(SELECT a.way FROM (SELECT way, name FROM planet_osm_line) a JOIN planet_osm_point b ON ST_DWithin(a.way, b.way, 10), planet_osm_roads r) AS x",
            None,
        );
        assert_eq!(
            tables,
            only(&["planet_osm_line", "planet_osm_point", "planet_osm_roads"])
        );
        // count(*) and multiplication are not select-all.
        let (_, columns) = analyse_sql(
            "(SELECT way, count(*) AS n, way_area * 2 AS a FROM planet_osm_polygon GROUP BY way, way_area) AS x",
            None,
        );
        assert_ne!(columns, Reads::Everything);
        // A star over a subquery reads what the subquery reads.
        let (tables, columns) = analyse_sql(
            "(SELECT * FROM (SELECT way, name AS label FROM planet_osm_point) _) AS x",
            None,
        );
        assert_eq!(
            (tables, columns),
            (only(&["planet_osm_point"]), only(&["name", "way"]))
        );
    }

    #[test]
    fn sql_fallbacks() {
        let everything = (Reads::Everything, Reads::Everything);
        for sql in [
            "(SELECT * FROM planet_osm_line) AS x",
            "(SELECT * FROM (SELECT way FROM planet_osm_line) a, planet_osm_point) AS x",
            "(SELECT l.* FROM planet_osm_line l) AS x",
            "(SELECT way FROM my_roads(!bbox!)) AS x",
            "(SELECT way, my_label(name) AS l FROM planet_osm_point) AS x",
            "(SELECT way FROM !tables!) AS x",
            "(SELECT ST_MakePoint(0, 0) AS way) AS x",
        ] {
            assert_eq!(analyse_sql(sql, None), everything, "{sql}");
        }
        // Builtin set-returning functions in FROM are fine.
        let (tables, _) = analyse_sql(
            "(SELECT way, v FROM planet_osm_line, unnest(string_to_array(ref, ';')) AS u(v)) AS x",
            None,
        );
        assert_eq!(tables, only(&["planet_osm_line"]));
    }

    fn needs(sets: &[&[&str]]) -> Vec<BTreeSet<String>> {
        sets.iter()
            .map(|s| s.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn where_clauses_need_columns_not_null() {
        let sql = "(SELECT way, name FROM (SELECT way, name FROM planet_osm_polygon p
            WHERE way && !bbox! AND p.building IS NOT NULL AND (landuse IN ('a', 'b') OR \"natural\" = 'wood')
              AND way_area > 0.5 * !pixel_width!::real AND tags->'x' = 'y' AND layer::text ~ '^1$') AS q
            WHERE name IS NOT NULL ORDER BY name) AS x";
        assert_eq!(
            where_requirements(sql),
            needs(&[&["building"], &["landuse", "natural"], &["way_area"]])
        );
        // AND binds tighter than OR: each alternative's smallest need.
        assert_eq!(
            where_requirements(
                "(SELECT way FROM t WHERE a IS NOT NULL AND b = 1 OR c LIKE 'x%') AS x"
            ),
            needs(&[&["a", "c"]])
        );
        for sql in [
            // An alternative with no need, or needs that are no atoms.
            "(SELECT way FROM t WHERE a IS NOT NULL OR b IS NULL) AS x",
            "(SELECT way FROM t WHERE COALESCE(a, b) = 'x' OR NOT a = 1) AS x",
            // CASE and BETWEEN hide ANDs.
            "(SELECT way FROM t WHERE CASE WHEN a AND b = 1 THEN c END = 'x') AS x",
            "(SELECT way FROM t WHERE z BETWEEN 1 AND 5) AS x",
            // Two SELECTs read tables, or one reads two.
            "(SELECT way FROM t WHERE a = 1 UNION ALL SELECT way FROM u WHERE b = 1) AS x",
            "(SELECT t.way FROM t JOIN u ON t.id = u.id WHERE t.a = 1) AS x",
            "planet_osm_line",
        ] {
            assert!(where_requirements(sql).is_empty(), "{sql}");
        }
    }

    const SMALL: &str = r#"<?xml version="1.0"?>
<Map srs="epsg:3857">
  <Datasource name="db"><Parameter name="type">postgis</Parameter></Datasource>
  <Style name="high"><Rule><MaxScaleDenominator>50000</MaxScaleDenominator><LineSymbolizer/></Rule></Style>
  <Style name="low"><Rule><MinScaleDenominator>100000</MinScaleDenominator><LineSymbolizer/></Rule></Style>
  <Style name="two">
    <Rule><MaxScaleDenominator>400000</MaxScaleDenominator><MinScaleDenominator>200000</MinScaleDenominator><PointSymbolizer/></Rule>
    <Rule><MaxScaleDenominator>25000</MaxScaleDenominator><PointSymbolizer/></Rule>
  </Style>
  <Layer name="buildings" maximum-scale-denominator="750000">
    <StyleName>high</StyleName>
    <Datasource base="db"><Parameter name="table">(SELECT way FROM planet_osm_polygon WHERE building &lt;&gt; 'no') AS b</Parameter></Datasource>
  </Layer>
  <Layer name="roads" maximum-scale-denominator="750000" minimum-scale-denominator="100000">
    <StyleName>low</StyleName><StyleName>missing</StyleName>
    <Datasource base="db"><Parameter name="table"><![CDATA[planet_osm_roads]]></Parameter></Datasource>
  </Layer>
  <Layer name="points"><StyleName>two</StyleName>
    <Datasource base="db"><Parameter name="table">(SELECT * FROM planet_osm_point) AS p</Parameter></Datasource>
  </Layer>
  <Layer name="coast"><StyleName>high</StyleName>
    <Datasource><Parameter name="type">shape</Parameter><Parameter name="file">x.shp</Parameter></Datasource>
  </Layer>
</Map>"#;

    #[test]
    fn layers_and_rules_bound_each_other() {
        let reads = analyse_style("s", SMALL, 256, 1.0).unwrap();
        let layer = |n: &str| reads.layers.iter().find(|l| l.name == n).unwrap();
        // Layer to z10, rule from z14: z14 on.
        assert_eq!(layer("buildings").zooms, ZoomMask::range(14, 31));
        assert_eq!(layer("buildings").tables, only(&["planet_osm_polygon"]));
        assert_eq!(layer("buildings").columns, only(&["building", "way"]));
        // An undefined style counts as drawing everywhere in the layer's range.
        assert_eq!(layer("roads").zooms, ZoomMask::range(10, 12));
        assert_eq!(layer("roads").tables, only(&["planet_osm_roads"]));
        // Two rules: z11 (272989) and z12 (136495) in [200000, 400000)? z11 only; and z15 on.
        assert_eq!(
            layer("points").zooms,
            ZoomMask::range(11, 11).union(ZoomMask::range(15, 31))
        );
        assert!(!layer("points").understood());
        assert_eq!(layer("coast").tables, only(&[]));
        assert_eq!(reads.counts(), (3, 1));
        assert_eq!(
            reads.zooms_for("planet_osm_polygon", RowFacts::default()),
            ZoomMask::range(14, 31).union(ZoomMask::range(11, 11))
        );
    }

    #[test]
    fn entities_are_expanded_or_everything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("layers.xml"),
            r#"<?xml version="1.0"?>
<Layer name="roads" maximum-scale-denominator="&lowzoom;"><StyleName>s</StyleName>
  <Datasource><Parameter name="type">postgis</Parameter><Parameter name="table">planet_osm_roads</Parameter></Datasource>
</Layer>"#,
        )
        .unwrap();
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE Map [
<!ENTITY % params SYSTEM "none.xml">
<!ENTITY lowzoom "750000">
<!ENTITY layers SYSTEM "layers.xml">
]>
<Map><Style name="s"><Rule><LineSymbolizer/></Rule></Style>&layers;</Map>"#;
        let path = dir.path().join("style.xml");
        std::fs::write(&path, xml).unwrap();
        let reads = read_style("s", &path, 256, 1.0).unwrap();
        assert_eq!(reads.layers.len(), 1, "{reads:?}");
        assert_eq!(reads.layers[0].zooms, ZoomMask::range(10, 31));
        assert_eq!(reads.layers[0].tables, only(&["planet_osm_roads"]));
        // Not expanded (no file reading): the whole style reads everything.
        let reads = analyse_style("s", xml, 256, 1.0).unwrap();
        assert_eq!(reads, StyleReads::everything("s"));
    }

    #[test]
    fn the_projects_style() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/styles/tilepipe/tilepipe.xml");
        let xml = std::fs::read_to_string(path).unwrap();
        let reads = analyse_style("tilepipe", &xml, 256, 1.0).unwrap();
        let (understood, fell_back) = reads.counts();
        assert_eq!(
            (understood, fell_back),
            (reads.layers.len(), 0),
            "{reads:#?}"
        );
        let layer = |n: &str| reads.layers.iter().find(|l| l.name == n).unwrap();
        assert_eq!(layer("buildings").zooms, ZoomMask::range(14, 31));
        assert_eq!(layer("roads-low").zooms, ZoomMask::range(10, 12));
        assert_eq!(layer("roads-low").tables, only(&["planet_osm_roads"]));
        assert_eq!(layer("roads").tables, only(&["planet_osm_line"]));
        // The low-zoom layers draw z0-z9 only (cities and roads from z4
        // and z5), so they add no zoom from z10 on.
        assert_eq!(reads.layers.len(), 15);
        for name in [
            "landcover-lowzoom",
            "water-areas-lowzoom",
            "boundaries-lowzoom",
        ] {
            assert_eq!(layer(name).zooms, ZoomMask::range(0, 9), "{name}");
        }
        assert_eq!(layer("roads-lowzoom").zooms, ZoomMask::range(5, 9));
        assert_eq!(layer("roads-lowzoom").tables, only(&["planet_osm_roads"]));
        assert_eq!(layer("place-names-lowzoom").zooms, ZoomMask::range(4, 9));
        let building = ["building".to_string()];
        assert_eq!(
            reads.zooms_for(
                "planet_osm_polygon",
                RowFacts {
                    changed_columns: Some(&building),
                    ..RowFacts::default()
                }
            ),
            ZoomMask::range(14, 31)
        );
        let highway = ["highway".to_string()];
        assert!(reads
            .zooms_for(
                "planet_osm_roads",
                RowFacts {
                    changed_columns: Some(&highway),
                    ..RowFacts::default()
                }
            )
            .contains(10));
        // Landcover draws polygons from z10: a new polygon counts there…
        assert!(reads
            .zooms_for("planet_osm_polygon", RowFacts::default())
            .contains(10));
        // …unless its columns say no layer but buildings can draw it.
        let null: Vec<String> = [
            "landuse", "leisure", "natural", "amenity", "water", "waterway", "name", "boundary",
        ]
        .map(String::from)
        .into();
        let new_building = RowFacts {
            changed_columns: None,
            null_columns: Some(&null),
            digests: None,
        };
        assert_eq!(
            reads.zooms_for("planet_osm_polygon", new_building),
            ZoomMask::range(14, 31)
        );
        let layer_needs = |n: &str| &reads.layers.iter().find(|l| l.name == n).unwrap().requires;
        assert_eq!(
            *layer_needs("landcover"),
            needs(&[&["amenity", "landuse", "leisure", "natural"], &["way_area"]])
        );
        assert_eq!(*layer_needs("place-names"), needs(&[&["name"], &["place"]]));
    }

    #[test]
    fn openstreetmap_carto_is_mostly_understood() {
        let path = "/usr/share/openstreetmap-carto-common/style.xml";
        let Ok(xml) = std::fs::read_to_string(path) else {
            eprintln!("skipped: {path} not found (apt-get install openstreetmap-carto-common)");
            return;
        };
        let reads = analyse_style("carto", &xml, 256, 1.0).unwrap();
        let (understood, fell_back) = reads.counts();
        for layer in reads.layers.iter().filter(|l| !l.understood()) {
            eprintln!("fell back: {} ({})", layer.name, layer.zooms);
        }
        eprintln!("carto: {understood} layers understood, {fell_back} fell back");
        for layer in reads.layers.iter().filter(|l| l.views.is_empty()) {
            eprintln!(
                "carto: values not followed: {} ({})",
                layer.name, layer.zooms
            );
        }
        assert!(
            understood * 10 >= reads.layers.len() * 9,
            "{understood} of {}",
            reads.layers.len()
        );
        let building = ["building".to_string()];
        let zooms = reads.zooms_for(
            "planet_osm_polygon",
            RowFacts {
                changed_columns: Some(&building),
                ..RowFacts::default()
            },
        );
        // Carto's water and landcover layers filter on `building` too
        // (`building IS NULL`), so even a building tag change counts at
        // low zooms; points are drawn from z4 on.
        eprintln!("carto: polygon building changes expire {zooms}");
        let points = reads.zooms_for("planet_osm_point", RowFacts::default());
        eprintln!("carto: point changes expire {points}");
        assert!(!points.contains(3), "{points}");

        // A new building (building=yes, a tag kept in the hstore), with
        // the hstore keys the layers read hashed: drawn from z14 on only
        // (buildings; its address and label layers need other columns).
        let keys = reads.hstore_keys();
        eprintln!("carto: {} hstore keys read", keys.len());
        assert!(
            keys.contains("golf") && keys.contains("wetland"),
            "{keys:?}"
        );
        let mut columns: Vec<String> = [
            "access",
            "addr:housename",
            "addr:housenumber",
            "admin_level",
            "aerialway",
            "aeroway",
            "amenity",
            "barrier",
            "bicycle",
            "boundary",
            "bridge",
            "building",
            "construction",
            "covered",
            "foot",
            "highway",
            "historic",
            "horse",
            "junction",
            "landuse",
            "layer",
            "leisure",
            "lock",
            "man_made",
            "military",
            "name",
            "natural",
            "oneway",
            "place",
            "power",
            "railway",
            "ref",
            "religion",
            "route",
            "service",
            "shop",
            "surface",
            "tourism",
            "tracktype",
            "tunnel",
            "water",
            "waterway",
            "way_area",
            "z_order",
            "tags",
        ]
        .map(String::from)
        .into();
        let own = columns.len();
        columns.extend(keys.iter().map(|k| key_column("tags", k)));
        let mut row = vec![None; columns.len()];
        let mut set = |column: &str, value: &str| {
            let i = columns.iter().position(|c| c == column).unwrap();
            row[i] = Some(crate::expire::style_aware::text_digest(value));
        };
        set("building", "yes");
        set("way_area", "1234.5");
        set("z_order", "0");
        set("tags", "\"roof:colour\"=>\"red\"");
        let digests = crate::apply::append::RowDigests {
            columns: columns.clone(),
            old: Vec::new(),
            new: vec![row.clone()],
        };
        let facts = RowFacts {
            digests: Some(&digests),
            ..RowFacts::default()
        };
        let started = std::time::Instant::now();
        let building = reads.zooms_for("planet_osm_polygon", facts);
        eprintln!(
            "carto: a new building expires {building} ({:?})",
            started.elapsed()
        );
        assert_eq!(building, ZoomMask::range(14, 31));
        // Without the keys' hashes, `tags->'golf'` may be a golf tee.
        let digests = crate::apply::append::RowDigests {
            columns: columns[..own].to_vec(),
            old: Vec::new(),
            new: vec![row[..own].to_vec()],
        };
        let unhashed = reads.zooms_for(
            "planet_osm_polygon",
            RowFacts {
                digests: Some(&digests),
                ..RowFacts::default()
            },
        );
        assert_eq!(unhashed, ZoomMask::range(12, 31));
    }
}
