//! Placeholder for the flex geometry type (replaced by the real module).
#![allow(missing_docs, unused_variables)]

use super::table::GeometryKind;
use crate::osm::Location;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlexGeometry {
    srid: i32,
    geometry: Option<geo::Geometry<f64>>,
}

impl FlexGeometry {
    pub fn null() -> Self {
        FlexGeometry {
            srid: 4326,
            geometry: None,
        }
    }
    pub fn is_null(&self) -> bool {
        self.geometry.is_none()
    }
    pub fn geometry(&self) -> Option<&geo::Geometry<f64>> {
        self.geometry.as_ref()
    }
    pub fn from_node(l: Location) -> Self {
        FlexGeometry {
            srid: 4326,
            geometry: Some(geo::Geometry::Point(geo::Point::new(l.lon, l.lat))),
        }
    }
    pub fn linestring(l: &[Location]) -> Self {
        Self::null()
    }
    pub fn way_polygon(l: &[Location]) -> Self {
        Self::null()
    }
    pub fn multipoint(l: &[Location]) -> Self {
        Self::null()
    }
    pub fn relation_multilinestring(l: &[Vec<Location>]) -> Self {
        Self::null()
    }
    pub fn relation_multipolygon(l: &[Vec<Location>]) -> Self {
        Self::null()
    }
    pub fn collection(n: &[Location], l: &[Vec<Location>]) -> Self {
        Self::null()
    }
    pub fn geometry_type(&self) -> &'static str {
        "NULL"
    }
    pub fn num_geometries(&self) -> usize {
        0
    }
    pub fn area(&self) -> f64 {
        0.0
    }
    pub fn spherical_area(&self) -> f64 {
        0.0
    }
    pub fn length(&self) -> f64 {
        0.0
    }
    pub fn centroid(&self) -> Self {
        Self::null()
    }
    pub fn geometry_n(&self, n: i64) -> Self {
        Self::null()
    }
    pub fn line_merge(&self) -> Self {
        Self::null()
    }
    pub fn reverse(&self) -> Self {
        Self::null()
    }
    pub fn segmentize(&self, m: f64) -> Self {
        Self::null()
    }
    pub fn simplify(&self, t: f64) -> Self {
        Self::null()
    }
    pub fn srid(&self) -> i32 {
        self.srid
    }
    pub fn transform(&self, srid: i32) -> Result<Self, String> {
        Ok(self.clone())
    }
    pub fn pole_of_inaccessibility(&self, s: f64) -> Self {
        Self::null()
    }
    pub fn geometries(&self) -> Vec<Self> {
        Vec::new()
    }
    pub fn for_column(&self, kind: GeometryKind, srid: i32) -> Result<Self, String> {
        Ok(self.clone())
    }
    pub fn to_hex_ewkb(&self) -> Option<String> {
        None
    }
}
