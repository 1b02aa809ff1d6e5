//! Geometries (EPSG:3857) to expired tiles at the max zoom: osm2pgsql
//! 2.3's rules (`expire-tiles.cpp`: points, lines, polygons and its limits
//! in `expire-output.hpp`), with upstream defects fixed where they lose
//! tiles (each noted where it is handled).
//!
//! - Points expire the tiles within `buffer` (a fraction of a tile) of them.
//! - Lines are walked in chunks of 0.4 tile; each chunk expires its whole
//!   buffered bounding box, so diagonals are slightly over-covered.
//!   Segments are rasterised as stored (no antimeridian guess), a
//!   zero-length segment counts as a point.
//! - Polygons expire their rings like lines and, in full-area mode, their
//!   interior by an even-odd scan-line fill; hybrid mode picks boundary-only
//!   for geometries whose envelope is wider or taller than a limit.
//! - Rows (y) outside the world are left out everywhere; columns (x) wrap.
//!   Tile coordinates are truncated toward zero as in osm2pgsql, so the
//!   buffer reaches across the antimeridian eastwards only: a point just
//!   west of +180° also expires column 0, a point just east of −180° does
//!   not expire the last column.
//!
//! `tests/expire_osm2pgsql.rs` checks these rules against osm2pgsql 1.8's
//! expire lists; `tilepipe expire-tiles` applies them to an OSM file.
//! Each unit (one geometry, or the old and new geometry of one object) is
//! rasterised into a scratch set and committed as a whole: a unit over the
//! per-geometry limit expires nothing (or, if configured, only its
//! boundaries), and once the overall limit would be passed every later unit
//! is ignored until the set is taken. Both are logged with the object.
//!
//! ```
//! use geo::{Geometry, Point};
//! use tilepipe::expire::raster::{RasterSettings, Expirer};
//!
//! let mut expirer = Expirer::new(RasterSettings::new(15)).unwrap();
//! // A node moved: old and new position are one unit.
//! let old = Geometry::Point(Point::new(1_059_891.0, 5_967_211.0));
//! let new = Geometry::Point(Point::new(1_060_100.0, 5_967_300.0));
//! expirer.expire_together("node 42", [&old, &new]);
//! let tiles: Vec<String> = expirer.tiles().tiles().map(|t| t.to_string()).collect();
//! // Both lie well inside tile 17250/11504 (x ≈ 17250.64–17250.81,
//! // y ≈ 11504.74–11504.81).
//! assert_eq!(tiles, ["15/17250/11504"]);
//! ```

use super::tiles::{tile_coords, tiles_per_side, truncate, wrap_x, EARTH_CIRCUMFERENCE};
use super::tileset::TileSet;
use crate::apply::geom::ewkb::{self, EwkbError};
use crate::tile::MAX_ZOOM;
use geo::{Coord, CoordsIter, Geometry, LineString, Polygon};
use std::fmt;

/// Default buffer around geometries, in tiles at the max zoom (≈ 15 m at
/// z18).
pub const DEFAULT_BUFFER: f64 = 0.1;
/// Default envelope size (3857 metres) above which hybrid mode treats a
/// polygon as boundary-only (osm2pgsql's `--expire-bbox-size` default).
pub const DEFAULT_FULL_AREA_LIMIT: f64 = 20_000.0;
/// osm2pgsql 2.3's `max_tiles_geometry`.
pub const DEFAULT_MAX_TILES_GEOMETRY: u64 = 10_000_000;
/// osm2pgsql 2.3's `max_tiles_overall`.
pub const DEFAULT_MAX_TILES_OVERALL: u64 = 50_000_000;

/// Length of one line chunk, in tiles.
const CHUNK: f64 = 0.4;

/// How polygons and multipolygons are expired: `expire.mode` in the
/// configuration and `--mode` of `tilepipe expire-tiles`, both spelled
/// `full-area`, `boundary-only` or `hybrid` (the command line also takes
/// `full_area` and `boundary_only`). The variant docs are `--help` text.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum PolygonMode {
    /// Polygon boundary and interior.
    #[default]
    #[value(alias = "full_area")]
    FullArea,
    /// Polygon rings only.
    #[value(alias = "boundary_only")]
    BoundaryOnly,
    /// Boundary only for polygons whose envelope exceeds the full-area
    /// limit.
    Hybrid,
}

/// What to do with a unit that expires more than
/// [`RasterSettings::max_tiles_geometry`] tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeometryLimitAction {
    /// Expire nothing for it (osm2pgsql's behaviour), with a warning.
    #[default]
    Drop,
    /// Try again with polygons boundary-only; drop only if that is still
    /// over the limit.
    BoundaryOnly,
}

/// Settings of the expiry rasteriser.
#[derive(Debug, Clone, PartialEq)]
pub struct RasterSettings {
    /// The zoom tiles are computed at (1..=[`MAX_ZOOM`]); lower zooms are
    /// derived from it.
    pub max_zoom: u8,
    /// Margin around geometries, as a fraction of one tile at `max_zoom`.
    pub buffer: f64,
    /// How polygons are expired (default full area).
    pub mode: PolygonMode,
    /// Hybrid mode's envelope limit, in 3857 metres. (osm2pgsql's
    /// `expire_config_t` defaults to 0, i.e. every polygon with an extent
    /// is boundary-only; tilepipe uses `--expire-bbox-size`'s 20 000.)
    pub full_area_limit: f64,
    /// Tiles one unit may expire.
    pub max_tiles_geometry: u64,
    /// Tiles the set may hold before later units are ignored.
    pub max_tiles_overall: u64,
    /// What a unit over `max_tiles_geometry` expires (default: nothing).
    pub on_geometry_limit: GeometryLimitAction,
}

impl RasterSettings {
    /// The defaults (buffer 0.1, full area, limits 10 M / 50 M) at `max_zoom`.
    pub fn new(max_zoom: u8) -> RasterSettings {
        RasterSettings {
            max_zoom,
            buffer: DEFAULT_BUFFER,
            mode: PolygonMode::FullArea,
            full_area_limit: DEFAULT_FULL_AREA_LIMIT,
            max_tiles_geometry: DEFAULT_MAX_TILES_GEOMETRY,
            max_tiles_overall: DEFAULT_MAX_TILES_OVERALL,
            on_geometry_limit: GeometryLimitAction::Drop,
        }
    }

    /// Checks the ranges: zoom 1..=[`MAX_ZOOM`], finite buffer and limit
    /// ≥ 0, tile limits ≥ 1.
    pub fn validate(&self) -> Result<(), ExpireError> {
        if !(1..=MAX_ZOOM).contains(&self.max_zoom) {
            return Err(ExpireError::Zoom(self.max_zoom));
        }
        if !(self.buffer.is_finite() && self.buffer >= 0.0) {
            return Err(ExpireError::Buffer(self.buffer));
        }
        if self.full_area_limit.is_nan() || self.full_area_limit < 0.0 {
            return Err(ExpireError::FullAreaLimit(self.full_area_limit));
        }
        if self.max_tiles_geometry == 0 || self.max_tiles_overall == 0 {
            return Err(ExpireError::Limits);
        }
        Ok(())
    }
}

/// Invalid [`RasterSettings`], or a geometry the expirer cannot read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExpireError {
    /// `max_zoom` outside 1..=[`MAX_ZOOM`].
    #[error("expire zoom {0} is outside 1..={MAX_ZOOM}")]
    Zoom(u8),
    /// `buffer` negative, NaN or infinite.
    #[error("expire buffer {0} is not a number of tiles ≥ 0")]
    Buffer(f64),
    /// `full_area_limit` negative or NaN.
    #[error("full area limit {0} is not a number of metres ≥ 0")]
    FullAreaLimit(f64),
    /// A tile limit is 0.
    #[error("tile limits must be at least 1")]
    Limits,
    /// EWKB that does not decode ([`Expirer::expire_ewkb`]).
    #[error("{object}: geometry {index}: {source}")]
    Ewkb {
        /// The object, as log lines name it.
        object: String,
        /// 0-based position of the geometry among the object's.
        index: usize,
        /// The decoder's error.
        source: EwkbError,
    },
    /// EWKB in another SRID than 3857.
    #[error("{object}: geometry {index} has SRID {srid}; only EPSG:3857 can be expired")]
    Srid {
        /// The object, as log lines name it.
        object: String,
        /// 0-based position of the geometry among the object's.
        index: usize,
        /// The SRID found.
        srid: u32,
    },
}

/// The outcome of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The unit's `tiles` were added; `new` of them were not in the set.
    Added {
        /// Tiles the unit expires.
        tiles: u64,
        /// Of those, tiles not in the set before.
        new: u64,
    },
    /// Over the per-geometry limit; added with polygons boundary-only
    /// ([`GeometryLimitAction::BoundaryOnly`]).
    Degraded {
        /// Tiles the unit expires, boundaries only.
        tiles: u64,
        /// Of those, tiles not in the set before.
        new: u64,
    },
    /// Over the per-geometry limit; nothing expired.
    Dropped,
    /// Would have taken the set over the overall limit: nothing expired,
    /// and the set is flagged.
    OverallLimitReached,
    /// The set was flagged before: not even rasterised.
    Ignored,
}

/// Counters since the set was last taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireStats {
    /// Units offered (whatever became of them).
    pub units: u64,
    /// Units over the per-geometry limit that expired nothing.
    pub dropped: u64,
    /// Units over the per-geometry limit expired boundary-only.
    pub degraded: u64,
    /// Units lost to the overall limit (the one that reached it included).
    pub ignored: u64,
    /// Units left out because a coordinate was NaN or infinite.
    pub invalid: u64,
}

/// Collects the tiles of geometries at one max zoom.
pub struct Expirer {
    config: RasterSettings,
    tiles: TileSet,
    scratch: TileSet,
    overall_limit_reached: bool,
    stats: ExpireStats,
}

impl Expirer {
    /// An empty expirer; fails on invalid settings.
    pub fn new(config: RasterSettings) -> Result<Expirer, ExpireError> {
        config.validate()?;
        Ok(Expirer {
            tiles: TileSet::new(config.max_zoom),
            scratch: TileSet::new(config.max_zoom),
            config,
            overall_limit_reached: false,
            stats: ExpireStats::default(),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &RasterSettings {
        &self.config
    }

    /// Changes how the following units are rasterised (buffer, polygon
    /// mode, hybrid limit), keeping the zoom, the limits and the tiles
    /// collected: one set fed by geometries with different settings, as
    /// an osm2pgsql expire output fed by several columns. Fails, changing
    /// nothing, on values [`RasterSettings::validate`] refuses.
    pub fn set_unit_settings(
        &mut self,
        buffer: f64,
        mode: PolygonMode,
        full_area_limit: f64,
    ) -> Result<(), ExpireError> {
        let mut config = self.config.clone();
        config.buffer = buffer;
        config.mode = mode;
        config.full_area_limit = full_area_limit;
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The tiles collected so far.
    pub fn tiles(&self) -> &TileSet {
        &self.tiles
    }

    /// Hands out the collected tiles and starts a new run (empty set,
    /// overall limit flag and counters cleared).
    pub fn take_tiles(&mut self) -> TileSet {
        self.overall_limit_reached = false;
        self.stats = ExpireStats::default();
        std::mem::replace(&mut self.tiles, TileSet::new(self.config.max_zoom))
    }

    /// The collected tiles, consuming the expirer.
    pub fn into_tiles(self) -> TileSet {
        self.tiles
    }

    /// Whether the overall limit was reached: the set is then incomplete
    /// and a consumer should fall back to something coarser (for example
    /// expiring everything at low zoom).
    pub fn overall_limit_reached(&self) -> bool {
        self.overall_limit_reached
    }

    /// Counters since the set was last taken.
    pub fn stats(&self) -> ExpireStats {
        self.stats
    }

    /// Expires one geometry as its own unit. `object` names it in log lines
    /// (for example `way 42`).
    pub fn expire(&mut self, object: impl fmt::Display, geometry: &Geometry<f64>) -> Commit {
        self.expire_together(object, [geometry])
    }

    /// Expires several geometries as one unit, as osm2pgsql's flex output
    /// commits the old and the new geometry of an object: they count
    /// together against the per-geometry limit and are added or dropped
    /// together.
    pub fn expire_together<'g>(
        &mut self,
        object: impl fmt::Display,
        geometries: impl IntoIterator<Item = &'g Geometry<f64>>,
    ) -> Commit {
        let geometries: Vec<&Geometry<f64>> = geometries.into_iter().collect();
        self.stats.units += 1;
        if self.overall_limit_reached {
            self.stats.ignored += 1;
            tracing::debug!(%object, "overall tile limit reached before: not expired");
            return Commit::Ignored;
        }
        if let Some(bad) = geometries.iter().find(|g| !is_finite(g)) {
            self.stats.invalid += 1;
            tracing::warn!(%object, geometry = ?bad, "geometry with a NaN or infinite coordinate: not expired");
            return Commit::Added { tiles: 0, new: 0 };
        }
        let mode = self.config.mode;
        if self.rasterize(&geometries, mode).is_ok() {
            return self.commit(&object, false);
        }
        let reached = self.scratch.len();
        self.scratch.clear();
        let limit = self.config.max_tiles_geometry;
        let zoom = self.config.max_zoom;
        let can_degrade = self.config.on_geometry_limit == GeometryLimitAction::BoundaryOnly
            && mode != PolygonMode::BoundaryOnly
            && geometries.iter().any(|g| has_polygon(g));
        if can_degrade {
            if self
                .rasterize(&geometries, PolygonMode::BoundaryOnly)
                .is_ok()
            {
                tracing::warn!(
                    %object, limit, zoom, reached,
                    "Tile limit {limit} reached for single geometry: {object} expires more than {limit} tiles at zoom {zoom} (stopped at {reached}); expiring its polygon boundaries only"
                );
                self.stats.degraded += 1;
                return self.commit(&object, true);
            }
            self.scratch.clear();
        }
        tracing::warn!(
            %object, limit, zoom, reached,
            "Tile limit {limit} reached for single geometry: {object} expires more than {limit} tiles at zoom {zoom} (stopped at {reached}); nothing expired for it"
        );
        self.stats.dropped += 1;
        Commit::Dropped
    }

    /// Expires the EWKB geometries of one object (e.g. the old and new rows
    /// of an output table) as one unit.
    pub fn expire_ewkb<'b>(
        &mut self,
        object: impl fmt::Display,
        ewkb: impl IntoIterator<Item = &'b [u8]>,
    ) -> Result<Commit, ExpireError> {
        let mut geometries = Vec::new();
        for (index, bytes) in ewkb.into_iter().enumerate() {
            let (srid, geometry) =
                ewkb::read_with_srid(bytes).map_err(|source| ExpireError::Ewkb {
                    object: object.to_string(),
                    index,
                    source,
                })?;
            match srid {
                None | Some(ewkb::SRID) => geometries.push(geometry),
                Some(srid) => {
                    return Err(ExpireError::Srid {
                        object: object.to_string(),
                        index,
                        srid,
                    })
                }
            }
        }
        Ok(self.expire_together(object, &geometries))
    }

    fn rasterize(&mut self, geometries: &[&Geometry<f64>], mode: PolygonMode) -> Step {
        let mut raster = Raster::new(&self.config, mode, &mut self.scratch);
        for geometry in geometries {
            raster.geometry(geometry)?;
        }
        Ok(())
    }

    fn commit(&mut self, object: &dyn fmt::Display, degraded: bool) -> Commit {
        let tiles = self.scratch.len();
        let new = self.tiles.count_missing(&self.scratch);
        let limit = self.config.max_tiles_overall;
        // Exact (osm2pgsql adds the two sizes, counting shared tiles twice).
        if self.tiles.len() + new > limit {
            self.overall_limit_reached = true;
            self.stats.ignored += 1;
            tracing::warn!(
                %object, limit, tiles = self.tiles.len(), would_add = new,
                "Overall tile limit {limit} reached for this run: {object} would add {new} tiles to {}; it and every later geometry are not expired",
                self.tiles.len()
            );
            self.scratch.clear();
            return Commit::OverallLimitReached;
        }
        self.tiles.union_with(&self.scratch);
        self.scratch.clear();
        if degraded {
            Commit::Degraded { tiles, new }
        } else {
            Commit::Added { tiles, new }
        }
    }
}

fn is_finite(geometry: &Geometry<f64>) -> bool {
    geometry
        .coords_iter()
        .all(|c| c.x.is_finite() && c.y.is_finite())
}

fn has_polygon(geometry: &Geometry<f64>) -> bool {
    match geometry {
        Geometry::Polygon(_)
        | Geometry::MultiPolygon(_)
        | Geometry::Rect(_)
        | Geometry::Triangle(_) => true,
        Geometry::GeometryCollection(c) => c.iter().any(has_polygon),
        _ => false,
    }
}

/// The unit went over the per-geometry limit.
struct LimitExceeded;

type Step = Result<(), LimitExceeded>;

/// One pass of rasterisation into a scratch set.
struct Raster<'a> {
    zoom: u8,
    /// Tiles per side, and as a float.
    width: i64,
    width_f: f64,
    buffer: f64,
    mode: PolygonMode,
    full_area_limit: f64,
    limit: u64,
    out: &'a mut TileSet,
    /// The first tile touched since the last reset, and whether another
    /// one followed: "did the boundary pass produce more than one tile".
    first_touched: Option<(u32, u32)>,
    touched_several: bool,
}

impl<'a> Raster<'a> {
    fn new(config: &RasterSettings, mode: PolygonMode, out: &'a mut TileSet) -> Raster<'a> {
        let width = tiles_per_side(config.max_zoom);
        Raster {
            zoom: config.max_zoom,
            width: i64::from(width),
            width_f: f64::from(width),
            buffer: config.buffer,
            mode,
            full_area_limit: config.full_area_limit,
            limit: config.max_tiles_geometry,
            out,
            first_touched: None,
            touched_several: false,
        }
    }

    fn tile(&mut self, x: u32, y: u32) -> Step {
        match self.first_touched {
            None => self.first_touched = Some((x, y)),
            Some(first) if first != (x, y) => self.touched_several = true,
            Some(_) => {}
        }
        if self.out.insert(x, y) && self.out.len() > self.limit {
            return Err(LimitExceeded);
        }
        Ok(())
    }

    /// Tile coordinates of a 3857 point. Coordinates more than a world
    /// beyond the edges are clamped there, so that garbage input cannot
    /// make the line walk run (practically) forever; real data (|lat| ≤
    /// 89.99°) stays within a quarter world of the edges.
    fn to_tile(&self, point: Coord<f64>) -> Coord<f64> {
        let t = tile_coords(point, self.zoom);
        let (low, high) = (-self.width_f, 2.0 * self.width_f);
        Coord {
            x: t.x.clamp(low, high),
            y: t.y.clamp(low, high),
        }
    }

    /// Expires columns `x0..=x1` (wrapped) × rows `y0..=y1` (those inside
    /// the world).
    fn rect(&mut self, x0: i64, x1: i64, y0: i64, y1: i64) -> Step {
        let (y0, y1) = (y0.max(0), y1.min(self.width - 1));
        if x0 > x1 || y0 > y1 {
            return Ok(());
        }
        // A range as wide as the world only revisits the same columns.
        let (x0, x1) = if x1.saturating_sub(x0) >= self.width {
            (0, self.width - 1)
        } else {
            (x0, x1)
        };
        for x in x0..=x1 {
            let x = wrap_x(x, self.zoom);
            for y in y0..=y1 {
                // y is within [0, width) here.
                self.tile(x, y as u32)?;
            }
        }
        Ok(())
    }

    /// A point given in tile coordinates (osm2pgsql's `expire_tiles::from_point_list`).
    fn point_at(&mut self, t: Coord<f64>) -> Step {
        let b = self.buffer;
        self.rect(
            truncate(t.x - b),
            truncate(t.x + b),
            truncate(t.y - b),
            truncate(t.y + b),
        )
    }

    fn point(&mut self, point: Coord<f64>) -> Step {
        let t = self.to_tile(point);
        self.point_at(t)
    }

    /// One segment (osm2pgsql's `expire_tiles::from_line_segment`), walked from its western end in 0.4-tile chunks.
    fn segment(&mut self, a: Coord<f64>, b: Coord<f64>) -> Step {
        let (mut ta, mut tb) = (self.to_tile(a), self.to_tile(b));
        if ta.x > tb.x {
            std::mem::swap(&mut ta, &mut tb);
        }
        let dx = tb.x - ta.x;
        let dy = tb.y - ta.y;
        let length = (dx * dx + dy * dy).sqrt();
        if length == 0.0 {
            // osm2pgsql divides by zero here and expires nothing.
            return self.point_at(ta);
        }
        let (ux, uy) = (dx / length, dy / length);
        let buffer = self.buffer;
        let chunks = (length / CHUNK) as i64;
        let mut previous = None;
        for i in 0..=chunks {
            let start = i as f64 * CHUNK;
            let end = length.min((i + 1) as f64 * CHUNK);
            let x1 = ta.x + start * ux;
            let x2 = ta.x + end * ux;
            let (mut y1, mut y2) = (ta.y + start * uy, ta.y + end * uy);
            if y1 > y2 {
                std::mem::swap(&mut y1, &mut y2);
            }
            let chunk_box = (
                truncate(x1 - buffer),
                truncate(x2 + buffer),
                truncate(y1 - buffer),
                truncate(y2 + buffer),
            );
            // Consecutive chunks often cover the same tiles.
            if previous == Some(chunk_box) {
                continue;
            }
            previous = Some(chunk_box);
            self.rect(chunk_box.0, chunk_box.1, chunk_box.2, chunk_box.3)?;
        }
        Ok(())
    }

    fn linestring(&mut self, line: &LineString<f64>) -> Step {
        match line.0.as_slice() {
            [] => Ok(()),
            // Not a valid line; expire it like the point it is.
            [single] => self.point(*single),
            points => {
                for pair in points.windows(2) {
                    self.segment(pair[0], pair[1])?;
                }
                Ok(())
            }
        }
    }

    /// A polygon or the parts of a multipolygon (osm2pgsql 2.3's `expire_tiles::from_polygon_boundary`
    /// and `from_polygon_area`).
    fn polygons(&mut self, parts: &[Polygon<f64>]) -> Step {
        let mode = match self.mode {
            PolygonMode::Hybrid => {
                let (mut min, mut max) = (
                    Coord {
                        x: f64::INFINITY,
                        y: f64::INFINITY,
                    },
                    Coord {
                        x: f64::NEG_INFINITY,
                        y: f64::NEG_INFINITY,
                    },
                );
                // osm2pgsql's envelope of a polygon is that of its outer ring.
                for c in parts.iter().flat_map(|p| p.exterior().0.iter()) {
                    min.x = min.x.min(c.x);
                    min.y = min.y.min(c.y);
                    max.x = max.x.max(c.x);
                    max.y = max.y.max(c.y);
                }
                if max.x - min.x > self.full_area_limit || max.y - min.y > self.full_area_limit {
                    PolygonMode::BoundaryOnly
                } else {
                    PolygonMode::FullArea
                }
            }
            mode => mode,
        };
        self.first_touched = None;
        self.touched_several = false;
        for part in parts {
            self.linestring(part.exterior())?;
            for ring in part.interiors() {
                self.linestring(ring)?;
            }
        }
        // With a single tile the polygon lies inside it: nothing to fill.
        if mode == PolygonMode::FullArea && self.touched_several {
            for part in parts {
                self.fill(part)?;
            }
        }
        Ok(())
    }

    /// Interior of one polygon (osm2pgsql 2.3's `from_polygon_area`): for each tile row, the scan line at
    /// the row's top edge is cut by the rings (outer and inner together,
    /// even-odd, so holes stay empty) and the tiles between pairs of
    /// crossings are expired. No buffer: the boundary pass covered the
    /// edges. Edges are kept in an active list, which gives the same
    /// crossings as testing every edge on every row.
    fn fill(&mut self, polygon: &Polygon<f64>) -> Step {
        let (mut min_y, mut max_y) = (f64::INFINITY, f64::NEG_INFINITY);
        for c in &polygon.exterior().0 {
            min_y = min_y.min(c.y);
            max_y = max_y.max(c.y);
        }
        if min_y > max_y {
            return Ok(());
        }
        // Tile y grows southwards: the northern edge gives the first row.
        let first_row = truncate(self.width_f * (0.5 - max_y / EARTH_CIRCUMFERENCE)).max(0);
        let end_row = truncate(self.width_f * (0.5 - min_y / EARTH_CIRCUMFERENCE)).min(self.width);
        if first_row >= end_row {
            return Ok(());
        }

        struct Edge {
            /// The later vertex (osm2pgsql's `t1`) and the earlier one.
            later: Coord<f64>,
            earlier: Coord<f64>,
            /// Rows r with min(y) < r ≤ max(y).
            first_row: i64,
            last_row: i64,
        }
        let mut edges = Vec::new();
        for ring in std::iter::once(polygon.exterior()).chain(polygon.interiors()) {
            for pair in ring.0.windows(2) {
                let (earlier, later) = (self.to_tile(pair[0]), self.to_tile(pair[1]));
                let (low, high) = if earlier.y < later.y {
                    (earlier.y, later.y)
                } else {
                    (later.y, earlier.y)
                };
                if low == high {
                    continue; // horizontal: never crosses a scan line
                }
                let edge = Edge {
                    later,
                    earlier,
                    first_row: low.floor() as i64 + 1,
                    last_row: high.floor() as i64,
                };
                if edge.first_row <= edge.last_row
                    && edge.last_row >= first_row
                    && edge.first_row < end_row
                {
                    edges.push(edge);
                }
            }
        }
        edges.sort_by_key(|e| e.first_row);

        let max_x = self.width_f - 1.0;
        let last_column = (self.width - 1) as u32;
        let mut active: Vec<&Edge> = Vec::new();
        let mut crossings: Vec<u32> = Vec::new();
        let mut next = 0;
        let mut row = first_row;
        while row < end_row {
            while next < edges.len() && edges[next].first_row <= row {
                active.push(&edges[next]);
                next += 1;
            }
            active.retain(|e| e.last_row >= row);
            if active.is_empty() {
                match edges.get(next) {
                    Some(e) => {
                        row = row.max(e.first_row);
                        continue;
                    }
                    None => break,
                }
            }
            let scan_y = row as f64;
            crossings.clear();
            for e in &active {
                let (p, q) = (e.later, e.earlier);
                if (p.y < scan_y && q.y >= scan_y) || (q.y < scan_y && p.y >= scan_y) {
                    let x = p.x + (scan_y - p.y) / (q.y - p.y) * (q.x - p.x);
                    crossings.push(x.clamp(0.0, max_x) as u32);
                }
            }
            crossings.sort_unstable();
            // Rings are closed, so crossings come in pairs; a stray last one
            // (unclosed input) is ignored.
            for pair in crossings.chunks_exact(2) {
                let (x0, x1) = (pair[0], pair[1]);
                if x0 >= last_column {
                    break;
                }
                for x in x0..x1 {
                    // row is within [0, width) here.
                    self.tile(x, row as u32)?;
                }
            }
            row += 1;
        }
        Ok(())
    }

    fn geometry(&mut self, geometry: &Geometry<f64>) -> Step {
        match geometry {
            Geometry::Point(p) => self.point(p.0),
            Geometry::Line(l) => self.segment(l.start, l.end),
            Geometry::LineString(l) => self.linestring(l),
            Geometry::Polygon(p) => self.polygons(std::slice::from_ref(p)),
            Geometry::MultiPoint(points) => {
                for p in points {
                    self.point(p.0)?;
                }
                Ok(())
            }
            Geometry::MultiLineString(lines) => {
                for l in lines {
                    self.linestring(l)?;
                }
                Ok(())
            }
            Geometry::MultiPolygon(parts) => self.polygons(&parts.0),
            Geometry::GeometryCollection(collection) => {
                for g in collection {
                    self.geometry(g)?;
                }
                Ok(())
            }
            Geometry::Rect(r) => self.polygons(&[r.to_polygon()]),
            Geometry::Triangle(t) => self.polygons(&[t.to_polygon()]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expire::tiles::{tile_bounds, HALF_EARTH_CIRCUMFERENCE};
    use crate::tile::Tile;
    use geo::{Intersects, LineString, MultiPolygon, Point};
    use std::collections::BTreeSet;

    /// 3857 coordinates of a position given in tile units at `zoom`.
    fn merc(tx: f64, ty: f64, zoom: u8) -> Coord<f64> {
        let w = f64::from(tiles_per_side(zoom));
        Coord {
            x: (tx / w - 0.5) * EARTH_CIRCUMFERENCE,
            y: (0.5 - ty / w) * EARTH_CIRCUMFERENCE,
        }
    }

    fn line(zoom: u8, points: &[(f64, f64)]) -> LineString<f64> {
        LineString::new(points.iter().map(|&(x, y)| merc(x, y, zoom)).collect())
    }

    fn square(zoom: u8, min: f64, max: f64) -> LineString<f64> {
        line(
            zoom,
            &[(min, min), (max, min), (max, max), (min, max), (min, min)],
        )
    }

    fn config(zoom: u8) -> RasterSettings {
        RasterSettings::new(zoom)
    }

    fn tiles_of(config: RasterSettings, geometry: &Geometry<f64>) -> BTreeSet<(u32, u32)> {
        let mut e = Expirer::new(config).unwrap();
        e.expire("test", geometry);
        e.tiles().tiles().map(|t| (t.x, t.y)).collect()
    }

    fn expire(zoom: u8, geometry: impl Into<Geometry<f64>>) -> BTreeSet<(u32, u32)> {
        tiles_of(config(zoom), &geometry.into())
    }

    fn set(tiles: &[(u32, u32)]) -> BTreeSet<(u32, u32)> {
        tiles.iter().copied().collect()
    }

    fn point(zoom: u8, tx: f64, ty: f64) -> Point<f64> {
        Point(merc(tx, ty, zoom))
    }

    #[test]
    fn config_validation() {
        assert!(Expirer::new(config(0)).is_err());
        assert!(Expirer::new(config(21)).is_err());
        let mut c = config(10);
        c.buffer = -0.1;
        assert_eq!(
            Expirer::new(c.clone()).err(),
            Some(ExpireError::Buffer(-0.1))
        );
        c.buffer = 0.1;
        c.max_tiles_geometry = 0;
        assert!(Expirer::new(c).is_err());
    }

    #[test]
    fn points_and_their_buffer() {
        // Middle of a tile: one tile.
        assert_eq!(expire(2, point(2, 1.5, 2.5)), set(&[(1, 2)]));
        // Within 0.1 of the east edge: also the eastern neighbour.
        assert_eq!(expire(2, point(2, 1.95, 2.5)), set(&[(1, 2), (2, 2)]));
        // Within 0.1 of the north edge: also the northern neighbour.
        assert_eq!(expire(2, point(2, 1.5, 2.05)), set(&[(1, 1), (1, 2)]));
        // Near a corner: four tiles.
        assert_eq!(
            expire(2, point(2, 2.05, 1.93)),
            set(&[(1, 1), (2, 1), (1, 2), (2, 2)])
        );
        // 0/0 at z1 with no buffer: the corner belongs to tile 1/1.
        let mut c = config(1);
        c.buffer = 0.0;
        assert_eq!(tiles_of(c, &Point::new(0.0, 0.0).into()), set(&[(1, 1)]));
        // With the buffer, the four tiles around it.
        assert_eq!(
            expire(1, Point::new(0.0, 0.0)),
            set(&[(0, 0), (0, 1), (1, 0), (1, 1)])
        );
    }

    #[test]
    fn points_at_the_antimeridian_wrap() {
        let h = HALF_EARTH_CIRCUMFERENCE;
        let y = merc(0.0, 2.5, 2).y;
        // At +180°: tx = 4 → columns trunc(3.9) = 3 and trunc(4.1) = 4 → 0.
        assert_eq!(expire(2, Point::new(h, y)), set(&[(3, 2), (0, 2)]));
        // 1 m east of −180°: tx − 0.1 is negative but truncates to 0, not
        // −1 (osm2pgsql's truncation), so only column 0.
        assert_eq!(expire(2, Point::new(-h + 1.0, y)), set(&[(0, 2)]));
    }

    #[test]
    fn points_at_the_poles_stay_in_the_world() {
        let h = HALF_EARTH_CIRCUMFERENCE;
        let x = merc(4.5, 0.0, 3).x;
        // On the north edge: row 0 only (no row −1).
        assert_eq!(expire(3, Point::new(x, h)), set(&[(4, 0)]));
        // On the south edge: ty = 8 → rows 7 and 8, and 8 is not a row
        // (osm2pgsql 1.8 wrote 3/4/8).
        assert_eq!(expire(3, Point::new(x, -h)), set(&[(4, 7)]));
        // Beyond ±85.05° (osm2pgsql projects up to 89.99°): nothing.
        let north = crate::apply::geom::project(0, 899_900_000);
        assert!(expire(3, Point(north)).is_empty());
        let south = crate::apply::geom::project(0, -899_900_000);
        assert!(expire(3, Point(south)).is_empty());
    }

    #[test]
    fn horizontal_and_vertical_lines() {
        assert_eq!(
            expire(4, line(4, &[(2.5, 3.5), (6.5, 3.5)])),
            set(&[(2, 3), (3, 3), (4, 3), (5, 3), (6, 3)])
        );
        // Drawn east to west: the same.
        assert_eq!(
            expire(4, line(4, &[(6.5, 3.5), (2.5, 3.5)])),
            set(&[(2, 3), (3, 3), (4, 3), (5, 3), (6, 3)])
        );
        // Vertical, ending 0.05 before a row edge: the buffer reaches over.
        assert_eq!(
            expire(4, line(4, &[(9.5, 1.5), (9.5, 3.95)])),
            set(&[(9, 1), (9, 2), (9, 3), (9, 4)])
        );
    }

    #[test]
    fn diagonal_through_corners_is_over_covered() {
        // From (1.5, 1.5) to (3.5, 3.5) through the corners (2, 2) and
        // (3, 3). Chunks 1–2 span the first corner, 4–5 the second; each
        // expires its bounding box, so the corner-adjacent tiles (1,2),
        // (2,1), (2,3), (3,2) come with the three crossed tiles.
        let expected = set(&[(1, 1), (2, 2), (3, 3), (1, 2), (2, 1), (2, 3), (3, 2)]);
        assert_eq!(expire(4, line(4, &[(1.5, 1.5), (3.5, 3.5)])), expected);
        let mut c = config(4);
        c.buffer = 0.0;
        assert_eq!(
            tiles_of(c, &line(4, &[(1.5, 1.5), (3.5, 3.5)]).into()),
            expected
        );
    }

    #[test]
    fn zero_length_segments_are_points() {
        let p = (5.95, 5.5);
        assert_eq!(expire(4, line(4, &[p, p])), set(&[(5, 5), (6, 5)]));
        assert_eq!(
            expire(4, line(4, &[p, p, (7.5, 5.5)])),
            set(&[(5, 5), (6, 5), (7, 5)])
        );
        // A one-point "line" too.
        assert_eq!(expire(4, line(4, &[p])), set(&[(5, 5), (6, 5)]));
        assert!(expire(4, LineString::new(vec![])).is_empty());
    }

    #[test]
    fn segments_across_the_antimeridian_are_taken_as_stored() {
        // From 179.99°E to 179.99°W is stored as a line across the whole
        // map, and that is what Mapnik draws: the whole row.
        let h = HALF_EARTH_CIRCUMFERENCE;
        let y = merc(0.0, 3.5, 3).y;
        let l = LineString::from(vec![(h - 1000.0, y), (-h + 1000.0, y)]);
        let tiles = expire(3, l);
        assert_eq!(tiles, (0..8).map(|x| (x, 3)).collect());
    }

    #[test]
    fn south_edge_lines_are_clamped() {
        // A line along the south edge (ty = 8 at z3): upstream also
        // expires y = 8.
        let h = HALF_EARTH_CIRCUMFERENCE;
        let l = LineString::from(vec![(merc(4.2, 0.0, 3).x, -h), (merc(4.8, 0.0, 3).x, -h)]);
        assert_eq!(expire(3, l), set(&[(4, 7)]));
    }

    #[test]
    fn polygon_modes() {
        // A square from tile 2.5 to 12.5 at z4: 40 boundary tiles, 121 in
        // all; its side is 10 tiles = 25 047 km, above the hybrid limit.
        let p = Polygon::new(square(4, 2.5, 12.5), vec![]);
        let with_mode = |mode: PolygonMode, limit: f64| {
            let mut c = config(4);
            c.mode = mode;
            c.full_area_limit = limit;
            tiles_of(c, &p.clone().into())
        };
        let full = with_mode(PolygonMode::FullArea, 0.0);
        let boundary = with_mode(PolygonMode::BoundaryOnly, 0.0);
        assert_eq!(full.len(), 121);
        assert_eq!(
            full,
            (2..=12)
                .flat_map(|x| (2..=12).map(move |y| (x, y)))
                .collect()
        );
        assert_eq!(boundary.len(), 40);
        assert!(boundary
            .iter()
            .all(|&(x, y)| x == 2 || x == 12 || y == 2 || y == 12));
        assert_eq!(with_mode(PolygonMode::Hybrid, 20_000.0), boundary);
        assert_eq!(with_mode(PolygonMode::Hybrid, 30_000_000.0), full);
    }

    #[test]
    fn hybrid_judges_the_whole_multipolygon() {
        // Two small squares far apart: each is small, the envelope is not.
        let a = Polygon::new(square(10, 100.2, 100.8), vec![]);
        let b = Polygon::new(square(10, 900.2, 900.8), vec![]);
        let mut c = config(10);
        c.mode = PolygonMode::Hybrid;
        let mp: Geometry<f64> = MultiPolygon::new(vec![a.clone(), b]).into();
        // Each square lies in one tile: boundary-only and full area agree,
        // so use bigger ones to see the decision.
        assert_eq!(tiles_of(c.clone(), &mp).len(), 2);
        let a = Polygon::new(square(10, 100.5, 105.5), vec![]);
        let b = Polygon::new(square(10, 900.5, 905.5), vec![]);
        let mp: Geometry<f64> = MultiPolygon::new(vec![a.clone(), b.clone()]).into();
        // Side 5 tiles ≈ 195 km > 20 km: boundary-only, 20 tiles each.
        assert_eq!(tiles_of(c.clone(), &mp).len(), 40);
        c.full_area_limit = 300_000.0;
        // Each part 195 km, but the envelope ~31 000 km.
        assert_eq!(tiles_of(c.clone(), &mp).len(), 40);
        c.full_area_limit = 40_000_000.0;
        assert_eq!(tiles_of(c, &mp).len(), 72);
    }

    #[test]
    fn holes_stay_empty() {
        let p = Polygon::new(square(4, 0.5, 9.5), vec![square(4, 3.5, 6.5)]);
        let tiles = expire(4, p);
        assert_eq!(tiles.len(), 96);
        for hole in [(4, 4), (4, 5), (5, 4), (5, 5)] {
            assert!(!tiles.contains(&hole), "{hole:?}");
        }
        // The hole's own boundary tiles are expired.
        assert!(tiles.contains(&(3, 3)) && tiles.contains(&(6, 6)));
    }

    #[test]
    fn degenerate_rings() {
        // A ring collapsed to a line: its line tiles, no fill.
        let flat = Polygon::new(line(4, &[(1.5, 1.5), (5.5, 1.5), (1.5, 1.5)]), vec![]);
        assert_eq!(
            expire(4, flat),
            set(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)])
        );
        // A ring of one repeated point: that point.
        let dot = Polygon::new(line(4, &[(2.5, 2.5), (2.5, 2.5)]), vec![]);
        assert_eq!(expire(4, dot), set(&[(2, 2)]));
        // Empty.
        let empty = Polygon::new(LineString::new(vec![]), vec![]);
        assert!(expire(4, empty).is_empty());
        // A bow tie: even-odd fill of the two triangles.
        let bow = Polygon::new(
            line(
                4,
                &[(0.5, 0.5), (8.5, 8.5), (8.5, 0.5), (0.5, 8.5), (0.5, 0.5)],
            ),
            vec![],
        );
        let tiles = expire(4, bow);
        assert!(tiles.contains(&(7, 4)) && tiles.contains(&(1, 4)));
        assert!(!tiles.contains(&(4, 1)) && !tiles.contains(&(4, 7)));
    }

    #[test]
    fn polygon_inside_one_tile() {
        let p = Polygon::new(square(12, 100.3, 100.7), vec![]);
        assert_eq!(expire(12, p), set(&[(100, 100)]));
    }

    #[test]
    fn geometry_limit_drops_the_unit() {
        let mut c = config(10);
        c.max_tiles_geometry = 10;
        let mut e = Expirer::new(c).unwrap();
        let short: Geometry<f64> = line(10, &[(0.5, 0.5), (5.5, 0.5)]).into();
        let long: Geometry<f64> = line(10, &[(0.5, 2.5), (20.5, 2.5)]).into();
        assert_eq!(
            e.expire("way 1", &short),
            Commit::Added { tiles: 6, new: 6 }
        );
        assert_eq!(e.expire("way 2", &long), Commit::Dropped);
        assert_eq!(e.tiles().len(), 6);
        // Old and new count together: 6 + 6 > 10.
        let other: Geometry<f64> = line(10, &[(0.5, 4.5), (5.5, 4.5)]).into();
        assert_eq!(
            e.expire_together("way 3", [&short, &other]),
            Commit::Dropped
        );
        assert_eq!(e.stats().dropped, 2);
        assert!(!e.overall_limit_reached());
    }

    #[test]
    fn geometry_limit_can_degrade_to_boundary() {
        let mut c = config(8);
        c.max_tiles_geometry = 50;
        c.on_geometry_limit = GeometryLimitAction::BoundaryOnly;
        let mut e = Expirer::new(c).unwrap();
        let p: Geometry<f64> = Polygon::new(square(8, 10.5, 20.5), vec![]).into();
        assert_eq!(
            e.expire("relation 7", &p),
            Commit::Degraded { tiles: 40, new: 40 }
        );
        let huge: Geometry<f64> = Polygon::new(square(8, 10.5, 40.5), vec![]).into();
        assert_eq!(e.expire("relation 8", &huge), Commit::Dropped);
        assert_eq!((e.stats().degraded, e.stats().dropped), (1, 1));
    }

    #[test]
    fn overall_limit_flags_the_run() {
        let mut c = config(10);
        c.max_tiles_overall = 15;
        let mut e = Expirer::new(c).unwrap();
        let a: Geometry<f64> = line(10, &[(0.5, 0.5), (9.5, 0.5)]).into();
        let b: Geometry<f64> = line(10, &[(0.5, 2.5), (9.5, 2.5)]).into();
        assert_eq!(e.expire("way 1", &a), Commit::Added { tiles: 10, new: 10 });
        // The same tiles again: nothing new, so still within the limit.
        assert_eq!(e.expire("way 1", &a), Commit::Added { tiles: 10, new: 0 });
        assert_eq!(e.expire("way 2", &b), Commit::OverallLimitReached);
        assert!(e.overall_limit_reached());
        assert_eq!(
            e.expire("node 3", &Point(merc(0.5, 0.5, 10)).into()),
            Commit::Ignored
        );
        assert_eq!(e.tiles().len(), 10);
        assert_eq!(e.stats().ignored, 2);
        // Taking the set starts a new run.
        assert_eq!(e.take_tiles().len(), 10);
        assert!(!e.overall_limit_reached());
        assert_eq!(e.expire("way 2", &b), Commit::Added { tiles: 10, new: 10 });
    }

    #[test]
    fn ewkb_input() {
        let mut e = Expirer::new(config(4)).unwrap();
        let old = ewkb::point(&point(4, 1.5, 1.5));
        let new = ewkb::linestring(&line(4, &[(3.5, 3.5), (4.5, 3.5)]));
        let commit = e
            .expire_ewkb("planet_osm_line 5", [old.as_slice(), new.as_slice()])
            .unwrap();
        assert_eq!(commit, Commit::Added { tiles: 3, new: 3 });
        let err = e
            .expire_ewkb("planet_osm_point 9", [&[1u8, 2][..]])
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("planet_osm_point 9: geometry 0:"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_coordinates_are_skipped() {
        let mut e = Expirer::new(config(4)).unwrap();
        let bad: Geometry<f64> = Point::new(f64::NAN, 0.0).into();
        assert_eq!(e.expire("node 1", &bad), Commit::Added { tiles: 0, new: 0 });
        assert_eq!(e.stats().invalid, 1);
        // Absurd but finite coordinates finish quickly.
        let far: Geometry<f64> = LineString::from(vec![(-1e300, 0.0), (1e300, 1e300)]).into();
        e.expire("way 2", &far);
    }

    // ---- property-style tests (seeded PRNG) ----

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 11
        }
        fn unit(&mut self) -> f64 {
            self.next() as f64 / (1u64 << 53) as f64
        }
        fn range(&mut self, low: f64, high: f64) -> f64 {
            low + (high - low) * self.unit()
        }
    }

    /// Every tile a fine walk along the segments visits, with every offset
    /// up to just under the buffer, must be in the set.
    #[test]
    fn lines_cover_every_tile_they_pass() {
        let mut rng = Rng(7);
        for round in 0..300 {
            // Mostly short lines in a small area, some across the world.
            let long = round % 5 == 0;
            let zoom = 1 + (rng.next() % if long { 8 } else { 18 }) as u8;
            let w = f64::from(tiles_per_side(zoom));
            let span = if long { w } else { 6.0 };
            let (cx, cy) = (rng.range(0.0, w), rng.range(0.0, w));
            let points: Vec<(f64, f64)> = (0..2 + rng.next() % 4)
                .map(|_| {
                    (
                        (cx + rng.range(-span, span)).clamp(0.0, w),
                        (cy + rng.range(-span, span)).clamp(0.0, w),
                    )
                })
                .collect();
            let l = line(zoom, &points);
            let tiles = expire(zoom, l.clone());
            let b = DEFAULT_BUFFER * 0.99;
            for pair in l.0.windows(2) {
                let (a, c) = (tile_coords(pair[0], zoom), tile_coords(pair[1], zoom));
                let steps = ((c.x - a.x).abs().max((c.y - a.y).abs()) * 20.0).ceil() as usize + 1;
                for i in 0..=steps {
                    let f = i as f64 / steps as f64;
                    let (x, y) = (a.x + f * (c.x - a.x), a.y + f * (c.y - a.y));
                    for (dx, dy) in [(0.0, 0.0), (-b, -b), (-b, b), (b, -b), (b, b)] {
                        let ty = truncate(y + dy);
                        if !(0..w as i64).contains(&ty) {
                            continue;
                        }
                        let tx = wrap_x(truncate(x + dx), zoom);
                        assert!(
                            tiles.contains(&(tx, ty as u32)),
                            "z{zoom} {points:?}: walk point {x},{y} offset {dx},{dy} → {tx}/{ty} missing"
                        );
                    }
                }
            }
        }
    }

    /// Random star-shaped polygons (some with a hole): full area contains
    /// boundary-only, covers every tile the polygon intersects, and stays
    /// inside the buffered bounding box (osm2pgsql 1.8's result).
    #[test]
    fn polygons_cover_their_area_within_the_bbox() {
        let mut rng = Rng(11);
        for _ in 0..200 {
            let zoom = 4 + (rng.next() % 12) as u8;
            let w = f64::from(tiles_per_side(zoom));
            // Inside the world: beyond the east edge the fill (which stops
            // at the last column, as osm2pgsql's does) would not apply.
            let radius = rng.range(0.3, 12.0).min(w / 4.0);
            let (cx, cy) = (rng.range(radius, w - radius), rng.range(radius, w - radius));
            // Star-shaped around the centre, which the hole stays close to.
            let n = 6 + (rng.next() % 12) as usize;
            let mut ring: Vec<(f64, f64)> = (0..n)
                .map(|i| {
                    let angle = std::f64::consts::TAU * (i as f64 + rng.range(0.0, 0.9)) / n as f64;
                    let r = radius * rng.range(0.7, 1.0);
                    (cx + r * angle.cos(), cy + r * angle.sin())
                })
                .collect();
            ring.push(ring[0]);
            let hole = if rng.next() % 3 == 0 {
                let r = radius * 0.2;
                vec![line(
                    zoom,
                    &[
                        (cx - r, cy - r),
                        (cx - r, cy + r),
                        (cx + r, cy + r),
                        (cx + r, cy - r),
                        (cx - r, cy - r),
                    ],
                )]
            } else {
                vec![]
            };
            let polygon = Polygon::new(line(zoom, &ring), hole);
            let geometry: Geometry<f64> = polygon.clone().into();
            let full = tiles_of(config(zoom), &geometry);
            let mut c = config(zoom);
            c.mode = PolygonMode::BoundaryOnly;
            let boundary = tiles_of(c, &geometry);
            assert!(full.is_superset(&boundary));

            // Exact cover: every tile whose square meets the polygon.
            let (mut lo, mut hi) = ((f64::MAX, f64::MAX), (f64::MIN, f64::MIN));
            for c in polygon.exterior().coords() {
                let t = tile_coords(*c, zoom);
                lo = (lo.0.min(t.x), lo.1.min(t.y));
                hi = (hi.0.max(t.x), hi.1.max(t.y));
            }
            let last = w as i64 - 1;
            for x in truncate(lo.0)..=truncate(hi.0).min(last) {
                for y in truncate(lo.1)..=truncate(hi.1).min(last) {
                    let tile = Tile {
                        z: zoom,
                        x: x as u32,
                        y: y as u32,
                    };
                    if tile_bounds(tile).intersects(&polygon) {
                        assert!(full.contains(&(tile.x, tile.y)), "{tile} missing");
                    }
                }
            }
            // Within 1.8's bbox rectangle.
            let b = DEFAULT_BUFFER;
            for &(x, y) in &full {
                assert!(
                    (truncate(lo.0 - b)..=truncate(hi.0 + b)).contains(&i64::from(x))
                        && (truncate(lo.1 - b)..=truncate(hi.1 + b)).contains(&i64::from(y)),
                    "{x}/{y} outside the bbox"
                );
            }
        }
    }

    /// The scan-line fill with an active edge list equals the plain
    /// version (every edge tested on every row), including hole handling.
    #[test]
    fn fill_equals_the_plain_scan_line() {
        fn plain_fill(polygon: &Polygon<f64>, zoom: u8) -> BTreeSet<(u32, u32)> {
            let w = f64::from(tiles_per_side(zoom));
            let ys: Vec<f64> = polygon.exterior().0.iter().map(|c| c.y).collect();
            let max_y = ys.iter().copied().fold(f64::MIN, f64::max);
            let min_y = ys.iter().copied().fold(f64::MAX, f64::min);
            let min_row = truncate(w * (0.5 - max_y / EARTH_CIRCUMFERENCE)).max(0);
            let max_row = truncate(w * (0.5 - min_y / EARTH_CIRCUMFERENCE)).min(w as i64);
            let mut out = BTreeSet::new();
            for r in min_row..max_row {
                let ry = r as f64;
                let mut xs = Vec::new();
                for ring in std::iter::once(polygon.exterior()).chain(polygon.interiors()) {
                    for i in 1..ring.0.len() {
                        let t1 = tile_coords(ring.0[i], zoom);
                        let t2 = tile_coords(ring.0[i - 1], zoom);
                        if (t1.y < ry && t2.y >= ry) || (t2.y < ry && t1.y >= ry) {
                            let pos = (ry - t1.y) / (t2.y - t1.y) * (t2.x - t1.x);
                            xs.push((t1.x + pos).clamp(0.0, w - 1.0) as u32);
                        }
                    }
                }
                xs.sort();
                for pair in xs.chunks(2) {
                    if pair[0] >= w as u32 - 1 {
                        break;
                    }
                    if pair[1] > 0 {
                        for x in pair[0]..pair[1] {
                            out.insert((x, r as u32));
                        }
                    }
                }
            }
            out
        }
        let mut rng = Rng(5);
        for _ in 0..200 {
            let zoom = 5 + (rng.next() % 4) as u8;
            let w = f64::from(tiles_per_side(zoom));
            let n = 3 + (rng.next() % 20) as usize;
            let (cx, cy, radius) = (w / 2.0, w / 2.0, w / 4.0);
            let mut ring: Vec<(f64, f64)> = (0..n)
                .map(|_| {
                    (
                        cx + rng.range(-radius, radius),
                        cy + rng.range(-radius, radius),
                    )
                })
                .collect();
            ring.push(ring[0]);
            let polygon = Polygon::new(line(zoom, &ring), vec![square(zoom, cx - 2.0, cx + 2.0)]);
            let mut scratch = TileSet::new(zoom);
            let c = config(zoom);
            let mut raster = Raster::new(&c, PolygonMode::FullArea, &mut scratch);
            assert!(raster.fill(&polygon).is_ok());
            let ours: BTreeSet<(u32, u32)> = scratch.tiles().map(|t| (t.x, t.y)).collect();
            assert_eq!(ours, plain_fill(&polygon, zoom));
        }
    }

    /// Lower zooms derived from a random set equal the ancestors computed
    /// one by one, and the list order writes each once.
    #[test]
    fn derived_zooms_equal_direct_ancestors() {
        let mut rng = Rng(3);
        for _ in 0..50 {
            let zoom = 3 + (rng.next() % 14) as u8;
            let w = tiles_per_side(zoom) as u64;
            let mut s = TileSet::new(zoom);
            let (cx, cy) = (rng.next() % w, rng.next() % w);
            for _ in 0..rng.next() % 500 {
                s.insert(
                    ((cx + rng.next() % 64) % w) as u32,
                    ((cy + rng.next() % 64) % w) as u32,
                );
            }
            let listed: Vec<Tile> = s.tiles_for_zooms(0..=zoom).collect();
            for z in 0..=zoom {
                let direct: BTreeSet<Tile> = s.tiles().map(|t| t.ancestor(zoom - z)).collect();
                let derived: BTreeSet<Tile> = s.at_zoom(z).tiles().collect();
                assert_eq!(derived, direct);
                let in_list: Vec<Tile> = listed.iter().copied().filter(|t| t.z == z).collect();
                assert_eq!(in_list.len(), direct.len(), "each once");
                assert_eq!(in_list.into_iter().collect::<BTreeSet<_>>(), direct);
            }
            // A lower-zoom tile comes right after a child of it.
            for pair in listed.windows(2) {
                if pair[1].z < zoom {
                    assert_eq!(pair[0].z, pair[1].z + 1);
                    assert_eq!(pair[0].ancestor(1), pair[1]);
                }
            }
        }
    }
}
