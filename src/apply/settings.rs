//! Everything that shapes an import, stored with the database so that every
//! later apply transforms and writes exactly as the import did.

use super::middle::{MiddleLayout, LEGACY18_MIDDLE_FORMAT, MIDDLE_FORMAT, MIDDLE_FORMAT_PROPERTY};
use super::transform::TransformSettings;
use crate::db::properties;
use postgres::GenericClient;
use serde::{Deserialize, Serialize};

/// The property holding the serialised [`ImportSettings`].
pub const SETTINGS_PROPERTY: &str = "tilepipe_import_settings";

/// The options of `tilepipe import` that later applies must repeat,
/// stored as JSON in `osm2pgsql_properties` ([`SETTINGS_PROPERTY`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportSettings {
    /// Schema of the middle and output tables and of osm2pgsql_properties.
    pub schema: String,
    /// Table name prefix (`planet_osm`); see [`check_prefix`].
    pub prefix: String,
    /// Style, hstore and Lua options: what decides the output rows.
    pub transform: TransformSettings,
    /// The flex output's config; `None` = the classic output, shaped by
    /// `transform`.
    pub flex: Option<super::flex::FlexSettings>,
    /// osm2pgsql's `--flat-nodes FILE`, as an absolute path: node locations
    /// are in this file and there is no nodes table ([`super::flatnodes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flat_nodes: Option<std::path::PathBuf>,
    /// How the middle tables are laid out: tilepipe's own after `tilepipe
    /// import`, osm2pgsql 1.8's after `tilepipe adopt`. Not part of the
    /// JSON: [`load`](Self::load) fills it from [`MIDDLE_FORMAT_PROPERTY`]
    /// and, for the legacy layout, from the tables themselves.
    #[serde(skip)]
    pub middle: MiddleLayout,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            schema: "public".into(),
            prefix: "planet_osm".into(),
            transform: TransformSettings::default(),
            flex: None,
            flat_nodes: None,
            middle: MiddleLayout::Tilepipe,
        }
    }
}

impl ImportSettings {
    /// What osm2pgsql records as `style`: the path, or its default style.
    pub fn style_name(&self) -> String {
        if let Some(flex) = &self.flex {
            return flex.config_path.clone();
        }
        self.transform
            .style_path
            .clone()
            .unwrap_or_else(|| "default.style (built in)".into())
    }

    /// The settings an import stored; an error telling to run `tilepipe
    /// import` when the database holds no finished import.
    pub fn require(
        client: &mut impl GenericClient,
        schema: &str,
    ) -> Result<ImportSettings, super::ApplyError> {
        Self::load(client, schema)?.ok_or_else(|| {
            super::ApplyError::NotImported(format!(
                "the database has no finished tilepipe import in schema {schema:?}: run `tilepipe import` first"
            ))
        })
    }

    /// The settings an import stored, `None` when the database holds no
    /// finished tilepipe import.
    pub fn load(
        client: &mut impl GenericClient,
        schema: &str,
    ) -> Result<Option<ImportSettings>, super::ApplyError> {
        if !properties::table_exists(client, schema)? {
            return Ok(None);
        }
        let Some(text) = properties::read_property(client, schema, SETTINGS_PROPERTY)? else {
            return Ok(None);
        };
        let mut settings: ImportSettings = serde_json::from_str(&text).map_err(|e| {
            super::ApplyError::NotImported(format!(
                "{SETTINGS_PROPERTY} in {schema}.{} is not valid: {e}",
                properties::PROPERTIES_TABLE
            ))
        })?;
        let format = properties::read_property(client, schema, MIDDLE_FORMAT_PROPERTY)?;
        settings.middle = match format.as_deref() {
            Some(MIDDLE_FORMAT) => MiddleLayout::Tilepipe,
            // osm2pgsql 1.8 looks for the bucket index on every run
            // (`check_bucket_index` in middle-pgsql.cpp); so does this.
            Some(LEGACY18_MIDDLE_FORMAT) => {
                match MiddleLayout::detect(client, schema, &settings.prefix)? {
                    Some(layout @ MiddleLayout::Legacy18 { .. }) => layout,
                    _ => {
                        return Err(super::ApplyError::NotImported(format!(
                            "the osm2pgsql 1.8 middle tables {schema}.{prefix}_ways/_rels that \
                             `tilepipe adopt` took over are gone or no longer in osm2pgsql 1.8's \
                             layout: import again, or adopt the database again",
                            prefix = settings.prefix
                        )))
                    }
                }
            }
            _ => {
                return Err(super::ApplyError::NotImported(format!(
                    "the middle tables in schema {schema} have layout {} but this tilepipe needs \
                     layout {MIDDLE_FORMAT} (or an osm2pgsql 1.8 database taken over with \
                     `tilepipe adopt`): import the data again with `tilepipe import`",
                    format
                        .as_deref()
                        .unwrap_or("1 (from before layouts were recorded)")
                )))
            }
        };
        Ok(Some(settings))
    }
}

/// The longest name derived from the prefix: middle.rs's
/// `<prefix>_rels_node_members_idx`.
const LONGEST_SUFFIX: &str = "_rels_node_members_idx";

/// PostgreSQL keeps the first NAMEDATALEN - 1 = 63 bytes of an identifier
/// and drops the rest, so with a long prefix `<prefix>_point` and
/// `<prefix>_polygon` (or two index names) could become one name. A prefix
/// is accepted only if every name made from it fits.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    const MAX_IDENTIFIER_BYTES: usize = 63;
    let max = MAX_IDENTIFIER_BYTES - LONGEST_SUFFIX.len();
    if prefix.is_empty() || prefix.len() > max {
        return Err(format!(
            "must be 1 to {max} bytes long ({} given): PostgreSQL truncates names to 63 bytes and {prefix:?}{LONGEST_SUFFIX} must fit",
            prefix.len()
        ));
    }
    Ok(())
}
