//! The render stage: a built-in Mapnik renderer writing mod_tile metatiles.
//!
//! - [`queue`]: the priority render queue workers take metatiles from.
//!
//! The Mapnik binding is `crates/mapnik-sys`; the metatile store is
//! [`crate::metatile`] and the renderd wire protocol [`crate::renderd`].

pub mod queue;
