//! OSC parsing throughput, tilepipe against `osmium cat` (libosmium).
//!
//! Run with `cargo bench --bench osc_parse`. Figures are MB/s of
//! uncompressed XML. tilepipe parses from memory so disk speed is not
//! measured; osmium reads a temporary file (from the page cache) and writes
//! OSC to /dev/null, which is the cheapest complete run the tool offers, and
//! its figure includes process start-up, also reported on its own.

use std::hint::black_box;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tilepipe::osm::osc::{parse_osc, OscReader};
use tilepipe::osm::osc_write::write_osc;
use tilepipe::osm::{Action, Change};
use tilepipe::osm::{Location, Member, Meta, Node, Object, ObjectType, Relation, Tags, Way};

const OSMIUM: &str = "/usr/bin/osmium";
/// Objects in the generated diff; gives about 165 MB of XML.
const GENERATED_OBJECTS: usize = 400_000;
const MIN_RUNS: usize = 5;
const MIN_MEASURED: Duration = Duration::from_secs(2);
const MAX_RUNS: usize = 500;
const OSMIUM_RUNS: usize = 5;

fn main() {
    let osmium_available = Path::new(OSMIUM).exists();
    if !osmium_available {
        println!("{OSMIUM} not found: reporting tilepipe only");
    }
    let startup = osmium_available.then(osmium_startup);

    let mut rows = Vec::new();
    // shared_data says when the real diff is skipped.
    if let Some(compressed) = tilepipe_testkit::shared_data("000466354.osc.gz")
        .map(|path| std::fs::read(path).expect("reading the real diff"))
    {
        let mut xml = Vec::new();
        flate2::bufread::MultiGzDecoder::new(compressed.as_slice())
            .read_to_end(&mut xml)
            .expect("decompressing the real diff");
        rows.push(measure("000466354 (real minutely)", &xml, osmium_available));
    }

    let started = Instant::now();
    let xml = generate_diff(GENERATED_OBJECTS);
    println!(
        "generated {:.1} MB diff with {GENERATED_OBJECTS} objects in {:.1} s",
        megabytes(xml.len()),
        started.elapsed().as_secs_f64()
    );
    rows.push(measure("generated", &xml, osmium_available));
    drop(xml);

    print_table(&rows, startup);
}

struct Row {
    input: &'static str,
    bytes: usize,
    objects: usize,
    stream: Timings,
    change_set: Timings,
    osmium: Option<Timings>,
}

/// Wall-clock times of repeated runs over the same input.
struct Timings(Vec<Duration>);

impl Timings {
    fn sorted(&self) -> Vec<Duration> {
        let mut times = self.0.clone();
        times.sort();
        times
    }

    fn median(&self) -> Duration {
        let times = self.sorted();
        let middle = times.len() / 2;
        if times.len() % 2 == 0 {
            (times[middle - 1] + times[middle]) / 2
        } else {
            times[middle]
        }
    }

    fn rate(&self, bytes: usize) -> f64 {
        megabytes(bytes) / self.median().as_secs_f64()
    }

    /// Slowest and fastest run as MB/s.
    fn spread(&self, bytes: usize) -> (f64, f64) {
        let times = self.sorted();
        let rate = |time: &Duration| megabytes(bytes) / time.as_secs_f64();
        (rate(times.last().unwrap()), rate(&times[0]))
    }

    fn describe(&self, bytes: usize) -> String {
        let (low, high) = self.spread(bytes);
        format!("{:.0} ({low:.0}–{high:.0})", self.rate(bytes))
    }
}

fn measure(input: &'static str, xml: &[u8], with_osmium: bool) -> Row {
    println!("measuring {input} ({:.1} MB)", megabytes(xml.len()));
    let mut objects = 0;
    let stream = repeat(|| {
        objects = 0;
        for change in OscReader::new(xml, input) {
            black_box(change.expect("benchmark input parses"));
            objects += 1;
        }
    });
    let change_set = repeat(|| {
        black_box(parse_osc(xml, input).expect("benchmark input parses"));
    });
    let osmium = with_osmium.then(|| {
        let path = temp_path("input.osc");
        std::fs::write(&path, xml).expect("writing the osmium input");
        let timings = Timings((0..OSMIUM_RUNS).map(|_| run_osmium(&path)).collect());
        let _ = std::fs::remove_file(&path);
        timings
    });
    Row {
        input,
        bytes: xml.len(),
        objects,
        stream,
        change_set,
        osmium,
    }
}

/// Runs `run` at least `MIN_RUNS` times and for at least `MIN_MEASURED`.
fn repeat(mut run: impl FnMut()) -> Timings {
    let mut times = Vec::new();
    let mut total = Duration::ZERO;
    while times.len() < MIN_RUNS || (total < MIN_MEASURED && times.len() < MAX_RUNS) {
        let started = Instant::now();
        run();
        let time = started.elapsed();
        total += time;
        times.push(time);
    }
    Timings(times)
}

fn run_osmium(path: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(OSMIUM)
        .arg("cat")
        .arg(path)
        .args(["-o", "/dev/null", "-f", "osc", "--overwrite"])
        .stdout(Stdio::null())
        .status()
        .expect("running osmium");
    let time = started.elapsed();
    assert!(status.success(), "osmium cat failed: {status}");
    time
}

/// osmium's time for an empty diff: process start-up and teardown.
fn osmium_startup() -> Duration {
    let path = temp_path("empty.osc");
    std::fs::write(&path, "<osmChange version=\"0.6\">\n</osmChange>\n").unwrap();
    let timings = Timings((0..OSMIUM_RUNS).map(|_| run_osmium(&path)).collect());
    let _ = std::fs::remove_file(&path);
    timings.median()
}

fn print_table(rows: &[Row], startup: Option<Duration>) {
    println!();
    println!(
        "| input | size MB | objects | tilepipe MB/s (spread) | tilepipe → ChangeSet MB/s (spread) \
         | osmium MB/s (spread) | ratio tilepipe/osmium |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let (osmium, ratio) = match &row.osmium {
            Some(osmium) => (
                osmium.describe(row.bytes),
                format!("{:.2}", row.stream.rate(row.bytes) / osmium.rate(row.bytes)),
            ),
            None => ("n/a".to_owned(), "n/a".to_owned()),
        };
        println!(
            "| {} | {:.1} | {} | {} | {} | {osmium} | {ratio} |",
            row.input,
            megabytes(row.bytes),
            row.objects,
            row.stream.describe(row.bytes),
            row.change_set.describe(row.bytes),
        );
    }
    println!();
    println!(
        "tilepipe: OscReader streaming every change from memory; \"→ ChangeSet\" is parse_osc, \
         which also merges into the newest-version-wins set. Median over ≥{MIN_RUNS} runs \
         and ≥{}s; spread is slowest–fastest run.",
        MIN_MEASURED.as_secs()
    );
    if let Some(startup) = startup {
        println!(
            "osmium: `osmium cat FILE.osc -o /dev/null -f osc --overwrite`, median of {OSMIUM_RUNS} \
             runs; includes start-up of {:.1} ms (measured on an empty diff).",
            startup.as_secs_f64() * 1e3
        );
        for row in rows {
            let Some(osmium) = &row.osmium else { continue };
            let parse_only = osmium.median().saturating_sub(startup);
            if parse_only.is_zero() {
                continue;
            }
            let rate = megabytes(row.bytes) / parse_only.as_secs_f64();
            println!(
                "  {}: osmium without start-up {rate:.0} MB/s, ratio {:.2}",
                row.input,
                row.stream.rate(row.bytes) / rate
            );
        }
    }
}

fn megabytes(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tilepipe-osc-bench-{}-{name}", std::process::id()))
}

/// Deterministic pseudo-random numbers (xorshift64), so every run benchmarks
/// the same document.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const USERS: &[&str] = &[
    "CeesW",
    "Jørn-osm",
    "misht",
    "Essex_Boy",
    "ÖPNV-Fan",
    "木村",
    "R&D mapper",
    "bot \"import\"",
    "Ана",
    "x",
];
const NODE_TAGS: &[(&str, &[&str])] = &[
    (
        "amenity",
        &["cafe", "bench", "parking", "restaurant", "waste_basket"],
    ),
    (
        "highway",
        &["crossing", "bus_stop", "traffic_signals", "street_lamp"],
    ),
    ("barrier", &["gate", "bollard"]),
    (
        "name",
        &[
            "Café Ñandú",
            "Bäckerei Müller",
            "Fish & Chips",
            "東京駅",
            "\"The\" Pub",
        ],
    ),
    ("source", &["PGS", "survey", "Bing", "knowledge"]),
];
const WAY_TAGS: &[(&str, &[&str])] = &[
    (
        "highway",
        &["residential", "service", "footway", "track", "primary"],
    ),
    ("building", &["yes", "house", "apartments", "garage"]),
    ("surface", &["asphalt", "gravel", "paved"]),
    (
        "name",
        &[
            "Hauptstraße",
            "Rue de l'Église",
            "High Street",
            "Улица Ленина",
        ],
    ),
    ("landuse", &["residential", "farmland", "forest"]),
    ("source", &["Bing", "survey", "cadastre & ortho"]),
];
const RELATION_TAGS: &[(&str, &[&str])] = &[
    (
        "type",
        &["multipolygon", "route", "restriction", "boundary"],
    ),
    ("route", &["bus", "bicycle", "hiking"]),
    ("name", &["Line 5", "Grenzweg", "Ring <inner>"]),
    ("network", &["VBB", "lcn", "rwn"]),
];
const ROLES: &[&str] = &[
    "outer", "inner", "", "stop", "platform", "forward", "from", "via",
];

fn generate_diff(objects: usize) -> Vec<u8> {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let start: DateTime<Utc> = "2013-08-04T00:00:00Z".parse().unwrap();
    let mut changes = Vec::with_capacity(objects);
    let mut next_id = [1_000_000_000i64, 200_000_000, 3_000_000];
    // Diffs list objects in runs of one action, as changesets upload them.
    let mut action = Action::Create;
    let mut run_left = 0;
    for _ in 0..objects {
        if run_left == 0 {
            action = match random.below(10) {
                0..=5 => Action::Create,
                6..=8 => Action::Modify,
                _ => Action::Delete,
            };
            run_left = random.between(1, 40);
        }
        run_left -= 1;
        let kind = match random.below(100) {
            0..=69 => ObjectType::Node,
            70..=97 => ObjectType::Way,
            _ => ObjectType::Relation,
        };
        let slot = kind as usize;
        next_id[slot] += random.between(1, 5) as i64;
        let id = next_id[slot];
        let version = match action {
            Action::Create => 1,
            _ => random.between(2, 12) as u32,
        };
        let meta = Meta {
            version: Some(version),
            timestamp: Some(start + chrono::Duration::seconds(random.below(86_400) as i64)),
            changeset: Some(17_000_000 + random.below(50_000) as i64),
            uid: Some(random.below(2_000_000) as i64),
            user: Some(random.pick(USERS).to_owned()),
        };
        let deleted = action == Action::Delete;
        let object = match kind {
            ObjectType::Node => Object::Node(Node {
                id,
                meta,
                location: (!deleted || random.chance(50)).then(|| Location {
                    lat: (random.below(1_800_000_000) as i64 - 900_000_000) as f64 / 1e7,
                    lon: (random.below(3_600_000_000) as i64 - 1_800_000_000) as f64 / 1e7,
                }),
                tags: if !deleted && random.chance(25) {
                    random_tags(&mut random, NODE_TAGS, 1, 4)
                } else {
                    Tags::new()
                },
            }),
            ObjectType::Way => Object::Way(Way {
                id,
                meta,
                nodes: if deleted {
                    Vec::new()
                } else {
                    let count = random.between(5, 50);
                    let base = 1_000_000_000 + random.below(10_000_000) as i64;
                    (0..count).map(|i| base + i as i64 * 3).collect()
                },
                tags: if deleted {
                    Tags::new()
                } else {
                    random_tags(&mut random, WAY_TAGS, 1, 5)
                },
            }),
            ObjectType::Relation => Object::Relation(Relation {
                id,
                meta,
                members: if deleted {
                    Vec::new()
                } else {
                    (0..random.between(2, 30))
                        .map(|_| Member {
                            kind: match random.below(10) {
                                0..=5 => ObjectType::Way,
                                6..=8 => ObjectType::Node,
                                _ => ObjectType::Relation,
                            },
                            id: random.between(1, 300_000_000) as i64,
                            role: random.pick(ROLES).to_owned(),
                        })
                        .collect()
                },
                tags: if deleted {
                    Tags::new()
                } else {
                    random_tags(&mut random, RELATION_TAGS, 2, 4)
                },
            }),
        };
        changes.push(Change { action, object });
    }
    let mut xml = Vec::with_capacity(objects * 200);
    write_osc(&mut xml, "tilepipe osc_parse bench", &changes).unwrap();
    xml
}

fn random_tags(random: &mut Random, pool: &[(&str, &[&str])], min: u64, max: u64) -> Tags {
    let count = random.between(min, max.min(pool.len() as u64)) as usize;
    let first = random.below(pool.len() as u64) as usize;
    (0..count)
        .map(|i| {
            let (key, values) = pool[(first + i) % pool.len()];
            (key.to_owned(), random.pick(values).to_owned())
        })
        .collect()
}
