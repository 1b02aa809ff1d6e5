//! Lua tag transforms (`--tag-transform-script`), called exactly as
//! osm2pgsql 1.8's `lua_tagtransform_t` calls them (Lua 5.3):
//!
//! | object | function | arguments | results |
//! |---|---|---|---|
//! | node | `filter_tags_node` | `keyvalues, numberofkeys` | `filter, keyvalues` |
//! | way | `filter_tags_way` | `keyvalues, numberofkeys` | `filter, keyvalues, polygon, roads` |
//! | relation | `filter_basic_tags_rel` | `keyvalues, numberofkeys` | `filter, keyvalues` |
//! | relation | `filter_tags_relation_member` | `keyvalues, keyvaluemembers, roles, membercount` | `filter, keyvalues, membersuperseded, boundary, polygon, roads` |
//!
//! - `keyvalues` is a fresh table of the raw tags (string → string);
//!   `numberofkeys` an integer. For the member function `keyvalues` are the
//!   tags `filter_basic_tags_rel` returned, `keyvaluemembers[i]` the raw
//!   tags of the i-th member way found, `roles[i]` its role, and
//!   `membercount` their number as a Lua *float* (osm2pgsql pushes it with
//!   `lua_pushnumber`, so it prints as `2.0`).
//! - All four functions must exist when the script is loaded.
//! - Flags are read with `lua_tointeger`: integers, integral floats and
//!   numeric strings count, anything else (booleans, nil) is 0; `filter`
//!   nonzero drops the object; `polygon`, `roads`, `boundary` are cast to
//!   C `int` and nonzero means yes. `membersuperseded` is ignored.
//! - Returned tag values may be strings or numbers, converted as
//!   `lua_tostring` does (`380`, `38.0`); other types are an error. This is
//!   how carto's script hands back `z_order`.
//! - Relations whose `type` is not route/multipolygon/boundary are dropped
//!   before any call, and the member function is only called when at least
//!   one member way was found.

use crate::apply::transform::{
    Filtered, FilteredRelation, MemberTags, RelationKind, TagTransform, TransformError,
};
use crate::osm::Tags;
use mlua::{Function, Lua, MultiValue, Table, Value};
use std::path::Path;

/// The script's function for node tags.
pub const NODE_FUNCTION: &str = "filter_tags_node";
/// The script's function for way tags.
pub const WAY_FUNCTION: &str = "filter_tags_way";
/// The script's first pass over a relation's own tags.
pub const RELATION_FUNCTION: &str = "filter_basic_tags_rel";
/// The script's second pass over a relation, with its member ways.
pub const RELATION_MEMBER_FUNCTION: &str = "filter_tags_relation_member";

/// A loaded tag transform script with its own Lua state.
pub struct LuaTransform {
    lua: Lua,
    script: String,
    node_function: Function,
    way_function: Function,
    relation_function: Function,
    relation_member_function: Function,
}

impl std::fmt::Debug for LuaTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaTransform")
            .field("script", &self.script)
            .finish_non_exhaustive()
    }
}

impl LuaTransform {
    /// Loads a script file.
    pub fn from_file(path: &Path) -> Result<LuaTransform, TransformError> {
        let script = path.display().to_string();
        let source = std::fs::read(path).map_err(|source| TransformError::ReadScript {
            path: script.clone(),
            source,
        })?;
        LuaTransform::from_source(&String::from_utf8_lossy(&source), &script)
    }

    /// Loads a script from its text; `script` names it in errors and in Lua
    /// messages (`script:line: …`, as when Lua loads the file itself).
    pub fn from_source(source: &str, script: &str) -> Result<LuaTransform, TransformError> {
        let load_error = |message: String| TransformError::LuaLoad {
            script: script.to_string(),
            message,
        };
        // osm2pgsql opens all standard libraries; mlua's safe set lacks
        // only `debug`, which tag transforms have no business using.
        let lua = Lua::new();
        lua.load(source)
            .set_name(format!("@{script}"))
            .exec()
            .map_err(|e| load_error(e.to_string()))?;
        let function = |name: &str| -> Result<Function, TransformError> {
            match lua.globals().raw_get::<Value>(name) {
                Ok(Value::Function(function)) => Ok(function),
                _ => Err(load_error(format!(
                    "the script does not contain a function {name}"
                ))),
            }
        };
        Ok(LuaTransform {
            node_function: function(NODE_FUNCTION)?,
            way_function: function(WAY_FUNCTION)?,
            relation_function: function(RELATION_FUNCTION)?,
            relation_member_function: function(RELATION_MEMBER_FUNCTION)?,
            lua,
            script: script.to_string(),
        })
    }

    /// The name the script was loaded under (usually its path), as errors
    /// show it.
    pub fn script(&self) -> &str {
        &self.script
    }

    fn call_error(&self, function: &'static str, message: impl ToString) -> TransformError {
        TransformError::LuaCall {
            script: self.script.clone(),
            function,
            message: message.to_string(),
        }
    }

    fn tag_table(&self, tags: &Tags) -> mlua::Result<Table> {
        let table = self.lua.create_table_with_capacity(0, tags.len())?;
        for (key, value) in tags {
            table.raw_set(key.as_str(), value.as_str())?;
        }
        Ok(table)
    }

    /// Calls a function, adjusting its results to `count` values like
    /// `lua_pcall(…, count, …)`.
    fn call(
        &self,
        function: &Function,
        name: &'static str,
        arguments: MultiValue,
        count: usize,
    ) -> Result<Vec<Value>, TransformError> {
        let mut results: Vec<Value> = function
            .call::<MultiValue>(arguments)
            .map_err(|e| self.call_error(name, e))?
            .into_iter()
            .collect();
        results.resize(count, Value::Nil);
        Ok(results)
    }

    /// `lua_tointeger`: 0 for anything that is not an integral number or a
    /// numeric string.
    fn to_integer(&self, value: &Value) -> i64 {
        self.lua
            .coerce_integer(value.clone())
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// A returned flag: `(int)lua_tointeger(…)` as a C boolean.
    fn to_flag(&self, value: &Value) -> bool {
        self.to_integer(value) as i32 != 0
    }

    /// Reads the returned `keyvalues` (osm2pgsql's `get_out_tags`).
    fn out_tags(
        &self,
        name: &'static str,
        value: &Value,
        filter: bool,
    ) -> Result<Tags, TransformError> {
        let table = match value {
            Value::Table(table) => table,
            // A dropped object's tags are never used.
            _ if filter => return Ok(Tags::new()),
            other => {
                return Err(self.call_error(
                    name,
                    format!("returned {} instead of a table of tags", other.type_name()),
                ))
            }
        };
        let mut pairs: Vec<(Value, Value)> = Vec::new();
        let wrong_type = |type_name: &str| {
            self.call_error(
                name,
                format!(
                    "Basic tag processing found incorrect data type '{type_name}', use a string."
                ),
            )
        };
        table
            .for_each::<Value, Value>(|key, value| {
                pairs.push((key, value));
                Ok(())
            })
            .map_err(|e| self.call_error(name, e))?;
        pairs
            .into_iter()
            .map(|(key, value)| {
                let Value::String(key) = key else {
                    return Err(wrong_type(key.type_name()));
                };
                let value = match value {
                    Value::String(value) => value.to_string_lossy(),
                    number @ (Value::Integer(_) | Value::Number(_)) => self
                        .lua
                        .coerce_string(number)
                        .ok()
                        .flatten()
                        .map(|s| s.to_string_lossy())
                        .ok_or_else(|| wrong_type("number"))?,
                    other => return Err(wrong_type(other.type_name())),
                };
                Ok((key.to_string_lossy(), value))
            })
            .collect()
    }

    /// The two-result functions (nodes, relations' first pass).
    fn filter_basic(
        &self,
        function: &Function,
        name: &'static str,
        tags: &Tags,
    ) -> Result<Option<Tags>, TransformError> {
        let table = self.tag_table(tags).map_err(|e| self.call_error(name, e))?;
        let arguments =
            MultiValue::from_iter([Value::Table(table), Value::Integer(tags.len() as i64)]);
        let results = self.call(function, name, arguments, 2)?;
        let filter = self.to_integer(&results[0]) != 0;
        let tags = self.out_tags(name, &results[1], filter)?;
        Ok((!filter).then_some(tags))
    }
}

impl TagTransform for LuaTransform {
    fn node(&mut self, tags: &Tags) -> Result<Option<Filtered>, TransformError> {
        let tags = self.filter_basic(&self.node_function, NODE_FUNCTION, tags)?;
        Ok(tags.map(|tags| Filtered {
            tags,
            polygon: false,
            roads: false,
        }))
    }

    fn way(&mut self, tags: &Tags) -> Result<Option<Filtered>, TransformError> {
        let table = self
            .tag_table(tags)
            .map_err(|e| self.call_error(WAY_FUNCTION, e))?;
        let arguments =
            MultiValue::from_iter([Value::Table(table), Value::Integer(tags.len() as i64)]);
        let results = self.call(&self.way_function, WAY_FUNCTION, arguments, 4)?;
        let filter = self.to_integer(&results[0]) != 0;
        let polygon = self.to_flag(&results[2]);
        let roads = self.to_flag(&results[3]);
        let tags = self.out_tags(WAY_FUNCTION, &results[1], filter)?;
        Ok((!filter).then_some(Filtered {
            tags,
            polygon,
            roads,
        }))
    }

    fn relation_tags(&mut self, tags: &Tags) -> Result<Option<Tags>, TransformError> {
        self.filter_basic(&self.relation_function, RELATION_FUNCTION, tags)
    }

    fn relation_members(
        &mut self,
        relation_tags: &Tags,
        members: &[MemberTags<'_>],
    ) -> Result<Option<FilteredRelation>, TransformError> {
        const NAME: &str = RELATION_MEMBER_FUNCTION;
        let arguments = (|| -> mlua::Result<MultiValue> {
            let member_tags = self.lua.create_table_with_capacity(members.len(), 0)?;
            let roles = self.lua.create_table_with_capacity(members.len(), 0)?;
            for (index, member) in members.iter().enumerate() {
                member_tags.raw_set(index as i64 + 1, self.tag_table(member.tags)?)?;
                roles.raw_set(index as i64 + 1, member.role)?;
            }
            Ok(MultiValue::from_iter([
                Value::Table(self.tag_table(relation_tags)?),
                Value::Table(member_tags),
                Value::Table(roles),
                Value::Number(members.len() as f64),
            ]))
        })()
        .map_err(|e| self.call_error(NAME, e))?;
        let results = self.call(&self.relation_member_function, NAME, arguments, 6)?;
        let filter = self.to_integer(&results[0]) != 0;
        let make_boundary = self.to_flag(&results[3]);
        let make_polygon = self.to_flag(&results[4]);
        let roads = self.to_flag(&results[5]);
        let tags = self.out_tags(NAME, &results[1], filter)?;
        Ok((!filter).then_some(FilteredRelation {
            tags,
            kind: RelationKind::from_flags(make_boundary, make_polygon),
            roads,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osm::tags;

    const CARTO_LUA: &str = "/usr/share/openstreetmap-carto-common/openstreetmap-carto.lua";

    fn sorted(mut tags: Tags) -> Tags {
        tags.sort();
        tags
    }

    fn carto() -> Option<LuaTransform> {
        let path = Path::new(CARTO_LUA);
        if !path.exists() {
            eprintln!("skipped: {CARTO_LUA} not installed");
            return None;
        }
        Some(LuaTransform::from_file(path).unwrap())
    }

    fn value<'a>(tags: &'a Tags, key: &str) -> Option<&'a str> {
        tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn carto_ways() {
        let Some(mut carto) = carto() else { return };
        let motorway = carto
            .way(&tags(&[
                ("highway", "motorway"),
                ("ref", "A1"),
                ("note", "x"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(
            sorted(motorway.tags),
            tags(&[("highway", "motorway"), ("ref", "A1"), ("z_order", "380")])
        );
        assert!(motorway.roads && !motorway.polygon);
        let building = carto.way(&tags(&[("building", "yes")])).unwrap().unwrap();
        assert!(building.polygon && !building.roads);
        // z_order 0 becomes nil: no pseudo-tag.
        assert_eq!(building.tags, tags(&[("building", "yes")]));
        let river = carto
            .way(&tags(&[("waterway", "river"), ("name", "Rhein")]))
            .unwrap()
            .unwrap();
        assert!(!river.polygon && !river.roads);
        let pedestrian = carto
            .way(&tags(&[("highway", "pedestrian"), ("area", "yes")]))
            .unwrap()
            .unwrap();
        assert!(pedestrian.polygon);
        assert!(
            !carto
                .way(&tags(&[("building", "yes"), ("area", "no")]))
                .unwrap()
                .unwrap()
                .polygon
        );
        // Import tags only: dropped.
        assert!(carto
            .way(&tags(&[("source", "survey"), ("tiger:cfcc", "A41")]))
            .unwrap()
            .is_none());
        assert!(carto.way(&tags(&[])).unwrap().is_none());
        // highway=construction: z from the construction value / 10, a float.
        let construction = carto
            .way(&tags(&[
                ("highway", "construction"),
                ("construction", "motorway"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(value(&construction.tags, "z_order"), Some("38.0"));
        let siding = carto
            .way(&tags(&[("railway", "rail"), ("service", "siding")]))
            .unwrap()
            .unwrap();
        assert!(!siding.roads);
        assert_eq!(value(&siding.tags, "z_order"), Some("440"));
        assert!(
            carto
                .way(&tags(&[("railway", "rail")]))
                .unwrap()
                .unwrap()
                .roads
        );
        // layer is normalised: out of range or non-integer removed.
        let bridge = carto
            .way(&tags(&[("highway", "primary"), ("layer", "1;2")]))
            .unwrap()
            .unwrap();
        assert_eq!(value(&bridge.tags, "layer"), None);
        let layered = carto
            .way(&tags(&[("highway", "primary"), ("layer", "-2")]))
            .unwrap()
            .unwrap();
        assert_eq!(value(&layered.tags, "layer"), Some("-2"));
    }

    #[test]
    fn carto_nodes_and_relations() {
        let Some(mut carto) = carto() else { return };
        let node = carto
            .node(&tags(&[("amenity", "pub"), ("created_by", "JOSM")]))
            .unwrap()
            .unwrap();
        assert_eq!(node.tags, tags(&[("amenity", "pub")]));
        assert!(carto
            .node(&tags(&[("created_by", "JOSM")]))
            .unwrap()
            .is_none());

        let outer = tags(&[("building", "yes")]);
        let members = [MemberTags {
            tags: &outer,
            role: "outer",
        }];
        let mp = carto
            .relation(
                &tags(&[("type", "multipolygon"), ("landuse", "forest")]),
                &members,
            )
            .unwrap()
            .unwrap();
        assert_eq!(mp.kind, RelationKind::Multipolygon);
        assert_eq!(mp.tags, tags(&[("landuse", "forest")]));
        let admin = carto
            .relation(
                &tags(&[
                    ("type", "boundary"),
                    ("boundary", "administrative"),
                    ("admin_level", "2"),
                ]),
                &members,
            )
            .unwrap()
            .unwrap();
        assert_eq!(admin.kind, RelationKind::Boundary);
        assert!(admin.roads);
        let route = carto
            .relation(
                &tags(&[("type", "route"), ("route", "bus"), ("name", "7")]),
                &members,
            )
            .unwrap()
            .unwrap();
        // carto returns boundary=1 for routes: lines, and polygons where
        // the members happen to close a ring.
        assert_eq!(route.kind, RelationKind::Boundary);
        assert!(!route.roads);
        assert_eq!(sorted(route.tags), tags(&[("name", "7"), ("route", "bus")]));
        assert!(carto
            .relation(&tags(&[("type", "multipolygon")]), &members)
            .unwrap()
            .is_none());
        assert!(carto
            .relation(&tags(&[("type", "site"), ("name", "x")]), &members)
            .unwrap()
            .is_none());
    }

    const PROBE: &str = r#"
        calls = {}
        function filter_tags_node(kv, n) return 0, {n = n, t = math.type(n)} end
        function filter_tags_way(kv, n)
            if kv.drop then return 1, nil, 1, 1 end
            if kv.bool then return true, kv, true, "1" end
            if kv.huge then return 0, kv, "1", 2^32 end
            return 0, {count = n, z = 1.5, big = 2^53}, 1.0, 2
        end
        function filter_basic_tags_rel(kv, n) kv.extra = "yes" return "0", kv end
        function filter_tags_relation_member(kv, members, roles, count)
            local out = {count = count, ctype = math.type(count), extra = kv.extra}
            for i = 1, count do
                out["role" .. i] = roles[i]
                out["member" .. i] = members[i].name or "-"
            end
            return 0, out, {}, 1, 0, 0
        end
    "#;

    #[test]
    fn call_conventions() {
        let mut probe = LuaTransform::from_source(PROBE, "probe.lua").unwrap();
        let node = probe
            .node(&tags(&[("a", "1"), ("b", "2")]))
            .unwrap()
            .unwrap();
        assert_eq!(sorted(node.tags), tags(&[("n", "2"), ("t", "integer")]));
        let way = probe.way(&tags(&[("x", "y")])).unwrap().unwrap();
        assert!(way.polygon && way.roads);
        assert_eq!(
            sorted(way.tags),
            tags(&[("big", "9.007199254741e+15"), ("count", "1"), ("z", "1.5")])
        );
        assert!(probe.way(&tags(&[("drop", "1")])).unwrap().is_none());
        // `true` is not an integer for lua_tointeger: the way is kept and
        // polygon is false; the string "1" counts as 1.
        let kept = probe.way(&tags(&[("bool", "1")])).unwrap().unwrap();
        assert!(!kept.polygon && kept.roads);
        // Flags are cast to C int: 2^32 is 0 (checked with osm2pgsql 1.8).
        let huge = probe.way(&tags(&[("huge", "1")])).unwrap().unwrap();
        assert!(huge.polygon && !huge.roads);

        let (a, b) = (tags(&[("name", "A")]), tags(&[]));
        let members = [
            MemberTags {
                tags: &a,
                role: "outer",
            },
            MemberTags {
                tags: &b,
                role: "inner",
            },
        ];
        let relation = probe
            .relation(&tags(&[("type", "boundary")]), &members)
            .unwrap()
            .unwrap();
        assert_eq!(relation.kind, RelationKind::Boundary);
        assert_eq!(
            sorted(relation.tags),
            tags(&[
                ("count", "2.0"),
                ("ctype", "float"),
                ("extra", "yes"),
                ("member1", "A"),
                ("member2", "-"),
                ("role1", "outer"),
                ("role2", "inner"),
            ])
        );
        assert!(probe
            .relation(&tags(&[("type", "boundary")]), &[])
            .unwrap()
            .is_none());
    }

    #[test]
    fn load_errors() {
        let err = LuaTransform::from_source("function filter_tags_node(", "broken.lua")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("Lua tag transform broken.lua: "), "{err}");
        assert!(err.contains("broken.lua:1:"), "{err}");
        let err = LuaTransform::from_source("function filter_tags_node() end", "partial.lua")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "Lua tag transform partial.lua: the script does not contain a function filter_tags_way"
        );
        let err = LuaTransform::from_file(Path::new("/nonexistent/style.lua"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read Lua tag transform script /nonexistent/style.lua"));
    }

    #[test]
    fn call_errors_name_script_and_function() {
        let script = r#"
            function filter_tags_node(kv, n) return 0, {flag = true} end
            function filter_tags_way(kv, n) error("no ways today") end
            function filter_basic_tags_rel(kv, n) return 0, 42 end
            function filter_tags_relation_member() return 0, {[1] = "x"}, {}, 0, 0, 0 end
        "#;
        let mut broken = LuaTransform::from_source(script, "bad.lua").unwrap();
        let err = broken.node(&tags(&[("a", "b")])).unwrap_err().to_string();
        assert_eq!(
            err,
            "Lua tag transform bad.lua, function filter_tags_node: Basic tag processing found incorrect data type 'boolean', use a string."
        );
        let err = broken.way(&tags(&[("a", "b")])).unwrap_err().to_string();
        assert!(
            err.starts_with("Lua tag transform bad.lua, function filter_tags_way: "),
            "{err}"
        );
        assert!(err.contains("bad.lua:3: no ways today"), "{err}");
        let err = broken
            .relation(&tags(&[("type", "route")]), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "Lua tag transform bad.lua, function filter_basic_tags_rel: returned integer instead of a table of tags"
        );
    }
}
