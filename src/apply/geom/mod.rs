//! Geometries as osm2pgsql 1.8's classic pgsql output builds them, in
//! EPSG:3857 metres.
//!
//! - [`project`]: node locations (1e-7° fixed point) to 3857, bit-identical
//!   to osm2pgsql (osmium's polynomial mercator, latitude clamped at ±89.99°);
//! - [`linestring`], [`split_line`]: way lines without consecutive
//!   duplicates, cut into pieces of at most 100 km like osm2pgsql;
//! - [`way_polygon`], [`assemble_multipolygon`]: areas from closed ways and
//!   multipolygon/boundary relations with osmium's area assembler
//!   behaviour (outer rings counter-clockwise, inner rings clockwise);
//! - [`merge_lines`]: osm2pgsql's own line merging for route and boundary
//!   relations;
//! - [`area`], [`length`], [`format_way_area`]: `way_area` and lengths;
//! - [`ewkb`]: PostGIS EWKB with SRID 3857 (or any SRID, for the flex
//!   output), writer and reader;
//! - [`surely_valid`]: a conservative, exact proof that a polygon is valid
//!   for PostGIS, so most polygons need no `ST_IsValid` in the database;
//! - [`postgis_sort_key`]: PostGIS's order of geometries as an integer,
//!   for clustering rows as osm2pgsql does.
//!
//! Everything is pure computation on `geo` types; the callers fetch node
//! locations, decide what to build from the tags and write the rows.
//!
//! Output is byte-identical to osm2pgsql 1.8.0 on the Liechtenstein and
//! Helsinki extracts (every point, line and polygon row, also after the
//! upstream test diff), on the synthetic cases in `tests/fixtures/geom` and
//! on randomised multipolygons (`tests/geom_random_osm2pgsql.rs`). Known
//! differences, all outside real data:
//! - the assembler recovers the 1e-7° grid locations from the projected
//!   coordinates; coordinates that are not projections of grid points are
//!   snapped to the grid for its decisions, and latitudes beyond the ±89.99°
//!   clamp cannot be told apart (osm2pgsql assembles before projecting);
//! - osmium's 64-bit cross products could overflow for segments spanning
//!   half the planet; we compute them in 128 bits;
//! - where osmium merely asserts (undefined behaviour in release builds),
//!   for instance an odd ray-casting count without an enclosing outer ring,
//!   assembly fails here.
//!
//! Typical use for a way that is a line:
//!
//! ```
//! use tilepipe::apply::geom::{ewkb, linestring, project, split_line, MAX_LINE_LENGTH};
//!
//! let points = [project(95_270_956, 470_862_971), project(95_608_307, 471_666_716)];
//! let line = linestring(&points).expect("two distinct points");
//! for piece in split_line(&line, MAX_LINE_LENGTH) {
//!     let bytes = ewkb::linestring(&piece);
//!     assert_eq!(&bytes[..5], &[1, 2, 0, 0, 0x20]);
//! }
//! ```

mod assembler;
pub mod ewkb;
mod line;
mod order;
mod polygon;
mod projection;
pub mod validity;

pub use line::{length, linestring, merge_lines, split_line};
pub use order::postgis_sort_key;
pub use polygon::{
    area, assemble_multipolygon, format_way_area, polygon_parts, single_or_multi, way_polygon,
    Areal, MemberWay,
};
pub(crate) use polygon::{assemble_multipolygon_located, way_polygon_located, Located};
pub use projection::{project, project_degrees, EARTH_RADIUS, MAX_LATITUDE};
pub use validity::surely_valid;

/// osm2pgsql splits lines into pieces of at most this many units in 3857
/// (`split_at = 100 * 1000` in `output-pgsql.cpp`).
pub const MAX_LINE_LENGTH: f64 = 100_000.0;
