//! `tilepipe expire-tiles --from-osm FILE --zoom Z`: the tiles the tagged
//! objects of an OSM file expire, as `z/x/y` lines on stdout, like
//! osm2pgsql's `osm2pgsql-expire`. A debugging aid, and the oracle of the
//! expiry tests.

use crate::config::Config;
use crate::expire::from_osm::expire_osm_file;
use crate::expire::raster::{Expirer, PolygonMode, RasterSettings, DEFAULT_FULL_AREA_LIMIT};
use crate::tile::MAX_ZOOM;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// OSM file (.osm, .osm.gz, .osm.pbf) whose tagged objects are expired,
    /// each on its own.
    #[arg(long, value_name = "FILE")]
    from_osm: PathBuf,
    /// Zoom the tiles are computed at.
    #[arg(short, long, value_name = "Z", value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_ZOOM)))]
    zoom: u8,
    /// Also list the ancestors down to this zoom, each right after its
    /// first expired descendant (osm2pgsql's `-e M-Z` list order).
    #[arg(long, value_name = "M")]
    min_zoom: Option<u8>,
    /// How polygons are expired.
    #[arg(short, long, value_enum, default_value = "full-area")]
    mode: PolygonMode,
    /// Margin around geometries, as a fraction of a tile at --zoom.
    #[arg(short, long, default_value_t = 0.1, value_name = "TILES")]
    buffer: f64,
    /// Envelope width or height (EPSG:3857 metres) above which hybrid mode
    /// expires a polygon's boundary only.
    #[arg(long, default_value_t = DEFAULT_FULL_AREA_LIMIT, value_name = "METRES")]
    full_area_limit: f64,
}

pub fn run(_config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let min_zoom = args.min_zoom.unwrap_or(args.zoom);
    if min_zoom > args.zoom {
        anyhow::bail!("--min-zoom {min_zoom} is above --zoom {}", args.zoom);
    }
    let mut config = RasterSettings::new(args.zoom);
    config.buffer = args.buffer;
    config.full_area_limit = args.full_area_limit;
    config.mode = args.mode;
    let mut expirer = Expirer::new(config)?;
    let summary = expire_osm_file(&args.from_osm, &mut expirer)
        .with_context(|| format!("expiring {}", args.from_osm.display()))?;
    let tiles = expirer.tiles();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let lines = tiles
        .write_list(&mut out, min_zoom)
        .and_then(|n| out.flush().map(|_| n))
        .context("writing the tile list")?;
    tracing::info!(
        nodes = summary.nodes,
        ways = summary.ways,
        relations = summary.relations,
        failed = summary.failed,
        limited = summary.limited,
        tiles = tiles.len(),
        lines,
        "{}: {} tagged objects, {} tiles at zoom {}, {lines} lines written",
        args.from_osm.display(),
        summary.nodes + summary.ways + summary.relations,
        tiles.len(),
        args.zoom
    );
    if summary.failed > 0 || summary.incomplete_ways > 0 {
        tracing::warn!(
            failed = summary.failed,
            incomplete_ways = summary.incomplete_ways,
            "{} tagged objects had no geometry and {} ways lacked some of their nodes in the file (-v lists them)",
            summary.failed,
            summary.incomplete_ways
        );
    }
    if expirer.overall_limit_reached() {
        tracing::warn!("the overall tile limit was reached: the list is incomplete");
    }
    Ok(ExitCode::SUCCESS)
}
