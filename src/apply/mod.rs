//! The apply stage: imports an OSM file into PostGIS in osm2pgsql's classic
//! "pgsql" output schema and applies change sets to it, each batch in one
//! transaction together with its replication position.
//!
//! Pieces (the behaviour of osm2pgsql 1.8's pgsql output and slim middle,
//! `output-pgsql.cpp` and `middle-pgsql.cpp`):
//! - [`style`]: osm2pgsql `.style` files and the built-in default style;
//! - [`transform`]: tag filtering (classic rules or a Lua tag transform),
//!   z_order, polygon-or-line and roads decisions;
//! - [`geom`]: geometries in EPSG:3857 (lines, split lines, polygons,
//!   multipolygons, merged routes) and their EWKB encoding.

pub mod adopt;
pub mod append;
pub mod config;
pub mod flatnodes;
pub mod flex;
pub mod geom;
pub mod import;
mod import_stores;
pub mod lua;
pub mod middle;
pub mod output;
pub mod pgcopy;
pub mod process;
pub mod settings;
pub mod style;
pub mod transform;

use crate::db::properties::PropertiesError;
use crate::db::DbError;

/// Why an import or apply failed. Every variant names what it was working
/// on (file, table, object); nothing of a failed apply is committed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Connecting to the database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Any other statement: the extension check, the import's bookkeeping.
    #[error("database: {0}")]
    Postgres(#[from] postgres::Error),
    /// Reading or writing `osm2pgsql_properties`.
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    /// A middle table.
    #[error(transparent)]
    Middle(#[from] middle::MiddleError),
    /// An output table.
    #[error(transparent)]
    Output(#[from] output::OutputError),
    /// Reading the OSM file being imported.
    #[error(transparent)]
    Input(#[from] crate::osm::input::InputError),
    /// Loading the style or the Lua tag transform.
    #[error(transparent)]
    Transform(#[from] transform::TransformError),
    /// Transforming one object's tags.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    /// The flex config failed to load or run.
    #[error(transparent)]
    Flex(#[from] flex::runtime::FlexError),
    /// A flex table statement or COPY failed.
    #[error(transparent)]
    FlexOutput(#[from] flex::output::FlexOutputError),
    /// PostGIS or hstore is not installed in the database.
    #[error("{0}")]
    MissingExtension(String),
    /// The database holds no finished import this tilepipe can apply to.
    #[error("{0}")]
    NotImported(String),
    /// The import stopped: a table writer quit or got rows out of order.
    #[error("import aborted: {0}")]
    Aborted(String),
}

/// Checks that PostGIS and hstore are installed in the database.
pub fn check_extensions(client: &mut postgres::Client) -> Result<(), ApplyError> {
    let installed: Vec<String> = client
        .query(
            "SELECT extname::text FROM pg_extension WHERE extname IN ('postgis', 'hstore')",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&str> = ["postgis", "hstore"]
        .into_iter()
        .filter(|e| !installed.iter().any(|i| i == e))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApplyError::MissingExtension(format!(
        "the database lacks the extension(s) {}: run {} as a superuser",
        missing.join(", "),
        missing
            .iter()
            .map(|e| format!("CREATE EXTENSION {e};"))
            .collect::<Vec<_>>()
            .join(" ")
    )))
}

/// SQL raising the session's `work_mem` and `maintenance_work_mem` for an
/// import's table finishing and index builds (never lowering what the
/// server is set to):
/// with PostgreSQL's defaults (4 MB, 64 MB) the clustering sort of a
/// region's polygon table spills to disk and the index builds run in
/// small batches; in memory the polygon sort of Liechtenstein x10 took
/// 85 ms instead of 141 ms. Both outputs' finishing and the middle's
/// index builds run it first.
pub(crate) const BUILD_MEMORY_SQL: &str = "
    SELECT set_config('work_mem', greatest(setting::bigint, 262144)::text || 'kB', false)
      FROM pg_settings WHERE name = 'work_mem';
    SELECT set_config('maintenance_work_mem', greatest(setting::bigint, 524288)::text || 'kB', false)
      FROM pg_settings WHERE name = 'maintenance_work_mem';
";
