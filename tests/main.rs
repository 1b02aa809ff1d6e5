//! The root crate's integration tests as one test binary: Mapnik, Lua and
//! the whole crate are linked once instead of once per file. Each file of
//! `tests/` is a module here; `cargo test --test integration serve_http::`
//! runs one file's tests. Shared helpers live in `tilepipe-testkit`.
//!
//! Four files stay binaries of their own (see `Cargo.toml`): they measure
//! this process's resident memory (`/proc/self/status`), which tests
//! running alongside in other threads would disturb: `expire_memory`,
//! `render_protocol_limits`, `replication_follow` (the gzip bomb) and
//! `serve_overload`.

mod adopt;
mod alert_rules;
mod apply_hostile;
mod apply_import;
mod apply_tables;
mod catchup;
mod cli_check;
mod cli_replication;
mod daemon;
mod data_bounds;
mod debian_package;
mod expire_actions;
mod expire_nodes;
mod expire_osm2pgsql;
mod expire_pipeline;
mod expire_schedule;
mod expire_style_aware;
mod expire_tiles_cli;
mod flat_nodes;
mod flex_expire_outputs;
mod flex_osm2pgsql;
mod geom_osm2pgsql_cases;
mod geom_postgis;
mod geom_random_osm2pgsql;
mod geom_reference;
mod metatile_store;
mod middle_legacy;
mod multi_node;
mod osc_files;
mod osm2pgsql_equivalence;
mod render_cli;
mod render_protocol_server;
mod render_worker;
mod renderd_client;
mod renderd_protocol;
mod renderd_real;
mod replication_position;
mod run_end_to_end;
mod serve_browser;
mod serve_http;
mod serve_interop;
mod serve_purge;
mod style_change;
mod tile_cache_limit;
mod transform_reference;
mod validity_vs_postgis;
