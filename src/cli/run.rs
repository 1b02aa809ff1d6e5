//! `tilepipe run`: the daemon. Replication, apply and expiry run on this
//! thread (see [`crate::daemon`]); the render workers on their own threads;
//! the HTTP server, the renderd protocol server and the schedules on the
//! tokio runtime. One process, one config, one log stream.

use crate::config::Config;
use crate::daemon::expire_to_render::BuiltinRenderer;
use crate::daemon::{notify_systemd_ready, Daemon, Shutdown};
use crate::metrics::Metrics;
use crate::render::server::ProtocolListeners;
use crate::render::worker::Renderer;
use crate::serve::Server;
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
    let renderer = start_renderer(config)?;
    if let Some(renderer) = &renderer {
        daemon = daemon.with_renderer(BuiltinRenderer {
            queue: renderer.queue().clone(),
            styles: config.styles.iter().map(|s| s.name.clone()).collect(),
        });
    }
    let mut services = Vec::new();
    if let Some(renderer) = &renderer {
        let render = &config.render;
        let listeners = runtime.block_on(ProtocolListeners::bind(render))?;
        if !listeners.is_empty() {
            let (queue, styles, shutdown) = (
                renderer.queue().clone(),
                config.styles.clone(),
                shutdown.clone(),
            );
            services.push(runtime.spawn(async move {
                listeners.serve(queue, &styles, shutdown.wait()).await;
                Ok(())
            }));
        }
    }
    if !config.serve.listen.is_empty() {
        let server = runtime.block_on(Server::bind(
            config.serve.clone(),
            config.styles.clone(),
            renderer.clone(),
            metrics.clone(),
        ))?;
        let shutdown = shutdown.clone();
        services.push(
            runtime.spawn(async move { server.run(async move { shutdown.wait().await }).await }),
        );
    }

    let result = daemon.run(&runtime, notify_systemd_ready);
    // The loop ended (shutdown, or a fatal error): stop the servers (they
    // drain requests in flight), then the renderer (renders in flight
    // finish; queued ones are abandoned, their metatiles stay dirty).
    shutdown.request();
    for service in services {
        match runtime.block_on(service) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("{e:#}"),
            Err(e) => warn!("a server task failed: {e}"),
        }
    }
    if let Some(renderer) = renderer {
        match Arc::try_unwrap(renderer) {
            Ok(renderer) => renderer.shutdown(),
            Err(shared) => shared.queue().shutdown(),
        }
    }
    info!("stopped");
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Loads every style (a broken style XML stops the start with its name and
/// file) and checks each tile directory is writable.
fn start_renderer(config: &Config) -> anyhow::Result<Option<Arc<Renderer>>> {
    if config.styles.is_empty() {
        info!("no styles configured: applying and expiring only, nothing rendered or served");
        return Ok(None);
    }
    for style in &config.styles {
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
            })?;
    }
    let renderer =
        Renderer::start(&config.styles, &config.render).context("start-up check: styles")?;
    info!(
        styles = config.styles.len(),
        threads = renderer.threads(),
        "renderer started"
    );
    Ok(Some(Arc::new(renderer)))
}

async fn stop_on_signal(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: finishing the current batch, then stopping"),
        _ = int.recv() => info!("SIGINT: finishing the current batch, then stopping"),
    }
    shutdown.request();
}
