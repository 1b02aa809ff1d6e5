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
