//! `tilepipe-testkit scale` and the benchmark feeds made over its regions.

use std::process::Command;
use tilepipe::osm::osc::read_osc_file;
use tilepipe::osm::Object;
use tilepipe_testkit::feedgen::feed_range;
use tilepipe_testkit::town::synthetic_town;
use tilepipe_testkit::OsmData;

const BIN: &str = env!("CARGO_BIN_EXE_tilepipe-testkit");

fn run(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn scaled_region_and_its_feed_with_a_city_wide_vandalism_diff() {
    let dir = tempfile::tempdir().unwrap();
    let pbf = dir.path().join("town-x4.osm.pbf");
    let pbf_arg = pbf.to_str().unwrap();
    let summary: serde_json::Value = serde_json::from_str(
        run(&[
            "scale",
            "--synthetic-town",
            "--copies",
            "4",
            "--out",
            pbf_arg,
            "--replication-url",
            "http://127.0.0.1:9/",
            "--replication-sequence",
            "500",
            "--replication-timestamp",
            "2024-05-01T00:00:00Z",
        ])
        .trim(),
    )
    .unwrap();
    let town = synthetic_town();
    let region = OsmData::from_pbf(&pbf).unwrap();
    assert_eq!(region.len(), 4 * town.len());
    assert_eq!(summary["nodes"], 4 * town.nodes.len());
    assert_eq!(summary["columns"], 2);
    let offset = summary["id_offset"].as_i64().unwrap();
    // Copy 3 is copy 0 shifted, ids offset.
    let (&id, node) = town.nodes.iter().next().unwrap();
    let copy = &region.nodes[&(id + 3 * offset)];
    assert_eq!(copy.tags, node.tags);
    assert_ne!(copy.location, node.location);

    if Command::new("osmium").arg("--version").output().is_ok() {
        let info = Command::new("osmium")
            .args(["fileinfo", "-e", "-g", "data.count.nodes", pbf_arg])
            .output()
            .unwrap();
        assert!(info.status.success(), "osmium cannot read our PBF");
        assert_eq!(
            String::from_utf8_lossy(&info.stdout).trim(),
            (4 * town.nodes.len()).to_string()
        );
    }

    let feed = dir.path().join("feed");
    let city = summary["copy0_bbox"].as_str().unwrap();
    let out = run(&[
        "feed",
        "generate",
        "--pbf",
        pbf_arg,
        "--out",
        feed.to_str().unwrap(),
        "--sizes",
        "3,12",
        "--vandalism",
        "--vandalism-bbox",
        city,
    ]);
    assert!(out.contains("vandalism in"), "{out}");
    // The header's replication fields start the feed.
    assert_eq!(feed_range(&feed).unwrap(), Some((500, 503)));
    let vandalism = read_osc_file(&feed.join("000/000/503.osc.gz")).unwrap();
    assert!(!vandalism.is_empty());
    assert!(vandalism.iter().all(|c| c.object.object_id().id < offset));
    assert!(vandalism
        .iter()
        .any(|c| matches!(&c.object, Object::Way(w) if w.tags.iter().any(|(_, v)| v.starts_with("Vandal Street")))));
}
