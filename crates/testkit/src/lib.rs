//! Test kit for tilepipe.
//!
//! - [`pg`]: private, throwaway PostgreSQL + PostGIS clusters. Tests call
//!   `PgCluster::shared().create_database("name")` for a fresh database on
//!   the per-process cluster, or `PgCluster::start(None)` for a cluster of
//!   their own (needed to stop or restart it).
//! - [`feedgen`]: realistic minutely replication diffs generated over a
//!   real OSM extract ([`FeedGenerator`]), written in osmdbt's publish
//!   order ([`FeedWriter`]), plus hand-made feeds from given changes.
//! - [`feedserver`]: an HTTP server for such feeds ([`FeedServer`]) with
//!   publication control, scripted and random faults, and a request log.
//! - [`hostile`]: random diffs full of what breaks geometry building and
//!   value parsing, kept in step with the data they lead to.
//! - [`renderd`]: Debian's renderd as a child process ([`Renderd`]): its
//!   renderd.conf written, started, waited for, killed on drop.
//! - [`scale`]: benchmark regions N times an extract's size, written as
//!   OSM PBF, and a city-wide "vandalism" diff.
//!
//! The `tilepipe-testkit` binary offers the same on the command line for
//! the demo and benchmarks.

pub mod feedgen;
pub mod feedserver;
pub mod hostile;
pub mod pg;
pub mod renderd;
pub mod scale;
pub mod town;

pub use feedgen::{FeedGenerator, FeedWriter, GeneratedDiff, OsmData};
pub use feedserver::{Fault, FaultTarget, FeedServer};
pub use pg::PgCluster;
pub use renderd::{find_in_path, output_with_stdin, Renderd};
