//! PostGIS extended WKB (EWKB), little-endian, with the SRID flag.
//!
//! This is what osm2pgsql writes into its COPY streams (hex encoded in the
//! text format) and what `geometry_recv` / `ST_GeomFromEWKB` accept. The top
//! level geometry carries the SRID; the parts of a multi geometry are plain
//! WKB without SRID, as PostGIS itself writes them (`ST_AsEWKB`).
//!
//! Byte output is fully determined by the coordinates: no padding, no maps,
//! `f64` written bit for bit.

use geo::{Coord, Geometry, LineString, MultiLineString, MultiPolygon, Point, Polygon};
use thiserror::Error;

/// The SRID osm2pgsql's default output uses.
pub const SRID: u32 = 3857;

/// EWKB flag telling that a 4-byte SRID follows the type.
const SRID_FLAG: u32 = 0x2000_0000;
/// EWKB flags for Z and M coordinates (not supported here).
const Z_FLAG: u32 = 0x8000_0000;
const M_FLAG: u32 = 0x4000_0000;

const LITTLE_ENDIAN: u8 = 1;
const BIG_ENDIAN: u8 = 0;

const WKB_POINT: u32 = 1;
const WKB_LINESTRING: u32 = 2;
const WKB_POLYGON: u32 = 3;
const WKB_MULTIPOINT: u32 = 4;
const WKB_MULTILINESTRING: u32 = 5;
const WKB_MULTIPOLYGON: u32 = 6;
const WKB_COLLECTION: u32 = 7;

/// Why an (E)WKB value could not be decoded or encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EwkbError {
    /// The input ends early, after this many bytes.
    #[error("EWKB ends after {0} bytes, in the middle of a geometry")]
    Truncated(usize),
    /// This many bytes follow the geometry.
    #[error("EWKB has {0} bytes left over after the geometry")]
    TrailingBytes(usize),
    /// The byte order byte is neither 0 (big endian) nor 1 (little endian).
    #[error("invalid byte order marker {0}")]
    ByteOrder(u8),
    /// A geometry type the decoder does not handle (Z or M coordinates, or
    /// not a 2D simple feature type), as read.
    #[error("unsupported geometry type {0:#x}")]
    UnsupportedType(u32),
    /// A multi geometry with a part of another type.
    #[error("a multi geometry contains a part of type {found}, expected {expected}")]
    WrongPartType {
        /// The WKB type the parts must have.
        expected: u32,
        /// The WKB type the part has.
        found: u32,
    },
    /// A `geo` geometry type the encoder does not write (named).
    #[error("{0} cannot be written as EWKB by this module")]
    UnsupportedGeometry(&'static str),
}

/// EWKB of a point with SRID 3857.
pub fn point(point: &Point<f64>) -> Vec<u8> {
    let mut out = Writer::with_capacity(25);
    out.header(WKB_POINT, Some(SRID));
    out.coord(point.0);
    out.bytes
}

/// EWKB of a linestring with SRID 3857.
pub fn linestring(line: &LineString<f64>) -> Vec<u8> {
    let mut out = Writer::with_capacity(13 + 16 * line.0.len());
    out.linestring(line, Some(SRID));
    out.bytes
}

/// EWKB of a polygon with SRID 3857; rings are written in their order and
/// orientation as given.
pub fn polygon(polygon: &Polygon<f64>) -> Vec<u8> {
    let mut out = Writer::with_capacity(13 + 16 * polygon_points(polygon));
    out.polygon(polygon, Some(SRID));
    out.bytes
}

/// EWKB of a multipolygon with SRID 3857.
pub fn multipolygon(multipolygon: &MultiPolygon<f64>) -> Vec<u8> {
    let points: usize = multipolygon.0.iter().map(polygon_points).sum();
    let mut out = Writer::with_capacity(13 + 9 * multipolygon.0.len() + 16 * points);
    out.header(WKB_MULTIPOLYGON, Some(SRID));
    out.count(multipolygon.0.len());
    for part in &multipolygon.0 {
        out.polygon(part, None);
    }
    out.bytes
}

/// EWKB of a multilinestring with SRID 3857.
pub fn multilinestring(lines: &MultiLineString<f64>) -> Vec<u8> {
    let points: usize = lines.0.iter().map(|l| l.0.len()).sum();
    let mut out = Writer::with_capacity(13 + 13 * lines.0.len() + 16 * points);
    out.header(WKB_MULTILINESTRING, Some(SRID));
    out.count(lines.0.len());
    for line in &lines.0 {
        out.linestring(line, None);
    }
    out.bytes
}

/// EWKB of any of the geometry types osm2pgsql writes.
pub fn write(geometry: &Geometry<f64>) -> Result<Vec<u8>, EwkbError> {
    match geometry {
        Geometry::Point(p) => Ok(point(p)),
        Geometry::LineString(l) => Ok(linestring(l)),
        Geometry::Polygon(p) => Ok(polygon(p)),
        Geometry::MultiPolygon(mp) => Ok(multipolygon(mp)),
        Geometry::MultiLineString(ml) => Ok(multilinestring(ml)),
        Geometry::MultiPoint(_) => Err(EwkbError::UnsupportedGeometry("MultiPoint")),
        Geometry::GeometryCollection(_) => {
            Err(EwkbError::UnsupportedGeometry("GeometryCollection"))
        }
        Geometry::Line(_) => Err(EwkbError::UnsupportedGeometry("Line")),
        Geometry::Rect(_) => Err(EwkbError::UnsupportedGeometry("Rect")),
        Geometry::Triangle(_) => Err(EwkbError::UnsupportedGeometry("Triangle")),
    }
}

/// EWKB of any point, linestring, polygon, multi geometry or geometry
/// collection with the given SRID on the top level geometry (none if 0), as
/// osm2pgsql's flex output writes them (`geom_to_ewkb` in `src/wkb.cpp`):
/// parts of multi geometries and collection members carry no SRID, the
/// points of a multipoint are complete WKB points.
pub fn write_with_srid(geometry: &Geometry<f64>, srid: u32) -> Result<Vec<u8>, EwkbError> {
    let mut out = Writer::with_capacity(64);
    out.geometry(geometry, (srid != 0).then_some(srid))?;
    Ok(out.bytes)
}

/// Lower-case hex, as `encode(ST_AsEWKB(way), 'hex')` prints and as the
/// COPY text format accepts for geometry columns.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut hex = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut hex, bytes);
    String::from_utf8(hex).expect("hex digits are ASCII")
}

/// Appends [`to_hex`]'s digits of `bytes` to `out`, without a temporary
/// string.
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Sized first and filled in pairs: pushing byte by byte was 2% of a
    // flex import's instructions (cachegrind, Liechtenstein).
    let start = out.len();
    out.resize(start + bytes.len() * 2, 0);
    for (pair, &b) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// Parses hex (either case) into bytes; `None` on odd length or a non-hex
/// character.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digits = hex.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    let value = |d: u8| char::from(d).to_digit(16).map(|v| v as u8);
    digits
        .chunks_exact(2)
        .map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?))
        .collect()
}

/// Decodes EWKB or plain WKB (either byte order) of a point, linestring,
/// polygon, multilinestring or multipolygon. The SRID, if present, is
/// dropped; use [`read_with_srid`] to see it.
pub fn read(bytes: &[u8]) -> Result<Geometry<f64>, EwkbError> {
    read_with_srid(bytes).map(|(_, geometry)| geometry)
}

/// Like [`read`], also returning the SRID of the top level geometry.
pub fn read_with_srid(bytes: &[u8]) -> Result<(Option<u32>, Geometry<f64>), EwkbError> {
    let mut reader = Reader { bytes, pos: 0 };
    let (srid, geometry) = reader.geometry()?;
    if reader.pos != bytes.len() {
        return Err(EwkbError::TrailingBytes(bytes.len() - reader.pos));
    }
    Ok((srid, geometry))
}

fn polygon_points(polygon: &Polygon<f64>) -> usize {
    polygon.exterior().0.len() + polygon.interiors().iter().map(|r| r.0.len()).sum::<usize>()
}

struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    fn with_capacity(capacity: usize) -> Self {
        Writer {
            bytes: Vec::with_capacity(capacity),
        }
    }

    fn header(&mut self, kind: u32, srid: Option<u32>) {
        self.bytes.push(LITTLE_ENDIAN);
        match srid {
            Some(srid) => {
                self.u32(kind | SRID_FLAG);
                self.u32(srid);
            }
            None => self.u32(kind),
        }
    }

    fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn count(&mut self, count: usize) {
        let count = u32::try_from(count).expect("more than 2^32 elements in a geometry");
        self.u32(count);
    }

    fn coord(&mut self, c: Coord<f64>) {
        self.bytes.extend_from_slice(&c.x.to_le_bytes());
        self.bytes.extend_from_slice(&c.y.to_le_bytes());
    }

    fn points(&mut self, line: &LineString<f64>) {
        self.count(line.0.len());
        for &c in &line.0 {
            self.coord(c);
        }
    }

    fn linestring(&mut self, line: &LineString<f64>, srid: Option<u32>) {
        self.header(WKB_LINESTRING, srid);
        self.points(line);
    }

    fn geometry(&mut self, geometry: &Geometry<f64>, srid: Option<u32>) -> Result<(), EwkbError> {
        match geometry {
            Geometry::Point(p) => {
                self.header(WKB_POINT, srid);
                self.coord(p.0);
            }
            Geometry::LineString(l) => self.linestring(l, srid),
            Geometry::Polygon(p) => self.polygon(p, srid),
            Geometry::MultiPoint(mp) => {
                self.header(WKB_MULTIPOINT, srid);
                self.count(mp.0.len());
                for p in &mp.0 {
                    self.header(WKB_POINT, None);
                    self.coord(p.0);
                }
            }
            Geometry::MultiLineString(ml) => {
                self.header(WKB_MULTILINESTRING, srid);
                self.count(ml.0.len());
                for l in &ml.0 {
                    self.linestring(l, None);
                }
            }
            Geometry::MultiPolygon(mp) => {
                self.header(WKB_MULTIPOLYGON, srid);
                self.count(mp.0.len());
                for p in &mp.0 {
                    self.polygon(p, None);
                }
            }
            Geometry::GeometryCollection(c) => {
                self.header(WKB_COLLECTION, srid);
                self.count(c.0.len());
                for member in &c.0 {
                    self.geometry(member, None)?;
                }
            }
            Geometry::Line(_) => return Err(EwkbError::UnsupportedGeometry("Line")),
            Geometry::Rect(_) => return Err(EwkbError::UnsupportedGeometry("Rect")),
            Geometry::Triangle(_) => return Err(EwkbError::UnsupportedGeometry("Triangle")),
        }
        Ok(())
    }

    fn polygon(&mut self, polygon: &Polygon<f64>, srid: Option<u32>) {
        self.header(WKB_POLYGON, srid);
        if polygon.exterior().0.is_empty() {
            // POLYGON EMPTY has no rings at all.
            self.count(0);
            return;
        }
        self.count(1 + polygon.interiors().len());
        self.points(polygon.exterior());
        for ring in polygon.interiors() {
            self.points(ring);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], EwkbError> {
        let end = self.pos + N;
        let chunk = self
            .bytes
            .get(self.pos..end)
            .ok_or(EwkbError::Truncated(self.bytes.len()))?;
        self.pos = end;
        Ok(chunk.try_into().expect("slice of length N"))
    }

    fn u32(&mut self, little_endian: bool) -> Result<u32, EwkbError> {
        let raw = self.take::<4>()?;
        Ok(if little_endian {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        })
    }

    fn f64(&mut self, little_endian: bool) -> Result<f64, EwkbError> {
        let raw = self.take::<8>()?;
        Ok(if little_endian {
            f64::from_le_bytes(raw)
        } else {
            f64::from_be_bytes(raw)
        })
    }

    /// Reads byte order, type and optional SRID.
    fn header(&mut self) -> Result<(bool, u32, Option<u32>), EwkbError> {
        let little_endian = match self.take::<1>()?[0] {
            LITTLE_ENDIAN => true,
            BIG_ENDIAN => false,
            other => return Err(EwkbError::ByteOrder(other)),
        };
        let raw_type = self.u32(little_endian)?;
        if raw_type & (Z_FLAG | M_FLAG) != 0 || (raw_type & 0x0fff_ffff) > 7 {
            return Err(EwkbError::UnsupportedType(raw_type));
        }
        let srid = if raw_type & SRID_FLAG != 0 {
            Some(self.u32(little_endian)?)
        } else {
            None
        };
        Ok((little_endian, raw_type & 0x0fff_ffff, srid))
    }

    fn count(&mut self, little_endian: bool) -> Result<usize, EwkbError> {
        let count = self.u32(little_endian)? as usize;
        // Every element takes at least 4 bytes; refuse absurd counts before
        // allocating for them.
        if count > self.bytes.len().saturating_sub(self.pos) {
            return Err(EwkbError::Truncated(self.bytes.len()));
        }
        Ok(count)
    }

    fn coord(&mut self, little_endian: bool) -> Result<Coord<f64>, EwkbError> {
        Ok(Coord {
            x: self.f64(little_endian)?,
            y: self.f64(little_endian)?,
        })
    }

    fn points(&mut self, little_endian: bool) -> Result<LineString<f64>, EwkbError> {
        let n = self.count(little_endian)?;
        let mut coords = Vec::with_capacity(n);
        for _ in 0..n {
            coords.push(self.coord(little_endian)?);
        }
        Ok(LineString::new(coords))
    }

    fn polygon_body(&mut self, little_endian: bool) -> Result<Polygon<f64>, EwkbError> {
        let rings = self.count(little_endian)?;
        if rings == 0 {
            return Ok(Polygon::new(LineString::new(vec![]), vec![]));
        }
        let exterior = self.points(little_endian)?;
        let mut interiors = Vec::with_capacity(rings - 1);
        for _ in 1..rings {
            interiors.push(self.points(little_endian)?);
        }
        Ok(Polygon::new(exterior, interiors))
    }

    /// Reads one part of a multi geometry, which must be of type `expected`.
    /// Returns whether the part is little-endian.
    fn part(&mut self, expected: u32) -> Result<bool, EwkbError> {
        let (little_endian, kind, _) = self.header()?;
        if kind != expected {
            return Err(EwkbError::WrongPartType {
                expected,
                found: kind,
            });
        }
        Ok(little_endian)
    }

    fn geometry(&mut self) -> Result<(Option<u32>, Geometry<f64>), EwkbError> {
        let (le, kind, srid) = self.header()?;
        let geometry = match kind {
            WKB_POINT => Geometry::Point(Point(self.coord(le)?)),
            WKB_LINESTRING => Geometry::LineString(self.points(le)?),
            WKB_POLYGON => Geometry::Polygon(self.polygon_body(le)?),
            WKB_MULTILINESTRING => {
                let n = self.count(le)?;
                let mut lines = Vec::with_capacity(n);
                for _ in 0..n {
                    let part_le = self.part(WKB_LINESTRING)?;
                    lines.push(self.points(part_le)?);
                }
                Geometry::MultiLineString(MultiLineString::new(lines))
            }
            WKB_MULTIPOLYGON => {
                let n = self.count(le)?;
                let mut polygons = Vec::with_capacity(n);
                for _ in 0..n {
                    let part_le = self.part(WKB_POLYGON)?;
                    polygons.push(self.polygon_body(part_le)?);
                }
                Geometry::MultiPolygon(MultiPolygon::new(polygons))
            }
            other => return Err(EwkbError::UnsupportedType(other)),
        };
        Ok((srid, geometry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{line_string, point, polygon};

    fn hex(bytes: &[u8]) -> String {
        to_hex(bytes)
    }

    #[test]
    fn point_matches_postgis() {
        // SELECT encode(ST_AsEWKB('SRID=3857;POINT(1 2)'::geometry), 'hex')
        assert_eq!(
            hex(&point(&point!(x: 1.0, y: 2.0))),
            "0101000020110f0000000000000000f03f0000000000000040"
        );
        // the point osm2pgsql wrote for node 4 of the Liechtenstein extract
        let c = crate::apply::geom::project(95_270_956, 470_862_971);
        assert_eq!(
            hex(&point(&Point(c))),
            "0101000020110f0000bc7b516ec72e30411c3b52d692b85641"
        );
    }

    #[test]
    fn linestring_matches_postgis() {
        // 'SRID=3857;LINESTRING(0 0,1 1)'
        assert_eq!(
            hex(&linestring(
                &line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 1.0)]
            )),
            concat!(
                "0102000020110f000002000000",
                "00000000000000000000000000000000",
                "000000000000f03f000000000000f03f"
            )
        );
    }

    #[test]
    fn polygon_matches_postgis() {
        // 'SRID=3857;POLYGON((0 0,1 0,1 1,0 0))'
        let p = polygon![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 0.0)];
        assert_eq!(
            hex(&polygon(&p)),
            concat!(
                "0103000020110f00000100000004000000",
                "00000000000000000000000000000000",
                "000000000000f03f0000000000000000",
                "000000000000f03f000000000000f03f",
                "00000000000000000000000000000000"
            )
        );
    }

    #[test]
    fn multipolygon_parts_carry_no_srid() {
        // 'SRID=3857;MULTIPOLYGON(((0 0,1 0,1 1,0 0)))'
        let p = polygon![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 0.0)];
        let bytes = multipolygon(&MultiPolygon::new(vec![p]));
        assert!(hex(&bytes).starts_with("0106000020110f000001000000010300000001000000"));
        assert_eq!(bytes.len(), 9 + 4 + 9 + 4 + 4 * 16);
    }

    #[test]
    fn round_trips() {
        let ring = line_string![
            (x: 0.0, y: 0.0), (x: 10.0, y: 0.0), (x: 10.0, y: 10.0), (x: 0.0, y: 10.0), (x: 0.0, y: 0.0)
        ];
        let hole = line_string![
            (x: 2.0, y: 2.0), (x: 2.0, y: 4.0), (x: 4.0, y: 4.0), (x: 2.0, y: 2.0)
        ];
        let with_hole = Polygon::new(ring.clone(), vec![hole]);
        let geometries: Vec<Geometry<f64>> = vec![
            Geometry::Point(point!(x: 1062645.12, y: 5972593.4)),
            Geometry::LineString(ring.clone()),
            Geometry::Polygon(with_hole.clone()),
            Geometry::MultiPolygon(MultiPolygon::new(vec![
                with_hole,
                Polygon::new(ring.clone(), vec![]),
            ])),
            Geometry::MultiLineString(MultiLineString::new(vec![ring.clone(), ring])),
        ];
        for g in geometries {
            let bytes = write(&g).unwrap();
            assert_eq!(read_with_srid(&bytes).unwrap(), (Some(SRID), g.clone()));
            assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
            // deterministic
            assert_eq!(write(&g).unwrap(), bytes);
        }
    }

    #[test]
    fn write_with_srid_matches_write_for_3857() {
        let ring = line_string![
            (x: 0.0, y: 0.0), (x: 10.0, y: 0.0), (x: 10.0, y: 10.0), (x: 0.0, y: 0.0)
        ];
        let geometries: Vec<Geometry<f64>> = vec![
            Geometry::Point(point!(x: 1.5, y: -2.0)),
            Geometry::LineString(ring.clone()),
            Geometry::Polygon(Polygon::new(ring.clone(), vec![])),
            Geometry::MultiPolygon(MultiPolygon::new(vec![Polygon::new(ring.clone(), vec![])])),
            Geometry::MultiLineString(MultiLineString::new(vec![ring.clone(), ring])),
        ];
        for g in geometries {
            assert_eq!(write_with_srid(&g, SRID).unwrap(), write(&g).unwrap());
        }
    }

    #[test]
    fn write_with_srid_4326_multipoint_and_collection_match_postgis() {
        // encode(ST_AsEWKB('SRID=4326;POINT(1 2)'::geometry), 'hex')
        let p = Geometry::Point(point!(x: 1.0, y: 2.0));
        assert_eq!(
            hex(&write_with_srid(&p, 4326).unwrap()),
            "0101000020e6100000000000000000f03f0000000000000040"
        );
        // 'SRID=4326;MULTIPOINT((1 2))'
        let mp = Geometry::MultiPoint(geo::MultiPoint::new(vec![point!(x: 1.0, y: 2.0)]));
        assert_eq!(
            hex(&write_with_srid(&mp, 4326).unwrap()),
            "0104000020e6100000010000000101000000000000000000f03f0000000000000040"
        );
        // 'SRID=4326;GEOMETRYCOLLECTION(POINT(1 2),LINESTRING(0 0,1 1))'
        let line = Geometry::LineString(line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 1.0)]);
        let c = Geometry::GeometryCollection(geo::GeometryCollection::new_from(vec![p, line]));
        assert_eq!(
            hex(&write_with_srid(&c, 4326).unwrap()),
            concat!(
                "0107000020e610000002000000",
                "0101000000000000000000f03f0000000000000040",
                "010200000002000000",
                "00000000000000000000000000000000",
                "000000000000f03f000000000000f03f"
            )
        );
        // SRID 0: plain WKB header
        assert_eq!(hex(&write_with_srid(&mp, 0).unwrap()[..5]), "0104000000");
        let line = Geometry::Line(geo::Line::new((0.0, 0.0), (1.0, 1.0)));
        assert!(write_with_srid(&line, 4326).is_err());
    }

    #[test]
    fn reads_big_endian_wkb_without_srid() {
        // POINT(1 2) as XDR WKB
        let bytes = from_hex("00000000013ff00000000000004000000000000000").unwrap();
        assert_eq!(
            read_with_srid(&bytes).unwrap(),
            (None, Geometry::Point(point!(x: 1.0, y: 2.0)))
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(read(&[]), Err(EwkbError::Truncated(0)));
        assert_eq!(read(&[7]), Err(EwkbError::ByteOrder(7)));
        let mut bytes = point(&point!(x: 1.0, y: 2.0));
        bytes.push(0);
        assert_eq!(read(&bytes), Err(EwkbError::TrailingBytes(1)));
        bytes.truncate(20);
        assert!(matches!(read(&bytes), Err(EwkbError::Truncated(_))));
        // POINT Z
        let z = from_hex("0101000080000000000000f03f00000000000000400000000000000840").unwrap();
        assert!(matches!(read(&z), Err(EwkbError::UnsupportedType(_))));
        // absurd ring count
        let absurd = from_hex("0103000000ffffffff").unwrap();
        assert!(matches!(read(&absurd), Err(EwkbError::Truncated(_))));
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }
}
