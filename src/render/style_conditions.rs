//! The value conditions of a style layer, for style-aware expiry: what its
//! SQL's `WHERE`s and its rules' `Filter`s need of a row's values
//! ([`Condition`]), so that a building row expires only at the zooms
//! where a rule that can match a building draws.
//!
//! Understood, and only in SQL whose `SELECT`s all read from one table
//! through a chain of subqueries in `FROM` (no joins, unions, scalar
//! subqueries): `WHERE` conjunctions and disjunctions of `col IS [NOT]
//! NULL`, `col = 'text'`, `col <> 'text'`, `col [NOT] IN ('a', 'b')`;
//! output columns defined as `CASE WHEN … THEN 'text' … END AS name` or
//! `col AS name`; Mapnik filters comparing `[name]` with a text or
//! `null` (`=`, `!=`, `<>`), with `and`, `or`, `not` (Mapnik's
//! `expression_grammar`). Everything else is [`Condition::Unknown`] or
//! [`Value::Unknown`]: it may hold, so the layer keeps today's zooms.

use super::style_reads::{strip_parens, Token, KEYWORDS};
use crate::expire::style_aware::{Condition, Value};
use std::collections::{BTreeSet, HashMap};

/// Words that make the SQL's row flow too hard to follow.
const NOT_A_CHAIN: &[&str] = &[
    "union",
    "intersect",
    "except",
    "join",
    "exists",
    "with",
    "lateral",
    "any",
    "all",
    "some",
    "over",
    "window",
    "group",
    "having",
];

/// Words that end a `WHERE` at its level.
const CONDITION_ENDS: &[&str] = &[
    "group", "order", "limit", "offset", "having", "window", "fetch",
];

/// How deep aliases may refer to aliases.
const MAX_ALIAS_DEPTH: usize = 8;

/// A layer's SQL understood: its `WHERE`s and its output columns.
#[derive(Debug, Default)]
pub(crate) struct SqlConditions {
    /// All `WHERE`s; `None`: the SQL is not a chain this module follows.
    pub(crate) condition: Option<Condition>,
    /// `expr AS name` definitions (a name defined twice is unknown).
    aliases: HashMap<String, Value>,
}

impl SqlConditions {
    /// A bare table name: no condition, its columns by their names.
    pub(crate) fn table() -> SqlConditions {
        SqlConditions {
            condition: Some(Condition::All(Vec::new())),
            aliases: HashMap::new(),
        }
    }

    /// The value a Mapnik attribute `[name]` of the layer's rows reads.
    fn attribute(&self, name: &str) -> Value {
        resolve(&Value::Column(name.to_ascii_lowercase()), &self.aliases, 0)
    }
}

/// Follows a `(SELECT …) AS x` chain: its `WHERE`s and aliases.
pub(crate) fn sql_conditions(tokens: &[Token]) -> SqlConditions {
    let not_a_chain = SqlConditions::default();
    if tokens
        .iter()
        .any(|t| matches!(t, Token::Word(w) if NOT_A_CHAIN.contains(&w.as_str())))
    {
        return not_a_chain;
    }
    let mut aliases: HashMap<String, Option<Value>> = HashMap::new();
    let mut conditions = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if !matches!(token, Token::Word(w) if w == "select") {
            continue;
        }
        // Every SELECT opens a subquery in a FROM (or the outer wrapper).
        let opens = i >= 1 && tokens[i - 1] == Token::Symbol('(');
        let in_from =
            i == 1 || matches!(tokens.get(i.wrapping_sub(2)), Some(Token::Word(w)) if w == "from");
        if !(opens && in_from) {
            return not_a_chain;
        }
        let Some(scope) = scope_of(tokens, i + 1) else {
            return not_a_chain;
        };
        for item in split_level(&tokens[scope.list.0..scope.list.1], Split::Comma) {
            let (name, value) = match item {
                [expr @ .., Token::Word(a), Token::Word(n) | Token::Quoted(n)] if a == "as" => {
                    (n.to_ascii_lowercase(), parse_value(expr))
                }
                // `expr name` without AS.
                [_, .., Token::Word(n)]
                    if !KEYWORDS.contains(&n.as_str())
                        && !matches!(item[item.len() - 2], Token::Symbol('.')) =>
                {
                    (n.clone(), Value::Unknown)
                }
                _ => continue,
            };
            aliases
                .entry(name)
                .and_modify(|v| *v = None)
                .or_insert(Some(value));
        }
        if let Some((start, end)) = scope.condition {
            conditions.push(parse_condition(&tokens[start..end]));
        }
    }
    let aliases: HashMap<String, Value> = aliases
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(Value::Unknown)))
        .collect();
    let conditions = conditions
        .iter()
        .map(|c| resolve_condition(c, &aliases, 0))
        .collect();
    SqlConditions {
        condition: Some(Condition::All(conditions)),
        aliases,
    }
}

/// Token ranges of one SELECT: its select list and its `WHERE`.
struct Scope {
    list: (usize, usize),
    condition: Option<(usize, usize)>,
}

fn scope_of(tokens: &[Token], start: usize) -> Option<Scope> {
    let mut depth = 0i32;
    let mut list_end = None;
    let mut condition: Option<(usize, usize)> = None;
    for (j, token) in tokens.iter().enumerate().skip(start) {
        match token {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') if depth == 0 => {
                return finish(start, list_end, condition, j);
            }
            Token::Symbol(')') => depth -= 1,
            Token::Word(w) if depth == 0 && w == "from" && list_end.is_none() => {
                list_end = Some(j);
            }
            Token::Word(w) if depth == 0 && w == "where" => condition = Some((j + 1, usize::MAX)),
            Token::Word(w) if depth == 0 && CONDITION_ENDS.contains(&w.as_str()) => {
                if let Some((s, usize::MAX)) = condition {
                    condition = Some((s, j));
                }
            }
            _ => {}
        }
    }
    finish(start, list_end, condition, tokens.len())
}

fn finish(
    start: usize,
    list_end: Option<usize>,
    condition: Option<(usize, usize)>,
    end: usize,
) -> Option<Scope> {
    Some(Scope {
        list: (start, list_end?),
        condition: condition.map(|(s, e)| (s, e.min(end))),
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Split {
    Comma,
    Word(&'static str),
}

/// Splits at `at` outside parentheses and `CASE … END`.
fn split_level(tokens: &[Token], at: Split) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => depth -= 1,
            Token::Word(w) if w == "case" => depth += 1,
            Token::Word(w) if w == "end" => depth -= 1,
            Token::Symbol(',') if depth == 0 && at == Split::Comma => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            Token::Word(w) if depth == 0 && at == Split::Word(keyword(w)) => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

/// `w` as a static keyword when it is one `split_level` splits at.
fn keyword(w: &str) -> &'static str {
    match w {
        "or" => "or",
        "and" => "and",
        "when" => "when",
        "then" => "then",
        "else" => "else",
        _ => "",
    }
}

/// A value expression: a column, a text, NULL or a searched CASE.
fn parse_value(tokens: &[Token]) -> Value {
    let tokens = strip_parens(tokens);
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
        [Token::Word(c), Token::Word(w), inner @ .., Token::Word(e)]
            if c == "case" && w == "when" && e == "end" =>
        {
            parse_case(inner)
        }
        _ => Value::Unknown,
    }
}

/// The inside of `CASE WHEN … END` after the first WHEN.
fn parse_case(tokens: &[Token]) -> Value {
    let whens = split_level(tokens, Split::Word("when"));
    let mut branches = Vec::new();
    let mut otherwise = Value::Literal(None);
    let count = whens.len();
    for (i, when) in whens.into_iter().enumerate() {
        let parts = split_level(when, Split::Word("then"));
        let [condition, result] = parts.as_slice() else {
            return Value::Unknown;
        };
        let result = if i + 1 == count {
            match split_level(result, Split::Word("else")).as_slice() {
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

/// A SQL condition.
fn parse_condition(tokens: &[Token]) -> Condition {
    let tokens = strip_parens(tokens);
    if tokens
        .iter()
        .any(|t| matches!(t, Token::Word(w) if w == "between"))
    {
        return Condition::Unknown;
    }
    let alternatives = split_level(tokens, Split::Word("or"));
    if alternatives.len() > 1 {
        return Condition::Any(alternatives.into_iter().map(parse_condition).collect());
    }
    let conjuncts = split_level(tokens, Split::Word("and"));
    if conjuncts.len() > 1 {
        return Condition::All(conjuncts.into_iter().map(parse_condition).collect());
    }
    if let [Token::Word(n), rest @ ..] = tokens {
        if n == "not" {
            return Condition::Not(Box::new(parse_condition(rest)));
        }
    }
    parse_atom(tokens)
}

/// One comparison of a column-like value.
fn parse_atom(tokens: &[Token]) -> Condition {
    // The value: a name, `t.name`, or a parenthesised expression.
    let split = match tokens {
        [Token::Word(_) | Token::Quoted(_), Token::Symbol('.'), _, ..] => 3,
        [Token::Word(_) | Token::Quoted(_), ..] => 1,
        _ => return Condition::Unknown,
    };
    let value = parse_value(&tokens[..split]);
    if value == Value::Unknown {
        return Condition::Unknown;
    }
    let is = |t: &Token, w: &str| matches!(t, Token::Word(x) if x == w);
    match &tokens[split..] {
        [a, b] if is(a, "is") && is(b, "null") => Condition::IsNull(value),
        [a, b, c] if is(a, "is") && is(b, "not") && is(c, "null") => {
            Condition::Not(Box::new(Condition::IsNull(value)))
        }
        [Token::Symbol('='), Token::Literal(text)] => {
            Condition::OneOf(value, BTreeSet::from([text.clone()]))
        }
        [Token::Symbol('<'), Token::Symbol('>'), Token::Literal(text)]
        | [Token::Symbol('!'), Token::Symbol('='), Token::Literal(text)] => Condition::All(vec![
            // `col <> 'x'` is not true for NULL either.
            Condition::Not(Box::new(Condition::IsNull(value.clone()))),
            Condition::Not(Box::new(Condition::OneOf(
                value,
                BTreeSet::from([text.clone()]),
            ))),
        ]),
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
    (!texts.is_empty()).then_some(texts)
}

/// Replaces names the SQL defines by their definitions.
fn resolve(value: &Value, aliases: &HashMap<String, Value>, depth: usize) -> Value {
    if depth > MAX_ALIAS_DEPTH {
        return Value::Unknown;
    }
    match value {
        Value::Column(name) => match aliases.get(name) {
            Some(Value::Column(same)) if same == name => value.clone(),
            Some(definition) => Value::Alias(
                name.clone(),
                Box::new(resolve(definition, aliases, depth + 1)),
            ),
            None => value.clone(),
        },
        Value::Case(branches, otherwise) => Value::Case(
            branches
                .iter()
                .map(|(c, v)| {
                    (
                        resolve_condition(c, aliases, depth + 1),
                        resolve(v, aliases, depth + 1),
                    )
                })
                .collect(),
            Box::new(resolve(otherwise, aliases, depth + 1)),
        ),
        other => other.clone(),
    }
}

fn resolve_condition(
    condition: &Condition,
    aliases: &HashMap<String, Value>,
    depth: usize,
) -> Condition {
    let each = |parts: &[Condition]| -> Vec<Condition> {
        parts
            .iter()
            .map(|p| resolve_condition(p, aliases, depth))
            .collect()
    };
    match condition {
        Condition::Unknown => Condition::Unknown,
        Condition::All(parts) => Condition::All(each(parts)),
        Condition::Any(parts) => Condition::Any(each(parts)),
        Condition::Not(inner) => Condition::Not(Box::new(resolve_condition(inner, aliases, depth))),
        Condition::IsNull(v) => Condition::IsNull(resolve(v, aliases, depth)),
        Condition::OneOf(v, texts) => Condition::OneOf(resolve(v, aliases, depth), texts.clone()),
    }
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

/// A rule's `Filter` over the layer's rows; [`Condition::Unknown`] when
/// any part of it is not understood.
pub(crate) fn filter_condition(filter: &str, sql: &SqlConditions) -> Condition {
    let Some(tokens) = filter_tokens(filter) else {
        return Condition::Unknown;
    };
    let mut parser = FilterParser {
        tokens: &tokens,
        at: 0,
        sql,
    };
    match parser.or() {
        Some(condition) if parser.at == tokens.len() => condition,
        _ => Condition::Unknown,
    }
}

struct FilterParser<'a> {
    tokens: &'a [FilterToken],
    at: usize,
    sql: &'a SqlConditions,
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
        let value = self.sql.attribute(&attribute);
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
    use super::super::style_reads::tokenize;
    use super::*;
    use crate::expire::style_aware::text_digest;

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

    #[test]
    fn where_and_case_aliases_are_followed() {
        let sql = "(SELECT way, class FROM (
              SELECT way, CASE WHEN highway IN ('motorway', 'motorway_link') THEN 'motorway'
                               WHEN highway = 'residential' THEN 'minor' END AS class
              FROM planet_osm_line WHERE way && !bbox! AND highway IS NOT NULL
            ) AS r WHERE class IS NOT NULL) AS roads";
        let parsed = sql_conditions(&tokenize(sql));
        let Some(Condition::All(parts)) = &parsed.condition else {
            panic!("{parsed:?}");
        };
        assert_eq!(parts.len(), 2, "{parts:?}");
        let class = parsed.attribute("class");
        let Value::Alias(name, definition) = &class else {
            panic!("{class:?}")
        };
        assert_eq!(name, "class");
        let Value::Case(branches, otherwise) = definition.as_ref() else {
            panic!("{definition:?}")
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
    }

    #[test]
    fn joins_and_unions_are_not_followed() {
        for sql in [
            "(SELECT way FROM planet_osm_line a JOIN planet_osm_point b ON true) AS x",
            "(SELECT way FROM planet_osm_line UNION ALL SELECT way FROM planet_osm_roads) AS x",
            "(SELECT way, (SELECT 1 FROM planet_osm_point) AS n FROM planet_osm_line) AS x",
        ] {
            assert_eq!(sql_conditions(&tokenize(sql)).condition, None, "{sql}");
        }
    }

    #[test]
    fn filters_compare_attributes_with_texts_and_null() {
        let sql = SqlConditions::table();
        let building = || Value::Column("building".into());
        assert_eq!(
            filter_condition("[building] = 'yes' or [building] = 'house'", &sql),
            Condition::Any(vec![
                Condition::OneOf(building(), texts(&["yes"])),
                Condition::OneOf(building(), texts(&["house"])),
            ])
        );
        assert_eq!(
            filter_condition("not ([building] != null)", &sql),
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
            let c = filter_condition(filter, &sql);
            assert!(
                c == Condition::Unknown
                    || matches!(&c, Condition::All(p) if p.contains(&Condition::Unknown)),
                "{filter}: {c:?}"
            );
        }
    }

    #[test]
    fn not_equal_excludes_null_as_sql_does() {
        let tokens = tokenize("building <> 'no'");
        let c = parse_condition(&tokens);
        assert_eq!(
            c,
            Condition::All(vec![
                Condition::Not(Box::new(Condition::IsNull(Value::Column(
                    "building".into()
                )))),
                Condition::Not(Box::new(Condition::OneOf(
                    Value::Column("building".into()),
                    texts(&["no"])
                ))),
            ])
        );
    }
}
