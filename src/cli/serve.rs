//! `tilepipe serve`: the HTTP tile server with the renderer behind it and
//! no replication, the role renderd + Apache mod_tile play together.
//! The renderd wire protocol is served too when `render.socket` or
//! `render.tcp` is set, so `render_list` and `render_expired` keep working.
//! The servers are started and stopped by [`crate::services`], as in `run`.

use crate::apply::settings::DataBounds;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::services::{stop_on_signal, Plan, Services, Shutdown};
use anyhow::bail;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen on this address instead of serve.listen (host:port; port 0
    /// picks a free one, printed on stdout).
    #[arg(short, long, value_name = "ADDR")]
    listen: Option<String>,
    /// Serve the cache as it is: no renderer (missing tiles are 404 at
    /// once, dirty ones served stale).
    #[arg(long)]
    no_render: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let mut settings = config.serve.clone();
    if let Some(listen) = &args.listen {
        settings.listen = listen.clone();
    }
    if settings.listen.is_empty() {
        bail!("serve.listen is empty: nothing to serve on (give --listen ADDR)");
    }
    if config.styles.is_empty() {
        bail!("no styles are configured (the styles: section of the configuration)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shutdown = Shutdown::default();
    let plan = Plan {
        http: Some(settings),
        render: !args.no_render,
        metrics: Arc::new(Metrics::new()),
    };
    let services = Services::start(&runtime, config, plan, &shutdown)?;
    if let Some(handle) = services.data_bounds() {
        handle.set(stored_bounds(config));
    }
    if let Some(addr) = services.http_addr() {
        // Tests and scripts started with port 0 read the address here.
        println!("listening on http://{addr}/");
    }
    runtime.spawn(stop_on_signal(shutdown.clone()));
    runtime.block_on(shutdown.wait());
    services.stop(&runtime)?;
    Ok(ExitCode::SUCCESS)
}

/// The data bounds the import stored, for TileJSON and the map page's
/// first view. Best effort: `serve` also serves a bare tile cache, so a
/// database that cannot be reached or holds no import only costs the
/// default view (the whole world), with a word in the log.
fn stored_bounds(config: &Config) -> Option<DataBounds> {
    let schema = &config.database.middle_schema;
    let bounds =
        super::connect_db(config).and_then(|mut client| Ok(DataBounds::load(&mut client, schema)?));
    match bounds {
        Ok(Some(bounds)) => Some(bounds),
        Ok(None) => {
            tracing::info!(
                "no data bounds stored in schema {schema}: the map opens on the whole world \
                 (`tilepipe bounds --recompute` measures them)"
            );
            None
        }
        Err(e) => {
            tracing::warn!("reading the data bounds: {e:#}; the map opens on the whole world");
            None
        }
    }
}
