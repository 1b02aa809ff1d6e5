//! The value conditions of a style layer, for style-aware expiry: what its
//! SQL's `WHERE`s and its rules' `Filter`s need of a row's values, so that
//! a building row expires only at the zooms where a rule that can match a
//! building draws.
//!
//! The layer's SQL is read as a query of `SELECT`s, each reading one
//! table or one subquery in its `FROM`, joined by `UNION [ALL]`. For
//! every table, each way its rows reach the output (one per `UNION`
//! branch reading it) is a [`RowView`]: the `WHERE`s along the way and
//! the output columns, every name resolved in its own scope (an outer
//! `landuse` is the inner `SELECT`'s `… AS landuse`, not the table's
//! column; a `UNION`'s columns are named by its first branch, by
//! position), so that an output column becomes an expression over the
//! table's columns. openstreetmap-carto builds its `feature` column that
//! way: `('landuse_' || CASE WHEN landuse IN (…) THEN landuse END) AS
//! landuse` in a subquery, `COALESCE(…, landuse, …) AS feature` outside,
//! and rules `[feature] = 'landuse_forest'`.
//!
//! Understood expressions: columns, `hstore -> 'key'`, text literals and
//! NULL, casts to `text`, `||`, `CASE WHEN … THEN … [ELSE …] END`,
//! `COALESCE`, `NULLIF`; conditions: `AND`, `OR`, `NOT`, `IS [NOT] NULL`,
//! `=`, `<>`, `!=`, `[NOT] IN (…)` against texts. Mapnik filters: `[name]`
//! compared with a text or `null` (`=`, `!=`, `<>`) under `and`, `or`,
//! `not` (Mapnik's `expression_grammar`). Everything else is
//! [`Condition::Unknown`] or [`Value::Unknown`]: it may hold, or be any
//! text, so what is not understood keeps the layer's zooms. SQL whose row
//! flow is not a chain of `SELECT`s (joins, `FROM` lists, `DISTINCT`,
//! aggregates, `LIMIT`, subqueries reading tables outside `FROM`) has no
//! views at all.

use super::style_reads::{strip_parens, Token, KEYWORDS};
use crate::expire::style_aware::{Condition, Value};
use std::collections::BTreeSet;

/// Words that make the SQL's row flow too hard to follow anywhere.
const NOT_A_CHAIN: &[&str] = &["join", "lateral", "with", "over", "window", "recursive"];

/// Words that end a `SELECT`'s `WHERE` at its level.
const CONDITION_ENDS: &[&str] = &[
    "group", "order", "limit", "offset", "having", "window", "fetch", "for",
];

/// Clause words after which a `SELECT`'s output depends on other rows.
const OTHER_ROWS: &[&str] = &["group", "having", "limit", "offset", "fetch", "window"];

/// The output columns of a query, in order, as expressions over the
/// columns of the table its rows come from.
#[derive(Debug, Clone, Default)]
struct Outputs {
    columns: Vec<(String, Value)>,
    /// `SELECT *` straight from the table: every other name is the
    /// table's column of that name.
    table_star: bool,
}

impl Outputs {
    /// What `name` (lower case) means to a reader of this query.
    fn get(&self, name: &str) -> Value {
        let mut found = self.columns.iter().filter(|(n, _)| n == name);
        match (found.next(), found.next()) {
            (Some((_, value)), None) => value.clone(),
            // Named twice: which one is not known.
            (Some(_), Some(_)) => Value::Unknown,
            (None, _) if self.table_star => Value::Column(name.to_string()),
            (None, _) => Value::Unknown,
        }
    }
}

/// One way a table's rows reach a query's output.
#[derive(Debug, Clone)]
pub(crate) struct SqlView {
    /// The table, lower case, without schema.
    pub(crate) table: String,
    /// Its `WHERE`s along the way, over the table's columns.
    pub(crate) condition: Condition,
    outputs: Outputs,
}

impl SqlView {
    /// The view of a bare table name: every column by its name.
    pub(crate) fn table(table: &str) -> SqlView {
        SqlView {
            table: table.to_ascii_lowercase(),
            condition: Condition::All(Vec::new()),
            outputs: Outputs {
                columns: Vec::new(),
                table_star: true,
            },
        }
    }

    /// The value a Mapnik attribute `[name]` of the layer's rows has.
    #[cfg(test)]
    pub(crate) fn attribute(&self, name: &str) -> Value {
        self.outputs.get(&name.to_ascii_lowercase())
    }
}

/// The views of a layer's SQL (a `(SELECT …) AS x` subquery); `None`
/// when its row flow is not followed.
pub(crate) fn sql_views(tokens: &[Token]) -> Option<Vec<SqlView>> {
    if tokens
        .iter()
        .any(|t| matches!(t, Token::Word(w) if NOT_A_CHAIN.contains(&w.as_str())))
    {
        return None;
    }
    // `(SELECT …) AS name`: the query inside the parentheses.
    let inner = match tokens {
        [Token::Symbol('('), rest @ ..] => {
            let close = closing(tokens, 0)?;
            if !matches!(
                &tokens[close + 1..],
                [] | [Token::Word(_) | Token::Quoted(_)]
                    | [Token::Word(_), Token::Word(_) | Token::Quoted(_)]
            ) {
                return None;
            }
            &rest[..close - 1]
        }
        _ => return None,
    };
    query(inner)
}

/// The index of the parenthesis closing the one at `open`.
fn closing(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether `tokens[i]` lies outside parentheses (and `CASE … END`).
fn top_level(tokens: &[Token]) -> Vec<bool> {
    let mut depth = 0i32;
    tokens
        .iter()
        .map(|token| {
            let before = depth;
            match token {
                Token::Symbol('(') => depth += 1,
                Token::Symbol(')') => depth -= 1,
                Token::Word(w) if w == "case" => depth += 1,
                Token::Word(w) if w == "end" => depth -= 1,
                _ => {}
            }
            before == 0 && depth == 0
        })
        .collect()
}

/// A query: `SELECT`s joined by `UNION [ALL]`, perhaps in parentheses,
/// with a trailing `ORDER BY`.
fn query(tokens: &[Token]) -> Option<Vec<SqlView>> {
    let tokens = strip_parens(tokens);
    let top = top_level(tokens);
    let mut branches = Vec::new();
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        if !top[i] {
            continue;
        }
        match token {
            Token::Word(w) if w == "union" => {
                branches.push(&tokens[start..i]);
                start = i + 1;
                if matches!(tokens.get(start), Some(Token::Word(w)) if w == "all") {
                    start += 1;
                }
            }
            // INTERSECT and EXCEPT drop rows for other rows.
            Token::Word(w) if w == "intersect" || w == "except" => return None,
            _ => {}
        }
    }
    branches.push(&tokens[start..]);
    let union = branches.len() > 1;
    let mut views = Vec::new();
    let mut names: Option<Vec<String>> = None;
    for branch in branches {
        let branch_views = select(strip_parens(branch))?;
        for mut view in branch_views {
            if view.outputs.table_star && union {
                return None;
            }
            // A UNION's columns are named by its first branch.
            match &names {
                None => {
                    names = Some(
                        view.outputs
                            .columns
                            .iter()
                            .map(|(n, _)| n.clone())
                            .collect(),
                    )
                }
                Some(names) => {
                    if names.len() != view.outputs.columns.len() {
                        return None;
                    }
                    for ((name, _), first) in view.outputs.columns.iter_mut().zip(names) {
                        name.clone_from(first);
                    }
                }
            }
            views.push(view);
        }
        // A branch with no view cannot name the columns.
        names.as_ref()?;
    }
    Some(views)
}

/// One `SELECT list FROM item [WHERE condition] [ORDER BY …]`.
fn select(tokens: &[Token]) -> Option<Vec<SqlView>> {
    let [Token::Word(s), rest @ ..] = tokens else {
        return None;
    };
    if s != "select" {
        return None;
    }
    let top = top_level(rest);
    let at = |word: &str| {
        rest.iter()
            .enumerate()
            .position(|(i, t)| top[i] && matches!(t, Token::Word(w) if w == word))
    };
    if matches!(rest.first(), Some(Token::Word(w)) if w == "distinct") {
        return None;
    }
    let from = at("from")?;
    let where_at = at("where");
    let mut end = rest.len();
    for (i, token) in rest.iter().enumerate().skip(from) {
        if let Token::Word(w) = token {
            if top[i] && OTHER_ROWS.contains(&w.as_str()) {
                return None;
            }
            if top[i] && CONDITION_ENDS.contains(&w.as_str()) {
                end = end.min(i);
            }
        }
    }
    let from_end = where_at.unwrap_or(end).min(end);
    let inputs = from_item(&rest[from + 1..from_end])?;
    let list = &rest[..from];
    let condition = where_at.map(|w| &rest[w + 1..end]);
    if !local_expressions(list) || !condition.is_none_or(local_expressions) {
        return None;
    }
    let mut views = Vec::new();
    for input in inputs {
        let mut outputs = Outputs::default();
        for item in split_commas(list) {
            match item {
                [Token::Symbol('*')] => {
                    outputs
                        .columns
                        .extend(input.outputs.columns.iter().cloned());
                    outputs.table_star |= input.outputs.table_star;
                }
                [.., Token::Symbol('.'), Token::Symbol('*')] => return None,
                _ => {
                    let (name, value) = select_item(item);
                    outputs
                        .columns
                        .push((name, resolve(&value, &input.outputs)));
                }
            }
        }
        let mut conditions = vec![input.condition.clone()];
        if let Some(condition) = condition {
            conditions.push(resolve_condition(
                &parse_condition(condition),
                &input.outputs,
            ));
        }
        views.push(SqlView {
            table: input.table.clone(),
            condition: Condition::All(conditions),
            outputs,
        });
    }
    Some(views)
}

/// Whether the subqueries among `tokens` (outside `FROM`: scalar
/// subqueries, `EXISTS`, `IN (SELECT …)`) read no table: one reading a
/// table makes a row's output depend on other rows.
fn local_expressions(tokens: &[Token]) -> bool {
    tokens.iter().enumerate().all(|(i, t)| match t {
        // `FROM function(…)` reads no table; anything else may.
        Token::Word(w) if w == "from" => {
            matches!(tokens.get(i + 1), Some(Token::Word(f)) if f.starts_with("st_") || f == "unnest")
                && matches!(tokens.get(i + 2), Some(Token::Symbol('(')))
        }
        _ => true,
    })
}

/// The `FROM` item: a table (`[schema.]name [[AS] alias]`) or a
/// parenthesised query with an alias.
fn from_item(tokens: &[Token]) -> Option<Vec<SqlView>> {
    let top = top_level(tokens);
    if tokens
        .iter()
        .enumerate()
        .any(|(i, t)| top[i] && *t == Token::Symbol(','))
    {
        return None;
    }
    if let [Token::Symbol('('), ..] = tokens {
        let close = closing(tokens, 0)?;
        let alias = &tokens[close + 1..];
        let alias_ok = matches!(
            alias,
            [] | [Token::Word(_) | Token::Quoted(_)]
                | [Token::Word(_), Token::Word(_) | Token::Quoted(_)]
        );
        if !alias_ok {
            return None;
        }
        return query(&tokens[1..close]);
    }
    // A table: the last name of `schema.name`, before an alias.
    let mut k = 0;
    while matches!(tokens.get(k + 1), Some(Token::Symbol('.'))) {
        k += 2;
    }
    let name = match tokens.get(k) {
        Some(Token::Word(w)) if !KEYWORDS.contains(&w.as_str()) => w.clone(),
        Some(Token::Quoted(q)) => q.to_ascii_lowercase(),
        _ => return None,
    };
    let alias = &tokens[k + 1..];
    let alias_ok = matches!(
        alias,
        [] | [Token::Word(_) | Token::Quoted(_)]
            | [Token::Word(_), Token::Word(_) | Token::Quoted(_)]
    );
    alias_ok.then(|| vec![SqlView::table(&name)])
}

/// Splits at commas outside parentheses and `CASE … END`.
fn split_commas(tokens: &[Token]) -> Vec<&[Token]> {
    split_level(tokens, |t| *t == Token::Symbol(','))
}

fn split_level(tokens: &[Token], at: impl Fn(&Token) -> bool) -> Vec<&[Token]> {
    let top = top_level(tokens);
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        if top[i] && at(token) {
            parts.push(&tokens[start..i]);
            start = i + 1;
        }
    }
    parts.push(&tokens[start..]);
    parts
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w == word)
}

/// One item of a select list: its output name and expression (over the
/// names of its `FROM`). An unnamed expression is PostgreSQL's
/// `?column?`: it still holds its place in a `UNION`.
fn select_item(item: &[Token]) -> (String, Value) {
    match item {
        [expr @ .., a, Token::Word(n) | Token::Quoted(n)] if is_word(a, "as") => {
            (n.to_ascii_lowercase(), parse_value(expr))
        }
        // A column, `t.column`.
        [Token::Word(_) | Token::Quoted(_)]
        | [Token::Word(_) | Token::Quoted(_), Token::Symbol('.'), Token::Word(_) | Token::Quoted(_)] => {
            match parse_value(item) {
                Value::Column(name) => (name.clone(), Value::Column(name)),
                other => (UNNAMED.into(), other),
            }
        }
        // `expr name` without AS: the name, its value not followed.
        [.., before, Token::Word(n)]
            if !KEYWORDS.contains(&n.as_str()) && !matches!(before, Token::Symbol('.' | ':')) =>
        {
            (n.clone(), Value::Unknown)
        }
        _ => (UNNAMED.into(), parse_value(item)),
    }
}

/// PostgreSQL's name for an output column nobody named.
const UNNAMED: &str = "?column?";

/// Replaces the names a value reads by what they are in `scope`.
fn resolve(value: &Value, scope: &Outputs) -> Value {
    let all = |values: &[Value]| values.iter().map(|v| resolve(v, scope)).collect();
    match value {
        Value::Column(name) => scope.get(name),
        Value::Key(column, key) => match scope.get(column) {
            Value::Column(table_column) => Value::Key(table_column, key.clone()),
            _ => Value::Unknown,
        },
        Value::Unknown | Value::Literal(_) | Value::Output(_) => value.clone(),
        Value::Concat(parts) => Value::Concat(all(parts)),
        Value::Coalesce(parts) => Value::Coalesce(all(parts)),
        Value::NullIf(a, b) => {
            Value::NullIf(Box::new(resolve(a, scope)), Box::new(resolve(b, scope)))
        }
        Value::Case(branches, otherwise) => Value::Case(
            branches
                .iter()
                .map(|(c, v)| (resolve_condition(c, scope), resolve(v, scope)))
                .collect(),
            Box::new(resolve(otherwise, scope)),
        ),
    }
}

fn resolve_condition(condition: &Condition, scope: &Outputs) -> Condition {
    let each = |parts: &[Condition]| -> Vec<Condition> {
        parts.iter().map(|p| resolve_condition(p, scope)).collect()
    };
    match condition {
        Condition::Unknown => Condition::Unknown,
        Condition::All(parts) => Condition::All(each(parts)),
        Condition::Any(parts) => Condition::Any(each(parts)),
        Condition::Not(inner) => Condition::Not(Box::new(resolve_condition(inner, scope))),
        Condition::IsNull(v) => Condition::IsNull(resolve(v, scope)),
        Condition::OneOf(v, texts) => Condition::OneOf(resolve(v, scope), texts.clone()),
    }
}

/// Resolves a rule's filter (over the layer's output names) for `view`:
/// each attribute becomes [`Value::Output`], an index into `outputs`
/// (the attributes' expressions, added as first met), so that a row's
/// `[feature]` is computed once for all the rules testing it.
pub(crate) fn filter_for_view(
    filter: &Condition,
    view: &SqlView,
    outputs: &mut Vec<(String, Value)>,
) -> Condition {
    let output = |value: &Value, outputs: &mut Vec<(String, Value)>| match value {
        Value::Column(name) => {
            let index = match outputs.iter().position(|(n, _)| n == name) {
                Some(index) => index,
                None => {
                    outputs.push((name.clone(), view.outputs.get(name)));
                    outputs.len() - 1
                }
            };
            Value::Output(index)
        }
        // Filters compare attributes only.
        other => other.clone(),
    };
    match filter {
        Condition::Unknown => Condition::Unknown,
        Condition::All(parts) => Condition::All(
            parts
                .iter()
                .map(|p| filter_for_view(p, view, outputs))
                .collect(),
        ),
        Condition::Any(parts) => Condition::Any(
            parts
                .iter()
                .map(|p| filter_for_view(p, view, outputs))
                .collect(),
        ),
        Condition::Not(inner) => Condition::Not(Box::new(filter_for_view(inner, view, outputs))),
        Condition::IsNull(v) => Condition::IsNull(output(v, outputs)),
        Condition::OneOf(v, texts) => Condition::OneOf(output(v, outputs), texts.clone()),
    }
}

/// Cast targets that keep a text as it is.
const TEXT_TYPES: &[&str] = &["text", "varchar"];

/// A value expression (names not resolved yet).
fn parse_value(tokens: &[Token]) -> Value {
    let tokens = strip_parens(tokens);
    // `a || b`: two adjacent `|` outside parentheses.
    let top = top_level(tokens);
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < tokens.len() {
        if top[i] && tokens[i] == Token::Symbol('|') && tokens[i + 1] == Token::Symbol('|') {
            parts.push(&tokens[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if !parts.is_empty() {
        parts.push(&tokens[start..]);
        return Value::Concat(parts.into_iter().map(parse_value).collect());
    }
    // A cast at the end: `x::text`.
    if let [value @ .., Token::Symbol(':'), Token::Word(t)] = tokens {
        if !value.is_empty() && top[value.len()] {
            return if TEXT_TYPES.contains(&t.as_str()) {
                parse_value(value)
            } else {
                Value::Unknown
            };
        }
    }
    match tokens {
        [Token::Word(w)] if w == "null" => Value::Literal(None),
        [Token::Literal(text)] => Value::Literal(Some(text.clone())),
        [Token::Word(w)] if !KEYWORDS.contains(&w.as_str()) => Value::Column(w.clone()),
        [Token::Quoted(q)] => Value::Column(q.to_ascii_lowercase()),
        [Token::Word(_) | Token::Quoted(_), Token::Symbol('.'), Token::Word(w)] => {
            Value::Column(w.clone())
        }
        [Token::Word(_) | Token::Quoted(_), Token::Symbol('.'), Token::Quoted(q)] => {
            Value::Column(q.to_ascii_lowercase())
        }
        // hstore `->` with a text key.
        [column @ .., Token::Symbol('-'), Token::Symbol('>'), Token::Literal(key)] => {
            match parse_value(column) {
                Value::Column(name) => Value::Key(name, key.clone()),
                _ => Value::Unknown,
            }
        }
        [Token::Word(c), Token::Word(w), inner @ .., Token::Word(e)]
            if c == "case" && w == "when" && e == "end" =>
        {
            parse_case(inner)
        }
        [Token::Word(f), Token::Symbol('('), args @ .., Token::Symbol(')')]
            if closing(&tokens[1..], 0) == Some(tokens.len() - 2) =>
        {
            let args: Vec<Value> = split_commas(args).into_iter().map(parse_value).collect();
            match (f.as_str(), args.as_slice()) {
                ("coalesce", [_, ..]) => Value::Coalesce(args),
                ("nullif", [a, b]) => Value::NullIf(Box::new(a.clone()), Box::new(b.clone())),
                _ => Value::Unknown,
            }
        }
        _ => Value::Unknown,
    }
}

/// The inside of `CASE WHEN … END` after the first WHEN.
fn parse_case(tokens: &[Token]) -> Value {
    let whens = split_level(tokens, |t| is_word(t, "when"));
    let mut branches = Vec::new();
    let mut otherwise = Value::Literal(None);
    let count = whens.len();
    for (i, when) in whens.into_iter().enumerate() {
        let parts = split_level(when, |t| is_word(t, "then"));
        let [condition, result] = parts.as_slice() else {
            return Value::Unknown;
        };
        let result = if i + 1 == count {
            match split_level(result, |t| is_word(t, "else")).as_slice() {
                [result] => parse_value(result),
                [result, other] => {
                    otherwise = parse_value(other);
                    parse_value(result)
                }
                _ => return Value::Unknown,
            }
        } else {
            parse_value(result)
        };
        branches.push((parse_condition(condition), result));
    }
    Value::Case(branches, Box::new(otherwise))
}

/// A SQL condition (names not resolved yet).
fn parse_condition(tokens: &[Token]) -> Condition {
    let tokens = strip_parens(tokens);
    if tokens.is_empty() {
        return Condition::Unknown;
    }
    let alternatives = split_level(tokens, |t| is_word(t, "or"));
    if alternatives.len() > 1 {
        return Condition::Any(alternatives.into_iter().map(parse_condition).collect());
    }
    // `BETWEEN x AND y` hides an AND that is no conjunction.
    let top = top_level(tokens);
    if tokens
        .iter()
        .enumerate()
        .any(|(i, t)| top[i] && is_word(t, "between"))
    {
        return Condition::Unknown;
    }
    let conjuncts = split_level(tokens, |t| is_word(t, "and"));
    if conjuncts.len() > 1 {
        return Condition::All(conjuncts.into_iter().map(parse_condition).collect());
    }
    if let [Token::Word(n), rest @ ..] = tokens {
        if n == "not" {
            return sql_not(parse_condition(rest));
        }
    }
    parse_atom(tokens)
}

/// SQL's `NOT c`, true only where `c` is false: a comparison with NULL is
/// neither (`NOT x = 'a'` is not true for a NULL `x`), while
/// [`Condition::Not`] of a comparison would be. The negation is pushed
/// down to the comparisons (De Morgan holds in three-valued logic), each
/// negated comparison requiring its value not NULL.
fn sql_not(condition: Condition) -> Condition {
    match condition {
        Condition::Unknown => Condition::Unknown,
        Condition::All(parts) => Condition::Any(parts.into_iter().map(sql_not).collect()),
        Condition::Any(parts) => Condition::All(parts.into_iter().map(sql_not).collect()),
        Condition::Not(inner) => *inner,
        Condition::IsNull(value) => Condition::Not(Box::new(Condition::IsNull(value))),
        Condition::OneOf(value, texts) => Condition::All(vec![
            Condition::Not(Box::new(Condition::IsNull(value.clone()))),
            Condition::Not(Box::new(Condition::OneOf(value, texts))),
        ]),
    }
}

/// One comparison: `value IS [NOT] NULL`, `value = 'text'`, `value <>
/// 'text'`, `value [NOT] IN ('a', …)`; the value any expression.
fn parse_atom(tokens: &[Token]) -> Condition {
    let top = top_level(tokens);
    // The first operator outside parentheses.
    let Some(op) = tokens.iter().enumerate().position(|(i, t)| {
        top[i]
            && match t {
                // `->` is hstore's, no comparison.
                Token::Symbol('>') => i == 0 || tokens[i - 1] != Token::Symbol('-'),
                Token::Symbol(c) => "=<!~?@&".contains(*c),
                Token::Word(w) => {
                    ["is", "in", "not", "like", "ilike", "similar"].contains(&w.as_str())
                }
                _ => false,
            }
    }) else {
        return Condition::Unknown;
    };
    let value = parse_value(&tokens[..op]);
    let rest = &tokens[op..];
    let is = |t: &Token, w: &str| is_word(t, w);
    match rest {
        [a, b] if is(a, "is") && is(b, "null") => Condition::IsNull(value),
        [a, b, c] if is(a, "is") && is(b, "not") && is(c, "null") => {
            Condition::Not(Box::new(Condition::IsNull(value)))
        }
        [Token::Symbol('='), other @ ..] => match parse_value(other) {
            Value::Literal(Some(text)) => Condition::OneOf(value, BTreeSet::from([text])),
            _ => Condition::Unknown,
        },
        [Token::Symbol('<'), Token::Symbol('>'), other @ ..]
        | [Token::Symbol('!'), Token::Symbol('='), other @ ..] => match parse_value(other) {
            // `col <> 'x'` is not true for NULL either.
            Value::Literal(Some(text)) => Condition::All(vec![
                Condition::Not(Box::new(Condition::IsNull(value.clone()))),
                Condition::Not(Box::new(Condition::OneOf(value, BTreeSet::from([text])))),
            ]),
            _ => Condition::Unknown,
        },
        [a, list @ ..] if is(a, "in") => match literal_list(list) {
            Some(texts) => Condition::OneOf(value, texts),
            None => Condition::Unknown,
        },
        [n, a, list @ ..] if is(n, "not") && is(a, "in") => match literal_list(list) {
            Some(texts) => Condition::All(vec![
                Condition::Not(Box::new(Condition::IsNull(value.clone()))),
                Condition::Not(Box::new(Condition::OneOf(value, texts))),
            ]),
            None => Condition::Unknown,
        },
        _ => Condition::Unknown,
    }
}

/// `('a', 'b')`: its texts.
fn literal_list(tokens: &[Token]) -> Option<BTreeSet<String>> {
    let [Token::Symbol('('), inner @ .., Token::Symbol(')')] = tokens else {
        return None;
    };
    let mut texts = BTreeSet::new();
    for (i, token) in inner.iter().enumerate() {
        match (i % 2, token) {
            (0, Token::Literal(text)) => {
                texts.insert(text.clone());
            }
            (1, Token::Symbol(',')) => {}
            _ => return None,
        }
    }
    (!texts.is_empty() && inner.len() % 2 == 1).then_some(texts)
}

/// A token of a Mapnik filter expression.
#[derive(Debug, Clone, PartialEq)]
enum FilterToken {
    Attribute(String),
    Text(String),
    Number,
    Word(String),
    Symbol(String),
}

fn filter_tokens(filter: &str) -> Option<Vec<FilterToken>> {
    let chars: Vec<char> = filter.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '[' {
            let end = i + chars[i..].iter().position(|&c| c == ']')?;
            tokens.push(FilterToken::Attribute(chars[i + 1..end].iter().collect()));
            i = end + 1;
        } else if c == '\'' || c == '"' {
            let end = i + 1 + chars[i + 1..].iter().position(|&q| q == c)?;
            tokens.push(FilterToken::Text(chars[i + 1..end].iter().collect()));
            i = end + 1;
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(FilterToken::Number);
        } else if c.is_alphabetic() {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(FilterToken::Word(word.to_ascii_lowercase()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["!=", "<>", "<=", ">=", "&&", "||", "=="].contains(&two.as_str()) {
                tokens.push(FilterToken::Symbol(two));
                i += 2;
            } else {
                tokens.push(FilterToken::Symbol(c.to_string()));
                i += 1;
            }
        }
    }
    Some(tokens)
}

/// A rule's `Filter` over the layer's output columns (to be resolved per
/// view by [`filter_for_view`]); [`Condition::Unknown`] when any part of
/// it is not understood.
pub(crate) fn filter_condition(filter: &str) -> Condition {
    let Some(tokens) = filter_tokens(filter) else {
        return Condition::Unknown;
    };
    let mut parser = FilterParser {
        tokens: &tokens,
        at: 0,
    };
    match parser.or() {
        Some(condition) if parser.at == tokens.len() => condition,
        _ => Condition::Unknown,
    }
}

struct FilterParser<'a> {
    tokens: &'a [FilterToken],
    at: usize,
}

impl FilterParser<'_> {
    fn peek(&self) -> Option<&FilterToken> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, words: &[&str]) -> bool {
        let hit = match self.peek() {
            Some(FilterToken::Word(w)) | Some(FilterToken::Symbol(w)) => {
                words.contains(&w.as_str())
            }
            _ => false,
        };
        if hit {
            self.at += 1;
        }
        hit
    }

    fn or(&mut self) -> Option<Condition> {
        let mut parts = vec![self.and()?];
        while self.eat(&["or", "||"]) {
            parts.push(self.and()?);
        }
        Some(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::Any(parts)
        })
    }

    fn and(&mut self) -> Option<Condition> {
        let mut parts = vec![self.not()?];
        while self.eat(&["and", "&&"]) {
            parts.push(self.not()?);
        }
        Some(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::All(parts)
        })
    }

    fn not(&mut self) -> Option<Condition> {
        if self.eat(&["not", "!"]) {
            return Some(Condition::Not(Box::new(self.not()?)));
        }
        if self.eat(&["("]) {
            let inner = self.or()?;
            return self.eat(&[")"]).then_some(inner);
        }
        self.comparison()
    }

    fn operand(&mut self) -> Option<FilterToken> {
        let token = self.peek()?.clone();
        match &token {
            FilterToken::Attribute(_) | FilterToken::Text(_) | FilterToken::Number => {}
            FilterToken::Word(w) if w == "null" || w == "true" || w == "false" => {}
            _ => return None,
        }
        self.at += 1;
        Some(token)
    }

    fn comparison(&mut self) -> Option<Condition> {
        let left = self.operand()?;
        let op = match self.peek() {
            Some(FilterToken::Symbol(s))
                if ["=", "==", "!=", "<>", "<", ">", "<=", ">="].contains(&s.as_str()) =>
            {
                s.clone()
            }
            Some(FilterToken::Word(w))
                if ["eq", "neq", "lt", "gt", "le", "ge"].contains(&w.as_str()) =>
            {
                w.clone()
            }
            // A lone attribute or value: truthiness, not understood.
            _ => return Some(Condition::Unknown),
        };
        self.at += 1;
        let right = self.operand()?;
        let (attribute, other) = match (left, right) {
            (FilterToken::Attribute(a), other) | (other, FilterToken::Attribute(a)) => (a, other),
            _ => return Some(Condition::Unknown),
        };
        let value = Value::Column(attribute.to_ascii_lowercase());
        let equal = match other {
            FilterToken::Text(text) => Condition::OneOf(value, BTreeSet::from([text])),
            FilterToken::Word(w) if w == "null" => Condition::IsNull(value),
            _ => return Some(Condition::Unknown),
        };
        Some(match op.as_str() {
            "=" | "==" | "eq" => equal,
            "!=" | "<>" | "neq" => Condition::Not(Box::new(equal)),
            _ => Condition::Unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::style_reads::{analyse_style, tokenize};
    use super::*;
    use crate::apply::append::RowDigests;
    use crate::expire::style_aware::{text_digest, RowFacts, StyleReads, ZoomMask};

    fn texts(t: &[&str]) -> BTreeSet<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn text_digest_is_postgresql_hashtextextended() {
        // `SELECT x, hashtextextended(x, 0)` on PostgreSQL 15.
        for (text, digest) in [
            ("", -6939563903564495251i64),
            ("a", 3591986179850072241),
            ("yes", 7369674672469380637),
            ("residential", -6183673881891160426),
            ("motorway_link", -5696352162016100345),
            ("abcdefghijkl", -7556637188122330412),
            ("abcdefghijklm", 8871624171452417744),
            ("grass", -1748378128072987314),
            ("Ä", 4701030884443943021),
            ("bus_stop_x", 7316439129897729777),
        ] {
            assert_eq!(text_digest(text), digest, "{text:?}");
        }
    }

    fn views(sql: &str) -> Option<Vec<SqlView>> {
        sql_views(&tokenize(sql))
    }

    #[test]
    fn where_and_case_aliases_are_followed() {
        let sql = "(SELECT way, class FROM (
              SELECT way, CASE WHEN highway IN ('motorway', 'motorway_link') THEN 'motorway'
                               WHEN highway = 'residential' THEN 'minor' END AS class
              FROM planet_osm_line WHERE way && !bbox! AND highway IS NOT NULL
            ) AS r WHERE class IS NOT NULL) AS roads";
        let views = views(sql).unwrap();
        let [view] = views.as_slice() else {
            panic!("{views:?}")
        };
        assert_eq!(view.table, "planet_osm_line");
        let class = view.attribute("class");
        let Value::Case(branches, otherwise) = &class else {
            panic!("{class:?}")
        };
        assert_eq!(branches.len(), 2);
        assert_eq!(
            branches[0].0,
            Condition::OneOf(
                Value::Column("highway".into()),
                texts(&["motorway", "motorway_link"])
            )
        );
        assert_eq!(branches[1].1, Value::Literal(Some("minor".into())));
        assert_eq!(**otherwise, Value::Literal(None));
        // The outer WHERE reads the inner alias: the CASE, not a column.
        let Condition::All(outer) = &view.condition else {
            panic!("{:?}", view.condition)
        };
        assert_eq!(
            outer.last(),
            Some(&Condition::Not(Box::new(Condition::IsNull(class.clone()))))
        );
        // Not selected: not known.
        assert_eq!(view.attribute("highway"), Value::Unknown);
    }

    #[test]
    fn names_resolve_in_their_own_scope() {
        // carto's pattern: an inner alias named like a table column,
        // read outside under another name.
        let sql = "(SELECT way, COALESCE(wetland, landuse) AS feature, name
              FROM (SELECT way, name,
                ('landuse_' || (CASE WHEN landuse IN ('forest', 'grass') THEN landuse END)) AS landuse,
                ('wetland_' || (CASE WHEN \"natural\" IN ('wetland') THEN tags->'wetland' END)) AS wetland
              FROM planet_osm_polygon WHERE landuse IS NOT NULL) AS inner_q) AS outer_q";
        let views = views(sql).unwrap();
        let feature = views[0].attribute("feature");
        let landuse = Value::Concat(vec![
            Value::Literal(Some("landuse_".into())),
            Value::Case(
                vec![(
                    Condition::OneOf(Value::Column("landuse".into()), texts(&["forest", "grass"])),
                    Value::Column("landuse".into()),
                )],
                Box::new(Value::Literal(None)),
            ),
        ]);
        let Value::Coalesce(parts) = &feature else {
            panic!("{feature:?}")
        };
        assert_eq!(parts[1], landuse);
        let Value::Concat(wetland) = &parts[0] else {
            panic!("{:?}", parts[0])
        };
        assert!(
            matches!(&wetland[1], Value::Case(b, _) if b[0].1 == Value::Key("tags".into(), "wetland".into())),
            "{wetland:?}"
        );
        assert_eq!(views[0].attribute("name"), Value::Column("name".into()));
        // A star passes the inner names on; over a table, every column.
        let star = "(SELECT * FROM (SELECT way, building AS b FROM planet_osm_polygon) _) AS x";
        let view = &views_of(star)[0];
        assert_eq!(view.attribute("b"), Value::Column("building".into()));
        assert_eq!(view.attribute("building"), Value::Unknown);
        let star = "(SELECT * FROM planet_osm_polygon WHERE building = 'yes') AS x";
        assert_eq!(
            views_of(star)[0].attribute("building"),
            Value::Column("building".into())
        );
    }

    fn views_of(sql: &str) -> Vec<SqlView> {
        views(sql).unwrap_or_else(|| panic!("not followed: {sql}"))
    }

    #[test]
    fn union_branches_are_views_named_by_the_first_branch() {
        let sql = "(SELECT way, name, feature FROM (
                SELECT way, name, 'point_' || amenity AS feature FROM planet_osm_point WHERE amenity IS NOT NULL
              UNION ALL
                SELECT ST_PointOnSurface(way) AS way, name, 'area_' || amenity AS kind FROM planet_osm_polygon
              ) _ WHERE name IS NOT NULL ORDER BY name) AS x";
        let found = views_of(sql);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].table, "planet_osm_point");
        assert_eq!(found[1].table, "planet_osm_polygon");
        assert_eq!(
            found[1].attribute("feature"),
            Value::Concat(vec![
                Value::Literal(Some("area_".into())),
                Value::Column("amenity".into())
            ])
        );
        // An unnamed column holds its place (carto's tunnels: `'null',`).
        let sql = "(SELECT way, feature, surface FROM (
                SELECT way, 'highway_' || highway AS feature, surface FROM planet_osm_line
              UNION ALL
                SELECT way, 'railway_' || railway AS feature, 'null' FROM planet_osm_line
              ) AS features) AS x";
        let found = views_of(sql);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[1].attribute("surface"),
            Value::Literal(Some("null".into()))
        );
        // A UNION under a star over a table has no names by position.
        assert!(views(
            "(SELECT * FROM planet_osm_point UNION ALL SELECT * FROM planet_osm_line) AS x"
        )
        .is_none());
    }

    #[test]
    fn joins_and_table_subqueries_are_not_followed() {
        for sql in [
            "(SELECT way FROM planet_osm_line a JOIN planet_osm_point b ON true) AS x",
            "(SELECT way FROM planet_osm_line a, planet_osm_point b) AS x",
            "(SELECT way, (SELECT 1 FROM planet_osm_point) AS n FROM planet_osm_line) AS x",
            "(SELECT way FROM planet_osm_line WHERE EXISTS (SELECT 1 FROM planet_osm_point)) AS x",
            "(SELECT DISTINCT ON (way) way FROM planet_osm_line) AS x",
            "(SELECT way FROM planet_osm_line ORDER BY z_order LIMIT 10) AS x",
            "(SELECT way FROM my_function(!bbox!)) AS x",
        ] {
            assert!(views(sql).is_none(), "{sql}");
        }
        // A scalar subquery over the row's own geometry reads no table.
        let sql = "(SELECT (SELECT ST_PointOnSurface(geom) FROM ST_Dump(way) LIMIT 1) AS way, name
            FROM planet_osm_polygon WHERE boundary = 'administrative') AS x";
        let views = views_of(sql);
        assert_eq!(views[0].attribute("way"), Value::Unknown);
    }

    #[test]
    fn filters_compare_attributes_with_texts_and_null() {
        let building = || Value::Column("building".into());
        assert_eq!(
            filter_condition("[building] = 'yes' or [building] = 'house'"),
            Condition::Any(vec![
                Condition::OneOf(building(), texts(&["yes"])),
                Condition::OneOf(building(), texts(&["house"])),
            ])
        );
        assert_eq!(
            filter_condition("not ([building] != null)"),
            Condition::Not(Box::new(Condition::Not(Box::new(Condition::IsNull(
                building()
            )))))
        );
        // Numbers, regular expressions and arithmetic are not understood.
        for filter in [
            "[way_pixels] > 100",
            "[name].match('^A')",
            "[a] + 1 = 2",
            "[building] = 'yes' and [way_area] > 10",
        ] {
            let c = filter_condition(filter);
            assert!(
                c == Condition::Unknown
                    || matches!(&c, Condition::All(p) if p.contains(&Condition::Unknown)),
                "{filter}: {c:?}"
            );
        }
    }

    #[test]
    fn conditions_on_expressions() {
        let c = parse_condition(&tokenize("building <> 'no'"));
        let building = || Value::Column("building".into());
        assert_eq!(
            c,
            Condition::All(vec![
                Condition::Not(Box::new(Condition::IsNull(building()))),
                Condition::Not(Box::new(Condition::OneOf(building(), texts(&["no"])))),
            ])
        );
        // SQL's NOT of a comparison is not true for NULL.
        assert_eq!(
            parse_condition(&tokenize("NOT covered = 'yes'")),
            Condition::All(vec![
                Condition::Not(Box::new(Condition::IsNull(Value::Column("covered".into())))),
                Condition::Not(Box::new(Condition::OneOf(
                    Value::Column("covered".into()),
                    texts(&["yes"])
                ))),
            ])
        );
        let golf = || Value::Key("tags".into(), "golf".into());
        assert_eq!(
            parse_condition(&tokenize("(tags->'golf') IS NOT NULL")),
            Condition::Not(Box::new(Condition::IsNull(golf())))
        );
        assert_eq!(
            parse_condition(&tokenize("tags->'golf' IN ('tee', 'green')")),
            Condition::OneOf(golf(), texts(&["tee", "green"]))
        );
        assert_eq!(
            parse_value(&tokenize("'INT-generic'::text")),
            Value::Literal(Some("INT-generic".into()))
        );
        assert_eq!(
            parse_value(&tokenize("(tags->'ele')::numeric")),
            Value::Unknown
        );
        for unknown in [
            "way_area > 1*!pixel_width!::real",
            "tags @> 'ford=>yes'",
            "tags ? 'ele'",
            "name ~ '^A'",
            "layer BETWEEN 1 AND 5",
        ] {
            assert_eq!(
                parse_condition(&tokenize(unknown)),
                Condition::Unknown,
                "{unknown}"
            );
        }
    }

    /// A carto-like style: a landcover layer whose rules test `feature`,
    /// built in a subquery from aliases named like the table's columns.
    const LANDCOVER: &str = r#"<?xml version="1.0"?>
<Map srs="epsg:3857">
  <Style name="landcover">
    <Rule><MaxScaleDenominator>750000</MaxScaleDenominator><Filter>([feature] = 'landuse_forest') and ([way_pixels] &gt;= 4)</Filter><PolygonSymbolizer/></Rule>
    <Rule><MaxScaleDenominator>50000</MaxScaleDenominator><Filter>([feature] = 'golf_tee')</Filter><PolygonSymbolizer/></Rule>
    <Rule><MaxScaleDenominator>25000</MaxScaleDenominator><Filter>([is_building] = 'no') and ([feature] = null)</Filter><PolygonSymbolizer/></Rule>
  </Style>
  <Layer name="landcover" maximum-scale-denominator="750000"><StyleName>landcover</StyleName>
    <Datasource><Parameter name="type">postgis</Parameter><Parameter name="table">(SELECT
        way, way_pixels, is_building, COALESCE(golf, landuse, "natural") AS feature
      FROM (SELECT way,
          ('golf_' || (CASE WHEN (tags->'golf') IN ('tee', 'green') THEN tags->'golf' ELSE NULL END)) AS golf,
          ('landuse_' || (CASE WHEN landuse IN ('forest', 'grass') THEN landuse END)) AS landuse,
          ('natural_' || (CASE WHEN "natural" IN ('wood') THEN "natural" END)) AS "natural",
          way_area/NULLIF(POW(!scale_denominator!*0.001*0.28,2),0) AS way_pixels,
          CASE WHEN building = 'no' OR building IS NULL THEN 'no' ELSE 'yes' END AS is_building
        FROM planet_osm_polygon
        WHERE (landuse IS NOT NULL OR "natural" IS NOT NULL OR (tags->'golf') IS NOT NULL OR building IS NOT NULL)
          AND way_area &gt; 1*!pixel_width!::real*!pixel_height!::real
      ) AS landcover ORDER BY way_area DESC, feature) AS features</Parameter></Datasource>
  </Layer>
</Map>"#;

    fn zooms(reads: &StyleReads, columns: &[&str], rows: &[&[Option<&str>]]) -> ZoomMask {
        let digests = RowDigests {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            old: Vec::new(),
            new: rows
                .iter()
                .map(|r| r.iter().map(|v| v.map(text_digest)).collect())
                .collect(),
        };
        reads.zooms_for(
            "planet_osm_polygon",
            RowFacts {
                digests: Some(&digests),
                ..RowFacts::default()
            },
        )
    }

    #[test]
    fn a_carto_like_layer_draws_a_row_where_its_feature_does() {
        let reads = analyse_style("carto", LANDCOVER, 256, 1.0).unwrap();
        assert_eq!(reads.layers[0].views.len(), 1, "{reads:#?}");
        let columns = ["building", "landuse", "natural", "tags", "tags->golf"];
        // A forest: from z10 (the layer's first zoom).
        let forest = zooms(
            &reads,
            &columns,
            &[&[None, Some("forest"), None, None, None]],
        );
        assert_eq!(forest, ZoomMask::range(10, 31));
        // A building with tags but no golf key: feature is NULL, is_building
        // 'yes': no rule draws it.
        let tags = Some("\"source\"=>\"survey\"");
        let building = [Some("yes"), None, None, tags, None];
        assert_eq!(zooms(&reads, &columns, &[&building]), ZoomMask::NONE);
        // Without the key's hash, golf may be a tee: from z14.
        let building = [Some("yes"), None, None, tags];
        assert_eq!(
            zooms(&reads, &columns[..4], &[&building]),
            ZoomMask::range(14, 31)
        );
        // Untagged land: feature NULL, is_building 'no': z15 on.
        let land = [None, Some("meadow"), None, None, None];
        assert_eq!(zooms(&reads, &columns, &[&land]), ZoomMask::range(15, 31));
        // A golf tee through the hstore key.
        let tee = [None, None, None, Some("\"golf\"=>\"tee\""), Some("tee")];
        assert_eq!(zooms(&reads, &columns, &[&tee]), ZoomMask::range(14, 31));
    }
}
