//! Expiry accuracy against ground truth: which metatiles a diff really
//! changed, found by rendering, beside the metatiles each expiry method
//! re-renders for it.
//!
//! For a region and a style, the region's metatiles at z10–z18 (with a ring
//! of one metatile around it at every zoom, so that changes reaching over
//! the region's edge show) are rendered by tilepipe's own renderer (32-bit
//! PNG, lossless, so equal bytes mean equal pixels) before the first diff
//! and again after each of a sequence of generated minutely diffs (the test
//! kit's [`FeedGenerator`], which the demo and the tests publish too). The
//! metatiles whose bytes changed are the truth. Before any diff the region
//! is rendered twice, to show that rendering itself is deterministic.
//!
//! Methods, all on the same diffs:
//! - **osm2pgsql 1.8**: Debian's `osm2pgsql --append --slim -e 10-18 -o
//!   LIST` on a database of its own with the same import, each listed tile
//!   mapped to its metatile (what `render_expired` re-renders);
//! - **tilepipe all_changes**: `expire.all_changes: true`;
//! - **tilepipe default**: rows rewritten without a difference skipped;
//! - **tilepipe style-aware**: the default plus `expire.style_aware` with
//!   the style's reads ([`read_style`]).
//!
//! The tilepipe methods are computed as `tilepipe run` computes them
//! (`daemon::apply_batch`): each diff is one batch applied by the
//! [`Applier`], its row changes passed to [`tiles_for_batch`] with the
//! default `expire:` rasteriser settings.
//!
//! Reported per zoom and in total: recall (changed metatiles expired /
//! changed metatiles), precision (changed metatiles expired / metatiles
//! expired), metatiles re-rendered per diff and the render time that costs
//! (each zoom's mean render time per metatile, measured in the truth
//! passes), beside the ideal: the changed metatiles themselves, what a
//! method with full recall and precision would re-render. Every miss is
//! listed with the changed rows near it (what changed in each, and the
//! zooms the style draws it at), and classified: **skipped** when a
//! changed row's geometry expires the metatile but the method left the
//! row out there (judged invisible); **within the render buffer** when
//! a changed row's old or new geometry comes within the style's buffer
//! (128 px) of the metatile, beyond the expiry margin; else **beyond the
//! buffer** (a label or symbol placed across the metatile's edge from
//! further away, a known limit of every geometry-based method). Recall
//! "within the buffer" leaves the last class out.
//!
//! Regions: the test kit's synthetic town, then the Helsinki sample
//! (`../shared/data/helsinki.osm.pbf`) when present. Styles: the project's
//! (`styles/tilepipe`), then openstreetmap-carto 5.7 (Debian's, prepared by
//! `scripts/setup-carto`) when installed. `TILEPIPE_BENCH_DIFFS` sets the
//! diffs per case (default 8 for the town, 6 for Helsinki, half as many
//! with openstreetmap-carto, which renders several times slower);
//! `TILEPIPE_BENCH_CASES` selects cases by substring (e.g. `town`,
//! `helsinki/tilepipe`); `TILEPIPE_BENCH_QUICK` measures the town only;
//! `TILEPIPE_BENCH_CHANGES` sets the edits per diff (`MIN-MAX`, default
//! 1-5); `TILEPIPE_BENCH_VERBOSE` prints each diff's edits and rows and
//! keeps the work directory with each pass's tiles.
//!
//! Run with `cargo bench --bench expiry_accuracy`. Prints Markdown tables
//! and one `BENCH {json}` line per headline figure for `bench/run`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tilepipe::apply::append::{Applier, RowChange};
use tilepipe::apply::settings::ImportSettings;
use tilepipe::expire::batch::{tiles_for_batch, ExpireConfig};
use tilepipe::expire::raster::{Expirer, PolygonMode, RasterSettings};
use tilepipe::expire::style_aware::StyleReads;
use tilepipe::metatile::read_tile_at;
use tilepipe::osm::{Change, ChangeSet};
use tilepipe::render::config::{RenderConfig, StyleConfig, TileFormat};
use tilepipe::render::style_reads::read_style;
use tilepipe::render::worker::Renderer;
use tilepipe::tile::{metatiles_at, BBox, Metatile, Tile};
use tilepipe_testkit::feedgen::OsmData;
use tilepipe_testkit::osm2pgsql::{self, Variant};
use tilepipe_testkit::{FeedGenerator, PgCluster};

const START: u64 = 1000;
const SEED: u64 = 1717;
const MIN_ZOOM: u8 = 10;
const MAX_ZOOM: u8 = 18;
const ZOOMS: usize = (MAX_ZOOM - MIN_ZOOM + 1) as usize;
const METATILE: u32 = 8;
/// Mapnik's buffer around each metatile in both styles (`buffer-size` of
/// the project style, renderd's default for carto), in tiles of 256 px.
const RENDER_BUFFER_TILES: f64 = 0.5;
const HELSINKI: &str = "../shared/data/helsinki.osm.pbf";
const CARTO_DIR: &str = "/usr/share/openstreetmap-carto-common";
const METHODS: [&str; 4] = [
    "osm2pgsql 1.8",
    "tilepipe all_changes",
    "tilepipe default",
    "tilepipe style-aware",
];
const OSM2PGSQL: usize = 0;
const STYLE_AWARE: usize = 3;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `TILEPIPE_BENCH_VERBOSE`: each diff's edits and rows on stderr, and
/// each pass's tiles kept (`tiles-before-<sequence>`) to look at misses.
fn verbose() -> bool {
    std::env::var_os("TILEPIPE_BENCH_VERBOSE").is_some()
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
}

/// Changes per diff: `TILEPIPE_BENCH_CHANGES` as `MIN-MAX`, default
/// 1-5: the edits one mapper uploads in a minute, which is what a
/// region this small sees of a planet diff (the generator's own default,
/// 20-60 changes, touches every metatile of the town at every zoom).
fn changes_per_diff() -> (usize, usize) {
    std::env::var("TILEPIPE_BENCH_CHANGES")
        .ok()
        .and_then(|v| {
            let (min, max) = v.split_once('-')?;
            Some((min.parse().ok()?, max.parse().ok()?))
        })
        .unwrap_or((1, 5))
}

/// A region: its file, its data and the box of its nodes.
struct Region {
    name: &'static str,
    file: PathBuf,
    data: OsmData,
    bbox: BBox,
    diffs: usize,
}

fn node_bbox(data: &OsmData) -> BBox {
    let (mut west, mut south, mut east, mut north) = (180.0f64, 90.0f64, -180.0f64, -90.0f64);
    for location in data.nodes.values().filter_map(|n| n.location) {
        west = west.min(location.lon);
        east = east.max(location.lon);
        south = south.min(location.lat);
        north = north.max(location.lat);
    }
    format!("{west},{south},{east},{north}").parse().unwrap()
}

fn regions(dir: &Path) -> Vec<Region> {
    let diffs = env_number("TILEPIPE_BENCH_DIFFS");
    let town = tilepipe_testkit::town::synthetic_town();
    let file = dir.join("town.osm");
    town.write_osm_file(&file).unwrap();
    let mut regions = vec![Region {
        name: "town",
        file,
        bbox: node_bbox(&town),
        data: town,
        diffs: diffs.unwrap_or(8),
    }];
    let helsinki = manifest().join(HELSINKI);
    if std::env::var_os("TILEPIPE_BENCH_QUICK").is_some() {
        eprintln!("TILEPIPE_BENCH_QUICK: the synthetic town only");
    } else if helsinki.is_file() {
        let data = OsmData::from_pbf(&helsinki).unwrap();
        regions.push(Region {
            name: "helsinki",
            file: helsinki,
            bbox: node_bbox(&data),
            data,
            diffs: diffs.unwrap_or(6),
        });
    } else {
        eprintln!("{HELSINKI} not found: the synthetic town only");
    }
    regions
}

/// A style with the import it needs.
struct Style {
    name: &'static str,
    xml: PathBuf,
    variant: Variant,
}

/// The metatiles measured at each zoom: the region's, and one ring around.
fn measured_metatiles(bbox: &BBox) -> Vec<Vec<Metatile>> {
    (MIN_ZOOM..=MAX_ZOOM)
        .map(|z| {
            let inside: Vec<Metatile> = metatiles_at(z, Some(bbox)).collect();
            let x0 = inside.iter().map(|m| m.x).min().unwrap();
            let x1 = inside.iter().map(|m| m.x).max().unwrap();
            let y0 = inside.iter().map(|m| m.y).min().unwrap();
            let y1 = inside.iter().map(|m| m.y).max().unwrap();
            let last = (1u32 << z) - METATILE;
            let mut all = Vec::new();
            for y in (y0.saturating_sub(METATILE)..=(y1 + METATILE).min(last)).step_by(8) {
                for x in (x0.saturating_sub(METATILE)..=(x1 + METATILE).min(last)).step_by(8) {
                    all.push(Metatile { z, x, y });
                }
            }
            all
        })
        .collect()
}

/// One render of every measured metatile: each metatile's hash, and each
/// zoom's render seconds per metatile (the workers' busy time).
struct Pass {
    /// Per metatile, its tiles' hashes (row by row).
    hashes: HashMap<Metatile, Vec<u64>>,
    seconds: [f64; ZOOMS],
}

fn render_pass(renderer: &Renderer, style: &str, measured: &[Vec<Metatile>]) -> Pass {
    let store = renderer.store(style).unwrap();
    let mut hashes = HashMap::new();
    let mut seconds = [0.0; ZOOMS];
    for (i, metatiles) in measured.iter().enumerate() {
        let before = renderer.timings();
        tilepipe_testkit::render::render_all(renderer, style, metatiles);
        let after = loop {
            let t = renderer.timings();
            if t.jobs >= before.jobs + metatiles.len() as u64 {
                break t;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        seconds[i] = (after.busy - before.busy).as_secs_f64() / metatiles.len() as f64;
        for &metatile in metatiles {
            let path = store.path(style, metatile, None).unwrap();
            let tiles = tiles_of(metatile)
                .map(|tile| {
                    let bytes = read_tile_at(&path, tile).unwrap().unwrap().bytes;
                    xxhash_rust::xxh3::xxh3_64(&bytes.unwrap_or_default())
                })
                .collect();
            hashes.insert(metatile, tiles);
        }
    }
    Pass { hashes, seconds }
}

/// The tiles of a metatile, row by row.
fn tiles_of(metatile: Metatile) -> impl Iterator<Item = Tile> {
    (0..METATILE).flat_map(move |dy| {
        (0..METATILE).map(move |dx| Tile {
            z: metatile.z,
            x: metatile.x + dx,
            y: metatile.y + dy,
        })
    })
}

/// The tiles whose pixels differ between two passes, as (column, row)
/// within the metatile.
fn changed_tiles(before: &Pass, after: &Pass, metatile: Metatile) -> Vec<(u32, u32)> {
    let (Some(b), Some(a)) = (before.hashes.get(&metatile), after.hashes.get(&metatile)) else {
        return Vec::new();
    };
    b.iter()
        .zip(a)
        .enumerate()
        .filter(|(_, (b, a))| b != a)
        .map(|(i, _)| (i as u32 % METATILE, i as u32 / METATILE))
        .collect()
}

fn changed_between(before: &Pass, after: &Pass) -> BTreeSet<Metatile> {
    after
        .hashes
        .iter()
        .filter(|(m, hash)| before.hashes.get(m) != Some(hash))
        .map(|(m, _)| *m)
        .collect()
}

/// The metatiles at z10–z18 holding the tiles of an osm2pgsql `-o` list.
fn listed_metatiles(list: &Path) -> BTreeSet<Metatile> {
    let text = std::fs::read_to_string(list).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.parse::<tilepipe::tile::Tile>().ok())
        .filter(|t| (MIN_ZOOM..=MAX_ZOOM).contains(&t.z))
        .map(|t| t.metatile())
        .collect()
}

/// What one changed row reaches at one zoom, for explaining misses.
struct Reach {
    /// `planet_osm_line -42 (name; style z10-z18)`: the row, what changed
    /// (its columns, or the geometry) and where the style draws it.
    label: String,
    /// Metatiles within the render buffer of its old or new geometry
    /// (polygons by their whole area).
    buffer: BTreeSet<Metatile>,
    /// Metatiles within a metatile's width of it.
    nearby: BTreeSet<Metatile>,
    /// Metatiles its geometry expires (the default rasteriser's margin).
    expired: BTreeSet<Metatile>,
}

fn reaches(rows: &[RowChange], z: u8, raster: &RasterSettings, reads: &StyleReads) -> Vec<Reach> {
    let within = |buffer: f64, row: &RowChange| -> BTreeSet<Metatile> {
        let settings = RasterSettings {
            buffer,
            mode: PolygonMode::FullArea,
            full_area_limit: f64::INFINITY,
            ..RasterSettings::new(z)
        };
        let mut expirer = Expirer::new(settings).unwrap();
        expirer
            .expire_ewkb("row", row.old.iter().chain(&row.new).map(Vec::as_slice))
            .unwrap();
        expirer.into_tiles().metatiles(z).collect()
    };
    rows.iter()
        .filter(|row| row.changed)
        .map(|row| {
            let what = match &row.changed_columns {
                Some(columns) => columns.join(","),
                None => "geometry".into(),
            };
            let zooms = reads.zooms_for(
                &row.table,
                tilepipe::expire::style_aware::RowFacts {
                    changed_columns: row.changed_columns.as_deref(),
                    null_columns: row.null_columns.as_deref(),
                },
            );
            let as_expired = RowChange {
                expire: true,
                ..row.clone()
            };
            Reach {
                label: format!("{} {} ({what}; style {zooms})", row.table, row.osm_id),
                buffer: within(RENDER_BUFFER_TILES, row),
                nearby: within(f64::from(METATILE), row),
                expired: tiles_for_batch(&[as_expired], raster, true, &[])
                    .unwrap()
                    .all
                    .metatiles(z)
                    .collect(),
            }
        })
        .collect()
}

/// Why a changed metatile was not expired.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MissKind {
    /// A changed row's geometry expires it, but the method left it out
    /// (the row's change or zoom judged invisible).
    Skipped,
    /// A changed row comes within the render buffer, but beyond the
    /// expiry margin (0.1 tile at z18) of every changed geometry.
    Margin,
    /// No changed row within the render buffer: a label or symbol placed
    /// across the metatile's edge from further away.
    BeyondBuffer,
}

/// Counts of one method at one zoom, summed over the diffs.
#[derive(Default, Clone, Copy)]
struct Tally {
    expired: usize,
    hits: usize,
    /// Misses by [`MissKind`]: skipped, margin, beyond the buffer.
    misses: [usize; 3],
}

struct Miss {
    diff: u64,
    metatile: Metatile,
    /// Its tiles that changed, (column, row) within it.
    tiles: Vec<(u32, u32)>,
    kind: MissKind,
    nearby: Vec<String>,
}

/// One case's figures.
struct Report {
    region: &'static str,
    style: &'static str,
    diffs: usize,
    measured: usize,
    /// Changed metatiles per zoom.
    truth: [usize; ZOOMS],
    /// Per method, per zoom.
    tallies: [[Tally; ZOOMS]; 4],
    /// Per method.
    misses: [Vec<Miss>; 4],
    /// Render seconds per metatile per zoom.
    seconds: [f64; ZOOMS],
    nondeterministic: usize,
    changed_rows: usize,
    elapsed: Duration,
}

fn measure(cluster: &PgCluster, region: &Region, style: &Style, work: &Path) -> Report {
    let started = Instant::now();
    // openstreetmap-carto renders several times slower: half the diffs
    // keep the run within minutes.
    let diffs = match style.name {
        "carto" if env_number("TILEPIPE_BENCH_DIFFS").is_none() => (region.diffs / 2).max(2),
        _ => region.diffs,
    };
    let case = format!("{}_{}", region.name, style.name);
    eprintln!("{case}: importing into tilepipe's and osm2pgsql's databases");
    let tilepipe_url = cluster.create_database(&format!("acc_{case}_tp")).unwrap();
    let osm2pgsql_url = cluster.create_database(&format!("acc_{case}_o2p")).unwrap();
    let style_dir = work.join(&case);
    std::fs::create_dir_all(&style_dir).unwrap();
    let xml = if style.name == "carto" {
        // Debian's style.xml plus the tables external-data.yml would load,
        // in both databases (osm2pgsql's needs none, but stays alike).
        for url in [&tilepipe_url, &osm2pgsql_url] {
            let out = Command::new(manifest().join("scripts/setup-carto"))
                .arg(&style_dir)
                .arg(url)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "setup-carto: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        style_dir.join("style.xml")
    } else {
        style.xml.clone()
    };
    let db = tilepipe::db::resolve(&tilepipe_url, &tilepipe::db::ProcessEnv).unwrap();
    tilepipe::apply::import::import(&db, &region.file, &style.variant.settings("public"), 2)
        .unwrap();
    osm2pgsql::run(
        &osm2pgsql_url,
        "public",
        &style.variant.flags,
        false,
        &region.file,
    );
    let mut client = tilepipe::db::connect(&db).unwrap();
    let settings = ImportSettings::load(&mut client, "public")
        .unwrap()
        .unwrap();
    let mut applier = Applier::for_settings(&settings).unwrap();
    let reads: Vec<StyleReads> = vec![read_style(style.name, &xml, 256, 1.0).unwrap()];
    let raster = ExpireConfig::default().raster();

    let tiles = style_dir.join("tiles");
    let config = StyleConfig {
        name: style.name.to_string(),
        xml: xml.clone(),
        tile_dir: tiles.clone(),
        format: TileFormat::Png,
        database: Some(tilepipe_url.clone()),
        max_zoom: MAX_ZOOM,
        ..StyleConfig::default()
    };
    let measured = measured_metatiles(&region.bbox);
    let count: usize = measured.iter().map(Vec::len).sum();
    let renderer = Renderer::start(
        std::slice::from_ref(&config),
        &RenderConfig {
            threads: 2,
            queue_capacity: count + 1,
            ..RenderConfig::default()
        },
    )
    .unwrap();
    eprintln!("{case}: {count} metatiles per render pass, {} diffs", diffs);
    let first = render_pass(&renderer, style.name, &measured);
    let mut before = render_pass(&renderer, style.name, &measured);
    let nondeterministic = changed_between(&first, &before).len();
    let mut seconds = before.seconds;

    let mut report = Report {
        region: region.name,
        style: style.name,
        diffs,
        measured: count,
        truth: [0; ZOOMS],
        tallies: [[Tally::default(); ZOOMS]; 4],
        misses: Default::default(),
        seconds: [0.0; ZOOMS],
        nondeterministic,
        changed_rows: 0,
        elapsed: Duration::ZERO,
    };
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let (fewest, most) = changes_per_diff();
    let mut generator = FeedGenerator::new(region.data.clone(), SEED, START, t0, 60)
        .with_changes_per_diff(fewest, most);
    for _ in 0..diffs {
        let diff = generator.next_diff();
        let sequence = diff.sequence;
        if verbose() {
            eprintln!("{case}: diff {sequence}: {:?}", diff.summary);
        }
        // Ordered by type, then id, as planet diffs are (osm2pgsql insists).
        let mut changes: Vec<Change> = diff.changes.clone();
        changes.sort_by_key(|c| {
            let id = c.object_id();
            (id.kind as usize, id.id)
        });

        // tilepipe: one batch, as `tilepipe run` applies it.
        let set: ChangeSet = changes.iter().cloned().collect();
        let mut tx = client.transaction().unwrap();
        let result = applier.apply(&mut tx, &set).unwrap();
        tx.commit().unwrap();
        let rows = result.row_changes;
        report.changed_rows += rows.iter().filter(|r| r.changed).count();
        let all_changes = tiles_for_batch(&rows, &raster, true, &[]).unwrap();
        let default = tiles_for_batch(&rows, &raster, false, &[]).unwrap();
        let aware = tiles_for_batch(&rows, &raster, false, &reads).unwrap();

        // osm2pgsql on its own database.
        let osc = style_dir.join(format!("{sequence}.osc"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&osc).unwrap());
        tilepipe::osm::osc_write::write_osc(&mut out, "expiry_accuracy", &changes).unwrap();
        drop(out);
        let list = style_dir.join(format!("expired-{sequence}.list"));
        let mut args: Vec<String> = ["--slim", "--append", "-e", "10-18", "-o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(list.display().to_string());
        args.extend(style.variant.flags.iter().cloned());
        osm2pgsql::try_run(&osm2pgsql_url, &args, &osc)
            .unwrap_or_else(|e| panic!("osm2pgsql --append: {e}"));
        let listed = listed_metatiles(&list);

        // The truth.
        if verbose() {
            // The previous pass's files, to look at a miss's pixels.
            let previous = style_dir.join(format!("tiles-before-{sequence}"));
            let _ = Command::new("cp")
                .arg("-a")
                .arg(&tiles)
                .arg(&previous)
                .status();
        }
        let after = render_pass(&renderer, style.name, &measured);
        let changed = changed_between(&before, &after);
        for (s, a) in seconds.iter_mut().zip(after.seconds) {
            *s += a;
        }

        for (i, z) in (MIN_ZOOM..=MAX_ZOOM).enumerate() {
            let truth: BTreeSet<Metatile> = changed.iter().filter(|m| m.z == z).copied().collect();
            report.truth[i] += truth.len();
            let expired: [BTreeSet<Metatile>; 4] = [
                listed.iter().filter(|m| m.z == z).copied().collect(),
                all_changes.all.metatiles(z).collect(),
                default.all.metatiles(z).collect(),
                aware.metatiles(style.name, z).into_iter().collect(),
            ];
            let reach = reaches(&rows, z, &raster, &reads[0]);
            if verbose() && z >= 17 {
                for r in &reach {
                    eprintln!(
                        "  z{z} {}: expires {:?} buffer {:?}",
                        r.label, r.expired, r.buffer
                    );
                }
                eprintln!("  z{z} changed: {truth:?}");
                for (m, set) in expired.iter().enumerate() {
                    eprintln!("  z{z} {}: {set:?}", METHODS[m]);
                }
                for row in rows.iter().filter(|r| !r.changed) {
                    let one = RowChange {
                        expire: true,
                        ..row.clone()
                    };
                    let set: Vec<Metatile> = tiles_for_batch(&[one], &raster, true, &[])
                        .unwrap()
                        .all
                        .metatiles(z)
                        .collect();
                    eprintln!("  z{z} unchanged {} {}: {set:?}", row.table, row.osm_id);
                }
            }
            for (method, set) in expired.iter().enumerate() {
                let tally = &mut report.tallies[method][i];
                tally.expired += set.len();
                tally.hits += truth.intersection(set).count();
                for &metatile in truth.difference(set) {
                    let labels = |pick: &dyn Fn(&Reach) -> bool| -> Vec<String> {
                        reach
                            .iter()
                            .filter(|r| pick(r))
                            .map(|r| r.label.clone())
                            .collect()
                    };
                    let skipped = labels(&|r| r.expired.contains(&metatile));
                    let buffer = labels(&|r| r.buffer.contains(&metatile));
                    let (kind, nearby) = if !skipped.is_empty() {
                        (MissKind::Skipped, skipped)
                    } else if !buffer.is_empty() {
                        (MissKind::Margin, buffer)
                    } else {
                        (
                            MissKind::BeyondBuffer,
                            labels(&|r| r.nearby.contains(&metatile)),
                        )
                    };
                    tally.misses[kind as usize] += 1;
                    report.misses[method].push(Miss {
                        diff: sequence,
                        metatile,
                        tiles: changed_tiles(&before, &after, metatile),
                        kind,
                        nearby,
                    });
                }
            }
        }
        before = after;
        eprintln!(
            "{case}: diff {sequence}: {} changes, {} metatiles changed; expired: {}",
            changes.len(),
            changed.len(),
            (0..4)
                .map(|m| format!(
                    "{} {}",
                    METHODS[m],
                    report.tallies[m].iter().map(|t| t.expired).sum::<usize>()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    renderer.shutdown();
    let passes = (diffs + 1) as f64;
    for (out, s) in report.seconds.iter_mut().zip(seconds) {
        *out = s / passes;
    }
    report.elapsed = started.elapsed();
    report
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

fn ratio(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

impl Report {
    fn total(&self, method: usize) -> Tally {
        self.tallies[method]
            .iter()
            .fold(Tally::default(), |a, t| Tally {
                expired: a.expired + t.expired,
                hits: a.hits + t.hits,
                misses: [0, 1, 2].map(|k| a.misses[k] + t.misses[k]),
            })
    }

    fn render_seconds(&self, method: usize) -> f64 {
        self.tallies[method]
            .iter()
            .zip(self.seconds)
            .map(|(t, s)| t.expired as f64 * s)
            .sum::<f64>()
            / self.diffs as f64
    }

    fn print(&self) {
        let truth: usize = self.truth.iter().sum();
        println!(
            "## Expiry accuracy: {} with the {} style",
            self.region, self.style
        );
        println!();
        println!(
            "{} diffs of {}–{} changes ({} changed rows); {} metatiles rendered per pass (z10–z18 with a ring of one metatile); {} changed in all; {} differed between two renders before any diff; {:.0} s",
            self.diffs,
            changes_per_diff().0,
            changes_per_diff().1,
            self.changed_rows,
            self.measured,
            truth,
            self.nondeterministic,
            self.elapsed.as_secs_f64()
        );
        println!();
        let mut header = "| zoom | changed |".to_string();
        let mut rule = "|---|---|".to_string();
        for m in METHODS {
            header += &format!(" {m}: expired / recall / precision |");
            rule += "---|";
        }
        println!("{header}");
        println!("{rule}");
        let row = |label: String, truth: usize, tallies: [Tally; 4]| {
            let mut line = format!("| {label} | {truth} |");
            for t in tallies {
                line += &format!(
                    " {} / {} / {} |",
                    t.expired,
                    percent(t.hits, truth),
                    percent(t.hits, t.expired)
                );
            }
            println!("{line}");
        };
        for (i, z) in (MIN_ZOOM..=MAX_ZOOM).enumerate() {
            row(
                format!("z{z}"),
                self.truth[i],
                [0, 1, 2, 3].map(|m| self.tallies[m][i]),
            );
        }
        row("total".into(), truth, [0, 1, 2, 3].map(|m| self.total(m)));
        println!();
        println!("| method | metatiles per diff | render s per diff | vs osm2pgsql | recall | recall within the buffer | misses: skipped / within buffer beyond margin / beyond buffer |");
        println!("|---|---|---|---|---|---|---|");
        let peer = self.total(OSM2PGSQL).expired;
        for (m, name) in METHODS.iter().enumerate() {
            let t = self.total(m);
            println!(
                "| {name} | {:.1} | {:.1} | {} | {} | {} | {} / {} / {} |",
                t.expired as f64 / self.diffs as f64,
                self.render_seconds(m),
                ratio(t.expired, peer).map_or("–".into(), |r| format!("{r:.2}×")),
                percent(t.hits, truth),
                percent(t.hits, truth - t.misses[MissKind::BeyondBuffer as usize]),
                t.misses[0],
                t.misses[1],
                t.misses[2],
            );
        }
        // What a perfect method would re-render: exactly the changed ones.
        let ideal_seconds = self
            .truth
            .iter()
            .zip(self.seconds)
            .map(|(&t, s)| t as f64 * s)
            .sum::<f64>()
            / self.diffs as f64;
        println!(
            "| ideal (the changed metatiles) | {:.1} | {ideal_seconds:.1} | {} | 100% | 100% | – |",
            truth as f64 / self.diffs as f64,
            ratio(truth, peer).map_or("–".into(), |r| format!("{r:.2}×")),
        );
        println!();
        for (m, name) in METHODS.iter().enumerate() {
            let misses = &self.misses[m];
            if misses.is_empty() {
                continue;
            }
            println!("Misses of {name} ({}):", misses.len());
            for miss in misses.iter().take(25) {
                println!(
                    "- diff {}: z{} metatile {}/{} (tiles changed, column/row: {}): {}; changed rows near: {}",
                    miss.diff,
                    miss.metatile.z,
                    miss.metatile.x,
                    miss.metatile.y,
                    miss.tiles
                        .iter()
                        .map(|(x, y)| format!("{x}/{y}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    match miss.kind {
                        MissKind::Skipped => "skipped: a changed row's geometry expires it",
                        MissKind::Margin =>
                            "within the render buffer, beyond the expiry margin",
                        MissKind::BeyondBuffer =>
                            "beyond the render buffer (label across the edge)",
                    },
                    if miss.nearby.is_empty() {
                        "none within a metatile".to_string()
                    } else {
                        miss.nearby.join(", ")
                    }
                );
            }
            if misses.len() > 25 {
                println!("- … and {} more", misses.len() - 25);
            }
            println!();
        }
        self.bench_lines();
    }

    fn bench_lines(&self) {
        let truth: usize = self.truth.iter().sum();
        let aware = self.total(STYLE_AWARE);
        let peer = self.total(OSM2PGSQL);
        let case = format!("{}, {} style", self.region, self.style);
        let line = |name: String, ours: f64, theirs: f64, unit: &str, goal: &str, ideal: f64| {
            println!(
                "BENCH {}",
                serde_json::json!({
                    "bench": "expiry_accuracy",
                    "name": name,
                    "tilepipe": ours,
                    "peer": theirs,
                    "runs": self.diffs,
                    "unit": unit,
                    "goal": goal,
                    "ideal": ideal,
                })
            );
        };
        line(
            format!("metatiles re-rendered per diff, style-aware vs osm2pgsql -e 10-18 ({case})"),
            aware.expired as f64 / self.diffs as f64,
            peer.expired as f64 / self.diffs as f64,
            "metatiles",
            "≤0.3×",
            truth as f64 / self.diffs as f64,
        );
        let recall = |t: Tally| 100.0 * ratio(t.hits, truth).unwrap_or(1.0);
        line(
            format!("expiry recall, style-aware vs osm2pgsql ({case})"),
            recall(aware),
            recall(peer),
            "%",
            "≥1×",
            100.0,
        );
        let within = |t: Tally| {
            100.0 * ratio(t.hits, truth - t.misses[MissKind::BeyondBuffer as usize]).unwrap_or(1.0)
        };
        line(
            format!("expiry recall within the render buffer, style-aware vs osm2pgsql ({case})"),
            within(aware),
            within(peer),
            "%",
            "≥1×",
            100.0,
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !osm2pgsql::available() {
        eprintln!("osm2pgsql is needed for the comparison: apt-get install osm2pgsql");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    if verbose() {
        eprintln!(
            "verbose: the work directory {} is kept",
            work.path().display()
        );
    }
    let regions = regions(work.path());
    let mut styles = vec![Style {
        name: "tilepipe",
        xml: manifest().join("styles/tilepipe/tilepipe.xml"),
        variant: osm2pgsql::default_variant(),
    }];
    if Path::new(CARTO_DIR).join("style.xml").exists() {
        if let Some(variant) = osm2pgsql::carto_variant() {
            styles.push(Style {
                name: "carto",
                xml: Path::new(CARTO_DIR).join("style.xml"),
                variant,
            });
        }
    } else {
        eprintln!("{CARTO_DIR}/style.xml not found: openstreetmap-carto skipped");
    }
    let wanted = std::env::var("TILEPIPE_BENCH_CASES").ok();
    let cluster = PgCluster::start(None).unwrap();
    for style in &styles {
        for region in &regions {
            let case = format!("{}/{}", region.name, style.name);
            if wanted.as_deref().is_some_and(|w| !case.contains(w)) {
                continue;
            }
            let report = measure(&cluster, region, style, work.path());
            report.print();
        }
    }
    if verbose() {
        std::mem::forget(work);
    }
}
