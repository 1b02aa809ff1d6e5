//! `tilepipe render` end to end (the binary, real Mapnik, real PostGIS):
//! missing, dirty and forced metatiles; a land use edit applied with
//! `tilepipe apply` changes the colour of the re-rendered tile; and
//! openstreetmap-carto prepared by `scripts/setup-carto` renders a tile
//! from a carto import.

use std::path::{Path, PathBuf};
use std::process::Output;
use tilepipe::metatile::TileStore;
use tilepipe::osm::Object;
use tilepipe_testkit::cli::{assert_success, tilepipe};
use tilepipe_testkit::render::*;
use tilepipe_testkit::PgCluster;

/// West, south, east, north around the synthetic town.
const TOWN_BOX: &str = "9.999,49.997,10.013,50.009";

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    url: String,
    tiles: PathBuf,
}

fn setup(hint: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let url = town_database(dir.path(), hint);
    let tiles = dir.path().join("tiles");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "styles:\n  - name: town\n    xml: {}\n    tile_dir: {}\n    min_zoom: 10\n    max_zoom: 18\nrender:\n  threads: 2\n",
            project_style_xml().display(),
            tiles.display()
        ),
    )
    .unwrap();
    Setup {
        dir,
        config,
        url,
        tiles,
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The counts of the summary line: rendered, skipped, failed.
fn summary(out: &Output) -> (u64, u64, u64) {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.contains("metatiles/s"))
        .unwrap_or_else(|| {
            panic!(
                "no summary ({}) in {text}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let number = |label: &str| -> u64 {
        let at = line.find(label).unwrap() + label.len();
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (number("rendered"), number("skipped"), number("failed"))
}

#[test]
fn render_command_missing_dirty_and_forced() {
    let s = setup("render_cli");
    let render = |extra: &[&str]| {
        let mut args = vec![
            "render", "--style", "town", "--zoom", "14-16", "--bbox", TOWN_BOX,
        ];
        args.extend_from_slice(extra);
        tilepipe(&s.config, &s.url, &args)
    };
    let out = render(&[]);
    assert_success(&out);
    let (rendered, skipped, failed) = summary(&out);
    assert!(rendered >= 3, "{}", stdout(&out));
    assert_eq!((skipped, failed), (0, 0));
    // All clean now.
    let out = render(&[]);
    assert_success(&out);
    assert_eq!(summary(&out), (0, rendered, 0));
    // A touched metatile is dirty: rendered by default, not with
    // --missing-only; a deleted one is rendered by both.
    let store = TileStore::new(&s.tiles);
    let touched = metatile_at(TOWN, 16);
    store.touch("town", touched).unwrap();
    let out = render(&["--missing-only"]);
    assert_eq!(summary(&out), (0, rendered, 0));
    let out = render(&[]);
    assert_eq!(summary(&out), (1, rendered - 1, 0));
    store.delete("town", metatile_at(TOWN, 15)).unwrap();
    let out = render(&["--missing-only", "--threads", "1"]);
    assert_eq!(summary(&out), (1, rendered - 1, 0));
    // --force renders everything.
    let out = render(&["--force"]);
    assert_success(&out);
    assert_eq!(summary(&out), (rendered, 0, 0));
    for z in 14..=16 {
        let tile = store.read_tile("town", tile_at(TOWN, z)).unwrap().unwrap();
        let image = decode_png(&tile.bytes);
        assert_eq!((image.width, image.height), (256, 256));
        assert!(image.distinct_colours() > 8);
    }

    // Mistakes are refused with a message.
    let out = tilepipe(
        &s.config,
        &s.url,
        &["render", "--style", "nosuch", "--zoom", "14", "--all"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no style \"nosuch\"") && err.contains("town"),
        "{err}"
    );
    let out = tilepipe(
        &s.config,
        &s.url,
        &["render", "--style", "town", "--zoom", "5-12", "--all"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("renders zoom 10-18, not 5-12"), "{err}");
    let out = tilepipe(
        &s.config,
        &s.url,
        &["render", "--style", "town", "--zoom", "14"],
    );
    assert!(!out.status.success(), "--bbox or --all is required");
}

/// The OsmChange that turns the town's residential area into forest.
fn landuse_edit(path: &Path) {
    let town = tilepipe_testkit::town::synthetic_town();
    let way = town
        .objects()
        .find_map(|o| match o {
            Object::Way(w)
                if w.tags
                    .iter()
                    .any(|(k, v)| k == "landuse" && v == "residential") =>
            {
                Some(w)
            }
            _ => None,
        })
        .expect("the town has a residential area");
    let nodes: String = way
        .nodes
        .iter()
        .map(|n| format!("   <nd ref=\"{n}\"/>\n"))
        .collect();
    let version = way.meta.version.unwrap_or(1) + 1;
    let osc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<osmChange version=\"0.6\" generator=\"render_cli test\">\n <modify>\n  <way id=\"{}\" version=\"{version}\" timestamp=\"2026-11-02T10:00:00Z\" changeset=\"99999\" uid=\"1\" user=\"mapper1\">\n{nodes}   <tag k=\"landuse\" v=\"forest\"/>\n  </way>\n </modify>\n</osmChange>\n",
        way.id
    );
    std::fs::write(path, osc).unwrap();
}

#[test]
fn an_applied_edit_changes_the_rendered_colour() {
    let s = setup("render_apply");
    let tile = tile_at(RESIDENTIAL, 17);
    let zoom = "17";
    let bbox = format!(
        "{},{},{},{}",
        RESIDENTIAL.0, RESIDENTIAL.1, RESIDENTIAL.0, RESIDENTIAL.1
    );
    let render = |force: bool| {
        let mut args = vec!["render", "--style", "town", "--zoom", zoom, "--bbox", &bbox];
        if force {
            args.push("--force");
        }
        let out = tilepipe(&s.config, &s.url, &args);
        assert_success(&out);
        assert_eq!(summary(&out), (1, 0, 0));
    };
    let store = TileStore::new(&s.tiles);
    let read = || decode_png(&store.read_tile("town", tile).unwrap().unwrap().bytes);
    render(false);
    let before = read();
    let residential = rgb("#e6e1dc");
    let forest = rgb("#a9cf9a");
    let near = |p: [u8; 3], c: [u8; 3]| (0..3).all(|i| p[i].abs_diff(c[i]) <= 6);
    assert!(near(before.pixel_at(tile, RESIDENTIAL), residential));
    let residential_before = before.count_near(residential, 6);
    assert!(residential_before > 1000, "{residential_before}");
    assert_eq!(before.count_near(forest, 6), 0);

    let osc = s.dir.path().join("forest.osc");
    landuse_edit(&osc);
    assert_success(&tilepipe(
        &s.config,
        &s.url,
        &["apply", osc.to_str().unwrap()],
    ));
    render(true);
    let after = read();
    let pixel = after.pixel_at(tile, RESIDENTIAL);
    assert!(near(pixel, forest), "{pixel:?}");
    assert!(after.count_near(forest, 6) >= residential_before * 9 / 10);
    assert!(after.count_near(residential, 6) < residential_before / 10);
}

/// openstreetmap-carto from Debian: `scripts/setup-carto` prepares its
/// style directory and the empty external-data tables; the town imported
/// with carto's .style and Lua transform renders.
#[test]
fn openstreetmap_carto_renders_a_carto_import() {
    let carto = Path::new(CARTO_DIR);
    if !carto.join("style.xml").exists() {
        eprintln!(
            "skipped: {CARTO_DIR}/style.xml not found (apt-get install openstreetmap-carto-common)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let osm = dir.path().join("town.osm");
    tilepipe_testkit::town::synthetic_town()
        .write_osm_file(&osm)
        .unwrap();
    let url = PgCluster::shared().create_database("render_carto").unwrap();
    let style_dir = dir.path().join("carto");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-carto");
    let out = std::process::Command::new(&script)
        .arg(&style_dir)
        .arg(&url)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(
        std::fs::read_dir(style_dir.join("patterns"))
            .unwrap()
            .count(),
        13
    );
    let config = dir.path().join("config.yaml");
    let tiles = dir.path().join("tiles");
    std::fs::write(
        &config,
        format!(
            "styles:\n  - name: carto\n    xml: {}\n    tile_dir: {}\n  - name: own\n    xml: {}\n    tile_dir: {}\nrender:\n  threads: 1\n",
            style_dir.join("style.xml").display(),
            tiles.display(),
            project_style_xml().display(),
            tiles.display()
        ),
    )
    .unwrap();
    let style = format!("{CARTO_DIR}/openstreetmap-carto.style");
    let lua = format!("{CARTO_DIR}/openstreetmap-carto.lua");
    let import = [
        "import",
        "--style",
        &style,
        "--tag-transform-script",
        &lua,
        "--hstore",
        "-G",
        osm.to_str().unwrap(),
    ];
    assert_success(&tilepipe(&config, &url, &import));
    let bbox = format!("{},{},{},{}", TOWN.0, TOWN.1, TOWN.0, TOWN.1);
    let out = tilepipe(
        &config,
        &url,
        &[
            "render", "--style", "carto", "--zoom", "17", "--bbox", &bbox,
        ],
    );
    assert_success(&out);
    assert_eq!(summary(&out), (1, 0, 0));
    let store = TileStore::new(&tiles);
    let tile = store
        .read_tile("carto", tile_at(TOWN, 17))
        .unwrap()
        .unwrap();
    let image = decode_png(&tile.bytes);
    assert_eq!((image.width, image.height), (256, 256));
    // Carto's land colour, its white residential streets and more.
    assert!(
        image.distinct_colours() > 16,
        "{}",
        image.distinct_colours()
    );
    assert!(image.count_near(rgb("#ffffff"), 2) > 100);

    // The project's style reads carto's columns too.
    let out = tilepipe(
        &config,
        &url,
        &["render", "--style", "own", "--zoom", "17", "--bbox", &bbox],
    );
    assert_success(&out);
    assert_eq!(summary(&out), (1, 0, 0));
    let tile = store.read_tile("own", tile_at(TOWN, 17)).unwrap().unwrap();
    let image = decode_png(&tile.bytes);
    assert!(image.count_near(rgb("#d8cfc6"), 6) > 50, "buildings");
}
