//! Loading a style's Mapnik XML with the database it should read.
//!
//! A Mapnik style names its PostgreSQL connection inside every PostGIS
//! datasource (`<Parameter name="dbname">gis</Parameter>`, sometimes host,
//! port, user). tilepipe points a style at its own database without
//! editing the file: when the style has a connection ([`StyleConfig::
//! database`], by default `database.url`), the XML text is rewritten before
//! Mapnik parses it. In every `<Datasource>` whose `type` is `postgis` (or
//! that inherits, through `base="..."`, from a named PostGIS datasource
//! template), the `host`, `port`, `dbname`, `user` and `password`
//! parameters are removed and replaced by the connection's. Everything else
//! (tables, SQL, entities, comments) is passed through as it is.
//!
//! With more than ten render threads the PostGIS connection pool is sized
//! `threads + 2` (`max_size`) unless the style sets it, as renderd does.
//!
//! [`StyleConfig::database`]: super::config::StyleConfig::database

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Why a style's XML could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StyleError {
    /// The file could not be read.
    #[error("cannot read style {path}: {source}")]
    Read {
        /// The style's XML file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The XML is malformed where the rewrite reads it.
    #[error("style {path}: XML error at byte {position}: {message}")]
    Xml {
        /// The style's XML file.
        path: PathBuf,
        /// Byte offset of the error in the file.
        position: u64,
        /// The XML parser's message.
        message: String,
    },
    /// The style's connection string does not parse.
    #[error("style database connection: {0}")]
    Database(#[from] crate::db::DbError),
}

/// The connection parameters written into PostGIS datasources, as Mapnik's
/// PostGIS plugin names them. A `None` is left out of the datasource, so
/// libpq's default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgisParams {
    /// Host name, or the directory of a Unix socket.
    pub host: Option<String>,
    /// TCP port (or Unix socket suffix), as text.
    pub port: Option<String>,
    /// Database name.
    pub dbname: Option<String>,
    /// Role to connect as.
    pub user: Option<String>,
    /// Password, written into the XML text Mapnik parses (never to disk).
    pub password: Option<String>,
}

/// Parameters replaced in every PostGIS datasource.
const CONNECTION_KEYS: [&str; 5] = ["host", "port", "dbname", "user", "password"];

impl PostgisParams {
    /// From a libpq URL or conninfo string; what it leaves out comes from
    /// the `PG*` environment, as for tilepipe's own connections.
    pub fn from_url(url: &str) -> Result<PostgisParams, StyleError> {
        let config = crate::db::resolve(url, &crate::db::ProcessEnv)?;
        Ok(Self::from_config(&config))
    }

    /// From resolved connection settings (the first host and port).
    pub fn from_config(config: &postgres::Config) -> PostgisParams {
        let host = config.get_hosts().first().map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        });
        PostgisParams {
            host,
            port: config.get_ports().first().map(u16::to_string),
            dbname: config.get_dbname().map(str::to_string),
            user: config.get_user().map(str::to_string),
            password: config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        }
    }

    fn pairs(&self) -> Vec<(&'static str, &str)> {
        CONNECTION_KEYS
            .iter()
            .zip([
                &self.host,
                &self.port,
                &self.dbname,
                &self.user,
                &self.password,
            ])
            .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
            .collect()
    }
}

/// Reads a style file and, with `database`, points its PostGIS datasources
/// at that connection (see the module documentation). `threads` sizes the
/// connection pool above ten threads.
pub fn load_style_xml(
    path: &Path,
    database: Option<&str>,
    threads: usize,
) -> Result<String, StyleError> {
    let text = std::fs::read_to_string(path).map_err(|source| StyleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let params = database.map(PostgisParams::from_url).transpose()?;
    let pool = (threads > 10).then(|| (threads + 2).to_string());
    if params.is_none() && pool.is_none() {
        return Ok(text);
    }
    rewrite_postgis(&text, params.as_ref(), pool.as_deref()).map_err(|(position, message)| {
        StyleError::Xml {
            path: path.to_path_buf(),
            position,
            message,
        }
    })
}

/// A `<Parameter name="...">` element being copied or dropped.
fn parameter_name(e: &BytesStart) -> Option<String> {
    if e.name().as_ref() != b"Parameter" {
        return None;
    }
    e.try_get_attribute("name")
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn attribute(e: &BytesStart, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// One `<Datasource>` element, buffered until its end tag.
struct Datasource {
    start: Event<'static>,
    name: Option<String>,
    base: Option<String>,
    /// The events inside, each tagged with the parameter it belongs to.
    body: Vec<(Option<String>, Event<'static>)>,
    /// Set while inside a `<Parameter>`: its name.
    current: Option<String>,
    /// Text of the `type` parameter.
    kind: String,
    has_pool_size: bool,
}

/// Rewrites the PostGIS datasources of a Mapnik XML text. Errors carry the
/// byte position and quick-xml's message.
pub fn rewrite_postgis(
    xml: &str,
    params: Option<&PostgisParams>,
    pool_size: Option<&str>,
) -> Result<String, (u64, String)> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(false);
    let mut writer = Writer::new(Vec::with_capacity(xml.len() + 1024));
    let replaced: Vec<(&str, &str)> = params.map(PostgisParams::pairs).unwrap_or_default();
    let mut postgis_templates: HashSet<String> = HashSet::new();
    let mut open: Option<Datasource> = None;
    let err = |reader: &Reader<&[u8]>, e: &dyn std::fmt::Display| {
        (reader.buffer_position(), e.to_string())
    };
    loop {
        let event = reader.read_event().map_err(|e| err(&reader, &e))?;
        if matches!(event, Event::Eof) {
            break;
        }
        let event = event.into_owned();
        let Some(ds) = open.as_mut() else {
            match &event {
                Event::Start(e) if e.name().as_ref() == b"Datasource" => {
                    open = Some(Datasource {
                        name: attribute(e, "name"),
                        base: attribute(e, "base"),
                        start: event.clone(),
                        body: Vec::new(),
                        current: None,
                        kind: String::new(),
                        has_pool_size: false,
                    });
                }
                _ => writer.write_event(event).map_err(|e| err(&reader, &e))?,
            }
            continue;
        };
        match &event {
            Event::Start(e) => {
                if let Some(name) = parameter_name(e) {
                    ds.has_pool_size |= name == "max_size";
                    ds.current = Some(name);
                }
                ds.body.push((ds.current.clone(), event));
            }
            Event::Empty(e) => {
                let name = parameter_name(e);
                ds.has_pool_size |= name.as_deref() == Some("max_size");
                ds.body.push((name.or_else(|| ds.current.clone()), event));
            }
            Event::Text(t) if ds.current.as_deref() == Some("type") => {
                ds.kind.push_str(&String::from_utf8_lossy(t.as_ref()));
                ds.body.push((ds.current.clone(), event));
            }
            Event::CData(t) if ds.current.as_deref() == Some("type") => {
                ds.kind.push_str(&String::from_utf8_lossy(t.as_ref()));
                ds.body.push((ds.current.clone(), event));
            }
            Event::End(e) if e.name().as_ref() == b"Parameter" => {
                ds.body.push((ds.current.take(), event));
            }
            Event::End(e) if e.name().as_ref() == b"Datasource" => {
                let ds = open.take().expect("inside a datasource");
                let own_postgis = ds.kind.trim() == "postgis";
                if own_postgis {
                    if let Some(name) = &ds.name {
                        postgis_templates.insert(name.clone());
                    }
                }
                let inherits = ds.kind.trim().is_empty()
                    && ds
                        .base
                        .as_ref()
                        .is_some_and(|b| postgis_templates.contains(b));
                let rewrite = own_postgis || inherits;
                writer.write_event(ds.start).map_err(|e| err(&reader, &e))?;
                for (param, inner) in ds.body {
                    let dropped = rewrite
                        && param
                            .as_deref()
                            .is_some_and(|p| replaced.iter().any(|(k, _)| *k == p));
                    if !dropped {
                        writer.write_event(inner).map_err(|e| err(&reader, &e))?;
                    }
                }
                // A datasource inheriting from a PostGIS template loses its
                // own connection keys and takes the template's.
                if own_postgis {
                    let mut extra: Vec<(&str, &str)> = replaced.clone();
                    if let (Some(size), false) = (pool_size, ds.has_pool_size) {
                        extra.push(("max_size", size));
                    }
                    for (key, value) in extra {
                        let mut start = BytesStart::new("Parameter");
                        start.push_attribute(("name", key));
                        writer
                            .write_event(Event::Start(start))
                            .and_then(|()| writer.write_event(Event::Text(BytesText::new(value))))
                            .and_then(|()| {
                                writer.write_event(Event::End(BytesEnd::new("Parameter")))
                            })
                            .map_err(|e| err(&reader, &e))?;
                    }
                }
                writer.write_event(event).map_err(|e| err(&reader, &e))?;
            }
            _ => ds.body.push((ds.current.clone(), event)),
        }
    }
    if open.is_some() {
        return Err((reader.buffer_position(), "unclosed <Datasource>".into()));
    }
    String::from_utf8(writer.into_inner()).map_err(|e| (0, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE Map [ <!ENTITY dbname "gis"> ]>
<Map srs="epsg:3857">
  <!-- a comment -->
  <Datasource name="osm">
    <Parameter name="type">postgis</Parameter>
    <Parameter name="dbname">&dbname;</Parameter>
    <Parameter name="host">old-host</Parameter>
  </Datasource>
  <Layer name="roads">
    <Datasource base="osm">
      <Parameter name="table"><![CDATA[(SELECT way FROM planet_osm_line WHERE x < 3) AS t]]></Parameter>
    </Datasource>
  </Layer>
  <Layer name="own-db">
    <Datasource base="osm">
      <Parameter name="dbname">elsewhere</Parameter>
      <Parameter name="table">planet_osm_point</Parameter>
    </Datasource>
  </Layer>
  <Layer name="carto">
    <Datasource>
      <Parameter name="type"><![CDATA[postgis]]></Parameter>
      <Parameter name="dbname"><![CDATA[gis]]></Parameter>
      <Parameter name="table">planet_osm_polygon</Parameter>
    </Datasource>
  </Layer>
  <Layer name="file">
    <Datasource>
      <Parameter name="type">shape</Parameter>
      <Parameter name="file">water.shp</Parameter>
      <Parameter name="host">kept</Parameter>
    </Datasource>
  </Layer>
</Map>
"#;

    fn params() -> PostgisParams {
        PostgisParams {
            host: Some("/tmp/pg sock".into()),
            port: Some("5433".into()),
            dbname: Some("tiles".into()),
            user: Some("osm".into()),
            password: None,
        }
    }

    #[test]
    fn postgis_datasources_get_the_connection() {
        let out = rewrite_postgis(XML, Some(&params()), None).unwrap();
        // Template: old host and dbname gone, new ones in.
        assert!(
            !out.contains("old-host") && !out.contains("&dbname;"),
            "{out}"
        );
        assert_eq!(
            out.matches("<Parameter name=\"dbname\">tiles</Parameter>")
                .count(),
            2
        );
        assert_eq!(
            out.matches("<Parameter name=\"host\">/tmp/pg sock</Parameter>")
                .count(),
            2
        );
        assert_eq!(
            out.matches("<Parameter name=\"port\">5433</Parameter>")
                .count(),
            2
        );
        assert!(!out.contains("name=\"password\""));
        // The layer inheriting from the template needs nothing of its own.
        let roads = &out[out.find("name=\"roads\"").unwrap()..out.find("name=\"carto\"").unwrap()];
        assert!(!roads.contains("dbname"), "{roads}");
        assert!(roads.contains("<![CDATA[(SELECT way FROM planet_osm_line WHERE x < 3) AS t]]>"));
        // One that inherits loses its own connection keys.
        assert!(!out.contains("elsewhere"), "{out}");
        assert!(out.contains("<Parameter name=\"table\">planet_osm_point</Parameter>"));
        // Non-PostGIS datasources, the doctype and comments are untouched.
        assert!(out.contains("<Parameter name=\"host\">kept</Parameter>"));
        assert!(out.contains("<!ENTITY dbname \"gis\">"));
        assert!(out.contains("<!-- a comment -->"));
    }

    #[test]
    fn pool_size_only_when_asked_and_not_set() {
        let out = rewrite_postgis(XML, None, Some("18")).unwrap();
        assert_eq!(out.matches("name=\"max_size\">18<").count(), 2, "{out}");
        assert!(out.contains("old-host"));
        let again = rewrite_postgis(&out, None, Some("20")).unwrap();
        assert!(!again.contains(">20<"));
        assert_eq!(rewrite_postgis(XML, None, None).unwrap(), XML);
    }

    #[test]
    fn params_from_url() {
        let p = PostgisParams::from_url("postgresql://u:secret@127.0.0.1:5999/gis").unwrap();
        assert_eq!(p.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.port.as_deref(), Some("5999"));
        assert_eq!(p.dbname.as_deref(), Some("gis"));
        assert_eq!(p.user.as_deref(), Some("u"));
        assert_eq!(p.password.as_deref(), Some("secret"));
    }

    #[test]
    fn broken_xml_is_an_error() {
        assert!(rewrite_postgis("<Map><Datasource></Map>", Some(&params()), None).is_err());
    }
}
