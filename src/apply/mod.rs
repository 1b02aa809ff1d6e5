//! The apply stage: imports an OSM file into PostGIS in osm2pgsql's classic
//! "pgsql" output schema and applies change sets to it, each batch in one
//! transaction together with its replication position.
//!
//! Pieces (see `specs/osm-pgsql-schema.md`):
//! - [`style`]: osm2pgsql `.style` files and the built-in default style;
//! - [`transform`]: tag filtering (classic rules or a Lua tag transform),
//!   z_order, polygon-or-line and roads decisions;
//! - [`geom`]: geometries in EPSG:3857 (lines, split lines, polygons,
//!   multipolygons, merged routes) and their EWKB encoding.

pub mod geom;
pub mod input;
pub mod lua;
pub mod middle;
pub mod pgcopy;
pub mod style;
pub mod transform;
