//! `tilepipe render`: pre-render the metatiles of a zoom range, for a
//! lon/lat box or the whole world, into a style's cache, as mod_tile's
//! `render_list -a` does through renderd, but in-process.
//!
//! By default only metatiles that are missing or dirty (older than the
//! planet time) are rendered; `--missing-only` renders only absent ones,
//! `--force` every one. Zooms are done lowest first. A progress bar shows
//! metatiles done, the rate and the time left; the summary line gives
//! rendered, skipped and failed metatiles and metatiles per second.
//!
//! This module parses the arguments and wires the renderer, the progress
//! bar and the summary; the loop itself is [`crate::render::prerender`].

use crate::config::Config;
use crate::render::prerender::{self, Prerender, Progress, Selection};
use crate::render::queue::RenderKey;
use crate::render::worker::Renderer;
use crate::tile::BBox;
use anyhow::{bail, Context};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("area").required(true).args(["bbox", "all"])))]
pub struct Args {
    /// Style to render (a name from the `styles:` section).
    #[arg(short, long, value_name = "NAME")]
    style: String,
    /// Zoom or zoom range, e.g. 12 or 10-16.
    #[arg(short, long, value_name = "Z[-Z]", value_parser = parse_zooms)]
    zoom: (u8, u8),
    /// Only metatiles touching this lon/lat box: west,south,east,north.
    #[arg(short, long, value_name = "W,S,E,N", allow_hyphen_values = true)]
    bbox: Option<BBox>,
    /// Every metatile of the zooms.
    #[arg(short, long)]
    all: bool,
    /// Render only metatiles not in the cache (dirty ones are kept).
    #[arg(long, conflicts_with = "force")]
    missing_only: bool,
    /// Render every metatile, clean ones too.
    #[arg(short, long)]
    force: bool,
    /// Render threads (default: render.threads, 0 = one per CPU).
    #[arg(short = 'n', long, value_name = "N")]
    threads: Option<usize>,
}

fn parse_zooms(s: &str) -> Result<(u8, u8), String> {
    let parse = |p: &str| {
        p.trim()
            .parse::<u8>()
            .map_err(|_| format!("{s:?} is not a zoom or a range like 10-16"))
    };
    let (min, max) = match s.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(s)?, parse(s)?),
    };
    if min > max {
        return Err(format!("{s:?}: the first zoom is above the second"));
    }
    if max > crate::tile::MAX_ZOOM {
        return Err(format!("{s:?}: zooms go up to {}", crate::tile::MAX_ZOOM));
    }
    Ok((min, max))
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let Some(style) = config.styles.iter().find(|s| s.name == args.style) else {
        let names: Vec<&str> = config.styles.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "no style {:?} in the configuration (styles: {})",
            args.style,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let (min_zoom, max_zoom) = args.zoom;
    if min_zoom < style.min_zoom || max_zoom > style.max_zoom {
        bail!(
            "style {:?} renders zoom {}-{}, not {min_zoom}-{max_zoom}",
            style.name,
            style.min_zoom,
            style.max_zoom
        );
    }
    let mut settings = config.render.clone();
    if let Some(n) = args.threads {
        settings.threads = n;
    }
    // No client waits on this renderer: every worker may take the bulk
    // (background) work.
    settings.background_max_threads = usize::MAX;
    let renderer = Renderer::start(std::slice::from_ref(style), &settings)
        .context("cannot start the renderer")?;
    let store = renderer.store(&style.name).expect("the style just loaded");
    let plan = Prerender {
        style: style.name.clone(),
        zooms: args.zoom,
        bbox: args.bbox,
        selection: if args.force {
            Selection::All
        } else if args.missing_only {
            Selection::Missing
        } else {
            Selection::Stale
        },
    };
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(plan.metatiles()),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} metatiles, {per_sec}, ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(style.name.clone());

    let window = prerender::window(renderer.threads(), settings.queue_capacity);
    let started = Instant::now();
    let summary = prerender::prerender(renderer.queue(), store, &plan, window, &mut Bar(&bar))?;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let timings = renderer.timings();
    renderer.shutdown();
    let rate = if elapsed > 0.0 {
        summary.rendered as f64 / elapsed
    } else {
        0.0
    };
    println!(
        "{}: z{min_zoom}-{max_zoom}: rendered {}, skipped {}, failed {} metatiles in {elapsed:.1} s ({rate:.2} metatiles/s; Mapnik {:.1} s, tilepipe overhead {:.1}%)",
        style.name,
        summary.rendered,
        summary.skipped,
        summary.failed,
        timings.mapnik.as_secs_f64(),
        timings.overhead_ratio() * 100.0
    );
    Ok(if summary.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The progress bar as a pre-render's [`Progress`]: failures are logged
/// above it.
struct Bar<'a>(&'a indicatif::ProgressBar);

impl Progress for Bar<'_> {
    fn zoom(&mut self, z: u8) {
        self.0.set_message(format!("z{z}"));
    }

    fn failed(&mut self, key: &RenderKey, message: &str) {
        self.0
            .suspend(|| tracing::error!(style = %key.style, "{}: {message}", key.metatile));
    }

    fn settled(&mut self) {
        self.0.inc(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoom_ranges() {
        assert_eq!(parse_zooms("12").unwrap(), (12, 12));
        assert_eq!(parse_zooms("10-16").unwrap(), (10, 16));
        assert!(parse_zooms("16-10").is_err());
        assert!(parse_zooms("10-21").is_err());
        assert!(parse_zooms("x").is_err());
    }
}
