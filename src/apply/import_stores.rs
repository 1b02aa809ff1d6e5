//! What an import keeps of the objects it has read, packed for memory:
//! node locations ([`PackedLocations`]) and the ways relations may need
//! ([`SpilledWays`], written to a temporary file).
//!
//! Both rely on the reader handing objects on in ascending id order (it
//! refuses an unsorted file, as osm2pgsql does). osm2pgsql's own node
//! cache packs locations in blocks for the same reason (osm2pgsql 1.8,
//! `node_locations_t` in src/node-locations.cpp). Locations are
//! delta-coded, since there are many of them; the ways' offsets keep
//! fixed-width entries, so that a lookup is two binary searches and no
//! decoding.

use crate::osm::{Location, Way};
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// Entries per block of a [`PackedById`].
const BLOCK_LEN: usize = 256;

/// Entries per chunk of a [`PackedById`]'s arrays: 64 Ki entries, so a
/// chunk is one large allocation (256 KiB of id deltas, 512 KiB of
/// locations) that malloc serves from its own mapping, apart from the
/// import's many short-lived small allocations.
const CHUNK_LEN: usize = 1 << 16;

/// Values by id, for ids pushed in ascending order, in blocks of
/// [`BLOCK_LEN`] entries whose ids lie within `u32::MAX` of the block's
/// first id: an id costs 4 bytes beside its value (8 in a plain sorted
/// vector). The entries live in fixed chunks, so the store grows a chunk
/// at a time, never by copying itself into an array twice its size
/// (which, at the moment of the copy, holds three times what is stored).
/// Block `b` holds entries `b × BLOCK_LEN ..` of the chunked arrays; a
/// block cut short (the next id too far from its first) leaves its slots
/// unused.
pub(crate) struct PackedById<V> {
    /// Each block's first id, for bisection.
    first_ids: Vec<i64>,
    /// Each block's number of entries.
    block_lens: Vec<u16>,
    /// Per entry, its id minus its block's first id.
    id_deltas: Vec<Box<[u32]>>,
    values: Vec<Box<[V]>>,
    last_id: Option<i64>,
    len: usize,
}

impl<V: Copy + Default> Default for PackedById<V> {
    fn default() -> Self {
        PackedById {
            first_ids: Vec::new(),
            block_lens: Vec::new(),
            id_deltas: Vec::new(),
            values: Vec::new(),
            last_id: None,
            len: 0,
        }
    }
}

/// Where an entry is: block and position in it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Slot {
    block: usize,
    index: usize,
}

impl Slot {
    /// The entry's position in the chunked arrays: chunk, then offset.
    fn position(self) -> (usize, usize) {
        let entry = self.block * BLOCK_LEN + self.index;
        (entry / CHUNK_LEN, entry % CHUNK_LEN)
    }
}

impl<V: Copy + Default> PackedById<V> {
    /// Adds `value` for `id`, which must be greater than every id pushed
    /// before; a smaller or equal id is refused (`false`), as a lookup
    /// could not find it.
    pub(crate) fn push(&mut self, id: i64, value: V) -> bool {
        if self.last_id.is_some_and(|last| last >= id) {
            return false;
        }
        let fits = match (self.first_ids.last(), self.block_lens.last()) {
            (Some(&first), Some(&len)) => {
                usize::from(len) < BLOCK_LEN && id.wrapping_sub(first) as u64 <= u64::from(u32::MAX)
            }
            _ => false,
        };
        if !fits {
            self.first_ids.push(id);
            self.block_lens.push(0);
        }
        let block = self.first_ids.len() - 1;
        let index = usize::from(self.block_lens[block]);
        let (chunk, offset) = Slot { block, index }.position();
        if chunk == self.values.len() {
            self.id_deltas.push(vec![0; CHUNK_LEN].into_boxed_slice());
            self.values
                .push(vec![V::default(); CHUNK_LEN].into_boxed_slice());
        }
        self.id_deltas[chunk][offset] = id.wrapping_sub(self.first_ids[block]) as u32;
        self.values[chunk][offset] = value;
        self.block_lens[block] += 1;
        self.last_id = Some(id);
        self.len += 1;
        true
    }

    /// The number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn slot(&self, id: i64) -> Option<Slot> {
        // The last block whose first id is not above `id`.
        let block = self.first_ids.partition_point(|&first| first <= id);
        let block = block.checked_sub(1)?;
        let delta = u32::try_from(id.wrapping_sub(self.first_ids[block]) as u64).ok()?;
        let (chunk, offset) = Slot { block, index: 0 }.position();
        let len = usize::from(self.block_lens[block]);
        let index = self.id_deltas[chunk][offset..offset + len]
            .binary_search(&delta)
            .ok()?;
        Some(Slot { block, index })
    }

    fn value_at(&self, slot: Slot) -> V {
        let (chunk, offset) = slot.position();
        self.values[chunk][offset]
    }

    /// The entry after `slot`, if any.
    fn next_slot(&self, slot: Slot) -> Option<Slot> {
        if slot.index + 1 < usize::from(self.block_lens[slot.block]) {
            Some(Slot {
                block: slot.block,
                index: slot.index + 1,
            })
        } else if slot.block + 1 < self.first_ids.len() {
            Some(Slot {
                block: slot.block + 1,
                index: 0,
            })
        } else {
            None
        }
    }

    /// The value stored for `id`.
    #[cfg(test)]
    pub(crate) fn get(&self, id: i64) -> Option<V> {
        self.slot(id).map(|slot| self.value_at(slot))
    }

    /// The value stored for `id` and the value of the entry after it.
    fn get_with_next(&self, id: i64) -> Option<(V, Option<V>)> {
        let slot = self.slot(id)?;
        let next = self.next_slot(slot).map(|next| self.value_at(next));
        Some((self.value_at(slot), next))
    }
}

/// Nodes per block of a [`PackedLocations`].
const LOCATION_BLOCK: usize = 64;

/// Bytes per chunk of a [`PackedLocations`]' encoded blocks: the store
/// grows a chunk at a time, never by copying itself.
const LOCATION_CHUNK: usize = 1 << 20;

/// Decoded blocks each thread keeps (see [`DECODED_BLOCKS`]): 1 MiB, the
/// blocks of 64 Ki neighbouring nodes, so that ways mapped around the
/// same place find theirs decoded.
const DECODED_CACHE: usize = 1024;

/// Node locations by id, as 1e-7° fixed point (as the middle and PBF
/// store them), delta-coded in blocks of [`LOCATION_BLOCK`] nodes: about
/// 5–7 bytes a node where a plain array takes 12 (issue 16: an import's
/// memory at most osm2pgsql's).
///
/// Nodes come in id order, and neighbouring ids are mostly neighbouring
/// places (mapped together), so a block stores each node's id and
/// coordinates as zigzag varint deltas from the node before (osm2pgsql
/// 1.8 packs its node cache the same way: `node_locations_t` in
/// src/node-locations.cpp). A lookup decodes the block into a small
/// per-thread cache ([`DECODED_BLOCKS`]): a way's nodes mostly lie in one
/// or two blocks, so most lookups decode nothing.
pub(crate) struct PackedLocations {
    /// Tells this store's blocks apart from other stores' in the
    /// per-thread cache.
    store: u64,
    /// Each sealed block's first id, for bisection.
    first_ids: Vec<i64>,
    /// Each sealed block's position: chunk × [`LOCATION_CHUNK`] + offset.
    starts: Vec<u64>,
    chunks: Vec<Vec<u8>>,
    /// The block being filled, not yet encoded.
    open_ids: Vec<i64>,
    open_fixed: Vec<(i32, i32)>,
    /// The last id of the sealed blocks.
    last_sealed_id: Option<i64>,
}

/// One block, decoded.
struct DecodedBlock {
    store: u64,
    block: usize,
    len: usize,
    ids: [i64; LOCATION_BLOCK],
    fixed: [(i32, i32); LOCATION_BLOCK],
}

thread_local! {
    /// The blocks this thread decoded last, block `b` at `b % DECODED_CACHE`.
    static DECODED_BLOCKS: std::cell::RefCell<Vec<DecodedBlock>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Gives each [`PackedLocations`] its own number.
static NEXT_STORE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Default for PackedLocations {
    fn default() -> Self {
        PackedLocations {
            store: NEXT_STORE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            first_ids: Vec::new(),
            starts: Vec::new(),
            chunks: Vec::new(),
            open_ids: Vec::with_capacity(LOCATION_BLOCK),
            open_fixed: Vec::with_capacity(LOCATION_BLOCK),
            last_sealed_id: None,
        }
    }
}

/// Block flag: the block's ids follow each other without gaps, so none
/// is stored but the first.
const CONSECUTIVE_IDS: u8 = 1;

impl PackedLocations {
    /// Stores a node's location; ids must come in ascending order (a
    /// repeated or smaller id is ignored).
    pub(crate) fn push(&mut self, id: i64, location: Location) {
        let last = self.open_ids.last().or(self.last_sealed_id.as_ref());
        if last.is_some_and(|&last| last >= id) {
            return;
        }
        self.open_ids.push(id);
        self.open_fixed.push(location.to_fixed());
        if self.open_ids.len() == LOCATION_BLOCK {
            self.seal();
        }
    }

    /// Encodes the open block into the chunks.
    fn seal(&mut self) {
        let mut encoded = Vec::with_capacity(2 + LOCATION_BLOCK * 12);
        encode_location_block(&self.open_ids, &self.open_fixed, &mut encoded);
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.capacity() - chunk.len() >= encoded.len());
        if !fits {
            self.chunks.push(Vec::with_capacity(LOCATION_CHUNK));
        }
        let chunk_index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[chunk_index];
        self.starts
            .push((chunk_index * LOCATION_CHUNK + chunk.len()) as u64);
        chunk.extend_from_slice(&encoded);
        self.first_ids.push(self.open_ids[0]);
        self.last_sealed_id = self.open_ids.last().copied();
        self.open_ids.clear();
        self.open_fixed.clear();
    }

    /// The location stored for `id`.
    pub(crate) fn get(&self, id: i64) -> Option<Location> {
        if self.open_ids.first().is_some_and(|&first| first <= id) {
            let index = self.open_ids.binary_search(&id).ok()?;
            let (lon, lat) = self.open_fixed[index];
            return Some(Location::from_fixed(lon, lat));
        }
        // The last sealed block whose first id is not above `id`.
        let block = self.first_ids.partition_point(|&first| first <= id);
        let block = block.checked_sub(1)?;
        DECODED_BLOCKS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.is_empty() {
                cache.resize_with(DECODED_CACHE, || DecodedBlock {
                    store: u64::MAX,
                    block: 0,
                    len: 0,
                    ids: [0; LOCATION_BLOCK],
                    fixed: [(0, 0); LOCATION_BLOCK],
                });
            }
            // Direct-mapped: a block has one place in the cache.
            let decoded = &mut cache[block % DECODED_CACHE];
            if decoded.store != self.store || decoded.block != block {
                self.decode(block, decoded);
            }
            let index = decoded.ids[..decoded.len].binary_search(&id).ok()?;
            let (lon, lat) = decoded.fixed[index];
            Some(Location::from_fixed(lon, lat))
        })
    }

    fn decode(&self, block: usize, into: &mut DecodedBlock) {
        let start = self.starts[block] as usize;
        let chunk = &self.chunks[start / LOCATION_CHUNK];
        let mut reader = RecordReader(&chunk[start % LOCATION_CHUNK..]);
        into.store = self.store;
        into.block = block;
        into.len = decode_location_block(
            &mut reader,
            self.first_ids[block],
            &mut into.ids,
            &mut into.fixed,
        );
    }

    /// The number of nodes stored: every sealed block is full.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.first_ids.len() * LOCATION_BLOCK + self.open_ids.len()
    }

    /// Bytes held for the nodes stored (the chunks' capacity included).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum::<usize>()
            + self.first_ids.capacity() * 8
            + self.starts.capacity() * 8
    }
}

/// A block: its length, flags, the ids after the first (gaps less one)
/// unless they are consecutive, then the first location and each next
/// one's difference, zigzag varints throughout.
fn encode_location_block(ids: &[i64], fixed: &[(i32, i32)], out: &mut Vec<u8>) {
    out.push(ids.len() as u8);
    let consecutive = ids
        .windows(2)
        .all(|pair| pair[1].wrapping_sub(pair[0]) == 1);
    out.push(if consecutive { CONSECUTIVE_IDS } else { 0 });
    if !consecutive {
        for pair in ids.windows(2) {
            put_varint(out, pair[1].wrapping_sub(pair[0]).wrapping_sub(1) as u64);
        }
    }
    let mut previous = (0i64, 0i64);
    for &(lon, lat) in fixed {
        let (lon, lat) = (i64::from(lon), i64::from(lat));
        put_varint(out, zigzag(lon - previous.0));
        put_varint(out, zigzag(lat - previous.1));
        previous = (lon, lat);
    }
}

/// Reads a block [`encode_location_block`] wrote; returns its length.
fn decode_location_block(
    reader: &mut RecordReader<'_>,
    first_id: i64,
    ids: &mut [i64; LOCATION_BLOCK],
    fixed: &mut [(i32, i32); LOCATION_BLOCK],
) -> usize {
    let len = usize::from(reader.byte());
    let flags = reader.byte();
    ids[0] = first_id;
    for i in 1..len {
        let gap = if flags & CONSECUTIVE_IDS != 0 {
            0
        } else {
            reader.varint() as i64
        };
        ids[i] = ids[i - 1].wrapping_add(1).wrapping_add(gap);
    }
    let mut previous = (0i64, 0i64);
    for entry in fixed.iter_mut().take(len) {
        previous.0 += unzigzag(reader.varint());
        previous.1 += unzigzag(reader.varint());
        *entry = (previous.0 as i32, previous.1 as i32);
    }
    len
}

/// Bytes collected before they are written to the file in one go.
const WRITE_BUFFER: usize = 1 << 20;

/// Ways kept for relations, written to an unnamed temporary file as they
/// are read (a file, not a memory map, so that they count as page cache
/// rather than as the import's memory), with only an index of 12 bytes a
/// way in memory. osm2pgsql keeps them in its middle tables and reads
/// them back from PostgreSQL for relations (osm2pgsql 1.8,
/// `middle_pgsql_t::rel_members_get`); a local file is read much faster.
///
/// A way is one record: its node ids as zigzag varint deltas (a way's
/// nodes mostly have neighbouring ids, so 1–3 bytes a node instead of 8),
/// then its tags as length-prefixed strings. Metadata is not kept
/// (relations never use it).
pub(crate) struct SpilledWays {
    /// Each way's record offset in the file.
    offsets: PackedById<u64>,
    file: File,
    /// Bytes already written to the file.
    written: u64,
    /// Records after `written`, not yet in the file.
    pending: Vec<u8>,
    /// The first error reading the file back: a lookup cannot return
    /// it, so the import asks for it ([`SpilledWays::check`]) once the
    /// relations are processed.
    read_error: Mutex<Option<io::Error>>,
}

impl SpilledWays {
    /// An empty store, in a new temporary file in the system's temporary
    /// directory (`TMPDIR`), removed as soon as the store is dropped.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(SpilledWays {
            offsets: PackedById::default(),
            file: tempfile::tempfile()?,
            written: 0,
            pending: Vec::with_capacity(WRITE_BUFFER),
            read_error: Mutex::new(None),
        })
    }

    /// Stores `way`; ids must come in ascending order (a repeated or
    /// smaller id is ignored).
    pub(crate) fn push(&mut self, way: &Way) -> io::Result<()> {
        let offset = self.written + self.pending.len() as u64;
        if !self.offsets.push(way.id, offset) {
            return Ok(());
        }
        encode_way(way, &mut self.pending);
        if self.pending.len() >= WRITE_BUFFER {
            self.file.write_all(&self.pending)?;
            self.written += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    /// The number of ways stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Fails if a lookup could not read the file back (the lookup then
    /// found no way, so what was built from it is incomplete).
    pub(crate) fn check(&self) -> io::Result<()> {
        let mut error = self.read_error.lock().unwrap_or_else(|e| e.into_inner());
        match error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The record of way `id`, read from the file or the write buffer.
    fn record(&self, id: i64) -> Option<Cow<'_, [u8]>> {
        let (start, next) = self.offsets.get_with_next(id)?;
        let end = next.unwrap_or(self.written + self.pending.len() as u64);
        if start >= self.written {
            let from = (start - self.written) as usize;
            let to = (end - self.written) as usize;
            return Some(Cow::Borrowed(&self.pending[from..to]));
        }
        let mut record = vec![0; (end - start) as usize];
        let in_file = (end.min(self.written) - start) as usize;
        if let Err(e) = self.file.read_exact_at(&mut record[..in_file], start) {
            let mut error = self.read_error.lock().unwrap_or_else(|e| e.into_inner());
            error.get_or_insert(e);
            return None;
        }
        let rest = record.len() - in_file;
        record[in_file..].copy_from_slice(&self.pending[..rest]);
        Some(Cow::Owned(record))
    }
}

impl super::process::WayLookup for SpilledWays {
    fn way(&self, id: i64) -> Option<Cow<'_, Way>> {
        let record = self.record(id)?;
        let mut reader = RecordReader(&record);
        let nodes = reader.nodes();
        let tag_count = reader.varint() as usize;
        let tags = (0..tag_count)
            .map(|_| (reader.string(), reader.string()))
            .collect();
        Some(Cow::Owned(Way {
            id,
            meta: Default::default(),
            nodes,
            tags,
        }))
    }

    fn way_nodes(&self, id: i64) -> Option<Cow<'_, [i64]>> {
        let record = self.record(id)?;
        Some(Cow::Owned(RecordReader(&record).nodes()))
    }
}

fn encode_way(way: &Way, out: &mut Vec<u8>) {
    put_varint(out, way.nodes.len() as u64);
    let mut previous = 0i64;
    for &node in &way.nodes {
        put_varint(out, zigzag(node.wrapping_sub(previous)));
        previous = node;
    }
    put_varint(out, way.tags.len() as u64);
    for (key, value) in &way.tags {
        for text in [key, value] {
            put_varint(out, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// LEB128, as protobuf writes integers.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// Reads a record [`encode_way`] wrote (this process wrote it: no checks
/// beyond slice bounds).
struct RecordReader<'a>(&'a [u8]);

impl RecordReader<'_> {
    fn byte(&mut self) -> u8 {
        let byte = self.0[0];
        self.0 = &self.0[1..];
        byte
    }

    fn varint(&mut self) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.0[0];
            self.0 = &self.0[1..];
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }

    fn nodes(&mut self) -> Vec<i64> {
        let count = self.varint() as usize;
        let mut previous = 0i64;
        (0..count)
            .map(|_| {
                previous = previous.wrapping_add(unzigzag(self.varint()));
                previous
            })
            .collect()
    }

    fn string(&mut self) -> String {
        let len = self.varint() as usize;
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(text).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::process::WayLookup;

    #[test]
    fn locations_are_found_by_id_and_misses_are_none() {
        let mut store = PackedLocations::default();
        // Planet-like ids around 1.2e10, with gaps small and large (one
        // beyond u32 from the block's first id), over several blocks and
        // chunks.
        let mut ids = Vec::new();
        let mut id = 12_000_000_000i64;
        for i in 0..150_000 {
            id += if i == 600 { 5_000_000_000 } else { 1 + i % 7 };
            ids.push(id);
        }
        for (i, &id) in ids.iter().enumerate() {
            store.push(id, Location::from_fixed(i as i32 * 10, -(i as i32)));
        }
        assert_eq!(store.len(), ids.len());
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(
                store.get(id).map(Location::to_fixed),
                Some((i as i32 * 10, -(i as i32))),
                "node {id}"
            );
        }
        // Before the first, between two, after the last, far off.
        for miss in [
            1,
            ids[0] - 1,
            ids[10] + 1,
            ids[600] - 1,
            ids[149_999] + 1,
            -5,
        ] {
            if !ids.contains(&miss) {
                assert_eq!(store.get(miss), None, "node {miss}");
            }
        }
        assert_eq!(PackedLocations::default().get(1), None);
    }

    #[test]
    fn neighbouring_locations_take_a_few_bytes_a_node() {
        let mut store = PackedLocations::default();
        // Consecutive ids a few metres apart, as nodes mapped together.
        let n = 200_000i64;
        for i in 0..n {
            let step = (i % 97) as i32 * 40 - 1900;
            store.push(
                3 * i + 1,
                Location::from_fixed(95_000_000 + step * (i % 5) as i32, 471_000_000 - step),
            );
        }
        assert_eq!(store.len(), n as usize);
        let per_node = (store.bytes() as f64) / n as f64;
        assert!(per_node < 7.0, "{per_node} bytes a node");
        // Lookups from another thread (the flex output's Lua workers) use
        // their own cache.
        let store = &store;
        std::thread::scope(|scope| {
            for part in 0..2i64 {
                scope.spawn(move || {
                    for i in (part..n).step_by(2) {
                        let step = (i % 97) as i32 * 40 - 1900;
                        assert_eq!(
                            store.get(3 * i + 1).map(Location::to_fixed),
                            Some((95_000_000 + step * (i % 5) as i32, 471_000_000 - step))
                        );
                        assert_eq!(store.get(3 * i + 2), None);
                    }
                });
            }
        });
    }

    #[test]
    fn an_id_out_of_order_is_ignored() {
        let mut store = PackedById::default();
        assert!(store.push(10, 1u64));
        assert!(!store.push(10, 2));
        assert!(!store.push(5, 3));
        assert_eq!(store.get(10), Some(1));
        assert_eq!(store.get(5), None);
        assert_eq!(store.len(), 1);
    }

    fn way(id: i64, nodes: Vec<i64>, tags: &[(&str, &str)]) -> Way {
        Way {
            id,
            meta: Default::default(),
            nodes,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn spilled_ways_round_trip_from_file_and_buffer() {
        let mut store = SpilledWays::new().unwrap();
        let mut ways = Vec::new();
        // Enough ways to fill the write buffer a few times, so that some
        // are read from the file, one straddles the file and the buffer,
        // and the last from the buffer.
        for i in 0..40_000i64 {
            let id = 11_000_000_000 + i * 3;
            let nodes = (0..(i % 50) + 1)
                .map(|n| {
                    12_000_000_000 + i * 10 - n * (1 + i % 3)
                        + if n == 7 { -9_000_000_000 } else { 0 }
                })
                .collect();
            let name = format!("Straße {i} ✓");
            let tags: Vec<(&str, &str)> = if i % 4 == 0 {
                vec![]
            } else {
                vec![("highway", "residential"), ("name", &name)]
            };
            ways.push(way(id, nodes, &tags));
        }
        for w in &ways {
            store.push(w).unwrap();
        }
        assert!(store.written > 0 && !store.pending.is_empty());
        assert_eq!(store.len(), ways.len());
        for w in &ways {
            let read = store.way(w.id).expect("stored way");
            assert_eq!(read.nodes, w.nodes);
            assert_eq!(read.tags, w.tags);
            assert_eq!(read.id, w.id);
            assert_eq!(store.way_nodes(w.id).unwrap().as_ref(), w.nodes.as_slice());
        }
        assert!(store.way(11_000_000_001).is_none());
        assert!(store.way(1).is_none());
        assert!(store.way(12_000_000_000).is_none());
    }

    #[test]
    fn an_empty_way_round_trips() {
        let mut store = SpilledWays::new().unwrap();
        store.push(&way(5, vec![], &[])).unwrap();
        store.push(&way(-1, vec![1], &[])).unwrap();
        let read = store.way(5).unwrap();
        assert!(read.nodes.is_empty() && read.tags.is_empty());
        assert!(store.way(-1).is_none());
    }
}
