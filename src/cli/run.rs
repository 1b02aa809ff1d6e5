//! `tilepipe run`: the daemon (see [`crate::daemon`]).

use crate::config::Config;
use crate::daemon::{notify_systemd_ready, Daemon, Shutdown};
use std::process::ExitCode;
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(config: &Config, _args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shutdown = Shutdown::default();
    {
        let shutdown = shutdown.clone();
        runtime.spawn(async move {
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
        });
    }
    let daemon = Daemon::start(config.clone(), shutdown)?;
    daemon.run(&runtime, notify_systemd_ready)?;
    Ok(ExitCode::SUCCESS)
}
