//! The feed position in `osm2pgsql_properties`, on a real PostgreSQL.

use chrono::{TimeZone, Utc};
use tilepipe::db;
use tilepipe::db::properties::ensure_table;
use tilepipe::replication::position::{read_position, write_position, Position, StoredPosition};
use tilepipe_testkit::PgCluster;

fn connect(url: &str) -> postgres::Client {
    db::connect(&db::resolve(url, &db::ProcessEnv).unwrap()).unwrap()
}

fn position(sequence: u64) -> Position {
    Position {
        base_url: "https://planet.openstreetmap.org/replication/minute/".into(),
        sequence,
        timestamp: Utc.with_ymd_and_hms(2024, 8, 5, 2, 24, 4).unwrap(),
    }
}

#[test]
fn position_round_trips_in_osm2pgsql_format() {
    let url = PgCluster::shared().create_database("position").unwrap();
    let mut client = connect(&url);

    assert_eq!(
        read_position(&mut client, "public").unwrap(),
        StoredPosition::NoTable
    );
    ensure_table(&mut client, "public").unwrap();
    assert!(matches!(
        read_position(&mut client, "public").unwrap(),
        StoredPosition::NotSetUp { .. }
    ));

    let mut tx = client.transaction().unwrap();
    write_position(&mut tx, "public", &position(6205195)).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        read_position(&mut client, "public").unwrap(),
        StoredPosition::Set(position(6205195))
    );

    // Stored as osm2pgsql 2.x stores it: three text properties.
    let rows: Vec<(String, String)> = client
        .query(
            "SELECT property, value FROM osm2pgsql_properties ORDER BY property",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "replication_base_url".to_string(),
                "https://planet.openstreetmap.org/replication/minute/".to_string()
            ),
            ("replication_sequence_number".into(), "6205195".into()),
            (
                "replication_timestamp".into(),
                "2024-08-05T02:24:04Z".into()
            ),
        ]
    );

    // Upsert: a later write replaces the values.
    write_position(&mut client, "public", &position(6205200)).unwrap();
    assert_eq!(
        read_position(&mut client, "public").unwrap(),
        StoredPosition::Set(position(6205200))
    );
}

#[test]
fn position_commits_or_rolls_back_with_the_batch_data() {
    let url = PgCluster::shared().create_database("position_tx").unwrap();
    let mut client = connect(&url);
    client
        .batch_execute("CREATE TABLE batch_data (id int8)")
        .unwrap();
    write_position(&mut client, "public", &position(10)).unwrap();

    // A batch that fails after writing data and position leaves neither.
    let mut tx = client.transaction().unwrap();
    tx.execute("INSERT INTO batch_data VALUES (1)", &[])
        .unwrap();
    write_position(&mut tx, "public", &position(11)).unwrap();
    drop(tx); // rollback, as on an error or a crash
    let count: i64 = client
        .query_one("SELECT count(*) FROM batch_data", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    assert_eq!(
        read_position(&mut client, "public").unwrap(),
        StoredPosition::Set(position(10))
    );

    let mut tx = client.transaction().unwrap();
    tx.execute("INSERT INTO batch_data VALUES (1)", &[])
        .unwrap();
    write_position(&mut tx, "public", &position(11)).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        read_position(&mut client, "public").unwrap(),
        StoredPosition::Set(position(11))
    );
}

#[test]
fn position_in_another_schema() {
    let url = PgCluster::shared()
        .create_database("position_schema")
        .unwrap();
    let mut client = connect(&url);
    client.batch_execute("CREATE SCHEMA middle").unwrap();
    write_position(&mut client, "middle", &position(3)).unwrap();
    assert_eq!(
        read_position(&mut client, "public").unwrap(),
        StoredPosition::NoTable
    );
    assert_eq!(
        read_position(&mut client, "middle").unwrap(),
        StoredPosition::Set(position(3))
    );
}

/// Once `tilepipe adopt` named osm2pgsql-replication 1.8's table, every
/// position written is mirrored there in the same transaction (its one
/// row updated, or inserted if missing); a rolled-back write leaves both
/// alone, and a dropped table is no error.
#[test]
fn position_is_mirrored_to_the_legacy_table_adopt_names() {
    use tilepipe::replication::legacy_status::{self, LegacyStatus, MIRROR_PROPERTY};
    let url = PgCluster::shared()
        .create_database("position_legacy")
        .unwrap();
    let mut client = connect(&url);
    client
        .batch_execute(
            "CREATE TABLE planet_osm_replication_status (url TEXT, sequence INTEGER, importdate TIMESTAMPTZ)",
        )
        .unwrap();
    let legacy = |client: &mut postgres::Client| {
        legacy_status::read(client, "public", "planet_osm_replication_status").unwrap()
    };
    assert!(
        matches!(legacy(&mut client), Some(LegacyStatus::Incomplete { .. })),
        "no row yet"
    );
    // Not named by adopt: left alone.
    write_position(&mut client, "public", &position(1)).unwrap();
    assert!(matches!(
        legacy(&mut client),
        Some(LegacyStatus::Incomplete { .. })
    ));

    tilepipe::db::properties::write(
        &mut client,
        "public",
        &[(MIRROR_PROPERTY, "planet_osm_replication_status")],
    )
    .unwrap();
    write_position(&mut client, "public", &position(2)).unwrap();
    assert_eq!(legacy(&mut client), Some(LegacyStatus::Set(position(2))));
    write_position(&mut client, "public", &position(3)).unwrap();
    assert_eq!(legacy(&mut client), Some(LegacyStatus::Set(position(3))));
    let rows: i64 = client
        .query_one("SELECT count(*) FROM planet_osm_replication_status", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "osm2pgsql-replication reads exactly one row");

    let mut tx = client.transaction().unwrap();
    write_position(&mut tx, "public", &position(4)).unwrap();
    tx.rollback().unwrap();
    assert_eq!(legacy(&mut client), Some(LegacyStatus::Set(position(3))));

    client
        .batch_execute("DROP TABLE planet_osm_replication_status")
        .unwrap();
    write_position(&mut client, "public", &position(5)).unwrap();
    assert_eq!(
        read_position(&mut client, "public").unwrap(),
        StoredPosition::Set(position(5))
    );
}
