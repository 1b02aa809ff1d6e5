//! The middle's legacy layout against osm2pgsql 1.8's own slim tables:
//! what `osm2pgsql --slim` wrote is read back through
//! [`MiddleLayout::Legacy18`] (objects, node locations, reverse lookups)
//! and checked against the input; and what tilepipe writes in that layout
//! is taken up by `osm2pgsql --append`, which finds it through its
//! indexes and decodes it.
//!
//! Skips with a message when `osm2pgsql` is not installed (`scripts/test`
//! installs it).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use tilepipe::apply::middle::{Middle, MiddleLayout};
use tilepipe::osm::{Location, Member, Meta, Node, Object, ObjectType, Relation, Way};
use tilepipe_testkit::feedgen::OsmData;
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::PgCluster;

const SCHEMA: &str = "o2p";
const PREFIX: &str = "planet_osm";

fn osm2pgsql_available() -> bool {
    let found = Command::new("osm2pgsql").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: osm2pgsql is not installed (apt-get install osm2pgsql)");
    }
    found
}

fn osm2pgsql(url: &str, append: bool, file: &Path) {
    let out = Command::new("osm2pgsql")
        .args(["--slim", "-d", url, "--number-processes", "1"])
        .args(["-S", "/usr/share/osm2pgsql/default.style"])
        .arg(format!("--middle-schema={SCHEMA}"))
        .arg(format!("--output-pgsql-schema={SCHEMA}"))
        .arg(if append { "--append" } else { "--create" })
        .arg(file)
        .output()
        .expect("osm2pgsql runs");
    assert!(
        out.status.success(),
        "osm2pgsql failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new database with `file` imported by `osm2pgsql --slim` into
/// [`SCHEMA`], and a connection to it.
fn osm2pgsql_database(hint: &str, file: &Path) -> (String, postgres::Client) {
    let url = PgCluster::shared().create_database(hint).unwrap();
    let mut client = tilepipe_testkit::db::connect(&url);
    client
        .batch_execute(&format!("CREATE SCHEMA {SCHEMA}"))
        .unwrap();
    osm2pgsql(&url, false, file);
    (url, client)
}

fn legacy_middle(client: &mut postgres::Client) -> Middle {
    let layout = MiddleLayout::detect(client, SCHEMA, PREFIX).unwrap();
    assert_eq!(
        layout,
        Some(MiddleLayout::Legacy18 { bucket_index: true }),
        "osm2pgsql 1.8's tables are detected as the legacy layout"
    );
    Middle::with_layout(SCHEMA, PREFIX, layout.unwrap())
}

/// Everything read back through the legacy layout equals the input, and
/// the reverse lookups give what the input implies.
fn check_reads(data: &OsmData, client: &mut postgres::Client) {
    let middle = legacy_middle(client);
    let (mut nodes, mut ways, mut relations) = (Vec::new(), Vec::new(), Vec::new());
    for object in data.objects() {
        match object {
            Object::Node(n) => nodes.push(n),
            Object::Way(w) => ways.push(w),
            Object::Relation(r) => relations.push(r),
        }
    }

    let ids: Vec<i64> = nodes.iter().map(|n| n.id).collect();
    let locations = middle.node_locations(client, &ids).unwrap();
    assert_eq!(locations.len(), nodes.len(), "every node is in the table");
    for node in &nodes {
        assert_eq!(
            locations[&node.id].to_fixed(),
            node.location.unwrap().to_fixed(),
            "node {}",
            node.id
        );
    }

    let ids: Vec<i64> = ways.iter().map(|w| w.id).collect();
    let read: HashMap<i64, Way> = middle
        .ways(client, &ids)
        .unwrap()
        .into_iter()
        .map(|w| (w.id, w))
        .collect();
    assert_eq!(read.len(), ways.len());
    for way in &ways {
        let got = &read[&way.id];
        assert_eq!(
            (&got.nodes, &got.tags),
            (&way.nodes, &way.tags),
            "way {}",
            way.id
        );
    }

    let ids: Vec<i64> = relations.iter().map(|r| r.id).collect();
    let read: HashMap<i64, Relation> = middle
        .relations(client, &ids)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    assert_eq!(read.len(), relations.len());
    for relation in &relations {
        let got = &read[&relation.id];
        assert_eq!(
            (&got.members, &got.tags),
            (&relation.members, &relation.tags),
            "relation {}",
            relation.id
        );
    }

    let scans_before = index_scans(client);
    // Reverse lookups, in batches of consecutive ids (sharing buckets) and
    // of ids far apart.
    let mut ways_of_node: HashMap<i64, BTreeSet<i64>> = HashMap::new();
    for way in &ways {
        for node in &way.nodes {
            ways_of_node.entry(*node).or_default().insert(way.id);
        }
    }
    let mut rels_of: HashMap<(ObjectType, i64), BTreeSet<i64>> = HashMap::new();
    for relation in &relations {
        for m in &relation.members {
            rels_of
                .entry((m.kind, m.id))
                .or_default()
                .insert(relation.id);
        }
    }
    let expect = |map: &HashMap<i64, BTreeSet<i64>>, ids: &[i64]| -> Vec<i64> {
        let all: BTreeSet<i64> = ids
            .iter()
            .flat_map(|id| map.get(id))
            .flatten()
            .copied()
            .collect();
        all.into_iter().collect()
    };
    let node_ids: Vec<i64> = nodes.iter().map(|n| n.id).collect();
    let way_ids: Vec<i64> = ways.iter().map(|w| w.id).collect();
    let strided = |ids: &[i64], stride: usize| -> Vec<Vec<i64>> {
        (0..stride)
            .map(|start| ids.iter().skip(start).step_by(stride).copied().collect())
            .collect()
    };
    let mut batches: Vec<Vec<i64>> = node_ids.chunks(40).map(|c| c.to_vec()).collect();
    batches.extend(strided(&node_ids, (node_ids.len() / 40).max(1)));
    for batch in &batches {
        assert_eq!(
            middle.ways_using_nodes(client, batch).unwrap(),
            expect(&ways_of_node, batch),
            "ways using nodes {batch:?}"
        );
    }
    let of_kind = |kind: ObjectType| -> HashMap<i64, BTreeSet<i64>> {
        rels_of
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, id), rels)| (*id, rels.clone()))
            .collect()
    };
    let (rels_of_node, rels_of_way) = (of_kind(ObjectType::Node), of_kind(ObjectType::Way));
    for batch in &batches {
        let mut expected = expect(&rels_of_node, batch);
        expected.sort_unstable();
        assert_eq!(
            middle.relations_using(client, batch, &[]).unwrap(),
            expected,
            "relations with node members {batch:?}"
        );
    }
    for batch in way_ids.chunks(40) {
        assert_eq!(
            middle.relations_using(client, &[], batch).unwrap(),
            expect(&rels_of_way, batch),
            "relations with way members {batch:?}"
        );
    }
    // Members of another type do not count: node ids looked up as ways
    // find only relations having ways with those ids.
    let members: Vec<i64> = rels_of_node.keys().copied().collect();
    assert_eq!(
        middle.relations_using(client, &[], &members).unwrap(),
        expect(&rels_of_way, &members)
    );
    assert!(
        !rels_of_node.is_empty() && !rels_of_way.is_empty(),
        "the data has relations with node and with way members"
    );
    // The lookups went through osm2pgsql's indexes, at least once per
    // batch (statistics reach the shared counters within a second or so).
    let probes = batches.len() as i64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let scans = index_scans(client);
        let used = |i: usize| scans[i] - scans_before[i] >= probes;
        if used(0) && used(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "index scans (bucket, parts) {scans_before:?} -> {scans:?}, expected {probes} more each"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Scans so far of osm2pgsql's bucket index on ways and `parts` index on
/// relations.
fn index_scans(client: &mut postgres::Client) -> [i64; 2] {
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .unwrap();
    let scans = |client: &mut postgres::Client, index: &str| -> i64 {
        client
            .query_one(
                "SELECT idx_scan FROM pg_stat_user_indexes
                 WHERE schemaname = $1 AND indexrelname = $2",
                &[&SCHEMA, &index],
            )
            .unwrap()
            .get(0)
    };
    [
        scans(client, &format!("{PREFIX}_ways_nodes_bucket_idx")),
        scans(client, &format!("{PREFIX}_rels_parts_idx")),
    ]
}

#[test]
fn legacy_layout_reads_osm2pgsql_town() {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let path = dir.path().join("town.osm");
    town.write_osm_file(&path).unwrap();
    let (_url, mut client) = osm2pgsql_database("middle_legacy_town", &path);
    check_reads(&town, &mut client);
}

#[test]
fn legacy_layout_reads_osm2pgsql_liechtenstein() {
    let Some(path) = tilepipe_testkit::shared_data("liechtenstein-2013-08-03.osm.pbf") else {
        return;
    };
    if !osm2pgsql_available() {
        return;
    }
    let data = OsmData::from_pbf(&path).unwrap();
    let (_url, mut client) = osm2pgsql_database("middle_legacy_li", &path);
    check_reads(&data, &mut client);
}

/// tilepipe writes a node, a way and a relation in the legacy layout into
/// an osm2pgsql database; osm2pgsql then moves one of the way's nodes
/// with `--append` and must find the way (bucket index), decode it and
/// draw its line, find the relation through the way (`parts` index) and
/// draw its route, with the escaped name as tilepipe wrote it.
#[test]
fn osm2pgsql_append_takes_up_legacy_rows_tilepipe_wrote() {
    if !osm2pgsql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let path = dir.path().join("town.osm");
    town.write_osm_file(&path).unwrap();
    let (url, mut client) = osm2pgsql_database("middle_legacy_append", &path);
    let middle = legacy_middle(&mut client);

    let [max_node, max_way, max_relation] = town.max_ids();
    let street = town
        .objects()
        .find_map(|o| match o {
            Object::Way(w) if w.nodes.len() >= 2 => Some(w),
            _ => None,
        })
        .unwrap();
    let (a, b) = (street.nodes[0], street.nodes[1]);
    let name = r#"Tilepipe "quoted" \ {NULL}, x"#;
    let node = Node {
        id: max_node + 1,
        meta: Meta::default(),
        location: Some(Location {
            lon: 10.001,
            lat: 50.001,
        }),
        tags: Vec::new(),
    };
    let way = Way {
        id: max_way + 1,
        meta: Meta::default(),
        nodes: vec![node.id, a, b],
        tags: vec![
            ("highway".into(), "residential".into()),
            ("name".into(), name.into()),
        ],
    };
    let untagged = Way {
        id: max_way + 2,
        meta: Meta::default(),
        nodes: vec![b, a],
        tags: Vec::new(),
    };
    let relation = Relation {
        id: max_relation + 1,
        meta: Meta::default(),
        members: vec![
            Member {
                kind: ObjectType::Way,
                id: way.id,
                role: String::new(),
            },
            Member {
                kind: ObjectType::Node,
                id: a,
                role: "stop".into(),
            },
        ],
        tags: vec![
            ("type".into(), "route".into()),
            ("route".into(), "bus".into()),
            ("name".into(), "Line 1".into()),
        ],
    };
    let mut tx = client.transaction().unwrap();
    middle.copy_nodes(&mut tx, [&node]).unwrap();
    middle.copy_ways(&mut tx, [&way, &untagged]).unwrap();
    middle.copy_relations(&mut tx, [&relation]).unwrap();
    tx.commit().unwrap();

    // The rows have 1.8's encodings exactly.
    let row = client
        .query_one(
            &format!("SELECT nodes::text, tags::text FROM {SCHEMA}.{PREFIX}_ways WHERE id = $1"),
            &[&way.id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), format!("{{{},{a},{b}}}", node.id));
    assert_eq!(
        row.get::<_, String>(1),
        r#"{highway,residential,name,"Tilepipe \"quoted\" \\ {NULL}, x"}"#
    );
    let tags: Option<String> = client
        .query_one(
            &format!("SELECT tags::text FROM {SCHEMA}.{PREFIX}_ways WHERE id = $1"),
            &[&untagged.id],
        )
        .unwrap()
        .get(0);
    assert_eq!(tags, None, "untagged: NULL");
    let row = client
        .query_one(
            &format!(
                "SELECT way_off, rel_off, parts::text, members::text, tags::text
                 FROM {SCHEMA}.{PREFIX}_rels WHERE id = $1"
            ),
            &[&relation.id],
        )
        .unwrap();
    assert_eq!(row.get::<_, i16>(0), 1);
    assert_eq!(row.get::<_, i16>(1), 2);
    assert_eq!(row.get::<_, String>(2), format!("{{{a},{}}}", way.id));
    assert_eq!(
        row.get::<_, String>(3),
        format!(r#"{{w{},"",n{a},stop}}"#, way.id)
    );
    assert_eq!(
        row.get::<_, String>(4),
        r#"{type,route,route,bus,name,"Line 1"}"#
    );
    // tilepipe's own lookups find them.
    assert_eq!(
        middle.ways_using_nodes(&mut client, &[node.id]).unwrap(),
        vec![way.id]
    );
    assert!(middle
        .relations_using(&mut client, &[], &[way.id])
        .unwrap()
        .contains(&relation.id));

    // osm2pgsql moves node a.
    let moved = Location {
        lon: 10.002,
        lat: 50.002,
    };
    let diff = dir.path().join("move.osc");
    std::fs::write(
        &diff,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<osmChange version="0.6" generator="test">
<modify>
<node id="{a}" version="2" timestamp="2024-01-01T00:00:00Z" changeset="1" uid="1" user="t" lat="{}" lon="{}"/>
</modify>
</osmChange>
"#,
            moved.lat, moved.lon
        ),
    )
    .unwrap();
    osm2pgsql(&url, true, &diff);

    let mut near = |osm_id: i64, location: Location| -> bool {
        client
            .query_one(
                &format!(
                    "SELECT bool_or(ST_DWithin(ST_Transform(way, 4326),
                       ST_SetSRID(ST_MakePoint($2, $3), 4326), 1e-6))
                     FROM {SCHEMA}.{PREFIX}_line WHERE osm_id = $1"
                ),
                &[&osm_id, &location.lon, &location.lat],
            )
            .unwrap()
            .get::<_, Option<bool>>(0)
            .unwrap_or(false)
    };
    assert!(
        near(way.id, moved),
        "osm2pgsql drew tilepipe's way through the moved node"
    );
    assert!(
        near(way.id, node.location.unwrap()),
        "… and through the node tilepipe wrote"
    );
    assert!(
        near(-relation.id, moved),
        "osm2pgsql drew tilepipe's route relation"
    );
    let names: Vec<(i64, Option<String>, Option<String>)> = client
        .query(
            &format!(
                "SELECT osm_id, name, route FROM {SCHEMA}.{PREFIX}_line
                 WHERE osm_id IN ($1, $2) ORDER BY osm_id"
            ),
            &[&way.id, &-relation.id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        names,
        vec![
            (-relation.id, Some("Line 1".into()), Some("bus".into())),
            (way.id, Some(name.into()), None),
        ]
    );

    // And tilepipe reads osm2pgsql's update and its own rows back.
    let locations = middle.node_locations(&mut client, &[a]).unwrap();
    assert_eq!(locations[&a].to_fixed(), moved.to_fixed());
    let read = middle.ways(&mut client, &[way.id, untagged.id]).unwrap();
    assert_eq!(
        read.iter().map(|w| (&w.nodes, &w.tags)).collect::<Vec<_>>(),
        vec![(&way.nodes, &way.tags), (&untagged.nodes, &untagged.tags)]
    );
    let read = middle.relations(&mut client, &[relation.id]).unwrap();
    assert_eq!(
        (&read[0].members, &read[0].tags),
        (&relation.members, &relation.tags)
    );
}

/// The layout of tables tilepipe creates is told apart from the legacy one.
#[test]
fn detect_tells_tilepipe_layout_from_legacy() {
    let url = PgCluster::shared()
        .create_database("middle_layout_detect")
        .unwrap();
    let mut client = tilepipe_testkit::db::connect(&url);
    client
        .batch_execute("CREATE SCHEMA a; CREATE SCHEMA b;")
        .unwrap();
    assert_eq!(
        MiddleLayout::detect(&mut client, "a", PREFIX).unwrap(),
        None
    );
    Middle::new("a", PREFIX).create(&mut client).unwrap();
    assert_eq!(
        MiddleLayout::detect(&mut client, "a", PREFIX).unwrap(),
        Some(MiddleLayout::Tilepipe)
    );
    let legacy = Middle::with_layout("b", PREFIX, MiddleLayout::Legacy18 { bucket_index: true });
    legacy.create(&mut client).unwrap();
    legacy.index_ways(&mut client).unwrap();
    assert_eq!(
        MiddleLayout::detect(&mut client, "b", PREFIX).unwrap(),
        Some(MiddleLayout::Legacy18 { bucket_index: true })
    );
}
