//! The render stage: a built-in Mapnik renderer writing mod_tile metatiles.
//!
//! - [`cache_limit`]: how full the tile cache's filesystem is.
//! - [`config`]: the styles and the renderer's settings.
//! - [`queue`]: the priority render queue workers take metatiles from.
//! - [`worker`]: the render threads, one Mapnik map per style each (the
//!   `render` feature; without it the renderer fails to start).
//! - [`style`]: a style's XML pointed at the configured database.
//! - [`style_change`]: metatiles older than their style's XML marked
//!   dirty at start.
//! - [`style_reads`]: what each layer of a style reads and where it draws,
//!   for style-aware expiry.
//! - [`prerender`]: a zoom range over an area, queued and awaited
//!   (`tilepipe render`, like `render_list -a`).
//! - [`server`]: the renderd wire protocol served on a socket, for mod_tile
//!   and the `render_*` tools.
//!
//! The Mapnik binding is `crates/mapnik-sys`; the metatile store is
//! [`crate::metatile`], the renderd wire protocol [`crate::renderd`] and
//! the metatiles a `tilepipe render` run covers [`crate::tile::metatiles_at`].

pub mod cache_limit;
pub mod config;
pub mod prerender;
pub mod queue;
pub mod server;
pub mod style;
pub mod style_change;
mod style_conditions;
pub mod style_reads;
pub mod worker;
