//! The command-line interface: global options, logging, and one module per
//! command. Commands only wire stages together; the work lives in the
//! stage modules.

mod adopt;
mod apply;
mod bounds;
mod catchup;
mod check;
mod expire_tiles;
mod import;
mod init;
mod render;
mod render_expired;
mod run;
mod serve;
mod status;

use crate::config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "tilepipe",
    version,
    about = "One daemon from OpenStreetMap replication diff to fresh map tile",
    max_term_width = 100
)]
struct Cli {
    /// Configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "TILEPIPE_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    /// Database connection (libpq URL or conninfo); overrides database.url.
    #[arg(short, long = "database", global = true, value_name = "URL")]
    database: Option<String>,
    /// Log format; overrides log.format.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// More log output (-v debug, -vv trace); overrides log.level.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import an OSM file (.osm.pbf, .osm, .osm.gz) into the osm2pgsql classic schema.
    Import(import::Args),
    /// Apply one OsmChange file (.osc, .osc.gz) in one transaction.
    Apply(apply::Args),
    /// Print the data's bounding box (min_lon,min_lat,max_lon,max_lat); --recompute measures it again.
    Bounds(bounds::Args),
    /// Take over a database osm2pgsql (1.8, 1.9+/2.x) imported with --slim, in place (same options as import).
    Adopt(adopt::Args),
    /// Run every start-up self-check of `run` and print each result, starting nothing; exit 1 if one fails.
    Check(check::Args),
    /// Apply everything the feed has published since the stored position, then exit.
    Catchup(catchup::Args),
    /// Print the tiles the tagged objects of an OSM file expire (z/x/y lines, like osm2pgsql-expire).
    ExpireTiles(expire_tiles::Args),
    /// Set the replication start point: from a date, a PBF header or a sequence.
    Init(init::Args),
    /// The daemon: follow the feed and apply each batch as it is published.
    Run(run::Args),
    /// Show server and local replication state and the lag between them.
    Status(status::Args),
    /// Re-render, touch or delete the metatiles z/x/y lines on stdin cover (render_expired).
    RenderExpired(render_expired::Args),
    /// Pre-render the metatiles of a zoom range for a box or the world (render_list).
    Render(render::Args),
    /// The tile server with the renderer and no replication (renderd + mod_tile's role).
    Serve(serve::Args),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(e) if matches!(cli.command, Command::Check(_)) => return check::config_failed(&e),
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("tilepipe: {}", crate::redact::secrets(&message));
            return ExitCode::from(1);
        }
    };
    init_logging(&cli, &config);
    let result = match &cli.command {
        Command::Import(args) => import::run(&config, args),
        Command::Apply(args) => apply::run(&config, args),
        Command::Adopt(args) => adopt::run(&config, args),
        Command::Bounds(args) => bounds::run(&config, args),
        Command::Catchup(args) => catchup::run(&config, args),
        Command::Check(args) => check::run(&config, args, &config_source(&cli)),
        Command::ExpireTiles(args) => expire_tiles::run(&config, args),
        Command::Init(args) => init::run(&config, args),
        Command::Run(args) => run::run(&config, args),
        Command::Status(args) => status::run(&config, args),
        Command::RenderExpired(args) => render_expired::run(&config, args),
        Command::Render(args) => render::run(&config, args),
        Command::Serve(args) => serve::run(&config, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let (path, required) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut config = Config::load(&path, required)?;
    if let Some(url) = &cli.database {
        config.database.url = url.clone();
    }
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    crate::render::config::fill_databases(&mut config.styles, &config.database.url);
    Ok(config)
}

/// Where the configuration came from, for `tilepipe check`.
fn config_source(cli: &Cli) -> String {
    match &cli.config {
        Some(path) => format!("{} parsed", path.display()),
        None if std::path::Path::new(DEFAULT_CONFIG_PATH).is_file() => {
            format!("{DEFAULT_CONFIG_PATH} parsed")
        }
        None => format!("no {DEFAULT_CONFIG_PATH}: built-in defaults"),
    }
}

fn init_logging(cli: &Cli, config: &Config) {
    use tracing_subscriber::EnvFilter;
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn".to_string(),
        (false, 0) => config.log.level.clone(),
        (false, 1) => "debug".to_string(),
        (false, _) => "trace".to_string(),
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Every log line is scrubbed of passwords and tokens, whatever
        // formatted it.
        .with_writer(crate::redact::RedactingStderr);
    match config.log.format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// A current-thread runtime for commands whose only async work is network
/// I/O. (The synchronous `postgres` client must not run inside it.)
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Connects to the configured database.
pub(crate) fn connect_db(config: &Config) -> anyhow::Result<postgres::Client> {
    let pg = crate::db::resolve(&config.database.url, &crate::db::ProcessEnv)?;
    Ok(crate::db::connect(&pg)?)
}
