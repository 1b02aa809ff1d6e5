//! osm2pgsql's flex output: tables and rows defined by a Lua config
//! (`osm2pgsql -O flex -S config.lua`), as osm2pgsql 1.8 implements it.
//!
//! - [`table`]: the table definitions (`osm2pgsql.define_table`) and
//!   their SQL;
//! - [`value`]: Lua values to column values.

pub mod table;
pub mod value;
