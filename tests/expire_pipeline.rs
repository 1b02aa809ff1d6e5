//! Expiry wired into `tilepipe catchup`: a street rename touches exactly the
//! cached metatiles the street crosses and lists its tiles; a change to a
//! tag the style drops expires nothing; the queue is empty afterwards.

use chrono::{TimeZone, Utc};
use std::path::Path;
use std::process::Command;
use tilepipe::metatile::{TileState, TileStore};
use tilepipe::osm::{Action, Change};
use tilepipe::osm::{Object, ObjectId, ObjectType};
use tilepipe::replication::ReplicationState;
use tilepipe::tile::{Metatile, Tile};
use tilepipe_testkit::feedgen::write_feed_from_changes;
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::PgCluster;

const START: u64 = 100;

fn tile_of(lon: f64, lat: f64, z: u8) -> Tile {
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n).floor() as u32;
    let lat = lat.to_radians();
    let y = ((1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor()
        as u32;
    Tile { z, x, y }
}

fn tilepipe(config: &Path, url: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tilepipe"))
        .args(["-c", config.to_str().unwrap(), "-d", url])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn catchup_expires_what_changed_and_only_that() {
    let dir = tempfile::tempdir().unwrap();
    let town = synthetic_town();
    let osm = dir.path().join("town.osm");
    town.write_osm_file(&osm).unwrap();

    // Way 1 is "Rivi Street 1", along latitude 50.0 from 10.0 to 10.008.
    let Some(Object::Way(mut street)) = town.get(ObjectId {
        kind: ObjectType::Way,
        id: 1,
    }) else {
        panic!("way 1 missing")
    };
    street.tags.iter_mut().find(|(k, _)| k == "name").unwrap().1 = "Uusi Street".into();
    street.meta.version = street.meta.version.map(|v| v + 1);
    // A building whose only change is its `source` tag (not a column).
    let building = town
        .ways
        .values()
        .find(|w| w.tags.iter().any(|(k, _)| k == "source"))
        .expect("a building with a source tag")
        .clone();
    let mut quiet = building.clone();
    quiet
        .tags
        .iter_mut()
        .find(|(k, _)| k == "source")
        .unwrap()
        .1 = "aerial imagery".into();
    quiet.meta.version = quiet.meta.version.map(|v| v + 1);
    let feed = dir.path().join("feed");
    let start = ReplicationState {
        sequence: START,
        timestamp: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
    };
    write_feed_from_changes(
        &feed,
        start,
        60,
        &[
            vec![Change {
                action: Action::Modify,
                object: Object::Way(street),
            }],
            vec![Change {
                action: Action::Modify,
                object: Object::Way(quiet),
            }],
        ],
    )
    .unwrap();

    // A tile cache holding every z16–z18 metatile over the town.
    let tiles_dir = dir.path().join("tiles");
    let store = TileStore::new(&tiles_dir);
    let mut cached: Vec<Metatile> = Vec::new();
    for z in 16..=18u8 {
        let (nw, se) = (tile_of(9.998, 50.010, z), tile_of(10.016, 49.995, z));
        for x in ((nw.x & !7)..=se.x).step_by(8) {
            for y in ((nw.y & !7)..=se.y).step_by(8) {
                let m = Tile { z, x, y }.metatile();
                if !cached.contains(&m) {
                    store
                        .write("default", m, &vec![b"png".to_vec(); 64])
                        .unwrap();
                    cached.push(m);
                }
            }
        }
    }
    let list_dir = dir.path().join("expired");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "replication:\n  max_diff_size_mb: 0.0001\nexpire:\n  min_zoom: 16\n  list_dir: {}\n  styles:\n    - name: default\n      tile_dir: {}\n      min_zoom: 16\n      max_zoom: 18\n",
            list_dir.display(),
            tiles_dir.display()
        ),
    )
    .unwrap();
    let url = PgCluster::shared()
        .create_database("expire_pipeline")
        .unwrap();
    tilepipe(&config, &url, &["import", osm.to_str().unwrap()]);
    let feed_url = format!("file://{}/", feed.display());
    tilepipe(
        &config,
        &url,
        &[
            "init",
            "--server",
            &feed_url,
            "--sequence",
            &START.to_string(),
        ],
    );

    tilepipe(&config, &url, &["catchup", "--once"]);
    let list =
        std::fs::read_to_string(list_dir.join(format!("expired-{:09}.list", START + 1))).unwrap();
    let listed: Vec<Tile> = list.lines().map(|l| l.parse().unwrap()).collect();
    let street_middle = tile_of(10.004, 50.0, 18);
    assert!(
        listed.contains(&street_middle),
        "{street_middle} not in {} listed tiles",
        listed.len()
    );
    assert!(listed.iter().all(|t| (16..=18).contains(&t.z)));

    let touched = |m: &Metatile| {
        matches!(
            store.stat("default", *m).unwrap(),
            TileState::Dirty { touched: true, .. }
        )
    };
    assert!(touched(&street_middle.metatile()));
    for z in 16..=18u8 {
        assert!(
            touched(&street_middle.ancestor(18 - z).metatile()),
            "zoom {z}"
        );
    }
    // Metatiles the street does not reach are untouched.
    let far = tile_of(10.012, 50.009, 18).metatile();
    assert!(cached.contains(&far));
    assert!(!touched(&far), "{far} was touched");
    let untouched = cached.iter().filter(|m| !touched(m)).count();
    assert!(untouched > 0 && untouched < cached.len());

    // The source-only change: rewritten rows, nothing rendered changed.
    tilepipe(&config, &url, &["catchup"]);
    let list =
        std::fs::read_to_string(list_dir.join(format!("expired-{:09}.list", START + 2))).unwrap();
    assert_eq!(list, "", "a change to a dropped tag expired tiles");

    let mut client =
        tilepipe::db::connect(&tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap())
            .unwrap();
    let queued: i64 = client
        .query_one("SELECT count(*) FROM tilepipe_expire_queue", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
}
