//! Everything that shapes an import, stored with the database so that every
//! later apply transforms and writes exactly as the import did.

use super::middle::{
    MiddleLayout, LEGACY18_MIDDLE_FORMAT, MIDDLE_FORMAT, MIDDLE_FORMAT_PROPERTY, NEW_MIDDLE_FORMAT,
};
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
    /// import`, osm2pgsql's (1.8 legacy, or 1.9+/2.x new) after `tilepipe
    /// adopt`. Not part of the JSON: [`load`](Self::load) fills it from
    /// [`MIDDLE_FORMAT_PROPERTY`] and, for osm2pgsql's layouts, from the
    /// tables themselves.
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
            // Likewise for the new format's bucket index.
            Some(NEW_MIDDLE_FORMAT) => {
                match MiddleLayout::detect(client, schema, &settings.prefix)? {
                    Some(layout @ MiddleLayout::Osm2pgsqlNew { .. }) => layout,
                    _ => {
                        return Err(super::ApplyError::NotImported(format!(
                            "the osm2pgsql 1.9+/2.x middle tables {schema}.{prefix}_ways/_rels \
                             that `tilepipe adopt` took over are gone or no longer in \
                             osm2pgsql's new layout: import again, or adopt the database again",
                            prefix = settings.prefix
                        )))
                    }
                }
            }
            _ => {
                return Err(super::ApplyError::NotImported(format!(
                    "the middle tables in schema {schema} have layout {} but this tilepipe needs \
                     layout {MIDDLE_FORMAT} (or an osm2pgsql database taken over with \
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

/// The property holding the data's bounding box (see [`DataBounds`]).
pub const DATA_BOUNDS_PROPERTY: &str = "tilepipe_data_bounds";

/// The latitude Web Mercator ends at (EPSG:3857's square world).
const MERCATOR_MAX_LAT: f64 = 85.051_128_779_806_59;

/// Where the data is: the smallest longitude/latitude box around every
/// node location the import read, widened by each later apply's new and
/// moved nodes (never narrowed: deletions leave it as it is until
/// [`DataBounds::recompute`] measures the tables again). It is what the
/// map page opens on and what TileJSON's `bounds` and `center` say.
///
/// Stored in `osm2pgsql_properties` ([`DATA_BOUNDS_PROPERTY`]) as
/// `min_lon,min_lat,max_lon,max_lat`, the order of osmium's `--bbox` and
/// of TileJSON 3.0.0's `bounds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataBounds {
    /// Westmost longitude, degrees.
    pub min_lon: f64,
    /// Southmost latitude, degrees.
    pub min_lat: f64,
    /// Eastmost longitude, degrees.
    pub max_lon: f64,
    /// Northmost latitude, degrees.
    pub max_lat: f64,
}

impl DataBounds {
    /// The box around one location.
    pub fn point(lon: f64, lat: f64) -> DataBounds {
        DataBounds {
            min_lon: lon,
            min_lat: lat,
            max_lon: lon,
            max_lat: lat,
        }
    }

    /// Grows `bounds` (which may be empty) to take in a location.
    pub fn extend(bounds: &mut Option<DataBounds>, lon: f64, lat: f64) {
        if !(lon.is_finite() && lat.is_finite()) {
            return;
        }
        match bounds {
            None => *bounds = Some(DataBounds::point(lon, lat)),
            Some(b) => {
                b.min_lon = b.min_lon.min(lon);
                b.min_lat = b.min_lat.min(lat);
                b.max_lon = b.max_lon.max(lon);
                b.max_lat = b.max_lat.max(lat);
            }
        }
    }

    /// The box around both.
    pub fn union(self, other: DataBounds) -> DataBounds {
        DataBounds {
            min_lon: self.min_lon.min(other.min_lon),
            min_lat: self.min_lat.min(other.min_lat),
            max_lon: self.max_lon.max(other.max_lon),
            max_lat: self.max_lat.max(other.max_lat),
        }
    }

    /// Clipped to the Web Mercator world (what a tile map can show).
    pub fn clamped_to_mercator(self) -> DataBounds {
        let lon = |v: f64| v.clamp(-180.0, 180.0);
        let lat = |v: f64| v.clamp(-MERCATOR_MAX_LAT, MERCATOR_MAX_LAT);
        DataBounds {
            min_lon: lon(self.min_lon),
            min_lat: lat(self.min_lat),
            max_lon: lon(self.max_lon),
            max_lat: lat(self.max_lat),
        }
    }

    /// The middle of the box, `(lon, lat)`, in Web Mercator (so the map
    /// centred there shows as much of the box north as south).
    pub fn center(&self) -> (f64, f64) {
        let b = self.clamped_to_mercator();
        let y = (mercator_y(b.min_lat) + mercator_y(b.max_lat)) / 2.0;
        ((b.min_lon + b.max_lon) / 2.0, inverse_mercator_y(y))
    }

    /// The highest zoom at which the whole box fits in a `width` ×
    /// `height` pixel view of 256-pixel tiles (Leaflet's `getBoundsZoom`
    /// does the same sum); a box of one point fits at every zoom, so
    /// callers clamp the result to their style's range.
    pub fn fitting_zoom(&self, width: f64, height: f64) -> u32 {
        let b = self.clamped_to_mercator();
        // The box's share of the world's width and height, 0..1.
        let dx = (b.max_lon - b.min_lon) / 360.0;
        let dy = (mercator_y(b.max_lat) - mercator_y(b.min_lat)) / (2.0 * std::f64::consts::PI);
        let fit = |pixels: f64, share: f64| {
            if share <= 0.0 {
                f64::INFINITY
            } else {
                (pixels / 256.0 / share).log2()
            }
        };
        let zoom = fit(width, dx).min(fit(height, dy)).floor();
        zoom.clamp(0.0, crate::tile::MAX_ZOOM as f64) as u32
    }

    /// The property text, `min_lon,min_lat,max_lon,max_lat` (7 decimals,
    /// OSM's precision).
    pub fn to_property(&self) -> String {
        format!(
            "{:.7},{:.7},{:.7},{:.7}",
            self.min_lon, self.min_lat, self.max_lon, self.max_lat
        )
    }

    /// Parses [`to_property`](Self::to_property)'s text; `None` when it is
    /// not four finite numbers with min ≤ max.
    pub fn from_property(text: &str) -> Option<DataBounds> {
        let values: Vec<f64> = text
            .split(',')
            .map(|v| v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<_>>()?;
        let [min_lon, min_lat, max_lon, max_lat] = values[..] else {
            return None;
        };
        (min_lon <= max_lon && min_lat <= max_lat).then_some(DataBounds {
            min_lon,
            min_lat,
            max_lon,
            max_lat,
        })
    }

    /// The stored bounds; `None` before an import recorded them (e.g. a
    /// database imported by an older tilepipe or by osm2pgsql: run
    /// `tilepipe bounds --recompute`).
    pub fn load(
        client: &mut impl GenericClient,
        schema: &str,
    ) -> Result<Option<DataBounds>, super::ApplyError> {
        if !properties::table_exists(client, schema)? {
            return Ok(None);
        }
        let text = properties::read_property(client, schema, DATA_BOUNDS_PROPERTY)?;
        match text {
            None => Ok(None),
            Some(text) => match DataBounds::from_property(&text) {
                Some(bounds) => Ok(Some(bounds)),
                None => Err(super::ApplyError::NotImported(format!(
                    "{DATA_BOUNDS_PROPERTY} in {schema}.{} is {text:?}, not \
                     min_lon,min_lat,max_lon,max_lat: run `tilepipe bounds --recompute`",
                    properties::PROPERTIES_TABLE
                ))),
            },
        }
    }

    /// Stores the bounds (in the caller's transaction, if any).
    pub fn store(
        &self,
        client: &mut impl GenericClient,
        schema: &str,
    ) -> Result<(), super::ApplyError> {
        let text = self.to_property();
        properties::write(client, schema, &[(DATA_BOUNDS_PROPERTY, &text)])?;
        Ok(())
    }

    /// Widens the stored bounds by the locations of the nodes `changes`
    /// create or move, in the caller's transaction: one property read and
    /// at most one write per batch. Returns the bounds now stored.
    pub fn widen_stored(
        client: &mut impl GenericClient,
        schema: &str,
        changes: &crate::osm::changeset::ChangeSet,
    ) -> Result<Option<DataBounds>, super::ApplyError> {
        use crate::osm::changeset::Action;
        use crate::osm::Object;
        let mut added = None;
        for change in changes.iter() {
            if let (Action::Create | Action::Modify, Object::Node(node)) =
                (change.action, &change.object)
            {
                if let Some(location) = node.location {
                    DataBounds::extend(&mut added, location.lon, location.lat);
                }
            }
        }
        let stored = DataBounds::load(client, schema)?;
        let Some(added) = added else {
            return Ok(stored);
        };
        let widened = stored.map_or(added, |s| s.union(added));
        if stored != Some(widened) {
            widened.store(client, schema)?;
        }
        Ok(Some(widened))
    }

    /// Measures the bounds again from the geometry columns of the output
    /// tables in `schema` (PostGIS `ST_Extent` of each, transformed to
    /// EPSG:4326): a full scan of every table, for after large deletions
    /// or for a database imported without bounds. `None` when the tables
    /// hold no geometry.
    pub fn recompute(
        client: &mut impl GenericClient,
        schema: &str,
    ) -> Result<Option<DataBounds>, super::ApplyError> {
        let columns = client.query(
            "SELECT f_table_name::text, f_geometry_column::text, srid FROM geometry_columns \
             WHERE f_table_schema = $1 AND srid > 0 ORDER BY 1, 2",
            &[&schema],
        )?;
        let mut bounds: Option<DataBounds> = None;
        for row in columns {
            let (table, column, srid): (String, String, i32) = (row.get(0), row.get(1), row.get(2));
            // The extent's box corners, transformed: Web Mercator and
            // lon/lat boxes map onto each other corner to corner.
            let sql = format!(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM \
                 (SELECT ST_Transform(ST_SetSRID(ST_Extent({col})::geometry, {srid}), 4326) AS e \
                 FROM {schema}.{table}) AS extent WHERE e IS NOT NULL",
                col = crate::db::quote_ident(&column),
                schema = crate::db::quote_ident(schema),
                table = crate::db::quote_ident(&table),
            );
            if let Some(row) = client.query_opt(&sql, &[])? {
                let found = DataBounds {
                    min_lon: row.get(0),
                    min_lat: row.get(1),
                    max_lon: row.get(2),
                    max_lat: row.get(3),
                };
                bounds = Some(bounds.map_or(found, |b| b.union(found)));
            }
        }
        Ok(bounds)
    }
}

/// Web Mercator y of a latitude, in radians of the sphere.
fn mercator_y(lat: f64) -> f64 {
    (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
        .tan()
        .ln()
}

fn inverse_mercator_y(y: f64) -> f64 {
    (2.0 * y.exp().atan() - std::f64::consts::FRAC_PI_2).to_degrees()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_text_round_trips_and_rejects_nonsense() {
        let b = DataBounds {
            min_lon: 24.9,
            min_lat: 60.1,
            max_lon: 25.0,
            max_lat: 60.2,
        };
        assert_eq!(
            b.to_property(),
            "24.9000000,60.1000000,25.0000000,60.2000000"
        );
        assert_eq!(DataBounds::from_property(&b.to_property()), Some(b));
        assert_eq!(DataBounds::from_property("1,2,3"), None);
        assert_eq!(DataBounds::from_property("3,2,1,4"), None);
        assert_eq!(DataBounds::from_property("a,b,c,d"), None);
    }

    #[test]
    fn center_and_zoom_fit_the_box() {
        // Helsinki's centre, about 6.7 km across: zoom 13 fits it in a
        // 1024 × 768 view (four 256-pixel tiles at z13 and 60° north span
        // about 9.8 km, three about 7.3 km tall).
        let b = DataBounds {
            min_lon: 24.88,
            min_lat: 60.14,
            max_lon: 25.0,
            max_lat: 60.2,
        };
        let (lon, lat) = b.center();
        assert!((lon - 24.94).abs() < 1e-9);
        assert!(lat > 60.14 && lat < 60.2);
        assert_eq!(b.fitting_zoom(1024.0, 768.0), 13);
        let world = DataBounds {
            min_lon: -180.0,
            min_lat: -90.0,
            max_lon: 180.0,
            max_lat: 90.0,
        };
        assert_eq!(world.fitting_zoom(256.0, 256.0), 0);
        assert_eq!(world.clamped_to_mercator().max_lat, MERCATOR_MAX_LAT);
        assert_eq!(
            DataBounds::point(1.0, 2.0).fitting_zoom(800.0, 600.0),
            u32::from(crate::tile::MAX_ZOOM)
        );
    }
}
