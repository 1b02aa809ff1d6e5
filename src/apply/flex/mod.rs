//! osm2pgsql's flex output; pieces land one by one.

pub mod geometry;
