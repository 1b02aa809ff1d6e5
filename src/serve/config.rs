//! Serve configuration (the `serve:` section of `config.yaml`).

use serde::Deserialize;

/// The HTTP tile server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSettings {
    /// Listen address; empty = no HTTP server.
    pub listen: String,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: "127.0.0.1:8080".into(),
        }
    }
}
