//! `tilepipe adopt [IMPORT OPTIONS]`: take over a database osm2pgsql
//! (1.8, or 1.9+/2.x) imported with `--slim`, in place: print what was
//! found and what adopting does, then record it (unless `--dry-run`). The
//! options are those of `tilepipe import`, and must be the ones osm2pgsql
//! was run with; those osm2pgsql 1.9+ recorded in `osm2pgsql_properties`
//! (output, prefix, style, flat-nodes file) are taken from there when not
//! given, and checked when given; see [`crate::apply::adopt`]. The data's bounding box, which
//! osm2pgsql does not record, is measured from the output tables.

use super::import::ImportOptions;
use crate::apply::adopt::{inspect, read_osm2pgsql_record, record};
use crate::apply::settings::DataBounds;
use crate::config::Config;
use std::process::ExitCode;
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    options: ImportOptions,
    /// Only print what was found and what adopting would do.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let db = crate::db::resolve(&config.database.url, &crate::db::ProcessEnv)?;
    let mut client = crate::db::connect(&db)?;
    crate::apply::check_extensions(&mut client)?;
    info!("inspecting {}", crate::db::describe(&db));
    let mut tx = client.transaction()?;
    let options = match read_osm2pgsql_record(&mut tx, &config.database.middle_schema)? {
        Some(osm2pgsql) => args.options.with_recorded(config, &osm2pgsql),
        None => args.options.clone(),
    };
    let requested = options.settings(config)?;
    let inspection = inspect(&mut tx, &requested)?;
    for line in inspection.report() {
        println!("{line}");
    }
    if args.dry_run {
        println!("--dry-run: nothing recorded");
        return Ok(ExitCode::SUCCESS);
    }
    record(&mut tx, &inspection)?;
    // osm2pgsql records no extent; measured once here (a scan of each
    // output table) so the map page and TileJSON open on the data.
    let schema = inspection.settings.schema.as_str();
    if DataBounds::load(&mut tx, schema)?.is_none() {
        match DataBounds::recompute(&mut tx, schema)? {
            Some(bounds) => {
                bounds.store(&mut tx, schema)?;
                println!(
                    "data bounds measured from the output tables: {}",
                    bounds.to_property()
                );
            }
            None => println!("data bounds: the output tables hold no geometry yet"),
        }
    }
    tx.commit()?;
    println!("done: the database is adopted");
    Ok(ExitCode::SUCCESS)
}
