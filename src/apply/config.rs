//! The `import:` section of the configuration: how OSM data becomes rows.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How OSM data becomes rows (the same settings `tilepipe import` takes as
/// flags; they are stored with the database and every later apply uses
/// the stored ones).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    /// Which output writes the rows (`-O/--output`).
    pub output: Output,
    /// Table name prefix (`--prefix`).
    pub prefix: String,
    /// `-S/--style`: the osm2pgsql style file of the classic output (absent
    /// = the built-in default.style), or the flex output's Lua config.
    pub style: Option<PathBuf>,
    /// Lua tag transform script (`--tag-transform-script`).
    pub tag_transform_script: Option<PathBuf>,
    /// Tags without a column: none, match (`--hstore`) or all (`--hstore-all`).
    pub hstore: crate::apply::style::HstoreMode,
    /// Keep an object only if a real column matched (`--hstore-match-only`).
    pub hstore_match_only: bool,
    /// One MULTIPOLYGON row per relation instead of a row per part (`-G`).
    pub multi_geometry: bool,
    /// Keep `natural=coastline` ways (`--keep-coastlines`).
    pub keep_coastlines: bool,
    /// Threads decoding PBF blocks; 0 = one per CPU.
    pub threads: usize,
    /// Lua states running the flex output's node and way callbacks during
    /// an import; 0 = one per CPU, 1 = every callback in one state, as
    /// osm2pgsql does (for configs whose node or way callbacks keep state;
    /// see `apply::flex::workers`).
    pub lua_workers: usize,
    /// Node locations in this osm2pgsql flat-nodes file instead of the
    /// nodes table (`-F/--flat-nodes`). The import records the path; a
    /// later apply, catchup or run uses the recorded file and refuses to
    /// start if this names another one.
    pub flat_nodes: Option<PathBuf>,
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            output: Output::Pgsql,
            prefix: "planet_osm".into(),
            style: None,
            tag_transform_script: None,
            hstore: crate::apply::style::HstoreMode::None,
            hstore_match_only: false,
            multi_geometry: false,
            keep_coastlines: false,
            threads: 0,
            lua_workers: 0,
            flat_nodes: None,
        }
    }
}

/// osm2pgsql's outputs (`-O/--output`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// The classic output ("pgsql"): four tables shaped by a style file.
    #[default]
    Pgsql,
    /// The flex output: tables and rows defined by a Lua config.
    Flex,
}
