//! The serve stage: HTTP tiles with mod_tile's semantics.
//!
//! - [`config`]: the `serve:` section of `config.yaml`.

pub mod config;
