//! The render threads over Mapnik: the [`Renderer`] of builds with the
//! `render` feature. See [the module above](super) for what they do.

use super::{RenderError, Timings};
use crate::metatile::{TileStore, SLOTS};
use crate::render::config::{RenderConfig, StyleConfig};
use crate::render::queue::{Job, RenderKey, RenderQueue};
use crate::render::style::{load_style_xml, StyleError};
use crate::tile::{Metatile, METATILE};
use mapnik_sys::{Map, MapnikError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, info_span, warn};

/// Fonts registered when `render.font_dirs` is empty: Mapnik's own font
/// directory and the system's, recursively.
const SYSTEM_FONT_DIR: &str = "/usr/share/fonts";

#[derive(Default)]
struct Counters {
    jobs: AtomicU64,
    rendered: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    mapnik_ns: AtomicU64,
    write_ns: AtomicU64,
    busy_ns: AtomicU64,
}

fn add(counter: &AtomicU64, d: Duration) {
    counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> Timings {
        let d = |c: &AtomicU64| Duration::from_nanos(c.load(Ordering::Relaxed));
        Timings {
            jobs: self.jobs.load(Ordering::Acquire),
            rendered: self.rendered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            mapnik: d(&self.mapnik_ns),
            write: d(&self.write_ns),
            busy: d(&self.busy_ns),
        }
    }
}

/// A style as the workers use it.
struct LoadedStyle {
    config: StyleConfig,
    /// The XML text with the database connection filled in.
    xml: String,
    /// Directory relative paths in the style resolve from.
    base: PathBuf,
    store: TileStore,
}

impl LoadedStyle {
    fn load_map(&self) -> Result<Map, MapnikError> {
        let mut map = Map::from_string(&self.xml, Some(&self.base))?;
        match self.config.buffer_size {
            Some(pixels) => map.set_buffer_size(pixels),
            // As renderd: half a tile, scaled, unless the style sets one.
            None if map.buffer_size() == 0 => map
                .set_buffer_size((f64::from(self.config.tile_size / 2) * self.config.scale) as i32),
            None => {}
        }
        Ok(map)
    }
}

/// The render workers and the queue they serve. Send + Sync: share it in
/// an `Arc` with the HTTP server and the renderd protocol server.
pub struct Renderer {
    queue: Arc<RenderQueue>,
    styles: Arc<Vec<LoadedStyle>>,
    configs: Vec<StyleConfig>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field(
                "styles",
                &self.configs.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field(
                "threads",
                &self.threads.lock().map(|t| t.len()).unwrap_or(0),
            )
            .finish()
    }
}

/// Registers plugins and fonts; process-wide, repeated calls are cheap.
fn register(settings: &RenderConfig) -> Result<(), RenderError> {
    let plugins = settings
        .plugins_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(mapnik_sys::DEFAULT_PLUGIN_DIR));
    mapnik_sys::register_plugins(&plugins).map_err(|e| RenderError::Plugins {
        dir: plugins.clone(),
        message: e.message(),
    })?;
    let fonts: Vec<PathBuf> = if settings.font_dirs.is_empty() {
        let mut dirs = vec![PathBuf::from(mapnik_sys::DEFAULT_FONT_DIR)];
        if Path::new(SYSTEM_FONT_DIR) != dirs[0] && Path::new(SYSTEM_FONT_DIR).is_dir() {
            dirs.push(SYSTEM_FONT_DIR.into());
        }
        dirs.retain(|d| d.is_dir());
        dirs
    } else {
        settings.font_dirs.clone()
    };
    // Registering the same directories again re-reads every font file, so
    // each set is registered once per process.
    static DONE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    // Mapnik warns on stderr about every font face a style's fontsets name
    // but the system lacks (openstreetmap-carto names hundreds); keep its
    // log for debugging only (its failures reach us as errors anyway; the
    // font warnings are logged at error severity, so only None hides them).
    mapnik_sys::set_log_level(if tracing::enabled!(tracing::Level::DEBUG) {
        mapnik_sys::LogLevel::Warn
    } else {
        mapnik_sys::LogLevel::None
    });
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    for dir in fonts {
        if done.contains(&dir) {
            continue;
        }
        mapnik_sys::register_fonts(&dir, true).map_err(|e| RenderError::Fonts {
            dir: dir.clone(),
            message: e.message(),
        })?;
        done.push(dir);
    }
    Ok(())
}

impl Renderer {
    /// Registers plugins/fonts once, loads every style once up front (fails
    /// with a clear message naming the style and XML path), then starts
    /// `threads` workers (0 = CPUs), each with its own Map per style.
    pub fn start(styles: &[StyleConfig], settings: &RenderConfig) -> Result<Renderer, RenderError> {
        crate::render::config::validate_styles(styles).map_err(RenderError::Config)?;
        register(settings)?;
        let threads = match settings.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let loaded: Vec<LoadedStyle> = styles
            .iter()
            .map(|config| {
                let style_error = |message: String| RenderError::Style {
                    style: config.name.clone(),
                    xml: config.xml.clone(),
                    message,
                };
                let xml = load_style_xml(&config.xml, config.database.as_deref(), threads)
                    .map_err(|e: StyleError| style_error(e.to_string()))?;
                let base = config
                    .xml
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                Ok(LoadedStyle {
                    config: config.clone(),
                    xml,
                    base,
                    store: TileStore::new(&config.tile_dir),
                })
            })
            .collect::<Result<_, RenderError>>()?;
        let styles = Arc::new(loaded);
        let queue = Arc::new(RenderQueue::with_limits(
            settings.queue_capacity,
            settings.background_limits(threads),
        ));
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), RenderError>>();
        let mut handles = Vec::with_capacity(threads);
        for n in 0..threads {
            let worker = Worker {
                number: n,
                queue: queue.clone(),
                styles: styles.clone(),
                counters: counters.clone(),
            };
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("render-{n}"))
                .spawn(move || worker.run(ready));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    queue.shutdown();
                    handles.into_iter().for_each(|h| drop(h.join()));
                    return Err(RenderError::Thread(e));
                }
            }
        }
        drop(ready_tx);
        // Every worker reports once its maps are loaded; the first failure
        // stops them all.
        let mut failure = None;
        for _ in 0..threads {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        let renderer = Renderer {
            queue,
            configs: styles.iter().map(|s| s.config.clone()).collect(),
            styles,
            threads: Mutex::new(handles),
            counters,
        };
        if let Some(e) = failure {
            renderer.stop();
            return Err(e);
        }
        info!(
            threads,
            styles = %renderer.configs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
            "renderer started"
        );
        Ok(renderer)
    }

    /// The queue the workers take jobs from: submit to it to render.
    pub fn queue(&self) -> &Arc<RenderQueue> {
        &self.queue
    }

    /// The styles the workers draw, as configured.
    pub fn styles(&self) -> &[StyleConfig] {
        &self.configs
    }

    /// The style's cache.
    pub fn store(&self, style: &str) -> Option<&TileStore> {
        self.styles
            .iter()
            .find(|s| s.config.name == style)
            .map(|s| &s.store)
    }

    /// The style's configuration.
    pub fn style(&self, style: &str) -> Option<&StyleConfig> {
        self.configs.iter().find(|s| s.name == style)
    }

    /// Checks that `style` exists and renders the metatile's zoom, before
    /// queueing it (a worker makes the same check and fails the job).
    pub fn check(&self, style: &str, metatile: Metatile) -> Result<&StyleConfig, RenderError> {
        let config = self
            .style(style)
            .ok_or_else(|| RenderError::UnknownStyle(style.to_string()))?;
        check_job(config, metatile)?;
        Ok(config)
    }

    /// Worker threads running.
    pub fn threads(&self) -> usize {
        self.threads.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Time accounting of all workers since the start.
    pub fn timings(&self) -> Timings {
        self.counters.snapshot()
    }

    /// Stops taking work, lets in-flight renders finish, joins the threads.
    pub fn shutdown(self) {
        self.stop();
    }

    fn stop(&self) {
        self.queue.shutdown();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in handles {
            if handle.join().is_err() {
                error!("a render thread panicked");
            }
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The zoom range and the world's bounds.
fn check_job(config: &StyleConfig, metatile: Metatile) -> Result<(), RenderError> {
    if !config.covers(metatile.z) {
        return Err(RenderError::Zoom {
            style: config.name.clone(),
            z: metatile.z,
            min: config.min_zoom,
            max: config.max_zoom,
        });
    }
    let n = 1u64 << metatile.z;
    if u64::from(metatile.x) >= n || u64::from(metatile.y) >= n {
        return Err(RenderError::Address(metatile));
    }
    Ok(())
}

/// Whether a Mapnik error looks like a database connection that went away
/// (server restarted, connection killed), worth one retry.
fn is_lost_connection(e: &MapnikError) -> bool {
    let msg = e.full_message().to_ascii_lowercase();
    msg.contains("postgis")
        && [
            "server closed the connection",
            "terminating connection",
            "no connection to the server",
            "connection to server",
            "could not connect",
            "could not send data",
            "could not receive data",
            "connection not open",
            "bad connection",
            "ssl syscall",
        ]
        .iter()
        .any(|needle| msg.contains(needle))
}

struct Worker {
    number: usize,
    queue: Arc<RenderQueue>,
    styles: Arc<Vec<LoadedStyle>>,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(self, ready: mpsc::Sender<Result<(), RenderError>>) {
        let mut maps: Vec<Option<Map>> = Vec::with_capacity(self.styles.len());
        let mut loaded = Ok(());
        for style in self.styles.iter() {
            let started = Instant::now();
            match style.load_map() {
                Ok(map) => {
                    debug!(worker = self.number, style = %style.config.name, elapsed = ?started.elapsed(), "style loaded");
                    maps.push(Some(map));
                }
                Err(e) => {
                    loaded = Err(RenderError::Style {
                        style: style.config.name.clone(),
                        xml: style.config.xml.clone(),
                        message: e.message(),
                    });
                    break;
                }
            }
        }
        let failed = loaded.is_err();
        let _ = ready.send(loaded);
        drop(ready);
        if failed {
            return;
        }
        let index: HashMap<&str, usize> = self
            .styles
            .iter()
            .enumerate()
            .map(|(i, s)| (s.config.name.as_str(), i))
            .collect();
        while let Some(job) = self.queue.take() {
            let started = Instant::now();
            let span = info_span!(
                "render",
                style = %job.key.style,
                z = job.key.metatile.z,
                x = job.key.metatile.x,
                y = job.key.metatile.y,
                priority = job.priority.name()
            );
            let _entered = span.enter();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.render(&job, &index, &mut maps)
            }))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(format!("render panicked: {what}"))
            });
            match &result {
                Ok(()) => {
                    self.counters.rendered.fetch_add(1, Ordering::Relaxed);
                    debug!(elapsed = ?started.elapsed(), "rendered");
                }
                Err(message) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    warn!("render failed: {message}");
                }
            }
            self.queue.complete(&job, result);
            add(&self.counters.busy_ns, started.elapsed());
            // Last, so a reader that sees the job counted sees its times.
            self.counters.jobs.fetch_add(1, Ordering::Release);
        }
    }

    fn render(
        &self,
        job: &Job,
        index: &HashMap<&str, usize>,
        maps: &mut [Option<Map>],
    ) -> Result<(), String> {
        let RenderKey { style, metatile } = &job.key;
        let i = *index
            .get(style.as_str())
            .ok_or_else(|| RenderError::UnknownStyle(style.clone()).to_string())?;
        let loaded = &self.styles[i];
        let config = &loaded.config;
        check_job(config, *metatile).map_err(|e| e.to_string())?;
        // The queue's key may name any tile of the metatile.
        let metatile = Metatile {
            z: metatile.z,
            x: metatile.x & !(METATILE - 1),
            y: metatile.y & !(METATILE - 1),
        };
        let size = metatile.size();
        let mut attempt = 0;
        let tiles = loop {
            attempt += 1;
            if maps[i].is_none() {
                maps[i] = Some(loaded.load_map().map_err(|e| {
                    format!(
                        "style {:?} ({}): {}",
                        config.name,
                        config.xml.display(),
                        e.message()
                    )
                })?);
            }
            let map = maps[i].as_mut().expect("loaded above");
            let started = Instant::now();
            let rendered = map.render_metatile(
                u32::from(metatile.z),
                metatile.x,
                metatile.y,
                size,
                config.tile_size,
                config.scale,
                config.format.mapnik_format(),
            );
            add(&self.counters.mapnik_ns, started.elapsed());
            match rendered {
                Ok(tiles) => break tiles,
                Err(e) if attempt == 1 && is_lost_connection(&e) => {
                    warn!("database connection lost, retrying once: {}", e.message());
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    // A fresh map gets fresh datasources; the pool replaces
                    // the broken connection.
                    maps[i] = None;
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let started = Instant::now();
        // Mapnik's order is x-major like the file's slots: index dx * size +
        // dy; below z3 the metatile is smaller than the 8×8 slot grid.
        let slots: Vec<Vec<u8>> = if size == METATILE {
            tiles
        } else {
            let mut slots = vec![Vec::new(); SLOTS];
            for (k, tile) in tiles.into_iter().enumerate() {
                let (dx, dy) = (k as u32 / size, k as u32 % size);
                slots[(dx * METATILE + dy) as usize] = tile;
            }
            slots
        };
        let written = loaded.store.write(&config.name, metatile, &slots);
        add(&self.counters.write_ns, started.elapsed());
        written
            .map(|_| ())
            .map_err(|e| format!("writing {metatile}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_recognised() {
        let e = |m: &str| MapnikError::from_message(m);
        assert!(is_lost_connection(&e(
            "Postgis Plugin: server closed the connection unexpectedly\n\tThis probably means..."
        )));
        assert!(is_lost_connection(&e(
            "Postgis Plugin: FATAL:  terminating connection due to administrator command"
        )));
        assert!(!is_lost_connection(&e(
            "Postgis Plugin: ERROR:  relation \"planet_osm_line\" does not exist"
        )));
    }
}
