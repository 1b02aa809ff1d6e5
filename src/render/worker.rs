//! The render workers: renderd's render threads, in-process.
//!
//! [`Renderer::start`] registers Mapnik's input plugins and fonts once,
//! then starts N OS threads. Each thread loads its own Mapnik map of every
//! style (a `mapnik::Map` is not shared between threads) and loops: take
//! the next job from the [`RenderQueue`], render the metatile in one piece
//! (so labels continue across tile edges), let Mapnik encode each tile,
//! write the `.meta` file atomically through the style's [`TileStore`] and
//! report to the queue, which wakes every waiter. `start` returns once every
//! thread has loaded every style, or fails naming the style and file that
//! did not load.
//!
//! A failed render (Mapnik or PostGIS error, write error, unknown style,
//! zoom outside the style's range) is logged with its style and metatile
//! and reported to the waiters; the worker goes on with the next job. A
//! PostGIS error that looks like a lost connection (PostgreSQL restarted)
//! is retried once: Mapnik's connection pool replaces a connection that
//! failed, so the retry reconnects.
//!
//! Where time goes is counted ([`Renderer::timings`]): Mapnik's drawing and
//! encoding on one side, tilepipe's own work (taking the job, assembling
//! the metatile, writing the file, completing the job) on the other.
//!
//! The threads are Mapnik's, so they exist only in builds with the `render`
//! feature (the default): [`Renderer`] comes from `worker/mapnik.rs` there,
//! and from `worker/disabled.rs` otherwise, whose [`Renderer::start`] fails
//! with [`RenderError::NotBuilt`]. Everything that holds a renderer (serve's
//! on-demand rendering, `tilepipe run`, `serve` and `render`) compiles the
//! same in both builds and meets that error only where it would render.

use crate::tile::Metatile;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "render")]
mod mapnik;
#[cfg(feature = "render")]
pub use mapnik::Renderer;

#[cfg(not(feature = "render"))]
mod disabled;
#[cfg(not(feature = "render"))]
pub use disabled::Renderer;

/// Why the renderer did not start, or a render was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Mapnik could not load its input plugins (renderd.conf's
    /// `plugins_dir`).
    #[error("cannot register Mapnik input plugins from {dir}: {message}")]
    Plugins {
        /// The plugin directory tried.
        dir: PathBuf,
        /// Mapnik's message.
        message: String,
    },
    /// Mapnik could not register a font directory (renderd.conf's
    /// `font_dir`).
    #[error("cannot register fonts from {dir}: {message}")]
    Fonts {
        /// The font directory tried.
        dir: PathBuf,
        /// Mapnik's message.
        message: String,
    },
    /// A style's XML did not load.
    #[error("style {style:?} ({xml}): {message}")]
    Style {
        /// The style's name.
        style: String,
        /// Its XML file.
        xml: PathBuf,
        /// What failed: reading, rewriting or Mapnik's parse.
        message: String,
    },
    /// The styles do not pass [`validate_styles`](super::config::validate_styles);
    /// its message.
    #[error("invalid style configuration: {0}")]
    Config(String),
    /// The style name asked for, which no configured style has.
    #[error("unknown style {0:?}")]
    UnknownStyle(String),
    /// The zoom asked for is outside the style's `min_zoom`-`max_zoom`.
    #[error("style {style:?} renders zoom {min}-{max}, not {z}")]
    Zoom {
        /// The style's name.
        style: String,
        /// The zoom asked for.
        z: u8,
        /// The style's `min_zoom`.
        min: u8,
        /// The style's `max_zoom`.
        max: u8,
    },
    /// The metatile asked for, whose x or y is outside the world.
    #[error("{0} is outside the world")]
    Address(Metatile),
    /// The system refused a thread.
    #[error("cannot start a render thread: {0}")]
    Thread(std::io::Error),
    /// Only from builds without the `render` feature: there is no Mapnik.
    #[error(
        "tilepipe was built without the `render` feature; \
         rebuild with default features to render tiles"
    )]
    NotBuilt,
}

/// Cumulative time accounting of all workers, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Jobs finished (rendered or failed). A job is counted after its
    /// times, which a waiter woken by the queue may not see yet: wait for
    /// this count to be sure they are in.
    pub jobs: u64,
    /// Jobs whose metatile was written.
    pub rendered: u64,
    /// Jobs that failed (and were reported to their waiters).
    pub failed: u64,
    /// Renders retried after a lost database connection.
    pub retried: u64,
    /// Inside Mapnik: drawing the metatile and encoding its tiles.
    pub mapnik: Duration,
    /// Building and writing the `.meta` file (encode, temp file, rename).
    pub write: Duration,
    /// From `take` returning a job to `complete` returning: everything a
    /// worker does for a job.
    pub busy: Duration,
}

impl Timings {
    /// tilepipe's own share of the busy time: everything but Mapnik.
    pub fn overhead(&self) -> Duration {
        self.busy.saturating_sub(self.mapnik)
    }

    /// [`Timings::overhead`] as a fraction of the Mapnik time.
    pub fn overhead_ratio(&self) -> f64 {
        let mapnik = self.mapnik.as_secs_f64();
        if mapnik == 0.0 {
            0.0
        } else {
            self.overhead().as_secs_f64() / mapnik
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renderer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Renderer>();
    }

    #[test]
    fn overhead_is_busy_minus_mapnik() {
        let t = Timings {
            mapnik: Duration::from_millis(900),
            busy: Duration::from_millis(1000),
            ..Timings::default()
        };
        assert_eq!(t.overhead(), Duration::from_millis(100));
        assert!((t.overhead_ratio() - 0.1111).abs() < 1e-3);
    }
}
