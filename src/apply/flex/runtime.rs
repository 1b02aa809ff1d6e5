//! The Lua side of a flex config: one Lua 5.3 state that runs the config,
//! holds its table definitions and calls its `process_*` callbacks with
//! OSM objects, collecting the rows `insert` produces.
//!
//! One state serves a whole import or apply, as in osm2pgsql 1.8, which
//! shares one state between its threads behind a mutex
//! (`get_mutex_and_call_lua_function` in `output-flex.cpp`): global Lua
//! data a config builds in one callback (two-stage route lists) is seen
//! by every later one.
//!
//! What a callback sees, and what it may call where, follows
//! `output-flex.cpp` (`push_osm_object_to_lua_stack`, `app_as_*`,
//! `app_get_bbox`, `table_insert`) and osm2pgsql's manual ("Flex output").

use super::expire::{parse_expire_output, ExpireOutputDef, ExpireOutputHandle};
use super::geometry::{CollectionMember, FlexGeometry, GeometryColumnType};
use super::table::{parse_table, ColumnType, GeometryKind, TableDef};
use super::value::{self, escape_copy_text, write_integer, ColumnSlot};
use crate::apply::geom::postgis_sort_key;
use crate::apply::geom::validity::surely_valid_geometry;
use crate::apply::process::{NodeLocations, WayLookup};
use crate::osm::{Location, Node, ObjectId, ObjectType, Relation, Tags, Way};
use mlua::{
    AnyUserData, Function, Lua, MetaMethod, MultiValue, Table, UserData, UserDataMethods, Value,
};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// Why a flex config could not be loaded or run. Messages name the config
/// file and, where there is one, the object.
#[derive(Debug, thiserror::Error)]
pub enum FlexError {
    /// The config file could not be read.
    #[error("cannot read flex config {path}: {source}")]
    Read {
        /// The config's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config failed while loading (syntax, runtime or definition
    /// error), or defines nothing to write.
    #[error("Error loading lua config {config}: {message}")]
    Load {
        /// The config's path.
        config: String,
        /// Lua's or the definition check's message.
        message: String,
    },
    /// `process_node` or `process_way` changed the state the config keeps
    /// while the import ran them in several Lua states (see
    /// [`super::workers`]).
    #[error(
        "{config}: process_node or process_way changed {changed}, but this import runs those \
         callbacks in {workers} Lua states at once, which share nothing, so later callbacks \
         would not see the change as they do in osm2pgsql; import with --lua-workers 1 \
         (import.lua_workers: 1) to process every object in one Lua state"
    )]
    KeepsState {
        /// The config's path.
        config: String,
        /// Where the state changed (globals, locals of callbacks).
        changed: String,
        /// The number of worker states.
        workers: usize,
    },
    /// A callback failed for an object.
    #[error("Failed to execute Lua function 'osm2pgsql.{function}' for {object}: {message}")]
    Callback {
        /// The callback's name (`process_way`).
        function: &'static str,
        /// The object it was called for.
        object: ObjectId,
        /// The Lua error, with the config line where known.
        message: String,
    },
}

/// One row `insert` produced, ready for `COPY … FROM STDIN` (text format).
#[derive(Debug, Clone, PartialEq)]
pub struct FlexRow {
    /// Index of the table in [`FlexRuntime::tables`].
    pub table: usize,
    /// The object the row belongs to.
    pub object: ObjectId,
    /// The row's fields in COPY's text format, one per written column
    /// (`TableDef::written_columns`), escaped and tab-separated, without
    /// the final newline: geometries as hex EWKB, NULL as `\N`. Encoded
    /// by the Lua worker that built the row, so the single COPY writer
    /// only copies bytes and no row allocates a string per field.
    pub line: Vec<u8>,
    /// Every geometry the validity trigger would check (non-point, not in
    /// 4326) is proven valid, so the row needs no `ST_IsValid`.
    pub surely_valid: bool,
    /// Spatial sort key of the first geometry column, for clustering.
    pub order_key: Option<i64>,
}

/// Which callback is running (osm2pgsql's `calling_context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Main,
    ProcessNode,
    ProcessWay,
    ProcessRelation,
    SelectRelationMembers,
}

/// What the geometry constructors of the running callback build from.
#[derive(Debug, Clone, Default)]
enum Current {
    #[default]
    None,
    Node {
        location: Option<Location>,
    },
    Way {
        /// Locations of the way's nodes that have one, in order.
        locations: Vec<Location>,
    },
    Relation {
        /// Locations of the node members found.
        nodes: Vec<Location>,
        /// Each way member found, in member order, with its locations.
        ways: Vec<Vec<Location>>,
        /// Node and way members found, in member order: for each, whether
        /// it is a node (an index into `nodes`) or a way (into `ways`).
        order: Vec<MemberRef>,
    },
}

/// A relation member found, as an index into the node or way list.
#[derive(Debug, Clone, Copy)]
enum MemberRef {
    Node(usize),
    Way(usize),
}

impl Current {
    /// The members of a relation in member order, for
    /// `as_geometrycollection`.
    fn collection_members(&self) -> Vec<CollectionMember<'_>> {
        let Current::Relation { nodes, ways, order } = self else {
            return Vec::new();
        };
        order
            .iter()
            .map(|member| match *member {
                MemberRef::Node(i) => CollectionMember::Node(nodes[i]),
                MemberRef::Way(i) => CollectionMember::Way(&ways[i]),
            })
            .collect()
    }
}

/// State shared between the runtime and the functions it gives Lua.
#[derive(Default)]
struct Shared {
    tables: Vec<TableDef>,
    expire_outputs: Vec<ExpireOutputDef>,
    default_schema: String,
    context: Option<Context>,
    object: Option<ObjectId>,
    object_table: Option<Table>,
    current: Current,
    rows: Vec<FlexRow>,
    inserts_disabled: bool,
    /// Whether any callback has been called.
    has_run: bool,
    /// Per table, its written columns' names as Lua strings, made on the
    /// first insert: `insert` looks every column up in the row, and an
    /// existing string spares Lua interning the name again each time.
    column_keys: Vec<Vec<mlua::String>>,
    /// Per table, [`column_keys`](Self::column_keys) as a Lua sequence,
    /// for [`value::read_columns`].
    column_names: Vec<Option<Table>>,
    /// A column's text before COPY escaping, reused from row to row.
    column_text: String,
    /// The plain columns' COPY text, and where each column's is.
    column_bytes: Vec<u8>,
    column_slots: Vec<ColumnSlot>,
}

type SharedRef = Rc<RefCell<Shared>>;

/// A loaded flex config.
pub struct FlexRuntime {
    lua: Lua,
    shared: SharedRef,
    config: String,
    object_metatable: Table,
    process_node: Option<Function>,
    process_way: Option<Function>,
    process_relation: Option<Function>,
    select_relation_members: Option<Function>,
    keys: ObjectKeys,
}

/// The field names and fixed values of the object tables, as Lua strings
/// made once: every callback builds an object table, and interning the
/// same short strings for each was a measurable share of an import.
struct ObjectKeys {
    id: mlua::String,
    kind: mlua::String,
    tags: mlua::String,
    is_closed: mlua::String,
    nodes: mlua::String,
    members: mlua::String,
    member_ref: mlua::String,
    role: mlua::String,
    /// `type` values: node, way, relation; then member types n, w, r.
    kinds: [mlua::String; 3],
    member_kinds: [mlua::String; 3],
}

impl ObjectKeys {
    fn new(lua: &Lua) -> mlua::Result<ObjectKeys> {
        let string = |text: &str| lua.create_string(text);
        Ok(ObjectKeys {
            id: string("id")?,
            kind: string("type")?,
            tags: string("tags")?,
            is_closed: string("is_closed")?,
            nodes: string("nodes")?,
            members: string("members")?,
            member_ref: string("ref")?,
            role: string("role")?,
            kinds: [string("node")?, string("way")?, string("relation")?],
            member_kinds: [string("n")?, string("w")?, string("r")?],
        })
    }

    fn index(kind: ObjectType) -> usize {
        match kind {
            ObjectType::Node => 0,
            ObjectType::Way => 1,
            ObjectType::Relation => 2,
        }
    }
}

/// Where a state keeps the function of [`FlexRuntime::state_summary`].
const SUMMARY_KEY: &str = "tilepipe.state_summary";

impl std::fmt::Debug for FlexRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlexRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether the config runs for an import or for updates
/// (`osm2pgsql.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `create`: an import.
    Create,
    /// `append`: applying changes.
    Append,
}

impl FlexRuntime {
    /// Loads the config file at `path`.
    pub fn from_file(
        path: &Path,
        mode: Mode,
        default_schema: &str,
    ) -> Result<FlexRuntime, FlexError> {
        let config = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| FlexError::Read {
            path: config.clone(),
            source,
        })?;
        FlexRuntime::from_source(
            &String::from_utf8_lossy(&text),
            &config,
            mode,
            default_schema,
        )
    }

    /// Loads a config from its text; `config` is its path, which names it
    /// in messages (`config.lua:12: …`) and gives `osm2pgsql.config_dir`.
    pub fn from_source(
        source: &str,
        config: &str,
        mode: Mode,
        default_schema: &str,
    ) -> Result<FlexRuntime, FlexError> {
        let load_error = |message: String| FlexError::Load {
            config: config.to_string(),
            message,
        };
        // SAFETY: `debug` is the only unsafe library loaded, and its
        // misuse can only hurt the config's own Lua objects. osm2pgsql
        // opens every standard library (`luaL_openlibs` in
        // output-flex.cpp), so configs may use it; the import's parallel
        // workers need `debug.getupvalue` (see `state_summary`).
        let lua = unsafe {
            Lua::unsafe_new_with(
                mlua::StdLib::ALL_SAFE | mlua::StdLib::DEBUG,
                mlua::LuaOptions::new(),
            )
        };
        let shared: SharedRef = Rc::new(RefCell::new(Shared {
            default_schema: default_schema.to_string(),
            context: Some(Context::Main),
            ..Shared::default()
        }));
        let object_metatable = install_api(&lua, &shared, config, mode)
            .map_err(|e| load_error(format!("internal error in Lua setup: {e}")))?;
        lua.load(source)
            .set_name(format!("@{config}"))
            .exec()
            .map_err(|e| load_error(error_text(&e)))?;
        let osm2pgsql: Table = lua
            .globals()
            .get("osm2pgsql")
            .map_err(|e| load_error(e.to_string()))?;
        let callback = |name: &str| -> Result<Option<Function>, FlexError> {
            match osm2pgsql.raw_get::<Value>(name) {
                Ok(Value::Function(f)) => Ok(Some(f)),
                Ok(Value::Nil) => Ok(None),
                _ => Err(load_error(format!("osm2pgsql.{name} must be a function."))),
            }
        };
        let runtime = FlexRuntime {
            process_node: callback("process_node")?,
            process_way: callback("process_way")?,
            process_relation: callback("process_relation")?,
            select_relation_members: callback("select_relation_members")?,
            keys: ObjectKeys::new(&lua)
                .map_err(|e| load_error(format!("internal error in Lua setup: {e}")))?,
            lua,
            shared,
            config: config.to_string(),
            object_metatable,
        };
        if runtime.shared.borrow().tables.is_empty() {
            return Err(load_error(
                "No tables defined in Lua config. Nothing to do!".into(),
            ));
        }
        runtime.shared.borrow_mut().context = None;
        Ok(runtime)
    }

    /// A summary of the state the config keeps, by where it lives (a
    /// global, a field of `osm2pgsql`, a local a callback uses): equal
    /// summaries mean the callbacks run in between left the state as it
    /// was (see `state_signature.lua`).
    pub fn state_summary(&self) -> Result<std::collections::BTreeMap<String, String>, FlexError> {
        let fail = |e: mlua::Error| FlexError::Load {
            config: self.config.clone(),
            message: format!("internal error summarising the Lua state: {e}"),
        };
        let summarise = match self
            .lua
            .named_registry_value::<Option<Function>>(SUMMARY_KEY)
        {
            Ok(Some(function)) => function,
            Ok(None) => {
                let function: Function = self
                    .lua
                    .load(include_str!("state_signature.lua"))
                    .set_name("=tilepipe state summary")
                    .eval()
                    .map_err(fail)?;
                self.lua
                    .set_named_registry_value(SUMMARY_KEY, &function)
                    .map_err(fail)?;
                function
            }
            Err(e) => return Err(fail(e)),
        };
        summarise.call(()).map_err(fail)
    }

    /// The tables the config defined, in definition order.
    pub fn tables(&self) -> Vec<TableDef> {
        self.shared.borrow().tables.clone()
    }

    /// The expire outputs the config defined
    /// (`osm2pgsql.define_expire_output`), in definition order: the
    /// indexes [`ColumnExpire::output`](super::expire::ColumnExpire::output)
    /// refers to.
    pub fn expire_outputs(&self) -> Vec<ExpireOutputDef> {
        self.shared.borrow().expire_outputs.clone()
    }

    /// Whether any callback ran in this state (so Lua globals may hold
    /// data from it).
    pub fn has_run(&self) -> bool {
        self.shared.borrow().has_run
    }

    /// The config's path as given.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Whether the config does two-stage processing.
    pub fn has_select_relation_members(&self) -> bool {
        self.select_relation_members.is_some()
    }

    /// Sets `osm2pgsql.stage` (2 while marked ways are processed again).
    pub fn set_stage(&self, stage: i64) -> Result<(), FlexError> {
        let osm2pgsql: Table =
            self.lua
                .globals()
                .get("osm2pgsql")
                .map_err(|e| FlexError::Load {
                    config: self.config.clone(),
                    message: e.to_string(),
                })?;
        osm2pgsql
            .raw_set("stage", stage)
            .map_err(|e| FlexError::Load {
                config: self.config.clone(),
                message: e.to_string(),
            })
    }

    /// Runs `process_node`; the rows it inserted.
    pub fn process_node(&self, node: &Node) -> Result<Vec<FlexRow>, FlexError> {
        let Some(function) = &self.process_node else {
            return Ok(Vec::new());
        };
        let object = ObjectId {
            kind: ObjectType::Node,
            id: node.id,
        };
        // On osmium's 1e-7° grid, as osm2pgsql stores every location: a
        // diff may carry more decimals.
        let current = Current::Node {
            location: node.location.map(|l| {
                let (lon, lat) = l.to_fixed();
                Location::from_fixed(lon, lat)
            }),
        };
        self.call(
            function,
            "process_node",
            Context::ProcessNode,
            object,
            current,
            |lua| self.object_table(lua, object, &node.tags, |_| Ok(())),
        )
    }

    /// Runs `process_way` with the way's node locations from `locations`
    /// (nodes without one are left out of its geometries).
    pub fn process_way(
        &self,
        way: &Way,
        locations: &dyn NodeLocations,
    ) -> Result<Vec<FlexRow>, FlexError> {
        let Some(function) = &self.process_way else {
            return Ok(Vec::new());
        };
        let object = ObjectId {
            kind: ObjectType::Way,
            id: way.id,
        };
        let current = Current::Way {
            locations: way
                .nodes
                .iter()
                .filter_map(|&id| locations.location(id))
                .collect(),
        };
        self.call(
            function,
            "process_way",
            Context::ProcessWay,
            object,
            current,
            |lua| {
                self.object_table(lua, object, &way.tags, |table| {
                    let closed = !way.nodes.is_empty() && way.nodes.first() == way.nodes.last();
                    table.raw_set(&self.keys.is_closed, closed)?;
                    table.raw_set(
                        &self.keys.nodes,
                        lua.create_sequence_from(way.nodes.iter().copied())?,
                    )
                })
            },
        )
    }

    /// Runs `process_relation` with its members found through `ways` and
    /// `locations`. While inserts are disabled (see
    /// [`FlexRuntime::replay_relation`]) it only rebuilds Lua state.
    pub fn process_relation(
        &self,
        relation: &Relation,
        ways: &dyn WayLookup,
        locations: &dyn NodeLocations,
    ) -> Result<Vec<FlexRow>, FlexError> {
        let Some(function) = &self.process_relation else {
            return Ok(Vec::new());
        };
        let object = ObjectId {
            kind: ObjectType::Relation,
            id: relation.id,
        };
        let current = relation_members(relation, ways, locations);
        self.call(
            function,
            "process_relation",
            Context::ProcessRelation,
            object,
            current,
            |lua| self.relation_table(lua, object, relation),
        )
    }

    /// Runs `process_relation` with `insert` disabled, as osm2pgsql's
    /// stage 1c does for the relations of marked ways before stage 2, so
    /// that data the config collects for stage 2 is complete.
    pub fn replay_relation(
        &self,
        relation: &Relation,
        ways: &dyn WayLookup,
        locations: &dyn NodeLocations,
    ) -> Result<(), FlexError> {
        self.shared.borrow_mut().inserts_disabled = true;
        let result = self.process_relation(relation, ways, locations);
        self.shared.borrow_mut().inserts_disabled = false;
        result.map(|_| ())
    }

    /// Runs `select_relation_members`: the way ids to process again in
    /// stage 2.
    pub fn select_relation_members(&self, relation: &Relation) -> Result<Vec<i64>, FlexError> {
        let Some(function) = &self.select_relation_members else {
            return Ok(Vec::new());
        };
        let object = ObjectId {
            kind: ObjectType::Relation,
            id: relation.id,
        };
        let fail = |message: String| FlexError::Callback {
            function: "select_relation_members",
            object,
            message,
        };
        {
            let mut shared = self.shared.borrow_mut();
            shared.context = Some(Context::SelectRelationMembers);
            shared.has_run = true;
            shared.object = Some(object);
            shared.current = Current::None;
        }
        let result = self
            .relation_table(&self.lua, object, relation)
            .and_then(|table| function.call::<Value>(table));
        self.shared.borrow_mut().context = None;
        let returned = result.map_err(|e| fail(error_text(&e)))?;
        marked_way_ids(&returned).map_err(fail)
    }

    /// Calls one process callback and returns the rows it inserted.
    fn call(
        &self,
        function: &Function,
        name: &'static str,
        context: Context,
        object: ObjectId,
        current: Current,
        make_object: impl FnOnce(&Lua) -> mlua::Result<Table>,
    ) -> Result<Vec<FlexRow>, FlexError> {
        let fail = |e: mlua::Error| FlexError::Callback {
            function: name,
            object,
            message: error_text(&e),
        };
        let table = make_object(&self.lua).map_err(fail)?;
        {
            let mut shared = self.shared.borrow_mut();
            shared.context = Some(context);
            shared.object = Some(object);
            shared.object_table = Some(table.clone());
            shared.current = current;
            shared.rows.clear();
            shared.has_run = true;
        }
        let result = function.call::<()>(table);
        let mut shared = self.shared.borrow_mut();
        shared.context = None;
        shared.object_table = None;
        shared.current = Current::None;
        let rows = std::mem::take(&mut shared.rows);
        drop(shared);
        result.map_err(fail)?;
        Ok(rows)
    }

    /// The Lua table of an object: `id`, `type`, `tags` and what `extra`
    /// adds, with the object metatable.
    fn object_table(
        &self,
        lua: &Lua,
        object: ObjectId,
        tags: &Tags,
        extra: impl FnOnce(&Table) -> mlua::Result<()>,
    ) -> mlua::Result<Table> {
        let keys = &self.keys;
        let table = lua.create_table_with_capacity(0, 6)?;
        table.raw_set(&keys.id, object.id)?;
        table.raw_set(&keys.kind, &keys.kinds[ObjectKeys::index(object.kind)])?;
        let tag_table = lua.create_table_with_capacity(0, tags.len())?;
        for (key, value) in tags {
            tag_table.raw_set(key.as_str(), value.as_str())?;
        }
        table.raw_set(&keys.tags, tag_table)?;
        extra(&table)?;
        table.set_metatable(Some(self.object_metatable.clone()))?;
        Ok(table)
    }

    fn relation_table(
        &self,
        lua: &Lua,
        object: ObjectId,
        relation: &Relation,
    ) -> mlua::Result<Table> {
        self.object_table(lua, object, &relation.tags, |table| {
            let members = lua.create_table_with_capacity(relation.members.len(), 0)?;
            for (i, member) in relation.members.iter().enumerate() {
                let keys = &self.keys;
                let entry = lua.create_table_with_capacity(0, 3)?;
                entry.raw_set(
                    &keys.kind,
                    &keys.member_kinds[ObjectKeys::index(member.kind)],
                )?;
                entry.raw_set(&keys.member_ref, member.id)?;
                entry.raw_set(&keys.role, member.role.as_str())?;
                members.raw_set(i + 1, entry)?;
            }
            table.raw_set(&self.keys.members, members)
        })
    }
}

/// The members of a relation its geometry constructors use: node member
/// locations and way members' node locations, missing ones left out
/// (osm2pgsql's `relation_cache_t::add_members`).
fn relation_members(
    relation: &Relation,
    ways: &dyn WayLookup,
    locations: &dyn NodeLocations,
) -> Current {
    let mut nodes = Vec::new();
    let mut member_ways = Vec::new();
    let mut order = Vec::new();
    for member in &relation.members {
        match member.kind {
            ObjectType::Node => {
                if let Some(location) = locations.location(member.id) {
                    order.push(MemberRef::Node(nodes.len()));
                    nodes.push(location);
                }
            }
            ObjectType::Way => {
                if let Some(way_nodes) = ways.way_nodes(member.id) {
                    order.push(MemberRef::Way(member_ways.len()));
                    member_ways.push(
                        way_nodes
                            .iter()
                            .filter_map(|&id| locations.location(id))
                            .collect(),
                    );
                }
            }
            ObjectType::Relation => {}
        }
    }
    Current::Relation {
        nodes,
        ways: member_ways,
        order,
    }
}

/// The way ids in what `select_relation_members` returned: nil, or a
/// table whose `ways` field (if any) is an array of non-zero integers.
fn marked_way_ids(returned: &Value) -> Result<Vec<i64>, String> {
    let table = match returned {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(table) => table,
        _ => {
            return Err(
                "select_relation_members() returned something other than nil or a table.".into(),
            )
        }
    };
    let not_array = "Table returned from select_relation_members() contains 'ways' field, but it isn't an array table.";
    let ways = match table.raw_get::<Value>("ways").map_err(|e| e.to_string())? {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(ways) => ways,
        _ => return Err(not_array.into()),
    };
    let length = ways.raw_len();
    if ways.pairs::<Value, Value>().count() != length {
        return Err(not_array.into());
    }
    (1..=length)
        .map(|i| match ways.raw_get::<Value>(i) {
            Ok(Value::Integer(id)) if id != 0 => Ok(id),
            Ok(Value::Number(n)) if n.fract() == 0.0 && n != 0.0 => Ok(n as i64),
            _ => Err("Table returned from select_relation_members() contains 'ways' field, which must contain an array of non-zero integer way ids.".into()),
        })
        .collect()
}

/// A Lua error as one line: the message of the innermost cause, and the
/// config line a Rust function was called from when the message lacks one.
fn error_text(error: &mlua::Error) -> String {
    match error {
        mlua::Error::CallbackError { traceback, cause } => {
            let message = error_text(cause);
            if is_config_location(&message) {
                return message;
            }
            // A Rust function raised it: prefix the config line that called
            // it, as Lua's own errors are (`config.lua:12: …`).
            match traceback
                .lines()
                .map(str::trim)
                .find(|l| is_config_location(l))
            {
                Some(line) => {
                    let location = line.split(": in").next().unwrap_or(line);
                    format!("{}: {message}", location.trim_end_matches(':'))
                }
                None => message,
            }
        }
        mlua::Error::RuntimeError(message) | mlua::Error::SyntaxError { message, .. } => {
            message.clone()
        }
        mlua::Error::WithContext { cause, .. } => error_text(cause),
        other => other.to_string(),
    }
}

/// `file.lua:12:` at the start of a traceback line or message.
fn is_config_location(text: &str) -> bool {
    let Some((file, rest)) = text.split_once(".lua:") else {
        return false;
    };
    !file.starts_with('[') && rest.chars().next().is_some_and(|c| c.is_ascii_digit())
}

/// A table handle as `define_table` returns it (`osm2pgsql.Table`).
#[derive(Clone)]
struct TableHandle {
    index: usize,
    shared: SharedRef,
}

impl TableHandle {
    fn with<T>(&self, f: impl FnOnce(&TableDef) -> T) -> T {
        f(&self.shared.borrow().tables[self.index])
    }
}

impl UserData for TableHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(this.with(|t| format!("osm2pgsql.Table[{}]", t.name)))
        });
        methods.add_method("name", |_, this, ()| Ok(this.with(|t| t.name.clone())));
        methods.add_method("schema", |_, this, ()| Ok(this.with(|t| t.schema.clone())));
        methods.add_method("cluster", |_, this, ()| Ok(this.with(|t| t.cluster)));
        methods.add_method("columns", |lua, this, ()| {
            let columns = lua.create_table()?;
            let definitions = this.with(|t| t.columns.clone());
            for (i, column) in definitions.iter().enumerate() {
                let entry = lua.create_table()?;
                entry.raw_set("name", column.name.as_str())?;
                entry.raw_set("sql_type", column.sql_type())?;
                entry.raw_set("not_null", column.not_null)?;
                entry.raw_set("create_only", column.create_only)?;
                columns.raw_set(i + 1, entry)?;
            }
            Ok(columns)
        });
        methods.add_method("insert", |lua, this, row: Value| insert(lua, this, row));
        methods.add_method("add_row", |_, _, _: MultiValue| -> mlua::Result<()> {
            Err(mlua::Error::RuntimeError(
                "add_row() is not supported (osm2pgsql deprecated it in 1.9 and removed it in 2.0): use insert()".into(),
            ))
        });
    }
}

/// A geometry handed to Lua (`osm2pgsql.Geometry`).
#[derive(Clone)]
struct LuaGeometry(FlexGeometry);

impl UserData for LuaGeometry {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(this.0.geometry_type())
        });
        methods.add_meta_method(MetaMethod::Len, |_, this, ()| Ok(this.0.num_geometries()));
        methods.add_method("area", |_, this, ()| Ok(this.0.area()));
        methods.add_method("spherical_area", |_, this, ()| {
            this.0
                .spherical_area()
                .map_err(|e| mlua::Error::RuntimeError(format!("Error in 'spherical_area': {e}")))
        });
        methods.add_method("length", |_, this, ()| Ok(this.0.length()));
        methods.add_method("centroid", |_, this, ()| Ok(LuaGeometry(this.0.centroid())));
        methods.add_method("geometry_n", |_, this, n: i64| {
            Ok(LuaGeometry(this.0.geometry_n(n)))
        });
        methods.add_method("geometry_type", |_, this, ()| Ok(this.0.geometry_type()));
        methods.add_method("is_null", |_, this, ()| Ok(this.0.is_null()));
        methods.add_method("line_merge", |_, this, ()| {
            Ok(LuaGeometry(this.0.line_merge()))
        });
        methods.add_method("num_geometries", |_, this, ()| Ok(this.0.num_geometries()));
        methods.add_method("reverse", |_, this, ()| Ok(LuaGeometry(this.0.reverse())));
        methods.add_method("segmentize", |_, this, max_length: f64| {
            Ok(LuaGeometry(this.0.segmentize(max_length)))
        });
        methods.add_method("simplify", |_, this, tolerance: f64| {
            Ok(LuaGeometry(this.0.simplify(tolerance)))
        });
        methods.add_method("srid", |_, this, ()| Ok(this.0.srid()));
        methods.add_method("transform", |_, this, srid: i32| {
            this.0
                .transform(srid)
                .map(LuaGeometry)
                .map_err(|e| mlua::Error::RuntimeError(format!("Error in 'transform': {e}")))
        });
        methods.add_method(
            "pole_of_inaccessibility",
            |_, this, options: Option<Table>| {
                let stretch = match &options {
                    Some(options) => options.get::<Option<f64>>("stretch")?.unwrap_or(1.0),
                    None => 1.0,
                };
                if stretch.is_nan() || stretch <= 0.0 {
                    return Err(mlua::Error::RuntimeError(
                        "Error in 'pole_of_inaccessibility': The 'stretch' factor must be > 0."
                            .into(),
                    ));
                }
                Ok(LuaGeometry(this.0.pole_of_inaccessibility(stretch)))
            },
        );
        methods.add_method("geometries", |lua, this, ()| {
            let parts: Vec<FlexGeometry> = this.0.geometries();
            let next = std::cell::Cell::new(0usize);
            lua.create_function(move |_, ()| {
                let i = next.get();
                next.set(i + 1);
                Ok(parts.get(i).cloned().map(LuaGeometry))
            })
        });
    }
}

/// Creates the `osm2pgsql` table with `define_table`, the table and
/// geometry classes and the prelude's helpers; returns the metatable of
/// OSM objects.
fn install_api(lua: &Lua, shared: &SharedRef, config: &str, mode: Mode) -> mlua::Result<Table> {
    let osm2pgsql = lua.create_table()?;
    osm2pgsql.raw_set("version", "1.8.0")?;
    osm2pgsql.raw_set(
        "mode",
        match mode {
            Mode::Create => "create",
            Mode::Append => "append",
        },
    )?;
    osm2pgsql.raw_set("stage", 1)?;
    let config_dir = match Path::new(config).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => format!("{}/", dir.display()),
        _ => String::new(),
    };
    osm2pgsql.raw_set("config_dir", config_dir)?;
    let define_shared = shared.clone();
    osm2pgsql.raw_set(
        "define_table",
        lua.create_function(move |_, definition: Value| define_table(&define_shared, definition))?,
    )?;
    let define_shared = shared.clone();
    osm2pgsql.raw_set(
        "define_expire_output",
        lua.create_function(move |_, definition: Value| {
            define_expire_output(&define_shared, definition)
        })?,
    )?;
    lua.globals().set("osm2pgsql", osm2pgsql)?;
    let object_metatable: Table = lua
        .load(include_str!("prelude.lua"))
        .set_name("=tilepipe flex prelude")
        .eval()?;
    let methods: Table = object_metatable.raw_get("__index")?;
    add_object_methods(lua, &methods, shared)?;
    Ok(object_metatable)
}

fn define_table(shared_ref: &SharedRef, definition: Value) -> mlua::Result<TableHandle> {
    let mut shared = shared_ref.borrow_mut();
    if shared.context != Some(Context::Main) {
        return Err(mlua::Error::RuntimeError(
            "Database tables have to be defined in the main Lua code, not in any of the callbacks."
                .into(),
        ));
    }
    let Value::Table(definition) = definition else {
        return Err(mlua::Error::RuntimeError(
            "Argument #1 to 'define_table' must be a table.".into(),
        ));
    };
    let table = parse_table(
        &definition,
        &shared.default_schema,
        &shared.tables,
        shared.expire_outputs.len(),
    )
    .map_err(mlua::Error::RuntimeError)?;
    shared.tables.push(table);
    Ok(TableHandle {
        index: shared.tables.len() - 1,
        shared: shared_ref.clone(),
    })
}

/// `osm2pgsql.define_expire_output{…}` (osm2pgsql 1.9+).
fn define_expire_output(
    shared_ref: &SharedRef,
    definition: Value,
) -> mlua::Result<ExpireOutputHandle> {
    let mut shared = shared_ref.borrow_mut();
    if shared.context != Some(Context::Main) {
        return Err(mlua::Error::RuntimeError(
            "Expire outputs have to be defined in the main Lua code, not in any of the callbacks."
                .into(),
        ));
    }
    let definition = parse_expire_output(&definition, &shared.default_schema)
        .map_err(mlua::Error::RuntimeError)?;
    shared.expire_outputs.push(definition.clone());
    Ok(ExpireOutputHandle {
        index: shared.expire_outputs.len() - 1,
        definition,
    })
}

/// `table:insert(row)` (osm2pgsql's `table_insert`).
fn insert(lua: &Lua, handle: &TableHandle, row: Value) -> mlua::Result<MultiValue> {
    let mut shared = handle.shared.borrow_mut();
    if shared.inserts_disabled {
        return Ok(MultiValue::new());
    }
    let fail = |message: String| mlua::Error::RuntimeError(format!("Error in 'insert': {message}"));
    if !matches!(
        shared.context,
        Some(Context::ProcessNode | Context::ProcessWay | Context::ProcessRelation)
    ) {
        return Err(fail(
            "The function insert() can only be called from the process_node/way/relation() functions.".into(),
        ));
    }
    let Value::Table(row) = row else {
        return Err(fail(
            "Need two parameters: The osm2pgsql.Table and the row data.".into(),
        ));
    };
    let object = shared.object.expect("a process callback is running");
    let Shared {
        tables,
        rows,
        object_table,
        column_keys,
        column_names,
        column_text,
        column_bytes,
        column_slots,
        ..
    } = &mut *shared;
    let table = &tables[handle.index];
    if column_keys.len() < tables.len() {
        column_keys.resize_with(tables.len(), Vec::new);
    }
    let keys = &mut column_keys[handle.index];
    if keys.is_empty() {
        for column in table.written_columns() {
            keys.push(lua.create_string(&column.name)?);
        }
    }
    if column_names.len() < tables.len() {
        column_names.resize_with(tables.len(), || None);
    }
    let names = match &column_names[handle.index] {
        Some(names) => names,
        None => column_names[handle.index].insert(lua.create_sequence_from(keys.iter().cloned())?),
    };
    column_bytes.clear();
    value::read_columns(
        lua,
        &row,
        names,
        table.written_columns(),
        column_bytes,
        column_slots,
    )?;
    if let Some(ids) = &table.ids {
        if !ids.kind.accepts(object.kind) {
            return Err(fail(format!(
                "Trying to add {} to table '{}'.",
                object.kind, table.name
            )));
        }
    }
    // The plain columns' text, separators and NULLs: the geometry's hex
    // then grows it at most once.
    let mut line = Vec::with_capacity(column_bytes.len() + 3 * column_slots.len() + 64);
    let mut surely_valid = true;
    let mut order_key = None;
    for (index, (column, key)) in table.written_columns().zip(keys.iter()).enumerate() {
        if index > 0 {
            line.push(b'\t');
        }
        let present = match column.column_type {
            ColumnType::IdType => {
                line.push(object.kind.letter().to_ascii_uppercase() as u8);
                true
            }
            ColumnType::IdNum => {
                let id = table
                    .ids
                    .as_ref()
                    .map_or(object.id, |ids| ids.id_value(object));
                write_integer(&mut line, id);
                true
            }
            ColumnType::Geometry(kind) => {
                let value: Value = row.raw_get(key)?;
                // Borrowed, not cloned: the row's geometry is read once.
                let borrowed = match &value {
                    Value::Nil => None,
                    Value::UserData(data) => match data.borrow::<LuaGeometry>() {
                        Ok(geometry) => Some(geometry),
                        Err(_) => {
                            return Err(fail(format!(
                                "Need geometry data for geometry column '{}'.",
                                column.name
                            )))
                        }
                    },
                    _ => {
                        return Err(fail(format!(
                            "Need geometry data for geometry column '{}'.",
                            column.name
                        )))
                    }
                };
                let geometry = borrowed.as_ref().map(|g| &g.0);
                let bytes = geometry
                    .map(|g| g.to_ewkb(column.srid, column_type(kind), &column.name))
                    .transpose()
                    .map_err(|e| fail(format!("table '{}': {e}", table.name)))?
                    .flatten();
                if let (Some(_), Some(geometry)) = (&bytes, geometry) {
                    // What the import needs to know: where the row sorts
                    // (PostGIS's order of the stored geometry) and, for the
                    // columns osm2pgsql's trigger checks, whether it is
                    // surely valid. Stored is what to_ewkb wrote: 4326
                    // geometries projected into 3857 columns, anything
                    // else as it is (osm2pgsql's quirk for 3857 into 4326).
                    let transformed = if geometry.srid() == 4326 && column.srid == 3857 {
                        geometry.transform(3857).ok()
                    } else {
                        None
                    };
                    let stored = transformed.as_ref().unwrap_or(geometry);
                    if let Some(stored) = stored.geometry() {
                        if table
                            .geometry_column()
                            .is_some_and(|first| first.name == column.name)
                        {
                            order_key = Some(postgis_sort_key(stored, column.srid));
                        }
                        let checked = column.srid != 4326 && kind != GeometryKind::Point;
                        if checked && (column.srid != 3857 || !surely_valid_geometry(stored)) {
                            surely_valid = false;
                        }
                    }
                }
                // Hex digits need no COPY escaping.
                bytes
                    .map(|b| crate::apply::geom::ewkb::push_hex(&mut line, &b))
                    .is_some()
            }
            _ => match &column_slots[index] {
                ColumnSlot::Null => false,
                ColumnSlot::Text(range) => {
                    line.extend_from_slice(&column_bytes[range.clone()]);
                    true
                }
                ColumnSlot::Convert => {
                    let value: Value = row.raw_get(key)?;
                    column_text.clear();
                    let present =
                        value::convert_into(lua, column, &value, column_text).map_err(fail)?;
                    if present {
                        escape_copy_text(&mut line, column_text);
                    }
                    present
                }
            },
        };
        if !present {
            line.extend_from_slice(b"\\N");
        }
        if !present && column.not_null {
            let column_name = column.name.clone();
            let object_table = object_table.clone();
            return Ok(MultiValue::from_vec(vec![
                Value::Boolean(false),
                Value::String(lua.create_string("null value in not null column.")?),
                Value::String(lua.create_string(&column_name)?),
                object_table.map_or(Value::Nil, Value::Table),
            ]));
        }
    }
    rows.push(FlexRow {
        table: handle.index,
        object,
        line,
        surely_valid,
        order_key,
    });
    Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
}

/// `get_bbox` and the `as_*` constructors on OSM objects; each works on
/// the object of the running callback, as in osm2pgsql.
fn add_object_methods(lua: &Lua, methods: &Table, shared: &SharedRef) -> mlua::Result<()> {
    type Build = fn(&Current) -> Option<FlexGeometry>;
    let constructors: [(&str, &str, Build); 7] = [
        ("as_point", "process_node() function", |c| match c {
            Current::Node { location } => {
                Some(location.map_or_else(FlexGeometry::null, FlexGeometry::from_node))
            }
            _ => None,
        }),
        ("as_linestring", "process_way() function", |c| match c {
            Current::Way { locations } => Some(FlexGeometry::linestring(locations)),
            _ => None,
        }),
        ("as_polygon", "process_way() function", |c| match c {
            Current::Way { locations } => Some(FlexGeometry::way_polygon(locations)),
            _ => None,
        }),
        (
            "as_multipoint",
            "process_node/relation() functions",
            |c| match c {
                Current::Node { location } => {
                    Some(location.map_or_else(FlexGeometry::null, FlexGeometry::from_node))
                }
                Current::Relation { nodes, .. } => Some(FlexGeometry::multipoint(nodes)),
                _ => None,
            },
        ),
        (
            "as_multilinestring",
            "process_way/relation() functions",
            |c| match c {
                Current::Way { locations } => Some(FlexGeometry::linestring(locations)),
                Current::Relation { ways, .. } => {
                    Some(FlexGeometry::relation_multilinestring(ways))
                }
                _ => None,
            },
        ),
        (
            "as_multipolygon",
            "process_way/relation() functions",
            |c| match c {
                Current::Way { locations } => Some(FlexGeometry::way_polygon(locations)),
                Current::Relation { ways, .. } => Some(FlexGeometry::relation_multipolygon(ways)),
                _ => None,
            },
        ),
        (
            "as_geometrycollection",
            "process_relation() function",
            |c| match c {
                relation @ Current::Relation { .. } => {
                    Some(FlexGeometry::collection(&relation.collection_members()))
                }
                _ => None,
            },
        ),
    ];
    for (name, where_allowed, build) in constructors {
        let shared = shared.clone();
        let function = lua.create_function(move |_, arguments: MultiValue| {
            if arguments.len() > 1 {
                return Err(mlua::Error::RuntimeError(format!(
                    "No parameter(s) needed for {name}()."
                )));
            }
            let shared = shared.borrow();
            let in_callback = matches!(
                shared.context,
                Some(Context::ProcessNode | Context::ProcessWay | Context::ProcessRelation)
            );
            match build(&shared.current).filter(|_| in_callback) {
                Some(geometry) => Ok(LuaGeometry(geometry)),
                None => Err(mlua::Error::RuntimeError(format!(
                    "The function {name}() can only be called from the {where_allowed}."
                ))),
            }
        })?;
        methods.raw_set(name, function)?;
    }
    let shared = shared.clone();
    let get_bbox = lua.create_function(move |_, arguments: MultiValue| {
        if arguments.len() > 1 {
            return Err(mlua::Error::RuntimeError("No parameter(s) needed for get_bbox().".into()));
        }
        let shared = shared.borrow();
        let points: Vec<Location> = match &shared.current {
            Current::Node { location } => location.iter().copied().collect(),
            Current::Way { locations } => locations.clone(),
            // osm2pgsql 1.8 takes only the way members into account.
            Current::Relation { ways, .. } => ways.iter().flatten().copied().collect(),
            Current::None => {
                return Err(mlua::Error::RuntimeError(
                    "The function get_bbox() can only be called from the process_node/way/relation() functions.".into(),
                ))
            }
        };
        let Some(first) = points.first() else {
            return Ok(MultiValue::new());
        };
        let (mut min_lon, mut min_lat, mut max_lon, mut max_lat) = (first.lon, first.lat, first.lon, first.lat);
        for p in &points {
            min_lon = min_lon.min(p.lon);
            min_lat = min_lat.min(p.lat);
            max_lon = max_lon.max(p.lon);
            max_lat = max_lat.max(p.lat);
        }
        Ok(MultiValue::from_vec(
            [min_lon, min_lat, max_lon, max_lat].into_iter().map(Value::Number).collect(),
        ))
    })?;
    methods.raw_set("get_bbox", get_bbox)?;
    Ok(())
}

/// The geometry module's name for a column's geometry kind.
fn column_type(kind: GeometryKind) -> GeometryColumnType {
    match kind {
        GeometryKind::Any => GeometryColumnType::Geometry,
        GeometryKind::Point => GeometryColumnType::Point,
        GeometryKind::LineString => GeometryColumnType::LineString,
        GeometryKind::Polygon => GeometryColumnType::Polygon,
        GeometryKind::MultiPoint => GeometryColumnType::MultiPoint,
        GeometryKind::MultiLineString => GeometryColumnType::MultiLineString,
        GeometryKind::MultiPolygon => GeometryColumnType::MultiPolygon,
        GeometryKind::GeometryCollection => GeometryColumnType::GeometryCollection,
    }
}

/// A userdata as a geometry, for tests and callers holding Lua values.
pub fn geometry_of(value: &AnyUserData) -> Option<FlexGeometry> {
    value.borrow::<LuaGeometry>().ok().map(|g| g.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const CONFIG: &str = r#"
local points = osm2pgsql.define_node_table('points', {
    { column = 'name' }, { column = 'tags', type = 'jsonb' }, { column = 'geom', type = 'point', not_null = true } })
local routes = osm2pgsql.define_table{ name = 'routes', ids = { type = 'any', id_column = 'osm_id', type_column = 'osm_type' },
    columns = { { column = 'refs' }, { column = 'n', type = 'int4' } } }
local refs = {}
function osm2pgsql.process_node(object)
    if object.tags.fail then object.tags.no_such_method() end
    if object.tags.nogeom then
        local ok, message, column = points:insert{ name = object.tags.name }
        assert(not ok and message == 'null value in not null column.' and column == 'geom')
        return
    end
    points:insert{ name = object:grab_tag('name'), tags = object.tags, geom = object:as_point() }
end
function osm2pgsql.process_way(object)
    if osm2pgsql.stage == 2 then
        routes:insert{ refs = table.concat(refs[object.id] or {}, ';'), n = #object.nodes }
    end
end
function osm2pgsql.process_relation(object)
    for _, id in ipairs(osm2pgsql.way_member_ids(object)) do
        refs[id] = refs[id] or {}
        table.insert(refs[id], object.tags.ref)
    end
end
function osm2pgsql.select_relation_members(relation)
    return { ways = osm2pgsql.way_member_ids(relation) }
end
"#;

    fn runtime(source: &str) -> Result<FlexRuntime, FlexError> {
        FlexRuntime::from_source(source, "/etc/test/config.lua", Mode::Create, "public")
    }

    fn node(id: i64, tags: &[(&str, &str)]) -> Node {
        Node {
            id,
            meta: Default::default(),
            location: Some(Location {
                lon: 9.5,
                lat: 47.1,
            }),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The fields of a row's COPY line, unescaped; `None` is NULL.
    fn fields(row: &FlexRow) -> Vec<Option<String>> {
        std::str::from_utf8(&row.line)
            .unwrap()
            .split('\t')
            .map(|field| {
                (field != "\\N").then(|| {
                    field
                        .replace("\\t", "\t")
                        .replace("\\n", "\n")
                        .replace("\\r", "\r")
                        .replace("\\\\", "\\")
                })
            })
            .collect()
    }

    #[test]
    fn tables_and_node_rows() {
        let runtime = runtime(CONFIG).unwrap();
        let tables = runtime.tables();
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].columns[0].name, "node_id");
        let rows = runtime
            .process_node(&node(7, &[("name", "A"), ("shop", "x")]))
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(fields(&rows[0])[0].as_deref(), Some("7"));
        assert_eq!(fields(&rows[0])[1].as_deref(), Some("A"));
        assert_eq!(fields(&rows[0])[2].as_deref(), Some(r#"{"shop":"x"}"#));
        assert!(runtime
            .process_node(&node(8, &[("nogeom", "1")]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn two_stages() {
        let runtime = runtime(CONFIG).unwrap();
        assert!(runtime.has_select_relation_members());
        let relation = Relation {
            id: 3,
            meta: Default::default(),
            members: vec![crate::osm::Member {
                kind: ObjectType::Way,
                id: 10,
                role: String::new(),
            }],
            tags: vec![("ref".into(), "R1".into())],
        };
        let ways: HashMap<i64, Way> = HashMap::new();
        let locations: HashMap<i64, Location> = HashMap::new();
        assert_eq!(
            runtime.select_relation_members(&relation).unwrap(),
            vec![10]
        );
        assert!(runtime
            .process_relation(&relation, &ways, &locations)
            .unwrap()
            .is_empty());
        runtime.set_stage(2).unwrap();
        let way = Way {
            id: 10,
            meta: Default::default(),
            nodes: vec![1, 2, 3],
            tags: Vec::new(),
        };
        let rows = runtime.process_way(&way, &locations).unwrap();
        assert_eq!(
            fields(&rows[0]),
            vec![
                Some("W".into()),
                Some("10".into()),
                Some("R1".into()),
                Some("3".into())
            ]
        );
    }

    #[test]
    fn errors_name_config_line_and_object() {
        let loaded = runtime(CONFIG).unwrap();
        let err = loaded
            .process_node(&node(9, &[("fail", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("Failed to execute Lua function 'osm2pgsql.process_node' for node 9: /etc/test/config.lua:"), "{err}");
        let err = runtime(
            "osm2pgsql.define_table{ name = 't', columns = { { column = 'x', type = 'txt' } } }",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("Unknown column type 'txt'") && err.contains("config.lua:1"),
            "{err}"
        );
        let err = runtime("local x = ").unwrap_err().to_string();
        assert!(
            err.starts_with("Error loading lua config /etc/test/config.lua: "),
            "{err}"
        );
        let err = runtime("x = 1").unwrap_err().to_string();
        assert!(
            err.ends_with("No tables defined in Lua config. Nothing to do!"),
            "{err}"
        );
        let wrong = "local t = osm2pgsql.define_way_table('w', { { column = 'a' } })
            function osm2pgsql.process_node(o) t:insert{ a = 'x' } end";
        let err = runtime(wrong)
            .unwrap()
            .process_node(&node(1, &[("a", "b")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Error in 'insert': Trying to add node to table 'w'."),
            "{err}"
        );
        let context = "local t = osm2pgsql.define_node_table('n', { { column = 'a' } })
            function osm2pgsql.process_node(o) o:as_linestring() end";
        let err = runtime(context)
            .unwrap()
            .process_node(&node(1, &[("a", "b")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "The function as_linestring() can only be called from the process_way() function."
            ),
            "{err}"
        );
        let unknown = "local t = osm2pgsql.define_node_table('n', { { column = 'a' } })
            function osm2pgsql.process_node(o) t:insert{ a = o.colour } end";
        let err = runtime(unknown)
            .unwrap()
            .process_node(&node(1, &[("a", "b")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field 'colour'"), "{err}");
    }

    #[test]
    fn expire_outputs() {
        let source = r#"
            local eo = osm2pgsql.define_expire_output{ maxzoom = 14, minzoom = 12, filename = 'pois.tiles' }
            local t = osm2pgsql.define_expire_output{ maxzoom = 10, table = 'tiles', schema = 'exp' }
            assert(eo:maxzoom() == 14 and eo:minzoom() == 12 and eo:filename() == 'pois.tiles')
            assert(eo:schema() == 'public' and eo:table() == '' and eo:max_tiles_geometry() == 10000000)
            assert(tostring(t) == 'osm2pgsql.ExpireOutput[minzoom=10,maxzoom=10,filename=,schema=exp,table=tiles]')
            osm2pgsql.define_node_table('pois', {
                { column = 'geom', type = 'point', expire = eo },
                { column = 'geom2', type = 'point', projection = 4326 },
            })
            osm2pgsql.define_way_table('roads', {
                { column = 'geom', type = 'linestring', expire = { { output = t, mode = 'boundary-only' }, { output = eo } } },
            })
            function osm2pgsql.process_node(object)
                osm2pgsql.define_expire_output{ maxzoom = 1, filename = 'x' }
            end
        "#;
        let loaded = runtime(source).unwrap();
        let outputs = loaded.expire_outputs();
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[1].qualified_table().unwrap(), "\"exp\".\"tiles\"");
        let tables = loaded.tables();
        let expire = |t: usize, c: &str| {
            let column = tables[t].columns.iter().find(|col| col.name == c).unwrap();
            column
                .expire
                .iter()
                .map(|e| (e.output, e.mode))
                .collect::<Vec<_>>()
        };
        use super::super::expire::ExpireMode;
        assert_eq!(expire(0, "geom"), [(0, ExpireMode::FullArea)]);
        assert_eq!(expire(0, "geom2"), []);
        assert_eq!(
            expire(1, "geom"),
            [(1, ExpireMode::BoundaryOnly), (0, ExpireMode::FullArea)]
        );
        let err = loaded
            .process_node(&node(1, &[("a", "b")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Expire outputs have to be defined in the main Lua code, not in any of the callbacks."),
            "{err}"
        );
        // An output must be defined before a column names it, and only
        // 3857 geometry columns may name one.
        let err = runtime(
            "osm2pgsql.define_node_table('n', { { column = 'g', type = 'point', projection = 4326,
                expire = osm2pgsql.define_expire_output{ maxzoom = 3, filename = 'f' } } })",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("table 'n': column 'g': Expire only allowed for geometry columns in Web Mercator projection.")
                && err.contains("config.lua:1"),
            "{err}"
        );
        let err = runtime("osm2pgsql.define_expire_output{ maxzoom = 30, filename = 'f' }")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "config.lua:1: The 'maxzoom' field in a expire output must be between 1 and 20."
            ),
            "{err}"
        );
    }

    #[test]
    fn helpers() {
        let source = r#"
            osm2pgsql.define_node_table('n', { { column = 'a' } })
            assert(osm2pgsql.has_prefix('addr:street', 'addr:') and not osm2pgsql.has_suffix('name', ':en'))
            assert(osm2pgsql.trim('  a b  ') == 'a b' and osm2pgsql.trim('   ') == '')
            local parts = osm2pgsql.split_string('a; b;;c')
            assert(#parts == 3 and parts[2] == 'b')
            local v, u = osm2pgsql.split_unit('3.5 m', 'km')
            assert(v == 3.5 and u == 'm')
            assert(osm2pgsql.clamp(12, 0, 10) == 10)
            local check = osm2pgsql.make_check_values_func({ 'a', 'b' }, 'z')
            assert(check('a') == 'a' and check('q') == 'z' and check(nil) == 'z')
            local clean = osm2pgsql.make_clean_tags_func({ 'note', 'source:*', '*:wikipedia' })
            local tags = { note = 'x', ['source:geometry'] = 'y', ['de:wikipedia'] = 'z', name = 'n' }
            assert(clean(tags) == false and tags.name == 'n' and next(tags, next(tags)) == nil)
            assert(osm2pgsql.mode == 'create' and osm2pgsql.stage == 1 and osm2pgsql.config_dir == '/etc/test/')
        "#;
        runtime(source).unwrap();
    }
}
