//! Renders one metatile of a style to files, for trying styles by hand:
//!
//! ```text
//! cargo run -p mapnik-sys --example render_tile -- STYLE.xml Z X Y [SIZE] [FORMAT] [OUTDIR]
//! ```
//!
//! Writes OUTDIR/Z-X-Y.EXT for every tile of the SIZE x SIZE metatile whose
//! north-west tile is (Z, X, Y). Plugins and fonts come from Mapnik's default
//! directories, or MAPNIK_PLUGIN_DIR / MAPNIK_FONT_DIR; MAPNIK_QUIET=1 silences
//! Mapnik's log.

use std::path::PathBuf;
use std::time::Instant;

use mapnik_sys::{
    register_fonts, register_plugins, set_log_level, LogLevel, Map, DEFAULT_FONT_DIR,
    DEFAULT_PLUGIN_DIR,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: render_tile STYLE.xml Z X Y [SIZE] [FORMAT] [OUTDIR]");
        std::process::exit(2);
    }
    let z: u32 = args[1].parse()?;
    let x: u32 = args[2].parse()?;
    let y: u32 = args[3].parse()?;
    let size: u32 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let format = args.get(5).map(String::as_str).unwrap_or("png256");
    let outdir = PathBuf::from(args.get(6).map(String::as_str).unwrap_or("."));

    let plugins = std::env::var("MAPNIK_PLUGIN_DIR").unwrap_or(DEFAULT_PLUGIN_DIR.into());
    let fonts = std::env::var("MAPNIK_FONT_DIR").unwrap_or(DEFAULT_FONT_DIR.into());
    if std::env::var_os("MAPNIK_QUIET").is_some() {
        set_log_level(LogLevel::None);
    }
    register_plugins(&plugins)?;
    register_fonts(&fonts, true)?;

    let t = Instant::now();
    let mut map = Map::from_file(&args[0], None)?;
    eprintln!("loaded {} in {:?}", args[0], t.elapsed());
    let t = Instant::now();
    let tiles = map.render_metatile(z, x, y, size, 256, 1.0, format)?;
    eprintln!("rendered {} tiles in {:?}", tiles.len(), t.elapsed());
    let ext = if format.starts_with("png") {
        "png"
    } else {
        format.split(':').next().unwrap_or(format)
    };
    for dx in 0..size {
        for dy in 0..size {
            let path = outdir.join(format!("{z}-{}-{}.{ext}", x + dx, y + dy));
            std::fs::write(&path, &tiles[(dx * size + dy) as usize])?;
        }
    }
    Ok(())
}
