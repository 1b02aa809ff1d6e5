//! `tilepipe import FILE`: load an OSM file into empty tables (replacing
//! what was there): osm2pgsql's classic schema, or the tables of a flex
//! config (`-O flex -S config.lua`).

use crate::apply::adopt::Osm2pgsqlRecord;
use crate::apply::config::Output;
use crate::apply::flex::FlexSettings;
use crate::apply::import::{import_with_threads, ImportThreads};
use crate::apply::middle::MiddleLayout;
use crate::apply::settings::ImportSettings;
use crate::apply::style::HstoreMode;
use crate::apply::transform::TransformSettings;
use crate::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// OSM file: .osm.pbf, .osm or .osm.gz.
    file: PathBuf,
    #[command(flatten)]
    options: ImportOptions,
    /// Threads decoding PBF blocks (default: import.threads, 0 = per CPU).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Lua states running the flex output's node and way callbacks
    /// (default: import.lua_workers, 0 = per CPU; 1 = all in one state, as
    /// osm2pgsql does, for configs whose callbacks keep state).
    #[arg(long, value_name = "N")]
    lua_workers: Option<usize>,
}

/// The options that shape the tables and every later apply, shared with
/// `tilepipe adopt` (which must be given those osm2pgsql was run with).
#[derive(Debug, Clone, clap::Args)]
pub struct ImportOptions {
    /// Output: pgsql (classic schema) or flex (a Lua config as --style).
    #[arg(short = 'O', long, value_name = "OUTPUT")]
    output: Option<Output>,
    /// pgsql: osm2pgsql style file (default: osm2pgsql's default.style, built
    /// in); flex: the Lua config.
    #[arg(short = 'S', long, value_name = "FILE")]
    style: Option<PathBuf>,
    /// Lua tag transform script with osm2pgsql's classic API.
    #[arg(long, value_name = "FILE")]
    tag_transform_script: Option<PathBuf>,
    /// Tags without a column go to the `tags` hstore column (-k).
    #[arg(short = 'k', long, conflicts_with = "hstore_all")]
    hstore: bool,
    /// All tags go to the `tags` hstore column too (-j).
    #[arg(short = 'j', long)]
    hstore_all: bool,
    /// With --hstore/--hstore-all: keep an object only if a real column matched.
    #[arg(long)]
    hstore_match_only: bool,
    /// One MULTIPOLYGON row per multipolygon relation.
    #[arg(short = 'G', long)]
    multi_geometry: bool,
    /// Keep natural=coastline ways.
    #[arg(long)]
    keep_coastlines: bool,
    /// Table name prefix.
    #[arg(short, long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// Node locations in this osm2pgsql flat-nodes file instead of a nodes
    /// table; later updates use it. import: created, or emptied; adopt:
    /// the file osm2pgsql was run with.
    #[arg(short = 'F', long, value_name = "FILE")]
    flat_nodes: Option<PathBuf>,
}

impl ImportOptions {
    /// These options with what osm2pgsql 1.9+ recorded filled in where
    /// they say nothing: `-O` and `--prefix` when not given, `-S` and
    /// `--flat-nodes` when neither given nor set in the config's `import:`
    /// section. Options given are kept, and `tilepipe adopt` checks them
    /// against the record ([`crate::apply::adopt::inspect`]).
    pub fn with_recorded(&self, config: &Config, record: &Osm2pgsqlRecord) -> ImportOptions {
        let mut options = self.clone();
        if options.output.is_none() {
            options.output = match record.output.as_deref() {
                Some("flex") => Some(Output::Flex),
                Some("pgsql") => Some(Output::Pgsql),
                _ => None,
            };
        }
        if options.prefix.is_none() {
            options.prefix.clone_from(&record.prefix);
        }
        // The recorded style is a classic style or a flex config, as the
        // recorded output says: no use to another output.
        let same_output = matches!(
            (options.output, record.output.as_deref()),
            (Some(Output::Flex), Some("flex")) | (Some(Output::Pgsql), Some("pgsql")) | (None, _)
        );
        if same_output && options.style.is_none() && config.import.style.is_none() {
            options.style = record.style.as_ref().map(PathBuf::from);
        }
        if options.flat_nodes.is_none() && config.import.flat_nodes.is_none() {
            options.flat_nodes = record.flat_node_file.as_ref().map(PathBuf::from);
        }
        options
    }

    /// The settings these options and the config's `import:` section
    /// give, with style and Lua files read in.
    pub fn settings(&self, config: &Config) -> anyhow::Result<ImportSettings> {
        let c = &config.import;
        let prefix = self.prefix.clone().unwrap_or_else(|| c.prefix.clone());
        crate::apply::settings::check_prefix(&prefix)
            .map_err(|e| anyhow::anyhow!("--prefix / import.prefix: {e}"))?;
        let style = self.style.clone().or(c.style.clone());
        let (transform, flex) = match self.output.unwrap_or(c.output) {
            Output::Pgsql => (classic_transform(config, self, style)?, None),
            Output::Flex => (
                TransformSettings::default(),
                Some(flex_settings(config, self, style)?),
            ),
        };
        // Absolute, as recorded: updates may run from another directory.
        let flat_nodes = match self.flat_nodes.as_ref().or(c.flat_nodes.as_ref()) {
            Some(path) => Some(std::path::absolute(path).map_err(|e| {
                anyhow::anyhow!("--flat-nodes / import.flat_nodes {}: {e}", path.display())
            })?),
            None => None,
        };
        Ok(ImportSettings {
            schema: config.database.middle_schema.clone(),
            prefix,
            transform,
            flex,
            flat_nodes,
            middle: MiddleLayout::Tilepipe,
        })
    }
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let settings = args.options.settings(config)?;
    let c = &config.import;
    let per_cpu = |n: usize| match n {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let threads = ImportThreads {
        decode: per_cpu(args.threads.unwrap_or(c.threads)),
        lua: per_cpu(args.lua_workers.unwrap_or(c.lua_workers)),
    };
    let db = crate::db::resolve(&config.database.url, &crate::db::ProcessEnv)?;
    info!(
        "importing {} into {}",
        args.file.display(),
        crate::db::describe(&db)
    );
    let summary = import_with_threads(&db, &args.file, &settings, &threads)?;
    if let Some(flex) = &settings.flex {
        // As osm2pgsql, the tables of the config's expire outputs exist
        // from the import on (the tiles come with updates).
        let outputs = flex
            .runtime(crate::apply::flex::runtime::Mode::Create, &settings.schema)?
            .expire_outputs();
        if outputs.iter().any(|o| o.table.is_some()) {
            let mut client = crate::db::connect(&db)?;
            crate::expire::outputs::create_tables(&mut client, &outputs)?;
        }
    }
    let rows: Vec<String> = summary
        .rows
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    info!(
        "imported {} nodes, {} ways, {} relations in {:.2} s (+ {:.2} s indexing): {}",
        summary.nodes,
        summary.ways,
        summary.relations,
        summary.read_time.as_secs_f64(),
        summary.index_time.as_secs_f64(),
        rows.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// The classic output's settings from the flags and `import:`.
fn classic_transform(
    config: &Config,
    args: &ImportOptions,
    style: Option<PathBuf>,
) -> anyhow::Result<TransformSettings> {
    let c = &config.import;
    let path_text = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let script = args
        .tag_transform_script
        .clone()
        .or(c.tag_transform_script.clone());
    let hstore = if args.hstore_all {
        HstoreMode::All
    } else if args.hstore {
        HstoreMode::Match
    } else {
        c.hstore
    };
    let mut transform = TransformSettings {
        style_path: path_text(&style),
        hstore,
        hstore_match_only: args.hstore_match_only || c.hstore_match_only,
        keep_coastlines: args.keep_coastlines || c.keep_coastlines,
        multi_geometry: args.multi_geometry || c.multi_geometry,
        lua_script_path: path_text(&script),
        ..TransformSettings::default()
    };
    // Keep the texts, so applies use this style even if the file changes.
    transform.load_files()?;
    Ok(transform)
}

/// The flex output's settings: the config is required, and the classic
/// output's options mean nothing to it.
fn flex_settings(
    config: &Config,
    args: &ImportOptions,
    style: Option<PathBuf>,
) -> anyhow::Result<FlexSettings> {
    let c = &config.import;
    let classic_only = [
        (
            "--tag-transform-script / import.tag_transform_script",
            args.tag_transform_script.is_some() || c.tag_transform_script.is_some(),
        ),
        (
            "--hstore / --hstore-all / import.hstore",
            args.hstore || args.hstore_all || c.hstore != HstoreMode::None,
        ),
        (
            "--hstore-match-only / import.hstore_match_only",
            args.hstore_match_only || c.hstore_match_only,
        ),
        (
            "-G / import.multi_geometry",
            args.multi_geometry || c.multi_geometry,
        ),
        (
            "--keep-coastlines / import.keep_coastlines",
            args.keep_coastlines || c.keep_coastlines,
        ),
    ];
    if let Some((option, _)) = classic_only.iter().find(|(_, set)| *set) {
        anyhow::bail!("{option} belongs to the pgsql output; a flex config decides that itself");
    }
    let Some(path) = style else {
        anyhow::bail!(
            "the flex output needs its Lua config: -S/--style CONFIG.lua (or import.style)"
        );
    };
    Ok(FlexSettings::from_file(&path)?)
}
