//! From filtered tags to the values of one output row (osm2pgsql's
//! `table_t::write_row`).

use super::value::{format_general6, pg_float4, ColumnValue};
use crate::apply::style::{HstoreMode, Style, StyleColumn, TableKind, WAY_AREA, Z_ORDER};
use crate::osm::Tags;

/// The values of one row except `osm_id` and `way`. A row is written as
/// `osm_id`, `columns…`, `hstore_columns…`, `tags` (only when
/// [`RowValues::tags`] is `Some`), `way` — the order of
/// [`Style::table_columns`].
#[derive(Debug, Clone, PartialEq)]
pub struct RowValues {
    /// A value per [`Style::columns`] entry of the table (the `way_area`
    /// column, if the style has one, included).
    pub columns: ColumnValues,
    /// One value per `-z` prefix ([`crate::apply::style::HstoreOptions::columns`]):
    /// the tags starting with it, prefix removed; `None` = NULL.
    pub hstore_columns: Vec<Option<Vec<(String, String)>>>,
    /// The `tags` hstore: `None` without `-k`/`-j`; otherwise the tags that
    /// no column took (`-k`) or all tags (`-j`), never `z_order`.
    pub tags: Option<Vec<(String, String)>>,
}

/// The style column values of a row, by the columns' index in
/// [`Style::columns`]: only those not NULL are kept. A row has a value
/// in a few of the default style's ~70 columns, and an import holds
/// thousands of rows on their way to PostgreSQL: a full array of them
/// was 2 KB a row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ColumnValues(Vec<(u32, ColumnValue)>);

impl ColumnValues {
    /// The value of column `index`; NULL when it has none.
    pub fn get(&self, index: usize) -> &ColumnValue {
        match self.0.binary_search_by_key(&index, |&(i, _)| i as usize) {
            Ok(found) => &self.0[found].1,
            Err(_) => &ColumnValue::Null,
        }
    }
}

impl From<Vec<ColumnValue>> for ColumnValues {
    /// One value per column, in column order.
    fn from(values: Vec<ColumnValue>) -> Self {
        ColumnValues(
            values
                .into_iter()
                .enumerate()
                .filter(|(_, value)| *value != ColumnValue::Null)
                .map(|(index, value)| (index as u32, value))
                .collect(),
        )
    }
}

/// The row for `tags` (the output of a [`super::TagTransform`]) in `table`.
///
/// `way_area`: the area of a polygon row in target units; pass `Some` for
/// polygon rows and `None` otherwise. As in osm2pgsql it is written as a
/// pseudo-tag with six significant digits (so with `-j` it also lands in
/// `tags`), unless the style switches `way_area` off.
pub fn row_values(
    style: &Style,
    table: TableKind,
    tags: &Tags,
    way_area: Option<f64>,
) -> RowValues {
    let with_area;
    let tags = match way_area {
        Some(area) if style.way_area_enabled() => {
            let mut copy = tags.clone();
            set_tag(&mut copy, WAY_AREA, format_general6(area));
            with_area = copy;
            &with_area
        }
        _ => tags,
    };
    let hstore = style.hstore();
    // Which tags a column took, so -k leaves them out of `tags`.
    let mut used = vec![false; tags.len()];
    let columns = ColumnValues(
        style
            .columns(table)
            .iter()
            .enumerate()
            .filter_map(|(column_index, column)| {
                let index = tags.iter().position(|(key, _)| *key == column.name)?;
                used[index] = true;
                match column_value(column, &tags[index].1) {
                    ColumnValue::Null => None,
                    value => Some((column_index as u32, value)),
                }
            })
            .collect(),
    );
    let hstore_columns = hstore
        .columns
        .iter()
        .map(|prefix| {
            let pairs: Vec<(String, String)> = tags
                .iter()
                .filter_map(|(key, value)| {
                    key.strip_prefix(prefix.as_str())
                        .map(|short| (short.to_string(), value.clone()))
                })
                .collect();
            (!pairs.is_empty()).then_some(pairs)
        })
        .collect();
    let tags = match hstore.mode {
        HstoreMode::None => None,
        mode => Some(
            tags.iter()
                .zip(&used)
                .filter(|((key, _), used)| key != Z_ORDER && !(mode == HstoreMode::Match && **used))
                .map(|(tag, _)| tag.clone())
                .collect(),
        ),
    };
    RowValues {
        columns,
        hstore_columns,
        tags,
    }
}

fn set_tag(tags: &mut Tags, key: &str, value: String) {
    match tags.iter_mut().find(|(k, _)| k == key) {
        Some(tag) => tag.1 = value,
        None => tags.push((key.to_string(), value)),
    }
}

fn column_value(column: &StyleColumn, value: &str) -> ColumnValue {
    if !column.is_way_area() {
        return ColumnValue::from_tag(value, column.value_type);
    }
    // osm2pgsql hands way_area text to PostgreSQL unconverted: our own
    // six-digit area, or an OSM tag of that name on lines (text PostgreSQL
    // cannot read aborts osm2pgsql; we write NULL).
    if column.sql_type == "text" {
        return ColumnValue::Text(value.to_string());
    }
    pg_float4(value).map_or(ColumnValue::Null, ColumnValue::Real)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::style::HstoreOptions;
    use crate::osm::tags;

    fn style(mode: HstoreMode, columns: &[&str]) -> Style {
        Style::default()
            .with_hstore(HstoreOptions {
                mode,
                match_only: false,
                columns: columns.iter().map(|c| c.to_string()).collect(),
            })
            .unwrap()
    }

    fn value<'a>(
        style: &Style,
        table: TableKind,
        row: &'a RowValues,
        name: &str,
    ) -> &'a ColumnValue {
        let index = style
            .columns(table)
            .iter()
            .position(|c| c.name == name)
            .unwrap();
        row.columns.get(index)
    }

    #[test]
    fn columns_in_style_order() {
        let style = Style::default();
        let input = tags(&[
            ("name", "A"),
            ("highway", "primary"),
            ("foo", "x"),
            ("z_order", "37"),
        ]);
        let row = row_values(&style, TableKind::Line, &input, None);
        assert_eq!(
            value(&style, TableKind::Line, &row, "name"),
            &ColumnValue::Text("A".into())
        );
        assert_eq!(
            value(&style, TableKind::Line, &row, "z_order"),
            &ColumnValue::Int4(37)
        );
        assert_eq!(
            value(&style, TableKind::Line, &row, "way_area"),
            &ColumnValue::Null
        );
        assert_eq!(
            value(&style, TableKind::Line, &row, "access"),
            &ColumnValue::Null
        );
        assert_eq!(row.tags, None);
        assert!(row.hstore_columns.is_empty());
    }

    #[test]
    fn way_area_six_digits() {
        let style = Style::default();
        let input = tags(&[("building", "yes"), ("z_order", "0")]);
        let row = row_values(
            &style,
            TableKind::Polygon,
            &input,
            Some(1_825_345.193_875_290_5),
        );
        assert_eq!(
            value(&style, TableKind::Polygon, &row, "way_area"),
            &ColumnValue::Real(1_825_350.0)
        );
        // Switched off by the style: no area, even when passed.
        let off =
            Style::parse("way building text polygon\nway way_area real delete\n", "s").unwrap();
        let row = row_values(&off, TableKind::Polygon, &input, Some(5.0));
        assert_eq!(row.columns, vec![ColumnValue::Text("yes".into())].into());
    }

    #[test]
    fn hstore_match_leaves_out_column_tags_and_z_order() {
        let style = style(HstoreMode::Match, &[]);
        let input = tags(&[
            ("building", "yes"),
            ("foo", "bar"),
            ("area:highway", "x"),
            ("z_order", "0"),
        ]);
        let row = row_values(&style, TableKind::Polygon, &input, Some(311.289_4));
        assert_eq!(
            row.tags,
            Some(tags(&[("foo", "bar"), ("area:highway", "x")]))
        );
    }

    #[test]
    fn hstore_all_has_every_tag_and_way_area() {
        let style = style(HstoreMode::All, &[]);
        let input = tags(&[("building", "yes"), ("foo", "bar"), ("z_order", "0")]);
        let row = row_values(&style, TableKind::Polygon, &input, Some(1_820_600.0));
        assert_eq!(
            row.tags,
            Some(tags(&[
                ("building", "yes"),
                ("foo", "bar"),
                ("way_area", "1.8206e+06")
            ]))
        );
        let point = row_values(
            &style,
            TableKind::Point,
            &tags(&[("z_order", "7"), ("name", "n")]),
            None,
        );
        assert_eq!(point.tags, Some(tags(&[("name", "n")])));
        assert_eq!(
            value(&style, TableKind::Point, &point, "z_order"),
            &ColumnValue::Int4(7)
        );
    }

    #[test]
    fn prefix_hstore_columns() {
        let style = style(HstoreMode::None, &["name:", "addr:"]);
        let input = tags(&[("name", "A"), ("name:de", "B"), ("name:fr", "C")]);
        let row = row_values(&style, TableKind::Point, &input, None);
        assert_eq!(
            row.hstore_columns,
            vec![Some(tags(&[("de", "B"), ("fr", "C")])), None]
        );
    }

    #[test]
    fn typed_columns() {
        let style = Style::parse(
            "node,way layer int4 linear\nnode,way height real linear\nway way_area real linear\n",
            "s",
        )
        .unwrap();
        let input = tags(&[("layer", "1;2"), ("height", "5 ft"), ("way_area", "oops")]);
        let row = row_values(&style, TableKind::Line, &input, None);
        assert_eq!(
            row.columns,
            vec![
                ColumnValue::Int4(1),
                ColumnValue::Real(1.524),
                ColumnValue::Null
            ]
            .into()
        );
    }
}
