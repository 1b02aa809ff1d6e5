//! tilepipe: one daemon from OpenStreetMap replication diff to fresh map tile.
//!
//! The crate follows the pipeline: [`replication`] follows a feed and hands
//! the apply stage an [`osm::ChangeSet`]; [`apply`] writes it into
//! PostGIS in osm2pgsql's classic schema; [`expire`] turns changed rows into
//! tiles; [`render`] draws metatiles with Mapnik; [`serve`] answers HTTP.
//! [`config`] holds the one typed configuration tree and [`cli`] wires the
//! stages into commands, with [`daemon`] (the `run` loop) and [`services`]
//! (the servers `run` and `serve` start and stop).
//!
//! Below the stages, shared by them: [`osm`] (the OSM data model and file
//! formats), [`tile`] and [`metatile`] (tile addresses and mod_tile's
//! `.meta` store), [`renderd`] (renderd's protocol and a client),
//! [`metrics`] (the registry every stage reports to), [`db`] (PostgreSQL
//! connections) and [`redact`] (credentials hidden from logs and
//! messages).

pub mod apply;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod expire;
pub mod metatile;
pub mod metrics;
pub mod osm;
pub mod redact;
pub mod render;
pub mod renderd;
pub mod replication;
pub mod serve;
pub mod services;
pub mod tile;
