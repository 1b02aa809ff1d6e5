//! Tag transforms: from an object's tags to "is it written, with which
//! tags, as area or line, also into roads" — osm2pgsql 1.8's
//! `tagtransform_t` with its two implementations, the built-in rules
//! ([`ClassicTransform`]) and a Lua script
//! ([`crate::apply::lua::LuaTransform`], `--tag-transform-script`).
//!
//! Flow for the caller (osm2pgsql's `output_pgsql_t`):
//! - node: [`TagTransform::node`] → a `_point` row;
//! - way: [`TagTransform::way`] → a polygon when [`Filtered::polygon`] and
//!   the way is closed, otherwise line rows (and roads rows when
//!   [`Filtered::roads`]);
//! - relation: [`TagTransform::relation`] with the member ways found in the
//!   middle → lines and/or polygons per [`RelationKind`], `osm_id` = −id;
//! - then [`row_values`] turns the tags into column values for each row.
//!
//! [`TransformSettings`] records every option that affects this, so that
//! an apply uses exactly what the import used.

mod classic;
mod row;
pub mod value;

pub use classic::{add_z_order, ClassicTransform};
pub use row::{row_values, ColumnValues, RowValues};
pub use value::ColumnValue;

use crate::apply::lua::LuaTransform;
use crate::apply::style::{HstoreMode, HstoreOptions, Style, StyleError};
use crate::osm::Tags;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Decides, from tags alone, what an object becomes. Implementations keep
/// state (a Lua interpreter) and are not `Send`: build one per thread from
/// the [`TransformSettings`], as osm2pgsql clones its transform per thread.
pub trait TagTransform {
    /// A copy for another thread, when the transform can be copied and
    /// sent (the classic rules can; a Lua state cannot).
    fn fork(&self) -> Option<Box<dyn TagTransform + Send>> {
        None
    }

    /// `None` = the node is not written.
    fn node(&mut self, tags: &Tags) -> Result<Option<Filtered>, TransformError>;

    /// `None` = the way is not written.
    fn way(&mut self, tags: &Tags) -> Result<Option<Filtered>, TransformError>;

    /// A relation with its member ways. `members` are the way members found
    /// in the middle, in member order (a way listed twice appears twice),
    /// with their raw tags and roles; node and relation members are left
    /// out. `None` = nothing is written: also for relation types other
    /// than route/multipolygon/boundary and when `members` is empty (as
    /// osm2pgsql, which then does not call the member filter).
    ///
    /// The steps of osm2pgsql's `pgsql_process_relation`: the type check,
    /// [`relation_tags`](Self::relation_tags), then
    /// [`relation_members`](Self::relation_members).
    fn relation(
        &mut self,
        tags: &Tags,
        members: &[MemberTags<'_>],
    ) -> Result<Option<FilteredRelation>, TransformError> {
        let relation_type = classic::tag_value(tags, "type");
        if !relation_type.is_some_and(|t| PROCESSED_RELATION_TYPES.contains(&t)) {
            return Ok(None);
        }
        let Some(relation_tags) = self.relation_tags(tags)? else {
            return Ok(None);
        };
        if members.is_empty() {
            return Ok(None);
        }
        self.relation_members(&relation_tags, members)
    }

    /// The first pass over a processed relation's own tags (osm2pgsql's
    /// `filter_tags` for relations): the surviving tags, `None` = dropped.
    fn relation_tags(&mut self, tags: &Tags) -> Result<Option<Tags>, TransformError>;

    /// The output of a relation whose tags [`relation_tags`](Self::relation_tags)
    /// kept, given at least one member way (osm2pgsql's
    /// `filter_rel_member_tags`). `None` = nothing is written.
    fn relation_members(
        &mut self,
        relation_tags: &Tags,
        members: &[MemberTags<'_>],
    ) -> Result<Option<FilteredRelation>, TransformError>;
}

/// The relation types osm2pgsql's pgsql output processes at all.
pub const PROCESSED_RELATION_TYPES: [&str; 3] = ["route", "multipolygon", "boundary"];

/// A kept node or way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// Surviving tags in order, with pseudo-tags: `z_order` on ways (never
    /// written to hstore), `area=yes` on coastline ways.
    pub tags: Tags,
    /// A closed way becomes a polygon (always false for nodes).
    pub polygon: bool,
    /// Line rows are copied to `_roads` (always false for nodes).
    pub roads: bool,
}

/// What a relation is built as (osm2pgsql's `make_boundary` and
/// `make_polygon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    /// Merged member lines into `_line` (and `_roads`); no polygon.
    Route,
    /// Lines into `_line`/`_roads` and polygons into `_polygon`.
    Boundary,
    /// Polygons only.
    Multipolygon,
}

impl RelationKind {
    /// From the two flags a transform returns; `make_polygon` wins.
    pub fn from_flags(make_boundary: bool, make_polygon: bool) -> RelationKind {
        match (make_boundary, make_polygon) {
            (_, true) => RelationKind::Multipolygon,
            (true, false) => RelationKind::Boundary,
            (false, false) => RelationKind::Route,
        }
    }

    /// Whether the relation's member lines go to `_line` (and `_roads`).
    pub fn writes_lines(self) -> bool {
        self != RelationKind::Multipolygon
    }

    /// Whether the relation is assembled into `_polygon` rows.
    pub fn writes_polygons(self) -> bool {
        self != RelationKind::Route
    }
}

/// A kept relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredRelation {
    /// Output tags: the relation's filtered tags without `type`, plus
    /// `route_name`, `lcn`…`nwn_ref`, `route_pref_color` on routes (classic)
    /// and the `z_order` pseudo-tag.
    pub tags: Tags,
    /// What the relation is built as.
    pub kind: RelationKind,
    /// Line rows are copied to `_roads`.
    pub roads: bool,
}

/// One way member of a relation as the transforms see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberTags<'a> {
    /// The way's raw tags.
    pub tags: &'a Tags,
    /// Its role in the relation (`outer`, `inner`, … or empty).
    pub role: &'a str,
}

/// Why a tag transform could not be built or failed on an object.
#[derive(Debug, Error)]
pub enum TransformError {
    /// The style file is missing or wrong.
    #[error(transparent)]
    Style(#[from] StyleError),
    /// The Lua script file could not be read.
    #[error("cannot read Lua tag transform script {path}: {source}")]
    ReadScript {
        /// The script's path, as given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The script does not load or lacks one of the four functions.
    #[error("Lua tag transform {script}: {message}")]
    LuaLoad {
        /// The script's name ([`LuaTransform::script`]).
        script: String,
        /// Lua's error, or the missing function.
        message: String,
    },
    /// A call failed or returned something osm2pgsql would reject.
    #[error("Lua tag transform {script}, function {function}: {message}")]
    LuaCall {
        /// The script's name ([`LuaTransform::script`]).
        script: String,
        /// The Lua function called (`filter_tags_way`, …).
        function: &'static str,
        /// Lua's error, or what was wrong with the results.
        message: String,
    },
}

/// Every option that shapes the output tables' content, stored (serialised)
/// with the database at import so that applies transform identically.
/// Texts are kept, not just paths: a style edited after the import must
/// not change how diffs are applied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TransformSettings {
    /// `--style` path as given; `None` = the built-in default style.
    pub style_path: Option<String>,
    /// The style file's contents when imported; `None` = read `style_path`
    /// (or use the built-in default).
    pub style_text: Option<String>,
    /// `-k/--hstore` or `-j/--hstore-all`: which tags go to the `tags`
    /// column.
    pub hstore: HstoreMode,
    /// `--hstore-match-only`.
    pub hstore_match_only: bool,
    /// `-z` prefixes.
    pub hstore_columns: Vec<String>,
    /// `--keep-coastlines`.
    pub keep_coastlines: bool,
    /// `-G/--multi-geometry`: multipolygons stay one row (used by the
    /// geometry code, recorded here with the rest).
    pub multi_geometry: bool,
    /// `--tag-transform-script` path as given; names the script in errors.
    pub lua_script_path: Option<String>,
    /// The script's contents when imported; `None` = read the path.
    pub lua_script_text: Option<String>,
}

impl TransformSettings {
    /// Reads the style and script files named by the paths into the text
    /// fields that are still empty, so the settings are self-contained.
    pub fn load_files(&mut self) -> Result<(), TransformError> {
        if let (Some(path), None) = (&self.style_path, &self.style_text) {
            let text = std::fs::read(path).map_err(|source| StyleError::Read {
                file: path.clone(),
                source,
            })?;
            self.style_text = Some(String::from_utf8_lossy(&text).into_owned());
        }
        if let (Some(path), None) = (&self.lua_script_path, &self.lua_script_text) {
            let text = std::fs::read(path).map_err(|source| TransformError::ReadScript {
                path: path.clone(),
                source,
            })?;
            self.lua_script_text = Some(String::from_utf8_lossy(&text).into_owned());
        }
        Ok(())
    }

    /// The style with the hstore options applied.
    pub fn style(&self) -> Result<Style, TransformError> {
        let style = match (&self.style_text, &self.style_path) {
            (Some(text), path) => Style::parse(text, path.as_deref().unwrap_or("style"))?,
            (None, Some(path)) => Style::from_file(Path::new(path))?,
            (None, None) => Style::default(),
        };
        Ok(style.with_hstore(HstoreOptions {
            mode: self.hstore,
            match_only: self.hstore_match_only,
            columns: self.hstore_columns.clone(),
        })?)
    }

    /// Whether a Lua script replaces the classic rules.
    pub fn uses_lua(&self) -> bool {
        self.lua_script_path.is_some() || self.lua_script_text.is_some()
    }

    /// Builds the transform these settings describe over `style` (from
    /// [`TransformSettings::style`], shared with the row writer).
    pub fn build(&self, style: Arc<Style>) -> Result<Box<dyn TagTransform>, TransformError> {
        if !self.uses_lua() {
            return Ok(Box::new(ClassicTransform::new(style, self.keep_coastlines)));
        }
        let name = self.lua_script_path.as_deref().unwrap_or("script.lua");
        let transform = match &self.lua_script_text {
            Some(text) => LuaTransform::from_source(text, name)?,
            None => LuaTransform::from_file(Path::new(name))?,
        };
        Ok(Box::new(transform))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_kind_flags() {
        assert_eq!(RelationKind::from_flags(false, false), RelationKind::Route);
        assert_eq!(
            RelationKind::from_flags(true, false),
            RelationKind::Boundary
        );
        assert_eq!(
            RelationKind::from_flags(false, true),
            RelationKind::Multipolygon
        );
        assert_eq!(
            RelationKind::from_flags(true, true),
            RelationKind::Multipolygon
        );
    }

    #[test]
    fn settings_round_trip_and_build() {
        let settings = TransformSettings {
            hstore: HstoreMode::Match,
            hstore_columns: vec!["name:".into()],
            style_text: Some("node,way name text linear\nway z_order int4 linear\n".into()),
            style_path: Some("my.style".into()),
            ..TransformSettings::default()
        };
        let json = serde_json::to_string(&settings).unwrap();
        let back: TransformSettings = serde_json::from_str(&json).unwrap();
        assert_eq!(back, settings);
        // Fields added later default when reading older settings.
        let old: TransformSettings = serde_json::from_str(r#"{"hstore":"all"}"#).unwrap();
        assert_eq!(old.hstore, HstoreMode::All);
        let style = Arc::new(settings.style().unwrap());
        assert_eq!(style.hstore().columns, vec!["name:".to_string()]);
        let mut transform = settings.build(style).unwrap();
        let tags = vec![("foo".to_string(), "bar".to_string())];
        assert!(transform.node(&tags).unwrap().is_some());
    }

    #[test]
    fn settings_errors_name_the_file() {
        let settings = TransformSettings {
            style_text: Some("node name text polgon\n".into()),
            style_path: Some("my.style".into()),
            ..TransformSettings::default()
        };
        assert_eq!(
            settings.style().unwrap_err().to_string(),
            "my.style:1: unknown flag \"polgon\""
        );
        let mut missing = TransformSettings {
            lua_script_path: Some("/nonexistent/x.lua".into()),
            ..TransformSettings::default()
        };
        let err = missing.load_files().unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read Lua tag transform script /nonexistent/x.lua"),
            "{err}"
        );
    }
}
