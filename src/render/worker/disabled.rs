//! The [`Renderer`] of builds without the `render` feature: no Mapnik, so
//! [`Renderer::start`] always fails with [`RenderError::NotBuilt`] and no
//! value of the type ever exists. Its methods mirror the real renderer's so
//! that the code holding an `Option<Arc<Renderer>>` (serve, services, the
//! commands) compiles unchanged; none of them can be reached.

use super::{RenderError, Timings};
use crate::metatile::TileStore;
use crate::render::config::{RenderConfig, StyleConfig};
use crate::render::queue::RenderQueue;
use crate::tile::Metatile;
use std::convert::Infallible;
use std::sync::Arc;

/// Stands in for the Mapnik render workers; uninhabited.
#[derive(Debug)]
pub struct Renderer {
    never: Infallible,
}

impl Renderer {
    /// Fails: this build has no Mapnik to render with.
    pub fn start(
        _styles: &[StyleConfig],
        _settings: &RenderConfig,
    ) -> Result<Renderer, RenderError> {
        Err(RenderError::NotBuilt)
    }

    /// The queue the workers take jobs from: submit to it to render.
    pub fn queue(&self) -> &Arc<RenderQueue> {
        match self.never {}
    }

    /// The styles the workers draw, as configured.
    pub fn styles(&self) -> &[StyleConfig] {
        match self.never {}
    }

    /// The style's cache.
    pub fn store(&self, _style: &str) -> Option<&TileStore> {
        match self.never {}
    }

    /// The style's configuration.
    pub fn style(&self, _style: &str) -> Option<&StyleConfig> {
        match self.never {}
    }

    /// Checks that `style` exists and renders the metatile's zoom.
    pub fn check(&self, _style: &str, _metatile: Metatile) -> Result<&StyleConfig, RenderError> {
        match self.never {}
    }

    /// Worker threads running.
    pub fn threads(&self) -> usize {
        match self.never {}
    }

    /// Time accounting of all workers since the start.
    pub fn timings(&self) -> Timings {
        match self.never {}
    }

    /// Stops the workers.
    pub fn shutdown(self) {
        match self.never {}
    }
}
