//! `tilepipe-testkit`: the test kit on the command line, for the demo and
//! benchmarks.
//!
//! - `pg start|stop|url --dir DIR`: a private PostgreSQL + PostGIS cluster
//!   that outlives the command (unlike the clusters tests start, which die
//!   with their process).
//! - `feed generate`: writes a fixture feed of N diffs over an extract
//!   (optionally of given sizes, and ending with a city-wide vandalism
//!   diff).
//! - `scale`: a benchmark region, an extract repeated N times side by side,
//!   written as OSM PBF.
//! - `feed serve`: serves a feed directory over HTTP on 127.0.0.1. With
//!   `--publish-every`, the feed grows while it is watched, in one of two
//!   ways: an existing directory is revealed one diff at a time (start
//!   state first), or, given `--pbf`, each next diff is generated on the
//!   fly and published. One command covers both the demo (live map
//!   changes, indefinitely) and benchmarks (a fixed pre-generated feed),
//!   so there is no separate `feed live`.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tilepipe::osm::osc_write::write_osc;
use tilepipe::osm::pbf_header::read_pbf_header;
use tilepipe::replication::feed::sequence_path;
use tilepipe::replication::state::parse_timestamp;
use tilepipe::replication::ReplicationState;
use tilepipe_testkit::feedgen::{
    feed_range, FeedGenerator, FeedWriter, GeneratedDiff, OsmData, GENERATOR,
};
use tilepipe_testkit::scale::{self, Bbox};
use tilepipe_testkit::{FeedServer, PgCluster};

#[derive(Parser)]
#[command(
    name = "tilepipe-testkit",
    about = "Private PostGIS clusters and fixture replication feeds"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A private PostgreSQL 15 + PostGIS cluster in a directory.
    #[command(subcommand)]
    Pg(PgCommand),
    /// Fixture replication feeds.
    #[command(subcommand)]
    Feed(FeedCommand),
    /// A benchmark region: an extract repeated COPIES times side by side
    /// (shifted coordinates, offset ids), written as OSM PBF. Prints a JSON
    /// summary (grid, id offset, boxes of copy 0 and of the region).
    Scale(ScaleArgs),
}

#[derive(Args)]
struct ScaleArgs {
    /// The extract (.osm.pbf, .osm or .osm.gz).
    #[arg(long, required_unless_present = "synthetic_town")]
    input: Option<PathBuf>,
    /// Use the test kit's synthetic town instead of an extract.
    #[arg(long, conflicts_with = "input")]
    synthetic_town: bool,
    #[arg(long, default_value_t = 1)]
    copies: u32,
    /// The PBF file to write.
    #[arg(long)]
    out: PathBuf,
    /// Replication base URL for the header; default: the input's.
    #[arg(long)]
    replication_url: Option<String>,
    /// Replication sequence for the header; default: the input's.
    #[arg(long)]
    replication_sequence: Option<u64>,
    /// Replication timestamp for the header (ISO 8601); default: the
    /// input's.
    #[arg(long)]
    replication_timestamp: Option<String>,
    /// Renumber the extract's ids densely (1, 2, 3… per type) before
    /// copying it, so that many copies keep ids small enough for a
    /// flat-nodes file (see `scale::renumber`).
    #[arg(long)]
    dense_ids: bool,
}

#[derive(Subcommand)]
enum PgCommand {
    /// Starts the cluster in DIR (initialising it on first use) and leaves
    /// it running; prints the URL of DATABASE, created with PostGIS and
    /// hstore if missing.
    Start {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "tilepipe")]
        database: String,
    },
    /// Stops the cluster in DIR (fast shutdown).
    Stop {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Prints the URL of DATABASE on the cluster in DIR.
    Url {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "tilepipe")]
        database: String,
    },
}

#[derive(Subcommand)]
enum FeedCommand {
    /// Writes a feed of COUNT generated diffs over an extract to OUT.
    Generate {
        #[arg(long)]
        pbf: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Number of diffs (default: one per --sizes entry).
        #[arg(long, required_unless_present = "sizes")]
        count: Option<usize>,
        /// Edits per diff, MIN or MIN-MAX (default 20-60).
        #[arg(long, value_name = "MIN[-MAX]")]
        changes_per_diff: Option<String>,
        /// One diff per entry, with that many edits each (e.g.
        /// 10,100,1000); replaces --count.
        #[arg(long, value_delimiter = ',', conflicts_with = "count")]
        sizes: Vec<usize>,
        /// End with a vandalism diff: one node in five moved and every
        /// highway renamed inside --vandalism-bbox (default: everywhere).
        #[arg(long)]
        vandalism: bool,
        #[arg(long, value_name = "W,S,E,N", requires = "vandalism")]
        vandalism_bbox: Option<String>,
        #[command(flatten)]
        generation: Generation,
    },
    /// Serves a feed directory over HTTP on 127.0.0.1.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        /// Port on 127.0.0.1; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Publish one more diff every SECS seconds, starting from the
        /// feed's first state.
        #[arg(long, value_name = "SECS")]
        publish_every: Option<f64>,
        /// Generate each next diff over this extract instead of revealing
        /// existing ones (needs --publish-every). An existing feed in DIR
        /// made with the same extract, seed and start is continued.
        #[arg(long)]
        pbf: Option<PathBuf>,
        /// With --pbf: stop generating after this many diffs in total.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        generation: Generation,
        /// Fail this fraction of requests with random faults.
        #[arg(long, default_value_t = 0.0)]
        fault_rate: f64,
        #[arg(long, default_value_t = 1)]
        fault_seed: u64,
    },
}

#[derive(Args)]
struct Generation {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sequence of the extract; default: the PBF header's, else 1.
    #[arg(long)]
    start_sequence: Option<u64>,
    /// Timestamp of the extract (ISO 8601); default: the PBF header's,
    /// else now.
    #[arg(long)]
    start_time: Option<String>,
    #[arg(long, default_value_t = 60)]
    interval_secs: u64,
}

impl Generation {
    fn start_state(&self, pbf: &Path) -> Result<ReplicationState> {
        let header = read_pbf_header(pbf).ok().unwrap_or_default();
        let timestamp = match &self.start_time {
            Some(text) => parse_timestamp(text)
                .with_context(|| format!("--start-time {text:?} is not an ISO 8601 timestamp"))?,
            None => header.timestamp.unwrap_or_else(now_to_the_second),
        };
        Ok(ReplicationState {
            sequence: self.start_sequence.or(header.sequence).unwrap_or(1),
            timestamp,
        })
    }

    fn generator(&self, pbf: &Path, start: ReplicationState) -> Result<FeedGenerator> {
        let data = OsmData::from_pbf(pbf)?;
        eprintln!(
            "loaded {} nodes, {} ways, {} relations from {}",
            data.nodes.len(),
            data.ways.len(),
            data.relations.len(),
            pbf.display()
        );
        Ok(FeedGenerator::new(
            data,
            self.seed,
            start.sequence,
            start.timestamp,
            self.interval_secs,
        ))
    }
}

fn now_to_the_second() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now is representable")
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Pg(command) => pg(command),
        Command::Feed(FeedCommand::Generate {
            pbf,
            out,
            count,
            changes_per_diff,
            sizes,
            vandalism,
            vandalism_bbox,
            generation,
        }) => {
            let sizes = match count {
                Some(count) => vec![None; count],
                None => sizes.into_iter().map(Some).collect(),
            };
            let vandalism = match (vandalism, vandalism_bbox) {
                (false, _) => None,
                (true, None) => Some(None),
                (true, Some(text)) => Some(Some(Bbox::parse(&text)?)),
            };
            let per_diff = changes_per_diff
                .map(|text| parse_range(&text))
                .transpose()?;
            generate(&pbf, &out, &sizes, per_diff, vandalism, &generation)
        }
        Command::Scale(args) => scale(&args),
        Command::Feed(FeedCommand::Serve {
            dir,
            port,
            publish_every,
            pbf,
            count,
            generation,
            fault_rate,
            fault_seed,
        }) => {
            let every = publish_every.map(Duration::from_secs_f64);
            let live = match (&pbf, every) {
                (Some(pbf), Some(every)) => Some((pbf.as_path(), every)),
                (Some(_), None) => {
                    bail!("--pbf generates diffs on the fly and needs --publish-every")
                }
                (None, _) => None,
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match live {
                Some((pbf, every)) => serve_live(
                    &dir,
                    addr,
                    pbf,
                    every,
                    count,
                    &generation,
                    fault_rate,
                    fault_seed,
                ),
                None => serve_existing(&dir, addr, every, fault_rate, fault_seed),
            }
        }
    }
}

fn pg(command: PgCommand) -> Result<()> {
    match command {
        PgCommand::Start { dir, database } => {
            let cluster = PgCluster::start_detached(&dir)?;
            let url = cluster.ensure_database(&database)?;
            eprintln!(
                "PostgreSQL runs in {} (pid {}, port {}); stop it with `tilepipe-testkit pg stop --dir {}`",
                cluster.dir().display(),
                cluster.pid().unwrap_or_default(),
                cluster.port(),
                dir.display()
            );
            println!("{url}");
        }
        PgCommand::Stop { dir } => PgCluster::attach(&dir)?.stop()?,
        PgCommand::Url { dir, database } => println!("{}", PgCluster::attach(&dir)?.url(&database)),
    }
    Ok(())
}

/// `MIN` or `MIN-MAX`.
fn parse_range(text: &str) -> Result<(usize, usize)> {
    let parse = |t: &str| {
        t.trim()
            .parse::<usize>()
            .with_context(|| format!("{text:?}: expected MIN or MIN-MAX"))
    };
    match text.split_once('-') {
        Some((min, max)) => Ok((parse(min)?, parse(max)?)),
        None => Ok((parse(text)?, parse(text)?)),
    }
}

/// Writes one diff per entry of `sizes` (`None`: the generator's
/// current size), then the vandalism diff if asked for.
fn generate(
    pbf: &Path,
    out: &Path,
    sizes: &[Option<usize>],
    per_diff: Option<(usize, usize)>,
    vandalism: Option<Option<Bbox>>,
    generation: &Generation,
) -> Result<()> {
    let start = generation.start_state(pbf)?;
    let mut generator = generation.generator(pbf, start)?;
    if let Some((min, max)) = per_diff {
        generator = generator.with_changes_per_diff(min, max);
    }
    let writer = FeedWriter::create(out, start)?;
    for size in sizes {
        if let Some(n) = *size {
            generator = generator.with_changes_per_diff(n, n);
        }
        let diff = generator.next_diff();
        writer.write_generated(&diff)?;
        report(&diff);
    }
    if let Some(area) = vandalism {
        let changes = scale::vandalism(generator.data(), area);
        let last = generator.current_state();
        let state = ReplicationState {
            sequence: last.sequence + 1,
            timestamp: last.timestamp + chrono::TimeDelta::seconds(generation.interval_secs as i64),
        };
        writer.write_diff(state, &changes)?;
        println!(
            "{} {}: {} changes (vandalism in {})",
            state.sequence,
            state.timestamp.format("%Y-%m-%dT%H:%M:%SZ"),
            changes.len(),
            area.map_or("the whole extract".to_string(), |a| a.to_string())
        );
    }
    let last = writer.latest_state()?.sequence;
    eprintln!(
        "wrote states {}..={last} and diffs {}..={last} to {}",
        start.sequence,
        start.sequence + 1,
        out.display()
    );
    Ok(())
}

fn scale(args: &ScaleArgs) -> Result<()> {
    let (data, source_header) = match &args.input {
        Some(input) => (
            scale::read_extract(input)?,
            read_pbf_header(input).ok().unwrap_or_default(),
        ),
        None => (tilepipe_testkit::town::synthetic_town(), Default::default()),
    };
    let data = if args.dense_ids {
        scale::renumber(&data)
    } else {
        data
    };
    let timestamp = match &args.replication_timestamp {
        Some(text) => Some(parse_timestamp(text).with_context(|| {
            format!("--replication-timestamp {text:?} is not an ISO 8601 timestamp")
        })?),
        None => source_header.timestamp,
    };
    let header = scale::PbfHeader {
        bbox: None,
        writing_program: GENERATOR.to_string(),
        replication_timestamp: timestamp,
        replication_sequence: args.replication_sequence.or(source_header.sequence),
        replication_base_url: args.replication_url.clone().or(source_header.base_url),
    };
    let started = std::time::Instant::now();
    let summary = scale::write_scaled(&data, args.copies, &args.out, header.clone())?;
    let layout = &summary.layout;
    eprintln!(
        "wrote {} copies ({} columns) of {} objects to {} in {:.1} s: {} nodes, {} ways, {} relations",
        layout.copies,
        layout.columns,
        data.len(),
        args.out.display(),
        started.elapsed().as_secs_f64(),
        summary.nodes,
        summary.ways,
        summary.relations
    );
    let json = serde_json::json!({
        "out": args.out,
        "copies": layout.copies,
        "columns": layout.columns,
        "id_offset": layout.id_offset,
        "copy0_bbox": layout.bbox(0).to_string(),
        "region_bbox": layout.region().to_string(),
        "nodes": summary.nodes,
        "ways": summary.ways,
        "relations": summary.relations,
        "replication_sequence": header.replication_sequence,
        "replication_timestamp": header.replication_timestamp.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        "replication_base_url": header.replication_base_url,
    });
    println!("{json}");
    Ok(())
}

fn report(diff: &GeneratedDiff) {
    let s = &diff.summary;
    println!(
        "{} {}: {} changes ({} moved, {} tag edits, {} streets renamed, {} created, {} deleted, {} multipolygon edits)",
        diff.sequence,
        diff.timestamp.format("%Y-%m-%dT%H:%M:%SZ"),
        diff.changes.len(),
        s.moved_nodes.len(),
        s.tag_changes.len(),
        s.renamed_streets.len(),
        s.created.len(),
        s.deleted.len(),
        s.multipolygon_edits.len()
    );
}

fn start_server(
    dir: &Path,
    addr: SocketAddr,
    fault_rate: f64,
    fault_seed: u64,
) -> Result<FeedServer> {
    let server = FeedServer::start_on(dir, addr)?;
    if fault_rate > 0.0 {
        server.set_random_faults(fault_rate, fault_seed);
    }
    println!("serving {} at {}", dir.display(), server.url());
    Ok(server)
}

/// Serves an existing feed; with `every`, reveals it one diff at a time.
fn serve_existing(
    dir: &Path,
    addr: SocketAddr,
    every: Option<Duration>,
    fault_rate: f64,
    fault_seed: u64,
) -> Result<()> {
    let Some((first, last)) = feed_range(dir)? else {
        bail!(
            "{} holds no state files: not a feed directory",
            dir.display()
        );
    };
    let server = start_server(dir, addr, fault_rate, fault_seed)?;
    if let Some(every) = every {
        server.set_published(first);
        println!(
            "published {first} (start); {} more to come, one every {every:?}",
            last - first
        );
        while server.published()? < last {
            std::thread::sleep(every);
            println!("published {}", server.publish_next()?);
        }
        println!("all of {first}..={last} published");
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Generates and publishes a new diff every `every`, continuing an
/// existing feed in `dir` by replaying the generator up to it.
#[allow(clippy::too_many_arguments)]
fn serve_live(
    dir: &Path,
    addr: SocketAddr,
    pbf: &Path,
    every: Duration,
    count: Option<u64>,
    generation: &Generation,
    fault_rate: f64,
    fault_seed: u64,
) -> Result<()> {
    let start = generation.start_state(pbf)?;
    let mut generator = generation.generator(pbf, start)?;
    let writer = if dir.join("state.txt").exists() {
        let writer = FeedWriter::open(dir)?;
        let latest = writer.latest_state()?;
        if feed_range(dir)?.map(|(first, _)| first) != Some(start.sequence)
            || latest.sequence < start.sequence
        {
            bail!(
                "{} holds a feed that does not start at {}; remove it or pass the same --start-sequence",
                dir.display(),
                start.sequence
            );
        }
        // The generator is deterministic: replaying it rebuilds the model
        // the existing diffs were made from.
        let mut last_replayed = None;
        while generator.current_state().sequence < latest.sequence {
            last_replayed = Some(generator.next_diff());
        }
        if let Some(diff) = last_replayed {
            ensure_same_diff(dir, &diff)?;
        }
        eprintln!("continuing the feed at {}", latest.sequence);
        writer
    } else {
        FeedWriter::create(dir, start)?
    };
    let _server = start_server(dir, addr, fault_rate, fault_seed)?;
    loop {
        if count.is_some_and(|n| generator.current_state().sequence >= start.sequence + n) {
            println!(
                "generated {} diffs; serving without new ones",
                count.unwrap_or(0)
            );
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        std::thread::sleep(every);
        let diff = generator.next_diff();
        writer.write_generated(&diff)?;
        report(&diff);
    }
}

/// Checks that a replayed diff is the one on disk, i.e. that the feed was
/// made with the same extract, seed and start.
fn ensure_same_diff(dir: &Path, diff: &GeneratedDiff) -> Result<()> {
    use std::io::Read;
    let path = dir.join(format!("{}.osc.gz", sequence_path(diff.sequence)));
    let mut on_disk = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path)?)
        .read_to_end(&mut on_disk)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut replayed = Vec::new();
    write_osc(&mut replayed, GENERATOR, &diff.changes)?;
    if on_disk != replayed {
        bail!(
            "{} was not generated from this extract with seed and start given; \
             remove the feed or pass the options it was made with",
            path.display()
        );
    }
    Ok(())
}
