//! osm2pgsql 1.8's slim middle ("legacy" format of 1.9 to 1.11), read and
//! written with exactly its encodings, so that a database goes on being
//! updated by either program. Behaviour taken from osm2pgsql 1.8's
//! `src/middle-pgsql.cpp`:
//!
//! - Tables (`sql_for_nodes`, `sql_for_ways`, `sql_for_relations`):
//!   `PREFIX_nodes (id, lat, lon)` with every node, `PREFIX_ways (id,
//!   nodes int8[], tags text[])`, `PREFIX_rels (id, way_off int2, rel_off
//!   int2, parts int8[], members text[], tags text[])`.
//! - Writes (`node_set`, `way_set`, `relation_set`, `buffer_store_tags`):
//!   locations as degrees × 10⁷ (`lat` = y); tags as flat `{k1,v1,k2,v2}`
//!   in object order, NULL when there are none; `parts` the member ids
//!   grouped nodes, ways, relations (member order inside a group), with
//!   `way_off` = number of node members and `rel_off` = node + way
//!   members; `members` pairs of type letter + id and role in member
//!   order, NULL without members (`parts` is then `{}`). An update is a
//!   delete then a COPY, as in 1.8 (`*_delete`, then `*_set`).
//! - Reads (`way_get`, `relation_get`, `pgsql_parse_tags`,
//!   `pgsql_parse_members`): the same arrays decoded back.
//! - Reverse lookups, the prepared statements of `sql_for_ways` and
//!   `sql_for_relations`: `mark_ways_by_node` as `$1 = ANY(nodes) AND
//!   PREFIX_index_bucket(nodes) && PREFIX_index_bucket(ARRAY[$1])` when the
//!   bucket index exists (`check_bucket_index`), else `nodes && ARRAY[$1]`;
//!   `mark_rels_by_node` as `parts && ARRAY[$1] AND parts[1:way_off] &&
//!   ARRAY[$1]` and `mark_rels_by_way` with `parts[way_off+1:rel_off]`.
//!   Here batched, one GIN probe per id, with sequential scans off as for
//!   tilepipe's layout.
//! - Indexes (`create_fw_dep_indexes`): `PREFIX_index_bucket(int8[])` =
//!   `ARRAY(SELECT DISTINCT unnest($1) >> 5)` with the GIN index
//!   `PREFIX_ways_nodes_bucket_idx` on it, and a GIN index on `parts`.
//!
//! With `--flat-nodes` 1.8 creates no nodes table; the locations are then
//! in the file, read and written by [`Middle`] for either layout.
//!
//! Not covered: `-x` attributes (1.8
//! keeps them as `osm_*` pseudo-tags, which read back here as tags), and
//! relations with more than 32767 members, which osm2pgsql skips on input
//! and which are skipped here too (`way_off`/`rel_off` are `int2`).

use super::{with_index_probes, Middle, MiddleError, NODE_BUCKET_SHIFT};
use crate::apply::pgcopy::CopyStream;
use crate::db::quote_ident;
use crate::osm::{Member, Node, ObjectType, Relation, Tags};
use postgres::GenericClient;
use std::borrow::Borrow;

/// The largest member count `way_off`/`rel_off` (`int2`) can describe.
const MAX_MEMBERS: usize = i16::MAX as usize;

/// Drops and creates the three tables as 1.8's `sql_for_*` do (without
/// the nodes table when locations are in a flat-nodes file), without
/// their primary keys, added after loading by the `index_*` functions.
pub(super) fn create(middle: &Middle, client: &mut impl GenericClient) -> Result<(), MiddleError> {
    middle.create_tables(
        client,
        "lat int4 NOT NULL, lon int4 NOT NULL",
        "nodes int8[] NOT NULL, tags text[]",
        "way_off int2, rel_off int2, parts int8[], members text[], tags text[]",
        "CASCADE",
    )
}

/// The ways' primary key, bucket function and bucket index, with 1.8's
/// names and the default shift ([`NODE_BUCKET_SHIFT`]).
pub(super) fn index_ways(
    middle: &Middle,
    client: &mut impl GenericClient,
) -> Result<(), MiddleError> {
    let ways = middle.ways_table();
    let bucket = middle.qualified("index_bucket");
    let index = quote_ident(&format!("{}_ways_nodes_bucket_idx", middle.prefix));
    client
        .batch_execute(&format!(
            "ALTER TABLE {ways} ADD PRIMARY KEY (id);
             CREATE OR REPLACE FUNCTION {bucket}(int8[]) RETURNS int8[] AS $$
               SELECT ARRAY(SELECT DISTINCT unnest($1) >> {NODE_BUCKET_SHIFT})
             $$ LANGUAGE SQL IMMUTABLE;
             CREATE INDEX {index} ON {ways} USING GIN ({bucket}(nodes)) WITH (fastupdate = off);
             ANALYZE {ways} (id);"
        ))
        .map_err(middle.err("ways"))
}

/// The relations' primary key and GIN index on `parts`
/// (`PREFIX_rels_parts_idx`, the name PostgreSQL gives 1.8's unnamed one).
pub(super) fn index_relations(
    middle: &Middle,
    client: &mut impl GenericClient,
) -> Result<(), MiddleError> {
    let rels = middle.rels_table();
    let index = quote_ident(&format!("{}_rels_parts_idx", middle.prefix));
    client
        .batch_execute(&format!(
            "ALTER TABLE {rels} ADD PRIMARY KEY (id);
             CREATE INDEX {index} ON {rels} USING GIN (parts) WITH (fastupdate = off);
             ANALYZE {rels} (id);"
        ))
        .map_err(middle.err("rels"))
}

/// Tags as 1.8's `buffer_store_tags` writes them: NULL when there are
/// none, else `{k1,v1,k2,v2,…}` in object order.
pub(super) fn write_tags(copy: &mut CopyStream, tags: &Tags) {
    if tags.is_empty() {
        copy.null();
    } else {
        copy.text_array(tags.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]));
    }
}

/// Nodes as 1.8's `node_set`: id, lat, lon in fixed point, no tags.
/// Nodes without a location are skipped (1.8 drops them on input).
pub(super) fn copy_nodes(
    middle: &Middle,
    client: &mut impl GenericClient,
    nodes: impl IntoIterator<Item = impl Borrow<Node>>,
) -> Result<u64, MiddleError> {
    let err = middle.err("nodes");
    let mut copy =
        CopyStream::start(client, &middle.nodes_table(), &["id", "lat", "lon"]).map_err(&err)?;
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
    }
    copy.finish().map_err(err)
}

/// `parts`, `way_off` and `rel_off` of a relation's members, as 1.8's
/// `relation_set` computes them: ids grouped by type (nodes, ways,
/// relations), member order inside each group.
fn parts(members: &[Member], out: &mut Vec<i64>) -> (i16, i16) {
    out.clear();
    for kind in [ObjectType::Node, ObjectType::Way, ObjectType::Relation] {
        out.extend(members.iter().filter(|m| m.kind == kind).map(|m| m.id));
    }
    let count = |kind| members.iter().filter(|m| m.kind == kind).count() as i16;
    let way_off = count(ObjectType::Node);
    (way_off, way_off + count(ObjectType::Way))
}

/// A member's first `members` element: type letter and id (`w42`).
fn member_key(member: &Member) -> String {
    format!("{}{}", member.kind.letter(), member.id)
}

/// Relations as 1.8's `relation_set`: way_off, rel_off, parts, members
/// (NULL without members) and tags. Relations with more members than
/// `int2` offsets can count are skipped, as osm2pgsql skips them.
pub(super) fn copy_relations(
    middle: &Middle,
    client: &mut impl GenericClient,
    relations: impl IntoIterator<Item = impl Borrow<Relation>>,
) -> Result<u64, MiddleError> {
    let err = middle.err("rels");
    let mut copy = CopyStream::start(
        client,
        &middle.rels_table(),
        &["id", "way_off", "rel_off", "parts", "members", "tags"],
    )
    .map_err(&err)?;
    let mut ids = Vec::new();
    for relation in relations {
        let relation = relation.borrow();
        if relation.members.len() > MAX_MEMBERS {
            tracing::warn!(
                relation = relation.id,
                members = relation.members.len(),
                "relation with more than {MAX_MEMBERS} members left out of the legacy middle"
            );
            continue;
        }
        let (way_off, rel_off) = parts(&relation.members, &mut ids);
        copy.begin_row().map_err(&err)?;
        copy.int8(relation.id);
        copy.int2(way_off);
        copy.int2(rel_off);
        copy.int8_array(&ids);
        if relation.members.is_empty() {
            copy.null();
        } else {
            let keys: Vec<String> = relation.members.iter().map(member_key).collect();
            copy.text_array(
                keys.iter()
                    .zip(&relation.members)
                    .flat_map(|(key, m)| [key.as_str(), m.role.as_str()]),
            );
        }
        write_tags(&mut copy, &relation.tags);
    }
    copy.finish().map_err(err)
}

/// Tags from a flat `text[]` (NULL: none); an odd last element, which
/// osm2pgsql never writes, is dropped.
pub(super) fn tags_from_array(array: Option<Vec<String>>) -> Tags {
    let mut tags = Tags::new();
    let mut items = array.unwrap_or_default().into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        tags.push((key, value));
    }
    tags
}

/// Members from `members` pairs (`w42`, role), as 1.8's
/// `pgsql_parse_members`; malformed pairs, which osm2pgsql never writes,
/// are dropped.
pub(super) fn members_from_array(array: Option<Vec<String>>) -> Vec<Member> {
    let mut members = Vec::new();
    let mut items = array.unwrap_or_default().into_iter();
    while let (Some(key), Some(role)) = (items.next(), items.next()) {
        let kind = match key.as_bytes().first() {
            Some(b'n') => ObjectType::Node,
            Some(b'w') => ObjectType::Way,
            Some(b'r') => ObjectType::Relation,
            _ => continue,
        };
        let Ok(id) = key[1..].parse() else {
            continue;
        };
        members.push(Member { kind, id, role });
    }
    members
}

/// Ways containing any of the given nodes: 1.8's `mark_ways_by_node`, one
/// probe of the bucket index (or of the `nodes` index without it) per
/// node.
pub(super) fn ways_using_nodes(
    middle: &Middle,
    client: &mut impl GenericClient,
    node_ids: &[i64],
    bucket_index: bool,
) -> Result<Vec<i64>, MiddleError> {
    if node_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ways = middle.ways_table();
    let condition = if bucket_index {
        // The expression must be the indexed one, function call included:
        // the database's function carries the shift it was built with.
        let bucket = middle.qualified("index_bucket");
        format!("{bucket}(w.nodes) && {bucket}(ARRAY[n.id]) AND n.id = ANY(w.nodes)")
    } else {
        "w.nodes && ARRAY[n.id]".to_string()
    };
    let rows = with_index_probes(client, |client| {
        client.query(
            &format!(
                "SELECT DISTINCT w.id FROM unnest($1::int8[]) AS n(id)
                 JOIN {ways} w ON {condition}
                 ORDER BY 1"
            ),
            &[&node_ids],
        )
    })
    .map_err(middle.err("ways"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Relations having any of the given nodes or ways as members: 1.8's
/// `mark_rels_by_node` and `mark_rels_by_way`, one probe of the `parts`
/// index per id, then the id looked for in its type's slice of `parts`.
pub(super) fn relations_using(
    middle: &Middle,
    client: &mut impl GenericClient,
    node_ids: &[i64],
    way_ids: &[i64],
) -> Result<Vec<i64>, MiddleError> {
    if node_ids.is_empty() && way_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = with_index_probes(client, |client| {
        client.query(
            &format!(
                "SELECT r.id FROM unnest($1::int8[]) AS n(id)
                   JOIN {rels} r ON r.parts && ARRAY[n.id]
                    AND r.parts[1:r.way_off] && ARRAY[n.id]
                 UNION
                 SELECT r.id FROM unnest($2::int8[]) AS w(id)
                   JOIN {rels} r ON r.parts && ARRAY[w.id]
                    AND r.parts[r.way_off+1:r.rel_off] && ARRAY[w.id]
                 ORDER BY 1",
                rels = middle.rels_table()
            ),
            &[&node_ids, &way_ids],
        )
    })
    .map_err(middle.err("rels"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(kind: ObjectType, id: i64, role: &str) -> Member {
        Member {
            kind,
            id,
            role: role.to_string(),
        }
    }

    #[test]
    fn parts_group_members_by_type_in_member_order() {
        // Relation 1 of Liechtenstein: relations first, then a way.
        let members = [
            member(ObjectType::Relation, 114, ""),
            member(ObjectType::Relation, 115, ""),
            member(ObjectType::Way, 7122, ""),
            member(ObjectType::Node, 9, "stop"),
            member(ObjectType::Way, 7000, "outer"),
        ];
        let mut ids = Vec::new();
        assert_eq!(parts(&members, &mut ids), (1, 3));
        assert_eq!(ids, vec![9, 7122, 7000, 114, 115]);
        assert_eq!(parts(&[], &mut ids), (0, 0));
        assert!(ids.is_empty());
    }

    #[test]
    fn members_and_tags_decode_their_pairs() {
        let array = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            members_from_array(array(&["n239", "from", "w-5", "", "r7", "sub"])),
            vec![
                member(ObjectType::Node, 239, "from"),
                member(ObjectType::Way, -5, ""),
                member(ObjectType::Relation, 7, "sub"),
            ]
        );
        assert_eq!(members_from_array(None), vec![]);
        assert_eq!(member_key(&member(ObjectType::Way, 42, "x")), "w42");
        assert_eq!(
            tags_from_array(array(&["name", "NULL", "a\"b", "c\\d"])),
            vec![
                ("name".to_string(), "NULL".to_string()),
                ("a\"b".to_string(), "c\\d".to_string())
            ]
        );
        assert!(tags_from_array(None).is_empty());
    }
}
