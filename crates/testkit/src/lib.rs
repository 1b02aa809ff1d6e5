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
//! - [`town`]: a small synthetic town, and a feed of diffs after it.
//!
//! Helpers of the root crate's integration tests and benches:
//!
//! - [`paths`]: the repository, the `tilepipe` binary, and the OSM
//!   extracts in `../shared/data` (a missing one skips a test, but fails it
//!   in CI).
//! - [`cli`]: running `tilepipe` with a configuration and a database.
//! - [`db`]: connecting to a test database, checksumming an import.
//! - [`flex_compare`]: a flex config's tables in two schemas, compared.
//! - [`osm2pgsql`]: Debian's osm2pgsql 1.8 as the reference: running it,
//!   option sets, comparing two schemas' output and middle tables.
//! - [`http`]: plain blocking HTTP/1.1 on loopback.
//! - [`serve`]: [`TestServer`], tilepipe serving in-process with the real
//!   renderer and a one-colour style.
//! - [`multi`]: `tilepipe serve` render nodes on 127.0.0.2, 127.0.0.3…
//!   (with the streaming standbys of [`PgCluster::start_standby`]).
//! - [`varnish`]: Debian's varnishd on a private port and workdir.
//! - [`apache`]: Debian's Apache with mod_tile on a private port.
//! - [`render`]: the project style over a town database, PNG decoding.
//! - [`realdiff`]: a real planet diff's edits replayed on a region.
//!
//! The `tilepipe-testkit` binary offers the same on the command line for
//! the demo and benchmarks.

pub mod apache;
pub mod cli;
pub mod db;
pub mod feedgen;
pub mod feedserver;
pub mod flex_compare;
pub mod hostile;
pub mod http;
pub mod multi;
pub mod osm2pgsql;
pub mod paths;
pub mod pg;
pub mod realdiff;
pub mod render;
pub mod renderd;
pub mod scale;
pub mod serve;
pub mod town;
pub mod varnish;

pub use feedgen::{FeedGenerator, FeedWriter, GeneratedDiff, OsmData};
pub use feedserver::{Fault, FaultTarget, FeedServer};
pub use paths::shared_data;
pub use pg::PgCluster;
pub use renderd::{find_in_path, output_with_stdin, Renderd};
pub use serve::TestServer;
