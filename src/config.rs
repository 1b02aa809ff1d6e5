//! The one typed configuration tree, read from `config.yaml`.
//!
//! Every stage owns its section's type (`replication::config`,
//! `apply::config`, `expire::batch`, `render::config`, `serve::config`, and
//! `db` for the shared connection); this module only assembles them and owns
//! the process's own `log` section, so no stage imports it. Unknown keys and
//! bad values are errors that name the key and the line
//! (`deny_unknown_fields` plus the YAML parser's locations). A missing key
//! takes the documented default, which is also what the repository's
//! `config.yaml` spells out. Every section also serialises, so tests build a
//! `Config` in Rust and write it as YAML.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the configuration comes from when `-c` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config.yaml";

/// The whole of `config.yaml`, one field per top-level key; an empty or
/// absent file is `Config::default()`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `database:` the PostgreSQL connection (`-d` overrides its URL).
    pub database: crate::db::DatabaseConfig,
    /// `replication:` the diff feed followed by `run` and `catchup`.
    pub replication: crate::replication::config::ReplicationConfig,
    /// `import:` the osm2pgsql-style import settings (style file, table
    /// prefix, …), stored in the database at import time.
    pub import: crate::apply::config::ImportConfig,
    /// `expire:` which tiles applied changes expire and what is done to
    /// their metatiles.
    pub expire: crate::expire::batch::ExpireConfig,
    /// Map styles the renderer draws and the server offers.
    pub styles: Vec<crate::render::config::StyleConfig>,
    /// `render:` the render workers and queue, and the renderd protocol
    /// sockets.
    pub render: crate::render::config::RenderConfig,
    /// `serve:` the HTTP tile server.
    pub serve: crate::serve::config::ServeConfig,
    /// `log:` the process's log format and filter.
    pub log: LogConfig,
}

/// How log lines are written to stderr (`log.format`, `--log-format`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text for people (the default).
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The `log:` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Human or JSON lines; `--log-format` overrides it.
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `tilepipe::replication=debug,info`
    /// (default `info`); `-v`, `-q` and `RUST_LOG` override it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read (an absent one only when `-c` or
    /// `TILEPIPE_CONFIG` named it).
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid YAML, has an unknown key, or a bad value.
    #[error("{path}: {message}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, naming the key (and the line, for YAML errors).
        message: String,
    },
}

impl Config {
    /// Parses configuration text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = yaml_serde::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Loads `path`. When the file is absent and `required` is false (the
    /// default path was not overridden), the built-in defaults apply.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Checks values serde cannot check by type alone, section by section,
    /// so that nothing configured can panic or overflow later.
    fn validate(&self) -> Result<(), String> {
        self.replication.validate()?;
        crate::apply::settings::check_prefix(&self.import.prefix)
            .map_err(|e| format!("import.prefix: {e}"))?;
        self.serve.validate()?;
        self.expire.validate()?;
        for expiry in &self.expire.styles {
            let drawn = self.styles.iter().find(|s| s.name == expiry.name);
            if let Some(style) = drawn.filter(|s| s.tile_dir != expiry.tile_dir) {
                return Err(format!(
                    "expire.styles[{}].tile_dir {} differs from styles[{}].tile_dir {}: expiry would act on another cache than the one rendered and served",
                    expiry.name,
                    expiry.tile_dir.display(),
                    style.name,
                    style.tile_dir.display()
                ));
            }
        }
        crate::render::config::validate_styles(&self.styles)?;
        self.render.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| format!("log.level: {:?} is not a valid filter: {e}", self.log.level))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Interval;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn repository_config_yaml_is_the_default() {
        let text = include_str!("../config.yaml");
        assert_eq!(parse(text).unwrap(), Config::default());
    }

    /// Tests build a `Config` in Rust and write it as YAML for the binary:
    /// what is written must read back as the same value.
    #[test]
    fn written_config_reads_back_unchanged() {
        let mut config = Config::default();
        let yaml = yaml_serde::to_string(&config).unwrap();
        assert_eq!(parse(&yaml).unwrap(), config);

        config.replication.interval = Some(Interval::Seconds(5));
        config.expire.mode = crate::expire::raster::PolygonMode::Hybrid;
        config.styles.push(crate::render::config::StyleConfig {
            name: "osm".into(),
            xml: "osm.xml".into(),
            tile_dir: "/tmp/tiles".into(),
            ..Default::default()
        });
        let yaml = yaml_serde::to_string(&config).unwrap();
        assert_eq!(parse(&yaml).unwrap(), config);
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# only a comment\n").unwrap(), Config::default());
    }

    #[test]
    fn values_are_read() {
        let c = parse(
            "database:\n  url: postgresql://u@h/gis\nreplication:\n  url: http://127.0.0.1:9/feed\n  interval: hour\n  headers:\n    X-Token: abc\n",
        )
        .unwrap();
        assert_eq!(c.database.url, "postgresql://u@h/gis");
        assert_eq!(c.replication.interval, Some(Interval::Hour));
        assert_eq!(c.replication.headers["X-Token"], "abc");
        assert_eq!(c.replication.max_diff_size_mb, 500.0);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("database:\n  url: x\nreplication:\n  max_diff_sise_mb: 3\n").unwrap_err();
        assert!(err.contains("max_diff_sise_mb"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.starts_with("test.yaml: "), "{err}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        assert_eq!(
            parse("replication:\n  interval: 5\n")
                .unwrap()
                .replication
                .interval,
            Some(Interval::Seconds(5))
        );
        let err = parse("replication:\n  interval: 0\n").unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        let err = parse("replication:\n  interval: weekly\n").unwrap_err();
        assert!(err.contains("weekly"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = parse("replication:\n  timeout_secs: soon\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err = parse("replication:\n  url: ftp://example.com/\n").unwrap_err();
        assert!(err.contains("replication.url"), "{err}");
        let err = parse("log:\n  format: xml\n").unwrap_err();
        assert!(err.contains("xml") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn expiry_acts_on_the_cache_its_style_renders_into() {
        let text = "styles:\n  - name: osm\n    xml: s.xml\n    tile_dir: /a\nexpire:\n  styles:\n    - name: osm\n      tile_dir: /b\n";
        let err = parse(text).unwrap_err();
        assert!(err.contains("expire.styles[osm].tile_dir /b"), "{err}");
        assert!(parse(&text.replace("/b", "/a")).is_ok());
    }

    /// Values that used to panic or overflow at run time (f64 → Duration,
    /// instant + duration, truncated table names) are refused at load,
    /// naming the key.
    #[test]
    fn values_that_would_crash_are_refused_naming_the_key() {
        let prefix60 = "p".repeat(60);
        let cases = [
            ("serve:\n  request_timeout_secs: .inf\n", "serve.request_timeout_secs: must be a finite number of seconds between 0 and 86400"),
            ("serve:\n  request_timeout_secs: .nan\n", "serve.request_timeout_secs:"),
            ("serve:\n  request_timeout_secs: -1\n", "serve.request_timeout_secs:"),
            ("serve:\n  request_timeout_secs: 1e300\n", "serve.request_timeout_secs:"),
            ("serve:\n  missing_request_timeout_secs: .inf\n", "serve.missing_request_timeout_secs:"),
            ("serve:\n  tile_cache_mb: .nan\n", "serve.tile_cache_mb:"),
            ("serve:\n  throttle:\n    tiles: {size: 10, rate: 1e-20}\n", "serve.throttle.tiles.rate:"),
            ("serve:\n  throttle:\n    renders: {size: 10, rate: .inf}\n", "serve.throttle.renders.rate:"),
            ("serve:\n  throttle:\n    renders: {size: 10, rate: -1}\n", "serve.throttle.renders.rate:"),
            ("serve:\n  cache:\n    extended_duration_secs: 18446744073709551615\n", "serve.cache.extended_duration_secs: must be at most"),
            ("serve:\n  cache:\n    duration_dirty_secs: 18446744073709551615\n", "serve.cache.duration_dirty_secs:"),
            ("serve:\n  cache:\n    last_modified_factor: .inf\n", "serve.cache.last_modified_factor:"),
            ("replication:\n  poll_margin_secs: 18446744073709551615\n", "replication.poll_margin_secs:"),
            ("replication:\n  timeout_secs: 18446744073709551615\n", "replication.timeout_secs:"),
            ("replication:\n  max_download_mb: 0\n", "replication.max_download_mb:"),
            ("replication:\n  allow_redirect_hosts: [\"http://x/\"]\n", "replication.allow_redirect_hosts[0]:"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.starts_with(&format!("test.yaml: {expected}")),
                "{text}: {err}"
            );
        }
        // A 60-byte prefix: <prefix>_point and <prefix>_polygon would both
        // be truncated to 63 bytes, and so would the index names.
        let err = parse(&format!("import:\n  prefix: {prefix60}\n")).unwrap_err();
        assert!(
            err.starts_with("test.yaml: import.prefix: must be 1 to 41 bytes"),
            "{err}"
        );
        assert!(parse(&format!("import:\n  prefix: {}\n", "p".repeat(41))).is_ok());
        assert!(parse(
            "serve:\n  request_timeout_secs: 0\n  throttle:\n    tiles: {size: 1, rate: 0}\n"
        )
        .is_ok());
        assert!(parse("replication:\n  allow_redirect_hosts: [mirror.example, \"mirror.example:8080\", \"[::1]:81\"]\n").is_ok());
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_explicit_file_is_not() {
        let missing = Path::new("/nonexistent/tilepipe.yaml");
        assert_eq!(Config::load(missing, false).unwrap(), Config::default());
        let err = Config::load(missing, true).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/tilepipe.yaml"), "{err}");
    }
}
