//! Tile and metatile addresses, shared by the expire, render and serve
//! stages: `z/x/y` in the XYZ scheme (y = 0 at the north edge).

use std::fmt;
use std::str::FromStr;

/// Tiles per side of a metatile (mod_tile's `METATILE`).
pub const METATILE: u32 = 8;

/// The largest zoom tilepipe handles: mod_tile's hashed paths encode only
/// 20 bits of x and y.
pub const MAX_ZOOM: u8 = 20;

/// One map tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub z: u8,
    pub x: u32,
    pub y: u32,
}

/// A metatile: the 8×8 block of tiles (fewer at z0–z2) that is rendered and
/// stored as one `.meta` file, named by its top-left tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metatile {
    pub z: u8,
    /// Multiple of 8.
    pub x: u32,
    /// Multiple of 8.
    pub y: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("{0:?} is not of the form z/x/y")]
    Syntax(String),
    #[error("tile {z}/{x}/{y} is outside the world (x and y must be below {limit} at zoom {z})")]
    OutOfRange { z: u8, x: u32, y: u32, limit: u64 },
    #[error("zoom {0} is above the maximum {max}", max = MAX_ZOOM)]
    Zoom(u8),
}

impl Tile {
    /// A tile, checked against the world at its zoom.
    pub fn new(z: u8, x: u32, y: u32) -> Result<Tile, TileError> {
        if z > MAX_ZOOM {
            return Err(TileError::Zoom(z));
        }
        let limit = 1u64 << z;
        if u64::from(x) >= limit || u64::from(y) >= limit {
            return Err(TileError::OutOfRange { z, x, y, limit });
        }
        Ok(Tile { z, x, y })
    }

    /// The metatile this tile is drawn in.
    pub fn metatile(self) -> Metatile {
        Metatile {
            z: self.z,
            x: self.x & !(METATILE - 1),
            y: self.y & !(METATILE - 1),
        }
    }

    /// The tile containing this one `levels` zooms up.
    pub fn ancestor(self, levels: u8) -> Tile {
        let levels = levels.min(self.z);
        Tile {
            z: self.z - levels,
            x: self.x >> levels,
            y: self.y >> levels,
        }
    }
}

impl Metatile {
    /// Tiles per side actually drawn at this zoom (1, 2, 4 at z0–z2).
    pub fn size(self) -> u32 {
        METATILE.min(1 << self.z)
    }

    /// The tiles of the metatile, x-major (mod_tile's index order).
    pub fn tiles(self) -> impl Iterator<Item = Tile> {
        let size = self.size();
        (0..size).flat_map(move |dx| {
            (0..size).map(move |dy| Tile {
                z: self.z,
                x: self.x + dx,
                y: self.y + dy,
            })
        })
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.z, self.x, self.y)
    }
}

impl fmt::Display for Metatile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metatile {}/{}/{}", self.z, self.x, self.y)
    }
}

impl FromStr for Tile {
    type Err = TileError;

    /// Parses `z/x/y` (surrounding whitespace allowed), as expire lists
    /// and `render_expired` input hold them.
    fn from_str(text: &str) -> Result<Tile, TileError> {
        let syntax = || TileError::Syntax(text.to_string());
        let mut parts = text.trim().split('/');
        let (Some(z), Some(x), Some(y), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(syntax());
        };
        let z: u8 = z.parse().map_err(|_| syntax())?;
        let x: u32 = x.parse().map_err(|_| syntax())?;
        let y: u32 = y.parse().map_err(|_| syntax())?;
        Tile::new(z, x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_tiles() {
        assert_eq!(
            "18/131010/87170".parse::<Tile>().unwrap(),
            Tile {
                z: 18,
                x: 131010,
                y: 87170
            }
        );
        assert_eq!(
            " 0/0/0\n".parse::<Tile>().unwrap(),
            Tile { z: 0, x: 0, y: 0 }
        );
        assert!(matches!(
            "3/8/0".parse::<Tile>(),
            Err(TileError::OutOfRange { .. })
        ));
        assert!(matches!("21/0/0".parse::<Tile>(), Err(TileError::Zoom(21))));
        assert!(matches!(
            "15:1:2".parse::<Tile>(),
            Err(TileError::Syntax(_))
        ));
        assert!(matches!(
            "1/2/3/4".parse::<Tile>(),
            Err(TileError::Syntax(_))
        ));
    }

    #[test]
    fn metatiles_and_ancestors() {
        let t = Tile::new(18, 131010, 87170).unwrap();
        assert_eq!(
            t.metatile(),
            Metatile {
                z: 18,
                x: 131008,
                y: 87168
            }
        );
        assert_eq!(
            t.ancestor(3),
            Tile {
                z: 15,
                x: 16376,
                y: 10896
            }
        );
        assert_eq!(t.ancestor(30), Tile { z: 0, x: 0, y: 0 });
        assert_eq!(Metatile { z: 1, x: 0, y: 0 }.tiles().count(), 4);
        let tiles: Vec<Tile> = t.metatile().tiles().take(2).collect();
        assert_eq!(
            tiles[1],
            Tile {
                z: 18,
                x: 131008,
                y: 87169
            },
            "x-major order"
        );
        assert_eq!(t.metatile().tiles().count(), 64);
    }
}
