//! Test kit for tilepipe.
//!
//! - [`pg`]: private, throwaway PostgreSQL + PostGIS clusters;
//! - [`feedgen`]: realistic minutely replication feeds generated over a real
//!   OSM extract, written in osmdbt's publish order;
//! - [`feedserver`]: an HTTP server for such feeds that injects faults.

pub mod feedgen;
pub mod feedserver;
pub mod pg;

pub use feedgen::{FeedGenerator, FeedWriter, GeneratedDiff, OsmData};
pub use feedserver::{Fault, FaultTarget, FeedServer};
pub use pg::PgCluster;
