//! `tilepipe check`: every start-up self-check of `tilepipe run`, each
//! printed with its result, without starting anything; exit 1 if one
//! fails. An operator validates a changed config (or a new machine) with
//! it before restarting the service, as `apachectl configtest` or `nginx
//! -t` are used.
//!
//! The checks are the ones `run` makes, in its order, through the same
//! functions: [`crate::daemon::Daemon::start`] (database, extensions,
//! import, flat nodes, replication position, instance lock),
//! [`crate::daemon::Daemon::run`] (the feed),
//! [`super::run::check_tile_dir`] and [`crate::services::Services::start`]
//! (styles, HTTP settings and address). A check that depends on a failed
//! one is skipped. Two results are warnings rather than failures, because
//! the running service causes them: the instance lock held by another
//! `run`, and `serve.listen` in use; a third, no stored data bounds, only
//! costs the map page its first view.

use crate::apply::settings::ImportSettings;
use crate::config::Config;
use crate::replication::client::FeedClient;
use crate::replication::position::{read_position, StoredPosition};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
    /// Not run: a check it depends on failed.
    Skip,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }
}

/// Prints results as they come (a slow check shows where it is) and
/// remembers whether one failed.
#[derive(Default)]
struct Report {
    failed: usize,
    warned: usize,
}

impl Report {
    fn line(&mut self, outcome: Outcome, name: &str, detail: impl std::fmt::Display) {
        match outcome {
            Outcome::Fail => self.failed += 1,
            Outcome::Warn => self.warned += 1,
            _ => {}
        }
        let detail = detail.to_string();
        let detail = crate::redact::secrets(&detail);
        println!("{:<4}  {name:<18} {detail}", outcome.label());
    }

    /// Prints an `Ok` line or a `Fail` one with the error's chain; the
    /// value when it passed.
    fn result<T>(&mut self, name: &str, result: anyhow::Result<(T, String)>) -> Option<T> {
        match result {
            Ok((value, detail)) => {
                self.line(Outcome::Ok, name, detail);
                Some(value)
            }
            Err(e) => {
                self.line(Outcome::Fail, name, format!("{e:#}"));
                None
            }
        }
    }

    fn skip(&mut self, name: &str, because: &str) {
        self.line(Outcome::Skip, name, format!("({because})"));
    }
}

/// Prints the one failed line of a config that did not load (the command
/// line is parsed before any command runs); exit 1.
pub fn config_failed(error: &anyhow::Error) -> ExitCode {
    let mut report = Report::default();
    report.line(Outcome::Fail, "config", format!("{error:#}"));
    println!("1 check failed");
    ExitCode::from(1)
}

pub fn run(config: &Config, _args: &Args, source: &str) -> anyhow::Result<ExitCode> {
    let mut report = Report::default();
    report.line(Outcome::Ok, "config", source);
    database_checks(config, &mut report);
    for style in &config.styles {
        let name = format!("tile dir {}", style.name);
        let checked = super::run::check_tile_dir(style)
            .map(|()| ((), style.tile_dir.join(&style.name).display().to_string()));
        report.result(&name, checked);
    }
    style_checks(config, &mut report);
    http_checks(config, &mut report);

    println!(
        "{}",
        match (report.failed, report.warned) {
            (0, 0) => "all checks passed".to_string(),
            (0, w) => format!("all checks passed, {w} warning(s)"),
            (f, _) => format!("{f} check(s) failed"),
        }
    );
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What [`crate::daemon::Daemon::start`] checks, then the feed.
fn database_checks(config: &Config, report: &mut Report) {
    const DEPENDENT: [&str; 7] = [
        "extensions",
        "import",
        "data bounds",
        "flat nodes",
        "replication state",
        "instance lock",
        "replication feed",
    ];
    let connected = report.result(
        "database",
        (|| {
            let db = crate::db::resolve(&config.database.url, &crate::db::ProcessEnv)?;
            let client = crate::db::connect(&db)?;
            Ok(((client, db.clone()), crate::db::describe(&db)))
        })(),
    );
    let Some((mut client, db)) = connected else {
        DEPENDENT
            .iter()
            .for_each(|name| report.skip(name, "no database"));
        return;
    };
    report.result(
        "extensions",
        crate::apply::check_extensions(&mut client)
            .map(|()| ((), "postgis, hstore".to_string()))
            .map_err(Into::into),
    );
    let schema = config.database.middle_schema.as_str();
    let settings = report.result(
        "import",
        ImportSettings::require(&mut client, schema)
            .map(|s| {
                let output = if s.flex.is_some() { "flex" } else { "pgsql" };
                let detail = format!(
                    "schema {schema}, {output} output, prefix {}, style {}",
                    s.prefix,
                    s.style_name()
                );
                (s, detail)
            })
            .map_err(Into::into),
    );
    match &settings {
        Some(_) => match crate::apply::settings::DataBounds::load(&mut client, schema) {
            Ok(Some(bounds)) => report.line(Outcome::Ok, "data bounds", bounds.to_property()),
            Ok(None) => report.line(
                Outcome::Warn,
                "data bounds",
                "none stored: the map page opens on the whole world \
                 (`tilepipe bounds --recompute` measures them)",
            ),
            Err(e) => report.line(Outcome::Fail, "data bounds", e),
        },
        None => report.skip("data bounds", "no import"),
    }
    match &settings {
        Some(settings) => {
            report.result(
                "flat nodes",
                crate::apply::flatnodes::check_configured(
                    settings.flat_nodes.as_deref(),
                    config.import.flat_nodes.as_deref(),
                )
                .map(|()| {
                    let detail = settings.flat_nodes.as_ref().map_or_else(
                        || "none (nodes table)".to_string(),
                        |f| f.display().to_string(),
                    );
                    ((), detail)
                })
                .map_err(Into::into),
            );
        }
        None => report.skip("flat nodes", "no import"),
    }
    let position = match read_position(&mut client, schema) {
        Ok(StoredPosition::Set(position)) => {
            report.line(
                Outcome::Ok,
                "replication state",
                format!(
                    "sequence {} ({}) of {}",
                    position.sequence,
                    crate::replication::state::format_timestamp(position.timestamp),
                    position.base_url
                ),
            );
            Some(position)
        }
        Ok(_) => {
            report.line(
                Outcome::Fail,
                "replication state",
                "replication is not set up; run `tilepipe init` first",
            );
            None
        }
        Err(e) => {
            report.line(Outcome::Fail, "replication state", e);
            None
        }
    };
    // The lock is taken and given back at once (the connection closes);
    // held by another process it is what `run` would stop for, but while
    // the service runs that is expected.
    match crate::daemon::take_instance_lock(&mut client, &db) {
        Ok(Ok(_)) => report.line(
            Outcome::Ok,
            "instance lock",
            "free: no `run` or `catchup` applies to this database",
        ),
        Ok(Err(locked)) => report.line(
            Outcome::Warn,
            "instance lock",
            format!(
                "{} (expected while the service runs; `run` would stop for it)",
                locked.message
            ),
        ),
        Err(e) => report.line(Outcome::Fail, "instance lock", e),
    }
    drop(client);
    let Some(position) = position else {
        report.skip("replication feed", "no replication state");
        return;
    };
    let reached = (|| {
        let feed = FeedClient::from_config(&position.base_url, &config.replication)?;
        let state = super::runtime()?.block_on(feed.latest_state_once())?;
        let behind = state.sequence.saturating_sub(position.sequence);
        Ok((
            (),
            format!(
                "{} reachable, newest sequence {} (the database is {behind} behind)",
                position.base_url, state.sequence
            ),
        ))
    })();
    report.result("replication feed", reached);
}

/// Each style loaded by Mapnik as the renderer loads it (plugins, fonts,
/// the XML, its PostGIS layers), one at a time so a failure names it.
fn style_checks(config: &Config, report: &mut Report) {
    if config.styles.is_empty() {
        report.line(
            Outcome::Ok,
            "styles",
            "none configured: `run` applies and expires only",
        );
        return;
    }
    if let Err(e) = crate::render::config::validate_styles(&config.styles) {
        report.line(Outcome::Fail, "styles", e);
        return;
    }
    let one_thread = crate::render::config::RenderConfig {
        threads: 1,
        ..config.render.clone()
    };
    for style in &config.styles {
        let name = format!("style {}", style.name);
        let loaded =
            crate::render::worker::Renderer::start(std::slice::from_ref(style), &one_thread).map(
                |renderer| {
                    renderer.shutdown();
                    ((), style.xml.display().to_string())
                },
            );
        report.result(&name, loaded.map_err(Into::into));
    }
}

/// The HTTP server's settings, checked by binding it on a free loopback
/// port (the same checks as at start: networks, limits, style names), and
/// `serve.listen` itself.
fn http_checks(config: &Config, report: &mut Report) {
    if config.serve.listen.is_empty() {
        report.line(Outcome::Ok, "http", "serve.listen is empty: no HTTP server");
        return;
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(e) => return report.line(Outcome::Fail, "http", format!("{e:#}")),
    };
    let probe = crate::serve::config::ServeConfig {
        listen: "127.0.0.1:0".into(),
        ..config.serve.clone()
    };
    let bound = runtime.block_on(crate::serve::Server::bind(
        probe,
        config.styles.clone(),
        None,
        std::sync::Arc::new(crate::metrics::Metrics::new()),
    ));
    report.result(
        "http settings",
        bound.map(|_| ((), "networks, limits and style names accepted".to_string())),
    );
    let listen = &config.serve.listen;
    match runtime.block_on(tokio::net::TcpListener::bind(listen)) {
        Ok(_) => report.line(Outcome::Ok, "http listen", format!("{listen} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => report.line(
            Outcome::Warn,
            "http listen",
            format!("{listen} is in use (expected while the service runs)"),
        ),
        Err(e) => report.line(
            Outcome::Fail,
            "http listen",
            format!("cannot listen on {listen}: {e}"),
        ),
    }
}
