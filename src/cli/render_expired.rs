//! `tilepipe render-expired`: mod_tile's `render_expired` with its options,
//! reading `z/x/y` lines from stdin and re-rendering, touching or deleting
//! the metatiles they cover in a mod_tile tile directory.
//!
//! Zoom mapping. `render_expired` moves each input tile to the maximum zoom
//! through its top-left descendant only, so a tile listed above max − 3
//! expires a corner of its area at the high zooms. Here an input tile at
//! zoom `t` marks, at every zoom `z` of the policy:
//! - `z ≤ t`: the metatile of its ancestor at `z`;
//! - `z > t`: every metatile inside its area, `max(1, 4^(z − t) / 64)` of
//!   them. Above `--max-expansion` metatiles for one tile at one zoom, that
//!   zoom and the deeper ones are skipped for the tile, with a warning (a z0
//!   tile would otherwise mean every metatile of the world).
//!
//! As in `render_expired`, z0–z2 are never expired and only metatiles on
//! disk are acted on (`--render-missing` also renders the others).

use crate::config::Config;
use crate::expire::actions::{
    expire, write_tile_list, ExpirePolicy, ExpireSummary, ListGranularity, ListMode, NoRender,
    RenderdSink, RenderdSinkOptions,
};
use crate::metatile::TileStore;
use crate::renderd::{Command, Endpoint, DEFAULT_SOCKET, DEFAULT_TCP_PORT};
use crate::tile::{covering_metatile_count, covering_metatiles, Metatile, Tile};
use anyhow::Context;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Map style: the renderd.conf section and tile directory name.
    #[arg(short, long, value_name = "STYLE", default_value = "default")]
    map: String,
    /// Lowest zoom expired (raised to 3: z0-z2 are never expired).
    #[arg(short = 'z', long, value_name = "Z", default_value_t = 0)]
    min_zoom: u8,
    /// Highest zoom expired.
    #[arg(short = 'Z', long, value_name = "Z", default_value_t = 18)]
    max_zoom: u8,
    /// From this zoom up, touch metatiles (mark them dirty) instead of
    /// re-rendering them.
    #[arg(short = 'T', long, value_name = "Z")]
    touch_from: Option<u8>,
    /// From this zoom up, delete metatiles instead of re-rendering or
    /// touching them.
    #[arg(long, value_name = "Z")]
    delete_from: Option<u8>,
    /// renderd's Unix socket (a path starting with '/') or host[:port].
    /// Default /run/renderd/renderd.sock; only used when something is
    /// re-rendered.
    #[arg(short, long, value_name = "PATH", conflicts_with = "host")]
    socket: Option<String>,
    /// renderd's TCP host.
    #[arg(long, value_name = "H")]
    host: Option<String>,
    /// renderd's TCP port.
    #[arg(long, value_name = "P", requires = "host", default_value_t = DEFAULT_TCP_PORT)]
    port: u16,
    /// The tile directory (renderd's tile_dir).
    #[arg(
        short,
        long,
        value_name = "DIR",
        default_value = "/var/cache/renderd/tiles"
    )]
    tile_dir: PathBuf,
    /// Render requests in flight, each on its own connection.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    num_threads: u16,
    /// Also ask renderd for metatiles that are not on disk.
    #[arg(long)]
    render_missing: bool,
    /// Send cmdDirty (queue the render, no waiting) instead of
    /// cmdRenderBulk (wait for each render).
    #[arg(long)]
    dirty: bool,
    /// Seconds to wait for each render reply; default no limit.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Most metatiles one input tile may expand to at one zoom.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_expansion: u64,
    /// Also write the expired metatiles (z/x/y of their top-left tile) to
    /// this file, replacing it atomically.
    #[arg(long, value_name = "FILE")]
    list: Option<PathBuf>,
    /// Append to the --list file instead of replacing it.
    #[arg(long, requires = "list")]
    append: bool,
}

/// The metatiles an input list expires, and what reading it found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    pub metatiles: BTreeSet<Metatile>,
    /// Lines that were tiles.
    pub tiles_read: u64,
    /// Non-empty lines that were not `z/x/y` tiles.
    pub lines_skipped: u64,
    /// Input tiles whose expansion stopped at `max_expansion`.
    pub capped: u64,
}

/// Expands `z/x/y` lines to the metatiles they cover at `zooms` (see the
/// module documentation).
pub fn expand_lines(
    lines: impl Iterator<Item = std::io::Result<String>>,
    zooms: std::ops::RangeInclusive<u8>,
    max_expansion: u64,
) -> anyhow::Result<Expansion> {
    let mut expansion = Expansion::default();
    for (number, line) in lines.enumerate() {
        let line = line.context("reading the tile list")?;
        if line.trim().is_empty() {
            continue;
        }
        let tile: Tile = match line.parse() {
            Ok(tile) => tile,
            Err(e) => {
                expansion.lines_skipped += 1;
                if expansion.lines_skipped <= 10 {
                    tracing::warn!("line {}: {e}; skipped", number + 1);
                }
                continue;
            }
        };
        expansion.tiles_read += 1;
        for zoom in zooms.clone() {
            let count = covering_metatile_count(tile, zoom);
            if count > max_expansion {
                expansion.capped += 1;
                if expansion.capped <= 10 {
                    tracing::warn!(
                        "tile {tile} covers {count} metatiles at zoom {zoom}, more than \
                         --max-expansion {max_expansion}; zooms {zoom} and up skipped for it"
                    );
                }
                break;
            }
            expansion.metatiles.extend(covering_metatiles(tile, zoom));
        }
    }
    Ok(expansion)
}

pub fn run(_config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let policy = ExpirePolicy {
        style: args.map.clone(),
        min_zoom: args.min_zoom,
        max_zoom: args.max_zoom,
        touch_from: args.touch_from,
        delete_from: args.delete_from,
        render_missing: args.render_missing,
        zoom_floor: crate::expire::actions::FIRST_EXPIRED_ZOOM,
    };
    policy.validate()?;
    let endpoint = match (&args.socket, &args.host) {
        (Some(socket), _) => Endpoint::parse(socket).map_err(anyhow::Error::msg)?,
        (None, Some(host)) => Endpoint::Tcp {
            host: host.clone(),
            port: args.port,
        },
        (None, None) => Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET)),
    };
    let reply_timeout = args
        .timeout
        .map(Duration::try_from_secs_f64)
        .transpose()
        .context("--timeout")?;

    let expansion = expand_lines(
        std::io::stdin().lock().lines(),
        policy.zooms(),
        args.max_expansion,
    )?;
    if let Some(path) = &args.list {
        let mode = match args.append {
            true => ListMode::Append,
            false => ListMode::Replace,
        };
        write_tile_list(
            path,
            expansion.metatiles.iter().copied(),
            ListGranularity::Metatiles,
            mode,
        )?;
    }

    let store = TileStore::new(&args.tile_dir);
    let metatiles = expansion.metatiles.iter().copied();
    let summary = super::runtime()?.block_on(async {
        if policy.renders() {
            let options = RenderdSinkOptions {
                concurrency: usize::from(args.num_threads),
                command: match args.dirty {
                    true => Command::Dirty,
                    false => Command::RenderBulk,
                },
                reply_timeout,
                ..Default::default()
            };
            let mut sink = RenderdSink::new(endpoint, store.clone(), options);
            expire(&store, &policy, metatiles, &mut sink).await
        } else {
            // Only touches and deletes: no connection, as render_expired.
            expire(&store, &policy, metatiles, &mut NoRender).await
        }
    })?;
    print!("{}", report(&expansion, &summary));
    if let Some(error) = &summary.render_error {
        tracing::error!("renders failed: {error}");
    }
    if let Some(error) = &summary.store_error {
        tracing::error!("tile directory errors, the first: {error}");
    }
    Ok(match summary.is_success() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}

/// The summary `render_expired` prints, with the per-zoom table before it.
fn report(expansion: &Expansion, summary: &ExpireSummary) -> String {
    let total = summary.total();
    let r = &total.replies;
    let mut text = summary.to_string();
    text += &format!(
        "Tiles read from input: {} ({} lines skipped, {} expansions capped)\n\
         Meta tiles expanded from input: {}\n\
         Meta tiles rendered: {} (done {}, not done {}, ignored {}, failed {})\n\
         Meta tiles not rendered and marked dirty instead: {}\n\
         Meta tiles touched: {} ({} more already touched)\n\
         Meta tiles deleted: {}\n\
         Meta tiles ignored (not on disk): {}\n",
        expansion.tiles_read,
        expansion.lines_skipped,
        expansion.capped,
        expansion.metatiles.len(),
        total.rendered,
        r.done,
        r.not_done,
        r.ignored,
        r.failed,
        r.marked_dirty,
        total.touched,
        total.already_touched,
        total.deleted,
        total.missing,
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str, zooms: std::ops::RangeInclusive<u8>, cap: u64) -> Expansion {
        expand_lines(text.lines().map(|l| Ok(l.to_string())), zooms, cap).unwrap()
    }

    #[test]
    fn expands_to_every_covered_metatile() {
        // A z15 tile at zooms 12-18: one metatile each at 12-18 (z16-z18
        // stay inside one metatile), then 4 at z19.
        let e = expand("15/16376/10896\n", 12..=19, 4096);
        assert_eq!(e.tiles_read, 1);
        assert_eq!(e.metatiles.len(), 7 + 4);
        let at = |z| e.metatiles.iter().filter(|m| m.z == z).count();
        assert_eq!((at(12), at(15), at(18), at(19)), (1, 1, 1, 4));
        // A z10 tile down to z18: 32×32 metatiles at z18 (render_expired
        // would mark only the top-left one).
        let e = expand("10/511/340", 18..=18, 4096);
        assert_eq!(e.metatiles.len(), 1024);
        assert!(e.metatiles.contains(&Metatile {
            z: 18,
            x: (511 << 8) + 248,
            y: (340 << 8) + 248,
        }));
    }

    #[test]
    fn skips_bad_lines_and_caps_expansion() {
        let e = expand("\n3/0/0\nnot a tile\n21/0/0\n3/8/0\n15:1:2\n", 3..=3, 10);
        assert_eq!((e.tiles_read, e.lines_skipped), (1, 4));
        let e = expand("0/0/0\n", 3..=10, 64);
        assert_eq!(e.capped, 1);
        // z3 (1), z4 (4), z5 (16), z6 (64) fit; z7 (256) does not.
        assert_eq!(e.metatiles.len(), 1 + 4 + 16 + 64);
    }

    #[test]
    fn duplicates_merge() {
        let e = expand(
            "18/131010/87170\n18/131008/87168\n17/65505/43585\n",
            17..=18,
            10,
        );
        assert_eq!(e.tiles_read, 3);
        assert_eq!(e.metatiles.len(), 2);
    }
}
