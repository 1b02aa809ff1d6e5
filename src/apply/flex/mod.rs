//! osm2pgsql's flex output: tables and rows defined by a Lua config
//! (`osm2pgsql -O flex -S config.lua`), as osm2pgsql 1.8 implements it.
//!
//! - [`table`]: the table definitions (`osm2pgsql.define_table`) and
//!   their SQL;
//! - [`value`]: Lua values to column values;
//! - [`runtime`]: the Lua state running the config and its callbacks;
//! - [`output`]: the tables in the database;
//! - [`workers`]: an import's node and way callbacks on several threads;
//! - [`expire`]: the expire outputs of osm2pgsql ≥ 1.9 configs
//!   (`define_expire_output`, a column's `expire`).

pub mod append;
pub mod expire;
pub mod geometry;
pub mod import;
pub mod output;
pub mod runtime;
pub mod table;
pub mod value;
pub mod workers;

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The flex config an import used, stored with the data so that every
/// later apply runs exactly that config, even if the file changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlexSettings {
    /// The config's path as given (`-S`); names it in messages and gives
    /// `osm2pgsql.config_dir`.
    pub config_path: String,
    /// The config's text when imported.
    pub config_text: String,
}

impl FlexSettings {
    /// Reads the config at `path`.
    pub fn from_file(path: &Path) -> Result<FlexSettings, runtime::FlexError> {
        let config_path = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| runtime::FlexError::Read {
            path: config_path.clone(),
            source,
        })?;
        Ok(FlexSettings {
            config_path,
            config_text: String::from_utf8_lossy(&text).into_owned(),
        })
    }

    /// Loads the config into a new Lua state.
    pub fn runtime(
        &self,
        mode: runtime::Mode,
        default_schema: &str,
    ) -> Result<runtime::FlexRuntime, runtime::FlexError> {
        runtime::FlexRuntime::from_source(
            &self.config_text,
            &self.config_path,
            mode,
            default_schema,
        )
    }
}
