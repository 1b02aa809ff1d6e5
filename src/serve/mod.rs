//! The serve stage: HTTP tiles with mod_tile's semantics.
//!
//! - [`config`]: the `serve:` section of `config.yaml`.
//! - [`routes`]: the router and the endpoints, one module per concern
//!   (tile decisions, admin, TileJSON, assets, health, CORS, clients).
//! - [`tiles`]: tile URLs, and reading a tile through
//!   [`crate::metatile::read_tile_at`] with a cache validated by `stat`.
//! - [`cache`]: `Cache-Control`/`Expires` as mod_tile computes them, ETag
//!   and Last-Modified.
//! - [`throttle`]: per-client token buckets.
//! - [`purge`]: surrogate keys per metatile, and purging the caches in
//!   front (Varnish xkey, CDN APIs) when a metatile is re-rendered.
//! - `connections` (private): the accept loop, with its connection cap and
//!   header and keep-alive timeouts.
//!
//! The process-wide metrics registry is [`crate::metrics`]; this stage
//! counts requests into it and renders it on `/metrics`, adding the render
//! queue's and workers' figures.
//!
//! [`Server::bind`] binds first (tests bind port 0 and read
//! [`Server::local_addr`]), [`Server::run`] serves until the shutdown
//! future completes; [`serve`] does both.

pub mod cache;
pub mod config;
mod connections;
pub mod purge;
pub mod routes;
pub mod throttle;
pub mod tiles;

use crate::apply::settings::DataBounds;
use crate::metrics::{Metrics, StyleCounters};
use crate::render::config::StyleConfig;
use crate::render::queue::RenderQueue;
use crate::render::worker::Renderer;
use anyhow::Context;
use config::ServeConfig;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// One style as the server sees it.
pub(crate) struct ServedStyle {
    pub config: StyleConfig,
    /// `<tile_dir>/<name>`, the prefix of every metatile path.
    pub dir: String,
    /// `<tile_dir>/<name>/planet-import-complete` and
    /// `<tile_dir>/planet-import-complete`.
    pub planet_files: [PathBuf; 2],
    /// The planet time last looked up (nanoseconds since the epoch) and
    /// when (milliseconds since the epoch, 0 = never).
    pub planet_nanos: std::sync::atomic::AtomicI64,
    pub planet_checked_ms: std::sync::atomic::AtomicU64,
    pub counters: Arc<StyleCounters>,
}

/// The data's bounding box as TileJSON and the map page show it: set by
/// the wiring from the database at start ([`DataBounds::load`]) and
/// refreshed by the daemon after each batch. `None` (no import, or one
/// from before bounds were recorded) shows the whole world.
#[derive(Clone, Default)]
pub struct DataBoundsHandle(Arc<std::sync::RwLock<Option<DataBounds>>>);

impl DataBoundsHandle {
    /// Replaces the bounds shown.
    pub fn set(&self, bounds: Option<DataBounds>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = bounds;
    }

    /// The bounds shown now.
    pub fn get(&self) -> Option<DataBounds> {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything a request handler needs.
pub(crate) struct AppState {
    pub settings: ServeConfig,
    pub styles: Vec<ServedStyle>,
    pub by_name: HashMap<String, usize>,
    pub queue: Option<Arc<RenderQueue>>,
    /// The renderer behind the queue (kept alive with the server; its time
    /// accounting goes to `/metrics`).
    pub renderer: Option<Arc<Renderer>>,
    pub metrics: Arc<Metrics>,
    pub admin: Vec<ipnet::IpNet>,
    /// `serve.trusted_proxies`, parsed.
    pub trusted: Vec<ipnet::IpNet>,
    pub throttle: Option<throttle::Throttle>,
    pub waiting: Arc<tokio::sync::Semaphore>,
    pub load: routes::LoadSnapshot,
    pub tile_cache: Arc<tiles::TileCache>,
    pub data_bounds: DataBoundsHandle,
}

/// A bound, not yet serving, HTTP server.
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    /// Surrogate keys to purge, with `serve.purge`: of re-rendered
    /// metatiles, and of those others send through [`Server::purge_sender`].
    purge_keys: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    purge_sender: Option<purge::PurgeSender>,
}

impl Server {
    /// Checks the settings, binds `settings.listen` and prepares the
    /// routes. `renderer` renders missing and dirty tiles on demand;
    /// without one, missing tiles are 404 at once and dirty ones served
    /// stale. `metrics` is the process's registry (the daemon shares it).
    pub async fn bind(
        settings: ServeConfig,
        styles: Vec<StyleConfig>,
        renderer: Option<Arc<Renderer>>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Server> {
        let queue = renderer.as_ref().map(|r| r.queue().clone());
        Self::bind_with_queue(settings, styles, queue, renderer, metrics).await
    }

    /// [`Server::bind`] with a render queue that some other renderer
    /// serves (or none).
    pub async fn bind_with_queue(
        settings: ServeConfig,
        styles: Vec<StyleConfig>,
        queue: Option<Arc<RenderQueue>>,
        renderer: Option<Arc<Renderer>>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Server> {
        let admin = parse_networks("admin_networks", &settings.admin_networks)?;
        let trusted = parse_networks("trusted_proxies", &settings.trusted_proxies)?;
        if !trusted.is_empty() && settings.throttle.x_forwarded_for != config::ForwardedFor::None {
            tracing::warn!(
                "serve.throttle.x_forwarded_for is ignored: with serve.trusted_proxies set, \
                 throttling counts the client address the proxies establish"
            );
        }
        if settings.max_connections == 0 {
            anyhow::bail!("serve.max_connections must be at least 1");
        }
        if let Some(soft) = connections::raise_open_files_limit() {
            // Each connection is a descriptor; metatiles, the database and
            // the renderer need some too.
            if (settings.max_connections as u64).saturating_add(256) > soft {
                tracing::warn!(
                    max_connections = settings.max_connections,
                    open_files = soft,
                    "serve.max_connections is close to the open-file limit: \
                     raise LimitNOFILE or lower max_connections"
                );
            }
        }
        let mut served = Vec::new();
        let mut by_name = HashMap::new();
        for style in styles {
            if by_name.contains_key(&style.name) {
                anyhow::bail!("serve: style {:?} is configured twice", style.name);
            }
            if routes::RESERVED.contains(&style.name.as_str()) {
                anyhow::bail!(
                    "serve: style name {:?} collides with an endpoint of the server",
                    style.name
                );
            }
            by_name.insert(style.name.clone(), served.len());
            let dir = style.tile_dir.join(&style.name);
            served.push(ServedStyle {
                dir: dir
                    .to_str()
                    .with_context(|| format!("tile_dir {} is not UTF-8", dir.display()))?
                    .to_string(),
                planet_files: [
                    dir.join(crate::metatile::PLANET_IMPORT_COMPLETE),
                    style.tile_dir.join(crate::metatile::PLANET_IMPORT_COMPLETE),
                ],
                planet_nanos: Default::default(),
                planet_checked_ms: Default::default(),
                counters: metrics.style(&style.name),
                config: style,
            });
        }
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("serve: cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let throttle = settings
            .throttle
            .enabled
            .then(|| throttle::Throttle::new(&settings.throttle));
        let tile_cache_bytes = (settings.tile_cache_mb * 1e6) as usize;
        let (purge_sender, purge_keys) = match settings.purge.is_active() {
            true => {
                let (sender, receiver) = purge::PurgeSender::channel();
                if let Some(queue) = &queue {
                    let keys = sender.clone();
                    queue.on_rendered(Box::new(move |key| keys.purge(&key.style, key.metatile)));
                }
                (Some(sender), Some(receiver))
            }
            false => (None, None),
        };
        let state = Arc::new(AppState {
            waiting: Arc::new(tokio::sync::Semaphore::new(
                settings.max_waiting_requests.max(1),
            )),
            settings,
            styles: served,
            by_name,
            queue,
            renderer,
            metrics,
            admin,
            trusted,
            throttle,
            load: routes::LoadSnapshot::default(),
            tile_cache: Arc::new(tiles::TileCache::new(tile_cache_bytes)),
            data_bounds: DataBoundsHandle::default(),
        });
        Ok(Server {
            listener,
            addr,
            state,
            purge_keys,
            purge_sender,
        })
    }

    /// Where to set the data bounds TileJSON and the map page show.
    pub fn data_bounds(&self) -> DataBoundsHandle {
        self.state.data_bounds.clone()
    }

    /// Where to send metatiles changed without a render (touched or
    /// deleted), to purge them from the caches in front; `None` without
    /// `serve.purge`.
    pub fn purge_sender(&self) -> Option<purge::PurgeSender> {
        self.purge_sender.clone()
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then finishes the requests in
    /// flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let settings = &self.state.settings;
        let limits = connections::Limits {
            header_read: settings.header_read_timeout(),
            keepalive: settings.keepalive_timeout(),
            max_connections: settings.max_connections,
        };
        let (stop_purger, purger_stopped) = tokio::sync::oneshot::channel::<()>();
        let purger = self.purge_keys.map(|keys| {
            tokio::spawn(purge::run(
                settings.purge.clone(),
                keys,
                self.state.metrics.clone(),
                async move {
                    let _ = purger_stopped.await;
                },
            ))
        });
        let router = routes::router(self.state);
        tracing::info!(address = %self.addr, "serving tiles");
        connections::serve(self.listener, router, limits, shutdown).await;
        // Keys still gathering or waiting for a retry get a last, bounded
        // attempt (`purge::FLUSH_LIMIT`); the purger ends itself before
        // the limit, the abort is for a send that overran it.
        if let Some(mut purger) = purger {
            let _ = stop_purger.send(());
            if tokio::time::timeout(purge::FLUSH_LIMIT, &mut purger)
                .await
                .is_err()
            {
                tracing::warn!("stopping: cache purges still running are dropped");
                purger.abort();
            }
        }
        Ok(())
    }
}

/// Binds and serves until `shutdown` completes: the entry point of
/// `tilepipe serve` and `tilepipe run`.
pub async fn serve(
    settings: ServeConfig,
    styles: Vec<StyleConfig>,
    renderer: Option<Arc<Renderer>>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::bind(settings, styles, renderer, metrics)
        .await?
        .run(shutdown)
        .await
}

/// Every entry of the list setting `key` (see [`parse_network`]).
fn parse_networks(key: &str, texts: &[String]) -> anyhow::Result<Vec<ipnet::IpNet>> {
    texts.iter().map(|text| parse_network(key, text)).collect()
}

/// `10.0.0.0/8`, `::1/128`, or a bare address (one host); `key` names
/// the setting in errors.
fn parse_network(key: &str, text: &str) -> anyhow::Result<ipnet::IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    let ip: std::net::IpAddr = text.parse().with_context(|| {
        format!("serve.{key}: {text:?} is not a network (10.0.0.0/8) or an address")
    })?;
    Ok(ipnet::IpNet::from(ip))
}
