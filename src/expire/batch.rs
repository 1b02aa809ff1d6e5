//! Expiry of applied batches: from an apply's row changes to a tile set,
//! kept in the database until it has been acted on.
//!
//! Crash safety: the tiles a batch expires are stored in
//! `tilepipe_expire_queue` inside the batch's own transaction. The actions
//! on tile caches (touch, delete, re-render) run after the commit, so a
//! renderer never sees a tile marked dirty before the data that dirtied it,
//! and an entry is removed only once its actions are done: a crash between
//! commit and actions replays them at the next start instead of losing them.

use super::actions::{
    self, ExpirePolicy, ExpireSummary, NoRender, RenderdSink, RenderdSinkOptions,
};
use super::raster::{ExpireError, Expirer, PolygonMode, RasterSettings};
use super::style_aware::{self, RowFacts, StyleExpirers, StyleReads, StylesTiles};
use super::tileset::TileSet;
use crate::apply::append::RowChange;
use crate::db::quote_ident;
use crate::metatile::TileStore;
use crate::renderd::Endpoint;
use crate::tile::Metatile;
use postgres::GenericClient;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use tracing::{info, warn};

/// The `expire:` section of the configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExpireConfig {
    /// Zoom tiles are computed at; lower zooms and metatiles derive from it
    /// (default 18).
    pub max_zoom: u8,
    /// Lowest zoom written to tile lists (default 10).
    pub min_zoom: u8,
    /// Polygons: full-area (default), boundary-only or hybrid.
    pub mode: PolygonMode,
    /// Margin around geometries, in tiles at `max_zoom` (default 0.1).
    pub buffer: f64,
    /// Hybrid mode: polygons whose envelope is wider or taller than this
    /// (EPSG:3857 metres) expire their boundary only (default 20000).
    pub full_area_limit: f64,
    /// Expire every rewritten row, as osm2pgsql does, instead of only rows
    /// whose geometry or columns changed.
    pub all_changes: bool,
    /// Write `z/x/y` lists into this directory: one file per batch
    /// (`expired-<sequence>.list`), or with `list_append` one growing
    /// `expired.list`, as osm2pgsql's `-o` writes.
    pub list_dir: Option<PathBuf>,
    /// Append to one `expired.list` instead of one file per batch
    /// (default false).
    pub list_append: bool,
    /// Actions on mod_tile tile caches, per style.
    pub styles: Vec<StyleExpiry>,
    /// Expire a style's tiles only at the zooms where a layer reading the
    /// changed row's table draws, for styles whose Mapnik XML tilepipe
    /// knows (default true; false: every style gets every expired tile).
    pub style_aware: bool,
    /// With `style_aware`, also evaluate each layer's value conditions
    /// (its SQL `WHERE`, `CASE`/`COALESCE` outputs and rule filters) on
    /// the changed row's values, so that a row expires only at the zooms
    /// where a rule that can match it draws (default false: on the
    /// expiry benchmark's generated diffs with openstreetmap-carto it
    /// missed 2 changed metatiles at z10–z11 that the tables-and-columns
    /// method expires; see the README's expiry section).
    pub value_conditions: bool,
    /// Render nodes on streaming standbys: each gets its styles' expired
    /// metatiles (`cmdDirty`) once its standby replayed the batch.
    pub nodes: Vec<super::nodes::RenderNode>,
}

/// What to do with one style's expired metatiles.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StyleExpiry {
    /// Style name: the directory below `tile_dir` (renderd's map section).
    pub name: String,
    /// mod_tile tile directory.
    pub tile_dir: PathBuf,
    /// Lowest zoom acted on (default 10; never below z3, see
    /// [`FIRST_EXPIRED_ZOOM`](super::actions::FIRST_EXPIRED_ZOOM)).
    #[serde(default = "default_style_min_zoom")]
    pub min_zoom: u8,
    /// Highest zoom acted on (default 18; at most `expire.max_zoom`).
    #[serde(default = "default_max_zoom")]
    pub max_zoom: u8,
    /// From this zoom on, mark metatiles dirty instead of re-rendering.
    #[serde(default)]
    pub touch_from: Option<u8>,
    /// From this zoom on, delete metatiles.
    #[serde(default)]
    pub delete_from: Option<u8>,
    /// Re-render through this renderd (`/run/renderd/renderd.sock` or
    /// `host:port`); without one, zooms that would re-render are touched.
    #[serde(default)]
    pub renderd: Option<String>,
    /// Also ask for metatiles that are not in the cache.
    #[serde(default)]
    pub render_missing: bool,
    /// Refresh the low zooms on a schedule instead of after edits.
    #[serde(default)]
    pub low_zooms: Option<super::schedule::LowZoomSchedule>,
    /// The style's Mapnik XML when another renderer draws it (renderd's
    /// `XML=`), for style-aware expiry with 256 px tiles at scale 1;
    /// styles tilepipe renders use their `styles:` entry instead.
    #[serde(default)]
    pub xml: Option<PathBuf>,
}

fn default_style_min_zoom() -> u8 {
    10
}

fn default_max_zoom() -> u8 {
    18
}

impl Default for ExpireConfig {
    fn default() -> Self {
        ExpireConfig {
            max_zoom: default_max_zoom(),
            min_zoom: default_style_min_zoom(),
            mode: PolygonMode::FullArea,
            buffer: 0.1,
            full_area_limit: 20_000.0,
            all_changes: false,
            list_dir: None,
            list_append: false,
            styles: Vec::new(),
            style_aware: true,
            value_conditions: false,
            nodes: Vec::new(),
        }
    }
}

impl ExpireConfig {
    /// Whether anything is configured to use expired tiles.
    pub fn is_active(&self) -> bool {
        self.list_dir.is_some() || !self.styles.is_empty() || !self.nodes.is_empty()
    }

    /// The rasteriser settings these keys describe.
    pub fn raster(&self) -> RasterSettings {
        let mut config = RasterSettings::new(self.max_zoom);
        config.buffer = self.buffer;
        config.full_area_limit = self.full_area_limit;
        config.mode = self.mode;
        config
    }

    /// Checks values serde cannot; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        self.raster()
            .validate()
            .map_err(|e| format!("expire: {e}"))?;
        if self.min_zoom > self.max_zoom {
            return Err(format!(
                "expire.min_zoom {} is above expire.max_zoom {}",
                self.min_zoom, self.max_zoom
            ));
        }
        for style in &self.styles {
            let mut policy = self.policy(style, &RenderTarget::Nobody);
            policy.max_zoom = policy.max_zoom.min(self.max_zoom);
            policy
                .validate()
                .map_err(|e| format!("expire.styles[{}]: {e}", style.name))?;
            if style.max_zoom > self.max_zoom {
                return Err(format!(
                    "expire.styles[{}].max_zoom {} is above expire.max_zoom {}: tiles are only computed up to it",
                    style.name, style.max_zoom, self.max_zoom
                ));
            }
            if let Some(schedule) = &style.low_zooms {
                schedule.validate(&style.name)?;
            }
            if let Some(endpoint) = &style.renderd {
                Endpoint::parse(endpoint)
                    .map_err(|e| format!("expire.styles[{}].renderd: {e}", style.name))?;
            }
        }
        super::nodes::validate_nodes(&self.nodes, self.max_zoom)?;
        Ok(())
    }

    /// Who re-renders `style`'s metatiles: its own `renderd` if set, else
    /// tilepipe's renderer when it draws that style, else nobody.
    pub fn render_target<'a>(
        &self,
        style: &StyleExpiry,
        builtin: Option<&'a dyn LocalRenderer>,
    ) -> RenderTarget<'a> {
        match (&style.renderd, builtin) {
            (Some(endpoint), _) => RenderTarget::Renderd(
                Endpoint::parse(endpoint).expect("validated with the configuration"),
            ),
            (None, Some(b)) if b.draws(&style.name) => RenderTarget::Builtin(b),
            (None, _) => RenderTarget::Nobody,
        }
    }

    fn policy(&self, style: &StyleExpiry, target: &RenderTarget) -> ExpirePolicy {
        let mut policy = ExpirePolicy::new(&style.name);
        policy.min_zoom = style.min_zoom;
        policy.max_zoom = style.max_zoom;
        policy.delete_from = style.delete_from;
        policy.render_missing = style.render_missing;
        // Without a renderer, zooms that would re-render are marked dirty,
        // so a renderer behind the cache (mod_tile) redraws on demand.
        policy.touch_from = match (target, style.touch_from) {
            (RenderTarget::Nobody, touch) => {
                Some(touch.unwrap_or(style.min_zoom).min(style.min_zoom))
            }
            (_, touch) => touch,
        };
        policy
    }
}

/// Why expire asks for a render; the wiring layer picks the render
/// queue's priority from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderReason {
    /// Metatiles an applied batch expired.
    Expired,
    /// A scheduled refresh of the low zooms.
    Scheduled,
}

/// tilepipe's own renderer, when the process runs one, as expire sees it.
/// The wiring layer implements it over the render queue
/// ([`crate::daemon::expire_to_render`]), so expire does not depend on
/// the render stage.
pub trait LocalRenderer: Send + Sync {
    /// Whether it draws `style`.
    fn draws(&self, style: &str) -> bool;

    /// Applies `policy` to `metatiles` with this renderer as the render
    /// sink.
    fn expire<'a>(
        &'a self,
        store: &'a TileStore,
        policy: &'a ExpirePolicy,
        metatiles: Metatiles<'a>,
        reason: RenderReason,
    ) -> ExpireFuture<'a>;
}

/// The metatiles a [`LocalRenderer`] expires, boxed so the trait stays
/// object safe.
pub type Metatiles<'a> = Box<dyn Iterator<Item = Metatile> + Send + 'a>;

/// What [`LocalRenderer::expire`] returns: the expiry run, boxed so the
/// trait stays object safe.
pub type ExpireFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ExpireSummary, actions::ExpireError>> + Send + 'a>>;

/// Where a style's re-renders go.
pub enum RenderTarget<'a> {
    /// An external renderd (socket or host:port).
    Renderd(Endpoint),
    /// tilepipe's own renderer.
    Builtin(&'a dyn LocalRenderer),
    /// No renderer: metatiles are marked dirty instead.
    Nobody,
}

impl RenderTarget<'_> {
    /// Applies `policy` to `metatiles` with this target as the render sink;
    /// `reason` tells the builtin renderer how urgent its renders are.
    pub async fn expire<I>(
        &self,
        store: &TileStore,
        policy: &ExpirePolicy,
        metatiles: I,
        reason: RenderReason,
    ) -> Result<ExpireSummary, actions::ExpireError>
    where
        I: IntoIterator<Item = Metatile>,
        I::IntoIter: Send,
    {
        match self {
            RenderTarget::Renderd(endpoint) => {
                let mut sink = RenderdSink::new(
                    endpoint.clone(),
                    store.clone(),
                    RenderdSinkOptions::default(),
                );
                actions::expire(store, policy, metatiles, &mut sink).await
            }
            RenderTarget::Builtin(renderer) => {
                renderer
                    .expire(store, policy, Box::new(metatiles.into_iter()), reason)
                    .await
            }
            RenderTarget::Nobody => actions::expire(store, policy, metatiles, &mut NoRender).await,
        }
    }
}

/// What one batch expires: the tiles of every changed row, and per style
/// whose reads are known, the tiles of the rows it draws, by zoom.
#[derive(Debug, Clone)]
pub struct BatchTiles {
    /// Every changed row's tiles (tile lists, styles without known reads).
    pub all: TileSet,
    /// Per style-aware style, its own sets.
    pub styles: StylesTiles,
}

impl BatchTiles {
    /// Expired metatiles of `style` at `zoom`: from its own sets when it
    /// has them, else from [`BatchTiles::all`].
    pub fn metatiles(&self, style: &str, zoom: u8) -> Vec<Metatile> {
        match self.styles.get(style) {
            Some(tiles) => tiles.metatiles(zoom),
            None => self.all.metatiles(zoom).collect(),
        }
    }
}

/// The tiles the row changes of one batch expire, as
/// [`tiles_for_changes`], and per style in `styles` its own sets
/// ([`StyleReads::zooms_for`]): a row whose geometry stayed the same
/// counts only for layers reading one of its
/// [`RowChange::changed_columns`].
///
/// Style-aware sets also look at rows expiry otherwise skips as
/// duplicates (`_roads`, whose rows repeat `_line` rows): a style that
/// draws `planet_osm_roads` at low zooms and `planet_osm_line` only from
/// z13 on must still see a road change at z10.
pub fn tiles_for_batch(
    changes: &[RowChange],
    config: &RasterSettings,
    all_changes: bool,
    styles: &[StyleReads],
) -> Result<BatchTiles, ExpireError> {
    tiles_for_batch_with(changes, config, all_changes, styles, true)
}

/// [`tiles_for_batch`], with the styles' value conditions evaluated on
/// the rows' values only when `value_conditions` is set
/// ([`ExpireConfig::value_conditions`]); else each layer counts for every
/// row of its tables whose columns it reads changed.
pub fn tiles_for_batch_with(
    changes: &[RowChange],
    config: &RasterSettings,
    all_changes: bool,
    styles: &[StyleReads],
    value_conditions: bool,
) -> Result<BatchTiles, ExpireError> {
    let all = tiles_for_changes(changes, config, all_changes)?;
    let mut per_style = StyleExpirers::new(config, styles)?;
    if !styles.is_empty() {
        for change in changes {
            if !(all_changes || change.changed) {
                continue;
            }
            let geometries: Vec<&[u8]> = change
                .old
                .iter()
                .chain(&change.new)
                .map(Vec::as_slice)
                .collect();
            if geometries.is_empty() {
                continue;
            }
            // With all_changes a row may have changed nothing at all;
            // it then counts for every layer reading its table.
            let columns = change
                .changed_columns
                .as_deref()
                .filter(|c| change.changed || !c.is_empty());
            let facts = RowFacts {
                changed_columns: columns,
                null_columns: change.null_columns.as_deref(),
                // Without the rows' values no condition can be
                // evaluated: every one counts as possibly true.
                digests: change.column_digests.as_ref().filter(|_| value_conditions),
            };
            let object = RowLabel(&change.table, change.osm_id);
            per_style.expire_row(&object, &change.table, &geometries, facts)?;
        }
    }
    Ok(BatchTiles {
        all,
        styles: per_style.finish(),
    })
}

/// The tiles the row changes of one batch expire: old ∪ new geometry of
/// every changed row (rows of `_roads` duplicate `_line` and are skipped).
/// With `all_changes` false, rows rewritten without any difference (e.g.
/// only a tag the style drops changed) expire nothing.
pub fn tiles_for_changes(
    changes: &[RowChange],
    config: &RasterSettings,
    all_changes: bool,
) -> Result<TileSet, ExpireError> {
    let mut expirer = Expirer::new(config.clone())?;
    for change in changes {
        if !change.expire || !(all_changes || change.changed) {
            continue;
        }
        let object = RowLabel(&change.table, change.osm_id);
        let geometries = change.old.iter().chain(&change.new).map(Vec::as_slice);
        expirer.expire_ewkb(object, geometries)?;
    }
    Ok(expirer.into_tiles())
}

/// `planet_osm_line row -42` in log lines.
pub(crate) struct RowLabel<'a>(pub(crate) &'a str, pub(crate) i64);

impl std::fmt::Display for RowLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}", self.0, self.1)
    }
}

/// Why the expire queue (`tilepipe_expire_queue`) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A database error.
    #[error("expire queue: {0}")]
    Db(#[from] postgres::Error),
    /// A stored tile set that does not decode.
    #[error("expire queue entry {batch}: {message}")]
    Corrupt {
        /// The entry's `batch_end` sequence.
        batch: i64,
        /// What is wrong with it.
        message: String,
    },
}

fn queue_table(schema: &str) -> String {
    format!(
        "{}.{}",
        quote_ident(schema),
        quote_ident("tilepipe_expire_queue")
    )
}

/// Stores a batch's tiles, inside the batch's transaction.
pub fn enqueue(
    client: &mut impl GenericClient,
    schema: &str,
    batch_end: u64,
    tiles: &BatchTiles,
) -> Result<(), QueueError> {
    let table = queue_table(schema);
    // style_tiles came with style-aware expiry; queues of older versions
    // gain it (NULL: every style acts on `tiles`).
    client.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (batch_end int8 PRIMARY KEY, zoom int2 NOT NULL, tiles bytea NOT NULL, queued timestamptz NOT NULL DEFAULT now(), style_tiles bytea);
         ALTER TABLE {table} ADD COLUMN IF NOT EXISTS style_tiles bytea"
    ))?;
    let style_tiles =
        (!tiles.styles.is_empty()).then(|| style_aware::styles_to_bytes(&tiles.styles));
    client.execute(
        &format!(
            "INSERT INTO {table} (batch_end, zoom, tiles, style_tiles) VALUES ($1, $2, $3, $4)
             ON CONFLICT (batch_end) DO UPDATE SET zoom = EXCLUDED.zoom, tiles = EXCLUDED.tiles, style_tiles = EXCLUDED.style_tiles"
        ),
        &[
            &(batch_end as i64),
            &i16::from(tiles.all.zoom()),
            &tiles.all.to_bytes(),
            &style_tiles,
        ],
    )?;
    Ok(())
}

/// Entries not acted on yet, oldest first.
pub fn pending(
    client: &mut impl GenericClient,
    schema: &str,
) -> Result<Vec<(i64, BatchTiles)>, QueueError> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'tilepipe_expire_queue')",
            &[&schema],
        )?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let table = queue_table(schema);
    // Queues written before style-aware expiry have no style_tiles.
    let has_style_tiles: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'tilepipe_expire_queue' AND column_name = 'style_tiles')",
            &[&schema],
        )?
        .get(0);
    let style_tiles = if has_style_tiles {
        "style_tiles"
    } else {
        "NULL::bytea"
    };
    let rows = client.query(
        &format!("SELECT batch_end, zoom, tiles, {style_tiles} FROM {table} ORDER BY batch_end"),
        &[],
    )?;
    rows.iter()
        .map(|row| {
            let batch: i64 = row.get(0);
            let zoom: i16 = row.get(1);
            let bytes: &[u8] = row.get(2);
            let corrupt = |e: std::io::Error| QueueError::Corrupt {
                batch,
                message: e.to_string(),
            };
            let all = TileSet::from_bytes(zoom as u8, bytes).map_err(corrupt)?;
            let styles = match row.get::<_, Option<&[u8]>>(3) {
                Some(bytes) => style_aware::styles_from_bytes(bytes).map_err(corrupt)?,
                None => StylesTiles::new(),
            };
            Ok((batch, BatchTiles { all, styles }))
        })
        .collect()
}

/// Removes an entry once acted on.
pub fn done(
    client: &mut impl GenericClient,
    schema: &str,
    batch_end: i64,
) -> Result<(), QueueError> {
    client.execute(
        &format!("DELETE FROM {} WHERE batch_end = $1", queue_table(schema)),
        &[&batch_end],
    )?;
    Ok(())
}

/// Runs the configured actions for one batch's tiles: the tile list, then
/// each style's metatile actions. Problems are logged; a failure of one
/// style does not stop the others.
pub async fn act(
    settings: &ExpireConfig,
    batch_end: i64,
    batch: &BatchTiles,
    builtin: Option<&dyn LocalRenderer>,
) -> bool {
    let tiles = &batch.all;
    let mut ok = true;
    if let Some(dir) = &settings.list_dir {
        let path = if settings.list_append {
            dir.join("expired.list")
        } else {
            dir.join(format!("expired-{batch_end:09}.list"))
        };
        let result = std::fs::create_dir_all(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                write_list(&path, tiles, settings.min_zoom, settings.list_append)
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(lines) => info!("wrote {lines} expired tiles to {}", path.display()),
            Err(e) => {
                warn!("cannot write the expired tile list {}: {e}", path.display());
                ok = false;
            }
        }
    }
    for style in &settings.styles {
        let target = settings.render_target(style, builtin);
        let policy = settings.policy(style, &target);
        let store = TileStore::new(&style.tile_dir);
        let metatiles: Vec<_> = policy
            .zooms()
            .flat_map(|z| batch.metatiles(&style.name, z))
            .collect();
        let summary = target
            .expire(&store, &policy, metatiles, RenderReason::Expired)
            .await;
        match summary {
            Ok(summary) if summary.is_success() => {
                let t = summary.total();
                if t.replies.marked_dirty > 0 {
                    warn!(
                        style = %style.name,
                        not_done = t.replies.not_done,
                        failed = t.replies.failed,
                        marked_dirty = t.replies.marked_dirty,
                        "the renderer did not render some expired metatiles; they are marked dirty and re-rendered when viewed"
                    );
                }
                info!(
                    style = %style.name,
                    rendered = t.rendered,
                    touched = t.touched,
                    deleted = t.deleted,
                    missing = t.missing,
                    "expired metatiles"
                );
            }
            Ok(summary) => {
                warn!(style = %style.name, "expiry incomplete:\n{summary}");
                ok = false;
            }
            Err(e) => {
                warn!(style = %style.name, "expiry failed: {e}");
                ok = false;
            }
        }
    }
    ok
}

/// The metatiles [`act`] marks dirty or deletes instead of having them
/// re-rendered, per style: those at the zooms its policy touches or
/// deletes (every zoom, without a renderer). A cache in front of the tile
/// server must drop them too; re-rendered ones are purged after their
/// render.
pub fn unrendered(
    settings: &ExpireConfig,
    batch: &BatchTiles,
    builtin: Option<&dyn LocalRenderer>,
) -> Vec<(String, Metatile)> {
    let mut found = Vec::new();
    for style in &settings.styles {
        let target = settings.render_target(style, builtin);
        let policy = settings.policy(style, &target);
        for zoom in policy.zooms() {
            if policy.action(zoom) == Some(actions::Action::Render) {
                continue;
            }
            for metatile in batch.metatiles(&style.name, zoom) {
                found.push((style.name.clone(), metatile));
            }
        }
    }
    found
}

/// Writes a list to a temp file renamed into place, or appends to it.
fn write_list(
    path: &std::path::Path,
    tiles: &TileSet,
    min_zoom: u8,
    append: bool,
) -> std::io::Result<u64> {
    if append {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut out = std::io::BufWriter::new(file);
        let lines = tiles.write_list(&mut out, min_zoom)?;
        std::io::Write::flush(&mut out)?;
        return Ok(lines);
    }
    let tmp = path.with_extension("list.tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let lines = tiles.write_list(&mut out, min_zoom)?;
    std::io::Write::flush(&mut out)?;
    drop(out);
    std::fs::rename(&tmp, path)?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_and_deleted_metatiles_are_listed_unrendered() {
        let mut all = TileSet::new(18);
        all.insert(140_000, 90_000);
        let batch = BatchTiles {
            all,
            styles: StylesTiles::new(),
        };
        let style = |name: &str, renderd: Option<&str>| StyleExpiry {
            name: name.into(),
            tile_dir: "/tiles".into(),
            min_zoom: 12,
            max_zoom: 18,
            touch_from: Some(16),
            delete_from: None,
            renderd: renderd.map(str::to_string),
            render_missing: false,
            low_zooms: None,
            xml: None,
        };
        let settings = ExpireConfig {
            styles: vec![
                style("rendered", Some("127.0.0.1:7654")),
                style("cache", None),
            ],
            ..ExpireConfig::default()
        };
        let found = unrendered(&settings, &batch, None);
        let zooms = |name: &str| -> Vec<u8> {
            found
                .iter()
                .filter(|(s, _)| s == name)
                .map(|(_, m)| m.z)
                .collect()
        };
        // With a renderd: z16-z18 are touched. Without: all is touched.
        assert_eq!(zooms("rendered"), [16, 17, 18]);
        assert_eq!(zooms("cache"), (12..=18).collect::<Vec<u8>>());
    }

    #[test]
    fn lists_are_replaced_or_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut tiles = TileSet::new(3);
        tiles.insert(1, 2);
        let path = dir.path().join("list");
        assert_eq!(write_list(&path, &tiles, 3, false).unwrap(), 1);
        write_list(&path, &tiles, 3, false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "3/1/2\n");
        write_list(&path, &tiles, 2, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "3/1/2\n3/1/2\n2/0/1\n"
        );
        assert!(!dir.path().join("list.list.tmp").exists());
    }

    #[test]
    fn two_styles_over_one_database_expire_differently() {
        use super::super::style_aware::{LayerReads, Reads, ZoomMask};
        let layer = |table: &str, column: &str, zooms| LayerReads {
            name: format!("{table} {column}"),
            tables: Reads::Only([table.to_string()].into()),
            columns: Reads::Only([column.to_string()].into()),
            zooms,
            requires: Vec::new(),
            views: Vec::new(),
        };
        // Buildings from z14 in one style, from z12 in the other, which
        // also draws land use from z10.
        let styles = [
            StyleReads {
                style: "plain".into(),
                layers: vec![layer(
                    "planet_osm_polygon",
                    "building",
                    ZoomMask::range(14, 18),
                )],
            },
            StyleReads {
                style: "detailed".into(),
                layers: vec![
                    layer("planet_osm_polygon", "building", ZoomMask::range(12, 18)),
                    layer("planet_osm_polygon", "landuse", ZoomMask::range(10, 18)),
                ],
            },
        ];
        let square = geo::Polygon::new(
            geo::LineString::from(vec![
                (1_000_000.0, 6_000_000.0),
                (1_000_050.0, 6_000_000.0),
                (1_000_050.0, 6_000_050.0),
                (1_000_000.0, 6_000_000.0),
            ]),
            Vec::new(),
        );
        let ewkb = crate::apply::geom::ewkb::polygon(&square);
        let building_change = RowChange {
            table: "planet_osm_polygon".into(),
            osm_id: 3,
            old: vec![ewkb.clone()],
            new: vec![ewkb.clone()],
            changed: true,
            changed_columns: Some(vec!["building".into()]),
            null_columns: None,
            column_digests: None,
            expire: true,
            expire_feeds: Vec::new(),
        };
        let raster = ExpireConfig::default().raster();
        let batch = tiles_for_batch(
            std::slice::from_ref(&building_change),
            &raster,
            false,
            &styles,
        )
        .unwrap();
        let zooms = |style: &str| -> Vec<u8> {
            (0..=18)
                .filter(|&z| !batch.metatiles(style, z).is_empty())
                .collect()
        };
        assert_eq!(zooms("plain"), (14..=18).collect::<Vec<_>>());
        assert_eq!(zooms("detailed"), (12..=18).collect::<Vec<_>>());
        // A style without known reads gets everything.
        assert_eq!(zooms("other"), (0..=18).collect::<Vec<_>>());
        // A moved building counts for every layer reading the table.
        let moved = RowChange {
            changed_columns: None,
            null_columns: None,
            column_digests: None,
            ..building_change.clone()
        };
        let batch = tiles_for_batch(&[moved], &raster, false, &styles).unwrap();
        assert!(!batch.metatiles("detailed", 10).is_empty());
        assert!(batch.metatiles("plain", 13).is_empty());
        // A tag only land use reads: nothing for the plain style.
        let landuse = RowChange {
            changed_columns: Some(vec!["landuse".into()]),
            ..building_change
        };
        let batch = tiles_for_batch(&[landuse], &raster, false, &styles).unwrap();
        assert!(batch.styles["plain"].is_empty());
        assert!(!batch.metatiles("detailed", 10).is_empty());
    }

    #[test]
    fn a_style_over_the_overall_limit_gets_every_tile() {
        let reads = [StyleReads::everything("s")];
        let points: Vec<RowChange> = (0..5)
            .map(|i| {
                let p = geo::Point::new(1_000_000.0 + f64::from(i) * 10_000.0, 6_000_000.0);
                let ewkb = crate::apply::geom::ewkb::point(&p);
                RowChange {
                    table: "planet_osm_point".into(),
                    osm_id: i64::from(i),
                    old: Vec::new(),
                    new: vec![ewkb],
                    changed: true,
                    changed_columns: None,
                    null_columns: None,
                    column_digests: None,
                    expire: true,
                    expire_feeds: Vec::new(),
                }
            })
            .collect();
        let mut raster = ExpireConfig::default().raster();
        let batch = tiles_for_batch(&points, &raster, false, &reads).unwrap();
        assert!(batch.styles.contains_key("s"));
        // A point expires 1 to 4 tiles: five of them pass 4.
        raster.max_tiles_overall = 4;
        let batch = tiles_for_batch(&points, &raster, false, &reads).unwrap();
        assert!(!batch.styles.contains_key("s"));
    }

    #[test]
    fn unchanged_rows_expire_nothing_unless_all_changes() {
        let point = crate::apply::geom::ewkb::point(&geo::Point::new(1_000_000.0, 6_000_000.0));
        let change = RowChange {
            table: "planet_osm_point".into(),
            osm_id: 7,
            old: vec![point.clone()],
            new: vec![point],
            changed: false,
            changed_columns: None,
            null_columns: None,
            column_digests: None,
            expire: true,
            expire_feeds: Vec::new(),
        };
        let roads = RowChange {
            table: "planet_osm_roads".into(),
            changed: true,
            expire: false,
            ..change.clone()
        };
        let raster = ExpireConfig::default().raster();
        assert!(
            tiles_for_changes(&[change.clone(), roads.clone()], &raster, false)
                .unwrap()
                .is_empty()
        );
        // One point: one tile, or more when within the buffer of an edge.
        let n = tiles_for_changes(&[change], &raster, true).unwrap().len();
        assert!((1..=4).contains(&n), "{n}");
        assert!(
            tiles_for_changes(&[roads], &raster, true)
                .unwrap()
                .is_empty(),
            "roads duplicate lines"
        );
    }
}
