//! The expire outputs of a flex config written for osm2pgsql ≥ 1.9
//! (`osm2pgsql.define_expire_output{…}` and a geometry column's
//! `expire = …`), as tilepipe expiry targets beside its own `expire:`
//! section.
//!
//! The apply stage hands over, with each row change, the geometries of
//! the columns that feed an output ([`RowChange::expire_feeds`]); here they
//! become one tile set per output, computed by the same rasteriser as
//! tilepipe's own expiry ([`super::raster`]) at the output's `maxzoom`,
//! with the column's `mode`, `buffer` and `full_area_limit` and the
//! output's tile limits. Only rows that changed count (or every rewritten
//! one with `expire.all_changes`), old ∪ new geometry of each.
//!
//! Where the tiles go, as osm2pgsql writes them (`expire-output.cpp`):
//! - `table`: `zoom, x, y` of every tile from `minzoom` to `maxzoom`
//!   inserted into `schema.table` (created if missing with osm2pgsql's
//!   layout: `zoom, x, y, first, last`, primary key `(zoom, x, y)`; a
//!   conflict updates `last`; a 3-column table of osm2pgsql 1.9 ignores
//!   it). This happens inside the batch's transaction, so the table
//!   changes exactly when the data does.
//! - `filename`: `z/x/y` lines appended to the file, in osm2pgsql's order.
//!   The tiles are stored in `tilepipe_expire_output_files` inside the
//!   batch's transaction and appended after the commit
//!   ([`write_files`]), so no reader sees a tile before the data that
//!   dirtied it and none is lost to a crash; an entry whose file cannot be
//!   written stays queued and is tried again after the next batch.

use super::batch::RowLabel;
use super::raster::{ExpireError, Expirer, PolygonMode, RasterSettings};
use super::tileset::TileSet;
use crate::apply::append::RowChange;
use crate::apply::flex::expire::{ExpireMode, ExpireOutputDef};
use crate::db::quote_ident;
use postgres::GenericClient;
use std::collections::BTreeSet;
use std::path::Path;
use tracing::{info, warn};

/// Why the expire outputs of a batch could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum OutputsError {
    /// Computing the tiles failed (a geometry that does not decode).
    #[error("expire output [{output}]: {source}")]
    Expire {
        /// Index of the output.
        output: usize,
        /// The rasteriser's error.
        source: ExpireError,
    },
    /// A statement on an output table or the file queue failed.
    #[error("expire output: {0}")]
    Db(#[from] postgres::Error),
}

/// The table of tiles waiting to be appended to output files.
const FILE_QUEUE: &str = "tilepipe_expire_output_files";

fn file_queue(schema: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(FILE_QUEUE))
}

/// The zoom an output's tiles are computed at: its `maxzoom`, or 1 for an
/// output without one (whose tiles are then reduced to `0/0/0`).
fn computed_zoom(output: &ExpireOutputDef) -> u8 {
    output.maxzoom.max(1)
}

fn polygon_mode(mode: ExpireMode) -> PolygonMode {
    match mode {
        ExpireMode::FullArea => PolygonMode::FullArea,
        ExpireMode::BoundaryOnly => PolygonMode::BoundaryOnly,
        ExpireMode::Hybrid => PolygonMode::Hybrid,
    }
}

/// The tiles of each output (in `outputs` order, at its `maxzoom`) that
/// the feeds of `changes` expire: every changed row's (with
/// `all_changes` every row's) old and new geometries of each column
/// feeding the output, one unit per row and column entry.
pub fn tiles_for_outputs(
    changes: &[RowChange],
    outputs: &[ExpireOutputDef],
    all_changes: bool,
) -> Result<Vec<TileSet>, OutputsError> {
    let mut expirers = outputs
        .iter()
        .enumerate()
        .map(|(i, output)| {
            let mut settings = RasterSettings::new(computed_zoom(output));
            settings.max_tiles_geometry = output.max_tiles_geometry;
            settings.max_tiles_overall = output.max_tiles_overall;
            Expirer::new(settings).map_err(|source| OutputsError::Expire { output: i, source })
        })
        .collect::<Result<Vec<Expirer>, OutputsError>>()?;
    for change in changes {
        if !(all_changes || change.changed) {
            continue;
        }
        for feed in &change.expire_feeds {
            let output = feed.config.output;
            let error = |source| OutputsError::Expire { output, source };
            let Some(expirer) = expirers.get_mut(output) else {
                continue;
            };
            expirer
                .set_unit_settings(
                    feed.config.buffer,
                    polygon_mode(feed.config.mode),
                    feed.config.full_area_limit,
                )
                .map_err(error)?;
            let geometries = feed.old.iter().chain(&feed.new).map(Vec::as_slice);
            expirer
                .expire_ewkb(RowLabel(&change.table, change.osm_id), geometries)
                .map_err(error)?;
        }
    }
    Ok(expirers
        .into_iter()
        .zip(outputs)
        .map(|(expirer, output)| {
            let tiles = expirer.into_tiles();
            if output.maxzoom == 0 {
                tiles.at_zoom(0)
            } else {
                tiles
            }
        })
        .collect())
}

/// Creates the outputs' tables that do not exist yet, with osm2pgsql's
/// layout (`expire_output_t::create_output_table`).
pub fn create_tables(
    client: &mut impl GenericClient,
    outputs: &[ExpireOutputDef],
) -> Result<(), postgres::Error> {
    for table in outputs.iter().filter_map(ExpireOutputDef::qualified_table) {
        client.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
               zoom int4 NOT NULL,
               x int4 NOT NULL,
               y int4 NOT NULL,
               first timestamp with time zone DEFAULT CURRENT_TIMESTAMP(0),
               last timestamp with time zone DEFAULT CURRENT_TIMESTAMP(0),
               PRIMARY KEY (zoom, x, y))"
        ))?;
    }
    Ok(())
}

/// The lines or rows of one output: its tiles from `minzoom` up, in
/// osm2pgsql's expire-list order.
fn output_tiles<'t>(
    output: &ExpireOutputDef,
    tiles: &'t TileSet,
) -> impl Iterator<Item = crate::tile::Tile> + 't {
    tiles.tiles_for_zooms(output.minzoom.min(tiles.zoom())..=tiles.zoom())
}

/// Inserts each output's tiles into its table (created if missing).
/// Returns the number of tiles written per output.
pub fn insert_into_tables(
    client: &mut impl GenericClient,
    outputs: &[ExpireOutputDef],
    tiles: &[TileSet],
) -> Result<Vec<u64>, postgres::Error> {
    create_tables(client, outputs)?;
    let mut written = vec![0; outputs.len()];
    for ((output, tiles), written) in outputs.iter().zip(tiles).zip(&mut written) {
        let Some(table) = output.qualified_table() else {
            continue;
        };
        if tiles.is_empty() {
            continue;
        }
        let (mut zooms, mut xs, mut ys) = (Vec::new(), Vec::new(), Vec::new());
        for tile in output_tiles(output, tiles) {
            zooms.push(i32::from(tile.z));
            xs.push(tile.x as i32);
            ys.push(tile.y as i32);
        }
        // osm2pgsql 1.9 made three-column tables; 1.10 added first/last.
        let columns = client
            .prepare(&format!("SELECT * FROM {table} LIMIT 0"))?
            .columns()
            .len();
        let on_conflict = if columns == 3 {
            "ON CONFLICT DO NOTHING"
        } else {
            "ON CONFLICT (zoom, x, y) DO UPDATE SET last = CURRENT_TIMESTAMP(0)"
        };
        client.execute(
            &format!(
                "INSERT INTO {table} (zoom, x, y)
                 SELECT * FROM unnest($1::int4[], $2::int4[], $3::int4[]) {on_conflict}"
            ),
            &[&zooms, &xs, &ys],
        )?;
        *written = zooms.len() as u64;
    }
    Ok(written)
}

/// Queues each output's tiles for its file, to be appended by
/// [`write_files`] after the commit. Empty sets are not queued.
pub fn enqueue_files(
    client: &mut impl GenericClient,
    schema: &str,
    outputs: &[ExpireOutputDef],
    tiles: &[TileSet],
) -> Result<(), postgres::Error> {
    let queued: Vec<(&String, &ExpireOutputDef, &TileSet)> = outputs
        .iter()
        .zip(tiles)
        .filter(|(_, tiles)| !tiles.is_empty())
        .filter_map(|(output, tiles)| Some((output.filename.as_ref()?, output, tiles)))
        .collect();
    if queued.is_empty() {
        return Ok(());
    }
    let queue = file_queue(schema);
    client.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {queue} (id bigserial PRIMARY KEY, filename text NOT NULL,
           minzoom int2 NOT NULL, zoom int2 NOT NULL, tiles bytea NOT NULL,
           queued timestamptz NOT NULL DEFAULT now())"
    ))?;
    for (filename, output, tiles) in queued {
        client.execute(
            &format!(
                "INSERT INTO {queue} (filename, minzoom, zoom, tiles) VALUES ($1, $2, $3, $4)"
            ),
            &[
                filename,
                &i16::from(output.minzoom),
                &i16::from(tiles.zoom()),
                &tiles.to_bytes(),
            ],
        )?;
    }
    Ok(())
}

/// What one batch did for the expire outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutputs {
    /// Tiles at each output's max zoom, per output.
    pub tiles: Vec<u64>,
    /// Rows written to each output's table (all zooms), per output.
    pub table_rows: Vec<u64>,
}

/// Everything a batch does for the expire outputs inside its
/// transaction: computes the tiles, inserts them into the output tables
/// and queues them for the output files.
pub fn record_batch(
    client: &mut impl GenericClient,
    schema: &str,
    outputs: &[ExpireOutputDef],
    changes: &[RowChange],
    all_changes: bool,
) -> Result<BatchOutputs, OutputsError> {
    if outputs.is_empty() {
        return Ok(BatchOutputs::default());
    }
    let tiles = tiles_for_outputs(changes, outputs, all_changes)?;
    let table_rows = insert_into_tables(client, outputs, &tiles)?;
    enqueue_files(client, schema, outputs, &tiles)?;
    for (i, ((output, tiles), rows)) in outputs.iter().zip(&tiles).zip(&table_rows).enumerate() {
        if let (Some(table), true) = (&output.table, *rows > 0) {
            info!(
                "Wrote {rows} entries to expire output [{i}] (table {}.{table}).",
                output.schema
            );
        } else if !tiles.is_empty() {
            tracing::debug!("expire output [{i}]: {} tiles", tiles.len());
        }
    }
    Ok(BatchOutputs {
        tiles: tiles.iter().map(TileSet::len).collect(),
        table_rows,
    })
}

/// Appends the queued tiles to their files, oldest first, removing each
/// entry once written. A file that cannot be written is logged and its
/// entries stay queued (later ones for the same file wait behind them).
/// Returns the number of lines written.
pub fn write_files(client: &mut impl GenericClient, schema: &str) -> Result<u64, OutputsError> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
            &[&schema, &FILE_QUEUE],
        )?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let queue = file_queue(schema);
    let entries = client.query(
        &format!("SELECT id, filename, minzoom, zoom, tiles FROM {queue} ORDER BY id"),
        &[],
    )?;
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut total = 0;
    for entry in entries {
        let id: i64 = entry.get(0);
        let filename: String = entry.get(1);
        if failed.contains(&filename) {
            continue;
        }
        let minzoom = entry.get::<_, i16>(2) as u8;
        let zoom = entry.get::<_, i16>(3) as u8;
        let result = TileSet::from_bytes(zoom, entry.get(4))
            .and_then(|tiles| append_list(Path::new(&filename), &tiles, minzoom));
        match result {
            Ok(lines) => {
                info!("Wrote {lines} entries to expire output file {filename}.");
                total += lines;
                client.execute(&format!("DELETE FROM {queue} WHERE id = $1"), &[&id])?;
            }
            Err(e) => {
                warn!("Failed to write expired tiles file {filename} ({e}); kept queued, tried again after the next batch");
                failed.insert(filename);
            }
        }
    }
    Ok(total)
}

/// Appends a set's `z/x/y` lines from `minzoom` up to a file, created if
/// missing, as osm2pgsql does (`fopen(…, "a")`).
fn append_list(path: &Path, tiles: &TileSet, minzoom: u8) -> std::io::Result<u64> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut out = std::io::BufWriter::new(file);
    let lines = tiles.write_list(&mut out, minzoom.min(tiles.zoom()))?;
    std::io::Write::flush(&mut out)?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::append::ExpireFeed;
    use crate::apply::flex::expire::ColumnExpire;

    fn output(minzoom: u8, maxzoom: u8) -> ExpireOutputDef {
        ExpireOutputDef {
            filename: Some("tiles.list".into()),
            schema: "public".into(),
            table: None,
            minzoom,
            maxzoom,
            max_tiles_geometry: 10_000_000,
            max_tiles_overall: 50_000_000,
        }
    }

    fn change(feeds: Vec<ExpireFeed>, changed: bool) -> RowChange {
        RowChange {
            table: "pois".into(),
            osm_id: 7,
            old: Vec::new(),
            new: Vec::new(),
            changed,
            changed_columns: None,
            null_columns: None,
            column_digests: None,
            expire: true,
            expire_feeds: feeds,
        }
    }

    fn point(x: f64, y: f64) -> Vec<u8> {
        crate::apply::geom::ewkb::point(&geo::Point::new(x, y))
    }

    #[test]
    fn feeds_go_to_their_outputs() {
        // (C/32, C/32) is the centre of the z4 tile 8/7 (tiles are C/16 =
        // 2 504 689 m wide): the buffer reaches no neighbour.
        const Q: f64 = 1_252_344.0;
        let feed = |output, old: Vec<Vec<u8>>, new: Vec<Vec<u8>>| ExpireFeed {
            config: ColumnExpire::new(output),
            old,
            new,
        };
        let moved = change(
            vec![
                feed(0, vec![point(Q, Q)], vec![point(3_000_000.0, Q)]),
                feed(1, Vec::new(), vec![point(Q, Q)]),
            ],
            true,
        );
        let unchanged = change(
            vec![feed(0, vec![point(-3_000_000.0, -Q)], Vec::new())],
            false,
        );
        let outputs = [output(2, 4), output(0, 0)];
        let tiles = tiles_for_outputs(&[moved, unchanged.clone()], &outputs, false).unwrap();
        let listed: Vec<String> = tiles[0].tiles().map(|t| t.to_string()).collect();
        assert_eq!(listed, ["4/8/7", "4/9/7"]);
        let mut list = Vec::new();
        tiles[0].write_list(&mut list, outputs[0].minzoom).unwrap();
        assert_eq!(
            String::from_utf8(list).unwrap(),
            "4/8/7\n3/4/3\n2/2/1\n4/9/7\n"
        );
        // No maxzoom: any change is 0/0/0.
        assert_eq!(
            tiles[1].tiles().map(|t| t.to_string()).collect::<Vec<_>>(),
            ["0/0/0"]
        );
        // An unchanged row counts with all_changes only.
        let all = tiles_for_outputs(&[unchanged], &outputs, true).unwrap();
        assert_eq!(
            all[0].tiles().map(|t| t.to_string()).collect::<Vec<_>>(),
            ["4/6/8"]
        );
    }

    #[test]
    fn lists_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("expired.tiles");
        let mut tiles = TileSet::new(3);
        tiles.insert(1, 2);
        assert_eq!(append_list(&path, &tiles, 2).unwrap(), 2);
        assert_eq!(append_list(&path, &tiles, 3).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "3/1/2\n2/0/1\n3/1/2\n"
        );
    }
}
