//! The render workers with real Mapnik and a real PostGIS database: the
//! synthetic town rendered with the project's style through [`Renderer`],
//! checked as PNGs and as mod_tile metatile bytes; its low zooms (z6, z8)
//! over Liechtenstein with the classic and the flex import; failures
//! (unknown style, zoom outside the range, a style that does not load, a
//! PostgreSQL restart) handled cleanly.

use std::time::Duration;
use tilepipe::metatile::{DATA_START, HEADER_LEN, SLOTS};
use tilepipe::render::config::{StyleConfig, TileFormat};
use tilepipe::render::queue::{Outcome, Priority, RenderKey};
use tilepipe::render::worker::{RenderError, Renderer};
use tilepipe::tile::Metatile;
use tilepipe_testkit::render::*;
use tilepipe_testkit::PgCluster;

fn render(renderer: &Renderer, style: &str, metatiles: &[Metatile]) -> Vec<Outcome> {
    let receivers: Vec<_> = metatiles
        .iter()
        .map(|&metatile| {
            let key = RenderKey {
                style: style.into(),
                metatile,
            };
            renderer
                .queue()
                .submit(key, Priority::MissingWaited, true)
                .1
                .unwrap()
        })
        .collect();
    receivers
        .into_iter()
        .map(|r| r.blocking_recv().unwrap())
        .collect()
}

/// The file's bytes against mod_tile's layout (`struct meta_layout` in
/// mod_tile's `store_file.h`):
/// little-endian header, 64 index entries in slot order, data from byte
/// 532 on, contiguous; slots outside a small world empty.
fn check_layout(bytes: &[u8], metatile: Metatile) -> usize {
    let int = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(&bytes[..4], b"META");
    assert_eq!(int(4), 64);
    assert_eq!(
        (int(8), int(12), int(16)),
        (metatile.x as i32, metatile.y as i32, i32::from(metatile.z))
    );
    assert_eq!(HEADER_LEN + SLOTS * 8, 532);
    let size = metatile.size() as usize;
    let mut position = DATA_START;
    let mut drawn = 0;
    for slot in 0..SLOTS {
        let (offset, length) = (
            int(HEADER_LEN + slot * 8) as usize,
            int(HEADER_LEN + slot * 8 + 4) as usize,
        );
        assert_eq!(offset, position, "slot {slot}: data in slot order");
        let (dx, dy) = (slot / 8, slot % 8);
        if dx < size && dy < size {
            assert!(length > 0, "slot {slot} empty");
            assert_eq!(&bytes[offset..offset + 8], b"\x89PNG\r\n\x1a\n");
            drawn += 1;
        } else {
            assert_eq!(length, 0, "slot {slot} outside a {size}x{size} world");
        }
        position += length;
    }
    assert_eq!(position, bytes.len());
    drawn
}

#[test]
fn renders_the_town_from_z0_to_z18() {
    let dir = tempfile::tempdir().unwrap();
    let url = town_database(dir.path(), "render_town");
    let tiles = dir.path().join("tiles");
    let styles = vec![
        StyleConfig {
            min_zoom: 0,
            max_zoom: 19,
            ..project_style("town", &tiles, &url)
        },
        StyleConfig {
            tile_size: 512,
            scale: 2.0,
            format: TileFormat::Png256,
            min_zoom: 14,
            max_zoom: 18,
            ..project_style("town2x", &tiles, &url)
        },
    ];
    let renderer = Renderer::start(&styles, &settings(2)).unwrap();
    assert_eq!(renderer.threads(), 2);
    assert_eq!(renderer.styles().len(), 2);
    let zooms: Vec<u8> = (0..=18).collect();
    let metatiles: Vec<Metatile> = zooms.iter().map(|&z| metatile_at(TOWN, z)).collect();
    let outcomes = render(&renderer, "town", &metatiles);
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Rendered),
        "{outcomes:?}"
    );
    let store = renderer.store("town").unwrap();
    for (&z, &metatile) in zooms.iter().zip(&metatiles) {
        let path = store.path("town", metatile, None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let drawn = check_layout(&bytes, metatile);
        assert_eq!(drawn, (metatile.size() * metatile.size()) as usize);
        // Every tile decodes as a 256-pixel PNG.
        for tile in metatile.tiles() {
            let stored = store.read_tile("town", tile).unwrap().unwrap();
            let image = decode_png(&stored.bytes);
            assert_eq!((image.width, image.height), (256, 256), "{tile}");
        }
        // The tile with the town in it shows more than the background
        // from z13 on (below, the town is a few pixels).
        let image = decode_png(
            &store
                .read_tile("town", tile_at(TOWN, z))
                .unwrap()
                .unwrap()
                .bytes,
        );
        if z >= 13 {
            assert!(
                image.distinct_colours() > 8,
                "z{z}: {} colours",
                image.distinct_colours()
            );
        }
        if z >= 15 {
            // Land use, buildings and white residential streets are there.
            let residential = image.count_near(rgb("#e6e1dc"), 6);
            let building = image.count_near(rgb("#d8cfc6"), 6);
            let street = image.count_near(rgb("#ffffff"), 2);
            assert!(
                residential > 200 && building > 50 && street > 100,
                "z{z}: residential {residential}, building {building}, street {street}"
            );
        }
    }
    // z17: the pixel inside the residential area has its colour.
    let tile = tile_at(RESIDENTIAL, 17);
    let image = decode_png(&store.read_tile("town", tile).unwrap().unwrap().bytes);
    let pixel = image.pixel_at(tile, RESIDENTIAL);
    assert!(
        pixel
            .iter()
            .zip(rgb("#e6e1dc"))
            .all(|(a, b)| a.abs_diff(b) <= 6),
        "{pixel:?}"
    );

    // High-DPI: 512-pixel tiles, palette PNGs.
    let m = metatile_at(TOWN, 16);
    assert_eq!(render(&renderer, "town2x", &[m]), [Outcome::Rendered]);
    let stored = renderer
        .store("town2x")
        .unwrap()
        .read_tile("town2x", tile_at(TOWN, 16))
        .unwrap()
        .unwrap();
    let image = decode_png(&stored.bytes);
    assert_eq!((image.width, image.height), (512, 512));
    assert!(image.distinct_colours() > 8);

    // Where the time went (the last job's times land just after its
    // waiters are woken).
    let mut t = renderer.timings();
    while t.jobs < 20 {
        std::thread::sleep(Duration::from_millis(5));
        t = renderer.timings();
    }
    assert_eq!((t.jobs, t.rendered, t.failed), (20, 20, 0));
    assert!(t.mapnik > Duration::ZERO && t.write > Duration::ZERO);
    assert!(t.busy >= t.mapnik + t.write, "{t:?}");
    renderer.shutdown();
}

#[test]
fn unknown_styles_and_zooms_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = PgCluster::shared().create_database("render_fail").unwrap();
    // A style reading no table: renders without data.
    let xml = dir.path().join("plain.xml");
    std::fs::write(
        &xml,
        r##"<Map srs="epsg:3857" background-color="#336699"/>"##,
    )
    .unwrap();
    let style = StyleConfig {
        name: "plain".into(),
        xml,
        tile_dir: dir.path().join("tiles"),
        min_zoom: 5,
        max_zoom: 12,
        database: Some(url.clone()),
        ..StyleConfig::default()
    };
    let renderer = Renderer::start(std::slice::from_ref(&style), &settings(1)).unwrap();
    let m = |z| metatile_at(TOWN, z);
    let e = renderer.check("nosuch", m(8)).unwrap_err();
    assert!(matches!(e, RenderError::UnknownStyle(_)), "{e}");
    let e = renderer.check("plain", m(13)).unwrap_err();
    assert_eq!(e.to_string(), "style \"plain\" renders zoom 5-12, not 13");
    assert!(renderer.check("plain", m(12)).is_ok());
    // Through the queue: failed jobs, the worker carries on.
    let outcomes = render(&renderer, "nosuch", &[m(8)]);
    assert!(
        matches!(&outcomes[0], Outcome::Failed(msg) if msg.contains("unknown style \"nosuch\"")),
        "{outcomes:?}"
    );
    let outcomes = render(&renderer, "plain", &[m(4), m(13)]);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Failed(msg) if msg.contains("renders zoom 5-12"))),
        "{outcomes:?}"
    );
    let outside = Metatile { z: 6, x: 64, y: 0 };
    let outcomes = render(&renderer, "plain", &[outside]);
    assert!(
        matches!(&outcomes[0], Outcome::Failed(msg) if msg.contains("outside the world")),
        "{outcomes:?}"
    );
    assert_eq!(render(&renderer, "plain", &[m(6)]), [Outcome::Rendered]);
    let tile = renderer
        .store("plain")
        .unwrap()
        .read_tile("plain", tile_at(TOWN, 6))
        .unwrap()
        .unwrap();
    let image = decode_png(&tile.bytes);
    assert_eq!(image.count_near(rgb("#336699"), 2), 256 * 256);
    let t = renderer.timings();
    assert_eq!((t.rendered, t.failed), (1, 4));
    assert!(renderer.store("nosuch").is_none());
    renderer.shutdown();
}

#[test]
fn styles_that_do_not_load_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let tiles = dir.path().join("tiles");
    let missing = StyleConfig {
        name: "gone".into(),
        xml: dir.path().join("gone.xml"),
        tile_dir: tiles.clone(),
        ..StyleConfig::default()
    };
    let e = Renderer::start(&[missing], &settings(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"gone\"") && e.contains("gone.xml"), "{e}");

    let broken = dir.path().join("broken.xml");
    std::fs::write(
        &broken,
        "<Map srs=\"epsg:3857\"><Layer name=\"x\"><StyleName>nope</StyleName>",
    )
    .unwrap();
    let style = StyleConfig {
        name: "broken".into(),
        xml: broken,
        tile_dir: tiles.clone(),
        ..StyleConfig::default()
    };
    let e = Renderer::start(&[style], &settings(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"broken\"") && e.contains("broken.xml"), "{e}");

    // The project style pointed at a database without the tables: Mapnik's
    // PostGIS plugin fails at load time, naming the table.
    let url = PgCluster::shared().create_database("render_empty").unwrap();
    let style = project_style("empty", &tiles, &url);
    let e = Renderer::start(&[style], &settings(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"empty\"") && e.contains("tilepipe.xml"), "{e}");
    assert!(e.contains("planet_osm"), "{e}");

    let dup = vec![
        project_style("a", &tiles, &url),
        project_style("a", &tiles, &url),
    ];
    let e = Renderer::start(&dup, &settings(1)).unwrap_err().to_string();
    assert!(e.contains("twice"), "{e}");
}

/// A PostgreSQL restart breaks the connections Mapnik keeps; the next
/// render retries once and succeeds.
#[test]
fn renders_again_after_a_postgresql_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = PgCluster::start(None).unwrap();
    let osm = dir.path().join("town.osm");
    tilepipe_testkit::town::synthetic_town()
        .write_osm_file(&osm)
        .unwrap();
    let url = cluster.create_database("restart").unwrap();
    let config = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
    tilepipe::apply::import::import(&config, &osm, &Default::default(), 1).unwrap();
    let style = project_style("town", &dir.path().join("tiles"), &url);
    let renderer = Renderer::start(&[style], &settings(1)).unwrap();
    assert_eq!(
        render(&renderer, "town", &[metatile_at(TOWN, 16)]),
        [Outcome::Rendered]
    );
    cluster.restart().unwrap();
    assert_eq!(
        render(&renderer, "town", &[metatile_at(TOWN, 17)]),
        [Outcome::Rendered]
    );
    assert_eq!(
        render(&renderer, "town", &[metatile_at(TOWN, 15)]),
        [Outcome::Rendered]
    );
    let t = renderer.timings();
    assert_eq!((t.rendered, t.failed), (3, 0), "{t:?}");
    assert!(t.retried >= 1, "{t:?}");
    renderer.shutdown();
}

/// Liechtenstein (the shared extract), between Vaduz and Schaan.
const LIECHTENSTEIN: (f64, f64) = (9.53, 47.15);

/// Pixels of the metatile at `point` (all its tiles) that differ from the
/// style's background (`#f4f1ea`), and those in its forest colour.
fn low_zoom_pixels(renderer: &Renderer, style: &str, point: (f64, f64), z: u8) -> (usize, usize) {
    let metatile = metatile_at(point, z);
    assert_eq!(render(renderer, style, &[metatile]), [Outcome::Rendered]);
    let store = renderer.store(style).unwrap();
    let (mut drawn, mut forest) = (0, 0);
    for tile in metatile.tiles() {
        let stored = store.read_tile(style, tile).unwrap().unwrap();
        let image = decode_png(&stored.bytes);
        drawn += image.pixels.len() - image.count_near(rgb("#f4f1ea"), 2);
        forest += image.count_near(rgb("#a9cf9a"), 6);
    }
    (drawn, forest)
}

/// The low-zoom layers (z0-z9) draw the region: Liechtenstein's forests,
/// roads, boundary and towns at z8 and z6, with the classic import and
/// with the flex import made with `styles/tilepipe/tilepipe-flex.lua`
/// (the same columns).
#[test]
fn low_zooms_draw_the_region_with_either_import() {
    use tilepipe::apply::flex::FlexSettings;
    use tilepipe::apply::settings::ImportSettings;
    let Some(pbf) = tilepipe_testkit::shared_data("liechtenstein-2013-08-03.osm.pbf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let flex = ImportSettings {
        flex: Some(
            FlexSettings::from_file(&tilepipe_testkit::paths::repo_file(
                "styles/tilepipe/tilepipe-flex.lua",
            ))
            .unwrap(),
        ),
        ..ImportSettings::default()
    };
    for (name, import) in [("classic", ImportSettings::default()), ("flex", flex)] {
        let url = PgCluster::shared()
            .create_database(&format!("render_lowzoom_{name}"))
            .unwrap();
        let db = tilepipe::db::resolve(&url, &tilepipe::db::ProcessEnv).unwrap();
        tilepipe::apply::import::import(&db, &pbf, &import, 2).unwrap();
        let style = StyleConfig {
            min_zoom: 0,
            max_zoom: 9,
            ..project_style(name, &dir.path().join(name), &url)
        };
        let renderer = Renderer::start(&[style], &settings(1)).unwrap();
        let (drawn8, forest8) = low_zoom_pixels(&renderer, name, LIECHTENSTEIN, 8);
        let (drawn6, _) = low_zoom_pixels(&renderer, name, LIECHTENSTEIN, 6);
        eprintln!("{name}: z8 {drawn8} pixels drawn ({forest8} forest), z6 {drawn6}");
        assert!(
            drawn8 > 600 && forest8 > 50 && drawn6 > 50,
            "{name}: z8 {drawn8} drawn, {forest8} forest; z6 {drawn6} drawn"
        );
        renderer.shutdown();
    }
}
