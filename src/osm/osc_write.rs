//! Writing OsmChange XML: used to save merged batches and by the fixture
//! feed generator. The output is what the OSM API and osmdbt publish: one
//! `<create>`/`<modify>`/`<delete>` block per run of equal actions.

use super::changeset::{Action, Change};
use crate::osm::{Meta, Object};
use std::io::{self, Write};

/// Writes `changes` as an OsmChange document, in the order given.
pub fn write_osc<'a, W: Write>(
    out: &mut W,
    generator: &str,
    changes: impl IntoIterator<Item = &'a Change>,
) -> io::Result<()> {
    writeln!(out, "<?xml version='1.0' encoding='UTF-8'?>")?;
    writeln!(
        out,
        "<osmChange version=\"0.6\" generator=\"{}\">",
        escape(generator)
    )?;
    let mut open: Option<Action> = None;
    for change in changes {
        if open != Some(change.action) {
            if let Some(action) = open {
                writeln!(out, "  </{}>", action.as_str())?;
            }
            writeln!(out, "  <{}>", change.action.as_str())?;
            open = Some(change.action);
        }
        write_object(out, &change.object)?;
    }
    if let Some(action) = open {
        writeln!(out, "  </{}>", action.as_str())?;
    }
    writeln!(out, "</osmChange>")
}

/// Writes `objects` as a plain OSM XML document (`.osm`), in the order
/// given (callers pass nodes, ways, relations, each by id, as importers
/// require).
pub fn write_osm<'a, W: Write>(
    out: &mut W,
    generator: &str,
    objects: impl IntoIterator<Item = &'a Object>,
) -> io::Result<()> {
    writeln!(out, "<?xml version='1.0' encoding='UTF-8'?>")?;
    writeln!(
        out,
        "<osm version=\"0.6\" generator=\"{}\">",
        escape(generator)
    )?;
    for object in objects {
        write_object(out, object)?;
    }
    writeln!(out, "</osm>")
}

fn write_object<W: Write>(out: &mut W, object: &Object) -> io::Result<()> {
    let id = object.object_id();
    write!(out, "    <{} id=\"{}\"", id.kind, id.id)?;
    write_meta(out, object.meta())?;
    if let Object::Node(node) = object {
        if let Some(loc) = node.location {
            write!(out, " lat=\"{:.7}\" lon=\"{:.7}\"", loc.lat, loc.lon)?;
        }
    }
    let has_children = !object.tags().is_empty()
        || match object {
            Object::Node(_) => false,
            Object::Way(w) => !w.nodes.is_empty(),
            Object::Relation(r) => !r.members.is_empty(),
        };
    if !has_children {
        return writeln!(out, "/>");
    }
    writeln!(out, ">")?;
    match object {
        Object::Node(_) => {}
        Object::Way(way) => {
            for node_id in &way.nodes {
                writeln!(out, "      <nd ref=\"{node_id}\"/>")?;
            }
        }
        Object::Relation(rel) => {
            for m in &rel.members {
                writeln!(
                    out,
                    "      <member type=\"{}\" ref=\"{}\" role=\"{}\"/>",
                    m.kind,
                    m.id,
                    escape(&m.role)
                )?;
            }
        }
    }
    for (k, v) in object.tags() {
        writeln!(out, "      <tag k=\"{}\" v=\"{}\"/>", escape(k), escape(v))?;
    }
    writeln!(out, "    </{}>", id.kind)
}

fn write_meta<W: Write>(out: &mut W, meta: &Meta) -> io::Result<()> {
    if let Some(v) = meta.version {
        write!(out, " version=\"{v}\"")?;
    }
    if let Some(ts) = meta.timestamp {
        write!(out, " timestamp=\"{}\"", ts.format("%Y-%m-%dT%H:%M:%SZ"))?;
    }
    if let Some(uid) = meta.uid {
        write!(out, " uid=\"{uid}\"")?;
    }
    if let Some(user) = &meta.user {
        write!(out, " user=\"{}\"", escape(user))?;
    }
    if let Some(cs) = meta.changeset {
        write!(out, " changeset=\"{cs}\"")?;
    }
    Ok(())
}

/// XML attribute escaping, including the whitespace characters an attribute
/// value would otherwise lose to normalisation.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'' | b'\n' | b'\r' | b'\t'))
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}
