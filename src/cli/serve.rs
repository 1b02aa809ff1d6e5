//! `tilepipe serve`: the HTTP tile server with the renderer behind it and
//! no replication, the role renderd + Apache mod_tile play together.
//! The renderd wire protocol is served too when `render.socket` or
//! `render.tcp` is set, so `render_list` and `render_expired` keep working.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::render::server::ProtocolListeners;
use crate::render::worker::Renderer;
use crate::serve::Server;
use anyhow::{bail, Context};
use std::process::ExitCode;
use std::sync::Arc;
use tracing::info;

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
    let renderer = if args.no_render {
        None
    } else {
        Some(Arc::new(
            Renderer::start(&config.styles, &config.render).context("cannot start the renderer")?,
        ))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let metrics = Arc::new(Metrics::new());
    runtime.block_on(async {
        let server =
            Server::bind(settings, config.styles.clone(), renderer.clone(), metrics).await?;
        // Tests and scripts started with port 0 read the address here.
        println!("listening on http://{}/", server.local_addr());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let protocol = match &renderer {
            Some(renderer) => {
                let listeners = ProtocolListeners::bind(&config.render).await?;
                if listeners.is_empty() {
                    None
                } else {
                    let queue = renderer.queue().clone();
                    let styles = config.styles.clone();
                    let mut stop = stop_rx.clone();
                    Some(tokio::spawn(async move {
                        listeners
                            .serve(queue, &styles, async move {
                                let _ = stop.wait_for(|s| *s).await;
                            })
                            .await
                    }))
                }
            }
            None => None,
        };
        let mut stop = stop_rx.clone();
        let http = tokio::spawn(server.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        wait_for_signal().await;
        let _ = stop_tx.send(true);
        if let Some(protocol) = protocol {
            let _ = protocol.await;
        }
        http.await.context("HTTP server task")?
    })?;
    if let Some(renderer) = renderer {
        match Arc::try_unwrap(renderer) {
            Ok(renderer) => renderer.shutdown(),
            Err(renderer) => renderer.queue().shutdown(),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
}
