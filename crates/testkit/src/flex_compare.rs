//! Comparing the tables of a flex config in two schemas of one database
//! (osm2pgsql's, the reference, and another program's or another run's):
//! the same tables, columns and indexes, and the same rows, every
//! non-geometry column equal and geometries of the same type within 1 cm
//! in 3857 or 1e-7° in 4326, compared by the tables' id columns.

/// The two schemas compared, named in every message by their names.
#[derive(Debug, Clone, Copy)]
pub struct Sides<'a> {
    /// The schema osm2pgsql wrote.
    pub reference: &'a str,
    /// The schema compared with it.
    pub ours: &'a str,
}

/// Tables in the reference schema that are not the config's: osm2pgsql's
/// middle, and `osm2pgsql_properties` (which tilepipe adopt creates).
const NOT_CONFIG_TABLES: [&str; 4] = [
    "planet_osm_nodes",
    "planet_osm_ways",
    "planet_osm_rels",
    "osm2pgsql_properties",
];

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One column as information_schema and geometry_columns describe it.
#[derive(Debug, Clone, PartialEq)]
struct ColumnInfo {
    name: String,
    /// `int8`, `bpchar(1)`, `geometry(POINT,4326)`, …
    sql_type: String,
    nullable: bool,
    /// Defaults to `nextval(…)` (a `serial` column): its values depend on
    /// the order rows were written in, so they are not compared.
    serial: bool,
    /// SRID of a geometry column.
    srid: Option<i32>,
}

fn table_columns(client: &mut postgres::Client, schema: &str, table: &str) -> Vec<ColumnInfo> {
    client
        .query(
            "SELECT c.column_name::text, c.udt_name::text, c.character_maximum_length,
                    c.is_nullable = 'YES', coalesce(c.column_default LIKE 'nextval(%', false),
                    g.type::text, g.srid
             FROM information_schema.columns c
             LEFT JOIN geometry_columns g ON g.f_table_schema = c.table_schema
                  AND g.f_table_name = c.table_name AND g.f_geometry_column = c.column_name
             WHERE c.table_schema = $1 AND c.table_name = $2
             ORDER BY c.ordinal_position",
            &[&schema, &table],
        )
        .unwrap()
        .iter()
        .map(|row| {
            let udt: String = row.get(1);
            let length: Option<i32> = row.get(2);
            let geometry_type: Option<String> = row.get(5);
            let srid: Option<i32> = row.get(6);
            let sql_type = match (&geometry_type, length) {
                (Some(kind), _) => format!("{udt}({kind},{})", srid.unwrap_or(0)),
                (None, Some(length)) => format!("{udt}({length})"),
                (None, None) => udt,
            };
            ColumnInfo {
                name: row.get(0),
                sql_type,
                nullable: row.get(3),
                serial: row.get(4),
                srid: geometry_type.and(srid),
            }
        })
        .collect()
}

impl std::fmt::Display for ColumnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.sql_type)?;
        if !self.nullable {
            write!(f, " NOT NULL")?;
        }
        if self.serial {
            write!(f, " (serial)")?;
        }
        Ok(())
    }
}

/// The differences between two tables' columns, briefly.
fn column_differences(names: &Sides, a: &[ColumnInfo], b: &[ColumnInfo]) -> String {
    let Sides { reference, ours } = names;
    fn list(columns: &[&ColumnInfo]) -> String {
        let shown: Vec<String> = columns.iter().take(8).map(|c| c.to_string()).collect();
        let more = columns.len().saturating_sub(shown.len());
        if more > 0 {
            format!("[{}, … {more} more]", shown.join(", "))
        } else {
            format!("[{}]", shown.join(", "))
        }
    }
    let named = |columns: &[ColumnInfo], name: &str| columns.iter().any(|c| c.name == name);
    let mut parts = Vec::new();
    let only_theirs: Vec<&ColumnInfo> = a.iter().filter(|c| !named(b, &c.name)).collect();
    if !only_theirs.is_empty() {
        parts.push(format!("only {reference} has {}", list(&only_theirs)));
    }
    let only_ours: Vec<&ColumnInfo> = b.iter().filter(|c| !named(a, &c.name)).collect();
    if !only_ours.is_empty() {
        parts.push(format!("only {ours} has {}", list(&only_ours)));
    }
    for column in a {
        if let Some(other) = b.iter().find(|c| c.name == column.name) {
            if other != column {
                parts.push(format!("{reference} has {column}, {ours} {other}"));
            }
        }
    }
    if parts.is_empty() {
        let order = |columns: &[ColumnInfo]| {
            columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        parts.push(format!(
            "order: {reference} ({}), {ours} ({})",
            order(a),
            order(b)
        ));
    }
    parts.join("; ")
}

/// The tables osm2pgsql made for the config in `reference`: every table
/// but the middle's (and the properties table tilepipe adopt adds).
pub fn config_tables(client: &mut postgres::Client, reference: &str) -> Vec<String> {
    client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 AND table_type = 'BASE TABLE'
               AND NOT (table_name = ANY($2))
             ORDER BY 1",
            &[&reference, &NOT_CONFIG_TABLES.to_vec()],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn table_exists(client: &mut postgres::Client, schema: &str, table: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_schema = $1 AND table_name = $2",
            &[&schema, &table],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
}

/// Index definitions with the schema taken out, sorted.
fn index_definitions(client: &mut postgres::Client, schema: &str, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT replace(indexdef, $1 || '.', '') FROM pg_indexes
             WHERE schemaname = $1 AND tablename = $2 ORDER BY 1",
            &[&schema, &table],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The id columns osm2pgsql puts first: `(type char(1), id bigint)` for
/// ids of type 'any' with a type column, else `(id bigint)`; none for a
/// table without ids. (No config's table without ids starts with a NOT
/// NULL bigint column.)
fn key_columns(columns: &[ColumnInfo]) -> Vec<String> {
    match columns {
        [kind, id, ..]
            if kind.sql_type == "bpchar(1)"
                && !kind.nullable
                && id.sql_type == "int8"
                && !id.nullable =>
        {
            vec![kind.name.clone(), id.name.clone()]
        }
        [id, ..] if id.sql_type == "int8" && !id.nullable => vec![id.name.clone()],
        _ => Vec::new(),
    }
}

/// How one table is compared.
struct TablePlan {
    table: String,
    keys: Vec<String>,
    /// Non-key, non-serial, non-geometry columns as comparable
    /// expressions over alias `{a}`.
    values: Vec<String>,
    /// Geometry columns with their tolerance.
    geometries: Vec<(String, f64)>,
}

impl TablePlan {
    fn new(table: &str, columns: &[ColumnInfo]) -> TablePlan {
        let keys = key_columns(columns);
        let mut values = Vec::new();
        let mut geometries = Vec::new();
        for column in columns {
            if keys.contains(&column.name) || column.serial {
                continue;
            }
            let name = ident(&column.name);
            if let Some(srid) = column.srid {
                let tolerance = if srid == 4326 { 1e-7 } else { 0.01 };
                geometries.push((name, tolerance));
            } else if column.sql_type == "json" || column.sql_type == "jsonb" {
                // jsonb's text: key order and spacing do not count (Lua
                // iterates tables in hash order), number spelling does.
                values.push(format!("{{a}}.{name}::jsonb::text"));
            } else {
                values.push(format!("{{a}}.{name}"));
            }
        }
        TablePlan {
            table: table.to_string(),
            keys,
            values,
            geometries,
        }
    }

    fn row(&self, alias: &str) -> String {
        if self.values.is_empty() {
            "ROW(1)".into()
        } else {
            format!(
                "ROW({})",
                self.values
                    .iter()
                    .map(|v| v.replace("{a}", alias))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    /// What names a row in messages.
    fn label(&self, alias: &str) -> String {
        if self.keys.is_empty() {
            format!("left({}::text, 100)", self.row(alias))
        } else {
            format!(
                "concat_ws('/', {})",
                self.keys
                    .iter()
                    .map(|k| format!("{alias}.{}", ident(k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    /// Rows of `from` without an equal row in `to`: how many, and a few
    /// labels.
    fn unmatched(
        &self,
        client: &mut postgres::Client,
        from: &str,
        to: &str,
    ) -> (usize, Vec<String>) {
        let mut conditions: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("y.{k} = x.{k}", k = ident(k)))
            .collect();
        conditions.push(format!(
            "{} IS NOT DISTINCT FROM {}",
            self.row("y"),
            self.row("x")
        ));
        for (g, tolerance) in &self.geometries {
            conditions.push(format!(
                "((x.{g} IS NULL AND y.{g} IS NULL) OR (GeometryType(x.{g}) = GeometryType(y.{g})
                   AND ST_IsEmpty(x.{g}) = ST_IsEmpty(y.{g})
                   -- Identical geometries skip the Hausdorff distance, which is
                   -- O(n·m) and takes minutes on long segmentized lines.
                   AND CASE WHEN ST_IsEmpty(x.{g}) OR ST_OrderingEquals(x.{g}, y.{g}) THEN true
                       ELSE ST_HausdorffDistance(x.{g}, y.{g}) < {tolerance:e} END))"
            ));
        }
        let sql = format!(
            "SELECT {label} FROM {from}.{t} x WHERE NOT EXISTS (
               SELECT 1 FROM {to}.{t} y WHERE {conditions}) ORDER BY 1",
            label = self.label("x"),
            t = ident(&self.table),
            conditions = conditions.join(" AND "),
        );
        let labels: Vec<String> = client
            .query(&sql, &[])
            .unwrap_or_else(|e| panic!("comparing {}: {e}\n{sql}", self.table))
            .iter()
            .map(|row| row.get::<_, Option<String>>(0).unwrap_or_default())
            .collect();
        (labels.len(), labels.into_iter().take(6).collect())
    }

    /// Ids with a different number of rows on the two sides.
    fn count_mismatches(&self, client: &mut postgres::Client, sides: &Sides) -> Vec<String> {
        let Sides { reference, ours } = sides;
        if self.keys.is_empty() {
            return Vec::new();
        }
        let keys = self
            .keys
            .iter()
            .map(|k| ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT concat_ws('/', {keys}), coalesce(a.n, 0), coalesce(b.n, 0)
             FROM (SELECT {keys}, count(*) AS n FROM {reference}.{t} GROUP BY {keys}) a
             FULL JOIN (SELECT {keys}, count(*) AS n FROM {ours}.{t} GROUP BY {keys}) b
             USING ({keys})
             WHERE a.n IS DISTINCT FROM b.n ORDER BY 1",
            t = ident(&self.table),
        );
        client
            .query(&sql, &[])
            .unwrap_or_else(|e| panic!("counting {}: {e}\n{sql}", self.table))
            .iter()
            .map(|row| {
                format!(
                    "{}: {} vs {}",
                    row.get::<_, String>(0),
                    row.get::<_, i64>(1),
                    row.get::<_, i64>(2)
                )
            })
            .collect()
    }
}

fn row_count(client: &mut postgres::Client, schema: &str, table: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.{}", ident(table)),
            &[],
        )
        .unwrap()
        .get(0)
}

/// Row counts of the config's tables in `reference`.
pub fn reference_counts(client: &mut postgres::Client, reference: &str) -> Vec<(String, i64)> {
    config_tables(client, reference)
        .into_iter()
        .map(|t| {
            let n = row_count(client, reference, &t);
            (t, n)
        })
        .collect()
}

/// What differs between the config's tables in the two schemas, one
/// line per problem.
pub fn differences(client: &mut postgres::Client, sides: &Sides) -> Vec<String> {
    let Sides { reference, ours } = sides;
    let tables = config_tables(client, reference);
    assert!(
        !tables.is_empty(),
        "osm2pgsql made no tables in schema {reference}"
    );
    let mut problems = Vec::new();
    for table in tables {
        if !table_exists(client, ours, &table) {
            problems.push(format!("{table}: missing in schema {ours}"));
            continue;
        }
        let theirs_columns = table_columns(client, reference, &table);
        let ours_columns = table_columns(client, ours, &table);
        let (a, b) = (
            row_count(client, reference, &table),
            row_count(client, ours, &table),
        );
        if a != b {
            problems.push(format!("{table}: {reference} {a} rows, {ours} {b}"));
        }
        if theirs_columns != ours_columns {
            problems.push(format!(
                "{table}: columns differ: {}",
                column_differences(sides, &theirs_columns, &ours_columns)
            ));
            continue;
        }
        let (theirs_idx, ours_idx) = (
            index_definitions(client, reference, &table),
            index_definitions(client, ours, &table),
        );
        if theirs_idx != ours_idx {
            problems.push(format!(
                "{table}: indexes differ: {reference} {theirs_idx:?}, {ours} {ours_idx:?}"
            ));
        }
        let plan = TablePlan::new(&table, &theirs_columns);
        let counts = plan.count_mismatches(client, sides);
        if !counts.is_empty() {
            problems.push(format!(
                "{table}: {} ids with a different number of rows (id: {reference} vs {ours}), e.g. {:?}",
                counts.len(),
                &counts[..counts.len().min(6)]
            ));
        }
        let (missing, missing_ids) = plan.unmatched(client, reference, ours);
        if missing > 0 {
            problems.push(format!(
                "{table}: {missing} {reference} rows without an equal {ours} row, e.g. {missing_ids:?}"
            ));
        }
        let (extra, extra_ids) = plan.unmatched(client, ours, reference);
        if extra > 0 {
            problems.push(format!(
                "{table}: {extra} {ours} rows without an equal {reference} row, e.g. {extra_ids:?}"
            ));
        }
    }
    problems
}
