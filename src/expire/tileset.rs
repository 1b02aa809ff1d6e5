//! A set of expired tiles at one zoom (the expiry max zoom Z), stored as
//! quadkeys in a compressed bitmap, with the lower zooms and the metatiles
//! derived from it.
//!
//! Only Z is ever computed from geometry (as osm2pgsql's `expire_tiles`
//! does): a tile at a lower zoom is expired iff any of its descendants at Z
//! is (osm2pgsql's `output_tiles_to_file` zoom derivation). Quadkeys keep
//! every subtree contiguous, so one ascending pass yields each ancestor
//! once, right after its first expired descendant; this is osm2pgsql's
//! `for_each_tile` order and the order of its expire lists.
//!
//! A roaring bitmap keeps a vandalism-sized batch small: tens of millions of
//! z18 tiles take bytes per tile, not the ~32 of a hash set (see
//! [`TileSet::heap_bytes`] and the size test below).

use super::tiles::{ancestor_quadkey, quadkey, tile_from_quadkey};
use crate::tile::{Metatile, Tile, MAX_ZOOM};
use roaring::RoaringTreemap;
use std::io::{self, Write};
use std::ops::RangeInclusive;

/// Tiles at one zoom, as quadkeys.
#[derive(Clone, PartialEq)]
pub struct TileSet {
    zoom: u8,
    quadkeys: RoaringTreemap,
    /// Cached cardinality: the treemap sums its parts on every `len()`.
    len: u64,
}

impl std::fmt::Debug for TileSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileSet")
            .field("zoom", &self.zoom)
            .field("len", &self.len)
            .finish()
    }
}

impl TileSet {
    /// An empty set of tiles at `max_zoom`.
    ///
    /// Panics if `max_zoom` is above [`MAX_ZOOM`].
    pub fn new(max_zoom: u8) -> TileSet {
        assert!(
            max_zoom <= MAX_ZOOM,
            "tile set zoom {max_zoom} is above the maximum {MAX_ZOOM}"
        );
        TileSet {
            zoom: max_zoom,
            quadkeys: RoaringTreemap::new(),
            len: 0,
        }
    }

    /// The zoom the tiles are stored at.
    pub fn zoom(&self) -> u8 {
        self.zoom
    }

    /// Adds tile x/y at the set's zoom; true if it was not there yet.
    /// x and y must be below 2^zoom (checked in debug builds).
    pub fn insert(&mut self, x: u32, y: u32) -> bool {
        debug_assert!(
            u64::from(x) < 1u64 << self.zoom && u64::from(y) < 1u64 << self.zoom,
            "tile {x}/{y} outside zoom {}",
            self.zoom
        );
        let added = self.quadkeys.insert(quadkey(x, y));
        self.len += u64::from(added);
        added
    }

    /// Adds a tile given with its zoom, which must be the set's.
    pub fn insert_tile(&mut self, tile: Tile) -> bool {
        assert_eq!(tile.z, self.zoom, "tile {tile} in a zoom {} set", self.zoom);
        self.insert(tile.x, tile.y)
    }

    /// Whether tile x/y at the set's zoom is in the set.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        self.quadkeys.contains(quadkey(x, y))
    }

    /// Whether the tile with this [`quadkey`] (at the set's zoom) is in
    /// the set.
    pub fn contains_quadkey(&self, quadkey: u64) -> bool {
        self.quadkeys.contains(quadkey)
    }

    /// Number of tiles at the set's zoom.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set holds no tile.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every tile; the zoom stays.
    pub fn clear(&mut self) {
        self.quadkeys.clear();
        self.len = 0;
    }

    /// Adds every tile of `other`, which must be at the same zoom.
    pub fn union_with(&mut self, other: &TileSet) {
        assert_eq!(
            self.zoom, other.zoom,
            "cannot merge tile sets of zooms {} and {}",
            self.zoom, other.zoom
        );
        // Recounting walks every container of this set; for the usual small
        // unit (one object's tiles) counting insertions is far cheaper.
        if other.len < 4096 {
            for q in other.quadkeys() {
                self.len += u64::from(self.quadkeys.insert(q));
            }
        } else {
            self.quadkeys |= &other.quadkeys;
            self.len = self.quadkeys.len();
        }
    }

    /// How many tiles of `other` (same zoom) are not in this set.
    pub fn count_missing(&self, other: &TileSet) -> u64 {
        // Probing is proportional to the (usually small) other set; the
        // bitmap difference would walk every container of this one.
        if other.len < 4096 {
            other
                .quadkeys()
                .filter(|q| !self.contains_quadkey(*q))
                .count() as u64
        } else {
            other.quadkeys.difference_len(&self.quadkeys)
        }
    }

    /// Quadkeys in ascending order.
    pub fn quadkeys(&self) -> impl Iterator<Item = u64> + '_ {
        self.quadkeys.iter()
    }

    /// The tiles at the set's zoom in ascending quadkey order.
    pub fn tiles(&self) -> impl Iterator<Item = Tile> + '_ {
        let zoom = self.zoom;
        self.quadkeys
            .iter()
            .map(move |q| tile_from_quadkey(q, zoom))
    }

    /// The tiles of every zoom in `zooms` (at most the set's zoom) in
    /// osm2pgsql's expire-list order (`output_tiles_to_file`,
    /// `expire-output.cpp`): tiles of the highest
    /// requested zoom in ascending quadkey order, each followed by its
    /// ancestors that were not written yet, highest zoom first. Every tile
    /// appears once. An empty range yields nothing.
    ///
    /// Panics if the range ends above the set's zoom.
    pub fn tiles_for_zooms(&self, zooms: RangeInclusive<u8>) -> ZoomOrderTiles<'_> {
        let (min, max) = (*zooms.start(), *zooms.end());
        assert!(
            max <= self.zoom,
            "zoom range up to {max} above the tile set's zoom {}",
            self.zoom
        );
        ZoomOrderTiles {
            quadkeys: self.quadkeys.iter(),
            zoom: self.zoom,
            first_level: self.zoom - max,
            last_level: self.zoom - min.min(max),
            empty: min > max,
            current: None,
            level: 0,
            previous: None,
        }
    }

    /// The set derived at a lower `zoom`: every tile with an expired
    /// descendant.
    pub fn at_zoom(&self, zoom: u8) -> TileSet {
        assert!(zoom <= self.zoom, "zoom {zoom} above {}", self.zoom);
        let levels = self.zoom - zoom;
        let mut derived = TileSet::new(zoom);
        let mut previous = None;
        for q in self.quadkeys.iter() {
            let ancestor = ancestor_quadkey(q, levels);
            if previous != Some(ancestor) {
                // Ascending, so appending is valid and cheaper than inserting.
                derived
                    .quadkeys
                    .try_push(ancestor)
                    .expect("ancestors come in ascending order");
                derived.len += 1;
                previous = Some(ancestor);
            }
        }
        derived
    }

    /// The distinct metatiles at `zoom` (at most the set's zoom) holding an
    /// expired tile, in ascending quadkey order of their top-left tile.
    /// Compute the set at the metatile zoom (render zoom − 3) instead where
    /// possible: the buffer is applied at the set's zoom only.
    pub fn metatiles(&self, zoom: u8) -> impl Iterator<Item = Metatile> + '_ {
        assert!(zoom <= self.zoom, "zoom {zoom} above {}", self.zoom);
        let levels = self.zoom - zoom;
        let mut previous: Option<Metatile> = None;
        // A metatile is a subtree three levels up (or the whole world below
        // z3), hence contiguous in quadkey order: dropping consecutive
        // duplicates leaves each once.
        self.quadkeys.iter().filter_map(move |q| {
            let metatile = tile_from_quadkey(ancestor_quadkey(q, levels), zoom).metatile();
            if previous == Some(metatile) {
                None
            } else {
                previous = Some(metatile);
                Some(metatile)
            }
        })
    }

    /// Writes the expire list: one `z/x/y` line per tile from `min_zoom` up
    /// to the set's zoom, in [`TileSet::tiles_for_zooms`] order. Returns
    /// the number of lines.
    pub fn write_list(&self, out: &mut impl Write, min_zoom: u8) -> io::Result<u64> {
        let mut count = 0;
        for tile in self.tiles_for_zooms(min_zoom..=self.zoom) {
            writeln!(out, "{}/{}/{}", tile.z, tile.x, tile.y)?;
            count += 1;
        }
        Ok(count)
    }

    /// An estimate of the heap memory the set holds: container payloads
    /// (array containers counted by their values, without a `Vec`'s spare
    /// capacity) plus per-container and per-bitmap bookkeeping.
    pub fn heap_bytes(&self) -> u64 {
        // A container is a key plus a store enum with a Vec (~32 bytes); a
        // treemap entry is a BTreeMap slot with a u32 key and a bitmap.
        const PER_CONTAINER: u64 = 32;
        const PER_BITMAP: u64 = 48;
        // A bitset container is 2^16 bits; array values are u16.
        const BITSET_BYTES: u64 = 8192;
        const ARRAY_VALUE_BYTES: u64 = 2;
        self.quadkeys
            .bitmaps()
            .map(|(_, bitmap)| {
                let s = bitmap.statistics();
                PER_BITMAP
                    + u64::from(s.n_containers) * PER_CONTAINER
                    + u64::from(s.n_values_array_containers) * ARRAY_VALUE_BYTES
                    + u64::from(s.n_bitset_containers) * BITSET_BYTES
                    + s.n_bytes_run_containers
            })
            .sum()
    }

    /// Size of the portable roaring serialisation, a lower bound of the
    /// memory the set needs.
    pub fn serialized_bytes(&self) -> usize {
        self.quadkeys.serialized_size()
    }

    /// Converts array and bitmap containers to runs where smaller (filled
    /// areas are long runs of quadkeys).
    pub fn optimize(&mut self) {
        self.quadkeys.optimize();
    }

    /// The portable roaring serialisation of the quadkeys (what the expire
    /// queue stores; the zoom is stored beside it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut quadkeys = self.quadkeys.clone();
        quadkeys.optimize();
        let mut out = Vec::with_capacity(quadkeys.serialized_size());
        quadkeys
            .serialize_into(&mut out)
            .expect("writing into a Vec cannot fail");
        out
    }

    /// The inverse of [`TileSet::to_bytes`].
    pub fn from_bytes(zoom: u8, bytes: &[u8]) -> io::Result<TileSet> {
        if zoom > MAX_ZOOM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("zoom {zoom} is above {MAX_ZOOM}"),
            ));
        }
        let quadkeys = RoaringTreemap::deserialize_from(bytes)?;
        let len = quadkeys.len();
        Ok(TileSet {
            zoom,
            quadkeys,
            len,
        })
    }
}

impl Extend<Tile> for TileSet {
    fn extend<I: IntoIterator<Item = Tile>>(&mut self, tiles: I) {
        for tile in tiles {
            self.insert_tile(tile);
        }
    }
}

/// Iterator of [`TileSet::tiles_for_zooms`].
pub struct ZoomOrderTiles<'a> {
    quadkeys: roaring::treemap::Iter<'a>,
    zoom: u8,
    /// Levels above the set's zoom: from the highest requested zoom …
    first_level: u8,
    /// … to the lowest.
    last_level: u8,
    empty: bool,
    /// The quadkey whose ancestors are being written, and the next level.
    current: Option<u64>,
    level: u8,
    /// The quadkey handled before `current`.
    previous: Option<u64>,
}

impl Iterator for ZoomOrderTiles<'_> {
    type Item = Tile;

    fn next(&mut self) -> Option<Tile> {
        if self.empty {
            return None;
        }
        loop {
            let current = match self.current {
                Some(q) => q,
                None => {
                    let q = self.quadkeys.next()?;
                    self.current = Some(q);
                    self.level = self.first_level;
                    q
                }
            };
            if self.level <= self.last_level {
                let ancestor = ancestor_quadkey(current, self.level);
                // Same ancestor as the previous quadkey's at this level means
                // the same at every level above too: nothing more to write.
                if self.previous.map(|p| ancestor_quadkey(p, self.level)) != Some(ancestor) {
                    let tile = tile_from_quadkey(ancestor, self.zoom - self.level);
                    self.level += 1;
                    return Some(tile);
                }
            }
            self.previous = Some(current);
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(zoom: u8, tiles: &[(u32, u32)]) -> TileSet {
        let mut s = TileSet::new(zoom);
        for &(x, y) in tiles {
            s.insert(x, y);
        }
        s
    }

    fn lines(s: &TileSet, min_zoom: u8) -> Vec<String> {
        let mut out = Vec::new();
        let n = s.write_list(&mut out, min_zoom).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(lines.len() as u64, n);
        lines
    }

    #[test]
    fn insert_len_union() {
        let mut a = set(3, &[(1, 1), (1, 1), (7, 0)]);
        assert_eq!(a.len(), 2);
        assert!(!a.insert(7, 0));
        assert!(a.contains(1, 1) && !a.contains(0, 0));
        let b = set(3, &[(7, 0), (2, 5)]);
        assert_eq!(a.count_missing(&b), 1);
        a.union_with(&b);
        assert_eq!(a.len(), 3);
        // A big set merges as bitmaps.
        let mut big = TileSet::new(12);
        for x in 0..100 {
            for y in 0..100 {
                big.insert(x, y);
            }
        }
        let mut c = set(12, &[(5, 5), (500, 500)]);
        assert_eq!(c.count_missing(&big), 9999);
        c.union_with(&big);
        assert_eq!((c.len(), c.quadkeys().count() as u64), (10_001, 10_001));
        a.clear();
        assert!(a.is_empty());
    }

    #[test]
    #[should_panic(expected = "cannot merge")]
    fn union_needs_the_same_zoom() {
        set(3, &[]).union_with(&set(4, &[]));
    }

    #[test]
    fn tiles_in_quadkey_order() {
        let s = set(2, &[(3, 3), (0, 1), (1, 0), (2, 0)]);
        let order: Vec<(u32, u32)> = s.tiles().map(|t| (t.x, t.y)).collect();
        // Quadkeys: (1,0)=1, (0,1)=2, (2,0)=4, (3,3)=15.
        assert_eq!(order, vec![(1, 0), (0, 1), (2, 0), (3, 3)]);
    }

    #[test]
    fn derivation_order_matches_osm2pgsql() {
        // Hand-worked example at z3, listing zooms 1..=3.
        // Tiles (quadkey): 3/0/0 (0), 3/1/1 (3), 3/2/0 (4), 3/7/7 (63).
        // z2 ancestors: 2/0/0 for the first three, 2/3/3 for the last;
        // z1: 1/0/0 and 1/1/1.
        let s = set(3, &[(7, 7), (2, 0), (1, 1), (0, 0)]);
        assert_eq!(
            lines(&s, 1),
            vec![
                "3/0/0", "2/0/0", "1/0/0", // first tile and all its ancestors
                "3/1/1", // same z2 parent: nothing more
                "3/2/0", // z2 parent 2/1/0 is new
                "2/1/0", "3/7/7", "2/3/3", "1/1/1",
            ]
        );
        // With min = max only the sorted list.
        assert_eq!(lines(&s, 3), vec!["3/0/0", "3/1/1", "3/2/0", "3/7/7"]);
        // Down to z0: 0/0/0 once, right after the first tile's z1 ancestor.
        let all = lines(&s, 0);
        assert_eq!(&all[..4], &["3/0/0", "2/0/0", "1/0/0", "0/0/0"]);
        assert_eq!(all.iter().filter(|l| *l == "0/0/0").count(), 1);
        assert_eq!(all.len(), 4 + 3 + 2 + 1);
    }

    #[test]
    fn zoom_ranges_below_the_set_zoom() {
        let s = set(3, &[(7, 7), (2, 0), (1, 1), (0, 0)]);
        let order: Vec<String> = s.tiles_for_zooms(1..=2).map(|t| t.to_string()).collect();
        assert_eq!(order, vec!["2/0/0", "1/0/0", "2/1/0", "2/3/3", "1/1/1"]);
        #[allow(clippy::reversed_empty_ranges)]
        let none = s.tiles_for_zooms(3..=2).count();
        assert_eq!(none, 0);
        assert_eq!(TileSet::new(5).tiles_for_zooms(0..=5).count(), 0);
    }

    #[test]
    fn derived_sets_and_metatiles() {
        let s = set(5, &[(0, 0), (7, 7), (8, 0), (31, 31), (9, 1)]);
        let z2: Vec<(u32, u32)> = s.at_zoom(2).tiles().map(|t| (t.x, t.y)).collect();
        assert_eq!(z2, vec![(0, 0), (1, 0), (3, 3)]);
        let metatiles: Vec<Metatile> = s.metatiles(5).collect();
        assert_eq!(
            metatiles,
            vec![
                Metatile { z: 5, x: 0, y: 0 },
                Metatile { z: 5, x: 8, y: 0 },
                Metatile { z: 5, x: 24, y: 24 },
            ]
        );
        // At z4 the tiles become 0/0, 3/3, 4/0, 15/15, 4/0: two metatiles.
        assert_eq!(s.metatiles(4).count(), 2);
        // Below z3 one metatile covers the world.
        assert_eq!(
            s.metatiles(2).collect::<Vec<_>>(),
            vec![Metatile { z: 2, x: 0, y: 0 }]
        );
    }

    #[test]
    fn a_filled_block_is_small() {
        // 1000 × 1000 z18 tiles: quadkey-dense, so bitset containers
        // (1 bit per possible tile); see tests/expire_memory.rs for 10 M.
        let mut block = TileSet::new(18);
        for y in 100_000..101_000 {
            for x in 120_000..121_000 {
                block.insert(x, y);
            }
        }
        assert_eq!(block.len(), 1_000_000);
        assert!(block.heap_bytes() < 400_000, "{}", block.heap_bytes());
    }
}
