//! The long-running servers `tilepipe run` and `tilepipe serve` share: the
//! renderer, the renderd protocol server and the HTTP server, started by
//! [`Services::start`] and stopped in order by [`Services::stop`]; the one
//! [`Shutdown`] request they (and the daemon loop) wait on; and the one
//! signal handler, [`stop_on_signal`], that raises it.
//!
//! It sits at the wiring level beside [`crate::daemon`] rather than in
//! `src/cli/`: the daemon loop waits on the same [`Shutdown`], and wiring
//! below the commands must not import a command module.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::render::cache_limit::CacheLimits;
use crate::render::server::ProtocolListeners;
use crate::render::worker::Renderer;
use crate::serve::config::ServeConfig;
use crate::serve::Server;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A shutdown request, shared by the signal handler, the servers and the
/// daemon loop.
#[derive(Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Shutdown {
    /// Asks everything holding this or a clone to stop; wakes
    /// [`Shutdown::wait`] and [`Shutdown::sleep`] at once.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether shutdown was requested (it cannot be withdrawn).
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Completes when shutdown is requested.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }

    /// Sleeps for `duration`; returns false if shutdown came first.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => !self.is_requested(),
            _ = self.wait() => false,
        }
    }
}

/// Requests `shutdown` on the first SIGTERM or SIGINT. Work in progress
/// (a batch, requests, renders) finishes; the waiters decide how.
pub async fn stop_on_signal(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
    shutdown.request();
}

/// Sweeps the tile cache every `limits.interval` until shutdown (see
/// [`crate::render::cache_limit`]), on a blocking thread: a sweep walks
/// the whole cache. The first sweep runs at once, so the figures are on
/// `/metrics` from the start.
async fn enforce_cache_limits(
    limits: CacheLimits,
    dirs: Vec<std::path::PathBuf>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    loop {
        let (swept_limits, swept_dirs) = (limits.clone(), dirs.clone());
        let swept = tokio::task::spawn_blocking(move || {
            crate::render::cache_limit::sweep(
                &swept_limits,
                &swept_dirs,
                std::time::SystemTime::now(),
            )
        })
        .await;
        match swept {
            Ok(report) => {
                if report.evicted > 0 {
                    info!(
                        evicted = report.evicted,
                        freed_mb = report.evicted_bytes / 1_000_000,
                        metatiles = report.metatiles,
                        cache_mb = report.bytes / 1_000_000,
                        "tile cache limit: deleted the least recently used metatiles"
                    );
                }
                metrics.record_tile_cache_sweep(
                    crate::metrics::TileCacheReport {
                        metatiles: report.metatiles,
                        bytes: report.bytes,
                        limit_bytes: limits.max_bytes,
                        swept_at: std::time::SystemTime::now(),
                    },
                    report.evicted,
                    report.evicted_bytes,
                );
            }
            Err(e) => warn!("tile cache limit: the sweep failed: {e}"),
        }
        if !shutdown.sleep(limits.interval).await {
            return;
        }
    }
}

/// The start-up style change check ([`crate::render::style_change`]) of
/// every style, on a blocking thread (it walks the cache): marks dirty
/// what is older than its XML and queues the low zooms on `queue`, when
/// there is a renderer. A style that cannot be checked is logged and
/// skipped; the others go on.
async fn mark_styles_changed(
    styles: Vec<crate::render::config::StyleConfig>,
    render_max_zoom: Option<u8>,
    queue: Option<Arc<crate::render::queue::RenderQueue>>,
    metrics: Arc<Metrics>,
) {
    use crate::render::queue::{Priority, RenderKey, Submitted};
    for style in styles {
        let checked = style.clone();
        let report = tokio::task::spawn_blocking(move || {
            crate::render::style_change::mark_older_than_style(&checked, render_max_zoom)
        })
        .await;
        let report = match report {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                warn!("style change check: {e}");
                continue;
            }
            Err(e) => {
                warn!(style = %style.name, "style change check failed: {e}");
                continue;
            }
        };
        let mut queued = 0u64;
        if let Some(queue) = &queue {
            for metatile in &report.render_now {
                let key = RenderKey {
                    style: style.name.clone(),
                    metatile: *metatile,
                };
                let (submitted, _) = queue.submit(key, Priority::Background, false);
                queued += u64::from(submitted != Submitted::Rejected);
            }
        }
        if report.marked > 0 {
            info!(
                style = %style.name,
                marked = report.marked,
                already_dirty = report.already_dirty,
                queued,
                "the style's XML is newer than these metatiles: marked dirty for a re-render"
            );
        }
        metrics.record_style_change(report.marked, queued);
    }
}

/// What to start besides the renderer's configuration.
pub struct Plan {
    /// The HTTP server's settings; `None` starts no HTTP server.
    pub http: Option<ServeConfig>,
    /// Start the renderer (when styles are configured) and, with it, the
    /// renderd protocol server (when `render.socket` or `render.tcp` is set).
    pub render: bool,
    /// The registry the HTTP server counts into and shows on `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// The started servers. Dropping it leaves them running until the runtime
/// stops; [`Services::stop`] ends them in order.
pub struct Services {
    shutdown: Shutdown,
    renderer: Option<Arc<Renderer>>,
    http_addr: Option<SocketAddr>,
    /// The HTTP server's data bounds, when one was started.
    data_bounds: Option<crate::serve::DataBoundsHandle>,
    /// The HTTP server's purge channel (`serve.purge`).
    purge: Option<crate::serve::purge::PurgeSender>,
    /// The protocol server then the HTTP server, in start order.
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Services {
    /// Starts the renderer (loading every style: a broken style XML stops
    /// the start with its name and file), then binds the renderd protocol
    /// server and the HTTP server on `runtime`. They all stop when
    /// `shutdown` is requested.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        config: &Config,
        plan: Plan,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Services> {
        let renderer = if plan.render && !config.styles.is_empty() {
            let renderer = Renderer::start(&config.styles, &config.render)
                .context("start-up check: styles")?;
            Some(Arc::new(renderer))
        } else {
            None
        };
        let mut services = Services {
            shutdown: shutdown.clone(),
            renderer,
            http_addr: None,
            data_bounds: None,
            purge: None,
            tasks: Vec::new(),
        };
        if let Some(renderer) = &services.renderer {
            let listeners = runtime.block_on(ProtocolListeners::bind(&config.render))?;
            if !listeners.is_empty() {
                let (queue, styles, shutdown) = (
                    renderer.queue().clone(),
                    config.styles.clone(),
                    shutdown.clone(),
                );
                services.tasks.push(runtime.spawn(async move {
                    listeners.serve(queue, &styles, shutdown.wait()).await;
                    Ok(())
                }));
            }
        }
        if let Some(limits) = CacheLimits::from_config(&config.render) {
            if !config.styles.is_empty() {
                let dirs = config
                    .styles
                    .iter()
                    .map(|s| s.tile_dir.join(&s.name))
                    .collect();
                runtime.spawn(enforce_cache_limits(
                    limits,
                    dirs,
                    plan.metrics.clone(),
                    shutdown.clone(),
                ));
            }
        }
        if config.render.style_change_dirty && !config.styles.is_empty() {
            runtime.spawn(mark_styles_changed(
                config.styles.clone(),
                config.render.style_change_render_max_zoom,
                services.renderer.as_ref().map(|r| r.queue().clone()),
                plan.metrics.clone(),
            ));
        }
        if let Some(settings) = plan.http {
            let server = runtime.block_on(Server::bind(
                settings,
                config.styles.clone(),
                services.renderer.clone(),
                plan.metrics,
            ))?;
            services.http_addr = Some(server.local_addr());
            services.data_bounds = Some(server.data_bounds());
            services.purge = server.purge_sender();
            let shutdown = shutdown.clone();
            services.tasks.push(
                runtime
                    .spawn(async move { server.run(async move { shutdown.wait().await }).await }),
            );
        }
        Ok(services)
    }

    /// The renderer, when one was started.
    pub fn renderer(&self) -> Option<&Arc<Renderer>> {
        self.renderer.as_ref()
    }

    /// Where to send metatiles changed without a render, to purge them
    /// from the caches in front (`serve.purge`, with the HTTP server).
    pub fn purge_sender(&self) -> Option<crate::serve::purge::PurgeSender> {
        self.purge.clone()
    }

    /// The HTTP server's bound address, when one was started.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Where to set the data bounds the HTTP server shows, when one was
    /// started.
    pub fn data_bounds(&self) -> Option<&crate::serve::DataBoundsHandle> {
        self.data_bounds.as_ref()
    }

    /// Requests shutdown, waits for the servers (they drain requests in
    /// flight), then stops the renderer (renders in flight finish; queued
    /// ones are abandoned, their metatiles stay dirty). Everything is
    /// stopped even when a server failed; the first failure is returned.
    pub fn stop(self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        self.shutdown.request();
        let mut result = Ok(());
        for task in self.tasks {
            let outcome = match runtime.block_on(task) {
                Ok(outcome) => outcome,
                Err(e) => Err(anyhow::anyhow!("a server task failed: {e}")),
            };
            match outcome {
                Ok(()) => {}
                Err(e) if result.is_ok() => result = Err(e),
                Err(e) => warn!("{e:#}"),
            }
        }
        if let Some(renderer) = self.renderer {
            match Arc::try_unwrap(renderer) {
                Ok(renderer) => renderer.shutdown(),
                // Someone still holds it: stop its queue, which ends its
                // threads once their renders in flight finish.
                Err(shared) => shared.queue().shutdown(),
            }
        }
        result
    }
}
