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

pub mod append;
pub mod config;
pub mod flex;
pub mod geom;
pub mod import;
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
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database: {0}")]
    Postgres(#[from] postgres::Error),
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    #[error(transparent)]
    Middle(#[from] middle::MiddleError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error(transparent)]
    Input(#[from] crate::osm::input::InputError),
    #[error(transparent)]
    Transform(#[from] transform::TransformError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error("{0}")]
    MissingExtension(String),
    #[error("{0}")]
    NotImported(String),
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
