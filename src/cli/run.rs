//! `tilepipe run`: the daemon. Replication, apply and expiry run on this
//! thread (see [`crate::daemon`]); the render workers on their own threads;
//! the HTTP server, the renderd protocol server and the schedules on the
//! tokio runtime (see [`crate::services`]). One process, one config, one
//! log stream.

use crate::config::Config;
use crate::daemon::expire_to_render::BuiltinRenderer;
use crate::daemon::{notify_systemd_ready, Daemon};
use crate::metrics::Metrics;
use crate::services::{stop_on_signal, Plan, Services, Shutdown};
use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::{info, warn};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(config: &Config, _args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().max(2)))
        .enable_all()
        .build()?;
    let shutdown = Shutdown::default();
    runtime.spawn(stop_on_signal(shutdown.clone()));

    // Self-checks first, in the order a newcomer fixes them: database,
    // then styles and tile directories, then the sockets.
    let metrics = Arc::new(Metrics::new());
    let mut daemon = Daemon::start(config.clone(), shutdown.clone())?.with_metrics(metrics.clone());
    check_tile_dirs(config)?;
    let plan = Plan {
        http: (!config.serve.listen.is_empty()).then(|| config.serve.clone()),
        render: true,
        metrics,
    };
    let services = Services::start(&runtime, config, plan, &shutdown)?;
    if let Some(bounds) = services.data_bounds() {
        daemon = daemon.with_data_bounds(bounds.clone());
    }
    if let Some(purge) = services.purge_sender() {
        daemon = daemon.with_purge(purge);
    }
    if let Some(renderer) = services.renderer() {
        daemon = daemon.with_renderer(BuiltinRenderer {
            queue: renderer.queue().clone(),
            styles: config.styles.iter().map(|s| s.name.clone()).collect(),
        });
    }

    let result = daemon.run(&runtime, notify_systemd_ready);
    // The loop ended (shutdown, or a fatal error): stop the servers and
    // the renderer too. Their failures are logged; the loop's is the
    // command's.
    if let Err(e) = services.stop(&runtime) {
        warn!("{e:#}");
    }
    info!("stopped");
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Checks each style's tile directory is writable, so a wrong owner stops
/// the start instead of failing every render.
fn check_tile_dirs(config: &Config) -> anyhow::Result<()> {
    if config.styles.is_empty() {
        info!("no styles configured: applying and expiring only, nothing rendered or served");
    }
    for style in &config.styles {
        check_tile_dir(style)?;
    }
    Ok(())
}

/// Checks one style's tile directory is writable (creating it if
/// needed), by writing and removing a probe file.
pub(super) fn check_tile_dir(style: &crate::render::config::StyleConfig) -> anyhow::Result<()> {
    let dir = style.tile_dir.join(&style.name);
    let probe = dir.join(format!(".tilepipe-write-check.{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "start-up check: tile directory {} of style {} is not writable",
                dir.display(),
                style.name
            )
        })
}
