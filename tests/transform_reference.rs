//! Compares the tag transforms and row values with a database that
//! osm2pgsql 1.8 imported in slim mode from the same file.
//!
//! Runs only when `TILEPIPE_REF_DB` names such a database (CI has none):
//! - `TILEPIPE_REF_DB=postgresql://…/ref`
//! - `TILEPIPE_REF_SETTINGS='{"hstore":"all"}'`: the import's options as
//!   `TransformSettings` JSON (default: built-in default style, no hstore);
//! - `TILEPIPE_REF_PBF`: the imported file (default: the Liechtenstein
//!   extract under /work/shared/data), read for node tags (the 1.8 middle
//!   keeps only node locations).
//!
//! For every node, way and relation the transform decides what osm2pgsql
//! would write; every row in the database must be predicted with equal
//! column values and hstore contents. Objects we keep but the database
//! lacks are counted (osm2pgsql drops rows whose geometry fails) and
//! reported, not failed.

use postgres::{Client, NoTls};
use std::collections::{BTreeMap, HashMap};
use tilepipe::apply::style::{ColumnRole, Style, TableKind};
use tilepipe::apply::transform::value::way_area_value;
use tilepipe::apply::transform::{
    row_values, ColumnValue, MemberTags, RelationKind, RowValues, TagTransform, TransformSettings,
};
use tilepipe::osm::Tags;

const DEFAULT_PBF: &str = "/work/shared/data/liechtenstein-2013-08-03.osm.pbf";

/// One database row: style columns as text, hstore as a map, area.
#[derive(Debug, Clone)]
struct DbRow {
    columns: Vec<Option<String>>,
    prefix_columns: Vec<Option<BTreeMap<String, String>>>,
    tags: Option<BTreeMap<String, String>>,
    area: Option<f64>,
}

struct Comparison<'a> {
    style: &'a Style,
    mismatches: Vec<String>,
    checked_rows: usize,
    missing_in_db: BTreeMap<&'static str, usize>,
}

fn load_table(db: &mut Client, style: &Style, table: TableKind) -> HashMap<i64, Vec<DbRow>> {
    let mut select = vec!["osm_id".to_string()];
    for column in style.columns(table) {
        select.push(format!("\"{}\"::text", column.name));
    }
    for prefix in &style.hstore().columns {
        select.push(format!("hstore_to_array(\"{prefix}\")"));
    }
    let has_tags = style
        .table_columns(table, 3857)
        .iter()
        .any(|c| c.role == ColumnRole::Tags);
    if has_tags {
        select.push("hstore_to_array(tags)".into());
    }
    if table == TableKind::Polygon {
        select.push("ST_Area(way)".into());
    }
    let sql = format!(
        "SELECT {} FROM planet_osm_{}",
        select.join(", "),
        table.suffix()
    );
    let mut rows: HashMap<i64, Vec<DbRow>> = HashMap::new();
    let n = style.columns(table).len();
    for row in db.query(sql.as_str(), &[]).expect("query output table") {
        let columns = (0..n)
            .map(|i| row.get::<_, Option<String>>(i + 1))
            .collect();
        let mut next = n + 1;
        let hstore_at = |index: usize| -> Option<BTreeMap<String, String>> {
            let flat: Option<Vec<String>> = row.get(index);
            flat.map(|flat| {
                flat.chunks(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect()
            })
        };
        let mut prefix_columns = Vec::new();
        for _ in &style.hstore().columns {
            prefix_columns.push(hstore_at(next));
            next += 1;
        }
        let tags = has_tags.then(|| {
            next += 1;
            hstore_at(next - 1).unwrap_or_default()
        });
        let area = (table == TableKind::Polygon).then(|| row.get::<_, f64>(next));
        rows.entry(row.get(0)).or_default().push(DbRow {
            columns,
            prefix_columns,
            tags,
            area,
        });
    }
    rows
}

fn text_array_pairs(flat: &[String]) -> Tags {
    flat.chunks(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

impl Comparison<'_> {
    fn compare_row(&mut self, what: &str, table: TableKind, expected: &RowValues, actual: &DbRow) {
        self.checked_rows += 1;
        for (index, column) in self.style.columns(table).iter().enumerate() {
            let want = expected.columns.get(index);
            let got = &actual.columns[index];
            let equal = match (want, got) {
                (ColumnValue::Null, None) => true,
                (ColumnValue::Text(a), Some(b)) => a == b,
                (ColumnValue::Int4(a), Some(b)) => b.parse::<i32>().ok() == Some(*a),
                (ColumnValue::Real(a), Some(b)) => b.parse::<f32>().ok() == Some(*a),
                _ => false,
            };
            let computed_area = column.is_way_area() && table == TableKind::Polygon;
            if !equal && !computed_area {
                self.mismatches.push(format!(
                    "{what} {table}.{}: expected {want:?}, database has {got:?}",
                    column.name
                ));
            }
            if computed_area {
                // Our area comes from the caller; check the conversion of
                // the database's own geometry area instead.
                let from_geometry = way_area_value(actual.area.unwrap());
                let db_value = got.as_deref().and_then(|v| v.parse::<f32>().ok());
                if let (ColumnValue::Real(a), Some(b)) = (&from_geometry, db_value) {
                    if *a != b && ((*a - b) / b).abs() > 2e-6 {
                        self.mismatches.push(format!(
                            "{what} way_area: from ST_Area {a}, database has {b}"
                        ));
                    }
                }
            }
        }
        let want_prefixed: Vec<Option<BTreeMap<String, String>>> = expected
            .hstore_columns
            .iter()
            .map(|pairs| pairs.as_ref().map(|p| p.iter().cloned().collect()))
            .collect();
        if want_prefixed != actual.prefix_columns {
            self.mismatches.push(format!(
                "{what} {table} -z columns: expected {want_prefixed:?}, database has {:?}",
                actual.prefix_columns
            ));
        }
        // way_area in hstore (-j) holds osm2pgsql's own area: compare presence.
        let want_area = expected
            .tags
            .as_ref()
            .map(|t| t.iter().any(|(k, _)| k == "way_area"));
        let got_area = actual.tags.as_ref().map(|t| t.contains_key("way_area"));
        if want_area != got_area {
            self.mismatches.push(format!(
                "{what} {table}.tags way_area: expected {want_area:?}, database has {got_area:?}"
            ));
        }
        let want_tags = expected.tags.as_ref().map(|tags| {
            let mut map = BTreeMap::new();
            for (k, v) in tags {
                // hstore input keeps one of duplicate keys; take the first.
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
            map.remove("way_area");
            map
        });
        let got_tags = actual.tags.clone().map(|mut tags| {
            tags.remove("way_area");
            tags
        });
        if want_tags != got_tags {
            self.mismatches.push(format!(
                "{what} {table}.tags: expected {want_tags:?}, database has {got_tags:?}"
            ));
        }
    }

    /// Compares all database rows of one object in one table.
    fn compare_rows(
        &mut self,
        what: &str,
        table: TableKind,
        tags: &Tags,
        rows: Option<Vec<DbRow>>,
        missing_reason: &'static str,
    ) {
        let Some(rows) = rows else {
            *self.missing_in_db.entry(missing_reason).or_default() += 1;
            return;
        };
        for row in rows {
            let area = (table == TableKind::Polygon).then(|| row.area.unwrap());
            let expected = row_values(self.style, table, tags, area);
            self.compare_row(what, table, &expected, &row);
        }
    }
}

fn read_node_tags(path: &str) -> Vec<(i64, Tags)> {
    use osmpbf::{Element, ElementReader};
    let mut nodes = Vec::new();
    let collect = |tags: &mut dyn Iterator<Item = (&str, &str)>| -> Tags {
        tags.map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    ElementReader::from_path(path)
        .expect("open PBF")
        .for_each(|element| match element {
            Element::Node(node) => nodes.push((node.id(), collect(&mut node.tags()))),
            Element::DenseNode(node) => nodes.push((node.id(), collect(&mut node.tags()))),
            _ => {}
        })
        .expect("read PBF");
    nodes
}

#[test]
fn matches_reference_database() {
    let Ok(url) = std::env::var("TILEPIPE_REF_DB") else {
        eprintln!("skipped: set TILEPIPE_REF_DB to a database osm2pgsql 1.8 imported (--slim)");
        return;
    };
    let mut settings: TransformSettings = match std::env::var("TILEPIPE_REF_SETTINGS") {
        Ok(json) => {
            serde_json::from_str(&json).expect("TILEPIPE_REF_SETTINGS is TransformSettings JSON")
        }
        Err(_) => TransformSettings::default(),
    };
    settings.load_files().unwrap();
    let style = std::sync::Arc::new(settings.style().unwrap());
    let mut transform: Box<dyn TagTransform> = settings.build(style.clone()).unwrap();
    let pbf = std::env::var("TILEPIPE_REF_PBF").unwrap_or_else(|_| DEFAULT_PBF.to_string());
    let mut db = Client::connect(&url, NoTls).expect("connect to the reference database");

    let mut tables: HashMap<TableKind, HashMap<i64, Vec<DbRow>>> = TableKind::ALL
        .iter()
        .map(|&t| (t, load_table(&mut db, &style, t)))
        .collect();
    let mut cmp = Comparison {
        style: &style,
        mismatches: Vec::new(),
        checked_rows: 0,
        missing_in_db: BTreeMap::new(),
    };
    let mut unexpected: Vec<String> = Vec::new();

    // Nodes.
    for (id, tags) in read_node_tags(&pbf) {
        let rows = tables.get_mut(&TableKind::Point).unwrap().remove(&id);
        match transform.node(&tags).unwrap() {
            Some(filtered) => cmp.compare_rows(
                &format!("node {id}"),
                TableKind::Point,
                &filtered.tags,
                rows,
                "node",
            ),
            None if rows.is_some() => unexpected.push(format!("node {id} dropped but in point")),
            None => {}
        }
    }

    // Ways, from the middle.
    let mut way_tags: HashMap<i64, Tags> = HashMap::new();
    for row in db
        .query("SELECT id, nodes, tags FROM planet_osm_ways", &[])
        .unwrap()
    {
        let id: i64 = row.get(0);
        let nodes: Vec<i64> = row.get(1);
        let tags = text_array_pairs(&row.get::<_, Option<Vec<String>>>(2).unwrap_or_default());
        let mut rows: HashMap<TableKind, Option<Vec<DbRow>>> = TableKind::ALL
            .iter()
            .map(|&t| (t, tables.get_mut(&t).unwrap().remove(&id)))
            .collect();
        let what = format!("way {id}");
        if let Some(filtered) = transform.way(&tags).unwrap() {
            let closed = !nodes.is_empty() && nodes.first() == nodes.last();
            if filtered.polygon && closed {
                let got = rows.get_mut(&TableKind::Polygon).unwrap().take();
                cmp.compare_rows(
                    &what,
                    TableKind::Polygon,
                    &filtered.tags,
                    got,
                    "way polygon",
                );
            } else {
                let got = rows.get_mut(&TableKind::Line).unwrap().take();
                cmp.compare_rows(&what, TableKind::Line, &filtered.tags, got, "way line");
                if filtered.roads {
                    let got = rows.get_mut(&TableKind::Roads).unwrap().take();
                    cmp.compare_rows(&what, TableKind::Roads, &filtered.tags, got, "way roads");
                }
            }
        }
        for (table, left) in rows {
            if left.is_some() {
                unexpected.push(format!("{what} not predicted in {table}"));
            }
        }
        way_tags.insert(id, tags);
    }

    // Relations, with their member ways from the middle.
    for row in db
        .query("SELECT id, members, tags FROM planet_osm_rels", &[])
        .unwrap()
    {
        let id: i64 = row.get(0);
        let members: Vec<String> = row.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
        let tags = text_array_pairs(&row.get::<_, Option<Vec<String>>>(2).unwrap_or_default());
        let member_ways: Vec<MemberTags> = members
            .chunks(2)
            .filter_map(|m| {
                let way_id: i64 = m[0].strip_prefix('w')?.parse().ok()?;
                Some(MemberTags {
                    tags: way_tags.get(&way_id)?,
                    role: &m[1],
                })
            })
            .collect();
        let mut rows: HashMap<TableKind, Option<Vec<DbRow>>> = TableKind::ALL
            .iter()
            .map(|&t| (t, tables.get_mut(&t).unwrap().remove(&-id)))
            .collect();
        let what = format!("relation {id}");
        if let Some(filtered) = transform.relation(&tags, &member_ways).unwrap() {
            if filtered.kind.writes_lines() {
                let got = rows.get_mut(&TableKind::Line).unwrap().take();
                cmp.compare_rows(&what, TableKind::Line, &filtered.tags, got, "relation line");
                if filtered.roads {
                    let got = rows.get_mut(&TableKind::Roads).unwrap().take();
                    cmp.compare_rows(
                        &what,
                        TableKind::Roads,
                        &filtered.tags,
                        got,
                        "relation roads",
                    );
                }
            }
            if filtered.kind.writes_polygons() {
                let got = rows.get_mut(&TableKind::Polygon).unwrap().take();
                let reason = if filtered.kind == RelationKind::Multipolygon {
                    "multipolygon polygon"
                } else {
                    "boundary/route polygon"
                };
                cmp.compare_rows(&what, TableKind::Polygon, &filtered.tags, got, reason);
            }
        }
        for (table, left) in rows {
            if left.is_some() {
                unexpected.push(format!("{what} not predicted in {table}"));
            }
        }
    }
    for (table, left) in &tables {
        for id in left.keys().take(5) {
            unexpected.push(format!("{table} row osm_id {id} matches no object"));
        }
    }

    eprintln!(
        "compared {} rows; kept by the transform but absent from the database (geometry): {:?}",
        cmp.checked_rows, cmp.missing_in_db
    );
    for line in cmp.mismatches.iter().chain(&unexpected).take(40) {
        eprintln!("  {line}");
    }
    assert!(
        cmp.mismatches.is_empty() && unexpected.is_empty(),
        "{} value mismatches, {} unexpected rows",
        cmp.mismatches.len(),
        unexpected.len()
    );
}
