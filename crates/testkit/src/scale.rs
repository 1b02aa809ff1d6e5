//! Scale datasets for benchmarks: a real extract repeated N times side by
//! side on the map, written as OSM PBF, and a "vandalism" diff that
//! touches a whole city.
//!
//! Copy `k` of the extract is shifted by whole extract sizes (plus a 2 %
//! gap) to cell `(k % columns, k / columns)` of a grid of `ceil(sqrt(N))`
//! columns, away from the antimeridian and the nearest pole, so that 100
//! copies of a region stay inside valid longitudes and the Web Mercator
//! latitude range. Its ids are offset by `k × id_offset`, where
//! `id_offset` is the smallest power of ten above every id of the extract,
//! so copy 0 keeps the extract's ids and the others read naturally
//! (Liechtenstein's node 17 in copy 3 is node 300017). Shifts are whole
//! units of 1e-7 degrees, so coordinates survive the round trip exactly.
//!
//! The PBF writer ([`PbfWriter`]) is a small hand-written protobuf encoder
//! of the OSM PBF format (`fileformat.proto`, `osmformat.proto`): dense
//! nodes, ways, relations, metadata when the objects carry it, zlib
//! compressed blocks of at most 8000 objects of one type, and the
//! replication fields (timestamp, sequence, base URL) in the header, which
//! `tilepipe init --from-pbf` and `osm2pgsql-replication init --osm-file`
//! read.

use crate::feedgen::OsmData;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use tilepipe::osm::{Action, Change};
use tilepipe::osm::{Location, Meta, Node, Object, ObjectType, Relation, Way};

/// Largest latitude of the Web Mercator square.
const MAX_LAT: f64 = 85.051_128;

/// A bounding box in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bbox {
    /// Smallest longitude.
    pub west: f64,
    /// Smallest latitude.
    pub south: f64,
    /// Largest longitude.
    pub east: f64,
    /// Largest latitude.
    pub north: f64,
}

impl Bbox {
    /// The box around every located node, `None` without any.
    pub fn of_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Option<Bbox> {
        let mut bbox: Option<Bbox> = None;
        for l in nodes.into_iter().filter_map(|n| n.location) {
            let b = bbox.get_or_insert(Bbox {
                west: l.lon,
                south: l.lat,
                east: l.lon,
                north: l.lat,
            });
            b.west = b.west.min(l.lon);
            b.east = b.east.max(l.lon);
            b.south = b.south.min(l.lat);
            b.north = b.north.max(l.lat);
        }
        bbox
    }

    /// Whether `l` lies in the box, edges included.
    pub fn contains(&self, l: Location) -> bool {
        (self.west..=self.east).contains(&l.lon) && (self.south..=self.north).contains(&l.lat)
    }

    /// Parses `W,S,E,N`.
    pub fn parse(text: &str) -> Result<Bbox> {
        let v: Vec<f64> = text
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("bbox {text:?}: expected W,S,E,N in degrees"))?;
        let [west, south, east, north] = v[..] else {
            bail!("bbox {text:?}: expected four numbers W,S,E,N");
        };
        if west > east || south > north {
            bail!("bbox {text:?}: west must not exceed east, south not north");
        }
        Ok(Bbox {
            west,
            south,
            east,
            north,
        })
    }
}

impl std::fmt::Display for Bbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.7},{:.7},{:.7},{:.7}",
            self.west, self.south, self.east, self.north
        )
    }
}

/// Where each copy of an extract goes and which ids it gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Number of copies, the extract itself included.
    pub copies: u32,
    /// Copies per row of the grid: `ceil(sqrt(copies))`.
    pub columns: u32,
    /// Shift between neighbouring copies in 1e-7 degrees, signed by the
    /// direction the grid grows in.
    pub step_lon: i64,
    /// Shift between neighbouring rows in 1e-7 degrees; negative when rows
    /// grow southwards.
    pub step_lat: i64,
    /// Id shift between neighbouring copies: the smallest power of ten
    /// above every id of the extract.
    pub id_offset: i64,
    /// The extract's own box: copy 0.
    pub source: Bbox,
}

impl Layout {
    /// Plans `copies` copies of an extract covering `source` whose largest
    /// id is `max_id`.
    pub fn plan(source: Bbox, max_id: i64, copies: u32) -> Result<Layout> {
        if copies == 0 {
            bail!("the number of copies must be at least 1");
        }
        let columns = (copies as f64).sqrt().ceil() as u32;
        let rows = copies.div_ceil(columns);
        let to_fixed = |deg: f64| (deg * 1e7).round() as i64;
        // Whole extract sizes plus a 2 % gap, at least 0.001° so a
        // one-node extract still spreads out.
        let width = to_fixed(((source.east - source.west) * 1.02).max(0.001));
        let height = to_fixed(((source.north - source.south) * 1.02).max(0.001));
        let span_lon = (columns - 1) as i64 * width;
        let span_lat = (rows - 1) as i64 * height;
        let step_lon = if to_fixed(source.east) + span_lon <= to_fixed(180.0) {
            width
        } else if to_fixed(source.west) - span_lon >= to_fixed(-180.0) {
            -width
        } else {
            bail!(
                "{copies} copies of a region {:.3}° wide do not fit between the antimeridians",
                source.east - source.west
            );
        };
        // Rows grow towards the equator first.
        let south_ok = to_fixed(source.south) - span_lat >= to_fixed(-MAX_LAT);
        let north_ok = to_fixed(source.north) + span_lat <= to_fixed(MAX_LAT);
        let step_lat = match (source.south + source.north > 0.0, south_ok, north_ok) {
            (true, true, _) | (false, true, false) => -height,
            (_, _, true) => height,
            _ => bail!(
                "{copies} copies of a region {:.3}° high do not fit in the Web Mercator latitudes",
                source.north - source.south
            ),
        };
        let mut id_offset = 10i64;
        while id_offset <= max_id {
            id_offset = id_offset
                .checked_mul(10)
                .context("ids too large to offset")?;
        }
        if id_offset.checked_mul(copies as i64).is_none() {
            bail!("{copies} copies of ids up to {max_id} overflow 64-bit ids");
        }
        Ok(Layout {
            copies,
            columns,
            step_lon,
            step_lat,
            id_offset,
            source,
        })
    }

    /// Plans the copies of `data`; its box is that of its nodes.
    pub fn for_data(data: &OsmData, copies: u32) -> Result<Layout> {
        let source = Bbox::of_nodes(data.nodes.values()).context("the extract has no nodes")?;
        let max_id = data.max_ids().into_iter().max().unwrap_or(0);
        Layout::plan(source, max_id, copies)
    }

    /// Shift of copy `k` in 1e-7 degrees (lon, lat).
    fn shift(&self, k: u32) -> (i64, i64) {
        let col = (k % self.columns) as i64;
        let row = (k / self.columns) as i64;
        (col * self.step_lon, row * self.step_lat)
    }

    /// The box of copy `k`.
    pub fn bbox(&self, k: u32) -> Bbox {
        let (dx, dy) = self.shift(k);
        let (dx, dy) = (dx as f64 / 1e7, dy as f64 / 1e7);
        Bbox {
            west: self.source.west + dx,
            south: self.source.south + dy,
            east: self.source.east + dx,
            north: self.source.north + dy,
        }
    }

    /// The box of the whole scaled region.
    pub fn region(&self) -> Bbox {
        (0..self.copies)
            .map(|k| self.bbox(k))
            .reduce(|a, b| Bbox {
                west: a.west.min(b.west),
                south: a.south.min(b.south),
                east: a.east.max(b.east),
                north: a.north.max(b.north),
            })
            .unwrap_or(self.source)
    }

    /// `object` as it appears in copy `k`.
    pub fn copy_object(&self, object: &Object, k: u32) -> Object {
        let offset = k as i64 * self.id_offset;
        let id = |id: i64| if id > 0 { id + offset } else { id };
        match object {
            Object::Node(n) => {
                let (dx, dy) = self.shift(k);
                Object::Node(Node {
                    id: id(n.id),
                    meta: n.meta.clone(),
                    location: n.location.map(|l| {
                        let (lon, lat) = l.to_fixed();
                        Location::from_fixed((lon as i64 + dx) as i32, (lat as i64 + dy) as i32)
                    }),
                    tags: n.tags.clone(),
                })
            }
            Object::Way(w) => Object::Way(Way {
                id: id(w.id),
                meta: w.meta.clone(),
                nodes: w.nodes.iter().map(|&n| id(n)).collect(),
                tags: w.tags.clone(),
            }),
            Object::Relation(r) => {
                let mut r = r.clone();
                r.id = id(r.id);
                r.members.iter_mut().for_each(|m| m.id = id(m.id));
                Object::Relation(r)
            }
        }
    }

    /// Every copy of `data`, in importer order (nodes of all copies, then
    /// ways, then relations; ids ascend because copies are offset).
    pub fn objects<'a>(&'a self, data: &'a OsmData) -> impl Iterator<Item = Object> + 'a {
        let nodes = (0..self.copies).flat_map(move |k| {
            data.nodes
                .values()
                .map(move |n| self.copy_object(&Object::Node(n.clone()), k))
        });
        let ways = (0..self.copies).flat_map(move |k| {
            data.ways
                .values()
                .map(move |w| self.copy_object(&Object::Way(w.clone()), k))
        });
        let relations = (0..self.copies).flat_map(move |k| {
            data.relations
                .values()
                .map(move |r| self.copy_object(&Object::Relation(r.clone()), k))
        });
        nodes.chain(ways).chain(relations)
    }
}

/// `data` with its ids renumbered densely: each type's objects get ids
/// 1, 2, 3… in their id order, and references follow (a way's node or a
/// relation's member missing from the extract is left out, as it would
/// be missing from the geometry anyway). Liechtenstein's node ids reach
/// 2.4e9 for 60,000 nodes, so 1000 offset copies would need ids up to
/// 1e13 and a flat-nodes file (8 bytes per possible id) of 80 TB, past
/// ext4's 16 TiB file size; renumbered, the same copies reach 1e8 ids
/// and 800 MB, as dense as the planet's ids are.
pub fn renumber(data: &OsmData) -> OsmData {
    fn ranks<T>(objects: &std::collections::BTreeMap<i64, T>) -> HashMap<i64, i64> {
        objects
            .keys()
            .enumerate()
            .map(|(rank, &id)| (id, rank as i64 + 1))
            .collect()
    }
    let node_ids = ranks(&data.nodes);
    let way_ids = ranks(&data.ways);
    let relation_ids = ranks(&data.relations);
    let mut out = OsmData::new();
    for node in data.nodes.values() {
        let id = node_ids[&node.id];
        out.nodes.insert(id, Node { id, ..node.clone() });
    }
    for way in data.ways.values() {
        let id = way_ids[&way.id];
        let nodes = way
            .nodes
            .iter()
            .filter_map(|n| node_ids.get(n).copied())
            .collect();
        out.ways.insert(
            id,
            Way {
                id,
                nodes,
                ..way.clone()
            },
        );
    }
    for relation in data.relations.values() {
        let mut relation = relation.clone();
        relation.id = relation_ids[&relation.id];
        relation.members.retain_mut(|member| {
            let ids = match member.kind {
                ObjectType::Node => &node_ids,
                ObjectType::Way => &way_ids,
                ObjectType::Relation => &relation_ids,
            };
            match ids.get(&member.id) {
                Some(&id) => {
                    member.id = id;
                    true
                }
                None => false,
            }
        });
        out.relations.insert(relation.id, relation);
    }
    out
}

/// `data` repeated `copies` times side by side, in memory.
pub fn scaled(data: &OsmData, copies: u32) -> Result<OsmData> {
    let layout = Layout::for_data(data, copies)?;
    Ok(OsmData::from_objects(layout.objects(data)))
}

/// Reads an extract (`.osm.pbf`, `.osm`, `.osm.gz`) into memory.
pub fn read_extract(path: &Path) -> Result<OsmData> {
    let mut data = OsmData::new();
    tilepipe::osm::input::read_objects::<anyhow::Error>(
        path,
        2,
        tilepipe::osm::input::Metadata::Full,
        |batch| {
            batch.into_iter().for_each(|o| data.insert(o));
            Ok(())
        },
    )
    .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(data)
}

/// Replication fields of a PBF header (osmosis's names).
#[derive(Debug, Clone, Default)]
pub struct PbfHeader {
    /// The file's bounding box (`HeaderBBox`); [`write_scaled`] sets it to
    /// the whole grid.
    pub bbox: Option<Bbox>,
    /// `writingprogram`.
    pub writing_program: String,
    /// `osmosis_replication_timestamp` (whole seconds).
    pub replication_timestamp: Option<DateTime<Utc>>,
    /// `osmosis_replication_sequence_number`.
    pub replication_sequence: Option<u64>,
    /// `osmosis_replication_base_url`.
    pub replication_base_url: Option<String>,
}

/// What [`write_scaled`] wrote.
#[derive(Debug, Clone)]
pub struct ScaleSummary {
    /// Where the copies went.
    pub layout: Layout,
    /// Nodes written, all copies together.
    pub nodes: u64,
    /// Ways written.
    pub ways: u64,
    /// Relations written.
    pub relations: u64,
}

/// Writes `copies` copies of `data` to the PBF file `out`.
pub fn write_scaled(
    data: &OsmData,
    copies: u32,
    out: &Path,
    mut header: PbfHeader,
) -> Result<ScaleSummary> {
    let layout = Layout::for_data(data, copies)?;
    header.bbox = Some(layout.region());
    let mut writer = PbfWriter::create(out, &header)?;
    for object in layout.objects(data) {
        writer.write(&object)?;
    }
    let counts = writer.counts;
    writer.finish()?;
    Ok(ScaleSummary {
        layout,
        nodes: counts[0],
        ways: counts[1],
        relations: counts[2],
    })
}

/// A "vandalism" diff over the objects inside `area` (everything when
/// `None`): one located node in five nudged by a few metres and every
/// highway (whose first node lies in the area) renamed. Over a city it
/// touches nearly every tile of it at every zoom.
pub fn vandalism(data: &OsmData, area: Option<Bbox>) -> Vec<Change> {
    let inside = |l: Option<Location>| l.is_some_and(|l| area.is_none_or(|a| a.contains(l)));
    let mut changes = Vec::new();
    let located = data.nodes.values().filter(|n| inside(n.location));
    for (i, node) in located.enumerate() {
        if i % 5 == 0 {
            let mut node = node.clone();
            node.location = node.location.map(|l| Location {
                lon: l.lon + 0.00005,
                lat: l.lat + 0.00003,
            });
            node.meta.version = node.meta.version.map(|v| v + 1);
            changes.push(Change {
                action: Action::Modify,
                object: Object::Node(node),
            });
        }
    }
    for way in data.ways.values() {
        let first = way.nodes.first().and_then(|n| data.nodes.get(n));
        if way.tags.iter().any(|(k, _)| k == "highway") && inside(first.and_then(|n| n.location)) {
            let mut way = way.clone();
            way.tags.retain(|(k, _)| k != "name");
            way.tags
                .push(("name".into(), format!("Vandal Street {}", way.id)));
            way.meta.version = way.meta.version.map(|v| v + 1);
            changes.push(Change {
                action: Action::Modify,
                object: Object::Way(way),
            });
        }
    }
    changes
}

// ---------------------------------------------------------------------
// PBF writing

/// Objects per block, as osmium writes them.
const BLOCK_OBJECTS: usize = 8000;
/// Start a new block beyond this much uncompressed data (the format's
/// limit is 32 MB, 16 MB recommended).
const BLOCK_BYTES: usize = 8 << 20;

/// Protobuf encoding, the few wire types the OSM PBF format uses.
mod pb {
    pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    pub fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
        varint(buf, (u64::from(field) << 3) | u64::from(wire));
    }

    /// int32, int64, uint32, uint64, bool, enum.
    pub fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
        key(buf, field, 0);
        varint(buf, v);
    }

    pub fn int(buf: &mut Vec<u8>, field: u32, v: i64) {
        uint(buf, field, v as u64);
    }

    pub fn sint(buf: &mut Vec<u8>, field: u32, v: i64) {
        uint(buf, field, zigzag(v));
    }

    pub fn bytes(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
        key(buf, field, 2);
        varint(buf, data.len() as u64);
        buf.extend_from_slice(data);
    }

    /// A packed repeated field of varints (already zigzagged for sint).
    pub fn packed(buf: &mut Vec<u8>, field: u32, values: impl IntoIterator<Item = u64>) {
        let mut inner = Vec::new();
        for v in values {
            varint(&mut inner, v);
        }
        if !inner.is_empty() {
            bytes(buf, field, &inner);
        }
    }

    /// Deltas of `values`, zigzagged: packed sint64 with delta coding.
    pub fn deltas(values: impl IntoIterator<Item = i64>) -> impl Iterator<Item = u64> {
        let mut previous = 0i64;
        values.into_iter().map(move |v| {
            let d = v.wrapping_sub(previous);
            previous = v;
            zigzag(d)
        })
    }
}

/// A block being filled: one object type, its string table.
#[derive(Default)]
struct Block {
    strings: Vec<String>,
    index: HashMap<String, u32>,
    /// Encoded groups content: dense node columns or way/relation messages.
    nodes: Vec<Node>,
    encoded: Vec<u8>,
    kind: Option<ObjectType>,
    count: usize,
}

impl Block {
    fn sid(&mut self, s: &str) -> u32 {
        if self.strings.is_empty() {
            self.strings.push(String::new());
        }
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    fn info(&mut self, meta: &Meta) -> Option<Vec<u8>> {
        let version = meta.version?;
        let mut info = Vec::new();
        pb::int(&mut info, 1, i64::from(version));
        if let Some(t) = meta.timestamp {
            pb::int(&mut info, 2, t.timestamp());
        }
        if let Some(c) = meta.changeset {
            pb::int(&mut info, 3, c);
        }
        if let Some(uid) = meta.uid {
            pb::int(&mut info, 4, uid);
        }
        if let Some(user) = &meta.user {
            let sid = self.sid(user);
            pb::uint(&mut info, 5, u64::from(sid));
        }
        Some(info)
    }

    fn add_way(&mut self, w: &Way) {
        let mut msg = Vec::new();
        pb::int(&mut msg, 1, w.id);
        let keys: Vec<u64> = w.tags.iter().map(|(k, _)| self.sid(k).into()).collect();
        let vals: Vec<u64> = w.tags.iter().map(|(_, v)| self.sid(v).into()).collect();
        pb::packed(&mut msg, 2, keys);
        pb::packed(&mut msg, 3, vals);
        if let Some(info) = self.info(&w.meta) {
            pb::bytes(&mut msg, 4, &info);
        }
        pb::packed(&mut msg, 8, pb::deltas(w.nodes.iter().copied()));
        pb::bytes(&mut self.encoded, 3, &msg);
    }

    fn add_relation(&mut self, r: &Relation) {
        let mut msg = Vec::new();
        pb::int(&mut msg, 1, r.id);
        let keys: Vec<u64> = r.tags.iter().map(|(k, _)| self.sid(k).into()).collect();
        let vals: Vec<u64> = r.tags.iter().map(|(_, v)| self.sid(v).into()).collect();
        pb::packed(&mut msg, 2, keys);
        pb::packed(&mut msg, 3, vals);
        if let Some(info) = self.info(&r.meta) {
            pb::bytes(&mut msg, 4, &info);
        }
        let roles: Vec<u64> = r.members.iter().map(|m| self.sid(&m.role).into()).collect();
        pb::packed(&mut msg, 8, roles);
        pb::packed(&mut msg, 9, pb::deltas(r.members.iter().map(|m| m.id)));
        let types = r.members.iter().map(|m| match m.kind {
            ObjectType::Node => 0,
            ObjectType::Way => 1,
            ObjectType::Relation => 2,
        });
        pb::packed(&mut msg, 10, types);
        pb::bytes(&mut self.encoded, 4, &msg);
    }

    /// The dense node group of the collected nodes.
    fn encode_dense(&mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        let mut dense = Vec::new();
        pb::packed(&mut dense, 1, pb::deltas(nodes.iter().map(|n| n.id)));
        if nodes.iter().all(|n| n.meta.version.is_some()) {
            let mut info = Vec::new();
            let metas = || nodes.iter().map(|n| &n.meta);
            pb::packed(
                &mut info,
                1,
                metas().map(|m| u64::from(m.version.unwrap_or(0))),
            );
            pb::packed(
                &mut info,
                2,
                pb::deltas(metas().map(|m| m.timestamp.map_or(0, |t| t.timestamp()))),
            );
            pb::packed(
                &mut info,
                3,
                pb::deltas(metas().map(|m| m.changeset.unwrap_or(0))),
            );
            // uid and user_sid are sint32 deltas: the same zigzag on
            // values that fit 32 bits.
            pb::packed(
                &mut info,
                4,
                pb::deltas(metas().map(|m| m.uid.unwrap_or(0))),
            );
            let sids: Vec<i64> = nodes
                .iter()
                .map(|n| i64::from(self.sid(n.meta.user.as_deref().unwrap_or(""))))
                .collect();
            pb::packed(&mut info, 5, pb::deltas(sids));
            pb::bytes(&mut dense, 5, &info);
        }
        let fixed: Vec<(i32, i32)> = nodes
            .iter()
            .map(|n| n.location.map_or((0, 0), |l| l.to_fixed()))
            .collect();
        pb::packed(
            &mut dense,
            8,
            pb::deltas(fixed.iter().map(|&(_, lat)| i64::from(lat))),
        );
        pb::packed(
            &mut dense,
            9,
            pb::deltas(fixed.iter().map(|&(lon, _)| i64::from(lon))),
        );
        if nodes.iter().any(|n| !n.tags.is_empty()) {
            let mut keys_vals = Vec::new();
            for n in &nodes {
                for (k, v) in &n.tags {
                    keys_vals.push(u64::from(self.sid(k)));
                    keys_vals.push(u64::from(self.sid(v)));
                }
                keys_vals.push(0);
            }
            pb::packed(&mut dense, 10, keys_vals);
        }
        pb::bytes(&mut self.encoded, 2, &dense);
    }

    /// The PrimitiveBlock message; empties the block.
    fn finish(&mut self) -> Vec<u8> {
        if !self.nodes.is_empty() {
            self.encode_dense();
        }
        if self.strings.is_empty() {
            self.strings.push(String::new());
        }
        let mut table = Vec::new();
        for s in &self.strings {
            pb::bytes(&mut table, 1, s.as_bytes());
        }
        let mut block = Vec::new();
        pb::bytes(&mut block, 1, &table);
        pb::bytes(&mut block, 2, &self.encoded);
        // granularity 100 nanodegrees (1e-7°), date granularity 1000 ms:
        // the defaults, written out for readers that do not apply them.
        pb::int(&mut block, 17, 100);
        pb::int(&mut block, 18, 1000);
        *self = Block::default();
        block
    }

    fn size(&self) -> usize {
        self.encoded.len() + self.nodes.len() * 24
    }
}

/// Writes an OSM PBF file: objects must come in importer order (nodes,
/// ways, relations).
pub struct PbfWriter {
    out: BufWriter<File>,
    path: PathBuf,
    block: Block,
    /// Nodes, ways, relations written.
    pub counts: [u64; 3],
}

impl PbfWriter {
    /// Creates `path` and writes the `OSMHeader` block.
    pub fn create(path: &Path, header: &PbfHeader) -> Result<PbfWriter> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = PbfWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            block: Block::default(),
            counts: [0; 3],
        };
        let mut msg = Vec::new();
        if let Some(b) = header.bbox {
            let nano = |deg: f64| (deg * 1e9).round() as i64;
            let mut bbox = Vec::new();
            pb::sint(&mut bbox, 1, nano(b.west));
            pb::sint(&mut bbox, 2, nano(b.east));
            pb::sint(&mut bbox, 3, nano(b.north));
            pb::sint(&mut bbox, 4, nano(b.south));
            pb::bytes(&mut msg, 1, &bbox);
        }
        pb::bytes(&mut msg, 4, b"OsmSchema-V0.6");
        pb::bytes(&mut msg, 4, b"DenseNodes");
        pb::bytes(&mut msg, 5, b"Sort.Type_then_ID");
        pb::bytes(&mut msg, 16, header.writing_program.as_bytes());
        if let Some(t) = header.replication_timestamp {
            pb::int(&mut msg, 32, t.timestamp());
        }
        if let Some(s) = header.replication_sequence {
            pb::int(&mut msg, 33, s as i64);
        }
        if let Some(url) = &header.replication_base_url {
            pb::bytes(&mut msg, 34, url.as_bytes());
        }
        writer.write_blob("OSMHeader", &msg)?;
        Ok(writer)
    }

    /// Adds one object.
    pub fn write(&mut self, object: &Object) -> Result<()> {
        let kind = object.object_id().kind;
        if self.block.kind.is_some_and(|k| k != kind)
            || self.block.count >= BLOCK_OBJECTS
            || self.block.size() >= BLOCK_BYTES
        {
            self.flush_block()?;
        }
        self.block.kind = Some(kind);
        self.block.count += 1;
        match object {
            Object::Node(n) => {
                self.counts[0] += 1;
                self.block.nodes.push(n.clone());
            }
            Object::Way(w) => {
                self.counts[1] += 1;
                self.block.add_way(w);
            }
            Object::Relation(r) => {
                self.counts[2] += 1;
                self.block.add_relation(r);
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block.count > 0 {
            let block = self.block.finish();
            self.write_blob("OSMData", &block)?;
        }
        Ok(())
    }

    fn write_blob(&mut self, kind: &str, raw: &[u8]) -> Result<()> {
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(raw)?;
        let compressed = zlib.finish()?;
        let mut blob = Vec::new();
        pb::int(&mut blob, 2, raw.len() as i64);
        pb::bytes(&mut blob, 3, &compressed);
        let mut blob_header = Vec::new();
        pb::bytes(&mut blob_header, 1, kind.as_bytes());
        pb::int(&mut blob_header, 3, blob.len() as i64);
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            out.write_all(&(blob_header.len() as u32).to_be_bytes())?;
            out.write_all(&blob_header)?;
            out.write_all(&blob)
        };
        write(&mut self.out).with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Writes the last block and flushes the file.
    pub fn finish(mut self) -> Result<()> {
        self.flush_block()?;
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tilepipe::osm::Member;

    fn sample() -> OsmData {
        let meta = |v: u32| Meta {
            version: Some(v),
            timestamp: DateTime::from_timestamp(1_375_000_000 + i64::from(v), 0),
            changeset: Some(1000 + i64::from(v)),
            uid: Some(42),
            user: Some("mapper".into()),
        };
        let mut objects = Vec::new();
        for i in 1..=20 {
            objects.push(Object::Node(Node {
                id: i,
                meta: meta(i as u32),
                location: Some(Location::from_fixed(
                    95_000_000 + i as i32 * 1000,
                    471_000_000 - i as i32 * 700,
                )),
                tags: if i % 4 == 0 {
                    vec![("amenity".into(), "bench".into())]
                } else {
                    vec![]
                },
            }));
        }
        objects.push(Object::Way(Way {
            id: 7,
            meta: meta(3),
            nodes: vec![1, 2, 3, 4, 1],
            tags: vec![
                ("building".into(), "yes".into()),
                ("name".into(), "Haus".into()),
            ],
        }));
        objects.push(Object::Way(Way {
            id: 8,
            meta: meta(1),
            nodes: vec![5, 6, 7, 20],
            tags: vec![("highway".into(), "residential".into())],
        }));
        objects.push(Object::Relation(Relation {
            id: 3,
            meta: meta(2),
            members: vec![
                Member {
                    kind: ObjectType::Way,
                    id: 7,
                    role: "outer".into(),
                },
                Member {
                    kind: ObjectType::Node,
                    id: 9,
                    role: "".into(),
                },
            ],
            tags: vec![("type".into(), "multipolygon".into())],
        }));
        OsmData::from_objects(objects)
    }

    #[test]
    fn pbf_round_trip_keeps_every_object() {
        let data = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.osm.pbf");
        let summary = write_scaled(&data, 3, &path, PbfHeader::default()).unwrap();
        assert_eq!((summary.nodes, summary.ways, summary.relations), (60, 6, 3));
        let back = OsmData::from_pbf(&path).unwrap();
        let expected = scaled(&data, 3).unwrap();
        assert_eq!(back, expected);
        // Copy 0 is the extract itself.
        assert_eq!(back.nodes[&5], data.nodes[&5]);
        assert_eq!(summary.layout.id_offset, 100);
        assert_eq!(back.ways[&108].nodes, vec![105, 106, 107, 120]);
    }

    #[test]
    fn renumbering_makes_ids_dense_and_keeps_references() {
        let mut data = sample();
        // Sparse ids, and a member missing from the extract.
        let mut sparse = OsmData::new();
        for node in data.nodes.values() {
            let id = node.id * 1_000_000_007;
            sparse.nodes.insert(id, Node { id, ..node.clone() });
        }
        for way in data.ways.values() {
            let nodes = way.nodes.iter().map(|n| n * 1_000_000_007).collect();
            sparse.ways.insert(
                way.id * 5,
                Way {
                    id: way.id * 5,
                    nodes,
                    ..way.clone()
                },
            );
        }
        let relation = data.relations.values_mut().next().unwrap();
        relation.members[0].id *= 5;
        relation.members[1].id *= 1_000_000_007;
        relation.members.push(Member {
            kind: ObjectType::Way,
            id: 999,
            role: "outer".into(),
        });
        sparse.relations.insert(relation.id, relation.clone());
        let dense = renumber(&sparse);
        assert_eq!(
            dense.nodes.keys().copied().collect::<Vec<_>>(),
            (1..=20).collect::<Vec<_>>()
        );
        assert_eq!(dense.ways[&1].nodes, vec![1, 2, 3, 4, 1]);
        assert_eq!(dense.ways[&2].nodes, vec![5, 6, 7, 20]);
        assert_eq!(dense.ways[&1].tags, data.ways[&7].tags);
        let members: Vec<_> = dense.relations[&1]
            .members
            .iter()
            .map(|m| (m.kind, m.id))
            .collect();
        assert_eq!(members, vec![(ObjectType::Way, 1), (ObjectType::Node, 9)]);
        assert_eq!(dense.nodes[&9].location, data.nodes[&9].location);
    }

    #[test]
    fn pbf_header_carries_replication_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.osm.pbf");
        let header = PbfHeader {
            writing_program: "test".into(),
            replication_timestamp: DateTime::from_timestamp(1_375_556_402, 0),
            replication_sequence: Some(1234),
            replication_base_url: Some("http://127.0.0.1:1/".into()),
            ..PbfHeader::default()
        };
        write_scaled(&sample(), 1, &path, header).unwrap();
        let read = tilepipe::osm::pbf_header::read_pbf_header(&path).unwrap();
        assert_eq!(read.sequence, Some(1234));
        assert_eq!(read.base_url.as_deref(), Some("http://127.0.0.1:1/"));
        assert_eq!(read.timestamp, DateTime::from_timestamp(1_375_556_402, 0));
    }

    #[test]
    fn a_hundred_copies_stay_on_the_map() {
        // Liechtenstein's box; and one near the antimeridian and a pole.
        for source in [
            Bbox::parse("9.3977818,46.7862853,9.6714552,47.525823").unwrap(),
            Bbox::parse("178.5,70.0,179.9,72.5").unwrap(),
            Bbox::parse("-179.9,-60.0,-178.0,-58.0").unwrap(),
        ] {
            let layout = Layout::plan(source, 65733, 100).unwrap();
            assert_eq!(layout.columns, 10);
            assert_eq!(layout.id_offset, 100_000);
            let region = layout.region();
            assert!(region.west >= -180.0 && region.east <= 180.0, "{region}");
            assert!(
                region.south >= -MAX_LAT && region.north <= MAX_LAT,
                "{region}"
            );
            // Neighbouring copies do not overlap.
            let (a, b) = (layout.bbox(0), layout.bbox(1));
            assert!(a.east < b.west || b.east < a.west);
            let c = layout.bbox(layout.columns);
            assert!(a.north < c.south || c.north < a.south);
        }
        assert!(Layout::plan(Bbox::parse("-170,-80,170,80").unwrap(), 1, 4).is_err());
    }

    #[test]
    fn vandalism_stays_in_its_area() {
        let data = scaled(&sample(), 4).unwrap();
        let layout = Layout::for_data(&sample(), 4).unwrap();
        let all = vandalism(&data, None);
        let city = vandalism(&data, Some(layout.bbox(0)));
        assert_eq!(city.len() * 4, all.len());
        assert!(city.iter().all(|c| c.object.object_id().id < 100));
    }
}
