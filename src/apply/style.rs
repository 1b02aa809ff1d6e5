//! osm2pgsql `.style` files: which tags become columns of which table, which
//! tags mark an area, which tags are deleted on sight.
//!
//! A style file has one entry per line, `OsmType Tag DataType [Flags]`, with
//! `#` starting a comment (osm2pgsql's `default.style` header). This module parses such files the way
//! osm2pgsql 1.8 (`read_style_file`) does, with two deliberate differences
//! that turn osm2pgsql's silent surprises into errors at load time:
//! - an unknown flag is an error (osm2pgsql logs a warning and ignores it);
//! - a key that would become the same column twice is an error (osm2pgsql
//!   fails later, at `CREATE TABLE`).
//!
//! [`Style::default`] is osm2pgsql 1.8's `default.style` (Debian's
//! `/usr/share/osm2pgsql/default.style`), written out here. A [`Style`] also carries the hstore options (`-k`,
//! `-j`, `--hstore-match-only`, `-z`), because they decide the tables'
//! columns together with the style.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use thiserror::Error;

/// Where tags that have no column of their own go (osm2pgsql's `--hstore`,
/// `--hstore-all`, `--hstore-column`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HstoreMode {
    /// No `tags` column: tags without a column are lost.
    #[default]
    None,
    /// `-k/--hstore`: tags without a column go to `tags`, and any surviving
    /// tag keeps the object.
    Match,
    /// `-j/--hstore-all`: every surviving tag goes to `tags`, also those that
    /// have a column.
    All,
}

/// The hstore options of an import; part of a [`Style`] because they change
/// the tables' columns and which objects are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HstoreOptions {
    /// Whether there is a `tags` column and which tags it takes.
    pub mode: HstoreMode,
    /// `--hstore-match-only`: tags that only land in an hstore column do not
    /// keep an object on their own.
    #[serde(default)]
    pub match_only: bool,
    /// `-z/--hstore-column PREFIX` (repeatable): an extra hstore column named
    /// PREFIX holding the tags whose key starts with PREFIX, prefix removed.
    #[serde(default)]
    pub columns: Vec<String>,
}

/// The flags of one style entry. `phstore` is read as `polygon,nocolumn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StyleFlags {
    /// A matching tag makes the object an area candidate.
    pub polygon: bool,
    /// Documents "line"; no effect beyond creating the column.
    pub linear: bool,
    /// The tag counts as matched (keeps the object, flags apply) but gets no
    /// column.
    pub nocolumn: bool,
    /// The tag is removed everywhere, also from hstore. The only flag that
    /// allows `*`/`?` wildcards in the key.
    pub delete: bool,
    /// Accepted and ignored, as by osm2pgsql.
    pub nocache: bool,
}

impl StyleFlags {
    /// Only `delete`: what osm2pgsql requires of wildcard entries and of a
    /// `way_area` entry that switches the area computation off.
    fn is_delete_only(self) -> bool {
        self == StyleFlags {
            delete: true,
            ..StyleFlags::default()
        }
    }

    fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for (set, name) in [
            (self.polygon, "polygon"),
            (self.linear, "linear"),
            (self.nocolumn, "nocolumn"),
            (self.delete, "delete"),
            (self.nocache, "nocache"),
        ] {
            if set {
                names.push(name);
            }
        }
        names
    }
}

/// How a tag value is converted for its column (osm2pgsql's `ColumnType`,
/// decided by the style's data type; see [`crate::apply::transform::value`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Written as is.
    Text,
    /// First integer or mean of `a-b`; NULL outside int32.
    Int4,
    /// Decimal number with `,` as `.`, `a-b` mean, `ft` suffix.
    Real,
}

impl ValueType {
    /// osm2pgsql's `get_tag_type`: these SQL types convert values; any other
    /// type name is passed through as text.
    fn for_sql_type(sql_type: &str) -> ValueType {
        match sql_type {
            "smallint" | "integer" | "bigint" | "int2" | "int4" | "int8" => ValueType::Int4,
            "real" => ValueType::Real,
            _ => ValueType::Text,
        }
    }
}

/// Which object kinds an entry applies to; relations use the way entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryTarget {
    /// `node`: the point table.
    Node,
    /// `way`: the line, polygon and roads tables.
    Way,
    /// `node,way`: all four tables.
    NodeAndWay,
}

impl EntryTarget {
    /// Whether the entry applies to nodes.
    pub fn nodes(self) -> bool {
        matches!(self, EntryTarget::Node | EntryTarget::NodeAndWay)
    }

    /// Whether the entry applies to ways (and relations).
    pub fn ways(self) -> bool {
        matches!(self, EntryTarget::Way | EntryTarget::NodeAndWay)
    }

    fn as_str(self) -> &'static str {
        match self {
            EntryTarget::Node => "node",
            EntryTarget::Way => "way",
            EntryTarget::NodeAndWay => "node,way",
        }
    }
}

/// One line of a style file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StyleEntry {
    /// The tag key; may contain `*`/`?` only for delete entries.
    pub key: String,
    /// The data type as written; it is the column's SQL type.
    pub sql_type: String,
    /// How values are converted, from the data type.
    pub value_type: ValueType,
    /// The entry's flags (`polygon`, `linear`, …).
    pub flags: StyleFlags,
    /// The object kinds the entry applies to.
    pub target: EntryTarget,
    /// Line in the style file (1-based); 0 for the built-in default.
    pub line: usize,
}

impl StyleEntry {
    /// Whether this entry creates a column.
    pub fn has_column(&self) -> bool {
        !self.flags.delete && !self.flags.nocolumn
    }
}

/// The four output tables (osm2pgsql's pgsql output: `_point`, `_line`,
/// `_roads`, `_polygon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// `PREFIX_point`: tagged nodes.
    Point,
    /// `PREFIX_line`: ways and relations that are not areas.
    Line,
    /// `PREFIX_polygon`: closed area ways, multipolygon and boundary
    /// relations.
    Polygon,
    /// `PREFIX_roads`: the lines of major roads, railways and
    /// administrative boundaries again, for low zooms.
    Roads,
}

impl TableKind {
    /// All four tables.
    pub const ALL: [TableKind; 4] = [
        TableKind::Point,
        TableKind::Line,
        TableKind::Polygon,
        TableKind::Roads,
    ];

    /// The table name after the prefix: `point`, `line`, `polygon`, `roads`.
    pub fn suffix(self) -> &'static str {
        match self {
            TableKind::Point => "point",
            TableKind::Line => "line",
            TableKind::Polygon => "polygon",
            TableKind::Roads => "roads",
        }
    }

    /// PostGIS geometry type of the `way` column.
    pub fn geometry_type(self) -> &'static str {
        match self {
            TableKind::Point => "POINT",
            TableKind::Line | TableKind::Roads => "LINESTRING",
            // POLYGON or MULTIPOLYGON (with -G); PostGIS cannot say "either".
            TableKind::Polygon => "GEOMETRY",
        }
    }

    /// Point tables take the node entries, the others the way entries.
    fn uses_node_entries(self) -> bool {
        self == TableKind::Point
    }
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// A column created by a style entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StyleColumn {
    /// The column name: the tag key.
    pub name: String,
    /// The SQL type, as the style gives it.
    pub sql_type: String,
    /// How tag values are converted for it.
    pub value_type: ValueType,
}

impl StyleColumn {
    /// `way_area` is filled from the geometry, not from a tag (osm2pgsql's `pgsql_process_relation` and `output_pgsql_t::way_add`).
    pub fn is_way_area(&self) -> bool {
        self.name == WAY_AREA
    }
}

/// Name of the computed area column.
pub const WAY_AREA: &str = "way_area";
/// Name of the computed layering pseudo-tag and column.
pub const Z_ORDER: &str = "z_order";

/// What a column of an output table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRole {
    /// `osm_id int8`: node/way id, or minus the relation id.
    OsmId,
    /// The n-th style column of the table (index into
    /// [`Style::columns`] and [`crate::apply::transform::RowValues::columns`]).
    Style(usize),
    /// The n-th `-z` hstore column (prefix given).
    HstorePrefix(usize),
    /// The `tags hstore` column (`-k`/`-j`).
    Tags,
    /// The `way` geometry column.
    Geometry,
}

/// One column of an output table, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// The column name, unquoted.
    pub name: String,
    /// The SQL type, as in `CREATE TABLE`.
    pub sql_type: String,
    /// What the column holds.
    pub role: ColumnRole,
}

/// Problems on one line of a style file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineProblem {
    /// Fewer than three fields on a line that is not blank or a comment.
    #[error("expected `OsmType Tag DataType [Flags]`, found {found} field(s)")]
    MissingFields {
        /// How many fields the line has.
        found: usize,
    },
    /// The first field mentions neither `node` nor `way`.
    #[error("unknown object type \"{0}\" (expected node, way or node,way)")]
    ObjectType(String),
    /// A flag osm2pgsql does not know (it would only warn).
    #[error("unknown flag \"{0}\"")]
    UnknownFlag(String),
    /// A `*`/`?` key on an entry that is not a text `delete` entry.
    #[error("wildcard in \"{0}\" is only allowed in a text entry whose only flag is delete")]
    Wildcard(String),
    /// A data type that could not go into `CREATE TABLE` as it is.
    #[error("data type \"{0}\" is not a plain SQL type name")]
    DataType(String),
    /// A key that an earlier entry already made a column of the same table
    /// (osm2pgsql would fail at `CREATE TABLE`).
    #[error(
        "\"{key}\" would be a second {target} column of that name (first on line {first_line})"
    )]
    DuplicateColumn {
        /// The repeated key.
        key: String,
        /// `node` or `way`: which tables the column is in.
        target: &'static str,
        /// The line of the first entry with that key.
        first_line: usize,
    },
}

/// Why a style could not be loaded.
#[derive(Debug, Error)]
pub enum StyleError {
    /// One line is wrong.
    #[error("{file}:{line}: {problem}")]
    Line {
        /// The style file, as named.
        file: String,
        /// The line, 1-based.
        line: usize,
        /// What is wrong with it.
        problem: LineProblem,
    },
    /// The file has no entries at all.
    #[error("{file}: no style entries found (only blank or comment lines)")]
    Empty {
        /// The style file, as named.
        file: String,
    },
    /// The file could not be read.
    #[error("cannot read style file {file}: {source}")]
    Read {
        /// The style file, as named.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The point or line table would have no style column, which osm2pgsql
    /// refuses unless every tag goes to hstore (`-j`).
    #[error(
        "{file}: the {table} table would have no columns; osm2pgsql requires one unless --hstore-all"
    )]
    NoColumns {
        /// The style file, as named.
        file: String,
        /// The table without columns.
        table: TableKind,
    },
    /// A `-z` prefix that is empty or contains `"`.
    #[error("hstore column prefix {0:?} is empty or contains a double quote")]
    HstoreColumn(String),
}

/// What the style says about one tag key, for one object kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// A non-delete entry has exactly this key: the tag is kept and the
    /// entry's flags apply.
    Matched(StyleFlags),
    /// A delete entry matches (the first matching entry decides).
    Delete,
    /// No entry matches.
    Unmatched,
}

/// Decides [`KeyRule`]s quickly while keeping osm2pgsql's rule that the
/// first entry in file order that matches wins (`check_key`).
#[derive(Debug, Clone, Default)]
struct KeyMatcher {
    /// First entry per exact key (non-delete, or delete without wildcard):
    /// its position and its rule.
    exact: HashMap<String, (usize, KeyRule)>,
    /// Wildcard delete entries with their positions, in file order.
    patterns: Vec<(usize, String)>,
}

impl KeyMatcher {
    fn new<'a>(entries: impl Iterator<Item = &'a StyleEntry>) -> KeyMatcher {
        let mut matcher = KeyMatcher::default();
        for (position, entry) in entries.enumerate() {
            let wildcard = entry.key.contains(['*', '?']);
            if entry.flags.delete && wildcard {
                matcher.patterns.push((position, entry.key.clone()));
                continue;
            }
            let rule = if entry.flags.delete {
                KeyRule::Delete
            } else {
                KeyRule::Matched(entry.flags)
            };
            matcher
                .exact
                .entry(entry.key.clone())
                .or_insert((position, rule));
        }
        matcher
    }

    fn rule(&self, key: &str) -> KeyRule {
        let exact = self.exact.get(key);
        let limit = exact.map_or(usize::MAX, |(position, _)| *position);
        let deleted = self
            .patterns
            .iter()
            .take_while(|(position, _)| *position < limit)
            .any(|(_, pattern)| wild_match(pattern.as_bytes(), key.as_bytes()));
        if deleted {
            KeyRule::Delete
        } else {
            exact.map_or(KeyRule::Unmatched, |(_, rule)| *rule)
        }
    }
}

/// osm2pgsql's `wildMatch`: case-sensitive, `*` any run (also empty), `?`
/// exactly one character (byte).
pub fn wild_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with backtracking to the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A parsed style plus the hstore options: everything that decides the
/// output tables' columns and the classic tag filter.
#[derive(Debug, Clone)]
pub struct Style {
    /// Name used in messages: the file path, or `built-in default.style`.
    source: String,
    entries: Vec<StyleEntry>,
    node_columns: Vec<StyleColumn>,
    way_columns: Vec<StyleColumn>,
    node_matcher: KeyMatcher,
    way_matcher: KeyMatcher,
    way_area_enabled: bool,
    hstore: HstoreOptions,
}

impl PartialEq for Style {
    fn eq(&self, other: &Style) -> bool {
        // The matchers and column lists are derived from the entries.
        self.entries == other.entries && self.hstore == other.hstore
    }
}

impl Default for Style {
    /// osm2pgsql 1.8's `default.style`, no hstore.
    fn default() -> Style {
        Style::from_entries(
            BUILTIN_NAME.to_string(),
            builtin_default_entries(),
            HstoreOptions::default(),
        )
        .expect("the built-in default style is valid")
    }
}

const BUILTIN_NAME: &str = "built-in default.style";

impl Style {
    /// Reads and parses a style file; errors name the path and line.
    pub fn from_file(path: &Path) -> Result<Style, StyleError> {
        let file = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| StyleError::Read {
            file: file.clone(),
            source,
        })?;
        // osm2pgsql reads bytes; non-UTF-8 keys could never match a tag.
        Style::parse(&String::from_utf8_lossy(&text), &file)
    }

    /// Parses style text; `file` names it in errors (`file:line: problem`).
    pub fn parse(text: &str, file: &str) -> Result<Style, StyleError> {
        let mut entries = Vec::new();
        for (index, raw_line) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw_line.split('#').next().unwrap_or("");
            let fields: Vec<&str> = content.split_ascii_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let entry = parse_entry(&fields, line).map_err(|problem| StyleError::Line {
                file: file.to_string(),
                line,
                problem,
            })?;
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(StyleError::Empty {
                file: file.to_string(),
            });
        }
        Style::from_entries(file.to_string(), entries, HstoreOptions::default())
    }

    fn from_entries(
        source: String,
        entries: Vec<StyleEntry>,
        hstore: HstoreOptions,
    ) -> Result<Style, StyleError> {
        let node_columns = collect_columns(&source, &entries, EntryTarget::nodes)?;
        let way_columns = collect_columns(&source, &entries, EntryTarget::ways)?;
        let way_area_enabled = !entries
            .iter()
            .any(|e| e.key == WAY_AREA && e.flags.is_delete_only());
        Ok(Style {
            node_matcher: KeyMatcher::new(entries.iter().filter(|e| e.target.nodes())),
            way_matcher: KeyMatcher::new(entries.iter().filter(|e| e.target.ways())),
            source,
            entries,
            node_columns,
            way_columns,
            way_area_enabled,
            hstore,
        })
    }

    /// The same style with these hstore options. Fails like osm2pgsql when a
    /// table would end up without any column (only possible without `-j`),
    /// or when a `-z` prefix cannot be a column name.
    pub fn with_hstore(mut self, hstore: HstoreOptions) -> Result<Style, StyleError> {
        if let Some(bad) = hstore
            .columns
            .iter()
            .find(|prefix| prefix.is_empty() || prefix.contains('"'))
        {
            return Err(StyleError::HstoreColumn(bad.clone()));
        }
        if hstore.mode != HstoreMode::All {
            for table in [TableKind::Point, TableKind::Line] {
                if self.columns(table).is_empty() {
                    return Err(StyleError::NoColumns {
                        file: self.source.clone(),
                        table,
                    });
                }
            }
        }
        self.hstore = hstore;
        Ok(self)
    }

    /// The file name (or `built-in default.style`) this style came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[StyleEntry] {
        &self.entries
    }

    /// The hstore options given to [`with_hstore`](Self::with_hstore).
    pub fn hstore(&self) -> &HstoreOptions {
        &self.hstore
    }

    /// False when the style has `way_area` with only the `delete` flag:
    /// then no area is computed (osm2pgsql's `default.style` comments).
    pub fn way_area_enabled(&self) -> bool {
        self.way_area_enabled
    }

    /// The style columns of a table in style-file order (without `osm_id`,
    /// hstore columns and `way`). Point uses node entries; line, polygon and
    /// roads use way entries.
    pub fn columns(&self, table: TableKind) -> &[StyleColumn] {
        if table.uses_node_entries() {
            &self.node_columns
        } else {
            &self.way_columns
        }
    }

    /// Every column of a table in osm2pgsql's order (`table_t::start`):
    /// `osm_id`, the style columns, the `-z` hstore columns, `tags` (with
    /// `-k`/`-j`), `way`.
    pub fn table_columns(&self, table: TableKind, srid: i32) -> Vec<TableColumn> {
        let mut columns = vec![TableColumn {
            name: "osm_id".to_string(),
            sql_type: "int8".to_string(),
            role: ColumnRole::OsmId,
        }];
        columns.extend(
            self.columns(table)
                .iter()
                .enumerate()
                .map(|(index, column)| TableColumn {
                    name: column.name.clone(),
                    sql_type: column.sql_type.clone(),
                    role: ColumnRole::Style(index),
                }),
        );
        columns.extend(
            self.hstore
                .columns
                .iter()
                .enumerate()
                .map(|(index, prefix)| TableColumn {
                    name: prefix.clone(),
                    sql_type: "hstore".to_string(),
                    role: ColumnRole::HstorePrefix(index),
                }),
        );
        if self.hstore.mode != HstoreMode::None {
            columns.push(TableColumn {
                name: "tags".to_string(),
                sql_type: "hstore".to_string(),
                role: ColumnRole::Tags,
            });
        }
        columns.push(TableColumn {
            name: "way".to_string(),
            sql_type: format!("geometry({},{})", table.geometry_type(), srid),
            role: ColumnRole::Geometry,
        });
        columns
    }

    /// What the style says about `key` on a node (`for_nodes`) or on a
    /// way/relation.
    pub fn key_rule(&self, key: &str, for_nodes: bool) -> KeyRule {
        if for_nodes {
            self.node_matcher.rule(key)
        } else {
            self.way_matcher.rule(key)
        }
    }

    /// The style as style-file text (one entry a line, original line numbers
    /// not kept); parsing it gives the same entries. Useful to hand the
    /// built-in default to osm2pgsql or to store it.
    pub fn to_style_text(&self) -> String {
        let mut text = String::from("# OsmType  Tag  DataType  Flags\n");
        for entry in &self.entries {
            text.push_str(&format!(
                "{:<9} {:<22} {:<6} {}\n",
                entry.target.as_str(),
                entry.key,
                entry.sql_type,
                entry.flags.names().join(",")
            ));
        }
        text
    }
}

fn collect_columns(
    file: &str,
    entries: &[StyleEntry],
    applies: fn(EntryTarget) -> bool,
) -> Result<Vec<StyleColumn>, StyleError> {
    let mut columns = Vec::new();
    let mut first_lines: HashMap<&str, usize> = HashMap::new();
    for entry in entries
        .iter()
        .filter(|e| applies(e.target) && e.has_column())
    {
        if let Some(&first_line) = first_lines.get(entry.key.as_str()) {
            return Err(StyleError::Line {
                file: file.to_string(),
                line: entry.line,
                problem: LineProblem::DuplicateColumn {
                    key: entry.key.clone(),
                    target: if applies(EntryTarget::Node) {
                        "node"
                    } else {
                        "way"
                    },
                    first_line,
                },
            });
        }
        first_lines.insert(&entry.key, entry.line);
        columns.push(StyleColumn {
            name: entry.key.clone(),
            sql_type: entry.sql_type.clone(),
            value_type: entry.value_type,
        });
    }
    Ok(columns)
}

fn parse_entry(fields: &[&str], line: usize) -> Result<StyleEntry, LineProblem> {
    if fields.len() < 3 {
        return Err(LineProblem::MissingFields {
            found: fields.len(),
        });
    }
    let (object_type, key, sql_type) = (fields[0], fields[1], fields[2]);
    // Like osm2pgsql (strstr), the type field only has to mention the kinds.
    let target = match (object_type.contains("node"), object_type.contains("way")) {
        (true, true) => EntryTarget::NodeAndWay,
        (true, false) => EntryTarget::Node,
        (false, true) => EntryTarget::Way,
        (false, false) => return Err(LineProblem::ObjectType(object_type.to_string())),
    };
    // The type goes into CREATE TABLE as written; allow type names only.
    let plain_type = sql_type
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_(),[].".contains(c));
    if !plain_type {
        return Err(LineProblem::DataType(sql_type.to_string()));
    }
    let flags = match fields.get(3) {
        Some(names) => parse_flags(names)?,
        None => StyleFlags::default(),
    };
    // osm2pgsql never converts way_area values: the code provides them.
    let value_type = if key == WAY_AREA {
        ValueType::Text
    } else {
        ValueType::for_sql_type(sql_type)
    };
    // osm2pgsql compares all flag bits, type bits included, with "delete".
    if key.contains(['*', '?']) && !(flags.is_delete_only() && value_type == ValueType::Text) {
        return Err(LineProblem::Wildcard(key.to_string()));
    }
    Ok(StyleEntry {
        key: key.to_string(),
        sql_type: sql_type.to_string(),
        value_type,
        flags,
        target,
        line,
    })
}

fn parse_flags(names: &str) -> Result<StyleFlags, LineProblem> {
    let mut flags = StyleFlags::default();
    for name in names.split(',').filter(|name| !name.is_empty()) {
        match name {
            "polygon" => flags.polygon = true,
            "linear" => flags.linear = true,
            "nocolumn" => flags.nocolumn = true,
            "phstore" => {
                flags.polygon = true;
                flags.nocolumn = true;
            }
            "delete" => flags.delete = true,
            "nocache" => flags.nocache = true,
            other => return Err(LineProblem::UnknownFlag(other.to_string())),
        }
    }
    Ok(flags)
}

/// The tag columns of osm2pgsql's default style in file order, with the
/// polygon ones marked; `N` = nodes only, `W` = ways only, `B` = both.
const DEFAULT_COLUMNS: &[(&str, char, bool)] = &[
    ("access", 'B', false),
    ("addr:housename", 'B', false),
    ("addr:housenumber", 'B', false),
    ("addr:interpolation", 'B', false),
    ("admin_level", 'B', false),
    ("aerialway", 'B', false),
    ("aeroway", 'B', true),
    ("amenity", 'B', true),
    ("area", 'B', true),
    ("barrier", 'B', false),
    ("bicycle", 'B', false),
    ("brand", 'B', false),
    ("bridge", 'B', false),
    ("boundary", 'B', false),
    ("building", 'B', true),
    ("capital", 'N', false),
    ("construction", 'B', false),
    ("covered", 'B', false),
    ("culvert", 'B', false),
    ("cutting", 'B', false),
    ("denomination", 'B', false),
    ("disused", 'B', false),
    ("ele", 'N', false),
    ("embankment", 'B', false),
    ("foot", 'B', false),
    ("generator:source", 'B', false),
    ("harbour", 'B', true),
    ("highway", 'B', false),
    ("historic", 'B', true),
    ("horse", 'B', false),
    ("intermittent", 'B', false),
    ("junction", 'B', false),
    ("landuse", 'B', true),
    ("layer", 'B', false),
    ("leisure", 'B', true),
    ("lock", 'B', false),
    ("man_made", 'B', true),
    ("military", 'B', true),
    ("motorcar", 'B', false),
    ("name", 'B', false),
    ("natural", 'B', true),
    ("office", 'B', true),
    ("oneway", 'B', false),
    ("operator", 'B', false),
    ("place", 'B', true),
    ("population", 'B', false),
    ("power", 'B', true),
    ("power_source", 'B', false),
    ("public_transport", 'B', true),
    ("railway", 'B', false),
    ("ref", 'B', false),
    ("religion", 'B', false),
    ("route", 'B', false),
    ("service", 'B', false),
    ("shop", 'B', true),
    ("sport", 'B', true),
    ("surface", 'B', false),
    ("toll", 'B', false),
    ("tourism", 'B', true),
    ("tower:type", 'B', false),
    ("tracktype", 'W', false),
    ("tunnel", 'B', false),
    ("water", 'B', true),
    ("waterway", 'B', true),
    ("wetland", 'B', true),
    ("width", 'B', false),
    ("wood", 'B', false),
];

/// Way keys that mark areas without getting a column.
const DEFAULT_POLYGON_NOCOLUMN: &[&str] = &[
    "abandoned:aeroway",
    "abandoned:amenity",
    "abandoned:building",
    "abandoned:landuse",
    "abandoned:power",
    "area:highway",
];

/// Keys (and wildcard patterns) deleted on nodes and ways.
const DEFAULT_DELETE: &[&str] = &[
    "note",
    "note:*",
    "source",
    "source_ref",
    "source:*",
    "attribution",
    "comment",
    "fixme",
    "created_by",
    "odbl",
    "odbl:note",
    "SK53_bulk:load",
    "tiger:*",
    "NHD:*",
    "nhd:*",
    "gnis:*",
    "geobase:*",
    "accuracy:meters",
    "sub_sea:type",
    "waterway:type",
    "KSJ2:*",
    "yh:*",
    "osak:*",
    "kms:*",
    "ngbe:*",
    "naptan:*",
    "CLC:*",
    "3dshapes:ggmodelk",
    "AND_nosr_r",
    "import",
    "it:fvg:*",
];

fn builtin_default_entries() -> Vec<StyleEntry> {
    let entry = |key: &str, sql_type: &str, flags: StyleFlags, target: EntryTarget| StyleEntry {
        key: key.to_string(),
        sql_type: sql_type.to_string(),
        value_type: if key == WAY_AREA {
            ValueType::Text
        } else {
            ValueType::for_sql_type(sql_type)
        },
        flags,
        target,
        line: 0,
    };
    let linear = StyleFlags {
        linear: true,
        ..StyleFlags::default()
    };
    let polygon = StyleFlags {
        polygon: true,
        ..StyleFlags::default()
    };
    let mut entries = Vec::new();
    for &(key, target, is_polygon) in DEFAULT_COLUMNS {
        let target = match target {
            'N' => EntryTarget::Node,
            'W' => EntryTarget::Way,
            _ => EntryTarget::NodeAndWay,
        };
        let flags = if is_polygon { polygon } else { linear };
        entries.push(entry(key, "text", flags, target));
    }
    entries.push(entry(Z_ORDER, "int4", linear, EntryTarget::NodeAndWay));
    entries.push(entry(WAY_AREA, "real", linear, EntryTarget::Way));
    let polygon_nocolumn = StyleFlags {
        polygon: true,
        nocolumn: true,
        ..StyleFlags::default()
    };
    for key in DEFAULT_POLYGON_NOCOLUMN {
        entries.push(entry(key, "text", polygon_nocolumn, EntryTarget::Way));
    }
    let delete = StyleFlags {
        delete: true,
        ..StyleFlags::default()
    };
    for key in DEFAULT_DELETE {
        entries.push(entry(key, "text", delete, EntryTarget::NodeAndWay));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARTO_STYLE: &str = "/usr/share/openstreetmap-carto-common/openstreetmap-carto.style";

    fn names(columns: &[StyleColumn]) -> Vec<&str> {
        columns.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn default_style_column_counts_and_order() {
        let style = Style::default();
        let point = names(style.columns(TableKind::Point));
        let line = names(style.columns(TableKind::Line));
        // 66 node tag columns + z_order; 65 way tag columns + z_order + way_area.
        assert_eq!(point.len(), 67);
        assert_eq!(line.len(), 67);
        assert_eq!(
            &point[..3],
            ["access", "addr:housename", "addr:housenumber"]
        );
        assert_eq!(&point[12..14], ["bridge", "boundary"]);
        assert!(point.contains(&"capital") && point.contains(&"ele"));
        assert!(!point.contains(&"tracktype") && !point.contains(&"way_area"));
        assert!(!line.contains(&"capital") && !line.contains(&"ele"));
        let tower = line.iter().position(|c| *c == "tower:type").unwrap();
        assert_eq!(line[tower + 1], "tracktype");
        assert_eq!(&line[line.len() - 2..], ["z_order", "way_area"]);
        assert_eq!(point.last(), Some(&"z_order"));
        for table in [TableKind::Polygon, TableKind::Roads] {
            assert_eq!(names(style.columns(table)), line);
        }
        let z = &style.columns(TableKind::Line)[line.len() - 2];
        assert_eq!(
            (z.sql_type.as_str(), z.value_type),
            ("int4", ValueType::Int4)
        );
        let area = style.columns(TableKind::Line).last().unwrap();
        assert_eq!(area.sql_type, "real");
        assert!(area.is_way_area());
        assert!(style.way_area_enabled());
    }

    #[test]
    fn default_style_rules() {
        let style = Style::default();
        let polygon = |key| match style.key_rule(key, false) {
            KeyRule::Matched(flags) => flags.polygon,
            other => panic!("{key}: {other:?}"),
        };
        assert!(polygon("building") && polygon("area:highway") && polygon("wetland"));
        assert!(!polygon("highway") && !polygon("name"));
        // nocolumn keys are way-only.
        assert_eq!(style.key_rule("area:highway", true), KeyRule::Unmatched);
        for key in [
            "note",
            "note:de",
            "source:geometry",
            "tiger:cfcc",
            "it:fvg:x",
        ] {
            assert_eq!(style.key_rule(key, true), KeyRule::Delete, "{key}");
            assert_eq!(style.key_rule(key, false), KeyRule::Delete, "{key}");
        }
        assert_eq!(style.key_rule("notes", false), KeyRule::Unmatched);
        assert_eq!(style.key_rule("Note", false), KeyRule::Unmatched);
        assert_eq!(style.key_rule("capital", false), KeyRule::Unmatched);
        assert!(matches!(
            style.key_rule("capital", true),
            KeyRule::Matched(_)
        ));
    }

    #[test]
    fn builtin_text_round_trips() {
        let style = Style::default();
        let reparsed = Style::parse(&style.to_style_text(), "x.style").unwrap();
        let strip = |s: &Style| -> Vec<StyleEntry> {
            s.entries()
                .iter()
                .map(|e| StyleEntry {
                    line: 0,
                    ..e.clone()
                })
                .collect()
        };
        assert_eq!(strip(&reparsed), strip(&style));
    }

    #[test]
    fn installed_default_style_matches_builtin() {
        let path = Path::new("/usr/share/osm2pgsql/default.style");
        if !path.exists() {
            eprintln!("skipped: {} not installed", path.display());
            return;
        }
        let installed = Style::from_file(path).unwrap();
        for table in TableKind::ALL {
            assert_eq!(installed.columns(table), Style::default().columns(table));
        }
        let strip = |s: &Style| -> Vec<(String, StyleFlags, EntryTarget)> {
            s.entries()
                .iter()
                .map(|e| (e.key.clone(), e.flags, e.target))
                .collect()
        };
        assert_eq!(strip(&installed), strip(&Style::default()));
    }

    #[test]
    fn carto_style() {
        let path = Path::new(CARTO_STYLE);
        if !path.exists() {
            eprintln!("skipped: {CARTO_STYLE} not installed");
            return;
        }
        let style = Style::from_file(path).unwrap();
        let point = names(style.columns(TableKind::Point));
        let line = names(style.columns(TableKind::Line));
        assert_eq!(point.len(), 31);
        assert_eq!(line.len(), 45);
        let layer =
            &style.columns(TableKind::Point)[point.iter().position(|c| *c == "layer").unwrap()];
        assert_eq!(layer.value_type, ValueType::Int4);
        assert_eq!(&line[line.len() - 2..], ["way_area", "z_order"]);
        assert!(!point.contains(&"z_order"));
    }

    #[test]
    fn table_columns_in_osm2pgsql_order() {
        let style = Style::default()
            .with_hstore(HstoreOptions {
                mode: HstoreMode::Match,
                match_only: false,
                columns: vec!["name:".to_string()],
            })
            .unwrap();
        let columns = style.table_columns(TableKind::Polygon, 3857);
        let n = columns.len();
        assert_eq!(n, 1 + 67 + 1 + 1 + 1);
        assert_eq!(columns[0].role, ColumnRole::OsmId);
        assert_eq!(columns[1].role, ColumnRole::Style(0));
        assert_eq!(columns[n - 3].name, "name:");
        assert_eq!(columns[n - 2].role, ColumnRole::Tags);
        assert_eq!(columns[n - 1].sql_type, "geometry(GEOMETRY,3857)");
        let plain = Style::default().table_columns(TableKind::Point, 4326);
        assert_eq!(plain.len(), 1 + 67 + 1);
        assert_eq!(plain.last().unwrap().sql_type, "geometry(POINT,4326)");
    }

    fn parse_error(text: &str) -> String {
        Style::parse(text, "default.style").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_and_line() {
        let text = "# comment\n\nnode,way name text linear\nnode,way building text polgon\n";
        assert_eq!(
            parse_error(text),
            "default.style:4: unknown flag \"polgon\""
        );
        assert_eq!(
            parse_error("node name text\nway note:* text linear\n"),
            "default.style:2: wildcard in \"note:*\" is only allowed in a text entry whose only flag is delete"
        );
        assert!(parse_error("way x?y int4 delete").starts_with("default.style:1: wildcard"));
        assert_eq!(
            parse_error("node name\n"),
            "default.style:1: expected `OsmType Tag DataType [Flags]`, found 2 field(s)"
        );
        assert_eq!(
            parse_error("node name text\nrelation type text linear\n"),
            "default.style:2: unknown object type \"relation\" (expected node, way or node,way)"
        );
        assert_eq!(
            parse_error("node name text\nnode,way name text linear\n"),
            "default.style:2: \"name\" would be a second node column of that name (first on line 1)"
        );
        assert!(parse_error("node name text;drop linear").contains("data type"));
        assert_eq!(
            parse_error("# nothing\n\n"),
            "default.style: no style entries found (only blank or comment lines)"
        );
    }

    #[test]
    fn parsing_details() {
        let text = "node,way  name text  # trailing comment\n\
                    way  height real linear extra-field-ignored\n\
                    node pop int8 phstore\n\
                    node,way note:* text delete\n\
                    way  way_area real delete\n\
                    way  lanes integer linear,nocache\n";
        let style = Style::parse(text, "t.style").unwrap();
        assert!(!style.way_area_enabled());
        assert_eq!(names(style.columns(TableKind::Point)), ["name"]);
        let way = style.columns(TableKind::Line);
        assert_eq!(names(way), ["name", "height", "lanes"]);
        assert_eq!(way[1].value_type, ValueType::Real);
        assert_eq!(way[2].value_type, ValueType::Int4);
        assert_eq!(way[2].sql_type, "integer");
        let pop = &style.entries()[2];
        assert!(pop.flags.polygon && pop.flags.nocolumn && pop.line == 3);
        assert_eq!(pop.value_type, ValueType::Int4);
        assert_eq!(style.key_rule("note:x", true), KeyRule::Delete);
        // A table without columns needs --hstore-all.
        let nodes_only = Style::parse("node name text\n", "n.style").unwrap();
        let err = nodes_only
            .clone()
            .with_hstore(HstoreOptions::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "n.style: the line table would have no columns; osm2pgsql requires one unless --hstore-all"
        );
        nodes_only
            .with_hstore(HstoreOptions {
                mode: HstoreMode::All,
                ..HstoreOptions::default()
            })
            .unwrap();
    }

    #[test]
    fn first_matching_entry_wins() {
        let text = "node,way  name:* text delete\nnode,way name:en text linear\nnode,way ref text linear\nnode,way ref text delete\n";
        let style = Style::parse(text, "t.style").unwrap();
        assert_eq!(style.key_rule("name:en", false), KeyRule::Delete);
        assert!(matches!(style.key_rule("ref", false), KeyRule::Matched(_)));
    }

    #[test]
    fn wildcards() {
        assert!(wild_match(b"note:*", b"note:"));
        assert!(wild_match(b"note:*", b"note:de"));
        assert!(!wild_match(b"note:*", b"note"));
        assert!(wild_match(b"a?c", b"abc"));
        assert!(!wild_match(b"a?c", b"ac"));
        assert!(wild_match(b"*:*:x", b"a:b:c:x"));
        assert!(wild_match(b"**", b""));
        assert!(!wild_match(b"abc", b"abcd"));
        assert!(wild_match(b"a*b*c", b"aXbYbZc"));
    }
}
