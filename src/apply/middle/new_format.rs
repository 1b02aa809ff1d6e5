//! osm2pgsql's "new" middle format (opt-in in 1.9, default for imports from
//! 1.11, the only one of 2.x), read and written as osm2pgsql writes it, so
//! that a database osm2pgsql 2.x imported goes on being updated by either
//! program. From osm2pgsql's `src/middle-pgsql.cpp` (2.x:
//! `middle_pgsql_t` table definitions, `way_set`, `relation_set`,
//! `store_tags`, `store_members`, the prepared `mark_*` statements and
//! `create_fw_dep_indexes`) and specs/osm2pgsql-middle.md §3:
//!
//! - Tables: `PREFIX_nodes (id, lat, lon, tags jsonb)`, `PREFIX_ways (id,
//!   nodes int8[], tags jsonb)`, `PREFIX_rels (id, members jsonb, tags
//!   jsonb)`. Tags a JSON object, NULL when there are none; members
//!   `[{"type":"N"|"W"|"R","ref":id,"role":"…"}]` in member order. The
//!   nodes table holds every node with its tags; with `--flat-nodes` there
//!   is none (locations in the file, read and written by [`Middle`]).
//!   These are tilepipe's own tables without its reverse-lookup columns,
//!   so reading rows and writing nodes share tilepipe's code.
//! - Reverse lookups on the indexes osm2pgsql built, none added here: ways
//!   by node through `PREFIX_index_bucket(nodes)` and its GIN index
//!   `PREFIX_ways_nodes_bucket_idx` exactly as in the legacy layout;
//!   relations by member through `PREFIX_member_ids(members, 'N'|'W')`,
//!   the function osm2pgsql defines, and the GIN expression indexes
//!   `PREFIX_rels_node_members_idx`/`PREFIX_rels_way_members_idx` on it.
//!   The query repeats the indexed expression (same function, same
//!   `char(1)` argument) so that PostgreSQL can use the index.
//!
//! Not covered: `-x` (the `created`, `version`, … columns and the
//! `PREFIX_users` table), which `tilepipe adopt` refuses.

use super::{with_index_probes, write_relation_columns, Middle, MiddleError};
use crate::apply::pgcopy::CopyStream;
use crate::db::quote_ident;
use crate::osm::Relation;
use postgres::GenericClient;
use std::borrow::Borrow;

/// Drops and creates the three tables as osm2pgsql 2.x does (without the
/// nodes table when locations are in a flat-nodes file), without their
/// primary keys, which the `index_*` functions add after loading.
pub(super) fn create(middle: &Middle, client: &mut impl GenericClient) -> Result<(), MiddleError> {
    middle.create_tables(
        client,
        "lat int4 NOT NULL, lon int4 NOT NULL, tags jsonb",
        "nodes int8[] NOT NULL, tags jsonb",
        "members jsonb NOT NULL, tags jsonb",
        "CASCADE",
    )
}

/// The relations' primary key, osm2pgsql's member id function and its two
/// GIN expression indexes, with osm2pgsql's names.
pub(super) fn index_relations(
    middle: &Middle,
    client: &mut impl GenericClient,
) -> Result<(), MiddleError> {
    let rels = middle.rels_table();
    let member_ids = middle.qualified("member_ids");
    let prefix = &middle.prefix;
    let node_index = quote_ident(&format!("{prefix}_rels_node_members_idx"));
    let way_index = quote_ident(&format!("{prefix}_rels_way_members_idx"));
    client
        .batch_execute(&format!(
            "ALTER TABLE {rels} ADD PRIMARY KEY (id);
             CREATE OR REPLACE FUNCTION {member_ids}(jsonb, char(1)) RETURNS int8[] AS $$
               SELECT array_agg((el->>'ref')::int8)
                 FROM jsonb_array_elements($1) AS el WHERE el->>'type' = $2
             $$ LANGUAGE SQL IMMUTABLE;
             CREATE INDEX {node_index} ON {rels}
               USING GIN ({member_ids}(members, 'N'::char(1))) WITH (fastupdate = off);
             CREATE INDEX {way_index} ON {rels}
               USING GIN ({member_ids}(members, 'W'::char(1))) WITH (fastupdate = off);
             ANALYZE {rels} (id);"
        ))
        .map_err(middle.err("rels"))
}

/// Relations as osm2pgsql's `relation_set`: id, members as jsonb (`[]`
/// without members), tags.
pub(super) fn copy_relations(
    middle: &Middle,
    client: &mut impl GenericClient,
    relations: impl IntoIterator<Item = impl Borrow<Relation>>,
) -> Result<u64, MiddleError> {
    let err = middle.err("rels");
    let mut copy = CopyStream::start(client, &middle.rels_table(), &["id", "members", "tags"])
        .map_err(&err)?;
    for relation in relations {
        let relation = relation.borrow();
        copy.begin_row().map_err(&err)?;
        write_relation_columns(&mut copy, relation);
    }
    copy.finish().map_err(err)
}

/// Relations having any of the given nodes or ways as members:
/// osm2pgsql's `mark_rels_by_node`/`mark_rels_by_way`, one probe of the
/// member index per id.
pub(super) fn relations_using(
    middle: &Middle,
    client: &mut impl GenericClient,
    node_ids: &[i64],
    way_ids: &[i64],
) -> Result<Vec<i64>, MiddleError> {
    if node_ids.is_empty() && way_ids.is_empty() {
        return Ok(Vec::new());
    }
    let member_ids = middle.qualified("member_ids");
    let rows = with_index_probes(client, |client| {
        client.query(
            &format!(
                "SELECT r.id FROM unnest($1::int8[]) AS n(id)
                   JOIN {rels} r ON {member_ids}(r.members, 'N'::char(1)) && ARRAY[n.id]
                 UNION
                 SELECT r.id FROM unnest($2::int8[]) AS w(id)
                   JOIN {rels} r ON {member_ids}(r.members, 'W'::char(1)) && ARRAY[w.id]
                 ORDER BY 1",
                rels = middle.rels_table()
            ),
            &[&node_ids, &way_ids],
        )
    })
    .map_err(middle.err("rels"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
