//! Expiry accuracy against ground truth: which metatiles a diff really
//! changed, found by rendering, beside the metatiles each expiry method
//! re-renders for it.
//!
//! For a region and a style, the region's metatiles at z10–z18 (with a ring
//! of one metatile around it at every zoom, so that changes reaching over
//! the region's edge show) are rendered by tilepipe's own renderer (32-bit
//! PNG, lossless, so equal bytes mean equal pixels) before the first diff
//! and again after each of a sequence of minutely diffs. The metatiles
//! whose bytes changed are the truth. Before any diff the region is
//! rendered twice, to show that rendering itself is deterministic.
//!
//! A real-size region (Liechtenstein, over 1000 metatiles at z10–z18) is
//! too large to render whole after every diff. There the truth is
//! rendered, before and after each diff, for the metatiles some method
//! expires (the union of the methods' sets) and the ring of eight
//! metatiles around each. That bounds the truth: a changed metatile
//! outside the union is a miss of every method, and a change that leaks
//! out of the union shows in the ring first; a leak past the ring would
//! have to skip a metatile, which pixels drawn from a geometry within the
//! render buffer (half a tile) cannot. The diff is applied in a
//! transaction left open while the "before" pass renders (the renderer's
//! connections still see the old rows), then committed.
//!
//! Diffs come from two sources:
//! - **generated**: the test kit's [`FeedGenerator`] (which the demo and
//!   the tests publish too): moves, renames, POIs, multipolygon edits,
//!   every one an edit a style draws;
//! - **real**: the edits of a real planet-wide minutely diff
//!   (`../shared/data/000466354.osc.gz`) replayed on the region by
//!   [`RelocatedDiffs`]: created objects moved there with their shape and
//!   real tags, modifications and deletions done to region objects of the
//!   same kind. Its mix is a real minute's: mostly an import's buildings,
//!   then tag edits (power towers, `source`), new roads, way node moves.
//!
//! Methods, all on the same diffs:
//! - **osm2pgsql 1.8**: Debian's `osm2pgsql --append --slim -e 10-18 -o
//!   LIST` on a database of its own with the same import, each listed tile
//!   mapped to its metatile (what `render_expired` re-renders);
//! - **tilepipe all_changes**: `expire.all_changes: true`;
//! - **tilepipe default**: rows rewritten without a difference skipped;
//! - **tilepipe style-aware (tables, columns)**: the default plus
//!   `expire.style_aware` with the style's reads ([`read_style`]) but
//!   without the rows' column hashes: each layer's tables, columns and
//!   zooms only (style-aware expiry before value conditions);
//! - **tilepipe style-aware (values)**: as `tilepipe run` does it, the
//!   layers' `WHERE`s and rule filters evaluated on the changed rows'
//!   old and new values too.
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
//! (`../shared/data/helsinki.osm.pbf`) and Liechtenstein
//! (`../shared/data/liechtenstein-2013-08-03.osm.pbf`) when present. Styles: the project's
//! (`styles/tilepipe`), then openstreetmap-carto 5.7 (Debian's, prepared by
//! `scripts/setup-carto`) when installed. `TILEPIPE_BENCH_DIFFS` sets the
//! diffs per case (default 8 for the town, 6 for Helsinki, half as many
//! with openstreetmap-carto, which renders several times slower);
//! `TILEPIPE_BENCH_CASES` selects cases `region/style/source` by
//! substring (e.g. `town`, `helsinki/tilepipe`, `liechtenstein/carto/real`);
//! `TILEPIPE_BENCH_QUICK` measures the town only;
//! `TILEPIPE_BENCH_CHANGES` sets the changes per generated diff, or the
//! planet diff's edits per real diff (`MIN-MAX`, default 1-5); `TILEPIPE_BENCH_VERBOSE` prints each diff's edits and rows and
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
use tilepipe::expire::style_aware::{Condition, StyleReads};
use tilepipe::metatile::read_tile_at;
use tilepipe::osm::osc::read_osc_file;
use tilepipe::osm::{Change, ChangeSet};
use tilepipe::render::config::{RenderConfig, StyleConfig, TileFormat};
use tilepipe::render::style_reads::read_style;
use tilepipe::render::worker::Renderer;
use tilepipe::tile::{metatiles_at, BBox, Metatile, Tile};
use tilepipe_testkit::feedgen::{GeneratedDiff, OsmData};
use tilepipe_testkit::osm2pgsql::{self, Variant};
use tilepipe_testkit::realdiff::RelocatedDiffs;
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
const LIECHTENSTEIN: &str = "../shared/data/liechtenstein-2013-08-03.osm.pbf";
/// A real planet-wide minutely diff whose edits [`RelocatedDiffs`]
/// replays on each region.
const PLANET_DIFF: &str = "../shared/data/000466354.osc.gz";
/// Regions with more metatiles than this at z10–z18 are measured around
/// the expiry sets only (see the module documentation).
const FULL_RENDER_LIMIT: usize = 1000;
const CARTO_DIR: &str = "/usr/share/openstreetmap-carto-common";
const METHODS: [&str; 5] = [
    "osm2pgsql 1.8",
    "tilepipe all_changes",
    "tilepipe default",
    "tilepipe style-aware (tables, columns)",
    "tilepipe style-aware (values)",
];
const OSM2PGSQL: usize = 0;
/// tilepipe's default: every row whose rendered columns changed.
const DEFAULT: usize = 2;
/// Style-aware expiry as `tilepipe run` does it: with the layers' value
/// conditions.
const STYLE_AWARE: usize = 4;

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

impl Region {
    /// Whether every metatile of the region is rendered for the truth
    /// (else only those around the methods' expiry sets).
    fn full_render(&self) -> bool {
        measured_metatiles(&self.bbox)
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            <= FULL_RENDER_LIMIT
    }
}

/// Where a case's diffs come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The test kit's [`FeedGenerator`]: edits a style draws.
    Generated,
    /// A real planet diff's edits replayed on the region
    /// ([`RelocatedDiffs`]).
    Real,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Generated => "generated",
            Source::Real => "real",
        }
    }
}

/// A case's diffs, one at a time.
enum Diffs {
    Generated(FeedGenerator),
    Real(RelocatedDiffs),
}

impl Diffs {
    fn next_diff(&mut self) -> GeneratedDiff {
        match self {
            Diffs::Generated(g) => g.next_diff(),
            Diffs::Real(r) => r.next_diff(),
        }
    }
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
    if std::env::var_os("TILEPIPE_BENCH_QUICK").is_some() {
        eprintln!("TILEPIPE_BENCH_QUICK: the synthetic town only");
    } else {
        for (name, path) in [("helsinki", HELSINKI), ("liechtenstein", LIECHTENSTEIN)] {
            let file = manifest().join(path);
            if !file.is_file() {
                eprintln!("{path} not found: {name} skipped");
                continue;
            }
            let data = OsmData::from_pbf(&file).unwrap();
            regions.push(Region {
                name,
                file,
                bbox: node_bbox(&data),
                data,
                diffs: diffs.unwrap_or(6),
            });
        }
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
    /// Per zoom, the workers' busy seconds and the metatiles rendered.
    busy: [(f64, usize); ZOOMS],
}

fn render_pass(renderer: &Renderer, style: &str, measured: &[Vec<Metatile>]) -> Pass {
    let store = renderer.store(style).unwrap();
    let mut hashes = HashMap::new();
    let mut busy = [(0.0, 0); ZOOMS];
    for (i, metatiles) in measured.iter().enumerate() {
        if metatiles.is_empty() {
            continue;
        }
        let before = renderer.timings();
        tilepipe_testkit::render::render_all(renderer, style, metatiles);
        let after = loop {
            let t = renderer.timings();
            if t.jobs >= before.jobs + metatiles.len() as u64 {
                break t;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        busy[i] = ((after.busy - before.busy).as_secs_f64(), metatiles.len());
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
    Pass { hashes, busy }
}

/// The metatiles measured for one diff of a large region: those some
/// method expires, and the ring of eight around each.
fn around(expired: &[BTreeSet<Metatile>]) -> Vec<Vec<Metatile>> {
    (MIN_ZOOM..=MAX_ZOOM)
        .map(|z| {
            let last = (1i64 << z) - i64::from(METATILE);
            let step = i64::from(METATILE);
            let mut set = BTreeSet::new();
            for m in expired.iter().flatten().filter(|m| m.z == z) {
                for dy in [-step, 0, step] {
                    for dx in [-step, 0, step] {
                        let (x, y) = (i64::from(m.x) + dx, i64::from(m.y) + dy);
                        if (0..=last).contains(&x) && (0..=last).contains(&y) {
                            set.insert(Metatile {
                                z,
                                x: x as u32,
                                y: y as u32,
                            });
                        }
                    }
                }
            }
            set.into_iter().collect()
        })
        .collect()
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
                    digests: row.column_digests.as_ref(),
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

impl Miss {
    /// Diff and metatile, to tell one method's misses from another's.
    fn key(&self) -> (u64, u32, u32, u32) {
        (
            self.diff,
            self.metatile.z.into(),
            self.metatile.x,
            self.metatile.y,
        )
    }
}

/// One case's figures.
struct Report {
    region: &'static str,
    style: &'static str,
    /// The diffs' [`Source`] name.
    source: &'static str,
    /// Whether every metatile of the region was rendered (else those
    /// around the expiry sets).
    full: bool,
    diffs: usize,
    measured: usize,
    /// Changed metatiles per zoom.
    truth: [usize; ZOOMS],
    /// Per method, per zoom.
    tallies: [[Tally; ZOOMS]; 5],
    /// Per method.
    misses: [Vec<Miss>; 5],
    /// Render seconds per metatile per zoom.
    seconds: [f64; ZOOMS],
    nondeterministic: usize,
    changed_rows: usize,
    elapsed: Duration,
}

fn measure(
    cluster: &PgCluster,
    region: &Region,
    style: &Style,
    source: Source,
    work: &Path,
) -> Report {
    let started = Instant::now();
    // openstreetmap-carto renders several times slower: half the diffs
    // keep the run within minutes.
    let diffs = match style.name {
        "carto" if env_number("TILEPIPE_BENCH_DIFFS").is_none() => (region.diffs / 2).max(2),
        _ => region.diffs,
    };
    let case = format!("{}_{}_{}", region.name, style.name, source.name());
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
    let reads: Vec<StyleReads> = vec![read_style(style.name, &xml, 256, 1.0).unwrap()];
    // As `tilepipe run` does (`daemon::applier_for`): the hstore keys the
    // style's value conditions read are hashed too.
    let mut applier = Applier::for_settings(&settings)
        .unwrap()
        .with_digest_keys(reads[0].hstore_keys());
    let raster = ExpireConfig::default().raster();
    let valued = reads[0]
        .layers
        .iter()
        .filter(|l| !l.views.is_empty())
        .count();
    let filtered = reads[0]
        .layers
        .iter()
        .filter(|l| {
            l.views.iter().any(|v| {
                v.rules
                    .iter()
                    .any(|(_, f)| *f != Condition::Unknown && *f != Condition::All(Vec::new()))
            })
        })
        .count();
    eprintln!(
        "{case}: {} layers; value conditions followed in {valued}, rule filters in {filtered}",
        reads[0].layers.len()
    );

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
    let full = region.full_render();
    let whole = measured_metatiles(&region.bbox);
    let count: usize = whole.iter().map(Vec::len).sum();
    let renderer = Renderer::start(
        std::slice::from_ref(&config),
        &RenderConfig {
            threads: 2,
            queue_capacity: count + 1,
            ..RenderConfig::default()
        },
    )
    .unwrap();
    // Busy seconds and metatiles rendered per zoom, over every pass.
    let mut busy = [(0.0f64, 0usize); ZOOMS];
    let mut add_busy = |pass: &Pass| {
        for (sum, (b, n)) in busy.iter_mut().zip(pass.busy) {
            sum.0 += b;
            sum.1 += n;
        }
    };
    let mut before = None;
    let mut nondeterministic = None;
    if full {
        eprintln!("{case}: {count} metatiles per render pass, {diffs} diffs");
        let first = render_pass(&renderer, style.name, &whole);
        let second = render_pass(&renderer, style.name, &whole);
        nondeterministic = Some(changed_between(&first, &second).len());
        add_busy(&second);
        before = Some(second);
    } else {
        eprintln!(
            "{case}: {count} metatiles in the region at z10-z18: rendering around the expiry sets only, {diffs} diffs"
        );
    }
    let mut rendered = 0usize;

    let mut report = Report {
        region: region.name,
        style: style.name,
        source: source.name(),
        full: true,
        diffs,
        measured: 0,
        truth: [0; ZOOMS],
        tallies: [[Tally::default(); ZOOMS]; 5],
        misses: Default::default(),
        seconds: [0.0; ZOOMS],
        nondeterministic: 0,
        changed_rows: 0,
        elapsed: Duration::ZERO,
    };
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let (fewest, most) = changes_per_diff();
    let mut generator = match source {
        Source::Generated => Diffs::Generated(
            FeedGenerator::new(region.data.clone(), SEED, START, t0, 60)
                .with_changes_per_diff(fewest, most),
        ),
        Source::Real => {
            let planet = read_osc_file(&manifest().join(PLANET_DIFF)).unwrap();
            Diffs::Real(
                RelocatedDiffs::new(region.data.clone(), &planet, SEED, START, t0, 60)
                    .with_edits_per_diff(fewest, most),
            )
        }
    };
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
        // Committed after the methods' sets are known, for a large region:
        // the renderer's own connections see the state before the diff
        // until then.
        let rows = result.row_changes;
        report.changed_rows += rows.iter().filter(|r| r.changed).count();
        let all_changes = tiles_for_batch(&rows, &raster, true, &[]).unwrap();
        let default = tiles_for_batch(&rows, &raster, false, &[]).unwrap();
        // Without the rows' column hashes: the layers' tables, columns
        // and zooms only (style-aware expiry before value conditions).
        let hashless: Vec<RowChange> = rows
            .iter()
            .map(|r| RowChange {
                column_digests: None,
                ..r.clone()
            })
            .collect();
        let columns_only = tiles_for_batch(&hashless, &raster, false, &reads).unwrap();
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
        let aware_set: BTreeSet<Metatile> = (MIN_ZOOM..=MAX_ZOOM)
            .flat_map(|z| aware.metatiles(style.name, z))
            .chain((MIN_ZOOM..=MAX_ZOOM).flat_map(|z| columns_only.metatiles(style.name, z)))
            .collect();
        let measured = if full {
            tx.commit().unwrap();
            whole.clone()
        } else {
            let sets = [
                listed.clone(),
                (MIN_ZOOM..=MAX_ZOOM)
                    .flat_map(|z| all_changes.all.metatiles(z))
                    .collect(),
                (MIN_ZOOM..=MAX_ZOOM)
                    .flat_map(|z| default.all.metatiles(z))
                    .collect(),
                aware_set,
            ];
            let measured = around(&sets);
            let first = render_pass(&renderer, style.name, &measured);
            if nondeterministic.is_none() {
                // Once, on the first diff's metatiles up to z15 (the
                // costly ones, covering the most): is rendering
                // deterministic here?
                let low: Vec<Vec<Metatile>> = measured
                    .iter()
                    .map(|m| m.iter().filter(|m| m.z <= 15).copied().collect())
                    .collect();
                let second = render_pass(&renderer, style.name, &low);
                nondeterministic = Some(
                    second
                        .hashes
                        .iter()
                        .filter(|(m, h)| first.hashes.get(m) != Some(h))
                        .count(),
                );
            }
            add_busy(&first);
            before = Some(first);
            tx.commit().unwrap();
            measured
        };
        rendered += measured.iter().map(Vec::len).sum::<usize>();
        let before_pass = before.take().expect("a pass before the diff");

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
        let changed = changed_between(&before_pass, &after);
        add_busy(&after);

        for (i, z) in (MIN_ZOOM..=MAX_ZOOM).enumerate() {
            let truth: BTreeSet<Metatile> = changed.iter().filter(|m| m.z == z).copied().collect();
            report.truth[i] += truth.len();
            let expired: [BTreeSet<Metatile>; 5] = [
                listed.iter().filter(|m| m.z == z).copied().collect(),
                all_changes.all.metatiles(z).collect(),
                default.all.metatiles(z).collect(),
                columns_only.metatiles(style.name, z).into_iter().collect(),
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
                        tiles: changed_tiles(&before_pass, &after, metatile),
                        kind,
                        nearby,
                    });
                }
            }
        }
        if full {
            before = Some(after);
        }
        eprintln!(
            "{case}: diff {sequence}: {} changes, {} metatiles changed; expired: {}",
            changes.len(),
            changed.len(),
            (0..5)
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
    for (out, (b, n)) in report.seconds.iter_mut().zip(busy) {
        *out = if n > 0 { b / n as f64 } else { 0.0 };
    }
    report.measured = if full { count } else { rendered / diffs };
    report.full = full;
    report.nondeterministic = nondeterministic.unwrap_or(0);
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
            "## Expiry accuracy: {} with the {} style, {} diffs",
            self.region, self.style, self.source
        );
        println!();
        println!(
            "{} diffs of {}–{} {} ({} changed rows); {} metatiles rendered per pass ({}); {} changed in all; {} differed between two renders before any diff; {:.0} s",
            self.diffs,
            changes_per_diff().0,
            changes_per_diff().1,
            if self.source == "real" { "edits of the planet diff" } else { "changes" },
            self.changed_rows,
            self.measured,
            if self.full {
                "the region's z10–z18 with a ring of one metatile"
            } else {
                "on average: every metatile some method expires, with the ring of eight around each"
            },
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
        let row = |label: String, truth: usize, tallies: [Tally; 5]| {
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
                [0, 1, 2, 3, 4].map(|m| self.tallies[m][i]),
            );
        }
        row(
            "total".into(),
            truth,
            [0, 1, 2, 3, 4].map(|m| self.total(m)),
        );
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
            // The misses the default method did not have come first, all
            // of them: they are what a narrower method costs in recall.
            let default_misses: BTreeSet<(u64, u32, u32, u32)> =
                self.misses[DEFAULT].iter().map(Miss::key).collect();
            let (own, shared): (Vec<&Miss>, Vec<&Miss>) = misses
                .iter()
                .partition(|miss| m > DEFAULT && !default_misses.contains(&miss.key()));
            let listed = own.len() + shared.len().min(25);
            for (i, miss) in own.iter().chain(shared.iter().take(25)).enumerate() {
                if i == 0 && !own.is_empty() {
                    println!("- ({} not missed by tilepipe default:)", own.len());
                }
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
            if misses.len() > listed {
                println!("- … and {} more", misses.len() - listed);
            }
            println!();
        }
        self.bench_lines();
    }

    fn bench_lines(&self) {
        let truth: usize = self.truth.iter().sum();
        let aware = self.total(STYLE_AWARE);
        let peer = self.total(OSM2PGSQL);
        let case = format!(
            "{}, {} style, {} diffs",
            self.region, self.style, self.source
        );
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
    let mut sources = vec![Source::Generated];
    if manifest().join(PLANET_DIFF).is_file() {
        sources.push(Source::Real);
    } else {
        eprintln!("{PLANET_DIFF} not found: generated diffs only");
    }
    let wanted = std::env::var("TILEPIPE_BENCH_CASES").ok();
    let cluster = PgCluster::start(None).unwrap();
    for style in &styles {
        for region in &regions {
            for &source in &sources {
                let case = format!("{}/{}/{}", region.name, style.name, source.name());
                if wanted.as_deref().is_some_and(|w| !case.contains(w)) {
                    continue;
                }
                let report = measure(&cluster, region, style, source, work.path());
                report.print();
            }
        }
    }
    if verbose() {
        std::mem::forget(work);
    }
}
