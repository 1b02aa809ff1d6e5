//! The replication stage: follows an OSM replication feed (state files,
//! sequence paths, gzip'd OsmChange diffs) and hands out merged change sets
//! together with the feed position they reach.
//!
//! Rules this module keeps (after osmdbt's publish order and
//! osm2pgsql-replication's and pyosmium's readers):
//! - the top-level `state.txt` is read first and no sequence beyond it is
//!   ever requested; a 404 above it means "not yet published";
//! - a diff that fails to download, decompress or parse is retried, never
//!   skipped, and the position never advances past it;
//! - consecutive diffs are merged newest-version-wins up to a size bound.

pub mod client;
pub mod config;
pub mod feed;
pub mod follower;
pub mod legacy_status;
pub mod position;
pub mod search;
pub mod state;

pub use feed::{Feed, Interval};
pub use state::ReplicationState;
