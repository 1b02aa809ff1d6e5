//! The expire stage: from the rows an apply changed to the tiles whose
//! pictures changed, and from those tiles to actions on a tile cache.
//!
//! - [`tiles`]: tile maths (3857 metres → tile coordinates, quadkeys);
//! - [`tileset`]: a compact set of tiles at the expiry max zoom, lower zooms
//!   and metatiles derived from it;
//! - [`raster`]: osm2pgsql 2.3's rules for points, lines and polygons;
//! - [`from_osm`]: geometries from an OSM file, for `tilepipe expire-tiles`;
//! - [`actions`]: what to do with expired metatiles per style and zoom
//!   (re-render, touch, delete, list) on a mod_tile cache or a renderd;
//! - [`batch`]: the expiry of applied batches, queued in their transaction
//!   and acted on after the commit;
//! - [`nodes`]: expiry for render nodes on streaming standbys, delivered
//!   per node once its standby has replayed the batch;
//! - [`schedule`]: cron-scheduled refreshes of the low zooms;
//! - [`style_aware`]: what each style reads, and per-style tile sets
//!   expiring a row only at the zooms where the style draws its table;
//! - [`outputs`]: the expire outputs of flex configs written for
//!   osm2pgsql ≥ 1.9 (tile lists and tables), fed by the columns that name
//!   them.
//!
//! Expire does not know who renders: renders go to an
//! [`actions::RenderSink`] (renderd's protocol here, or a
//! [`batch::LocalRenderer`] that the daemon implements over tilepipe's own
//! render queue).

pub mod actions;
pub mod batch;
pub mod from_osm;
pub mod nodes;
pub mod outputs;
pub mod raster;
pub mod schedule;
pub mod style_aware;
pub mod tiles;
pub mod tileset;
