//! The middle: what is needed to rebuild geometries when a diff arrives
//! (node locations, way node lists, relation members, and tags), behind one
//! interface, [`Middle`], over two table layouts ([`MiddleLayout`]):
//!
//! - [`MiddleLayout::Tilepipe`], what `tilepipe import` creates: osm2pgsql
//!   2.x's table layout (`PREFIX_nodes`, `PREFIX_ways`, `PREFIX_rels` with
//!   jsonb tags and members), plus columns for the reverse lookups:
//!   `node_buckets` on ways (see [`NODE_BUCKET_SHIFT`]), and
//!   `member_nodes`/`member_ways` on relations, the ids of their node and
//!   way members. Computed here and indexed as plain arrays, they spare
//!   PostgreSQL a SQL function call per row (osm2pgsql 2.x indexes an
//!   expression over the members jsonb), which made the relations' index
//!   builds several times slower.
//! - [`MiddleLayout::Legacy18`], osm2pgsql 1.8's slim tables, read and
//!   written with exactly its encodings so that osm2pgsql can keep
//!   updating a database tilepipe updated, and the other way round; see
//!   the [`legacy`] module. `tilepipe adopt` records it
//!   ([`LEGACY18_MIDDLE_FORMAT`]) for a database osm2pgsql imported.
//! - [`MiddleLayout::Osm2pgsqlNew`], osm2pgsql 1.9+/2.x's "new" format:
//!   tilepipe's tables without its lookup columns, the reverse lookups on
//!   the expression indexes osm2pgsql built; see the [`new_format`]
//!   module. `tilepipe adopt` records it ([`NEW_MIDDLE_FORMAT`]).
//!
//! Reverse lookups (which ways use these nodes, which relations have these
//! members) run on GIN indexes, one query per batch, never per object.
//!
//! Node locations are in the nodes table, or, in either layout, in an
//! osm2pgsql flat-nodes file ([`Middle::with_flat_nodes`]; see
//! [`super::flatnodes`]). Then there is no nodes table at all, as with
//! osm2pgsql 1.8's `--flat-nodes`: the locations are all the middle is
//! ever asked about nodes (a changed node comes with its tags in the diff,
//! and relations use their member nodes' locations only), so tagged nodes
//! are not kept in a table either. (osm2pgsql 1.9+ keeps them with
//! `--middle-with-nodes`, for other readers of its middle.)

pub mod legacy;
pub mod new_format;

use super::flatnodes::{FlatNodes, FlatNodesError};
use super::pgcopy::{json_string, json_tags, CopyError, CopyStream};
use crate::apply::BUILD_MEMORY_SQL;
use crate::db::quote_ident;
use crate::osm::{Location, Member, Meta, Node, ObjectType, Relation, Tags, Way};
use postgres::types::Json;
use postgres::GenericClient;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A failed statement or COPY on one middle table, or a failed read or
/// write of the flat-nodes file.
#[derive(Debug, thiserror::Error)]
pub enum MiddleError {
    /// A statement or COPY.
    #[error("middle table {table}: {source}")]
    Table {
        /// The table, without schema (`planet_osm_ways`; `planet_osm_*`
        /// for statements on all three).
        table: String,
        /// The database or COPY error.
        #[source]
        source: CopyError,
    },
    /// The flat-nodes file.
    #[error(transparent)]
    FlatNodes(#[from] FlatNodesError),
}

/// The layout version of the middle tables, recorded by the import
/// (`tilepipe_middle_format`) and checked before every apply: a database
/// whose middle an older tilepipe laid out differently must be imported
/// again, and says so, rather than failing mid-batch.
pub const MIDDLE_FORMAT: &str = "2";

/// The `osm2pgsql_properties` key [`MIDDLE_FORMAT`] is stored under.
pub const MIDDLE_FORMAT_PROPERTY: &str = "tilepipe_middle_format";

/// The value of [`MIDDLE_FORMAT_PROPERTY`] that `tilepipe adopt` records
/// for a database whose middle osm2pgsql 1.8 laid out
/// ([`MiddleLayout::Legacy18`]): its tables are used as they are.
pub const LEGACY18_MIDDLE_FORMAT: &str = "osm2pgsql-1.8-legacy";

/// The value of [`MIDDLE_FORMAT_PROPERTY`] that `tilepipe adopt` records
/// for a database whose middle osm2pgsql 1.9+/2.x laid out in its new
/// format ([`MiddleLayout::Osm2pgsqlNew`], `db_format` 2).
pub const NEW_MIDDLE_FORMAT: &str = "osm2pgsql-new";

/// Way → node lookups go through node-id buckets (id >> 5) rather than
/// node ids, as osm2pgsql's middle does: consecutive ids share a bucket, so
/// the reverse index holds a fraction of the entries and builds several
/// times faster. The buckets are computed here and stored with the way
/// (`node_buckets`), so neither COPY nor the index build runs SQL per row.
pub const NODE_BUCKET_SHIFT: u32 = 5;

/// The distinct buckets of a way's nodes, sorted, into a reused vector.
fn node_buckets_into(nodes: &[i64], buckets: &mut Vec<i64>) {
    sorted_unique_into(nodes.iter().map(|id| id >> NODE_BUCKET_SHIFT), buckets);
}

/// The ids of a relation's members of one type, sorted and unique, into a
/// reused vector.
fn member_ids_into(members: &[Member], kind: ObjectType, ids: &mut Vec<i64>) {
    let of_kind = members.iter().filter(|m| m.kind == kind).map(|m| m.id);
    sorted_unique_into(of_kind, ids);
}

/// `values` sorted without duplicates into `out` (cleared first): the
/// arrays the reverse lookups' GIN indexes hold.
fn sorted_unique_into(values: impl Iterator<Item = i64>, out: &mut Vec<i64>) {
    out.clear();
    out.extend(values);
    out.sort_unstable();
    out.dedup();
}

/// How the middle tables are laid out: which columns they have and how
/// tags, members and the reverse-lookup indexes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MiddleLayout {
    /// tilepipe's own (see the module documentation).
    #[default]
    Tilepipe,
    /// osm2pgsql 1.8's slim tables ("legacy" format in 1.9 to 1.11),
    /// with the nodes table, or without it and a flat-nodes file
    /// (`--flat-nodes`, see [`Middle::with_flat_nodes`]).
    Legacy18 {
        /// Whether the ways have osm2pgsql's bucket index
        /// (`PREFIX_ways_nodes_bucket_idx` on `PREFIX_index_bucket(nodes)`);
        /// without it (`--middle-way-node-index-id-shift 0`) ways are
        /// found through a GIN index on `nodes` itself.
        bucket_index: bool,
    },
    /// osm2pgsql 1.9+/2.x's new format (`db_format` 2 in
    /// `osm2pgsql_properties`), with the nodes table or a flat-nodes file.
    Osm2pgsqlNew {
        /// Whether the ways have the bucket index, as in
        /// [`MiddleLayout::Legacy18`] (always in 2.x; 1.9 to 1.11 could
        /// be run with `--middle-way-node-index-id-shift 0`).
        bucket_index: bool,
    },
}

impl MiddleLayout {
    /// Whether an append looks up the ways and relations using a changed
    /// node or way in its first version (version 1). osm2pgsql 2.x does
    /// not (`osmdata_t::node` and `osmdata_t::way` in src/osmdata.cpp,
    /// from 2.0: a new object cannot be referenced yet), so on its new
    /// format neither does tilepipe, and both rebuild the same rows even
    /// where an extract's relation already lists a way created later.
    /// osm2pgsql 1.8 (and 1.9 to 1.11, also on the new format) and
    /// tilepipe's own layout look them up.
    pub fn looks_up_parents_of_first_versions(self) -> bool {
        !matches!(self, MiddleLayout::Osm2pgsqlNew { .. })
    }

    /// What [`MIDDLE_FORMAT_PROPERTY`] records for this layout.
    pub fn format_property(self) -> &'static str {
        match self {
            MiddleLayout::Tilepipe => MIDDLE_FORMAT,
            MiddleLayout::Legacy18 { .. } => LEGACY18_MIDDLE_FORMAT,
            MiddleLayout::Osm2pgsqlNew { .. } => NEW_MIDDLE_FORMAT,
        }
    }

    /// The layout of the middle tables `PREFIX_*` in `schema`, from the
    /// type of `PREFIX_ways.tags` (`text[]` in the legacy layout, `jsonb`
    /// otherwise) and whether it has tilepipe's `node_buckets` (osm2pgsql's
    /// new format has not), and, for osm2pgsql's layouts, whether the
    /// bucket index exists (as osm2pgsql 1.8 decides in
    /// `check_bucket_index`, here looked up in `schema`). `None` without a
    /// ways table, or for a layout none of these.
    pub fn detect(
        client: &mut impl GenericClient,
        schema: &str,
        prefix: &str,
    ) -> Result<Option<MiddleLayout>, MiddleError> {
        let err = |source: postgres::Error| MiddleError::Table {
            table: format!("{prefix}_ways"),
            source: source.into(),
        };
        let ways = format!("{prefix}_ways");
        let columns: Vec<(String, String)> = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0
                   AND NOT a.attisdropped",
                &[&schema, &ways],
            )
            .map_err(err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let type_of = |name: &str| {
            columns
                .iter()
                .find(|(column, _)| column == name)
                .map(|(_, kind)| kind.as_str())
        };
        let mut bucket_index = || -> Result<bool, MiddleError> {
            Ok(client
                .query_opt(
                    "SELECT 1 FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'i'",
                    &[&schema, &format!("{prefix}_ways_nodes_bucket_idx")],
                )
                .map_err(err)?
                .is_some())
        };
        match (type_of("tags"), type_of("node_buckets")) {
            (Some("text[]"), _) => Ok(Some(MiddleLayout::Legacy18 {
                bucket_index: bucket_index()?,
            })),
            (Some("jsonb"), Some(_)) => Ok(Some(MiddleLayout::Tilepipe)),
            (Some("jsonb"), None) => Ok(Some(MiddleLayout::Osm2pgsqlNew {
                bucket_index: bucket_index()?,
            })),
            _ => Ok(None),
        }
    }
}

/// The middle tables of a prefix and schema, in one layout.
#[derive(Debug, Clone)]
pub struct Middle {
    schema: String,
    prefix: String,
    layout: MiddleLayout,
    /// Node locations in a flat-nodes file instead of the nodes table;
    /// shared by the clones (a mutex: the middle's methods take `&self`).
    flat_nodes: Option<Arc<Mutex<FlatNodes>>>,
}

/// Whether `schema.PREFIX_nodes` exists: not in a database osm2pgsql
/// imported with `--flat-nodes`, whose node locations are in that file.
pub fn nodes_table_exists(
    client: &mut impl GenericClient,
    schema: &str,
    prefix: &str,
) -> Result<bool, MiddleError> {
    let table = format!("{prefix}_nodes");
    let row = client
        .query_opt(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &table],
        )
        .map_err(|source| MiddleError::Table {
            table,
            source: source.into(),
        })?;
    Ok(row.is_some())
}

impl Middle {
    /// The middle tables `PREFIX_nodes`, `PREFIX_ways` and `PREFIX_rels` in
    /// `schema`, in tilepipe's layout.
    pub fn new(schema: &str, prefix: &str) -> Self {
        Self::with_layout(schema, prefix, MiddleLayout::Tilepipe)
    }

    /// The middle tables of `prefix` in `schema`, in `layout`.
    pub fn with_layout(schema: &str, prefix: &str, layout: MiddleLayout) -> Self {
        Middle {
            schema: schema.to_string(),
            prefix: prefix.to_string(),
            layout,
            flat_nodes: None,
        }
    }

    /// The same tables, with node locations in `nodes` (osm2pgsql's
    /// `--flat-nodes FILE`) and no nodes table.
    pub fn with_flat_nodes(mut self, nodes: FlatNodes) -> Self {
        self.flat_nodes = Some(Arc::new(Mutex::new(nodes)));
        self
    }

    /// The layout these tables are read and written in.
    pub fn layout(&self) -> MiddleLayout {
        self.layout
    }

    /// Whether node locations are in the nodes table (else in a
    /// flat-nodes file, and there is no nodes table).
    pub fn has_nodes_table(&self) -> bool {
        self.flat_nodes.is_none()
    }

    /// The flat-nodes file, locked, if node locations are in one. A panic
    /// of an earlier holder does not make it unusable: every write to the
    /// file can be repeated (see [`super::flatnodes`], "Crash safety").
    pub fn flat_nodes(&self) -> Option<MutexGuard<'_, FlatNodes>> {
        self.flat_nodes
            .as_ref()
            .map(|nodes| nodes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn is_legacy(&self) -> bool {
        matches!(self.layout, MiddleLayout::Legacy18 { .. })
    }

    /// `schema.PREFIX_suffix`, quoted for SQL: a middle table, or one of
    /// osm2pgsql's functions beside them.
    pub(super) fn qualified(&self, suffix: &str) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&format!("{}_{suffix}", self.prefix))
        )
    }

    /// `schema.PREFIX_nodes`, quoted for SQL.
    pub fn nodes_table(&self) -> String {
        self.qualified("nodes")
    }

    /// `schema.PREFIX_ways`, quoted for SQL.
    pub fn ways_table(&self) -> String {
        self.qualified("ways")
    }

    /// `schema.PREFIX_rels`, quoted for SQL.
    pub fn rels_table(&self) -> String {
        self.qualified("rels")
    }

    fn err<'a, E: Into<CopyError>>(&'a self, suffix: &'a str) -> impl Fn(E) -> MiddleError + 'a {
        move |source| MiddleError::Table {
            table: format!("{}_{suffix}", self.prefix),
            source: source.into(),
        }
    }

    /// Drops and creates the middle tables. Their indexes, primary keys
    /// included, come after loading: one bulk build is much cheaper than
    /// maintaining them row by row during the COPY.
    /// With a flat-nodes file there is no nodes table (one left by an
    /// earlier import is dropped).
    pub fn create(&self, client: &mut impl GenericClient) -> Result<(), MiddleError> {
        match self.layout {
            MiddleLayout::Legacy18 { .. } => return legacy::create(self, client),
            MiddleLayout::Osm2pgsqlNew { .. } => return new_format::create(self, client),
            MiddleLayout::Tilepipe => {}
        }
        self.create_tables(
            client,
            "lat int4 NOT NULL, lon int4 NOT NULL, tags jsonb",
            "nodes int8[] NOT NULL, tags jsonb, node_buckets int8[] NOT NULL",
            "members jsonb NOT NULL, tags jsonb, member_nodes int8[] NOT NULL, \
             member_ways int8[] NOT NULL",
            "",
        )
    }

    /// Drops the three tables (`drop_option`: `CASCADE` as osm2pgsql does,
    /// or nothing) and creates them, each with an `id int8 NOT NULL` then
    /// these columns, the nodes table only when locations are not in a
    /// flat-nodes file; primary keys come after loading.
    pub(super) fn create_tables(
        &self,
        client: &mut impl GenericClient,
        nodes_columns: &str,
        ways_columns: &str,
        rels_columns: &str,
        drop_option: &str,
    ) -> Result<(), MiddleError> {
        let (nodes, ways, rels) = (self.nodes_table(), self.ways_table(), self.rels_table());
        let create_nodes = if self.has_nodes_table() {
            format!("CREATE TABLE {nodes} (id int8 NOT NULL, {nodes_columns});")
        } else {
            String::new()
        };
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {nodes}, {ways}, {rels} {drop_option};
                 {create_nodes}
                 CREATE TABLE {ways} (id int8 NOT NULL, {ways_columns});
                 CREATE TABLE {rels} (id int8 NOT NULL, {rels_columns});"
            ))
            .map_err(self.err("*"))
    }

    /// Primary key and statistics of the nodes table, built once it is
    /// loaded; the same in both layouts (1.8 names the key
    /// `PREFIX_nodes_pkey` too). Statistics only for the columns lookups
    /// filter on, here and below: those of coordinates, tags and way node
    /// lists are never used and cost most of ANALYZE's time. Nothing to do
    /// without a nodes table.
    pub fn index_nodes(&self, client: &mut impl GenericClient) -> Result<(), MiddleError> {
        if !self.has_nodes_table() {
            return Ok(());
        }
        let nodes = self.nodes_table();
        client
            .batch_execute(&format!(
                "{BUILD_MEMORY_SQL}
                 ALTER TABLE {nodes} ADD PRIMARY KEY (id);
                 ANALYZE {nodes} (id);"
            ))
            .map_err(self.err("nodes"))
    }

    /// Primary key, node-bucket index and statistics of the ways table.
    pub fn index_ways(&self, client: &mut impl GenericClient) -> Result<(), MiddleError> {
        // osm2pgsql 2.x builds the ways' bucket function and index as 1.8
        // did (`create_fw_dep_indexes`).
        if self.layout != MiddleLayout::Tilepipe {
            return legacy::index_ways(self, client);
        }
        let ways = self.ways_table();
        let ways_idx = quote_ident(&format!("{}_ways_nodes_idx", self.prefix));
        client
            .batch_execute(&format!(
                "{BUILD_MEMORY_SQL}
                 ALTER TABLE {ways} ADD PRIMARY KEY (id);
                 CREATE INDEX {ways_idx} ON {ways} USING GIN (node_buckets) WITH (fastupdate = off);
                 ANALYZE {ways} (id, node_buckets);"
            ))
            .map_err(self.err("ways"))
    }

    /// Primary key, member indexes and statistics of the relations table.
    pub fn index_relations(&self, client: &mut impl GenericClient) -> Result<(), MiddleError> {
        match self.layout {
            MiddleLayout::Legacy18 { .. } => return legacy::index_relations(self, client),
            MiddleLayout::Osm2pgsqlNew { .. } => return new_format::index_relations(self, client),
            MiddleLayout::Tilepipe => {}
        }
        let rels = self.rels_table();
        let prefix = &self.prefix;
        client
            .batch_execute(&format!(
                "{BUILD_MEMORY_SQL}
                 ALTER TABLE {rels} ADD PRIMARY KEY (id);
                 CREATE INDEX {node_members_idx} ON {rels} USING GIN (member_nodes) WITH (fastupdate = off);
                 CREATE INDEX {way_members_idx} ON {rels} USING GIN (member_ways) WITH (fastupdate = off);
                 ANALYZE {rels} (id);",
                node_members_idx = quote_ident(&format!("{prefix}_rels_node_members_idx")),
                way_members_idx = quote_ident(&format!("{prefix}_rels_way_members_idx")),
            ))
            .map_err(self.err("rels"))
    }

    /// Loads nodes with binary COPY, or stores their locations in the
    /// flat-nodes file. Nodes without a location (possible only in broken
    /// input) are skipped: nothing can use them.
    pub fn copy_nodes(
        &self,
        client: &mut impl GenericClient,
        nodes: impl IntoIterator<Item = impl Borrow<Node>>,
    ) -> Result<u64, MiddleError> {
        if let Some(mut file) = self.flat_nodes() {
            let mut stored = 0;
            for node in nodes {
                let node = node.borrow();
                if let Some(location) = node.location {
                    file.set(node.id, Some(location))?;
                    stored += 1;
                }
            }
            return Ok(stored);
        }
        if self.is_legacy() {
            return legacy::copy_nodes(self, client, nodes);
        }
        let err = self.err("nodes");
        let mut copy =
            CopyStream::start(client, &self.nodes_table(), &["id", "lat", "lon", "tags"])
                .map_err(&err)?;
        for node in nodes {
            let node = node.borrow();
            let Some(location) = node.location else {
                continue;
            };
            let (lon, lat) = location.to_fixed();
            copy.begin_row().map_err(&err)?;
            copy.int8(node.id);
            copy.int4(lat);
            copy.int4(lon);
            write_tags(&mut copy, &node.tags);
        }
        copy.finish().map_err(err)
    }

    /// Loads ways with binary COPY, with their node buckets (see
    /// [`NODE_BUCKET_SHIFT`]).
    pub fn copy_ways(
        &self,
        client: &mut impl GenericClient,
        ways: impl IntoIterator<Item = impl Borrow<Way>>,
    ) -> Result<u64, MiddleError> {
        match self.layout {
            MiddleLayout::Legacy18 { .. } => {
                return self.copy_osm2pgsql_ways(client, ways, legacy::write_tags)
            }
            MiddleLayout::Osm2pgsqlNew { .. } => {
                return self.copy_osm2pgsql_ways(client, ways, write_tags)
            }
            MiddleLayout::Tilepipe => {}
        }
        let err = self.err("ways");
        let mut copy = CopyStream::start(
            client,
            &self.ways_table(),
            &["id", "nodes", "tags", "node_buckets"],
        )
        .map_err(&err)?;
        let mut buckets = Vec::new();
        for way in ways {
            let way = way.borrow();
            node_buckets_into(&way.nodes, &mut buckets);
            copy.begin_row().map_err(&err)?;
            copy.int8(way.id);
            copy.int8_array(&way.nodes);
            write_tags(&mut copy, &way.tags);
            copy.int8_array(&buckets);
        }
        copy.finish().map_err(err)
    }

    /// Ways as osm2pgsql's `way_set` writes them in either of its layouts:
    /// id, node ids in order, and tags as `write_tags` puts them (`text[]`
    /// in 1.8's, `jsonb` in 1.9+'s).
    fn copy_osm2pgsql_ways(
        &self,
        client: &mut impl GenericClient,
        ways: impl IntoIterator<Item = impl Borrow<Way>>,
        write_tags: fn(&mut CopyStream, &Tags),
    ) -> Result<u64, MiddleError> {
        let err = self.err("ways");
        let mut copy = CopyStream::start(client, &self.ways_table(), &["id", "nodes", "tags"])
            .map_err(&err)?;
        for way in ways {
            let way = way.borrow();
            copy.begin_row().map_err(&err)?;
            copy.int8(way.id);
            copy.int8_array(&way.nodes);
            write_tags(&mut copy, &way.tags);
        }
        copy.finish().map_err(err)
    }

    /// Loads relations with binary COPY, with the ids of their node and way
    /// members for the reverse lookups.
    pub fn copy_relations(
        &self,
        client: &mut impl GenericClient,
        relations: impl IntoIterator<Item = impl Borrow<Relation>>,
    ) -> Result<u64, MiddleError> {
        match self.layout {
            MiddleLayout::Legacy18 { .. } => {
                return legacy::copy_relations(self, client, relations)
            }
            MiddleLayout::Osm2pgsqlNew { .. } => {
                return new_format::copy_relations(self, client, relations)
            }
            MiddleLayout::Tilepipe => {}
        }
        let err = self.err("rels");
        let mut copy = CopyStream::start(
            client,
            &self.rels_table(),
            &["id", "members", "tags", "member_nodes", "member_ways"],
        )
        .map_err(&err)?;
        let mut ids = Vec::new();
        for relation in relations {
            let relation = relation.borrow();
            copy.begin_row().map_err(&err)?;
            write_relation_columns(&mut copy, relation);
            for kind in [ObjectType::Node, ObjectType::Way] {
                member_ids_into(&relation.members, kind, &mut ids);
                copy.int8_array(&ids);
            }
        }
        copy.finish().map_err(err)
    }

    /// Deletes objects of one type by id (no-op for unknown ids); nodes
    /// in a flat-nodes file get the empty value, as osm2pgsql writes it
    /// (the count is then of the ids given).
    pub fn delete(
        &self,
        client: &mut impl GenericClient,
        kind: ObjectType,
        ids: &[i64],
    ) -> Result<u64, MiddleError> {
        if ids.is_empty() {
            return Ok(0);
        }
        if kind == ObjectType::Node {
            if let Some(mut file) = self.flat_nodes() {
                for &id in ids {
                    file.set(id, None)?;
                }
                return Ok(ids.len() as u64);
            }
        }
        let (table, suffix) = self.table_of(kind);
        client
            .execute(&format!("DELETE FROM {table} WHERE id = ANY($1)"), &[&ids])
            .map_err(self.err(suffix))
    }

    fn table_of(&self, kind: ObjectType) -> (String, &'static str) {
        match kind {
            ObjectType::Node => (self.nodes_table(), "nodes"),
            ObjectType::Way => (self.ways_table(), "ways"),
            ObjectType::Relation => (self.rels_table(), "rels"),
        }
    }

    /// Locations of the given nodes; unknown ids are absent from the map.
    pub fn node_locations(
        &self,
        client: &mut impl GenericClient,
        ids: &[i64],
    ) -> Result<HashMap<i64, Location>, MiddleError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        if let Some(file) = self.flat_nodes() {
            return Ok(ids
                .iter()
                .filter_map(|&id| Some((id, file.get(id)?)))
                .collect());
        }
        let rows = client
            .query(
                &format!(
                    "SELECT id, lon, lat FROM {} WHERE id = ANY($1)",
                    self.nodes_table()
                ),
                &[&ids],
            )
            .map_err(self.err("nodes"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0), Location::from_fixed(r.get(1), r.get(2))))
            .collect())
    }

    /// With a flat-nodes file, makes the slots of the nodes these ways
    /// and relations refer to read as osm2pgsql expects, should they be
    /// in a never-written part of the file ([`FlatNodes::define`]): so
    /// that an `osm2pgsql --append` rebuilding them leaves a missing
    /// node out rather than putting it at (0, 0).
    pub fn define_node_refs<'a>(
        &self,
        ways: impl IntoIterator<Item = &'a Way>,
        relations: impl IntoIterator<Item = &'a Relation>,
    ) -> Result<(), MiddleError> {
        let Some(mut file) = self.flat_nodes() else {
            return Ok(());
        };
        for way in ways {
            for &id in &way.nodes {
                file.define(id)?;
            }
        }
        for relation in relations {
            for member in &relation.members {
                if member.kind == ObjectType::Node {
                    file.define(member.id)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the flat-nodes file's changes to disk and waits for it; a
    /// batch does this before its transaction commits, so a committed
    /// batch never has node locations only in memory.
    pub fn flush_flat_nodes(&self) -> Result<(), MiddleError> {
        if let Some(file) = self.flat_nodes() {
            file.flush()?;
        }
        Ok(())
    }

    /// The given ways with their node lists and tags, in id order
    /// (metadata is not kept); unknown ids are absent.
    pub fn ways(
        &self,
        client: &mut impl GenericClient,
        ids: &[i64],
    ) -> Result<Vec<Way>, MiddleError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // All layouts have `id, nodes, tags`; only the tags' encoding
        // differs (jsonb here and in osm2pgsql's new format, osm2pgsql
        // 1.8's flat text[] in the legacy one).
        let rows = client
            .query(
                &format!(
                    "SELECT id, nodes, tags FROM {} WHERE id = ANY($1) ORDER BY id",
                    self.ways_table()
                ),
                &[&ids],
            )
            .map_err(self.err("ways"))?;
        let legacy = self.is_legacy();
        Ok(rows
            .iter()
            .map(|r| Way {
                id: r.get(0),
                meta: Meta::default(),
                nodes: r.get(1),
                tags: if legacy {
                    legacy::tags_from_array(r.get(2))
                } else {
                    tags_from_json(r.get(2))
                },
            })
            .collect())
    }

    /// The given relations with their members and tags, in id order
    /// (metadata is not kept); unknown ids are absent.
    pub fn relations(
        &self,
        client: &mut impl GenericClient,
        ids: &[i64],
    ) -> Result<Vec<Relation>, MiddleError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // As for ways: all layouts have `id, members, tags`, encoded as
        // jsonb here and in the new format, as osm2pgsql 1.8's flat text[]
        // in the legacy one.
        let rows = client
            .query(
                &format!(
                    "SELECT id, members, tags FROM {} WHERE id = ANY($1) ORDER BY id",
                    self.rels_table()
                ),
                &[&ids],
            )
            .map_err(self.err("rels"))?;
        let legacy = self.is_legacy();
        Ok(rows
            .iter()
            .map(|r| Relation {
                id: r.get(0),
                meta: Meta::default(),
                members: if legacy {
                    legacy::members_from_array(r.get(1))
                } else {
                    members_from_json(r.get(1))
                },
                tags: if legacy {
                    legacy::tags_from_array(r.get(2))
                } else {
                    tags_from_json(r.get(2))
                },
            })
            .collect())
    }

    /// Ways containing any of the given nodes.
    pub fn ways_using_nodes(
        &self,
        client: &mut impl GenericClient,
        node_ids: &[i64],
    ) -> Result<Vec<i64>, MiddleError> {
        if node_ids.is_empty() {
            return Ok(Vec::new());
        }
        // The new format finds ways by node as the legacy one does.
        if let MiddleLayout::Legacy18 { bucket_index }
        | MiddleLayout::Osm2pgsqlNew { bucket_index } = self.layout
        {
            return legacy::ways_using_nodes(self, client, node_ids, bucket_index);
        }
        let rows = with_index_probes(client, |client| {
            client.query(
                // The probe finds the ways of the node's bucket; the node
                // list then picks those that really use it.
                &format!(
                    "SELECT DISTINCT w.id FROM unnest($1::int8[]) AS n(id)
                     JOIN {} w ON w.node_buckets && ARRAY[n.id >> {NODE_BUCKET_SHIFT}]
                       AND n.id = ANY(w.nodes)
                     ORDER BY 1",
                    self.ways_table()
                ),
                &[&node_ids],
            )
        })
        .map_err(self.err("ways"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Relations having any of the given nodes or ways as members.
    pub fn relations_using(
        &self,
        client: &mut impl GenericClient,
        node_ids: &[i64],
        way_ids: &[i64],
    ) -> Result<Vec<i64>, MiddleError> {
        if node_ids.is_empty() && way_ids.is_empty() {
            return Ok(Vec::new());
        }
        match self.layout {
            MiddleLayout::Legacy18 { .. } => {
                return legacy::relations_using(self, client, node_ids, way_ids)
            }
            MiddleLayout::Osm2pgsqlNew { .. } => {
                return new_format::relations_using(self, client, node_ids, way_ids)
            }
            MiddleLayout::Tilepipe => {}
        }
        let rows = with_index_probes(client, |client| {
            client.query(
                &format!(
                    "SELECT r.id FROM unnest($1::int8[]) AS n(id)
                       JOIN {rels} r ON r.member_nodes && ARRAY[n.id]
                     UNION
                     SELECT r.id FROM unnest($2::int8[]) AS w(id)
                       JOIN {rels} r ON r.member_ways && ARRAY[w.id]
                     ORDER BY 1",
                    rels = self.rels_table()
                ),
                &[&node_ids, &way_ids],
            )
        })
        .map_err(self.err("rels"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// Runs a reverse lookup (`unnest(ids) JOIN table ON array_column &&
/// ARRAY[id]`) as one GIN index probe per id. Left to itself the planner
/// takes the unnested ids for a handful of rows and, on a table small
/// enough, prefers scanning it once per id; the array overlap test then
/// runs for every row and id (a 100-object diff on a 10x region: 60 ms
/// instead of 1 ms). A single `&&` with all the ids misleads it the same
/// way. Sequential scans are therefore switched off around the query
/// (transactionally: a failed query's transaction rolls the setting back).
fn with_index_probes<C: GenericClient, T>(
    client: &mut C,
    query: impl FnOnce(&mut C) -> Result<T, postgres::Error>,
) -> Result<T, postgres::Error> {
    client.batch_execute("SET enable_seqscan = off")?;
    let result = query(client)?;
    client.batch_execute("RESET enable_seqscan")?;
    Ok(result)
}

/// The columns a relation row starts with in tilepipe's layout and
/// osm2pgsql 2.x's (`relation_set`): id, members as jsonb, tags.
fn write_relation_columns(copy: &mut CopyStream, relation: &Relation) {
    copy.int8(relation.id);
    copy.jsonb(|out| write_members_json(out, &relation.members));
    write_tags(copy, &relation.tags);
}

/// Tags as a `jsonb` object, or NULL when there are none.
fn write_tags(copy: &mut CopyStream, tags: &Tags) {
    if tags.is_empty() {
        copy.null();
    } else {
        copy.jsonb(|out| json_tags(out, tags));
    }
}

fn tags_from_json(value: Option<Json<serde_json::Value>>) -> Tags {
    match value {
        Some(Json(serde_json::Value::Object(map))) => map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
        _ => Tags::new(),
    }
}

/// Members as osm2pgsql 2.x stores them: `[{"type":"W","ref":1,"role":"outer"}, …]`.
fn write_members_json(out: &mut Vec<u8>, members: &[Member]) {
    out.push(b'[');
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"");
        out.push(member.kind.letter().to_ascii_uppercase() as u8);
        out.extend_from_slice(b"\",\"ref\":");
        out.extend_from_slice(member.id.to_string().as_bytes());
        out.extend_from_slice(b",\"role\":");
        json_string(out, &member.role);
        out.push(b'}');
    }
    out.push(b']');
}

fn members_from_json(value: Json<serde_json::Value>) -> Vec<Member> {
    let Json(serde_json::Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|m| {
            let kind = match m.get("type")?.as_str()? {
                "N" => ObjectType::Node,
                "W" => ObjectType::Way,
                "R" => ObjectType::Relation,
                _ => return None,
            };
            Some(Member {
                kind,
                id: m.get("ref")?.as_i64()?,
                role: m
                    .get("role")
                    .and_then(|r| r.as_str())
                    .unwrap_or("")
                    .to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_buckets(nodes: &[i64]) -> Vec<i64> {
        let mut buckets = Vec::new();
        node_buckets_into(nodes, &mut buckets);
        buckets
    }

    #[test]
    fn node_buckets_are_distinct_sorted_and_shifted() {
        assert_eq!(node_buckets(&[70, 3, 31, 32, 64, 3]), vec![0, 1, 2]);
        assert_eq!(node_buckets(&[]), Vec::<i64>::new());
        assert_eq!(node_buckets(&[-1, -33]), vec![-2, -1]);
    }
}
