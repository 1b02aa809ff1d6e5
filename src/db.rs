//! PostgreSQL connection settings, resolved the way libpq users expect.
//!
//! `database.url` (or `-d`) may be a URL or a conninfo string; whatever it
//! leaves out is filled from the standard `PG*` environment variables and
//! then libpq's own defaults, so `tilepipe` connects where `psql` would.
//!
//! Also what every stage shares about the database: [`connect`] (and
//! [`describe`], the target named in errors with no password), the
//! [`properties`] table, and [`quote_ident`].

use postgres::config::Host;
use postgres::{Client, Config, NoTls};
use std::str::FromStr;
use std::time::Duration;

/// The `database:` section of the configuration, shared by every stage.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// libpq URL (`postgresql://user@host:port/db`) or conninfo
    /// (`host=... dbname=...`); the `PG*` environment variables fill what it
    /// leaves out.
    pub url: String,
    /// Schema of the middle tables and of `osm2pgsql_properties`.
    pub middle_schema: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            middle_schema: "public".into(),
        }
    }
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// `database.url` (or `-d`) is neither a URL nor a conninfo string.
    #[error("invalid database connection string {text:?}: {source}")]
    BadUrl {
        /// The text given, its password hidden.
        text: String,
        /// The parser's error.
        source: postgres::Error,
    },
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL ({target}): {source}")]
    Connect {
        /// Where it tried: [`describe`]'s text.
        target: String,
        /// The connection error.
        source: postgres::Error,
    },
}

/// Environment lookup, injectable so tests need not touch the real
/// process environment.
pub trait Env {
    /// The variable's value; `None` when unset or empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// Builds connection settings from a URL or conninfo string plus `env`.
pub fn resolve(text: &str, env: &dyn Env) -> Result<Config, DbError> {
    let mut config = if text.trim().is_empty() {
        Config::new()
    } else {
        Config::from_str(text).map_err(|source| DbError::BadUrl {
            text: crate::redact::secrets(text).into_owned(),
            source,
        })?
    };
    if config.get_hosts().is_empty() {
        match env.var("PGHOST") {
            Some(hosts) => {
                for host in hosts.split(',') {
                    config.host(host);
                }
            }
            None => {
                // libpq's compiled-in default on Debian is the local socket.
                if std::path::Path::new("/var/run/postgresql").exists() {
                    config.host_path("/var/run/postgresql");
                } else {
                    config.host("localhost");
                }
            }
        }
    }
    // The URL parser fills in 5432 for a host without a port, so whether a
    // port was given is read from the text itself.
    if !has_explicit_port(text) {
        if let Some(port) = env.var("PGPORT").and_then(|p| p.parse::<u16>().ok()) {
            let hosts = config.get_hosts().len().max(1);
            config = replace_ports(config, port, hosts);
        }
    }
    if config.get_user().is_none() {
        let user = env
            .var("PGUSER")
            .or_else(|| env.var("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_password().is_none() {
        if let Some(password) = env.var("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        let dbname = env
            .var("PGDATABASE")
            .or_else(|| config.get_user().map(str::to_string));
        if let Some(dbname) = dbname {
            config.dbname(&dbname);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(&env.var("PGAPPNAME").unwrap_or_else(|| "tilepipe".into()));
    }
    if config.get_options().is_none() {
        // NOTICEs such as "table does not exist, skipping" are noise in
        // tilepipe's log.
        config.options("-c client_min_messages=warning");
    }
    if config.get_connect_timeout().is_none() {
        let secs = env
            .var("PGCONNECT_TIMEOUT")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(30);
        config.connect_timeout(Duration::from_secs(secs));
    }
    Ok(config)
}

/// Whether a URL's authority or a conninfo string names a port.
fn has_explicit_port(text: &str) -> bool {
    let text = text.trim();
    if let Some((_, rest)) = text.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        // Strip IPv6 literals, whose colons are not port separators.
        let mut bare = String::new();
        let mut in_brackets = false;
        for c in hosts.chars() {
            match c {
                '[' => in_brackets = true,
                ']' => in_brackets = false,
                c if !in_brackets => bare.push(c),
                _ => {}
            }
        }
        bare.contains(':')
    } else {
        text.split_whitespace()
            .any(|kv| kv.trim_start().starts_with("port") && kv.contains('='))
    }
}

/// `Config` can only append ports, so rebuild it with the settings tilepipe
/// uses (hosts, user, password, database, options, application name,
/// timeout) and the new port for every host.
fn replace_ports(config: Config, port: u16, count: usize) -> Config {
    let mut rebuilt = Config::new();
    for host in config.get_hosts() {
        match host {
            Host::Tcp(h) => rebuilt.host(h),
            Host::Unix(p) => rebuilt.host_path(p),
        };
    }
    for _ in 0..count {
        rebuilt.port(port);
    }
    if let Some(user) = config.get_user() {
        rebuilt.user(user);
    }
    if let Some(password) = config.get_password() {
        rebuilt.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        rebuilt.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        rebuilt.options(options);
    }
    if let Some(name) = config.get_application_name() {
        rebuilt.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        rebuilt.connect_timeout(*timeout);
    }
    rebuilt
}

/// A short description of where a config points, for messages (never the
/// password).
pub fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or("?"),
        host,
        port,
        config.get_dbname().unwrap_or("?")
    )
}

/// Connects (without TLS: tilepipe talks to a database on its own host or
/// private network; put a TLS-terminating proxy in between otherwise).
pub fn connect(config: &Config) -> Result<Client, DbError> {
    config.connect(NoTls).map_err(|source| DbError::Connect {
        target: describe(config),
        source,
    })
}

/// The `osm2pgsql_properties(property, value)` table, where osm2pgsql 2.x
/// and tilepipe record import settings and the replication position.
pub mod properties {
    use super::quote_ident;
    use postgres::GenericClient;

    /// The table's name (in `database.middle_schema`), as osm2pgsql
    /// names it.
    pub const PROPERTIES_TABLE: &str = "osm2pgsql_properties";

    /// A query on the properties table failed.
    #[derive(Debug, thiserror::Error)]
    #[error("database error on {table}: {source}")]
    pub struct PropertiesError {
        /// `schema.osm2pgsql_properties`.
        pub table: String,
        /// The database's error.
        #[source]
        pub source: postgres::Error,
    }

    fn table_name(schema: &str) -> String {
        format!("{}.{}", quote_ident(schema), quote_ident(PROPERTIES_TABLE))
    }

    fn db_error(schema: &str) -> impl Fn(postgres::Error) -> PropertiesError + '_ {
        move |source| PropertiesError {
            table: format!("{schema}.{PROPERTIES_TABLE}"),
            source,
        }
    }

    /// Whether the table exists in `schema` (it does once osm2pgsql 2.x or
    /// `tilepipe import` ran).
    pub fn table_exists(
        client: &mut impl GenericClient,
        schema: &str,
    ) -> Result<bool, PropertiesError> {
        Ok(client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2)",
                &[&schema, &PROPERTIES_TABLE],
            )
            .map_err(db_error(schema))?
            .get(0))
    }

    /// Creates the table if missing (same definition as osm2pgsql).
    pub fn ensure_table(
        client: &mut impl GenericClient,
        schema: &str,
    ) -> Result<(), PropertiesError> {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (property TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
                table_name(schema)
            ))
            .map_err(db_error(schema))
    }

    /// One property, `None` when absent.
    pub fn read_property(
        client: &mut impl GenericClient,
        schema: &str,
        property: &str,
    ) -> Result<Option<String>, PropertiesError> {
        let row = client
            .query_opt(
                &format!(
                    "SELECT value FROM {} WHERE property = $1",
                    table_name(schema)
                ),
                &[&property],
            )
            .map_err(db_error(schema))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Upserts properties, as osm2pgsql does (`ON CONFLICT DO UPDATE`).
    pub fn write(
        client: &mut impl GenericClient,
        schema: &str,
        properties: &[(&str, &str)],
    ) -> Result<(), PropertiesError> {
        let statement = format!(
            "INSERT INTO {} (property, value) VALUES ($1, $2) \
             ON CONFLICT (property) DO UPDATE SET value = EXCLUDED.value",
            table_name(schema)
        );
        for (property, value) in properties {
            client
                .execute(&statement, &[property, value])
                .map_err(db_error(schema))?;
        }
        Ok(())
    }

    /// Deletes a property if present.
    pub fn remove(
        client: &mut impl GenericClient,
        schema: &str,
        property: &str,
    ) -> Result<(), PropertiesError> {
        client
            .execute(
                &format!("DELETE FROM {} WHERE property = $1", table_name(schema)),
                &[&property],
            )
            .map_err(db_error(schema))?;
        Ok(())
    }
}

/// Quotes an SQL identifier (schema or table name).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, &'static str>);
    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    #[test]
    fn env_fills_what_the_url_leaves_out() {
        let env = FakeEnv(HashMap::from([
            ("PGHOST", "db.example"),
            ("PGPORT", "5433"),
            ("PGUSER", "osm"),
            ("PGPASSWORD", "secret"),
            ("PGDATABASE", "gis"),
        ]));
        let c = resolve("", &env).unwrap();
        assert_eq!(c.get_hosts(), &[Host::Tcp("db.example".into())]);
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_user(), Some("osm"));
        assert_eq!(c.get_password(), Some(&b"secret"[..]));
        assert_eq!(c.get_dbname(), Some("gis"));

        let c = resolve("postgresql://render@10.0.0.1/tiles", &env).unwrap();
        assert_eq!(c.get_hosts(), &[Host::Tcp("10.0.0.1".into())]);
        assert_eq!(c.get_user(), Some("render"));
        assert_eq!(c.get_dbname(), Some("tiles"));
        assert_eq!(c.get_ports(), &[5433], "port still from PGPORT");

        let c = resolve("host=/tmp dbname=x", &env).unwrap();
        assert_eq!(c.get_hosts(), &[Host::Unix("/tmp".into())]);
        assert_eq!(c.get_dbname(), Some("x"));
        assert_eq!(c.get_user(), Some("osm"));
    }

    #[test]
    fn database_defaults_to_user_name() {
        let env = FakeEnv(HashMap::from([("USER", "alice")]));
        let c = resolve("postgresql://127.0.0.1:5432", &env).unwrap();
        assert_eq!(c.get_user(), Some("alice"));
        assert_eq!(c.get_dbname(), Some("alice"));
    }

    #[test]
    fn bad_url_is_an_error_naming_it() {
        let err = resolve("postgresql://host:notaport/db", &FakeEnv(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgresql://host:notaport/db"), "{err}");
    }
}
