//! WGS84 → EPSG:3857 exactly as osm2pgsql 1.8 projects node locations.
//!
//! osm2pgsql's built-in 3857 reprojection (`src/reprojection.cpp`, class
//! `merc_reprojection_t`) does not use PROJ: it clamps the latitude to
//! ±89.99° and calls libosmium's `lonlat_to_mercator`
//! (`include/osmium/geom/mercator_projection.hpp`). libosmium, unless built
//! with `OSMIUM_USE_SLOW_MERCATOR_PROJECTION`, computes y for |lat| ≤ 78° with
//! a rational polynomial approximation of `R·ln(tan(π/4 + φ/2))` instead of
//! the trigonometric formula; the two differ by up to about a millimetre
//! (0.02 mm at 47°N), which still changes the low bits of the coordinates,
//! so we evaluate the very same polynomial, in the same Horner order, to get
//! bit-identical coordinates. Beyond ±78° osmium falls
//! back to the trigonometric formula, and so do we.
//!
//! Note that osm2pgsql does *not* clamp at ±85.0511° (the square web
//! mercator world): latitudes up to ±89.99° are projected as they are.

use geo::Coord;
use std::f64::consts::PI;

/// Sphere radius of EPSG:3857 (WGS84 semi-major axis), as in osmium's
/// `earth_radius_for_epsg3857`.
pub const EARTH_RADIUS: f64 = 6_378_137.0;

/// osm2pgsql clamps latitudes to this before projecting
/// (`lonlat2merc` in osm2pgsql's `src/reprojection.cpp`).
pub const MAX_LATITUDE: f64 = 89.99;

/// Below this |latitude| osmium uses its polynomial approximation.
const POLYNOMIAL_LIMIT: f64 = 78.0;

/// Fixed-point precision of OSM locations (1e-7 degrees), osmium's
/// `coordinate_precision`.
const FIXED_PRECISION: f64 = 10_000_000.0;

// Coefficients of osmium's rational approximation of the mercator y in
// degrees of latitude (from https://github.com/osmcode/mercator-projection,
// as used by `osmium::geom::detail::lat_to_y`), highest degree first. The
// digits are kept as published so they can be compared; they round to the
// same doubles as in osmium.
#[allow(clippy::excessive_precision)]
const NUMERATOR: [f64; 10] = [
    -3.1112583378460085319e-23,
    2.0465852743943268009e-19,
    6.4905282018672673884e-18,
    -1.9685447939983315591e-14,
    -2.2022588158115104182e-13,
    5.1617537365509453239e-10,
    2.5380136069803016519e-9,
    -5.1448323697228488745e-6,
    -9.4888671473357768301e-6,
    1.7453292518154191887e-2,
];
#[allow(clippy::excessive_precision)]
const DENOMINATOR: [f64; 10] = [
    -1.9741136066814230637e-22,
    -1.258514031244679556e-20,
    4.8141483273572351796e-17,
    8.6876090870176172185e-16,
    -2.3298743439377541768e-12,
    -1.9300094785736130185e-11,
    4.3251609106864178231e-8,
    1.7301944508516974048e-7,
    -3.4554675198786337842e-4,
    -5.4367203601085991108e-4,
];

/// Projects a node location given in 1e-7 degree fixed point (as osmium and
/// osm2pgsql's middle store it) to EPSG:3857 metres, bit-identical to
/// osm2pgsql 1.8's default output.
pub fn project(lon_fixed: i32, lat_fixed: i32) -> Coord<f64> {
    project_degrees(
        f64::from(lon_fixed) / FIXED_PRECISION,
        f64::from(lat_fixed) / FIXED_PRECISION,
    )
}

/// Projects WGS84 degrees to EPSG:3857 the way osm2pgsql does (latitude
/// clamped to ±89.99°).
pub fn project_degrees(lon: f64, lat: f64) -> Coord<f64> {
    let lat = lat.clamp(-MAX_LATITUDE, MAX_LATITUDE);
    Coord {
        x: lon_to_x(lon),
        y: lat_to_y(lat),
    }
}

fn deg_to_rad(degrees: f64) -> f64 {
    // Same operation order as osmium's `deg_to_rad`: degree * (PI / 180).
    degrees * (PI / 180.0)
}

fn lon_to_x(lon: f64) -> f64 {
    EARTH_RADIUS * deg_to_rad(lon)
}

fn lat_to_y_with_tan(lat: f64) -> f64 {
    EARTH_RADIUS * (PI / 4.0 + deg_to_rad(lat) / 2.0).tan().ln()
}

fn lat_to_y(lat: f64) -> f64 {
    if !(-POLYNOMIAL_LIMIT..=POLYNOMIAL_LIMIT).contains(&lat) {
        return lat_to_y_with_tan(lat);
    }
    // Horner evaluation; the numerator has no constant term (it is
    // multiplied by lat once more), the denominator's constant term is 1.
    let numerator = NUMERATOR.iter().fold(0.0, |acc, &c| acc * lat + c) * lat;
    let denominator = DENOMINATOR.iter().fold(0.0, |acc, &c| acc * lat + c) * lat + 1.0;
    EARTH_RADIUS * numerator / denominator
}

/// Recovers the 1e-7 degree fixed-point location a projected coordinate
/// came from, so that the area assembler can decide orientation, nesting and
/// intersections with osmium's exact integer arithmetic.
///
/// Coordinates produced by [`project`] map back exactly. Other coordinates
/// (hand-made test data) are snapped to the nearest grid point. Latitudes
/// beyond the ±89.99° clamp cannot be told apart and map to the clamp.
pub(crate) fn unproject_fixed(coord: Coord<f64>) -> (i32, i32) {
    let lon_estimate = (coord.x / EARTH_RADIUS).to_degrees();
    let lon = refine(lon_estimate, coord.x, lon_to_x);

    let lat_estimate = (2.0 * (coord.y / EARTH_RADIUS).exp().atan() - PI / 2.0).to_degrees();
    let lat = refine(
        lat_estimate.clamp(-MAX_LATITUDE, MAX_LATITUDE),
        coord.y,
        |lat| lat_to_y(lat.clamp(-MAX_LATITUDE, MAX_LATITUDE)),
    );
    (lon, lat)
}

/// Finds the fixed-point value near `estimate` (degrees) whose forward
/// projection is closest to `target`, preferring an exact match. The
/// estimate comes from the exact inverse formula, which for the polynomial
/// y can be off by a rounding step.
fn refine(estimate: f64, target: f64, forward: impl Fn(f64) -> f64) -> i32 {
    let centre = (estimate * FIXED_PRECISION).round();
    let mut best = centre;
    let mut best_error = f64::INFINITY;
    // nearest grid points first, so that the usual exact hit ends the search
    for offset in [0, -1, 1, -2, 2, -3, 3, -4, 4] {
        let candidate = centre + f64::from(offset);
        let error = (forward(candidate / FIXED_PRECISION) - target).abs();
        if error < best_error {
            best = candidate;
            best_error = error;
            if error == 0.0 {
                break;
            }
        }
    }
    best.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_like_osm2pgsql_bit_for_bit() {
        // Node 4 of the Liechtenstein test extract, as stored by osm2pgsql
        // 1.8 in planet_osm_point (EWKB 0101000020110f0000 bc7b516ec72e3041
        // 1c3b52d692b85641).
        let c = project(95_270_956, 470_862_971);
        assert_eq!(
            c.x.to_bits(),
            u64::from_le_bytes(*b"\xbc\x7b\x51\x6e\xc7\x2e\x30\x41")
        );
        assert_eq!(
            c.y.to_bits(),
            u64::from_le_bytes(*b"\x1c\x3b\x52\xd6\x92\xb8\x56\x41")
        );
    }

    #[test]
    fn projects_the_upstream_test_point() {
        // osm2pgsql's regression test: exactly one point within 0.1 of
        // POINT(1062645.12 5972593.4), at (9.5459035 47.1866494).
        let c = project(95_459_035, 471_866_494);
        assert!((c.x - 1_062_645.12).abs() < 0.01, "{c:?}");
        assert!((c.y - 5_972_593.4).abs() < 0.05, "{c:?}");
    }

    #[test]
    fn origin_and_antimeridian() {
        assert_eq!(project(0, 0), Coord { x: 0.0, y: 0.0 });
        let east = project(1_800_000_000, 0);
        assert!((east.x - 20_037_508.342_789_244).abs() < 1e-6);
        assert_eq!(project(-1_800_000_000, 0).x, -east.x);
    }

    #[test]
    fn polynomial_is_close_to_the_exact_formula() {
        for lat in [-77.9, -60.0, -45.5, -10.0, 0.1, 30.0, 47.1866494, 77.99] {
            let difference = (lat_to_y(lat) - lat_to_y_with_tan(lat)).abs();
            assert!(difference < 2e-3, "lat {lat}: {difference}");
        }
        // not bit-identical though: that is why we use the polynomial
        assert_ne!(lat_to_y(47.0862971), lat_to_y_with_tan(47.0862971));
        // and the switch at 78° is continuous to the centimetre
        let below = lat_to_y(78.0);
        let above = lat_to_y(78.000_000_1);
        assert!((above - below) > 0.0 && (above - below) < 0.1);
    }

    #[test]
    fn latitude_is_clamped_at_89_99_not_85_05() {
        let clamp = project(0, 899_900_000);
        assert_eq!(project(0, 900_000_000), clamp);
        assert_eq!(project(0, 899_999_999), clamp);
        // the trigonometric formula is symmetric only to rounding
        assert!((project(0, -900_000_000).y + clamp.y).abs() < 1e-4);
        // 89.99° is far beyond the square web mercator world (±20037508.34)
        assert!((clamp.y - 59_613_540.207).abs() < 0.01, "{clamp:?}");
        // 85.06° is projected, not clamped to 85.0511°
        assert!(project(0, 850_600_000).y > project(0, 850_511_288).y);
    }

    #[test]
    fn unprojection_recovers_fixed_point_locations() {
        let samples = [
            (95_270_956, 470_862_971),
            (0, 0),
            (-1_800_000_000, -850_000_000),
            (1_799_999_999, 779_999_999),
            (1_234_567, 780_000_001),
            (-5, -899_000_000),
            (95_459_035, 471_866_494),
        ];
        for (lon, lat) in samples {
            assert_eq!(unproject_fixed(project(lon, lat)), (lon, lat));
        }
        let mut lat = -890_000_000_i64;
        while lat < 890_000_000 {
            let lat32 = lat as i32;
            assert_eq!(unproject_fixed(project(-7, lat32)), (-7, lat32));
            lat += 7_654_321;
        }
    }

    #[test]
    fn unprojection_snaps_arbitrary_coordinates() {
        let (lon, lat) = unproject_fixed(Coord { x: 10.0, y: 20.0 });
        let back = project(lon, lat);
        assert!((back.x - 10.0).abs() < 0.01 && (back.y - 20.0).abs() < 0.01);
    }
}
