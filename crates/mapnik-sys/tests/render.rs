//! Renders tiny styles that need no database: a background colour, a polygon
//! from a CSV datasource and a label from a GeoJSON datasource, written to
//! the test's temp dir.

use std::path::Path;
use std::sync::Once;

use mapnik_sys::{
    font_names, plugin_names, register_fonts, register_plugins, Map, DEFAULT_FONT_DIR,
    DEFAULT_PLUGIN_DIR,
};

const BACKGROUND: [u8; 4] = [0xab, 0xcd, 0xef, 0xff];
const FILL: [u8; 4] = [0xff, 0x00, 0x00, 0xff];

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        register_plugins(DEFAULT_PLUGIN_DIR).expect("register plugins");
        register_fonts(DEFAULT_FONT_DIR, true).expect("register fonts");
    });
}

/// A polygon from lon 0..45, lat 0..50: at z3 it covers tile (4, 3) fully,
/// part of (4, 2) and nothing else.
fn write_data(dir: &Path) {
    std::fs::write(
        dir.join("area.csv"),
        "id,wkt\n1,\"POLYGON((0 0,45 0,45 50,0 50,0 0))\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("places.geojson"),
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"Null Island"},"geometry":{"type":"Point","coordinates":[-60,-30]}}]}"#,
    )
    .unwrap();
}

fn style(csv: &str, label_font: &str) -> String {
    format!(
        r##"<?xml version="1.0" encoding="utf-8"?>
<Map background-color="#abcdef" srs="epsg:3857">
  <Style name="area">
    <Rule><PolygonSymbolizer fill="#ff0000"/></Rule>
  </Style>
  <Style name="places">
    <Rule><TextSymbolizer face-name="{label_font}" size="12" fill="#000000">[name]</TextSymbolizer></Rule>
  </Style>
  <Layer name="area" srs="epsg:4326">
    <StyleName>area</StyleName>
    <Datasource>
      <Parameter name="type">csv</Parameter>
      <Parameter name="file">{csv}</Parameter>
    </Datasource>
  </Layer>
  <Layer name="places" srs="epsg:4326">
    <StyleName>places</StyleName>
    <Datasource>
      <Parameter name="type">geojson</Parameter>
      <Parameter name="file">places.geojson</Parameter>
    </Datasource>
  </Layer>
</Map>
"##
    )
}

fn good_style(csv: &str) -> String {
    style(csv, "DejaVu Sans Book")
}

/// Writes the data and the style to a temp dir and loads it from the file.
fn load_map() -> (tempfile::TempDir, Map) {
    setup();
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let path = dir.path().join("style.xml");
    std::fs::write(&path, good_style("area.csv")).unwrap();
    // No base: relative names resolve against the style file's directory.
    let map = Map::from_file(&path, None).expect("load style");
    (dir, map)
}

fn ihdr_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

/// Decodes a PNG (palette or not) to RGBA pixels.
fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<[u8; 4]>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().expect("image fits in memory")];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let px = match info.color_type {
        png::ColorType::Rgba => buf[..info.buffer_size()]
            .chunks(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect(),
        png::ColorType::Rgb => buf[..info.buffer_size()]
            .chunks(3)
            .map(|c| [c[0], c[1], c[2], 0xff])
            .collect(),
        other => panic!("unexpected colour type {other:?}"),
    };
    (info.width, info.height, px)
}

fn pixel(px: &[[u8; 4]], width: u32, x: u32, y: u32) -> [u8; 4] {
    px[(y * width + x) as usize]
}

#[test]
fn plugins_and_fonts_are_registered() {
    setup();
    let plugins = plugin_names().unwrap();
    for p in ["csv", "geojson", "postgis", "shape"] {
        assert!(plugins.iter().any(|n| n == p), "{p} missing in {plugins:?}");
    }
    let fonts = font_names().unwrap();
    assert!(
        fonts.iter().any(|f| f == "DejaVu Sans Book"),
        "DejaVu missing in {} fonts",
        fonts.len()
    );
    assert!(register_plugins("/nonexistent/plugins").is_err());
}

#[test]
fn renders_z0_png() {
    let (_dir, mut map) = load_map();
    assert_eq!(map.srs(), "epsg:3857");
    let tiles = map.render_metatile(0, 0, 0, 1, 256, 1.0, "png").unwrap();
    assert_eq!(tiles.len(), 1);
    assert_eq!(ihdr_size(&tiles[0]), (256, 256));
    let (w, h, px) = decode(&tiles[0]);
    assert_eq!((w, h), (256, 256));
    // Corner: background. Lon 0..45, lat 0..50 is just north-east of the
    // centre (128, 128): (140, 110) is inside.
    assert_eq!(pixel(&px, w, 2, 2), BACKGROUND);
    assert_eq!(pixel(&px, w, 140, 110), FILL);
    assert_eq!(pixel(&px, w, 110, 140), BACKGROUND);
}

#[test]
fn renders_z3_metatile_png256_in_x_major_order() {
    let (_dir, mut map) = load_map();
    let tiles = map.render_metatile(3, 0, 0, 8, 256, 1.0, "png256").unwrap();
    assert_eq!(tiles.len(), 64);
    for t in &tiles {
        assert_eq!(ihdr_size(t), (256, 256));
        assert!(t.windows(4).any(|w| w == b"PLTE"), "png256 is paletted");
    }
    // Every pixel but a 2-pixel border (antialiased polygon edges).
    let all = |i: usize, colour: [u8; 4]| {
        let (w, h, px) = decode(&tiles[i]);
        (2..h - 2).all(|y| (2..w - 2).all(|x| pixel(&px, w, x, y) == colour))
    };
    // Tile (x=4, y=3) is inside the polygon: index dx * 8 + dy = 35.
    assert!(all(4 * 8 + 3, FILL), "tile 3/4/3 is filled");
    // Its transpose (x=3, y=4) is open sea, as are its other neighbours.
    assert!(all(3 * 8 + 4, BACKGROUND), "tile 3/3/4 is background");
    assert!(all(4 * 8 + 4, BACKGROUND), "tile 3/4/4 is background");
    assert!(all(5 * 8 + 3, BACKGROUND), "tile 3/5/3 is background");
    assert!(all(0, BACKGROUND), "tile 3/0/0 is background");
    // The palette holds the background colour.
    assert!(tiles[0].windows(3).any(|w| w == [0xab, 0xcd, 0xef]));
}

#[test]
fn metatile_offset_matches_single_tile() {
    let (_dir, mut map) = load_map();
    // The 2x2 metatile at z3 (4, 2) holds tile (4, 3) at index 0 * 2 + 1.
    let meta = map.render_metatile(3, 4, 2, 2, 256, 1.0, "png").unwrap();
    let single = map.render_metatile(3, 4, 3, 1, 256, 1.0, "png").unwrap();
    assert_eq!(decode(&meta[1]).2, decode(&single[0]).2);
}

#[test]
fn renders_other_formats_and_scales() {
    let (_dir, mut map) = load_map();
    let jpeg = map.render_metatile(1, 0, 0, 2, 256, 1.0, "jpeg").unwrap();
    assert_eq!(jpeg.len(), 4);
    assert!(jpeg.iter().all(|t| t.starts_with(&[0xff, 0xd8, 0xff])));
    let webp = map.render_metatile(1, 0, 0, 2, 256, 1.0, "webp").unwrap();
    assert!(webp
        .iter()
        .all(|t| &t[..4] == b"RIFF" && &t[8..12] == b"WEBP"));
    let hidpi = map.render_metatile(0, 0, 0, 1, 512, 2.0, "png").unwrap();
    assert_eq!(ihdr_size(&hidpi[0]), (512, 512));
}

#[test]
fn buffer_size_is_settable() {
    let (_dir, mut map) = load_map();
    assert_eq!(map.buffer_size(), 0);
    map.set_buffer_size(128);
    assert_eq!(map.buffer_size(), 128);
    map.render_metatile(2, 0, 0, 4, 256, 1.0, "png").unwrap();
}

#[test]
fn from_string_uses_base_path() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let mut map = Map::from_string(&good_style("area.csv"), Some(dir.path())).unwrap();
    let tiles = map.render_metatile(0, 0, 0, 1, 256, 1.0, "png").unwrap();
    let (w, _, px) = decode(&tiles[0]);
    assert_eq!(pixel(&px, w, 140, 110), FILL);
}

#[test]
fn lonlat_map_gets_the_box_transformed() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    for srs in ["epsg:4326", "+proj=longlat +datum=WGS84 +no_defs"] {
        let xml =
            good_style("area.csv").replace(r##"srs="epsg:3857">"##, &format!(r##"srs="{srs}">"##));
        let mut map = Map::from_string(&xml, Some(dir.path())).unwrap();
        let tiles = map.render_metatile(0, 0, 0, 1, 256, 1.0, "png").unwrap();
        let (w, _, px) = decode(&tiles[0]);
        assert_eq!(pixel(&px, w, 2, 2), BACKGROUND, "{srs}");
        // Mapnik keeps the aspect ratio, growing the box to ±180 degrees
        // both ways: lon 0..45 -> x 128..160, lat 0..50 -> y 128..92.
        assert_eq!(pixel(&px, w, 140, 110), FILL, "{srs}");
        assert_eq!(pixel(&px, w, 140, 95), FILL, "{srs}");
        assert_eq!(pixel(&px, w, 140, 89), BACKGROUND, "{srs}");
    }
}

#[test]
fn bad_map_srs_is_an_error() {
    setup();
    let xml = good_style("area.csv").replace(
        r##"srs="epsg:3857">"##,
        r##"srs="+proj=nosuchprojection">"##,
    );
    let text = err_text(Map::from_string(&xml, None).unwrap_err());
    assert!(text.contains("nosuchprojection"), "{text}");
}

fn err_text(e: mapnik_sys::MapnikError) -> String {
    let text = e.to_string();
    eprintln!("{text}");
    text
}

#[test]
fn broken_style_is_an_error() {
    setup();
    let e = Map::from_string("<Map><Layer name=", None).unwrap_err();
    let text = err_text(e);
    assert!(text.starts_with("mapnik: "), "{text}");
    assert!(text.len() > "mapnik: ".len() + 5, "{text}");
}

#[test]
fn missing_style_file_is_an_error() {
    setup();
    let e = Map::from_file("/nonexistent/style.xml", None).unwrap_err();
    let text = err_text(e);
    assert!(text.contains("/nonexistent/style.xml"), "{text}");
}

#[test]
fn missing_data_file_is_an_error() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let e = Map::from_string(&good_style("nosuch.csv"), Some(dir.path())).unwrap_err();
    let text = err_text(e);
    assert!(text.contains("nosuch.csv"), "{text}");
}

#[test]
fn unknown_datasource_type_is_an_error() {
    setup();
    let xml = good_style("area.csv").replace(">csv<", ">nosuchplugin<");
    let text = err_text(Map::from_string(&xml, None).unwrap_err());
    assert!(text.contains("nosuchplugin"), "{text}");
}

#[test]
fn unknown_font_is_an_error() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let xml = style("area.csv", "No Such Font Regular");
    // Mapnik only logs it by default, strict mode makes it an error.
    let mut map = Map::from_string(&xml, Some(dir.path())).unwrap();
    map.render_metatile(0, 0, 0, 1, 256, 1.0, "png").unwrap();
    Map::from_string_strict(&good_style("area.csv"), Some(dir.path())).unwrap();
    let text = err_text(Map::from_string_strict(&xml, Some(dir.path())).unwrap_err());
    assert!(text.contains("No Such Font Regular"), "{text}");
}

#[test]
fn bad_render_arguments_are_errors() {
    let (_dir, mut map) = load_map();
    // The C++ image writer rejects an unknown format.
    let text = err_text(
        map.render_metatile(0, 0, 0, 1, 256, 1.0, "bmp")
            .unwrap_err(),
    );
    assert!(text.contains("bmp"), "{text}");
    assert!(map.render_metatile(0, 0, 0, 2, 256, 1.0, "png").is_err());
    assert!(map.render_metatile(3, 4, 0, 8, 256, 1.0, "png").is_err());
    assert!(map.render_metatile(3, 0, 0, 9, 256, 1.0, "png").is_err());
    assert!(map.render_metatile(3, 0, 0, 0, 256, 1.0, "png").is_err());
    assert!(map.render_metatile(3, 0, 0, 1, 256, 0.0, "png").is_err());
    // The map is still usable afterwards.
    assert_eq!(
        map.render_metatile(0, 0, 0, 1, 256, 1.0, "png")
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn mercator_spellings_render_alike() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let render = |srs: &str, z: u32, x: u32, y: u32| {
        let xml =
            good_style("area.csv").replace(r##"srs="epsg:3857">"##, &format!(r##"srs="{srs}">"##));
        let mut map = Map::from_string(&xml, Some(dir.path())).unwrap();
        let tiles = map.render_metatile(z, x, y, 1, 256, 1.0, "png").unwrap();
        decode(&tiles[0]).2
    };
    for (z, x, y) in [(0, 0, 0), (1, 1, 0), (3, 4, 3), (3, 0, 7)] {
        let reference = render("epsg:3857", z, x, y);
        for srs in [
            "+proj=merc +a=6378137 +b=6378137 +lat_ts=0.0 +lon_0=0.0 +x_0=0.0 +y_0=0.0 +k=1.0 +units=m +nadgrids=@null +wktext +no_defs +over",
            "+proj=merc +a=6378137 +b=6378137 +lat_ts=0.0 +lon_0=0.0 +x_0=0.0 +y_0=0 +k=1.0 +units=m +nadgrids=@null +wktext +no_defs",
            "EPSG:3857",
        ] {
            let got = render(srs, z, x, y);
            let diff = got.iter().zip(&reference).filter(|(a, b)| a != b).count();
            assert_eq!(diff, 0, "{srs} at {z}/{x}/{y}: {diff} pixels differ");
        }
    }
}

#[test]
fn postgis_connection_failure_is_a_short_error() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let xml = good_style("area.csv").replace(
        r#"<Parameter name="type">csv</Parameter>
      <Parameter name="file">area.csv</Parameter>"#,
        &format!(
            r#"<Parameter name="type">postgis</Parameter>
      <Parameter name="host">{}</Parameter>
      <Parameter name="dbname">gis</Parameter>
      <Parameter name="table">(SELECT way FROM planet_osm_polygon WHERE {}) AS t</Parameter>
      <Parameter name="geometry_field">way</Parameter>
      <Parameter name="extent">-20037508,-20037508,20037508,20037508</Parameter>"#,
            dir.path().display(),
            "way IS NOT NULL AND ".repeat(100) + "true"
        ),
    );
    assert!(xml.contains("postgis"));
    let e = Map::from_string(&xml, None).unwrap_err();
    let text = err_text(e.clone());
    assert!(text.contains("Postgis Plugin"), "{text}");
    assert!(e.message().chars().count() <= 601, "{text}");
}

#[test]
fn one_map_per_thread_renders_concurrently() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let xml = good_style("area.csv");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut map = Map::from_string(&xml, Some(dir.path())).unwrap();
                    (0..5)
                        .map(|_| map.render_metatile(3, 0, 0, 8, 256, 1.0, "png256").unwrap())
                        .last()
                        .unwrap()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]));
    });
}

/// Renders reuse one image per thread: a render after another (of another
/// size, of a map without background, of an area with other content) is
/// byte for byte what a fresh map renders.
#[test]
fn reused_canvas_renders_like_a_fresh_one() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let with_bg = good_style("area.csv");
    let without_bg = with_bg.replace(r##"background-color="#abcdef" "##, "");
    assert_ne!(with_bg, without_bg);
    let fresh = |xml: &str, z, x, y, size| {
        // A new thread: a new canvas.
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut map = Map::from_string(xml, Some(dir.path())).unwrap();
                map.render_metatile(z, x, y, size, 256, 1.0, "png").unwrap()
            })
            .join()
            .unwrap()
        })
    };
    let mut a = Map::from_string(&with_bg, Some(dir.path())).unwrap();
    let mut b = Map::from_string(&without_bg, Some(dir.path())).unwrap();
    // (background?, z, x, y, size), one after the other on this thread.
    let runs = [
        (true, 3, 0, 0, 8),
        (false, 3, 0, 0, 8),
        (false, 4, 8, 0, 8),
        (false, 1, 0, 0, 2),
        (true, 4, 8, 0, 8),
        (false, 3, 0, 0, 8),
    ];
    for (background, z, x, y, size) in runs {
        let (map, xml) = if background {
            (&mut a, &with_bg)
        } else {
            (&mut b, &without_bg)
        };
        let reused = map.render_metatile(z, x, y, size, 256, 1.0, "png").unwrap();
        assert_eq!(reused, fresh(xml, z, x, y, size), "{z}/{x}/{y}");
    }
    // Transparent where nothing is drawn, without a background.
    let tiles = b.render_metatile(3, 0, 0, 8, 256, 1.0, "png").unwrap();
    let (_, _, px) = decode(&tiles[0]);
    assert_eq!(px[0][3], 0);
}
