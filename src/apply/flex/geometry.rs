//! The geometry objects of osm2pgsql's flex output: what the `as_*()`
//! functions of OSM objects return to Lua, their methods, and how they are
//! written into geometry columns.
//!
//! Behaviour follows osm2pgsql 1.8.0 (`src/geom-from-osm.cpp`,
//! `src/geom-functions.cpp`, `src/geom-pole-of-inaccessibility.cpp`,
//! `src/flex-lua-geom.cpp`, `src/flex-write.cpp`, `src/wkb.cpp`), plus
//! `spherical_area()` as osm2pgsql 2.3 (HEAD) computes it:
//!
//! - geometries are built in EPSG:4326 from the nodes' 1e-7° fixed-point
//!   locations (coordinates `fixed / 1e7`, as osmium computes them);
//!   polygons go through the same osmium-compatible area assembler as the
//!   classic output, deciding on the exact grid locations;
//! - `transform(3857)` and writing into a 3857 column use osm2pgsql's own
//!   mercator projection ([`project_degrees`]), bit for bit;
//! - measurements use Boost.Geometry's arithmetic, which osm2pgsql uses
//!   (down to `length()` summing in x87 `long double`): `area()`,
//!   `length()`, `centroid()`, `simplify()`, `segmentize()`, `line_merge()`
//!   and `pole_of_inaccessibility()` gave bit-identical results to
//!   osm2pgsql 1.8.0's own `geom-functions.cpp` and
//!   `geom-pole-of-inaccessibility.cpp` compiled with Boost 1.74 (as Debian
//!   12 builds osm2pgsql) on 7000 random geometries;
//! - a NULL geometry (failed construction) is a value like any other: its
//!   methods give NULL or 0, and it is written as SQL NULL.
//!
//! Known differences from osm2pgsql:
//! - only EPSG:4326 and 3857 are supported; osm2pgsql built with PROJ also
//!   transforms into other projections;
//! - `spherical_area()` is Karney's geodesic polygon area on the WGS84
//!   spheroid (`geo`'s `GeodesicArea`); osm2pgsql 2.3 uses Boost's
//!   `geographic<vincenty>` area, whose accuracy depends on the Boost
//!   version (1.74's is off by hundreds of m² on building-sized polygons;
//!   boostorg/geometry#801 brought it close to GeographicLib), so results
//!   agree with upstream's test values to 1e-5 but not bit for bit.
//!   osm2pgsql 1.9 to 2.2 computed on a sphere of radius 6371008.8 m
//!   instead, about 0.45 % more at the equator;
//! - `segmentize()` with a length ≤ 0 or NaN returns the lines unchanged,
//!   where osm2pgsql loops (practically) forever.

mod measure;
mod pole;
mod simplify;

use crate::apply::geom::{
    assemble_multipolygon_located, ewkb, merge_lines, project_degrees, single_or_multi, split_line,
    way_polygon_located, Located,
};
use crate::osm::Location;
use geo::{
    Coord, GeodesicArea, Geometry, GeometryCollection, LineString, MapCoords, MultiLineString,
    MultiPoint, MultiPolygon, Point,
};
use thiserror::Error;

/// EPSG:4326, WGS84 longitude/latitude: the SRID of new geometries.
pub const WGS84: i32 = 4326;
/// EPSG:3857, spherical mercator: osm2pgsql's default column projection.
pub const WEB_MERCATOR: i32 = 3857;

/// Fixed-point precision of OSM locations (osmium's
/// `coordinate_precision`).
const FIXED_PRECISION: f64 = 10_000_000.0;

/// A geometry as flex Lua code sees it: NULL or a geometry, with its SRID
/// (4326 until transformed).
///
/// The geometry is always a point, linestring, polygon, multipoint,
/// multilinestring, multipolygon or geometry collection (never a `geo`
/// `Line`, `Rect` or `Triangle`).
#[derive(Debug, Clone, PartialEq)]
pub struct FlexGeometry {
    srid: i32,
    geometry: Option<Geometry<f64>>,
}

/// Errors of geometry methods and of writing geometries into columns, with
/// osm2pgsql's messages (the Lua layer adds its own prefix and position).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GeometryError {
    /// `transform()` of a geometry not in 4326, or into a projection other
    /// than 4326 and 3857 (osm2pgsql built with PROJ supports those; the
    /// message is osm2pgsql's, which appends a newline).
    #[error("Unknown error in 'transform()'.")]
    Transform,
    /// `spherical_area()` of a geometry not in 4326 (osm2pgsql 1.9+).
    #[error("Can only calculate spherical area for geometries in WGS84 (4326) coordinates.")]
    SphericalArea,
    /// `insert()` of a geometry the column's type does not accept.
    #[error("Geometry data for geometry column '{column}' has the wrong type ({found}).")]
    WrongType {
        /// The column's name.
        column: String,
        /// The geometry's type as `geometry_type()` names it.
        found: &'static str,
    },
    /// A column in a projection other than 4326 and 3857.
    #[error("Projection EPSG:{0} is not supported (only 4326 and 3857).")]
    UnsupportedProjection(i32),
}

/// A member of a relation as `as_geometrycollection()` sees it, in member
/// order: a node member's location or a way member's node locations (nodes
/// without location left out). Relation members are not passed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CollectionMember<'a> {
    /// A node member with a location.
    Node(Location),
    /// A way member found in the middle, with the locations of its nodes.
    Way(&'a [Location]),
}

/// The geometry type of a geometry column (`type` in the column
/// definition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeometryColumnType {
    /// `geometry`: any geometry.
    Geometry,
    /// `point`.
    Point,
    /// `linestring`.
    LineString,
    /// `polygon`.
    Polygon,
    /// `multipoint`: also points, written as one-point multipoints.
    MultiPoint,
    /// `multilinestring`: also linestrings, wrapped.
    MultiLineString,
    /// `multipolygon`: also polygons, wrapped.
    MultiPolygon,
    /// `geometrycollection`.
    GeometryCollection,
}

impl GeometryColumnType {
    /// The column type for a column definition's `type` (case-insensitive),
    /// `None` if it is not a geometry type.
    pub fn from_name(name: &str) -> Option<Self> {
        let kind = match name.to_ascii_lowercase().as_str() {
            "geometry" => Self::Geometry,
            "point" => Self::Point,
            "linestring" => Self::LineString,
            "polygon" => Self::Polygon,
            "multipoint" => Self::MultiPoint,
            "multilinestring" => Self::MultiLineString,
            "multipolygon" => Self::MultiPolygon,
            "geometrycollection" => Self::GeometryCollection,
            _ => return None,
        };
        Some(kind)
    }

    /// Whether a column of this type stores the geometry
    /// (`is_compatible` in `flex-write.cpp`). A NULL geometry fits every
    /// column (it is written as SQL NULL).
    pub fn accepts(self, geometry: &FlexGeometry) -> bool {
        let Some(g) = &geometry.geometry else {
            return true;
        };
        match self {
            Self::Geometry => true,
            Self::Point => matches!(g, Geometry::Point(_)),
            Self::LineString => matches!(g, Geometry::LineString(_)),
            Self::Polygon => matches!(g, Geometry::Polygon(_)),
            Self::MultiPoint => matches!(g, Geometry::Point(_) | Geometry::MultiPoint(_)),
            Self::MultiLineString => {
                matches!(g, Geometry::LineString(_) | Geometry::MultiLineString(_))
            }
            Self::MultiPolygon => matches!(g, Geometry::Polygon(_) | Geometry::MultiPolygon(_)),
            Self::GeometryCollection => matches!(g, Geometry::GeometryCollection(_)),
        }
    }

    /// [`accepts`](Self::accepts) with osm2pgsql's error for `insert()`:
    /// ``Geometry data for geometry column 'way' has the wrong type
    /// (LINESTRING).``
    pub fn check(self, geometry: &FlexGeometry, column_name: &str) -> Result<(), GeometryError> {
        if self.accepts(geometry) {
            return Ok(());
        }
        Err(GeometryError::WrongType {
            column: column_name.to_string(),
            found: geometry.geometry_type(),
        })
    }

    /// Whether single geometries are wrapped into a one-part multi
    /// geometry for this column.
    pub fn wraps_single(self) -> bool {
        matches!(
            self,
            Self::MultiPoint | Self::MultiLineString | Self::MultiPolygon
        )
    }
}

/// The 4326 coordinate of a fixed-point location, as osmium's `lon()` and
/// `lat()` compute it.
fn fixed_coord((x, y): (i32, i32)) -> Coord<f64> {
    Coord {
        x: f64::from(x) / FIXED_PRECISION,
        y: f64::from(y) / FIXED_PRECISION,
    }
}

/// osmium's `Location::valid()`: within ±180° / ±90°.
fn valid((x, y): (i32, i32)) -> bool {
    const MAX_X: i32 = 1_800_000_000;
    const MAX_Y: i32 = 900_000_000;
    (-MAX_X..=MAX_X).contains(&x) && (-MAX_Y..=MAX_Y).contains(&y)
}

/// The valid locations of `nodes` with their grid position.
fn located(nodes: &[Location]) -> Vec<Located> {
    nodes
        .iter()
        .map(|l| l.to_fixed())
        .filter(|&fixed| valid(fixed))
        .map(|fixed| (fixed, fixed_coord(fixed)))
        .collect()
}

/// osm2pgsql's `fill_point_list`: valid locations without consecutive
/// duplicates; `None` unless at least two points remain.
fn point_list(nodes: &[Location]) -> Option<LineString<f64>> {
    let mut points: Vec<Coord<f64>> = Vec::with_capacity(nodes.len());
    let mut last = None;
    for (fixed, coord) in located(nodes) {
        if last != Some(fixed) {
            points.push(coord);
            last = Some(fixed);
        }
    }
    (points.len() > 1).then(|| LineString::new(points))
}

/// Turns `geo` types osm2pgsql does not have into ones it has.
fn normalise(geometry: Geometry<f64>) -> Geometry<f64> {
    match geometry {
        Geometry::Line(l) => Geometry::LineString(l.into()),
        Geometry::Rect(r) => Geometry::Polygon(r.to_polygon()),
        Geometry::Triangle(t) => Geometry::Polygon(t.to_polygon()),
        Geometry::GeometryCollection(c) => Geometry::GeometryCollection(
            GeometryCollection::new_from(c.0.into_iter().map(normalise).collect()),
        ),
        other => other,
    }
}

/// Reprojects from 4326 into `srid` the way osm2pgsql's `reprojection`
/// classes do: 4326 is the identity, 3857 osm2pgsql's mercator.
fn reproject(geometry: &Geometry<f64>, srid: i32) -> Option<Geometry<f64>> {
    match srid {
        WGS84 => Some(geometry.clone()),
        WEB_MERCATOR => Some(geometry.map_coords(|c| project_degrees(c.x, c.y))),
        _ => None,
    }
}

/// Wraps a single geometry into a one-part multi geometry (`geom_to_ewkb`
/// with `ensure_multi`).
fn wrap_multi(geometry: Geometry<f64>) -> Geometry<f64> {
    match geometry {
        Geometry::Point(p) => Geometry::MultiPoint(MultiPoint::new(vec![p])),
        Geometry::LineString(l) => Geometry::MultiLineString(MultiLineString::new(vec![l])),
        Geometry::Polygon(p) => Geometry::MultiPolygon(MultiPolygon::new(vec![p])),
        other => other,
    }
}

/// osm2pgsql's `geometry_type()` names.
fn type_name(geometry: &Geometry<f64>) -> &'static str {
    match geometry {
        Geometry::Point(_) => "POINT",
        Geometry::LineString(_) | Geometry::Line(_) => "LINESTRING",
        Geometry::Polygon(_) | Geometry::Rect(_) | Geometry::Triangle(_) => "POLYGON",
        Geometry::MultiPoint(_) => "MULTIPOINT",
        Geometry::MultiLineString(_) => "MULTILINESTRING",
        Geometry::MultiPolygon(_) => "MULTIPOLYGON",
        Geometry::GeometryCollection(_) => "GEOMETRYCOLLECTION",
    }
}

/// The lines of a linestring or multilinestring, `None` for other types.
fn lines(geometry: &Geometry<f64>) -> Option<&[LineString<f64>]> {
    match geometry {
        Geometry::LineString(l) => Some(std::slice::from_ref(l)),
        Geometry::MultiLineString(ml) => Some(&ml.0),
        _ => None,
    }
}

/// Reverses every ring, line and part; points stay (`geom::reverse`).
fn reversed(geometry: &Geometry<f64>) -> Geometry<f64> {
    let line = |l: &LineString<f64>| l.0.iter().rev().copied().collect::<LineString<f64>>();
    let polygon = |p: &geo::Polygon<f64>| {
        geo::Polygon::new(line(p.exterior()), p.interiors().iter().map(line).collect())
    };
    match geometry {
        Geometry::LineString(l) => Geometry::LineString(line(l)),
        Geometry::Polygon(p) => Geometry::Polygon(polygon(p)),
        Geometry::MultiLineString(ml) => {
            Geometry::MultiLineString(MultiLineString::new(ml.0.iter().map(line).collect()))
        }
        Geometry::MultiPolygon(mp) => {
            Geometry::MultiPolygon(MultiPolygon::new(mp.0.iter().map(polygon).collect()))
        }
        Geometry::GeometryCollection(c) => Geometry::GeometryCollection(
            GeometryCollection::new_from(c.0.iter().map(reversed).collect()),
        ),
        other => other.clone(),
    }
}

/// The `n`th part (0-based) of a geometry with more than `n` parts.
fn part(geometry: &Geometry<f64>, n: usize) -> Option<Geometry<f64>> {
    let part = match geometry {
        Geometry::MultiPoint(mp) => Geometry::Point(*mp.0.get(n)?),
        Geometry::MultiLineString(ml) => Geometry::LineString(ml.0.get(n)?.clone()),
        Geometry::MultiPolygon(mp) => Geometry::Polygon(mp.0.get(n)?.clone()),
        Geometry::GeometryCollection(c) => c.0.get(n)?.clone(),
        single => (n == 0).then(|| single.clone())?,
    };
    Some(part)
}

/// HEAD's `spherical_area` of a 4326 geometry: the geodesic area of
/// polygons on the WGS84 ellipsoid, signed by orientation (outer rings
/// counter-clockwise positive) and summed over the parts of a multipolygon,
/// then made absolute; collections sum their members' absolute areas.
fn spherical(geometry: &Geometry<f64>) -> f64 {
    let signed = match geometry {
        Geometry::Polygon(p) => p.geodesic_area_signed(),
        Geometry::MultiPolygon(mp) => {
            mp.0.iter()
                .fold(0.0, |sum, p| sum + p.geodesic_area_signed())
        }
        Geometry::GeometryCollection(c) => c.0.iter().fold(0.0, |sum, g| sum + spherical(g)),
        _ => 0.0,
    };
    signed.abs()
}

impl FlexGeometry {
    /// The NULL geometry (SRID 4326), what failed constructions return.
    pub fn null() -> Self {
        Self::null_with_srid(WGS84)
    }

    fn null_with_srid(srid: i32) -> Self {
        FlexGeometry {
            srid,
            geometry: None,
        }
    }

    fn with(srid: i32, geometry: Geometry<f64>) -> Self {
        FlexGeometry {
            srid,
            geometry: Some(geometry),
        }
    }

    /// A geometry from its parts; `geo` `Line`, `Rect` and `Triangle` become
    /// a linestring or polygon.
    pub fn new(srid: i32, geometry: Geometry<f64>) -> Self {
        Self::with(srid, normalise(geometry))
    }

    /// Whether this is the NULL geometry (`is_null()`).
    pub fn is_null(&self) -> bool {
        self.geometry.is_none()
    }

    /// The SRID (`srid()`): 4326 unless transformed; NULL results of
    /// methods keep the SRID osm2pgsql gives them.
    pub fn srid(&self) -> i32 {
        self.srid
    }

    /// The geometry, `None` for NULL.
    pub fn geometry(&self) -> Option<&Geometry<f64>> {
        self.geometry.as_ref()
    }

    /// `as_point()` of a node (`geom::create_point`).
    pub fn from_node(location: Location) -> Self {
        let coord = fixed_coord(location.to_fixed());
        Self::with(WGS84, Geometry::Point(Point(coord)))
    }

    /// `as_linestring()` of a way (`geom::create_linestring`), from the
    /// locations of its nodes with the missing ones left out: consecutive
    /// duplicate locations collapse; NULL with fewer than two points.
    pub fn linestring(nodes: &[Location]) -> Self {
        match point_list(nodes) {
            Some(line) => Self::with(WGS84, Geometry::LineString(line)),
            None => Self::null(),
        }
    }

    /// `as_polygon()` of a way, and `as_multipolygon()` of a way
    /// (`geom::create_polygon`): the way through osmium's area assembler,
    /// the first outer ring kept, consecutive duplicates removed. Missing
    /// nodes must be left out by the caller.
    ///
    /// There is no closedness check by node id, as in osm2pgsql's flex
    /// output: the assembler decides on the locations, so a way whose ends
    /// are different nodes at the same location makes a polygon, and an
    /// unclosed ring gives NULL. NULL too for fewer than 4 nodes, crossing or
    /// overlapping segments (bow-ties) and rings that cancel out.
    pub fn way_polygon(nodes: &[Location]) -> Self {
        match way_polygon_located(&located(nodes)) {
            Some(polygon) => Self::with(WGS84, Geometry::Polygon(polygon)),
            None => Self::null(),
        }
    }

    /// `as_multipolygon()` of a relation (`geom::create_multipolygon`),
    /// from its way members found in the middle, in member order (a way
    /// listed twice twice), each with its node locations, roles ignored: a
    /// POLYGON for one outer ring, a MULTIPOLYGON otherwise, NULL where
    /// assembly fails.
    pub fn relation_multipolygon(members: &[Vec<Location>]) -> Self {
        let ways: Vec<Vec<Located>> = members.iter().map(|way| located(way)).collect();
        match assemble_multipolygon_located(&ways) {
            Some(multipolygon) => Self::with(WGS84, single_or_multi(multipolygon)),
            None => Self::null(),
        }
    }

    /// `as_multilinestring()` of a relation (`geom::create_multilinestring`
    /// without `force_multi`): one line per way member in member order,
    /// not merged, members with fewer than two distinct points left out;
    /// a LINESTRING if one line remains, NULL if none. (For a way it is
    /// [`linestring`](Self::linestring).)
    pub fn relation_multilinestring(members: &[Vec<Location>]) -> Self {
        let mut lines: Vec<LineString<f64>> =
            members.iter().filter_map(|way| point_list(way)).collect();
        match lines.len() {
            0 => Self::null(),
            1 => Self::with(WGS84, Geometry::LineString(lines.remove(0))),
            _ => Self::with(
                WGS84,
                Geometry::MultiLineString(MultiLineString::new(lines)),
            ),
        }
    }

    /// `as_multipoint()` of a relation (`geom::create_multipoint`): its node
    /// members' locations in member order; NULL for none, a POINT for one.
    pub fn multipoint(points: &[Location]) -> Self {
        let mut points: Vec<Point<f64>> = located(points)
            .into_iter()
            .map(|(_, coord)| Point(coord))
            .collect();
        match points.len() {
            0 => Self::null(),
            1 => Self::with(WGS84, Geometry::Point(points.remove(0))),
            _ => Self::with(WGS84, Geometry::MultiPoint(MultiPoint::new(points))),
        }
    }

    /// `as_geometrycollection()` of a relation (`geom::create_collection`):
    /// a POINT per node member, a LINESTRING per way member with at least two
    /// distinct points, in member order; always a GEOMETRYCOLLECTION (also
    /// for one member), NULL if empty.
    pub fn collection(members: &[CollectionMember<'_>]) -> Self {
        let geometries: Vec<Geometry<f64>> = members
            .iter()
            .filter_map(|member| match *member {
                CollectionMember::Node(location) => {
                    let fixed = location.to_fixed();
                    valid(fixed).then(|| Geometry::Point(Point(fixed_coord(fixed))))
                }
                CollectionMember::Way(nodes) => point_list(nodes).map(Geometry::LineString),
            })
            .collect();
        if geometries.is_empty() {
            return Self::null();
        }
        Self::with(
            WGS84,
            Geometry::GeometryCollection(GeometryCollection::new_from(geometries)),
        )
    }

    /// `area()`: in the units of the geometry's SRID (degrees² in 4326),
    /// 0 for NULL and anything not (multi)polygonal; a collection sums its
    /// members (`geom::area`).
    pub fn area(&self) -> f64 {
        self.geometry.as_ref().map_or(0.0, measure::area)
    }

    /// `spherical_area()` (osm2pgsql 1.9+, as 2.3 computes it): the area in
    /// m² on the WGS84 spheroid, for geometries in 4326 only; 0 for NULL and
    /// anything not (multi)polygonal. See the module documentation for how
    /// it differs from osm2pgsql's.
    pub fn spherical_area(&self) -> Result<f64, GeometryError> {
        if self.srid != WGS84 {
            return Err(GeometryError::SphericalArea);
        }
        Ok(self.geometry.as_ref().map_or(0.0, spherical))
    }

    /// `length()`: of (multi)lines in the units of the SRID; 0 for NULL,
    /// points and polygons; a collection sums its members (`geom::length`).
    pub fn length(&self) -> f64 {
        self.geometry.as_ref().map_or(0.0, measure::length)
    }

    /// `centroid()`: a POINT with Boost's centroid; for a collection, the
    /// centroid of its members of the highest dimension. NULL for NULL (and
    /// for geometries without points, where osm2pgsql raises an error).
    pub fn centroid(&self) -> Self {
        match self.geometry.as_ref().and_then(measure::centroid) {
            Some(c) => Self::with(self.srid, Geometry::Point(Point(c))),
            None => Self::null_with_srid(self.srid),
        }
    }

    /// `geometry_n(n)`: the `n`th part, 1-based, of a multi geometry or
    /// collection; the geometry itself for `n` = 1 of a single geometry;
    /// NULL when out of range. Lua's integer is truncated to a C `int` as
    /// osm2pgsql does.
    pub fn geometry_n(&self, n: i64) -> Self {
        let n = n as i32; // static_cast<int>
        let index = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
        match (&self.geometry, index) {
            (Some(g), Some(index)) => match part(g, index) {
                Some(part) => Self::with(self.srid, part),
                None => Self::null(),
            },
            _ => Self::null(),
        }
    }

    /// `geometry_type()`: 'NULL', 'POINT', 'LINESTRING', 'POLYGON',
    /// 'MULTIPOINT', 'MULTILINESTRING', 'MULTIPOLYGON' or
    /// 'GEOMETRYCOLLECTION'; also Lua's `tostring()`.
    pub fn geometry_type(&self) -> &'static str {
        self.geometry.as_ref().map_or("NULL", type_name)
    }

    /// `num_geometries()` and Lua's `#`: 0 for NULL, 1 for single
    /// geometries, the number of parts or members otherwise.
    pub fn num_geometries(&self) -> usize {
        match &self.geometry {
            None => 0,
            Some(Geometry::MultiPoint(mp)) => mp.0.len(),
            Some(Geometry::MultiLineString(ml)) => ml.0.len(),
            Some(Geometry::MultiPolygon(mp)) => mp.0.len(),
            Some(Geometry::GeometryCollection(c)) => c.0.len(),
            Some(_) => 1,
        }
    }

    /// `line_merge()` (`geom::line_merge`): a LINESTRING unchanged; a
    /// MULTILINESTRING with its lines joined where their ends meet (only two
    /// ends join at a junction), a MULTILINESTRING even for one line; NULL
    /// for other types.
    pub fn line_merge(&self) -> Self {
        match &self.geometry {
            Some(Geometry::LineString(_)) => self.clone(),
            Some(Geometry::MultiLineString(ml)) => {
                let merged = merge_lines(ml.0.clone());
                if merged.is_empty() {
                    return Self::null_with_srid(self.srid);
                }
                Self::with(
                    self.srid,
                    Geometry::MultiLineString(MultiLineString::new(merged)),
                )
            }
            _ => Self::null(),
        }
    }

    /// `reverse()`: the point order of lines and rings reversed, parts kept
    /// in order.
    pub fn reverse(&self) -> Self {
        FlexGeometry {
            srid: self.srid,
            geometry: self.geometry.as_ref().map(reversed),
        }
    }

    /// `segmentize(max_length)` (`geom::segmentize`): (multi)lines cut into
    /// pieces no longer than `max_length` units, as a MULTILINESTRING (also
    /// for one piece); NULL for other types.
    pub fn segmentize(&self, max_length: f64) -> Self {
        let Some(lines) = self.geometry.as_ref().and_then(lines) else {
            return Self::null_with_srid(self.srid);
        };
        let pieces: Vec<LineString<f64>> = lines
            .iter()
            .flat_map(|line| split_line(line, max_length))
            .collect();
        Self::with(
            self.srid,
            Geometry::MultiLineString(MultiLineString::new(pieces)),
        )
    }

    /// `simplify(tolerance)` (`geom::simplify`): Douglas–Peucker on
    /// (multi)lines; lines reduced to a single point are dropped (NULL if
    /// none is left); NULL for all other types, polygons included.
    pub fn simplify(&self, tolerance: f64) -> Self {
        let simplified = match &self.geometry {
            Some(Geometry::LineString(l)) => {
                simplify::simplify_line(l, tolerance).map(Geometry::LineString)
            }
            Some(Geometry::MultiLineString(ml)) => {
                let kept: Vec<LineString<f64>> =
                    ml.0.iter()
                        .filter_map(|l| simplify::simplify_line(l, tolerance))
                        .collect();
                (!kept.is_empty()).then(|| Geometry::MultiLineString(MultiLineString::new(kept)))
            }
            _ => None,
        };
        FlexGeometry {
            srid: self.srid,
            geometry: simplified,
        }
    }

    /// `transform(srid)`: from 4326 into 3857 (osm2pgsql's mercator, bit for
    /// bit) or 4326 (a copy). Error for a geometry already transformed and
    /// for other target projections. NULL stays NULL, with the new SRID.
    pub fn transform(&self, srid: i32) -> Result<Self, GeometryError> {
        if self.srid != WGS84 {
            return Err(GeometryError::Transform);
        }
        let geometry = match &self.geometry {
            Some(g) => Some(reproject(g, srid).ok_or(GeometryError::Transform)?),
            None if matches!(srid, WGS84 | WEB_MERCATOR) => None,
            None => return Err(GeometryError::Transform),
        };
        Ok(FlexGeometry { srid, geometry })
    }

    /// `pole_of_inaccessibility{stretch = s}`: the point of a POLYGON
    /// farthest from its boundary (polylabel), with y distances stretched
    /// by `stretch`, to a precision of 1/1000 of the envelope; NULL for
    /// other types. The Lua layer rejects a stretch ≤ 0 ("The 'stretch'
    /// factor must be > 0."); here it gives NULL.
    pub fn pole_of_inaccessibility(&self, stretch: f64) -> Self {
        match &self.geometry {
            Some(Geometry::Polygon(p)) if stretch > 0.0 => {
                let pole = pole::pole_of_inaccessibility(p, stretch);
                Self::with(self.srid, Geometry::Point(Point(pole)))
            }
            _ => Self::null(),
        }
    }

    /// The parts `geometries()` iterates over in Lua:
    /// `geometry_n(1..=num_geometries())`.
    pub fn geometries(&self) -> Vec<Self> {
        (1..=self.num_geometries())
            .map(|n| self.geometry_n(n as i64))
            .collect()
    }

    /// The EWKB `insert()` writes into a geometry column of type
    /// `column_type` in projection `column_srid` (`flex-write.cpp`,
    /// `geom_to_ewkb`): `None` for NULL (SQL NULL); the type checked (see
    /// [`GeometryColumnType::check`]); reprojected when the SRIDs differ;
    /// single geometries wrapped for multi columns; SRID `column_srid`.
    ///
    /// Like osm2pgsql, reprojecting assumes 4326 coordinates: a geometry
    /// transformed to 3857 and written into a 4326 column keeps its 3857
    /// coordinates, labelled 4326.
    pub fn to_ewkb(
        &self,
        column_srid: i32,
        column_type: GeometryColumnType,
        column_name: &str,
    ) -> Result<Option<Vec<u8>>, GeometryError> {
        let Some(geometry) = &self.geometry else {
            return Ok(None);
        };
        column_type.check(self, column_name)?;
        let mut output = if self.srid == column_srid {
            geometry.clone()
        } else {
            reproject(geometry, column_srid)
                .ok_or(GeometryError::UnsupportedProjection(column_srid))?
        };
        if column_type.wraps_single() {
            output = wrap_multi(output);
        }
        let srid = u32::try_from(column_srid)
            .map_err(|_| GeometryError::UnsupportedProjection(column_srid))?;
        let bytes = ewkb::write_with_srid(&output, srid)
            .expect("flex geometries contain only types EWKB can write");
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests;
