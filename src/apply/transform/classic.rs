//! osm2pgsql's built-in tag transform (`c_tagtransform_t` in
//! `tagtransform-c.cpp`, `add_z_order`, `pgsql_process_relation`):
//! the style decides which tags survive and whether a way is an area;
//! z_order and the roads flag come from a fixed highway table.

use super::{Filtered, FilteredRelation, MemberTags, RelationKind, TagTransform, TransformError};
use crate::apply::style::{HstoreMode, KeyRule, Style, Z_ORDER};
use crate::osm::Tags;
use std::sync::Arc;

/// The classic transform over a style (which also carries the hstore
/// options).
#[derive(Debug, Clone)]
pub struct ClassicTransform {
    style: Arc<Style>,
    keep_coastlines: bool,
}

/// Result of the first filtering pass over an object's tags.
struct Prefiltered {
    tags: Tags,
    /// At least one tag keeps the object.
    keep: bool,
    /// A matched style entry has the polygon flag.
    polygon_flag: bool,
    /// The object had `natural=coastline` (forces an area).
    coastline: bool,
}

/// First value of `key`, as osmium's and osm2pgsql's tag lookups return it.
pub(crate) fn tag_value<'a>(tags: &'a Tags, key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// osm2pgsql's `value_to_bool`: only the opposite of the default is
/// recognised (`yes|true|1` when the default is false, `no|false|0` when
/// it is true).
fn value_to_bool(value: &str, default: bool) -> bool {
    if default {
        !matches!(value, "no" | "false" | "0")
    } else {
        matches!(value, "yes" | "true" | "1")
    }
}

fn add_tag_if_missing(tags: &mut Tags, key: &str, value: &str) {
    if tag_value(tags, key).is_none() {
        tags.push((key.to_string(), value.to_string()));
    }
}

/// C `strtol(s, NULL, 10)` then a cast to `int`: leading whitespace, sign,
/// digits; 0 when there are none; saturates at the 64-bit range.
fn c_strtol_int(value: &str) -> i32 {
    let trimmed = value.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let mut magnitude: i64 = 0;
    for d in digits.bytes().take_while(u8::is_ascii_digit) {
        magnitude = magnitude
            .saturating_mul(10)
            .saturating_add(i64::from(d - b'0'));
    }
    let long = if negative { -magnitude } else { magnitude };
    // The (int) cast keeps the low 32 bits.
    long as i32
}

/// Per-highway z_order offsets and roads flags (osm2pgsql's `add_z_order`,
/// `tagtransform-c.cpp`).
const HIGHWAY_LAYERS: &[(&str, i32, bool)] = &[
    ("proposed", 1, false),
    ("construction", 2, false),
    ("steps", 10, false),
    ("cycleway", 10, false),
    ("bridleway", 10, false),
    ("footway", 10, false),
    ("path", 10, false),
    ("track", 11, false),
    ("service", 15, false),
    ("tertiary_link", 24, false),
    ("secondary_link", 25, true),
    ("primary_link", 27, true),
    ("trunk_link", 28, true),
    ("motorway_link", 29, true),
    ("raceway", 30, false),
    ("pedestrian", 31, false),
    ("living_street", 32, false),
    ("road", 33, false),
    ("unclassified", 33, false),
    ("residential", 33, false),
    ("tertiary", 34, false),
    ("secondary", 36, true),
    ("primary", 37, true),
    ("trunk", 38, true),
    ("motorway", 39, true),
];

/// osm2pgsql's `add_z_order`: appends the `z_order` pseudo-tag computed
/// from the (already filtered) tags and returns the roads flag.
pub fn add_z_order(tags: &mut Tags) -> bool {
    let layer = tag_value(tags, "layer").map_or(0, c_strtol_int);
    let mut z_order = layer.wrapping_mul(100);
    let mut roads = false;
    if let Some(highway) = tag_value(tags, "highway") {
        if let Some(&(_, offset, is_road)) = HIGHWAY_LAYERS.iter().find(|(v, _, _)| *v == highway) {
            z_order = z_order.wrapping_add(offset);
            roads = is_road;
        }
    }
    if tag_value(tags, "railway").is_some_and(|v| !v.is_empty()) {
        z_order = z_order.wrapping_add(35);
        roads = true;
    }
    // Administrative boundaries are drawn at low zooms from the roads table.
    if tag_value(tags, "boundary") == Some("administrative") {
        roads = true;
    }
    if tag_value(tags, "bridge").is_some_and(|v| value_to_bool(v, false)) {
        z_order = z_order.wrapping_add(100);
    }
    if tag_value(tags, "tunnel").is_some_and(|v| value_to_bool(v, false)) {
        z_order = z_order.wrapping_sub(100);
    }
    // A plain push: an OSM tag named z_order, if kept, stays first and wins.
    tags.push((Z_ORDER.to_string(), z_order.to_string()));
    roads
}

impl ClassicTransform {
    /// The rules of `style`; `keep_coastlines` is osm2pgsql's
    /// `--keep-coastlines` (otherwise `natural=coastline` is dropped).
    pub fn new(style: Arc<Style>, keep_coastlines: bool) -> ClassicTransform {
        ClassicTransform {
            style,
            keep_coastlines,
        }
    }

    /// The style whose rules apply.
    pub fn style(&self) -> &Arc<Style> {
        &self.style
    }

    /// osm2pgsql's `check_key`: whether a tag survives, and whether it
    /// keeps the object.
    fn check_key(&self, key: &str, for_nodes: bool, keep: &mut bool, polygon: &mut bool) -> bool {
        match self.style.key_rule(key, for_nodes) {
            KeyRule::Delete => false,
            KeyRule::Matched(flags) => {
                *keep = true;
                *polygon |= flags.polygon;
                true
            }
            KeyRule::Unmatched => {
                let hstore = self.style.hstore();
                let in_hstore = hstore.mode != HstoreMode::None
                    || hstore
                        .columns
                        .iter()
                        .any(|prefix| key.starts_with(prefix.as_str()));
                if in_hstore && !hstore.match_only {
                    *keep = true;
                }
                in_hstore
            }
        }
    }

    /// osm2pgsql's `filter_tags` without the way-only parts.
    fn prefilter(&self, tags: &Tags, for_nodes: bool, is_relation: bool) -> Prefiltered {
        let mut result = Prefiltered {
            tags: Vec::with_capacity(tags.len()),
            keep: false,
            polygon_flag: false,
            coastline: false,
        };
        for (key, value) in tags {
            if is_relation && key == "type" {
                result.tags.push((key.clone(), value.clone()));
                continue;
            }
            if key == "natural" && value == "coastline" {
                result.coastline = true;
                // Coastlines are rendered from a shapefile instead.
                if !self.keep_coastlines {
                    continue;
                }
            }
            if self.check_key(key, for_nodes, &mut result.keep, &mut result.polygon_flag) {
                result.tags.push((key.clone(), value.clone()));
            }
        }
        result
    }
}

impl TagTransform for ClassicTransform {
    fn fork(&self) -> Option<Box<dyn TagTransform + Send>> {
        Some(Box::new(self.clone()))
    }

    fn node(&mut self, tags: &Tags) -> Result<Option<Filtered>, TransformError> {
        let filtered = self.prefilter(tags, true, false);
        Ok(filtered.keep.then_some(Filtered {
            tags: filtered.tags,
            polygon: false,
            roads: false,
        }))
    }

    fn way(&mut self, tags: &Tags) -> Result<Option<Filtered>, TransformError> {
        let mut filtered = self.prefilter(tags, false, false);
        if !filtered.keep {
            return Ok(None);
        }
        let polygon = if filtered.coastline {
            // Named islands drawn as coastline become polygons.
            add_tag_if_missing(&mut filtered.tags, "area", "yes");
            true
        } else {
            // The raw tags decide, as in osm2pgsql (area may not survive).
            match tag_value(tags, "area") {
                Some(area) => value_to_bool(area, filtered.polygon_flag),
                None => filtered.polygon_flag,
            }
        };
        let roads = add_z_order(&mut filtered.tags);
        Ok(Some(Filtered {
            tags: filtered.tags,
            polygon,
            roads,
        }))
    }

    fn relation_tags(&mut self, tags: &Tags) -> Result<Option<Tags>, TransformError> {
        let prefiltered = self.prefilter(tags, false, true);
        Ok(prefiltered.keep.then_some(prefiltered.tags))
    }

    fn relation_members(
        &mut self,
        relation_tags: &Tags,
        _members: &[MemberTags<'_>],
    ) -> Result<Option<FilteredRelation>, TransformError> {
        Ok(relation_member_tags(relation_tags))
    }
}

/// osm2pgsql's `filter_rel_member_tags` for the classic transform: the
/// relation's filtered tags minus `type`, route extras, kind, z_order.
fn relation_member_tags(relation_tags: &Tags) -> Option<FilteredRelation> {
    let relation_type = tag_value(relation_tags, "type")?;
    let is_route = relation_type == "route";
    let kind = match relation_type {
        "route" => RelationKind::Route,
        "boundary" => RelationKind::Boundary,
        "multipolygon" => RelationKind::Multipolygon,
        _ => return None,
    };
    let mut tags: Tags = Vec::with_capacity(relation_tags.len() + 4);
    for (key, value) in relation_tags {
        if is_route && key == "name" {
            add_tag_if_missing(&mut tags, "route_name", value);
        }
        if key != "type" {
            add_tag_if_missing(&mut tags, key, value);
        }
    }
    if tags.is_empty() {
        return None;
    }
    let kind = match kind {
        RelationKind::Route => {
            add_route_tags(relation_tags, &mut tags);
            RelationKind::Route
        }
        RelationKind::Multipolygon if tag_value(&tags, "boundary").is_some() => {
            RelationKind::Boundary
        }
        other => other,
    };
    let roads = add_z_order(&mut tags);
    Some(FilteredRelation { tags, kind, roads })
}

/// Cycle and hiking network columns of route relations (`lcn`, `lcn_ref`,
/// … `nwn_ref`) and `route_pref_color`.
fn add_route_tags(relation_tags: &Tags, tags: &mut Tags) {
    const NETWORKS: [&str; 6] = ["lcn", "rcn", "ncn", "lwn", "rwn", "nwn"];
    let network = tag_value(relation_tags, "network")
        .and_then(|network| NETWORKS.iter().find(|n| **n == network).copied());
    if let Some(network) = network {
        let state = tag_value(relation_tags, "state")
            .filter(|state| matches!(*state, "alternate" | "connection"))
            .unwrap_or("yes");
        add_tag_if_missing(tags, network, state);
    }
    let color = tag_value(relation_tags, "preferred_color")
        .filter(|color| matches!(*color, "0" | "1" | "2" | "3" | "4"))
        .unwrap_or("0");
    add_tag_if_missing(tags, "route_pref_color", color);
    if let (Some(network), Some(reference)) = (network, tag_value(relation_tags, "ref")) {
        add_tag_if_missing(tags, &format!("{network}_ref"), reference);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::style::HstoreOptions;
    use crate::osm::tags;

    fn classic(mode: HstoreMode, match_only: bool) -> ClassicTransform {
        let style = Style::default()
            .with_hstore(HstoreOptions {
                mode,
                match_only,
                columns: Vec::new(),
            })
            .unwrap();
        ClassicTransform::new(Arc::new(style), false)
    }

    fn default_transform() -> ClassicTransform {
        classic(HstoreMode::None, false)
    }

    fn z_order(filtered: &Filtered) -> i32 {
        tag_value(&filtered.tags, Z_ORDER).unwrap().parse().unwrap()
    }

    fn way(t: &mut ClassicTransform, pairs: &[(&str, &str)]) -> Option<Filtered> {
        t.way(&tags(pairs)).unwrap()
    }

    #[test]
    fn matched_unmatched_and_deleted_keys() {
        let mut t = default_transform();
        let node = t
            .node(&tags(&[
                ("amenity", "pub"),
                ("foo", "bar"),
                ("note", "x"),
                ("source:name", "y"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(node.tags, tags(&[("amenity", "pub")]));
        assert!(!node.polygon && !node.roads);
        // Nodes get no z_order pseudo-tag.
        assert!(tag_value(&node.tags, Z_ORDER).is_none());
        assert!(t
            .node(&tags(&[("foo", "bar"), ("created_by", "JOSM")]))
            .unwrap()
            .is_none());
        assert!(t.node(&tags(&[])).unwrap().is_none());
        // tracktype is a way column only.
        assert!(t.node(&tags(&[("tracktype", "grade1")])).unwrap().is_none());
        assert!(way(&mut t, &[("tracktype", "grade1")]).is_some());
        // capital is a node column only.
        assert!(way(&mut t, &[("capital", "yes")]).is_none());
    }

    #[test]
    fn polygon_flags_and_area_override() {
        let mut t = default_transform();
        assert!(way(&mut t, &[("building", "yes")]).unwrap().polygon);
        assert!(!way(&mut t, &[("highway", "residential")]).unwrap().polygon);
        // nocolumn entries keep the object and mark areas.
        let plaza = way(&mut t, &[("area:highway", "pedestrian")]).unwrap();
        assert!(plaza.polygon);
        assert_eq!(
            plaza.tags[0],
            ("area:highway".to_string(), "pedestrian".to_string())
        );
        for yes in ["yes", "true", "1"] {
            assert!(
                way(&mut t, &[("highway", "pedestrian"), ("area", yes)])
                    .unwrap()
                    .polygon
            );
        }
        // `area` is itself a polygon key of the default style: any value
        // but no/false/0 makes an area.
        assert!(
            way(&mut t, &[("highway", "pedestrian"), ("area", "Yes")])
                .unwrap()
                .polygon
        );
        let style = Style::parse(
            "way highway text linear
way area text linear
",
            "s",
        )
        .unwrap();
        let mut linear_area = ClassicTransform::new(Arc::new(style), false);
        assert!(
            !way(&mut linear_area, &[("highway", "x"), ("area", "Yes")])
                .unwrap()
                .polygon
        );
        assert!(
            way(&mut linear_area, &[("highway", "x"), ("area", "1")])
                .unwrap()
                .polygon
        );
        // The raw tag decides even where the area tag does not survive.
        let style = Style::parse(
            "way building text polygon
way area text delete
",
            "s",
        )
        .unwrap();
        let mut deleted_area = ClassicTransform::new(Arc::new(style), false);
        let f = way(&mut deleted_area, &[("building", "yes"), ("area", "no")]).unwrap();
        assert!(!f.polygon);
        assert_eq!(tag_value(&f.tags, "area"), None);
        for no in ["no", "false", "0"] {
            assert!(
                !way(&mut t, &[("building", "yes"), ("area", no)])
                    .unwrap()
                    .polygon
            );
        }
        assert!(
            way(&mut t, &[("building", "yes"), ("area", "maybe")])
                .unwrap()
                .polygon
        );
        // area alone is a polygon column.
        assert!(way(&mut t, &[("area", "yes")]).unwrap().polygon);
    }

    #[test]
    fn coastline() {
        let mut t = default_transform();
        assert!(way(&mut t, &[("natural", "coastline")]).is_none());
        let island = way(&mut t, &[("natural", "coastline"), ("name", "Isle")]).unwrap();
        assert!(island.polygon);
        assert_eq!(
            &island.tags[..2],
            &tags(&[("name", "Isle"), ("area", "yes")])[..]
        );
        let kept = way(&mut t, &[("natural", "coastline"), ("area", "no")]);
        // area=no is a column: the object survives, but is forced to polygon.
        let kept = kept.unwrap();
        assert!(kept.polygon);
        assert_eq!(tag_value(&kept.tags, "area"), Some("no"));
        let node = t
            .node(&tags(&[("natural", "coastline"), ("name", "x")]))
            .unwrap()
            .unwrap();
        assert_eq!(node.tags, tags(&[("name", "x")]));
        let mut keep = ClassicTransform::new(Arc::new(Style::default()), true);
        let coast = way(&mut keep, &[("natural", "coastline")]).unwrap();
        assert!(coast.polygon);
        assert_eq!(tag_value(&coast.tags, "natural"), Some("coastline"));
    }

    #[test]
    fn z_order_and_roads() {
        let mut t = default_transform();
        type Case<'a> = (&'a [(&'a str, &'a str)], i32, bool);
        let cases: &[Case] = &[
            (&[("highway", "motorway")], 39, true),
            (&[("highway", "motorway_link")], 29, true),
            (&[("highway", "secondary_link")], 25, true),
            (&[("highway", "tertiary_link")], 24, false),
            (&[("highway", "tertiary")], 34, false),
            (&[("highway", "residential")], 33, false),
            (&[("highway", "proposed")], 1, false),
            (&[("highway", "bus_stop")], 0, false),
            (
                &[("highway", "primary"), ("bridge", "yes"), ("layer", "1;2")],
                237,
                true,
            ),
            (&[("highway", "primary"), ("bridge", "viaduct")], 37, true),
            (
                &[("highway", "service"), ("tunnel", "true"), ("layer", "-1")],
                -185,
                false,
            ),
            (&[("highway", "path"), ("layer", "x")], 10, false),
            (&[("railway", "rail")], 35, true),
            (&[("railway", "abandoned"), ("tunnel", "1")], -65, true),
            (&[("highway", "residential"), ("railway", "tram")], 68, true),
            (&[("boundary", "administrative")], 0, true),
            (&[("boundary", "national_park")], 0, false),
            (&[("building", "yes"), ("layer", " +3 ")], 300, false),
        ];
        for (input, z, roads) in cases {
            let filtered = way(&mut t, input).unwrap();
            assert_eq!(
                (z_order(&filtered), filtered.roads),
                (*z, *roads),
                "{input:?}"
            );
        }
    }

    #[test]
    fn z_order_uses_surviving_tags_only() {
        // Without a bridge column the bridge tag is gone before z_order.
        let style =
            Style::parse("way highway text linear\nway z_order int4 linear\n", "s").unwrap();
        let mut t = ClassicTransform::new(Arc::new(style), false);
        let f = way(&mut t, &[("highway", "motorway"), ("bridge", "yes")]).unwrap();
        assert_eq!(z_order(&f), 39);
        assert_eq!(f.tags, tags(&[("highway", "motorway"), ("z_order", "39")]));
    }

    #[test]
    fn hstore_modes() {
        let raw = tags(&[("foo", "bar"), ("note", "x")]);
        assert!(default_transform().node(&raw).unwrap().is_none());
        let kept = classic(HstoreMode::Match, false)
            .node(&raw)
            .unwrap()
            .unwrap();
        assert_eq!(kept.tags, tags(&[("foo", "bar")]));
        assert!(classic(HstoreMode::All, false)
            .node(&raw)
            .unwrap()
            .is_some());
        assert!(classic(HstoreMode::Match, true)
            .node(&raw)
            .unwrap()
            .is_none());
        let with_column = tags(&[("foo", "bar"), ("name", "n")]);
        let kept = classic(HstoreMode::Match, true)
            .node(&with_column)
            .unwrap()
            .unwrap();
        assert_eq!(kept.tags, with_column);
        // -z prefixes keep tags and objects without -k.
        let style = Style::default()
            .with_hstore(HstoreOptions {
                mode: HstoreMode::None,
                match_only: false,
                columns: vec!["name:".to_string()],
            })
            .unwrap();
        let mut t = ClassicTransform::new(Arc::new(style), false);
        let f = t
            .node(&tags(&[("name:de", "x"), ("foo", "y")]))
            .unwrap()
            .unwrap();
        assert_eq!(f.tags, tags(&[("name:de", "x")]));
    }

    fn relation(t: &mut ClassicTransform, pairs: &[(&str, &str)]) -> Option<FilteredRelation> {
        let way_tags = tags(&[("highway", "primary")]);
        let members = [MemberTags {
            tags: &way_tags,
            role: "outer",
        }];
        t.relation(&tags(pairs), &members).unwrap()
    }

    #[test]
    fn relation_types() {
        let mut t = default_transform();
        assert!(relation(&mut t, &[("type", "site"), ("name", "x")]).is_none());
        assert!(relation(&mut t, &[("name", "x")]).is_none());
        assert!(relation(&mut t, &[("type", "multipolygon")]).is_none());
        // Unknown tags do not keep a relation without hstore.
        assert!(relation(&mut t, &[("type", "multipolygon"), ("foo", "bar")]).is_none());
        let mp = relation(&mut t, &[("type", "multipolygon"), ("landuse", "forest")]).unwrap();
        assert_eq!(mp.kind, RelationKind::Multipolygon);
        assert!(!mp.kind.writes_lines() && mp.kind.writes_polygons());
        assert_eq!(mp.tags, tags(&[("landuse", "forest"), ("z_order", "0")]));
        let admin = relation(
            &mut t,
            &[
                ("type", "multipolygon"),
                ("boundary", "administrative"),
                ("admin_level", "8"),
            ],
        )
        .unwrap();
        assert_eq!(admin.kind, RelationKind::Boundary);
        assert!(admin.roads && admin.kind.writes_lines() && admin.kind.writes_polygons());
        let park = relation(
            &mut t,
            &[("type", "boundary"), ("boundary", "national_park")],
        )
        .unwrap();
        assert_eq!(park.kind, RelationKind::Boundary);
        assert!(!park.roads);
        // No member ways: nothing to build.
        assert!(t
            .relation(
                &tags(&[("type", "multipolygon"), ("landuse", "forest")]),
                &[]
            )
            .unwrap()
            .is_none());
        // Member tags are not used, whatever they are.
        let outer_tags = tags(&[("building", "yes")]);
        let members = [MemberTags {
            tags: &outer_tags,
            role: "outer",
        }];
        assert!(t
            .relation(&tags(&[("type", "multipolygon")]), &members)
            .unwrap()
            .is_none());
    }

    #[test]
    fn route_relations() {
        let mut t = classic(HstoreMode::Match, false);
        let route = relation(
            &mut t,
            &[
                ("type", "route"),
                ("route", "bicycle"),
                ("network", "rcn"),
                ("ref", "R1"),
                ("name", "Rt"),
                ("state", "alternate"),
                ("preferred_color", "3"),
                ("foo", "bar"),
            ],
        )
        .unwrap();
        assert_eq!(route.kind, RelationKind::Route);
        assert!(route.kind.writes_lines() && !route.kind.writes_polygons());
        assert!(!route.roads);
        assert_eq!(
            route.tags,
            tags(&[
                ("route", "bicycle"),
                ("network", "rcn"),
                ("ref", "R1"),
                ("route_name", "Rt"),
                ("name", "Rt"),
                ("state", "alternate"),
                ("preferred_color", "3"),
                ("foo", "bar"),
                ("rcn", "alternate"),
                ("route_pref_color", "3"),
                ("rcn_ref", "R1"),
                ("z_order", "0"),
            ])
        );
        let mut plain = default_transform();
        let hiking = relation(
            &mut plain,
            &[
                ("type", "route"),
                ("route", "hiking"),
                ("network", "nwn"),
                ("preferred_color", "7"),
            ],
        )
        .unwrap();
        assert_eq!(
            hiking.tags,
            // network and preferred_color have no column: they are gone
            // before the route extras are derived.
            tags(&[
                ("route", "hiking"),
                ("route_pref_color", "0"),
                ("z_order", "0")
            ])
        );
        let train = relation(
            &mut plain,
            &[("type", "route"), ("route", "train"), ("railway", "rail")],
        )
        .unwrap();
        assert!(train.roads);
        assert_eq!(tag_value(&train.tags, Z_ORDER), Some("35"));
    }

    #[test]
    fn strtol() {
        assert_eq!(c_strtol_int("1;2"), 1);
        assert_eq!(c_strtol_int(" -2"), -2);
        assert_eq!(c_strtol_int("x"), 0);
        assert_eq!(c_strtol_int("+5a"), 5);
        assert_eq!(c_strtol_int("99999999999"), 99_999_999_999_i64 as i32);
    }
}
