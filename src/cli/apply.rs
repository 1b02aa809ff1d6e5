//! `tilepipe apply FILE.osc[.gz]`: apply one change file in one
//! transaction, with the settings the import stored. The expire outputs
//! of a flex config (osm2pgsql ≥ 1.9 `define_expire_output`) get the
//! tiles the file expires, as `osm2pgsql --append` writes them; the
//! `expire:` section is for `run` and `catchup`.

use crate::apply::append::Applier;
use crate::apply::settings::ImportSettings;
use crate::config::Config;
use crate::osm::osc::read_osc_file;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// OsmChange file (.osc or .osc.gz).
    file: PathBuf,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let changes = read_osc_file(&args.file)?;
    let mut client = super::connect_db(config)?;
    let schema = &config.database.middle_schema;
    let settings = ImportSettings::require(&mut client, schema)?;
    crate::apply::flatnodes::check_configured(
        settings.flat_nodes.as_deref(),
        config.import.flat_nodes.as_deref(),
    )?;
    let mut applier = Applier::for_settings(&settings)?;
    let started = std::time::Instant::now();
    let mut tx = client.transaction()?;
    let result = applier
        .apply(&mut tx, &changes)
        .with_context(|| format!("applying {}", args.file.display()))?;
    crate::apply::append::raise_current_timestamp(&mut tx, schema, &changes)?;
    crate::apply::settings::DataBounds::widen_stored(&mut tx, schema, &changes)?;
    crate::expire::outputs::record_batch(
        &mut tx,
        schema,
        applier.expire_outputs(),
        &result.row_changes,
        config.expire.all_changes,
    )?;
    tx.commit()?;
    crate::expire::outputs::write_files(&mut client, schema)?;
    info!(
        "applied {} ({}) in {:.2} s: {} output rows rewritten, {} changed; {} ways and {} relations re-processed through propagation",
        args.file.display(),
        changes.counts(),
        started.elapsed().as_secs_f64(),
        result.row_changes.len(),
        result.changed_rows().count(),
        result.propagated_ways,
        result.propagated_relations
    );
    Ok(ExitCode::SUCCESS)
}
