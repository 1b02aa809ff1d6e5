//! `tilepipe bounds [--recompute]`: the data's bounding box, as stored
//! with the import and shown by TileJSON and the map page. `--recompute`
//! measures it again from the output tables (after large deletions, or
//! for a database imported before bounds were recorded; `adopt` measures
//! them itself) and stores it; a running daemon shows the new box after
//! its next batch, `tilepipe serve` after a restart.

use crate::apply::settings::DataBounds;
use crate::config::Config;
use anyhow::bail;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measure the bounds from the output tables (a full scan of each)
    /// and store them.
    #[arg(long)]
    recompute: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let mut client = super::connect_db(config)?;
    let schema = &config.database.middle_schema;
    let bounds = if args.recompute {
        // Whatever the import was (classic or flex), its tables are what
        // the map draws; the settings are required only to refuse a
        // database that holds no import.
        crate::apply::settings::ImportSettings::require(&mut client, schema)?;
        let Some(bounds) = DataBounds::recompute(&mut client, schema)? else {
            bail!("the output tables in schema {schema} hold no geometry: nothing to measure");
        };
        bounds.store(&mut client, schema)?;
        bounds
    } else {
        match DataBounds::load(&mut client, schema)? {
            Some(bounds) => bounds,
            None => bail!(
                "no data bounds are stored in schema {schema}: run `tilepipe bounds --recompute`"
            ),
        }
    };
    // osmium's --bbox order, so the line can be pasted into it.
    println!("{}", bounds.to_property());
    Ok(ExitCode::SUCCESS)
}
