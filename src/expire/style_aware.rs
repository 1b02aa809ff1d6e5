//! Style-aware expiry: what each style reads, as plain data, and the
//! per-style tile sets it gives.
//!
//! A style's [`StyleReads`] says, per layer, which output tables and
//! columns the layer's SQL reads and at which zooms it can draw anything.
//! The render stage computes it from the style's Mapnik XML
//! ([`crate::render::style_reads`]); expire only sees the result, so it
//! stays ignorant of Mapnik. A changed row then expires a style's tiles
//! only at the zooms where a layer reading its table draws: a building
//! edit no longer re-renders z10 when buildings appear from z14 on.

use super::raster::{ExpireError, Expirer, RasterSettings};
use super::tileset::TileSet;
use crate::tile::Metatile;
use std::collections::{BTreeMap, BTreeSet};

/// A set of zooms 0..=31, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ZoomMask(pub u32);

impl ZoomMask {
    /// Every zoom.
    pub const ALL: ZoomMask = ZoomMask(u32::MAX);
    /// No zoom.
    pub const NONE: ZoomMask = ZoomMask(0);

    /// Zooms `min..=max` (empty when `min > max`).
    pub fn range(min: u8, max: u8) -> ZoomMask {
        if min > max || min > 31 {
            return ZoomMask::NONE;
        }
        let max = max.min(31);
        let high = if max == 31 {
            u32::MAX
        } else {
            (1u32 << (max + 1)) - 1
        };
        ZoomMask(high & !((1u32 << min) - 1))
    }

    /// Whether `zoom` is in the set.
    pub fn contains(self, zoom: u8) -> bool {
        zoom < 32 && self.0 & (1 << zoom) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Zooms in either set.
    pub fn union(self, other: ZoomMask) -> ZoomMask {
        ZoomMask(self.0 | other.0)
    }

    /// The lowest and highest zoom, if any.
    pub fn bounds(self) -> Option<(u8, u8)> {
        (!self.is_empty()).then(|| {
            (
                self.0.trailing_zeros() as u8,
                31 - self.0.leading_zeros() as u8,
            )
        })
    }
}

impl std::fmt::Display for ZoomMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bounds() {
            None => write!(f, "no zoom"),
            Some((min, max)) if ZoomMask::range(min, max) == *self => write!(f, "z{min}-z{max}"),
            Some(_) => {
                let zooms: Vec<String> = (0..32)
                    .filter(|&z| self.contains(z))
                    .map(|z| format!("z{z}"))
                    .collect();
                write!(f, "{}", zooms.join(","))
            }
        }
    }
}

/// Which tables or columns a layer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// Its SQL could not be understood: it counts as reading everything.
    Everything,
    /// Exactly these names (table names without schema; column names),
    /// lower case.
    Only(BTreeSet<String>),
}

impl Reads {
    /// Whether `name` is read.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Reads::Everything => true,
            Reads::Only(names) => names.contains(name),
        }
    }
}

/// What one layer of a style reads and where it draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReads {
    /// The layer's name, for log lines.
    pub name: String,
    /// Output tables its SQL reads.
    pub tables: Reads,
    /// Columns its SQL reads (the geometry is always read).
    pub columns: Reads,
    /// Zooms at which the layer and one of its rules can draw.
    pub zooms: ZoomMask,
    /// What its `WHERE` needs of a row: for each set, one of its columns
    /// is not NULL (`landuse IS NOT NULL OR leisure = 'park'` needs
    /// {landuse, leisure}). A row with all columns of a set NULL is not
    /// drawn by the layer. Empty: no known need.
    pub requires: Vec<BTreeSet<String>>,
    /// How the rows of each table it reads reach its output: per way
    /// (a table read by two branches of a `UNION` has two), what its
    /// SQL's `WHERE`s need of the row and which of its rules may draw it.
    /// A table without a view (the SQL was not understood, or reads it
    /// in a way not followed) counts as drawn at every zoom of
    /// [`zooms`](Self::zooms).
    pub views: Vec<RowView>,
}

impl LayerReads {
    /// Whether the layer's tables are known (its columns may not be: a
    /// bare table name reads all of them).
    pub fn understood(&self) -> bool {
        self.tables != Reads::Everything
    }
}

/// How one table's rows reach a layer's output: through one `SELECT`
/// chain (subqueries in `FROM`, one branch of each `UNION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowView {
    /// The table (lower case, without schema).
    pub table: String,
    /// All `WHERE`s along the chain, over the table's columns
    /// ([`Condition::Unknown`] when not understood).
    pub condition: Condition,
    /// Per rule of the layer's styles: the zooms where the rule is active
    /// (within the layer's) and its `Filter` over the table's columns
    /// (the output columns it names replaced by their definitions).
    /// Empty: nothing known, every zoom of the layer counts.
    pub rules: Vec<(ZoomMask, Condition)>,
    /// The output columns the rules' filters test, as expressions over
    /// the table's columns; the filters name them as [`Value::Output`].
    pub outputs: Vec<Value>,
}

/// What one style reads: the union of its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StyleReads {
    /// Style name (as in `expire.styles` and `styles:`).
    pub style: String,
    /// Its layers, in the order of the XML.
    pub layers: Vec<LayerReads>,
}

/// A condition over a row's values, from a layer's SQL `WHERE` or a
/// rule's `Filter`, evaluated on a changed row's column hashes
/// ([`crate::apply::append::RowDigests`]) in three-valued logic: a row
/// is left out of a layer only where its condition is surely false;
/// whatever is not understood may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Not understood: may hold.
    Unknown,
    /// Every one holds.
    All(Vec<Condition>),
    /// One holds.
    Any(Vec<Condition>),
    /// Does not hold.
    Not(Box<Condition>),
    /// The value is NULL.
    IsNull(Value),
    /// The value is one of these texts (`=`, `IN`).
    OneOf(Value, BTreeSet<String>),
}

/// A value a [`Condition`] tests: an expression over a row's columns, as
/// a layer's SQL computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Not understood: any text, or NULL.
    Unknown,
    /// A column of the row's table (lower case).
    Column(String),
    /// `column -> 'key'`: a key of an hstore column. Known when the row's
    /// hashes have a column named [`key_column`]`(column, key)`, NULL when
    /// the hstore column is, else unknown.
    Key(String, String),
    /// A text literal, or NULL.
    Literal(Option<String>),
    /// `a || b || …`: NULL when any part is (PostgreSQL's `textcat`).
    Concat(Vec<Value>),
    /// `COALESCE(a, b, …)`: the first that is not NULL, else NULL.
    Coalesce(Vec<Value>),
    /// `NULLIF(a, b)`: NULL when `a = b`, else `a`.
    NullIf(Box<Value>, Box<Value>),
    /// `CASE WHEN c THEN v … ELSE v END` (no `ELSE`: NULL).
    Case(Vec<(Condition, Value)>, Box<Value>),
    /// Output column `i` of a [`RowView`] ([`RowView::outputs`]), in its
    /// rules' filters: computed once per row for all of them.
    Output(usize),
}

/// The name under which a row's hashes hold `column -> 'key'` (an hstore
/// key a style reads), beside the table's own columns.
pub fn key_column(column: &str, key: &str) -> String {
    crate::apply::output::key_digest_name(column, key)
}

/// A row's values as hashes: `digests[i]` is column `columns[i]`'s;
/// `outputs[i]`, what a view's output column `i` may be on it.
struct Row<'a> {
    columns: &'a [String],
    digests: &'a [Option<i64>],
    outputs: &'a [Vec<Possible>],
}

impl Row<'_> {
    /// The hash of column `name`: `None` when the row has no such column,
    /// `Some(None)` for NULL.
    fn digest(&self, name: &str) -> Option<Option<i64>> {
        let i = self.columns.iter().position(|c| c == name)?;
        self.digests.get(i).copied()
    }
}

/// The hash PostgreSQL's `hashtextextended(text, 0)` gives `text` (with a
/// deterministic collation): Bob Jenkins' lookup3 as PostgreSQL's
/// `hash_bytes_extended` (src/common/hashfn.c) computes it on a little
/// endian machine, `b` and `c` of the final mix as the high and low
/// halves. The apply stage's column hashes are this function's values
/// (`hashtextextended(col::text, 0)`), so a literal's hash tells whether
/// a row's column holds it.
pub fn text_digest(text: &str) -> i64 {
    fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }
    fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(14));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(11));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(25));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(16));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(4));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(14));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(24));
    }
    let bytes = text.as_bytes();
    let init = 0x9e37_79b9u32
        .wrapping_add(bytes.len() as u32)
        .wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |chunk: &[u8]| {
        chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, &byte)| w | (u32::from(byte) << (8 * i)))
    };
    let mut rest = bytes;
    while rest.len() >= 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    // The last 11 bytes; the lowest byte of c is left for the length
    // (already in the initial value).
    a = a.wrapping_add(word(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(word(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word(&rest[8..]) << 8);
    }
    finish(&mut a, &mut b, &mut c);
    ((u64::from(b) << 32) | u64::from(c)) as i64
}

/// One part of a text whose parts may be known only by their hash.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// Known text.
    Text(String),
    /// A text known by its [`text_digest`].
    Hash(i64),
    /// Any text.
    Any,
}

/// A value a row may have: NULL, or a text made of parts.
#[derive(Debug, Clone, PartialEq)]
enum Possible {
    Null,
    Text(Vec<Part>),
}

/// More possible values than this for one expression count as unknown:
/// a bound on the work a long `CASE` of `COALESCE`s could make.
const MAX_POSSIBLE: usize = 64;

fn anything() -> Vec<Possible> {
    vec![Possible::Null, Possible::Text(vec![Part::Any])]
}

impl Possible {
    /// Whether the text equals `literal`: `None` when that is not known.
    /// NULL equals nothing (SQL's `=` is not true, Mapnik's null equals
    /// no string).
    fn equals(&self, literal: &str) -> Option<bool> {
        let Possible::Text(parts) = self else {
            return Some(false);
        };
        // Known text at both ends must match the literal's ends.
        let mut rest = literal;
        let mut start = 0;
        let mut end = parts.len();
        while let Some(Part::Text(t)) = parts.get(start).filter(|_| start < end) {
            match rest.strip_prefix(t.as_str()) {
                Some(r) => rest = r,
                None => return Some(false),
            }
            start += 1;
        }
        while end > start {
            let Part::Text(t) = &parts[end - 1] else {
                break;
            };
            match rest.strip_suffix(t.as_str()) {
                Some(r) => rest = r,
                None => return Some(false),
            }
            end -= 1;
        }
        match &parts[start..end] {
            [] => Some(rest.is_empty()),
            [Part::Hash(h)] => Some(text_digest(rest) == *h),
            _ => None,
        }
    }
}

/// Appends `part` to `parts`, merging known texts.
fn push_part(parts: &mut Vec<Part>, part: Part) {
    match (parts.last_mut(), part) {
        (Some(Part::Text(last)), Part::Text(t)) => last.push_str(&t),
        (_, Part::Text(t)) if t.is_empty() => {}
        (Some(Part::Any), Part::Any) => {}
        (_, part) => parts.push(part),
    }
}

impl Value {
    /// Adds the hstore keys it reads to `keys`.
    fn keys(&self, keys: &mut BTreeSet<String>) {
        match self {
            Value::Unknown | Value::Column(_) | Value::Literal(_) | Value::Output(_) => {}
            Value::Key(_, key) => {
                keys.insert(key.clone());
            }
            Value::Concat(values) | Value::Coalesce(values) => {
                values.iter().for_each(|v| v.keys(keys));
            }
            Value::NullIf(a, b) => {
                a.keys(keys);
                b.keys(keys);
            }
            Value::Case(branches, otherwise) => {
                for (condition, value) in branches {
                    condition.keys(keys);
                    value.keys(keys);
                }
                otherwise.keys(keys);
            }
        }
    }

    /// The values it may have on `row` (never empty).
    fn possible(&self, row: &Row) -> Vec<Possible> {
        let values = match self {
            Value::Unknown => return anything(),
            Value::Output(i) => return row.outputs.get(*i).cloned().unwrap_or_else(anything),
            Value::Column(name) => match row.digest(name) {
                Some(Some(h)) => vec![Possible::Text(vec![Part::Hash(h)])],
                Some(None) => vec![Possible::Null],
                None => return anything(),
            },
            Value::Key(column, key) => match row.digest(&key_column(column, key)) {
                Some(Some(h)) => vec![Possible::Text(vec![Part::Hash(h)])],
                Some(None) => vec![Possible::Null],
                // No hash of the key: NULL only with the hstore.
                None => match row.digest(column) {
                    Some(None) => vec![Possible::Null],
                    _ => return anything(),
                },
            },
            Value::Literal(None) => vec![Possible::Null],
            Value::Literal(Some(text)) => vec![Possible::Text(vec![Part::Text(text.clone())])],
            Value::Concat(values) => {
                let mut texts: Vec<Vec<Part>> = vec![Vec::new()];
                let mut null = false;
                for value in values {
                    let mut next = Vec::new();
                    for possible in value.possible(row) {
                        match possible {
                            Possible::Null => null = true,
                            Possible::Text(parts) => {
                                for text in &texts {
                                    let mut joined = text.clone();
                                    for part in parts.iter().cloned() {
                                        push_part(&mut joined, part);
                                    }
                                    next.push(joined);
                                }
                            }
                        }
                    }
                    texts = next;
                    if texts.len() > MAX_POSSIBLE {
                        return anything();
                    }
                }
                let mut values: Vec<Possible> = texts.into_iter().map(Possible::Text).collect();
                if null {
                    values.push(Possible::Null);
                }
                values
            }
            Value::Coalesce(values) => {
                let mut out = Vec::new();
                let mut all_may_be_null = true;
                for value in values {
                    let possible = value.possible(row);
                    let may_be_null = possible.contains(&Possible::Null);
                    out.extend(possible.into_iter().filter(|p| *p != Possible::Null));
                    if !may_be_null {
                        all_may_be_null = false;
                        break;
                    }
                }
                if all_may_be_null {
                    out.push(Possible::Null);
                }
                out
            }
            Value::NullIf(value, _) => {
                // The comparison is not followed: `value`, or NULL.
                let mut out = value.possible(row);
                out.push(Possible::Null);
                out
            }
            Value::Case(branches, otherwise) => {
                let mut out = Vec::new();
                let mut decided = false;
                for (condition, value) in branches {
                    match condition.holds(row) {
                        Some(false) => continue,
                        Some(true) => {
                            out.extend(value.possible(row));
                            decided = true;
                            break;
                        }
                        None => out.extend(value.possible(row)),
                    }
                }
                if !decided {
                    out.extend(otherwise.possible(row));
                }
                out
            }
        };
        let mut unique: Vec<Possible> = Vec::with_capacity(values.len());
        for value in values {
            if !unique.contains(&value) {
                unique.push(value);
            }
        }
        if unique.len() > MAX_POSSIBLE {
            return anything();
        }
        unique
    }
}

/// Three-valued summary of a test over possible values: true when it
/// holds for all, false when for none.
fn all_or_none(results: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let (mut some_true, mut some_false) = (false, false);
    for result in results {
        match result {
            Some(true) => some_true = true,
            Some(false) => some_false = true,
            None => return None,
        }
    }
    match (some_true, some_false) {
        (true, false) => Some(true),
        (false, _) => Some(false),
        (true, true) => None,
    }
}

impl Condition {
    /// Whether it holds on `row`: `None` when that is not known.
    fn holds(&self, row: &Row) -> Option<bool> {
        match self {
            Condition::Unknown => None,
            Condition::All(parts) => {
                let mut known = true;
                for part in parts {
                    match part.holds(row) {
                        Some(false) => return Some(false),
                        Some(true) => {}
                        None => known = false,
                    }
                }
                known.then_some(true)
            }
            Condition::Any(parts) => {
                let mut known = true;
                for part in parts {
                    match part.holds(row) {
                        Some(true) => return Some(true),
                        Some(false) => {}
                        None => known = false,
                    }
                }
                known.then_some(false)
            }
            Condition::Not(inner) => inner.holds(row).map(|h| !h),
            Condition::IsNull(value) => all_or_none(
                value
                    .possible(row)
                    .iter()
                    .map(|p| Some(*p == Possible::Null)),
            ),
            Condition::OneOf(value, texts) => all_or_none(value.possible(row).iter().map(|p| {
                let mut unknown = false;
                for text in texts {
                    match p.equals(text) {
                        Some(true) => return Some(true),
                        Some(false) => {}
                        None => unknown = true,
                    }
                }
                (!unknown).then_some(false)
            })),
        }
    }

    /// Adds the hstore keys it reads to `keys`.
    fn keys(&self, keys: &mut BTreeSet<String>) {
        match self {
            Condition::Unknown => {}
            Condition::All(parts) | Condition::Any(parts) => {
                parts.iter().for_each(|p| p.keys(keys));
            }
            Condition::Not(inner) => inner.keys(keys),
            Condition::IsNull(value) | Condition::OneOf(value, _) => value.keys(keys),
        }
    }

    /// Whether it may hold on `row`.
    fn may_hold(&self, row: &Row) -> bool {
        self.holds(row) != Some(false)
    }
}

impl LayerReads {
    /// The zooms where the layer may draw one of `rows` (a table's rows
    /// of one object, with the table's `columns`): along one of the
    /// table's views, its `WHERE`s may hold and a rule active there may
    /// match. `None`: no view of the table is known.
    fn zooms_drawing(
        &self,
        table: &str,
        columns: &[String],
        rows: &[Vec<Option<i64>>],
    ) -> Option<ZoomMask> {
        let mut views = self.views.iter().filter(|v| v.table == table).peekable();
        views.peek()?;
        let mut mask = ZoomMask::NONE;
        for view in views {
            for digests in rows {
                let plain = Row {
                    columns,
                    digests,
                    outputs: &[],
                };
                if !view.condition.may_hold(&plain) {
                    continue;
                }
                if view.rules.is_empty() {
                    return Some(self.zooms);
                }
                let outputs: Vec<Vec<Possible>> =
                    view.outputs.iter().map(|v| v.possible(&plain)).collect();
                let row = Row {
                    outputs: &outputs,
                    ..plain
                };
                for (zooms, filter) in &view.rules {
                    // A rule adding no zoom need not be tested.
                    if zooms.0 & !mask.0 != 0 && filter.may_hold(&row) {
                        mask = mask.union(*zooms);
                    }
                }
            }
        }
        Some(ZoomMask(mask.0 & self.zooms.0))
    }
}

impl StyleReads {
    /// A style nothing is known about: every change expires every zoom.
    pub fn everything(style: &str) -> StyleReads {
        StyleReads {
            style: style.to_string(),
            layers: vec![LayerReads {
                name: "(unknown)".into(),
                tables: Reads::Everything,
                columns: Reads::Everything,
                zooms: ZoomMask::ALL,
                requires: Vec::new(),
                views: Vec::new(),
            }],
        }
    }

    /// The zooms at which a change of a `table` row can change this
    /// style's pictures: those of the layers reading the table that read
    /// a changed column (when known) and whose `WHERE` the row can meet.
    pub fn zooms_for(&self, table: &str, row: RowFacts) -> ZoomMask {
        let table = table.to_ascii_lowercase();
        self.layers
            .iter()
            .filter(|layer| layer.tables.includes(&table))
            .filter(|layer| match row.changed_columns {
                None => true,
                Some(columns) => columns.iter().any(|c| {
                    let c = c.to_ascii_lowercase();
                    layer.columns.includes(&c) || reads_unhashed_key(layer, &c, row.digests)
                }),
            })
            .filter(|layer| match row.null_columns {
                None => true,
                Some(null) => layer
                    .requires
                    .iter()
                    .all(|set| set.iter().any(|c| !null.iter().any(|n| n == c))),
            })
            .fold(ZoomMask::NONE, |mask, layer| {
                let zooms = match row.digests {
                    Some(d) if layer.tables != Reads::Everything => {
                        // Old and new rows: the layer may draw either.
                        match (
                            layer.zooms_drawing(&table, &d.columns, &d.old),
                            layer.zooms_drawing(&table, &d.columns, &d.new),
                        ) {
                            (Some(old), Some(new)) => old.union(new),
                            _ => layer.zooms,
                        }
                    }
                    _ => layer.zooms,
                };
                mask.union(zooms)
            })
    }

    /// The hstore keys (`tags->'golf'`) its layers' value conditions read:
    /// the apply stage hashes them on their own
    /// ([`crate::apply::append::Applier::with_digest_keys`]), so that
    /// they are known, not unknown.
    pub fn hstore_keys(&self) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for view in self.layers.iter().flat_map(|l| &l.views) {
            view.condition.keys(&mut keys);
            view.outputs.iter().for_each(|v| v.keys(&mut keys));
            for (_, filter) in &view.rules {
                filter.keys(&mut keys);
            }
        }
        keys
    }

    /// (understood, fell back) layer counts, for the start-up log.
    pub fn counts(&self) -> (usize, usize) {
        let understood = self.layers.iter().filter(|l| l.understood()).count();
        (understood, self.layers.len() - understood)
    }
}

/// Whether `layer` reads a key of the hstore `column` (`column->key`)
/// that the row's hashes do not hold: a change of the hstore may then be
/// a change of that key.
fn reads_unhashed_key(
    layer: &LayerReads,
    column: &str,
    digests: Option<&crate::apply::append::RowDigests>,
) -> bool {
    let Reads::Only(read) = &layer.columns else {
        return true;
    };
    let prefix = key_column(column, "");
    read.iter()
        .any(|name| name.starts_with(&prefix) && digests.is_none_or(|d| !d.columns.contains(name)))
}

/// What is known of a changed row besides its table.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowFacts<'a> {
    /// The columns that differ between old and new row, when the geometry
    /// is the same; `None`: the geometry changed or nothing is known, so
    /// every layer reading the table counts.
    pub changed_columns: Option<&'a [String]>,
    /// Columns NULL in the old and the new row; `None`: not known.
    pub null_columns: Option<&'a [String]>,
    /// The hashes of every old and new row's columns; `None`: not known,
    /// the layers' conditions and rule filters count as met.
    pub digests: Option<&'a crate::apply::append::RowDigests>,
}

/// One style's expired tiles: tile sets at the expiry max zoom, each
/// valid at the zooms of its mask. A metatile at zoom z is expired when a
/// set whose mask holds z has a descendant in it.
#[derive(Debug, Clone, Default)]
pub struct StyleTiles {
    groups: BTreeMap<ZoomMask, TileSet>,
}

impl StyleTiles {
    /// The tiles of zoom `zoom`'s sets, united, at the max zoom.
    pub fn tiles_at(&self, zoom: u8) -> Option<TileSet> {
        let mut sets = self.groups.iter().filter(|(m, _)| m.contains(zoom));
        let (_, first) = sets.next()?;
        let mut all = first.clone();
        for (_, set) in sets {
            all.union_with(set);
        }
        Some(all)
    }

    /// Expired metatiles at `zoom`.
    pub fn metatiles(&self, zoom: u8) -> Vec<Metatile> {
        self.tiles_at(zoom)
            .map(|t| t.metatiles(zoom).collect())
            .unwrap_or_default()
    }

    /// Tiles at the max zoom in all sets (a tile in two sets counts twice).
    pub fn len(&self) -> u64 {
        self.groups.values().map(TileSet::len).sum()
    }

    /// Whether no set holds a tile.
    pub fn is_empty(&self) -> bool {
        self.groups.values().all(TileSet::is_empty)
    }

    /// Serialised: per set its mask (u32 LE), zoom (u8), length (u32 LE)
    /// and [`TileSet::to_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (mask, set) in &self.groups {
            let bytes = set.to_bytes();
            out.extend_from_slice(&mask.0.to_le_bytes());
            out.push(set.zoom());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Reads what [`StyleTiles::to_bytes`] wrote.
    pub fn from_bytes(mut bytes: &[u8]) -> std::io::Result<StyleTiles> {
        let truncated = || std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated");
        let mut groups = BTreeMap::new();
        while !bytes.is_empty() {
            if bytes.len() < 9 {
                return Err(truncated());
            }
            let mask = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
            let zoom = bytes[4];
            let len = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes")) as usize;
            let rest = &bytes[9..];
            if rest.len() < len {
                return Err(truncated());
            }
            groups.insert(ZoomMask(mask), TileSet::from_bytes(zoom, &rest[..len])?);
            bytes = &rest[len..];
        }
        Ok(StyleTiles { groups })
    }
}

/// Per style, the tiles of one batch's changed rows.
pub type StylesTiles = BTreeMap<String, StyleTiles>;

/// Serialises per-style tile sets for the expire queue: per style its
/// name (u16 LE length, UTF-8), then its [`StyleTiles::to_bytes`] (u32 LE
/// length, bytes).
pub fn styles_to_bytes(styles: &StylesTiles) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, tiles) in styles {
        let bytes = tiles.to_bytes();
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Reads what [`styles_to_bytes`] wrote.
pub fn styles_from_bytes(mut bytes: &[u8]) -> std::io::Result<StylesTiles> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut styles = StylesTiles::new();
    while !bytes.is_empty() {
        let take = |bytes: &mut &[u8], n: usize| -> std::io::Result<Vec<u8>> {
            if bytes.len() < n {
                return Err(invalid("truncated"));
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Ok(head.to_vec())
        };
        let len = u16::from_le_bytes(take(&mut bytes, 2)?.try_into().expect("2 bytes"));
        let name = String::from_utf8(take(&mut bytes, usize::from(len))?)
            .map_err(|_| invalid("style name is not UTF-8"))?;
        let len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().expect("4 bytes"));
        let tiles = StyleTiles::from_bytes(&take(&mut bytes, len as usize)?)?;
        styles.insert(name, tiles);
    }
    Ok(styles)
}

/// Collects each style's tile sets. Each row is rasterised once, into a
/// scratch [`Expirer`] (which applies the per-geometry limit), and its
/// tiles are added to the set of every style's zoom mask for the row.
pub(crate) struct StyleExpirers<'a> {
    row: Expirer,
    max_tiles_overall: u64,
    styles: Vec<StyleSets<'a>>,
}

struct StyleSets<'a> {
    reads: &'a StyleReads,
    groups: BTreeMap<ZoomMask, TileSet>,
    /// Tiles in all groups (a tile in two groups counts twice), against
    /// `max_tiles_overall`.
    total: u64,
    /// Set once the overall limit was reached: the style then falls back
    /// to the batch's full set, which has every tile of its rows.
    full: bool,
}

impl<'a> StyleExpirers<'a> {
    pub(crate) fn new(
        raster: &RasterSettings,
        styles: &'a [StyleReads],
    ) -> Result<Self, ExpireError> {
        Ok(StyleExpirers {
            row: Expirer::new(raster.clone())?,
            max_tiles_overall: raster.max_tiles_overall,
            styles: styles
                .iter()
                .map(|reads| StyleSets {
                    reads,
                    groups: BTreeMap::new(),
                    total: 0,
                    full: false,
                })
                .collect(),
        })
    }

    /// Expires one row's old and new geometries for every style that
    /// draws `table` at some zoom.
    pub(crate) fn expire_row(
        &mut self,
        object: &dyn std::fmt::Display,
        table: &str,
        geometries: &[&[u8]],
        facts: RowFacts,
    ) -> Result<(), ExpireError> {
        let masks: Vec<ZoomMask> = self
            .styles
            .iter()
            .map(|s| s.reads.zooms_for(table, facts))
            .collect();
        if masks.iter().all(|m| m.is_empty()) {
            return Ok(());
        }
        self.row.expire_ewkb(object, geometries.iter().copied())?;
        let tiles = self.row.take_tiles();
        if tiles.is_empty() {
            return Ok(());
        }
        for (sets, mask) in self.styles.iter_mut().zip(masks) {
            if mask.is_empty() || sets.full {
                continue;
            }
            let new = sets
                .groups
                .get(&mask)
                .map_or(tiles.len(), |group| group.count_missing(&tiles));
            if sets.total + new > self.max_tiles_overall {
                tracing::warn!(
                    style = %sets.reads.style,
                    limit = self.max_tiles_overall,
                    "style-aware expiry: over {} tiles in this batch; the style gets every expired tile instead",
                    self.max_tiles_overall
                );
                sets.full = true;
                sets.groups.clear();
                continue;
            }
            sets.total += new;
            match sets.groups.entry(mask) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    e.get_mut().union_with(&tiles)
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(tiles.clone());
                }
            }
        }
        Ok(())
    }

    /// The styles' sets; styles over the overall limit are left out, so
    /// they act on the batch's full set.
    pub(crate) fn finish(self) -> StylesTiles {
        self.styles
            .into_iter()
            .filter(|sets| !sets.full)
            .map(|sets| {
                let groups = sets
                    .groups
                    .into_iter()
                    .filter(|(_, set)| !set.is_empty())
                    .collect();
                (sets.reads.style.clone(), StyleTiles { groups })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, tables: &[&str], columns: Option<&[&str]>, zooms: ZoomMask) -> LayerReads {
        let set = |names: &[&str]| Reads::Only(names.iter().map(|n| n.to_string()).collect());
        LayerReads {
            name: name.into(),
            tables: set(tables),
            columns: columns.map_or(Reads::Everything, set),
            zooms,
            requires: Vec::new(),
            views: Vec::new(),
        }
    }

    fn texts(t: &[&str]) -> BTreeSet<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    /// A polygon layer drawing buildings from z14 and `landuse IN
    /// ('forest', 'grass')` from z10, under `WHERE building IS NOT NULL
    /// OR landuse IS NOT NULL`.
    fn areas() -> StyleReads {
        let column = |c: &str| Value::Column(c.into());
        StyleReads {
            style: "areas".into(),
            layers: vec![LayerReads {
                views: vec![RowView {
                    table: "planet_osm_polygon".into(),
                    outputs: Vec::new(),
                    condition: Condition::Any(vec![
                        Condition::Not(Box::new(Condition::IsNull(column("building")))),
                        Condition::Not(Box::new(Condition::IsNull(column("landuse")))),
                    ]),
                    rules: vec![
                        (
                            ZoomMask::range(14, 31),
                            Condition::Not(Box::new(Condition::IsNull(column("building")))),
                        ),
                        (
                            ZoomMask::range(10, 31),
                            Condition::OneOf(column("landuse"), texts(&["forest", "grass"])),
                        ),
                    ],
                }],
                ..layer(
                    "areas",
                    &["planet_osm_polygon"],
                    Some(&["building", "landuse"]),
                    ZoomMask::range(10, 31),
                )
            }],
        }
    }

    fn digests(
        old: &[[Option<&str>; 3]],
        new: &[[Option<&str>; 3]],
    ) -> crate::apply::append::RowDigests {
        let rows = |rows: &[[Option<&str>; 3]]| {
            rows.iter()
                .map(|r| r.iter().map(|v| v.map(text_digest)).collect())
                .collect()
        };
        crate::apply::append::RowDigests {
            columns: vec!["building".into(), "landuse".into(), "name".into()],
            old: rows(old),
            new: rows(new),
        }
    }

    fn zooms(reads: &StyleReads, d: &crate::apply::append::RowDigests) -> ZoomMask {
        reads.zooms_for(
            "planet_osm_polygon",
            RowFacts {
                digests: Some(d),
                ..RowFacts::default()
            },
        )
    }

    #[test]
    fn value_conditions_limit_a_row_to_the_rules_that_match_it() {
        let reads = areas();
        // A new building: only where the building rule draws.
        let building = digests(&[], &[[Some("yes"), None, None]]);
        assert_eq!(zooms(&reads, &building), ZoomMask::range(14, 31));
        // Forest turned into meadow: drawn before, not after.
        let forest = digests(
            &[[None, Some("forest"), None]],
            &[[None, Some("meadow"), None]],
        );
        assert_eq!(zooms(&reads, &forest), ZoomMask::range(10, 31));
        // Meadow renamed: the WHERE holds, no rule matches.
        let meadow = digests(
            &[[None, Some("meadow"), Some("a")]],
            &[[None, Some("meadow"), Some("b")]],
        );
        assert_eq!(zooms(&reads, &meadow), ZoomMask::NONE);
        // Neither column: the WHERE fails.
        let other = digests(&[[None, None, Some("a")]], &[]);
        assert_eq!(zooms(&reads, &other), ZoomMask::NONE);
        // Without hashes, today's behaviour: the layer's zooms.
        assert_eq!(
            reads.zooms_for("planet_osm_polygon", RowFacts::default()),
            ZoomMask::range(10, 31)
        );
    }

    #[test]
    fn what_is_not_understood_may_hold() {
        let mut reads = areas();
        reads.layers[0].views[0].rules[0].1 = Condition::Unknown;
        let meadow = digests(&[[None, Some("meadow"), None]], &[]);
        assert_eq!(zooms(&reads, &meadow), ZoomMask::range(14, 31));
        // A CASE whose branch cannot be decided keeps both outcomes.
        let class = Value::Case(
            vec![
                (Condition::Unknown, Value::Literal(Some("big".into()))),
                (
                    Condition::OneOf(Value::Column("landuse".into()), texts(&["forest"])),
                    Value::Literal(Some("forest".into())),
                ),
            ],
            Box::new(Value::Literal(None)),
        );
        reads.layers[0].views[0].rules = vec![(
            ZoomMask::range(12, 31),
            Condition::OneOf(class, texts(&["big"])),
        )];
        let forest = digests(&[[None, Some("forest"), None]], &[]);
        assert_eq!(zooms(&reads, &forest), ZoomMask::range(12, 31));
        // A table without a view: the layer's zooms.
        reads.layers[0].views[0].table = "planet_osm_line".into();
        assert_eq!(zooms(&reads, &forest), ZoomMask::range(10, 31));
    }

    /// Whether `condition` holds on a row of `building, landuse, name,
    /// tags, tags->golf` (the hstore key's hash only when `golf` is
    /// `Some(Some(…))`).
    fn holds(
        condition: &Condition,
        values: [Option<&str>; 4],
        golf: Option<Option<&str>>,
    ) -> Option<bool> {
        let mut columns: Vec<String> = ["building", "landuse", "name", "tags"]
            .map(String::from)
            .into();
        let mut digests: Vec<Option<i64>> = values.iter().map(|v| v.map(text_digest)).collect();
        if let Some(golf) = golf {
            columns.push(key_column("tags", "golf"));
            digests.push(golf.map(text_digest));
        }
        condition.holds(&Row {
            columns: &columns,
            digests: &digests,
            outputs: &[],
        })
    }

    fn column(name: &str) -> Value {
        Value::Column(name.into())
    }

    fn text(t: &str) -> Value {
        Value::Literal(Some(t.into()))
    }

    #[test]
    fn concatenation_and_coalesce_follow_sql_null_semantics() {
        // ('landuse_' || CASE WHEN landuse IN ('forest', 'grass') THEN landuse END)
        let landuse = Value::Concat(vec![
            text("landuse_"),
            Value::Case(
                vec![(
                    Condition::OneOf(column("landuse"), texts(&["forest", "grass"])),
                    column("landuse"),
                )],
                Box::new(Value::Literal(None)),
            ),
        ]);
        let building = Value::Concat(vec![text("building_"), column("building")]);
        let feature = Value::Coalesce(vec![landuse.clone(), building]);
        let is = |t: &str| Condition::OneOf(feature.clone(), texts(&[t]));
        let forest = [None, Some("forest"), None, None];
        assert_eq!(holds(&is("landuse_forest"), forest, None), Some(true));
        assert_eq!(holds(&is("landuse_grass"), forest, None), Some(false));
        // 'x' || NULL is NULL: COALESCE goes on to the building.
        let house = [Some("house"), Some("meadow"), None, None];
        assert_eq!(holds(&is("landuse_meadow"), house, None), Some(false));
        assert_eq!(holds(&is("building_house"), house, None), Some(true));
        assert_eq!(holds(&is("building_yes"), house, None), Some(false));
        // Nothing at all: NULL.
        let none = [None, None, Some("x"), None];
        assert_eq!(
            holds(&Condition::IsNull(feature.clone()), none, None),
            Some(true)
        );
        assert_eq!(holds(&is("landuse_forest"), none, None), Some(false));
        // An unknown part: equal only where the known parts fit.
        let unknown = Value::Concat(vec![text("golf_"), Value::Unknown]);
        let golf = |t: &str| Condition::OneOf(unknown.clone(), texts(&[t]));
        assert_eq!(holds(&golf("landuse_forest"), none, None), Some(false));
        assert_eq!(holds(&golf("golf_tee"), none, None), None);
        // A known suffix and a hashed middle.
        let wrapped = Value::Concat(vec![text("<"), column("name"), text(">")]);
        let c = Condition::OneOf(wrapped, texts(&["<x>", "<y"]));
        assert_eq!(holds(&c, none, None), Some(true));
        // NULLIF may give NULL; an unknown value may be anything.
        let nullif = Value::NullIf(Box::new(column("name")), Box::new(text("x")));
        assert_eq!(holds(&Condition::IsNull(nullif), none, None), None);
        assert_eq!(holds(&Condition::IsNull(Value::Unknown), none, None), None);
    }

    #[test]
    fn hstore_keys_are_known_by_their_own_hash_or_a_null_hstore() {
        let golf = Value::Key("tags".into(), "golf".into());
        let not_null = Condition::Not(Box::new(Condition::IsNull(golf.clone())));
        let tagged = [Some("yes"), None, None, Some("\"source\"=>\"survey\"")];
        assert_eq!(holds(&not_null, tagged, None), None);
        assert_eq!(holds(&not_null, tagged, Some(None)), Some(false));
        assert_eq!(holds(&not_null, tagged, Some(Some("tee"))), Some(true));
        let untagged = [Some("yes"), None, None, None];
        assert_eq!(holds(&not_null, untagged, None), Some(false));
        let tee = Condition::OneOf(golf, texts(&["tee", "green"]));
        assert_eq!(holds(&tee, tagged, Some(Some("tee"))), Some(true));
        assert_eq!(holds(&tee, tagged, Some(Some("rough"))), Some(false));
    }

    #[test]
    fn an_hstore_change_counts_for_the_keys_a_layer_reads() {
        let golf = key_column("tags", "golf");
        let reads = StyleReads {
            style: "s".into(),
            layers: vec![layer(
                "golf",
                &["planet_osm_polygon"],
                Some(&["building", golf.as_str()]),
                ZoomMask::range(12, 31),
            )],
        };
        let hashed = crate::apply::append::RowDigests {
            columns: vec!["building".into(), "tags".into(), golf.clone()],
            old: vec![vec![None, Some(1), None]],
            new: vec![vec![None, Some(2), None]],
        };
        let zooms = |changed: &[String], digests| {
            reads.zooms_for(
                "planet_osm_polygon",
                RowFacts {
                    changed_columns: Some(changed),
                    null_columns: None,
                    digests,
                },
            )
        };
        // Another key of the hstore changed, golf's hash did not.
        let tags = ["tags".to_string()];
        assert_eq!(zooms(&tags, Some(&hashed)), ZoomMask::NONE);
        // Its hash changed.
        let both = ["tags".to_string(), golf.clone()];
        assert_eq!(zooms(&both, None), ZoomMask::range(12, 31));
        // No hash of the key: the hstore's change may be golf's.
        let unhashed = crate::apply::append::RowDigests {
            columns: vec!["building".into(), "tags".into()],
            old: vec![vec![None, Some(1)]],
            new: vec![vec![None, Some(2)]],
        };
        assert_eq!(zooms(&tags, Some(&unhashed)), ZoomMask::range(12, 31));
        assert_eq!(zooms(&tags, None), ZoomMask::range(12, 31));
    }

    #[test]
    fn zoom_masks() {
        assert_eq!(ZoomMask::range(0, 31), ZoomMask::ALL);
        assert_eq!(ZoomMask::range(3, 2), ZoomMask::NONE);
        let m = ZoomMask::range(10, 12);
        assert!(m.contains(10) && m.contains(12) && !m.contains(13) && !m.contains(9));
        assert_eq!(m.bounds(), Some((10, 12)));
        assert_eq!(m.to_string(), "z10-z12");
        assert_eq!(
            m.union(ZoomMask::range(14, 14)).to_string(),
            "z10,z11,z12,z14"
        );
    }

    #[test]
    fn zooms_follow_tables_and_columns() {
        let style = StyleReads {
            style: "s".into(),
            layers: vec![
                layer(
                    "buildings",
                    &["planet_osm_polygon"],
                    Some(&["building"]),
                    ZoomMask::range(14, 31),
                ),
                layer(
                    "landuse",
                    &["planet_osm_polygon"],
                    Some(&["landuse"]),
                    ZoomMask::range(10, 31),
                ),
                layer(
                    "roads",
                    &["planet_osm_line"],
                    Some(&["highway"]),
                    ZoomMask::range(13, 31),
                ),
            ],
        };
        assert_eq!(
            style.zooms_for("planet_osm_polygon", RowFacts::default()),
            ZoomMask::range(10, 31)
        );
        let building = ["building".to_string()];
        assert_eq!(
            style.zooms_for(
                "planet_osm_polygon",
                RowFacts {
                    changed_columns: Some(&building),
                    ..RowFacts::default()
                }
            ),
            ZoomMask::range(14, 31)
        );
        assert!(style
            .zooms_for("planet_osm_point", RowFacts::default())
            .is_empty());
        assert!(style
            .zooms_for(
                "planet_osm_line",
                RowFacts {
                    changed_columns: Some(&building),
                    ..RowFacts::default()
                }
            )
            .is_empty());
        assert_eq!(style.counts(), (3, 0));
        let unknown = StyleReads::everything("x");
        assert_eq!(
            unknown.zooms_for("anything", RowFacts::default()),
            ZoomMask::ALL
        );
        assert_eq!(unknown.counts(), (0, 1));
    }

    #[test]
    fn style_tiles_round_trip_and_select_by_zoom() {
        let mut low = TileSet::new(18);
        low.insert(1000, 1000);
        let mut high = TileSet::new(18);
        high.insert(5000, 5000);
        let tiles = StyleTiles {
            groups: [
                (ZoomMask::range(10, 18), low),
                (ZoomMask::range(14, 18), high),
            ]
            .into(),
        };
        assert_eq!(tiles.metatiles(12).len(), 1);
        assert_eq!(tiles.metatiles(14).len(), 2);
        assert!(tiles.metatiles(9).is_empty());
        let back = StyleTiles::from_bytes(&tiles.to_bytes()).unwrap();
        assert_eq!(back.metatiles(14), tiles.metatiles(14));
        assert_eq!(back.len(), 2);
        assert!(StyleTiles::from_bytes(&[1, 2, 3]).is_err());
        let styles: StylesTiles = [
            ("a".to_string(), tiles),
            ("b".into(), StyleTiles::default()),
        ]
        .into();
        let back = styles_from_bytes(&styles_to_bytes(&styles)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back["a"].metatiles(14), styles["a"].metatiles(14));
        assert!(back["b"].is_empty());
    }
}
