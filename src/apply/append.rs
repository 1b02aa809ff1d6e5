//! Applying a change set to an imported database, inside the caller's
//! transaction (which also stores the replication position).
//!
//! Steps, each one batched query or COPY per table, never per object:
//! 1. the middle: delete every changed object, COPY the new versions;
//! 2. propagation (osm2pgsql's `--append` rules, `osmdata_t` and
//!    `dependency_manager_t`): ways using changed nodes, relations using
//!    changed nodes or changed/affected ways, minus what the diff itself
//!    changes;
//! 3. the output: delete the rows of every changed or affected object
//!    (`DELETE … RETURNING` hands back the old geometries), rebuild the
//!    rows from the middle and COPY them in;
//! 4. read back the new rows' geometries and column digests, and pair old
//!    with new per output row: the [`RowChange`]s the expiry stage needs.
//!
//! Re-applying a diff leaves the same database: creates of existing
//! objects replace them (everything is deleted first), deletes of missing
//! objects are no-ops, and nodes a way references but nobody has are
//! skipped when building its geometry, as osm2pgsql does.

use super::flatnodes::FlatNodes;
use super::middle::{Middle, MiddleError};
use super::output::{OutputTables, Row, RowsQuery, StoredRow, TableKind};
use super::process::{NodeLocations, Processor, Rows};
use super::settings::ImportSettings;
use super::ApplyError;
use crate::osm::{Action, ChangeSet};
use crate::osm::{Location, Node, Object, ObjectType, Relation, Way};
use postgres::GenericClient;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What happened to the rows of one object in one output table.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// The output table's name (`planet_osm_line`, or a flex table's).
    pub table: String,
    /// Negative for relations, as in the tables.
    pub osm_id: i64,
    /// EWKB of the rows before the batch.
    pub old: Vec<Vec<u8>>,
    /// EWKB of the rows after the batch (rows the validity trigger refused
    /// are not here).
    pub new: Vec<Vec<u8>>,
    /// Whether any geometry or any column differs: a rewrite that changes
    /// nothing a style reads does not need new tiles.
    pub changed: bool,
    /// When the object has one row before and after with the same
    /// geometry: the columns whose values differ (lower case names as in
    /// the table). `None` when the geometry changed, the row was created
    /// or deleted, or an object has several rows in the table.
    pub changed_columns: Option<Vec<String>>,
    /// The columns NULL in every row of the object, before and after (lower
    /// case); `None` when the output does not tell. A layer whose `WHERE`
    /// needs one of them cannot draw the object.
    pub null_columns: Option<Vec<String>>,
    /// Each row's column hashes before and after, for style-aware expiry
    /// to test a layer's value conditions (`highway IN (…)`); `None` when
    /// the output does not tell.
    pub column_digests: Option<RowDigests>,
    /// Whether expiry looks at this row: not for `_roads` rows, which
    /// repeat `_line` rows (osm2pgsql 1.8 does not expire them either).
    pub expire: bool,
    /// Flex tables only: for each expire output one of the table's
    /// geometry columns feeds (its `expire` field, osm2pgsql 1.9+), that
    /// column's geometries. Empty for every other table.
    pub expire_feeds: Vec<ExpireFeed>,
}

/// The column hashes of an object's rows in one table, before and after a
/// batch: per row, per column of `columns`, `hashtextextended(value::text,
/// 0)` as the output's digest query computes it, `None` for NULL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowDigests {
    /// The table's digested columns, lower case.
    pub columns: Vec<String>,
    /// The rows before the batch.
    pub old: Vec<Vec<Option<i64>>>,
    /// The rows after the batch.
    pub new: Vec<Vec<Option<i64>>>,
}

/// The geometries of one row change that feed one expire output of a flex
/// config: one entry of a geometry column's `expire` field, with that
/// column's old and new values.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpireFeed {
    /// The output ([`Applier::expire_outputs`] index) and how the column
    /// feeds it.
    pub config: super::flex::expire::ColumnExpire,
    /// EWKB (EPSG:3857) of the column in the rows before the batch.
    pub old: Vec<Vec<u8>>,
    /// EWKB (EPSG:3857) of the column in the rows after the batch.
    pub new: Vec<Vec<u8>>,
}

/// The outcome of one applied change set.
#[derive(Debug, Clone, Default)]
pub struct ApplyResult {
    /// Per output table and object, its rows before and after.
    pub row_changes: Vec<RowChange>,
    /// Ways rebuilt, unchanged themselves, because nodes they use changed.
    pub propagated_ways: usize,
    /// Relations rebuilt, unchanged themselves, because members they have
    /// (nodes, or ways changed or rebuilt) changed.
    pub propagated_relations: usize,
}

impl ApplyResult {
    /// Row changes that alter what a map shows.
    pub fn changed_rows(&self) -> impl Iterator<Item = &RowChange> {
        self.row_changes.iter().filter(|c| c.changed)
    }
}

/// Applies change sets to a database with either output.
pub enum Applier {
    /// osm2pgsql's classic ("pgsql") output.
    Classic(ClassicApplier),
    /// osm2pgsql's flex output.
    Flex(Box<super::flex::append::FlexApplier>),
}

impl Applier {
    /// The applier for a database imported with `settings` (the ones
    /// [`ImportSettings::load`] reads back).
    pub fn for_settings(settings: &ImportSettings) -> Result<Self, ApplyError> {
        Ok(match &settings.flex {
            None => Applier::Classic(ClassicApplier::for_settings(settings)?),
            Some(flex) => Applier::Flex(Box::new(super::flex::append::FlexApplier::for_settings(
                settings, flex,
            )?)),
        })
    }

    /// Hashes these keys of the `tags` hstore of each changed row too
    /// ([`OutputTables::with_digest_keys`]), for the styles' value
    /// conditions; the flex output hashes its own columns only.
    pub fn with_digest_keys(self, keys: impl IntoIterator<Item = String>) -> Self {
        match self {
            Applier::Classic(mut applier) => {
                applier.tables = applier.tables.with_digest_keys(keys);
                Applier::Classic(applier)
            }
            flex => flex,
        }
    }

    /// Applies `changes` within `client`'s current transaction.
    pub fn apply(
        &mut self,
        client: &mut impl GenericClient,
        changes: &ChangeSet,
    ) -> Result<ApplyResult, ApplyError> {
        match self {
            Applier::Classic(applier) => applier.apply(client, changes),
            Applier::Flex(applier) => applier.apply(client, changes),
        }
    }

    /// The expire outputs a flex config defines
    /// (`osm2pgsql.define_expire_output`), which the
    /// [`RowChange::expire_feeds`] refer to by index; none for the classic
    /// output.
    pub fn expire_outputs(&self) -> &[super::flex::expire::ExpireOutputDef] {
        match self {
            Applier::Classic(_) => &[],
            Applier::Flex(applier) => applier.expire_outputs(),
        }
    }
}

/// Applies change sets to a database with the classic output.
pub struct ClassicApplier {
    middle: Middle,
    tables: OutputTables,
    processor: Processor,
}

/// The ids of one object type that a change set upserts and deletes.
#[derive(Default)]
pub(crate) struct Ids {
    pub(crate) upserted: BTreeSet<i64>,
    pub(crate) deleted: BTreeSet<i64>,
}

impl Ids {
    pub(crate) fn all(&self) -> Vec<i64> {
        self.upserted.union(&self.deleted).copied().collect()
    }
}

impl NodeLocations for HashMap<i64, Location> {
    fn location(&self, id: i64) -> Option<Location> {
        self.get(&id).copied()
    }
}

impl ClassicApplier {
    /// An applier over these tables, building rows with `processor`.
    pub fn new(middle: Middle, tables: OutputTables, processor: Processor) -> Self {
        ClassicApplier {
            middle,
            tables,
            processor,
        }
    }

    /// The applier for a database imported with `settings` (the ones
    /// [`ImportSettings::load`] reads back): middle and output tables of its
    /// schema and prefix, rows built with its style and transform.
    pub fn for_settings(settings: &ImportSettings) -> Result<Self, ApplyError> {
        let processor = Processor::new(settings)?;
        let tables = OutputTables::new(
            &settings.schema,
            &settings.prefix,
            processor.style().clone(),
        );
        Ok(ClassicApplier::new(
            middle_for(settings)?,
            tables,
            processor,
        ))
    }

    /// Applies `changes` within `client`'s current transaction, in the
    /// steps the module documentation lists.
    pub fn apply(
        &mut self,
        client: &mut impl GenericClient,
        changes: &ChangeSet,
    ) -> Result<ApplyResult, ApplyError> {
        let changed = Changed::sort(changes);
        let mut timer = StepTimer::new();
        // 1. Middle.
        update_middle(&self.middle, client, &changed)?;
        timer.step("middle");
        // 2. Propagation.
        let parents = propagate(&self.middle, client, &changed)?;
        timer.step("propagation");
        // 3. Output: delete old rows, rebuild.
        let ids = OutputIds::new(&changed, &parents);
        let removed = self.delete_rows(client, &ids)?;
        timer.step("output delete");
        let new_rows = self.rebuild_rows(client, &changed, &parents)?;
        timer.step("rebuild");
        self.write_rows(client, &new_rows)?;
        timer.step("output copy");
        // 4. Pair old and new rows.
        let row_changes = self.pair_with_new_rows(client, &ids, removed)?;
        timer.step("read back");
        tracing::debug!(steps = %timer, "applied change set");
        Ok(ApplyResult {
            row_changes,
            propagated_ways: parents.ways.len(),
            propagated_relations: parents.relations.len(),
        })
    }

    /// Step 3a: deletes the output rows of every changed or affected
    /// object, returning what they held.
    fn delete_rows(
        &self,
        client: &mut impl GenericClient,
        ids: &OutputIds,
    ) -> Result<HashMap<TableKind, Vec<StoredRow>>, ApplyError> {
        let mut removed = HashMap::new();
        for kind in TableKind::ALL {
            let rows = self
                .tables
                .rows(client, kind, ids.of(kind), RowsQuery::Delete)?;
            removed.insert(kind, rows);
        }
        Ok(removed)
    }

    /// Step 3b: the new output rows of the changed nodes and of the
    /// changed or affected ways and relations, these rebuilt from the
    /// middle.
    fn rebuild_rows(
        &mut self,
        client: &mut impl GenericClient,
        changed: &Changed<'_>,
        parents: &Parents,
    ) -> Result<HashMap<TableKind, Vec<Row>>, ApplyError> {
        let mut new_rows: HashMap<TableKind, Vec<Row>> = HashMap::new();
        let mut add = |rows: Rows| {
            for (kind, row) in rows {
                new_rows.entry(kind).or_default().push(row);
            }
        };
        for node in &changed.nodes {
            add(self.processor.node(node)?);
        }
        let rebuild_ways = changed_or_parents(&changed.way_ids, &parents.ways);
        let rebuild_relations = changed_or_parents(&changed.relation_ids, &parents.relations);
        let Rebuild {
            ways: way_objects,
            relations: relation_objects,
            member_ways,
            locations,
        } = load_for_rebuild(&self.middle, client, &rebuild_ways, &rebuild_relations)?;
        for way in &way_objects {
            add(self.processor.way(way, &locations)?);
        }
        for relation in &relation_objects {
            add(self
                .processor
                .relation(relation, &member_ways, &locations)?);
        }
        Ok(new_rows)
    }

    /// Step 3c: COPYs the new rows into the output tables.
    fn write_rows(
        &self,
        client: &mut impl GenericClient,
        new_rows: &HashMap<TableKind, Vec<Row>>,
    ) -> Result<(), ApplyError> {
        for kind in TableKind::ALL {
            let Some(rows) = new_rows.get(&kind).filter(|rows| !rows.is_empty()) else {
                continue;
            };
            let mut writer = self.tables.copy_writer(client, kind)?;
            for row in rows {
                writer.write(row)?;
            }
            writer.finish()?;
        }
        Ok(())
    }

    /// Step 4: reads back the new rows (the validity trigger may have
    /// refused some) and pairs them with the `removed` ones.
    fn pair_with_new_rows(
        &self,
        client: &mut impl GenericClient,
        ids: &OutputIds,
        mut removed: HashMap<TableKind, Vec<StoredRow>>,
    ) -> Result<Vec<RowChange>, ApplyError> {
        let mut row_changes = Vec::new();
        for kind in TableKind::ALL {
            let written = self
                .tables
                .rows(client, kind, ids.of(kind), RowsQuery::Read)?;
            row_changes.extend(pair_rows(
                &self.tables.name(kind),
                &self.tables.digest_column_names(kind),
                kind != TableKind::Roads,
                removed
                    .remove(&kind)
                    .unwrap_or_default()
                    .into_iter()
                    .map(RowState::from),
                written.into_iter().map(RowState::from),
            ));
        }
        Ok(row_changes)
    }
}

/// The middle of a database imported with `settings`: its tables, and
/// the flat-nodes file the import wrote, if it used one.
pub(crate) fn middle_for(settings: &ImportSettings) -> Result<Middle, ApplyError> {
    let middle = Middle::with_layout(&settings.schema, &settings.prefix, settings.middle);
    Ok(match &settings.flat_nodes {
        Some(path) => middle.with_flat_nodes(FlatNodes::open(path).map_err(MiddleError::from)?),
        None => middle,
    })
}

/// Step 1: deletes every changed object from the middle and COPYs the
/// new versions in.
///
/// With a flat-nodes file, every write to it happens here, and it is on
/// disk before this returns, so before the batch's transaction commits.
/// Should the transaction not commit (a crash, an error later on), the
/// file is ahead of the tables; the batch is then applied again (the
/// daemon retries the same batch; after a restart it merges the same
/// diffs, perhaps more), which writes the same slots again: nothing
/// reads a location from the file before this step has rewritten every
/// slot the batch changes, and the old geometries expiry needs come from
/// the output tables (`DELETE … RETURNING`), never from the file.
pub(crate) fn update_middle(
    middle: &Middle,
    client: &mut impl GenericClient,
    changed: &Changed<'_>,
) -> Result<(), ApplyError> {
    middle.delete(client, ObjectType::Node, &changed.node_ids.all())?;
    middle.delete(client, ObjectType::Way, &changed.way_ids.all())?;
    middle.delete(client, ObjectType::Relation, &changed.relation_ids.all())?;
    middle.copy_nodes(client, changed.nodes.iter().copied())?;
    middle.copy_ways(client, changed.ways.iter().copied())?;
    middle.copy_relations(client, changed.relations.iter().copied())?;
    middle.define_node_refs(
        changed.ways.iter().copied(),
        changed.relations.iter().copied(),
    )?;
    middle.flush_flat_nodes()?;
    Ok(())
}

/// Step 2: the unchanged ways and relations that use changed objects.
/// Deletes are not propagated: their parents are expected in the same
/// diff (osm2pgsql's rule). On osm2pgsql's new middle format, nodes and
/// ways in their first version are not looked up either, as osm2pgsql 2.x
/// does ([`super::middle::MiddleLayout::looks_up_parents_of_first_versions`]).
pub(crate) fn propagate(
    middle: &Middle,
    client: &mut impl GenericClient,
    changed: &Changed<'_>,
) -> Result<Parents, ApplyError> {
    let first_versions = middle.layout().looks_up_parents_of_first_versions();
    let not_first = |meta: &crate::osm::Meta| first_versions || meta.version != Some(1);
    let moved_nodes: Vec<i64> = changed
        .nodes
        .iter()
        .filter(|n| not_first(&n.meta))
        .map(|n| n.id)
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect();
    let mut ways: BTreeSet<i64> = middle
        .ways_using_nodes(client, &moved_nodes)?
        .into_iter()
        .collect();
    for id in changed
        .way_ids
        .upserted
        .iter()
        .chain(&changed.way_ids.deleted)
    {
        ways.remove(id);
    }
    let mut changed_ways = changed_or_parents(&changed.way_ids, &ways);
    if !first_versions {
        let new_ways: BTreeSet<i64> = changed
            .ways
            .iter()
            .filter(|w| !not_first(&w.meta))
            .map(|w| w.id)
            .collect();
        changed_ways.retain(|id| !new_ways.contains(id));
    }
    let mut relations: BTreeSet<i64> = middle
        .relations_using(client, &moved_nodes, &changed_ways)?
        .into_iter()
        .collect();
    let relation_ids = &changed.relation_ids;
    for id in relation_ids.upserted.iter().chain(&relation_ids.deleted) {
        relations.remove(id);
    }
    Ok(Parents { ways, relations })
}

/// What rebuilding rows needs from the middle: the ways and relations
/// themselves, the member ways of the relations (and the ways, for
/// relations that use them) and every node location any of them uses.
pub(crate) struct Rebuild {
    pub(crate) ways: Vec<Way>,
    pub(crate) relations: Vec<Relation>,
    pub(crate) member_ways: HashMap<i64, Way>,
    pub(crate) locations: HashMap<i64, Location>,
}

/// Reads what rebuilding `way_ids` and `relation_ids` needs, with one
/// query per table.
pub(crate) fn load_for_rebuild(
    middle: &Middle,
    client: &mut impl GenericClient,
    way_ids: &[i64],
    relation_ids: &[i64],
) -> Result<Rebuild, ApplyError> {
    let ways = middle.ways(client, way_ids)?;
    let relations = middle.relations(client, relation_ids)?;
    let members_of = |kind: ObjectType| -> BTreeSet<i64> {
        relations
            .iter()
            .flat_map(|r| r.members.iter())
            .filter(|m| m.kind == kind)
            .map(|m| m.id)
            .collect()
    };
    let member_way_ids: Vec<i64> = members_of(ObjectType::Way).into_iter().collect();
    let mut member_ways: HashMap<i64, Way> = middle
        .ways(client, &member_way_ids)?
        .into_iter()
        .map(|w| (w.id, w))
        .collect();
    for way in &ways {
        member_ways.entry(way.id).or_insert_with(|| way.clone());
    }
    let mut needed_nodes = members_of(ObjectType::Node);
    needed_nodes.extend(member_ways.values().flat_map(|w| w.nodes.iter().copied()));
    let needed_nodes: Vec<i64> = needed_nodes.into_iter().collect();
    let locations = middle.node_locations(client, &needed_nodes)?;
    Ok(Rebuild {
        ways,
        relations,
        member_ways,
        locations,
    })
}

/// A change set sorted by object type: the ids it upserts and deletes,
/// and the new versions.
#[derive(Default)]
pub(crate) struct Changed<'c> {
    pub(crate) node_ids: Ids,
    pub(crate) way_ids: Ids,
    pub(crate) relation_ids: Ids,
    pub(crate) nodes: Vec<&'c Node>,
    pub(crate) ways: Vec<&'c Way>,
    pub(crate) relations: Vec<&'c Relation>,
}

impl<'c> Changed<'c> {
    pub(crate) fn sort(changes: &'c ChangeSet) -> Self {
        let mut changed = Changed::default();
        for change in changes.iter() {
            let id = change.object_id();
            let ids = match id.kind {
                ObjectType::Node => &mut changed.node_ids,
                ObjectType::Way => &mut changed.way_ids,
                ObjectType::Relation => &mut changed.relation_ids,
            };
            if change.action == Action::Delete {
                ids.deleted.insert(id.id);
                continue;
            }
            ids.upserted.insert(id.id);
            match &change.object {
                Object::Node(n) => changed.nodes.push(n),
                Object::Way(w) => changed.ways.push(w),
                Object::Relation(r) => changed.relations.push(r),
            }
        }
        changed
    }
}

/// The unchanged ways and relations that use changed objects: their rows
/// are rebuilt too.
pub(crate) struct Parents {
    pub(crate) ways: BTreeSet<i64>,
    pub(crate) relations: BTreeSet<i64>,
}

/// The upserted objects of one type plus their unchanged parents, in id
/// order: what is rebuilt.
pub(crate) fn changed_or_parents(ids: &Ids, parents: &BTreeSet<i64>) -> Vec<i64> {
    ids.upserted.union(parents).copied().collect()
}

/// The `osm_id`s whose output rows an apply replaces.
struct OutputIds {
    /// Every changed node (`_point`).
    points: Vec<i64>,
    /// Every changed or affected way, and relation as −id (`_line`,
    /// `_polygon`, `_roads`), sorted.
    areas: Vec<i64>,
}

impl OutputIds {
    fn new(changed: &Changed<'_>, parents: &Parents) -> Self {
        let mut areas: Vec<i64> = changed
            .way_ids
            .all()
            .into_iter()
            .chain(parents.ways.iter().copied())
            .collect();
        areas.extend(
            changed
                .relation_ids
                .all()
                .iter()
                .chain(&parents.relations)
                .map(|id| -id),
        );
        areas.sort_unstable();
        areas.dedup();
        OutputIds {
            points: changed.node_ids.all(),
            areas,
        }
    }

    fn of(&self, kind: TableKind) -> &[i64] {
        if kind == TableKind::Point {
            &self.points
        } else {
            &self.areas
        }
    }
}

/// One stored row as pairing sees it: its id, geometries and the digest
/// of its other columns.
pub(crate) struct RowState {
    pub(crate) id: i64,
    pub(crate) geometries: Vec<Vec<u8>>,
    pub(crate) digest: i64,
    /// Per column of the table (the `columns` given to [`pair_rows`]) a
    /// hash of its value; empty when unknown.
    pub(crate) column_digests: Vec<Option<i64>>,
}

impl From<StoredRow> for RowState {
    fn from(row: StoredRow) -> Self {
        RowState {
            id: row.osm_id,
            geometries: vec![row.way],
            digest: row.columns_digest,
            column_digests: row.column_digests,
        }
    }
}

/// The rows of one object, order-independent: geometries and digest.
fn fingerprint(rows: &[RowState]) -> Vec<(&[Vec<u8>], i64)> {
    let mut f: Vec<(&[Vec<u8>], i64)> = rows
        .iter()
        .map(|r| (r.geometries.as_slice(), r.digest))
        .collect();
    f.sort();
    f
}

/// The columns whose values differ between an object's single old row
/// and its single new row of the same geometry; `None` otherwise.
fn changed_columns(columns: &[String], old: &[RowState], new: &[RowState]) -> Option<Vec<String>> {
    let ([old], [new]) = (old, new) else {
        return None;
    };
    let known = |r: &RowState| !columns.is_empty() && r.column_digests.len() == columns.len();
    if old.geometries != new.geometries || !known(old) || !known(new) {
        return None;
    }
    Some(
        columns
            .iter()
            .zip(old.column_digests.iter().zip(&new.column_digests))
            .filter(|(_, (a, b))| a != b)
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect(),
    )
}

/// The columns NULL in every one of `rows`; `None` when a row's column
/// hashes are unknown.
fn null_columns<'a>(
    columns: &[String],
    mut rows: impl Iterator<Item = &'a RowState>,
) -> Option<Vec<String>> {
    let mut null = vec![true; columns.len()];
    rows.try_for_each(|row| {
        if columns.is_empty() || row.column_digests.len() != columns.len() {
            return None;
        }
        for (is_null, digest) in null.iter_mut().zip(&row.column_digests) {
            *is_null &= digest.is_none();
        }
        Some(())
    })?;
    Some(
        columns
            .iter()
            .zip(null)
            .filter(|(_, is_null)| *is_null)
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect(),
    )
}

/// Every row's column hashes; `None` when a row's are unknown.
fn row_digests(columns: &[String], old: &[RowState], new: &[RowState]) -> Option<RowDigests> {
    let known = |rows: &[RowState]| {
        rows.iter()
            .all(|r| !columns.is_empty() && r.column_digests.len() == columns.len())
    };
    if !known(old) || !known(new) {
        return None;
    }
    let digests = |rows: &[RowState]| rows.iter().map(|r| r.column_digests.clone()).collect();
    Some(RowDigests {
        columns: columns.iter().map(|c| c.to_ascii_lowercase()).collect(),
        old: digests(old),
        new: digests(new),
    })
}

/// Groups old and new rows of one table by object and compares them.
pub(crate) fn pair_rows(
    table: &str,
    columns: &[String],
    expire: bool,
    old: impl IntoIterator<Item = RowState>,
    new: impl IntoIterator<Item = RowState>,
) -> Vec<RowChange> {
    let mut by_id: BTreeMap<i64, (Vec<RowState>, Vec<RowState>)> = BTreeMap::new();
    for row in old {
        by_id.entry(row.id).or_default().0.push(row);
    }
    for row in new {
        by_id.entry(row.id).or_default().1.push(row);
    }
    by_id
        .into_iter()
        .map(|(osm_id, (old, new))| {
            let changed = fingerprint(&old) != fingerprint(&new);
            let changed_columns = changed_columns(columns, &old, &new);
            let null_columns = null_columns(columns, old.iter().chain(&new));
            let column_digests = row_digests(columns, &old, &new);
            RowChange {
                table: table.to_string(),
                osm_id,
                old: old.into_iter().flat_map(|r| r.geometries).collect(),
                new: new.into_iter().flat_map(|r| r.geometries).collect(),
                changed,
                changed_columns,
                null_columns,
                column_digests,
                expire,
                expire_feeds: Vec::new(),
            }
        })
        .collect()
}

/// Raises `current_timestamp` in the properties to the newest object
/// timestamp of `changes`, as osm2pgsql does after an append (it is what
/// `init --start-at MINUTES` counts back from).
pub fn raise_current_timestamp(
    client: &mut impl GenericClient,
    schema: &str,
    changes: &ChangeSet,
) -> Result<(), ApplyError> {
    let Some(newest) = changes
        .iter()
        .filter_map(|c| c.object.meta().timestamp)
        .max()
    else {
        return Ok(());
    };
    let current = crate::db::properties::read_property(client, schema, "current_timestamp")?
        .and_then(|v| crate::replication::state::parse_timestamp(&v));
    if current.is_none_or(|c| c < newest) {
        let text = crate::replication::state::format_timestamp(newest);
        crate::db::properties::write(client, schema, &[("current_timestamp", &text)])?;
    }
    Ok(())
}

/// Durations of an apply's steps, for the debug log.
pub(crate) struct StepTimer {
    last: std::time::Instant,
    steps: Vec<(&'static str, std::time::Duration)>,
}

impl StepTimer {
    pub(crate) fn new() -> Self {
        StepTimer {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    pub(crate) fn step(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for StepTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, took)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.0} ms", took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, geometry: u8, digests: &[Option<i64>]) -> RowState {
        RowState {
            id,
            geometries: vec![vec![geometry]],
            digest: digests.iter().flatten().sum(),
            column_digests: digests.to_vec(),
        }
    }

    #[test]
    fn pairs_say_which_columns_changed_and_which_are_null() {
        let columns = ["building".to_string(), "Name".into(), "landuse".into()];
        let old = [
            row(1, 0, &[Some(1), Some(2), None]),
            row(2, 0, &[Some(1), None, None]),
        ];
        let new = [
            row(1, 0, &[Some(3), Some(2), None]),
            row(2, 9, &[Some(1), Some(5), None]),
        ];
        let changes = pair_rows("t", &columns, true, old, new);
        // Same geometry: the building column changed.
        assert_eq!(
            changes[0].changed_columns,
            Some(vec!["building".to_string()])
        );
        assert_eq!(changes[0].null_columns, Some(vec!["landuse".to_string()]));
        // Moved: columns not known; null in old and new alike only.
        assert_eq!(changes[1].changed_columns, None);
        assert_eq!(changes[1].null_columns, Some(vec!["landuse".to_string()]));
        // Created: everything null in the one row counts.
        let created = pair_rows("t", &columns, true, [], [row(3, 0, &[Some(1), None, None])]);
        assert_eq!(created[0].changed_columns, None);
        assert_eq!(
            created[0].null_columns,
            Some(vec!["name".to_string(), "landuse".to_string()])
        );
        // Column hashes not known: nothing said.
        let unknown = pair_rows("t", &columns, true, [], [row(4, 0, &[])]);
        assert_eq!(unknown[0].null_columns, None);
    }
}
