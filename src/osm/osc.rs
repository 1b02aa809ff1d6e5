//! Streaming OsmChange (OSC) XML parser.
//!
//! Diffs are read event by event with quick-xml into one reused buffer; no
//! document tree is built. Numbers, coordinates and timestamps are parsed
//! straight from the attribute bytes, so the only allocations per object are
//! its strings (user, tag keys and values, member roles) and its vectors.
//!
//! A diff that is not a complete, well-formed OsmChange document is an error:
//! in particular a document that ends before `</osmChange>` (a truncated
//! download) is rejected rather than applied in part. Errors name the source,
//! the line in the uncompressed XML and, when known, the object.

use super::changeset::{Action, Change, ChangeSet};
use crate::osm::{Location, Member, Meta, Node, Object, ObjectId, ObjectType, Relation, Way};
use chrono::{DateTime, Utc};
use quick_xml::errors::SyntaxError;
use quick_xml::events::{BytesStart, Event};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

/// An OSC diff that could not be read, with where and, if known, which object.
#[derive(Debug)]
pub struct OscError {
    /// File name or URL the diff came from.
    pub source_name: String,
    /// 1-based line in the uncompressed XML; 0 when no line was read yet
    /// (e.g. the file could not be opened).
    pub line: usize,
    /// The object being read when the problem was found, if its id is known.
    pub object: Option<ObjectId>,
    /// What went wrong.
    pub kind: OscErrorKind,
}

impl fmt::Display for OscError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.source_name, self.line)?;
        if let Some(object) = self.object {
            write!(f, "{object}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for OscError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            OscErrorKind::Io(error) => Some(error),
            _ => None,
        }
    }
}

/// What went wrong; the Display text is the message after `file:line: object: `.
#[derive(Debug, thiserror::Error)]
pub enum OscErrorKind {
    /// The XML parser's message.
    #[error("XML syntax error: {0}")]
    Xml(String),
    /// Reading or decompressing failed.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// The document ends before its root element closes.
    #[error("unexpected end of file before </osmChange> (truncated diff?)")]
    UnexpectedEof,
    /// A required attribute is absent.
    #[error("<{element}> without {attribute}")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute it lacks (`id`, `lat`, `ref`, …).
        attribute: &'static str,
    },
    /// A numeric attribute that does not parse.
    #[error("invalid number {attribute}=\"{value}\" in <{element}>")]
    InvalidNumber {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
        /// Its text.
        value: String,
    },
    /// A `timestamp` attribute that is not ISO 8601 UTC.
    #[error("invalid timestamp \"{0}\" (expected YYYY-MM-DDTHH:MM:SSZ)")]
    InvalidTimestamp(String),
    /// An object element (named) directly under `<osmChange>`.
    #[error("<{0}> outside a <create>, <modify> or <delete> block")]
    OutsideAction(&'static str),
    /// A character XML 1.0 forbids (its `Char` production): a C0 control
    /// other than tab, LF and CR, written raw or as a character reference.
    #[error("character U+{0:04X} is not allowed in XML 1.0")]
    ForbiddenCharacter(u32),
    /// A `<member type>` other than node, way or relation.
    #[error("<member> with unknown type \"{0}\"")]
    UnknownMemberType(String),
    /// An element where the format has no place for it.
    #[error("unexpected <{element}> {context}")]
    UnexpectedElement {
        /// The element's name.
        element: String,
        /// Where it was (`inside another action block`, …).
        context: &'static str,
    },
}

/// Reads changes from OSC XML one at a time, in file order.
///
/// Yields each object version as a [`Change`]; after the first error it
/// yields nothing more. The whole input is read to its end, so errors that
/// only show there (a bad gzip checksum) are reported too.
pub struct OscReader<R: BufRead> {
    xml: quick_xml::Reader<LineCounter<R>>,
    buf: Vec<u8>,
    source_name: String,
    position: Position,
    /// Depth inside elements being ignored (unknown ones, or the content of
    /// a `<tag>` written with an end tag).
    skip_depth: usize,
    /// The object whose children are being read; its children accumulate in
    /// the scratch vectors below so each object gets exactly-sized vectors.
    pending: Option<ObjectHeader>,
    tags: Vec<(String, String)>,
    way_nodes: Vec<i64>,
    members: Vec<Member>,
    finished: bool,
    document: Document,
}

/// Which XML document is read: a diff, or a plain OSM file whose objects
/// sit directly under `<osm>` (read as creates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Document {
    OsmChange,
    Osm,
}

impl Document {
    fn root(self) -> &'static str {
        match self {
            Document::OsmChange => "osmChange",
            Document::Osm => "osm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Position {
    BeforeRoot,
    InRoot,
    InAction(Action),
    InObject(Action),
    AfterRoot,
}

/// An object's attributes, read from its start tag.
struct ObjectHeader {
    kind: ObjectType,
    id: i64,
    meta: Meta,
    location: Option<Location>,
}

impl ObjectHeader {
    fn object_id(&self) -> ObjectId {
        ObjectId {
            kind: self.kind,
            id: self.id,
        }
    }

    fn into_object(
        self,
        tags: Vec<(String, String)>,
        nodes: Vec<i64>,
        members: Vec<Member>,
    ) -> Object {
        let ObjectHeader {
            kind,
            id,
            meta,
            location,
        } = self;
        match kind {
            ObjectType::Node => Object::Node(Node {
                id,
                meta,
                location,
                tags,
            }),
            ObjectType::Way => Object::Way(Way {
                id,
                meta,
                nodes,
                tags,
            }),
            ObjectType::Relation => Object::Relation(Relation {
                id,
                meta,
                members,
                tags,
            }),
        }
    }
}

impl<R: BufRead> OscReader<R> {
    /// `source_name` (a file name or URL) prefixes every error message.
    pub fn new(reader: R, source_name: impl Into<String>) -> Self {
        let mut xml = quick_xml::Reader::from_reader(LineCounter {
            inner: reader,
            newlines: 0,
            forbidden: None,
        });
        xml.config_mut().trim_text(true);
        OscReader {
            xml,
            buf: Vec::with_capacity(4096),
            source_name: source_name.into(),
            position: Position::BeforeRoot,
            skip_depth: 0,
            pending: None,
            tags: Vec::new(),
            way_nodes: Vec::new(),
            members: Vec::new(),
            finished: false,
            document: Document::OsmChange,
        }
    }

    /// A reader for a plain OSM XML file (`.osm`): objects directly under
    /// `<osm>`, each yielded as a [`Action::Create`].
    pub fn new_osm_file(reader: R, source_name: impl Into<String>) -> Self {
        OscReader {
            document: Document::Osm,
            ..OscReader::new(reader, source_name)
        }
    }

    /// The 1-based line the reader has reached in the uncompressed XML.
    pub fn line(&self) -> usize {
        self.xml.get_ref().newlines + 1
    }

    fn read_change(&mut self, buf: &mut Vec<u8>) -> Result<Option<Change>, OscError> {
        loop {
            buf.clear();
            let event = self.xml.read_event_into(buf);
            // quick-xml does not check characters, so a raw control byte
            // seen while reading this event fails it, like libxml2 does.
            if let Some((line, byte)) = self.xml.get_ref().forbidden {
                let object = self.pending.as_ref().map(ObjectHeader::object_id);
                let kind = OscErrorKind::ForbiddenCharacter(u32::from(byte));
                return Err(self.error(line, object, kind));
            }
            let event = match event {
                Ok(event) => event,
                Err(error) => return Err(self.xml_error(error)),
            };
            let change = match event {
                Event::Start(element) => {
                    self.check_char_refs(&element)?;
                    self.start_element(&element, false)?
                }
                Event::Empty(element) => {
                    self.check_char_refs(&element)?;
                    self.start_element(&element, true)?
                }
                // quick-xml hands references in text content out as events
                // of their own.
                Event::GeneralRef(reference) => {
                    if let Some(code) = forbidden_char_ref_code(&reference) {
                        return Err(self.forbidden_here(code));
                    }
                    None
                }
                Event::End(_) => self.end_element(),
                Event::Eof if self.position == Position::AfterRoot => return Ok(None),
                Event::Eof => {
                    let object = self.pending.as_ref().map(ObjectHeader::object_id);
                    return Err(self.error(self.line(), object, OscErrorKind::UnexpectedEof));
                }
                // Text, comments, declarations and the like carry no data.
                _ => None,
            };
            if change.is_some() {
                return Ok(change);
            }
        }
    }

    fn start_element(
        &mut self,
        element: &BytesStart,
        empty: bool,
    ) -> Result<Option<Change>, OscError> {
        if self.skip_depth > 0 {
            if !empty {
                self.skip_depth += 1;
            }
            return Ok(None);
        }
        let name = element.name();
        let name = name.as_ref();
        match self.position {
            Position::InObject(_) => {
                self.read_child(element)?;
                if !empty {
                    self.skip_depth = 1;
                }
            }
            Position::InAction(action) => {
                if let Some(kind) = object_type(name) {
                    let header = self.read_header(kind, action, element)?;
                    if empty {
                        let object = header.into_object(Vec::new(), Vec::new(), Vec::new());
                        return Ok(Some(Change { action, object }));
                    }
                    self.pending = Some(header);
                    self.position = Position::InObject(action);
                } else if action_of(name).is_some() {
                    return Err(self.unexpected(element, "inside another action block"));
                } else if !empty {
                    self.skip_depth = 1;
                }
            }
            Position::InRoot if self.document == Document::Osm => {
                if let Some(kind) = object_type(name) {
                    let header = self.read_header(kind, Action::Create, element)?;
                    if empty {
                        let object = header.into_object(Vec::new(), Vec::new(), Vec::new());
                        return Ok(Some(Change {
                            action: Action::Create,
                            object,
                        }));
                    }
                    self.pending = Some(header);
                    self.position = Position::InObject(Action::Create);
                } else if !empty {
                    self.skip_depth = 1;
                }
            }
            Position::InRoot => {
                if let Some(action) = action_of(name) {
                    if !empty {
                        self.position = Position::InAction(action);
                    }
                } else if let Some(kind) = object_type(name) {
                    let object = find_id(element).map(|id| ObjectId { kind, id });
                    let kind = OscErrorKind::OutsideAction(kind.as_str());
                    return Err(self.error(self.line_of(element), object, kind));
                } else if !empty {
                    self.skip_depth = 1;
                }
            }
            Position::BeforeRoot => {
                if name != self.document.root().as_bytes() {
                    let expected = match self.document {
                        Document::OsmChange => "where <osmChange> was expected",
                        Document::Osm => "where <osm> was expected",
                    };
                    return Err(self.unexpected(element, expected));
                }
                self.position = if empty {
                    Position::AfterRoot
                } else {
                    Position::InRoot
                };
            }
            Position::AfterRoot => {
                let after = match self.document {
                    Document::OsmChange => "after </osmChange>",
                    Document::Osm => "after </osm>",
                };
                return Err(self.unexpected(element, after));
            }
        }
        Ok(None)
    }

    fn end_element(&mut self) -> Option<Change> {
        if self.skip_depth > 0 {
            self.skip_depth -= 1;
            return None;
        }
        // quick-xml has checked that end tags match their start tags, so the
        // position alone says which element closes.
        match self.position {
            Position::InObject(action) => {
                self.position = match self.document {
                    Document::OsmChange => Position::InAction(action),
                    Document::Osm => Position::InRoot,
                };
                let header = self.pending.take()?;
                let tags = self.tags.drain(..).collect();
                let nodes = self.way_nodes.as_slice().to_vec();
                self.way_nodes.clear();
                let members = self.members.drain(..).collect();
                let object = header.into_object(tags, nodes, members);
                return Some(Change { action, object });
            }
            Position::InAction(_) => self.position = Position::InRoot,
            Position::InRoot => self.position = Position::AfterRoot,
            Position::BeforeRoot | Position::AfterRoot => {}
        }
        None
    }

    fn read_header(
        &self,
        kind: ObjectType,
        action: Action,
        element: &BytesStart,
    ) -> Result<ObjectHeader, OscError> {
        let name = kind.as_str();
        let mut id = None;
        let mut meta = Meta::default();
        let mut lat = None;
        let mut lon = None;
        for attribute in element.attributes().with_checks(false) {
            let attribute = match attribute {
                Ok(attribute) => attribute,
                Err(error) => return Err(self.object_error(kind, element, xml_kind(error.into()))),
            };
            let value = &*attribute.value;
            let result = match attribute.key.as_ref() {
                b"id" => integer(name, "id", value).map(|v| id = Some(v)),
                b"version" => integer(name, "version", value).map(|v| meta.version = Some(v)),
                b"changeset" => integer(name, "changeset", value).map(|v| meta.changeset = Some(v)),
                b"uid" => integer(name, "uid", value).map(|v| meta.uid = Some(v)),
                b"user" => text("user", value).map(|v| meta.user = Some(v)),
                b"timestamp" => timestamp(value).map(|v| meta.timestamp = Some(v)),
                b"lat" if kind == ObjectType::Node => {
                    coordinate(name, "lat", value, 90.0).map(|v| lat = Some(v))
                }
                b"lon" if kind == ObjectType::Node => {
                    coordinate(name, "lon", value, 180.0).map(|v| lon = Some(v))
                }
                _ => Ok(()),
            };
            if let Err(error) = result {
                return Err(self.object_error(kind, element, error));
            }
        }
        let Some(id) = id else {
            let missing = OscErrorKind::MissingAttribute {
                element: name,
                attribute: "id",
            };
            return Err(self.error(self.line_of(element), None, missing));
        };
        let location = match (lat, lon) {
            (Some(lat), Some(lon)) => Some(Location { lon, lat }),
            // Deleted nodes need no position, and some diffs leave it out.
            (None, None) if kind != ObjectType::Node || action == Action::Delete => None,
            (None, _) => return Err(self.object_error(kind, element, missing(name, "lat"))),
            (_, None) => return Err(self.object_error(kind, element, missing(name, "lon"))),
        };
        Ok(ObjectHeader {
            kind,
            id,
            meta,
            location,
        })
    }

    /// Reads a `<tag>`, `<nd>` or `<member>` into the pending object; other
    /// children are ignored.
    fn read_child(&mut self, element: &BytesStart) -> Result<(), OscError> {
        let Some(kind) = self.pending.as_ref().map(|header| header.kind) else {
            return Ok(());
        };
        let result = match element.name().as_ref() {
            b"tag" => self.read_tag(element),
            b"nd" if kind == ObjectType::Way => self.read_way_node(element),
            b"member" if kind == ObjectType::Relation => self.read_member(element),
            _ => Ok(()),
        };
        result.map_err(|error| {
            let object = self.pending.as_ref().map(ObjectHeader::object_id);
            self.error(self.line_of(element), object, error)
        })
    }

    fn read_tag(&mut self, element: &BytesStart) -> Result<(), OscErrorKind> {
        let mut key = None;
        let mut value = None;
        for attribute in element.attributes().with_checks(false) {
            let attribute = attribute.map_err(|error| xml_kind(error.into()))?;
            match attribute.key.as_ref() {
                b"k" => key = Some(text("k", &attribute.value)?),
                b"v" => value = Some(text("v", &attribute.value)?),
                _ => {}
            }
        }
        let key = key.ok_or(missing("tag", "k"))?;
        let value = value.ok_or(missing("tag", "v"))?;
        self.tags.push((key, value));
        Ok(())
    }

    fn read_way_node(&mut self, element: &BytesStart) -> Result<(), OscErrorKind> {
        for attribute in element.attributes().with_checks(false) {
            let attribute = attribute.map_err(|error| xml_kind(error.into()))?;
            if attribute.key.as_ref() == b"ref" {
                self.way_nodes.push(integer("nd", "ref", &attribute.value)?);
                return Ok(());
            }
        }
        Err(missing("nd", "ref"))
    }

    fn read_member(&mut self, element: &BytesStart) -> Result<(), OscErrorKind> {
        let mut kind = None;
        let mut id = None;
        let mut role = None;
        for attribute in element.attributes().with_checks(false) {
            let attribute = attribute.map_err(|error| xml_kind(error.into()))?;
            let value = &*attribute.value;
            match attribute.key.as_ref() {
                b"type" => {
                    kind = Some(object_type(value).ok_or_else(|| {
                        OscErrorKind::UnknownMemberType(String::from_utf8_lossy(value).into_owned())
                    })?)
                }
                b"ref" => id = Some(integer("member", "ref", value)?),
                b"role" => role = Some(text("role", value)?),
                _ => {}
            }
        }
        self.members.push(Member {
            kind: kind.ok_or(missing("member", "type"))?,
            id: id.ok_or(missing("member", "ref"))?,
            role: role.unwrap_or_default(),
        });
        Ok(())
    }

    fn error(&self, line: usize, object: Option<ObjectId>, kind: OscErrorKind) -> OscError {
        OscError {
            source_name: self.source_name.clone(),
            line,
            object,
            kind,
        }
    }

    /// An error in an object's own start tag, naming the object if its id
    /// can be read at all.
    fn object_error(
        &self,
        kind: ObjectType,
        element: &BytesStart,
        error: OscErrorKind,
    ) -> OscError {
        let object = find_id(element).map(|id| ObjectId { kind, id });
        self.error(self.line_of(element), object, error)
    }

    fn unexpected(&self, element: &BytesStart, context: &'static str) -> OscError {
        let kind = OscErrorKind::UnexpectedElement {
            element: String::from_utf8_lossy(element.name().as_ref()).into_owned(),
            context,
        };
        self.error(self.line_of(element), None, kind)
    }

    fn xml_error(&self, error: quick_xml::Error) -> OscError {
        let object = self.pending.as_ref().map(ObjectHeader::object_id);
        self.error(self.line(), object, xml_kind(error))
    }

    /// Character references in a tag (its attribute values) must name
    /// characters XML allows; quick-xml's unescape only refuses `&#0;`.
    /// Most tags have no `&` at all, which one memchr finds out.
    fn check_char_refs(&self, element: &BytesStart) -> Result<(), OscError> {
        let bytes: &[u8] = element.as_ref();
        if !bytes.contains(&b'&') {
            return Ok(());
        }
        match forbidden_char_ref(bytes) {
            None => Ok(()),
            Some((offset, code)) => {
                let line = self.line_of(element) + count_newlines(&bytes[..offset]);
                let object = self
                    .pending
                    .as_ref()
                    .map(ObjectHeader::object_id)
                    .or_else(|| {
                        let kind = object_type(element.name().as_ref())?;
                        find_id(element).map(|id| ObjectId { kind, id })
                    });
                Err(self.error(line, object, OscErrorKind::ForbiddenCharacter(code)))
            }
        }
    }

    fn forbidden_here(&self, code: u32) -> OscError {
        let object = self.pending.as_ref().map(ObjectHeader::object_id);
        self.error(self.line(), object, OscErrorKind::ForbiddenCharacter(code))
    }

    /// The line an element starts on: the reader has consumed up to the
    /// element's `>`, so step back over the newlines inside the tag.
    fn line_of(&self, element: &BytesStart) -> usize {
        self.line() - count_newlines(element.as_ref())
    }
}

impl<R: BufRead> Iterator for OscReader<R> {
    type Item = Result<Change, OscError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        // The buffer is moved out so events borrowing it can coexist with
        // `&mut self` calls.
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.read_change(&mut buf);
        self.buf = buf;
        match result {
            Ok(Some(change)) => Some(Ok(change)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(error) => {
                self.finished = true;
                Some(Err(error))
            }
        }
    }
}

/// Parses a whole OSC document into a change set (newest version per object).
pub fn parse_osc<R: BufRead>(reader: R, source_name: &str) -> Result<ChangeSet, OscError> {
    OscReader::new(reader, source_name).collect()
}

/// Parses a gzip-compressed OSC document, as replication servers publish them.
/// Concatenated gzip members are read as one stream.
pub fn parse_osc_gz(bytes: &[u8], source_name: &str) -> Result<ChangeSet, OscError> {
    let decoder = flate2::bufread::MultiGzDecoder::new(bytes);
    parse_osc(BufReader::with_capacity(64 * 1024, decoder), source_name)
}

/// Reads an OSC file, gzip-compressed or not; compression is recognised by
/// the gzip magic bytes, whatever the file is called.
pub fn read_osc_file(path: &Path) -> Result<ChangeSet, OscError> {
    let source_name = path.display().to_string();
    let open_error = |error: io::Error| OscError {
        source_name: source_name.clone(),
        line: 0,
        object: None,
        kind: OscErrorKind::Io(error),
    };
    let mut file = BufReader::with_capacity(64 * 1024, File::open(path).map_err(open_error)?);
    if starts_with_gzip_magic(&mut file).map_err(open_error)? {
        let decoder = flate2::bufread::MultiGzDecoder::new(file);
        parse_osc(BufReader::with_capacity(64 * 1024, decoder), &source_name)
    } else {
        parse_osc(file, &source_name)
    }
}

fn starts_with_gzip_magic<R: BufRead>(reader: &mut R) -> io::Result<bool> {
    const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
    // A regular file fills the buffer completely unless it is shorter than
    // two bytes, and then it is neither gzip nor OSC.
    Ok(reader.fill_buf()?.starts_with(&GZIP_MAGIC))
}

/// Passes a BufRead through, counting the newlines in every consumed byte so
/// errors can name a line, and noting the first control character XML 1.0
/// forbids (C0 other than tab, LF, CR) in the same pass over the bytes.
struct LineCounter<R> {
    inner: R,
    newlines: usize,
    /// Line and value of the first forbidden byte consumed.
    forbidden: Option<(usize, u8)>,
}

impl<R: BufRead> Read for LineCounter<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.inner.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineCounter<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if amount > 0 {
            // Consuming bytes means fill_buf handed them out and they are
            // still buffered, so asking again does no I/O and cannot fail.
            if let Ok(buffered) = self.inner.fill_buf() {
                let consumed = &buffered[..amount.min(buffered.len())];
                let (newlines, forbidden) = scan_bytes(consumed);
                if forbidden && self.forbidden.is_none() {
                    let at = consumed
                        .iter()
                        .position(|&b| is_forbidden_byte(b))
                        .unwrap_or(0);
                    let line = self.newlines + count_newlines(&consumed[..at]) + 1;
                    self.forbidden = Some((line, consumed[at]));
                }
                self.newlines += newlines;
            }
        }
        self.inner.consume(amount);
    }
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Newlines in `bytes`, and whether any byte is a forbidden control. One
/// branch-free loop the compiler vectorises, so the check costs next to
/// nothing on top of the line count every consumed byte already gets.
fn scan_bytes(bytes: &[u8]) -> (usize, bool) {
    let mut newlines = 0usize;
    let mut forbidden = false;
    for &b in bytes {
        newlines += usize::from(b == b'\n');
        forbidden |= is_forbidden_byte(b);
    }
    (newlines, forbidden)
}

/// A C0 control byte XML 1.0's `Char` production leaves out. (In UTF-8 no
/// byte of a multi-byte character is below 0x80, so bytes suffice.)
#[inline(always)]
fn is_forbidden_byte(b: u8) -> bool {
    (b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r')
}

/// XML 1.0's `Char` production.
fn is_xml_char(code: u32) -> bool {
    matches!(code, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// The first character reference (`&#N;` or `&#xH;`) in `bytes` that names
/// a character XML forbids, with its byte offset. References that do not
/// parse as numbers are left to the unescaper, which reports them.
fn forbidden_char_ref(bytes: &[u8]) -> Option<(usize, u32)> {
    let mut from = 0;
    while let Some(found) = bytes[from..].iter().position(|&b| b == b'&') {
        let at = from + found;
        let rest = &bytes[at + 1..];
        let end = rest.iter().position(|&b| b == b';')?;
        if let Some(code) = forbidden_char_ref_code(&rest[..end]) {
            return Some((at, code));
        }
        from = at + 1;
    }
    None
}

/// For the name of a reference (what is between `&` and `;`): the code it
/// names if it is a character reference to a forbidden character.
fn forbidden_char_ref_code(name: &[u8]) -> Option<u32> {
    let number = name.strip_prefix(b"#")?;
    let (digits, radix) = match number.strip_prefix(b"x") {
        Some(hex) => (hex, 16),
        None => (number, 10),
    };
    let digits = std::str::from_utf8(digits).ok()?;
    if digits.starts_with(['+', '-']) {
        return None;
    }
    // Overlong numbers are out of Unicode's range and forbidden too.
    let code = match u64::from_str_radix(digits, radix) {
        Ok(code) => u32::try_from(code).unwrap_or(u32::MAX),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => u32::MAX,
        Err(_) => return None,
    };
    (!is_xml_char(code)).then_some(code)
}

fn object_type(name: &[u8]) -> Option<ObjectType> {
    match name {
        b"node" => Some(ObjectType::Node),
        b"way" => Some(ObjectType::Way),
        b"relation" => Some(ObjectType::Relation),
        _ => None,
    }
}

fn action_of(name: &[u8]) -> Option<Action> {
    match name {
        b"create" => Some(Action::Create),
        b"modify" => Some(Action::Modify),
        b"delete" => Some(Action::Delete),
        _ => None,
    }
}

fn missing(element: &'static str, attribute: &'static str) -> OscErrorKind {
    OscErrorKind::MissingAttribute { element, attribute }
}

fn xml_kind(error: quick_xml::Error) -> OscErrorKind {
    match error {
        quick_xml::Error::Io(shared) => OscErrorKind::Io(
            Arc::try_unwrap(shared)
                .unwrap_or_else(|shared| io::Error::new(shared.kind(), shared.to_string())),
        ),
        // quick-xml reports input ending inside markup as a syntax error;
        // for a diff that means truncation.
        quick_xml::Error::Syntax(
            SyntaxError::UnclosedTag
            | SyntaxError::UnclosedComment
            | SyntaxError::UnclosedCData
            | SyntaxError::UnclosedDoctype
            | SyntaxError::UnclosedPIOrXmlDecl,
        ) => OscErrorKind::UnexpectedEof,
        other => OscErrorKind::Xml(other.to_string()),
    }
}

/// The object id from a start tag, for error messages; `None` if unreadable.
fn find_id(element: &BytesStart) -> Option<i64> {
    element
        .attributes()
        .with_checks(false)
        .map_while(Result::ok)
        .find(|attribute| attribute.key.as_ref() == b"id")
        .and_then(|attribute| parse_integer(&attribute.value))
}

/// Parses a number attribute, unescaping it first only in the (legal but
/// odd) case that it is written with character references.
fn integer<T: TryFrom<i64>>(
    element: &'static str,
    attribute: &'static str,
    value: &[u8],
) -> Result<T, OscErrorKind> {
    parse_integer(value)
        .or_else(|| with_unescaped(value, parse_integer))
        .and_then(|number| T::try_from(number).ok())
        .ok_or_else(|| invalid_number(element, attribute, value))
}

fn coordinate(
    element: &'static str,
    attribute: &'static str,
    value: &[u8],
    limit: f64,
) -> Result<f64, OscErrorKind> {
    parse_decimal(value)
        .or_else(|| with_unescaped(value, parse_decimal))
        .filter(|degrees| (-limit..=limit).contains(degrees))
        .ok_or_else(|| invalid_number(element, attribute, value))
}

fn timestamp(value: &[u8]) -> Result<DateTime<Utc>, OscErrorKind> {
    parse_timestamp(value)
        .or_else(|| with_unescaped(value, parse_timestamp))
        .ok_or_else(|| OscErrorKind::InvalidTimestamp(String::from_utf8_lossy(value).into_owned()))
}

fn invalid_number(element: &'static str, attribute: &'static str, value: &[u8]) -> OscErrorKind {
    OscErrorKind::InvalidNumber {
        element,
        attribute,
        value: String::from_utf8_lossy(value).into_owned(),
    }
}

fn with_unescaped<T>(value: &[u8], parse: fn(&[u8]) -> Option<T>) -> Option<T> {
    if !value.contains(&b'&') {
        return None;
    }
    let text = text("", value).ok()?;
    parse(text.as_bytes())
}

/// Decodes an attribute value as XML requires: literal tabs and line breaks
/// become spaces (line-break pairs count once), then references expand.
fn text(attribute: &'static str, value: &[u8]) -> Result<String, OscErrorKind> {
    let utf8 = std::str::from_utf8(value)
        .map_err(|error| OscErrorKind::Xml(format!("invalid UTF-8 in {attribute}: {error}")))?;
    if !value
        .iter()
        .any(|&b| matches!(b, b'&' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(utf8.to_owned());
    }
    let normalized = utf8.replace("\r\n", " ").replace(['\t', '\n', '\r'], " ");
    quick_xml::escape::unescape(&normalized)
        .map(|unescaped| unescaped.into_owned())
        .map_err(|error| OscErrorKind::Xml(format!("in {attribute}: {error}")))
}

/// A decimal integer with optional minus sign, nothing else.
fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(digit))?;
    }
    Some(if negative { -value } else { value })
}

const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A decimal number such as `-6.3654452`. Up to 15 significant digits the
/// digits and the power of ten are both exact doubles, so one division gives
/// the correctly rounded value, the same as `str::parse`, which handles the
/// rest (exponents, long mantissas).
fn parse_decimal(bytes: &[u8]) -> Option<f64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let mut mantissa: u64 = 0;
    let mut digit_count = 0;
    let mut fraction_digits = 0;
    let mut seen_point = false;
    for &byte in digits {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa
                    .wrapping_mul(10)
                    .wrapping_add(u64::from(byte - b'0'));
                digit_count += 1;
                fraction_digits += usize::from(seen_point);
            }
            b'.' if !seen_point => seen_point = true,
            _ => return parse_decimal_slow(bytes),
        }
    }
    if digit_count == 0 || digit_count > 15 {
        return parse_decimal_slow(bytes);
    }
    let magnitude = mantissa as f64 / POWERS_OF_TEN[fraction_digits];
    Some(if negative { -magnitude } else { magnitude })
}

fn parse_decimal_slow(bytes: &[u8]) -> Option<f64> {
    let number: f64 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    number.is_finite().then_some(number)
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the only form OSM writes, read by hand; anything
/// else RFC 3339 allows (offsets, fractions) goes through chrono.
fn parse_timestamp(bytes: &[u8]) -> Option<DateTime<Utc>> {
    if let Some(timestamp) = parse_utc_seconds(bytes) {
        return Some(timestamp);
    }
    let text = std::str::from_utf8(bytes).ok()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn parse_utc_seconds(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let b: &[u8; 20] = bytes.try_into().ok()?;
    if b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |value, &byte| {
            let digit = byte.wrapping_sub(b'0');
            (digit <= 9).then_some(value * 10 + i64::from(digit))
        })
    };
    let year = number(0..4)?;
    let month = number(5..7)?;
    let day = number(8..10)?;
    let hour = number(11..13)?;
    let minute = number(14..16)?;
    let second = number(17..19)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds = days_since_epoch(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    DateTime::from_timestamp(seconds, 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (year ≥ 0), counting
/// years from March so the leap day falls at the end of each year.
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod osm_file_tests {
    use super::*;

    #[test]
    fn reads_plain_osm_documents_as_creates() {
        let xml = "<?xml version='1.0'?>\n<osm version=\"0.6\">\n<bounds minlat=\"1\" minlon=\"1\" maxlat=\"2\" maxlon=\"2\"/>\n<node id=\"1\" version=\"2\" lat=\"1.5\" lon=\"1.25\"><tag k=\"amenity\" v=\"cafe\"/></node>\n<node id=\"2\" lat=\"1.6\" lon=\"1.3\"/>\n<way id=\"5\"><nd ref=\"1\"/><nd ref=\"2\"/><tag k=\"highway\" v=\"path\"/></way>\n</osm>\n";
        let changes: Vec<Change> = OscReader::new_osm_file(xml.as_bytes(), "t.osm")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|c| c.action == Action::Create));
        let Object::Way(way) = &changes[2].object else {
            panic!("not a way")
        };
        assert_eq!(way.nodes, vec![1, 2]);
        let err = OscReader::new_osm_file("<osmChange/>".as_bytes(), "t.osm")
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("where <osm> was expected"), "{err}");
        let truncated = &xml[..xml.len() - 8];
        let result: Result<Vec<Change>, _> =
            OscReader::new_osm_file(truncated.as_bytes(), "t.osm").collect();
        assert!(result.is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osm::osc_write::write_osc;
    use crate::osm::tags;
    use chrono::TimeZone;
    use std::io::Write;

    const SOURCE: &str = "test.osc";

    fn parse_all(xml: &str) -> Result<Vec<Change>, OscError> {
        OscReader::new(xml.as_bytes(), SOURCE).collect()
    }

    fn parse_error(xml: &str) -> OscError {
        match parse_all(xml) {
            Ok(changes) => panic!("expected an error, parsed {} changes", changes.len()),
            Err(error) => error,
        }
    }

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn meta(version: u32, timestamp: &str, user: &str) -> Meta {
        Meta {
            version: Some(version),
            timestamp: Some(time(timestamp)),
            changeset: Some(17219832),
            uid: Some(476789),
            user: Some(user.to_owned()),
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Wraps a body (lines 3 and on) in the two header lines and the footer.
    fn document(body: &str) -> String {
        format!("<?xml version='1.0' encoding='UTF-8'?>\n<osmChange version=\"0.6\">\n{body}</osmChange>\n")
    }

    const SAMPLE: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<osmChange version="0.6" generator="osmium/1.5.1">
  <bounds minlat="51.0" minlon="4.0" maxlat="52.0" maxlon="5.0"/>
  <create>
    <node id="1" version="1" timestamp="2013-08-04T20:12:55Z" uid="476789" user="CeesW" changeset="17219832" lat="51.8598089" lon="4.3923346" visible="true"/>
    <node id="2" version="1" timestamp="2013-08-04T20:12:56Z" uid="476789" user="CeesW" changeset="17219832" lat="-33.5" lon="-70.25">
      <tag k="amenity" v="cafe"/>
      <tag k="name" v="Café Ñandú"/>
    </node>
    <way id="10" version="1" timestamp="2013-08-04T20:12:57Z" uid="476789" user="CeesW" changeset="17219832">
      <nd ref="1"/>
      <nd ref="2"/>
      <tag k="highway" v="footway"/>
    </way>
    <relation id="20" version="1" timestamp="2013-08-04T20:12:58Z" uid="476789" user="CeesW" changeset="17219832">
      <member type="way" ref="10" role="outer"/>
      <member type="node" ref="1" role=""/>
      <member type="relation" ref="21" role="subarea"/>
      <tag k="type" v="multipolygon"/>
    </relation>
  </create>
  <modify>
    <node id="3" version="4" timestamp="2013-08-04T20:11:00Z" uid="476789" user="CeesW" changeset="17219832" lat="0" lon="-180"/>
    <way id="11" version="2" timestamp="2013-08-04T20:11:01Z" uid="476789" user="CeesW" changeset="17219832">
      <nd ref="3"/>
      <nd ref="1"/>
    </way>
    <relation id="21" version="7" timestamp="2013-08-04T20:11:02Z" uid="476789" user="CeesW" changeset="17219832">
      <member type="way" ref="11" role="inner"/>
    </relation>
  </modify>
  <delete>
    <node id="4" version="2" timestamp="2013-08-04T20:10:25Z" uid="476789" user="CeesW" changeset="17219832"/>
    <way id="12" version="3" timestamp="2013-08-04T20:10:26Z" uid="476789" user="CeesW" changeset="17219832"/>
    <relation id="22" version="5" timestamp="2013-08-04T20:10:27Z" uid="476789" user="CeesW" changeset="17219832"/>
  </delete>
</osmChange>
"#;

    #[test]
    fn reads_all_actions_and_object_types_in_file_order() {
        let changes = parse_all(SAMPLE).unwrap();
        let summary: Vec<(Action, String)> = changes
            .iter()
            .map(|c| (c.action, c.object_id().to_string()))
            .collect();
        let expected = [
            (Action::Create, "node 1"),
            (Action::Create, "node 2"),
            (Action::Create, "way 10"),
            (Action::Create, "relation 20"),
            (Action::Modify, "node 3"),
            (Action::Modify, "way 11"),
            (Action::Modify, "relation 21"),
            (Action::Delete, "node 4"),
            (Action::Delete, "way 12"),
            (Action::Delete, "relation 22"),
        ];
        let expected: Vec<(Action, String)> = expected
            .iter()
            .map(|(a, id)| (*a, id.to_string()))
            .collect();
        assert_eq!(summary, expected);

        assert_eq!(
            changes[0].object,
            Object::Node(Node {
                id: 1,
                meta: meta(1, "2013-08-04T20:12:55Z", "CeesW"),
                location: Some(Location {
                    lon: 4.3923346,
                    lat: 51.8598089
                }),
                tags: vec![],
            })
        );
        assert_eq!(
            changes[1].object,
            Object::Node(Node {
                id: 2,
                meta: meta(1, "2013-08-04T20:12:56Z", "CeesW"),
                location: Some(Location {
                    lon: -70.25,
                    lat: -33.5
                }),
                tags: tags(&[("amenity", "cafe"), ("name", "Café Ñandú")]),
            })
        );
        assert_eq!(
            changes[2].object,
            Object::Way(Way {
                id: 10,
                meta: meta(1, "2013-08-04T20:12:57Z", "CeesW"),
                nodes: vec![1, 2],
                tags: tags(&[("highway", "footway")]),
            })
        );
        let member = |kind, id, role: &str| Member {
            kind,
            id,
            role: role.to_owned(),
        };
        assert_eq!(
            changes[3].object,
            Object::Relation(Relation {
                id: 20,
                meta: meta(1, "2013-08-04T20:12:58Z", "CeesW"),
                members: vec![
                    member(ObjectType::Way, 10, "outer"),
                    member(ObjectType::Node, 1, ""),
                    member(ObjectType::Relation, 21, "subarea"),
                ],
                tags: tags(&[("type", "multipolygon")]),
            })
        );
        assert_eq!(
            changes[7].object,
            Object::Node(Node {
                id: 4,
                meta: meta(2, "2013-08-04T20:10:25Z", "CeesW"),
                location: None,
                tags: vec![],
            })
        );

        let set = parse_osc(SAMPLE.as_bytes(), SOURCE).unwrap();
        assert_eq!(set.counts().counts, [[2, 1, 1], [1, 1, 1], [1, 1, 1]]);
    }

    #[test]
    fn unescapes_attribute_values() {
        let xml = document(concat!(
            "<create>\n",
            "<node id=\"1\" user=\"a&amp;b &lt;c&gt;\" lat=\"1\" lon=\"2\">\n",
            "<tag k=\"note&#10;\" v=\"&quot;quoted&quot; &apos;single&apos; &#x263A; line&#10;break&#13;&#9;tab\"/>\n",
            "<tag k=\"literal\" v=\"one\ttwo\nthree\r\nfour\"/>\n",
            "</node>\n",
            "<relation id=\"&#50;\">\n",
            "<member type=\"node\" ref=\"&#49;\" role=\"from &amp; to\"/>\n",
            "</relation>\n",
            "</create>\n",
        ));
        let changes = parse_all(&xml).unwrap();
        let Object::Node(node) = &changes[0].object else {
            panic!("not a node")
        };
        assert_eq!(node.meta.user.as_deref(), Some("a&b <c>"));
        assert_eq!(
            node.tags,
            tags(&[
                ("note\n", "\"quoted\" 'single' \u{263A} line\nbreak\r\ttab"),
                // XML normalises literal whitespace in attributes to spaces.
                ("literal", "one two three four"),
            ])
        );
        let Object::Relation(relation) = &changes[1].object else {
            panic!("not a relation")
        };
        assert_eq!(relation.id, 2);
        assert_eq!(relation.members[0].id, 1);
        assert_eq!(relation.members[0].role, "from & to");
    }

    #[test]
    fn ignores_unknown_elements_and_attributes() {
        let xml = document(concat!(
            "<bounds minlat=\"1\"/>\n",
            "<extra><node id=\"99\"/></extra>\n",
            "<create>\n",
            "<!-- a comment -->\n",
            "<note>text <b>with</b> markup</note>\n",
            "<node id=\"1\" lat=\"1\" lon=\"2\" visible=\"true\" colour=\"red\">\n",
            "<unknown><tag k=\"hidden\" v=\"x\"/></unknown>\n",
            "<tag k=\"a\" v=\"b\" extra=\"1\"></tag>\n",
            "<nd ref=\"5\"/>\n",
            "</node>\n",
            "</create>\n",
        ));
        let changes = parse_all(&xml).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].object.tags(), &tags(&[("a", "b")]));
    }

    #[test]
    fn empty_documents_are_valid() {
        assert!(parse_all("<osmChange/>").unwrap().is_empty());
        assert!(parse_all(&document("<create/>\n<modify></modify>\n"))
            .unwrap()
            .is_empty());
    }

    fn sample_changes() -> Vec<Change> {
        let strange = "a&b<c>\"d'e\nf\tg\rh ☺ ";
        vec![
            Change {
                action: Action::Create,
                object: Object::Node(Node {
                    id: -5,
                    meta: Meta {
                        version: Some(1),
                        timestamp: Some(Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()),
                        changeset: Some(1),
                        uid: Some(0),
                        user: Some(strange.to_owned()),
                    },
                    location: Some(Location {
                        lon: -179.9999999,
                        lat: 89.1234567,
                    }),
                    tags: tags(&[(strange, strange), ("empty", "")]),
                }),
            },
            Change {
                action: Action::Modify,
                object: Object::Way(Way {
                    id: 7,
                    meta: Meta::default(),
                    nodes: vec![1, -5, 9_000_000_000],
                    tags: vec![],
                }),
            },
            Change {
                action: Action::Modify,
                object: Object::Relation(Relation {
                    id: 8,
                    meta: Meta {
                        version: Some(3),
                        ..Meta::default()
                    },
                    members: vec![
                        Member {
                            kind: ObjectType::Way,
                            id: 7,
                            role: strange.to_owned(),
                        },
                        Member {
                            kind: ObjectType::Node,
                            id: -5,
                            role: String::new(),
                        },
                    ],
                    tags: tags(&[("type", "route")]),
                }),
            },
            Change {
                action: Action::Delete,
                object: Object::Node(Node {
                    id: 6,
                    meta: Meta::default(),
                    location: None,
                    tags: vec![],
                }),
            },
            Change {
                action: Action::Delete,
                object: Object::Node(Node {
                    id: 10,
                    meta: Meta::default(),
                    location: Some(Location { lon: 0.0, lat: 0.0 }),
                    tags: vec![],
                }),
            },
        ]
    }

    #[test]
    fn round_trips_through_write_osc() {
        let changes = sample_changes();
        let mut xml = Vec::new();
        write_osc(&mut xml, "test", &changes).unwrap();
        let parsed: Vec<Change> = OscReader::new(xml.as_slice(), SOURCE)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed, changes);
        let set = parse_osc(xml.as_slice(), SOURCE).unwrap();
        assert_eq!(set, changes.into_iter().collect::<ChangeSet>());
    }

    #[test]
    fn full_history_collapses_to_the_newest_version() {
        let xml = document(concat!(
            "<create>\n",
            "<node id=\"1\" version=\"1\" lat=\"1\" lon=\"1\"/>\n",
            "<node id=\"2\" version=\"3\" lat=\"1\" lon=\"1\"/>\n",
            "</create>\n",
            "<modify>\n",
            "<node id=\"1\" version=\"2\" lat=\"2\" lon=\"2\"/>\n",
            "<node id=\"1\" version=\"3\" lat=\"3\" lon=\"3\"/>\n",
            // An older version listed later must not win.
            "<node id=\"2\" version=\"2\" lat=\"2\" lon=\"2\"/>\n",
            "</modify>\n",
            "<delete>\n",
            "<node id=\"1\" version=\"4\"/>\n",
            "</delete>\n",
        ));
        assert_eq!(parse_all(&xml).unwrap().len(), 6);
        let set = parse_osc(xml.as_bytes(), SOURCE).unwrap();
        assert_eq!(set.len(), 2);
        let node = |id| ObjectId {
            kind: ObjectType::Node,
            id,
        };
        let first = set.get(node(1)).unwrap();
        assert_eq!(first.action, Action::Delete);
        assert_eq!(first.object.meta().version, Some(4));
        let second = set.get(node(2)).unwrap();
        assert_eq!(second.action, Action::Create);
        assert_eq!(second.object.meta().version, Some(3));
    }

    /// Each case: body starting on line 3, the full expected message.
    #[test]
    fn errors_name_line_object_and_problem() {
        let cases = [
            (
                "<create>\n<node id=\"1\" lat=\"1\" lon=\"1\"/>\n<node id=\"x\" lat=\"1\" lon=\"1\"/>\n</create>\n",
                "test.osc:5: invalid number id=\"x\" in <node>",
            ),
            (
                "<create>\n<node lat=\"1\" lon=\"1\"/>\n</create>\n",
                "test.osc:4: <node> without id",
            ),
            (
                "<create>\n<node lat=\"91.5\" lon=\"1\" id=\"7\"/>\n</create>\n",
                "test.osc:4: node 7: invalid number lat=\"91.5\" in <node>",
            ),
            (
                "<create>\n<node id=\"7\" lat=\"1\" lon=\"1e999\"/>\n</create>\n",
                "test.osc:4: node 7: invalid number lon=\"1e999\" in <node>",
            ),
            (
                "<modify>\n<node id=\"7\" lon=\"1\"/>\n</modify>\n",
                "test.osc:4: node 7: <node> without lat",
            ),
            (
                "<create>\n<node id=\"7\" lat=\"1\"/>\n</create>\n",
                "test.osc:4: node 7: <node> without lon",
            ),
            (
                "<create>\n<way id=\"3\" version=\"-1\"/>\n</create>\n",
                "test.osc:4: way 3: invalid number version=\"-1\" in <way>",
            ),
            (
                "<create>\n<way id=\"3\" changeset=\"99999999999999999999\"/>\n</create>\n",
                "test.osc:4: way 3: invalid number changeset=\"99999999999999999999\" in <way>",
            ),
            (
                "<create>\n<way id=\"3\" timestamp=\"2013-02-29T10:00:00Z\"/>\n</create>\n",
                "test.osc:4: way 3: invalid timestamp \"2013-02-29T10:00:00Z\" (expected YYYY-MM-DDTHH:MM:SSZ)",
            ),
            (
                "<node id=\"7\" lat=\"1\" lon=\"1\"/>\n",
                "test.osc:3: node 7: <node> outside a <create>, <modify> or <delete> block",
            ),
            (
                "<create>\n<relation id=\"20\">\n<member type=\"way\" ref=\"1\"/>\n<member type=\"area\" ref=\"2\" role=\"\"/>\n</relation>\n</create>\n",
                "test.osc:6: relation 20: <member> with unknown type \"area\"",
            ),
            (
                "<create>\n<relation id=\"20\">\n<member ref=\"2\"/>\n</relation>\n</create>\n",
                "test.osc:5: relation 20: <member> without type",
            ),
            (
                "<create>\n<way id=\"42\">\n<nd ref=\"1\"/>\n<nd/>\n</way>\n</create>\n",
                "test.osc:6: way 42: <nd> without ref",
            ),
            (
                "<create>\n<way id=\"42\">\n<nd ref=\"1x\"/>\n</way>\n</create>\n",
                "test.osc:5: way 42: invalid number ref=\"1x\" in <nd>",
            ),
            (
                "<create>\n<way id=\"42\">\n<tag v=\"1\"/>\n</way>\n</create>\n",
                "test.osc:5: way 42: <tag> without k",
            ),
            (
                "<create>\n<way id=\"42\">\n<tag k=\"1\"/>\n</way>\n</create>\n",
                "test.osc:5: way 42: <tag> without v",
            ),
            (
                "<create>\n<modify/>\n</create>\n",
                "test.osc:4: unexpected <modify> inside another action block",
            ),
            // A tag spread over lines is reported where it starts.
            (
                "<create>\n<node id=\"8\"\n  lat=\"1\"\n  lon=\"east\"\n/>\n</create>\n",
                "test.osc:4: node 8: invalid number lon=\"east\" in <node>",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse_error(&document(body)).to_string(),
                expected,
                "body:\n{body}"
            );
        }
    }

    #[test]
    fn error_kinds_are_distinguishable() {
        let error = parse_error(&document(
            "<create>\n<way id=\"42\">\n<nd/>\n</way>\n</create>\n",
        ));
        assert_eq!(error.source_name, SOURCE);
        assert_eq!(error.line, 5);
        assert_eq!(
            error.object,
            Some(ObjectId {
                kind: ObjectType::Way,
                id: 42
            })
        );
        assert!(matches!(
            error.kind,
            OscErrorKind::MissingAttribute {
                element: "nd",
                attribute: "ref"
            }
        ));
    }

    #[test]
    fn xml_syntax_errors() {
        let mismatched = parse_error(&document(
            "<create>\n<node id=\"1\" lat=\"1\" lon=\"1\">\n</way>\n</create>\n",
        ));
        assert!(
            matches!(mismatched.kind, OscErrorKind::Xml(_)),
            "{mismatched}"
        );
        assert_eq!(mismatched.line, 5);
        assert_eq!(
            mismatched.object.map(|id| id.to_string()).as_deref(),
            Some("node 1")
        );

        let entity = parse_error(&document(
            "<create>\n<node id=\"1\" lat=\"1\" lon=\"1\">\n<tag k=\"a\" v=\"&bogus;\"/>\n</node>\n</create>\n",
        ));
        assert!(matches!(entity.kind, OscErrorKind::Xml(_)), "{entity}");
        assert!(
            entity
                .to_string()
                .starts_with("test.osc:5: node 1: XML syntax error"),
            "{entity}"
        );

        let unquoted = parse_error(&document(
            "<create>\n<node id=1 lat=\"1\" lon=\"1\"/>\n</create>\n",
        ));
        assert!(matches!(unquoted.kind, OscErrorKind::Xml(_)), "{unquoted}");

        let wrong_root = parse_error("<?xml version='1.0'?>\n<osm version=\"0.6\">\n</osm>\n");
        assert_eq!(
            wrong_root.to_string(),
            "test.osc:2: unexpected <osm> where <osmChange> was expected"
        );

        let after_root = parse_error("<osmChange>\n</osmChange>\n<create/>\n");
        assert_eq!(
            after_root.to_string(),
            "test.osc:3: unexpected <create> after </osmChange>"
        );
    }

    /// XML 1.0 forbids C0 controls other than tab, LF and CR, raw or as
    /// character references; libxml2 (and so osmium) refuses such a file,
    /// and so must the reader, naming the line.
    #[test]
    fn forbidden_characters_are_errors_naming_the_line() {
        let node = |attrs: &str| {
            format!("<create>\n<node id=\"5\" lat=\"1\" lon=\"1\"{attrs}>\n<tag k=\"a\" v=\"b\"/>\n</node>\n</create>\n")
        };
        let cases: Vec<(String, &str)> = vec![
            // Raw bytes: in a read attribute, an ignored one, text, a comment.
            (node(" user=\"a\u{0}b\""), "test.osc:4: character U+0000"),
            (node(" note=\"\u{1}\""), "test.osc:4: character U+0001"),
            (
                "<create>\n<node id=\"5\" lat=\"1\" lon=\"1\">\n<tag k=\"a\" v=\"\u{1f}\"/>\n</node>\n</create>\n".into(),
                "test.osc:5: node 5: character U+001F",
            ),
            ("<create>\nx\u{8}y\n</create>\n".into(), "test.osc:4: character U+0008"),
            ("<!-- \u{c} -->\n<create/>\n".into(), "test.osc:3: character U+000C"),
            // Character references, decimal and hex, read and ignored.
            (node(" user=\"&#0;\""), "test.osc:4: node 5: character U+0000"),
            (node(" user=\"a&#x1;\""), "test.osc:4: node 5: character U+0001"),
            (node("\n  note=\"&#31;\""), "test.osc:5: node 5: character U+001F"),
            (node(" note=\"&#xFFFE;\""), "test.osc:4: node 5: character U+FFFE"),
            (
                "<create>\n<node id=\"5\" lat=\"1\" lon=\"1\">\n<tag k=\"a\" v=\"&amp;&#X;&#x1B;\"/>\n</node>\n</create>\n".into(),
                "test.osc:5: node 5: character U+001B",
            ),
            ("<create>\nx&#2;\n</create>\n".into(), "test.osc:4: character U+0002"),
        ];
        for (body, expected) in cases {
            let xml = document(&body);
            let error = parse_error(&xml);
            assert!(
                matches!(error.kind, OscErrorKind::ForbiddenCharacter(_)),
                "{body:?}: {error}"
            );
            assert!(error.to_string().starts_with(expected), "{body:?}: {error}");
            assert!(
                error.to_string().ends_with("is not allowed in XML 1.0"),
                "{error}"
            );
            // The same through one-byte reads: the line stays exact when the
            // byte is found in a later buffer.
            let one_byte = BufReader::with_capacity(1, xml.as_bytes());
            let error = OscReader::new(one_byte, SOURCE)
                .collect::<Result<Vec<_>, _>>()
                .unwrap_err();
            assert!(error.to_string().starts_with(expected), "{body:?}: {error}");
        }
        // Tab, LF and CR are allowed, raw and as references.
        let fine = document(&node(" user=\"a\tb\r&#9;&#10;&#13;&#x20;&#xE000;\""));
        assert_eq!(parse_all(&fine).unwrap().len(), 1);
    }

    #[test]
    fn truncated_xml_is_an_error_at_every_cut() {
        for cut in 0..SAMPLE.len() {
            if !SAMPLE.is_char_boundary(cut) {
                continue;
            }
            // Only whitespace after the final end tag may go.
            if SAMPLE[cut..].trim().is_empty() {
                continue;
            }
            let error = parse_error(&SAMPLE[..cut]);
            assert!(
                matches!(error.kind, OscErrorKind::UnexpectedEof),
                "cut at {cut}: {error}"
            );
        }
        assert!(parse_all(SAMPLE.trim_end()).is_ok());
    }

    #[test]
    fn truncated_xml_names_the_line_and_open_object() {
        let full = document("<create>\n<way id=\"10\">\n<nd ref=\"1\"/>\n</way>\n</create>\n");
        let cut = full.find("</way>").unwrap();
        let error = parse_error(&full[..cut]);
        assert_eq!(
            error.to_string(),
            "test.osc:6: way 10: unexpected end of file before </osmChange> (truncated diff?)"
        );
        let between_objects = parse_error(&full[..full.find("</create>").unwrap()]);
        assert_eq!(
            between_objects.to_string(),
            "test.osc:7: unexpected end of file before </osmChange> (truncated diff?)"
        );
        assert!(matches!(parse_error("").kind, OscErrorKind::UnexpectedEof));
    }

    /// A reader that fails after handing out some bytes, like a dropped
    /// connection.
    struct FailingReader<'a> {
        data: &'a [u8],
    }

    impl Read for FailingReader<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "peer hung up",
                ));
            }
            let n = self.data.len().min(out.len()).min(16);
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn io_errors_keep_their_message() {
        let half = &SAMPLE.as_bytes()[..SAMPLE.find("<modify>").unwrap()];
        let reader = BufReader::new(FailingReader { data: half });
        let error = OscReader::new(reader, SOURCE)
            .find_map(Result::err)
            .unwrap();
        let OscErrorKind::Io(io_error) = &error.kind else {
            panic!("not an I/O error: {error}")
        };
        assert_eq!(io_error.kind(), io::ErrorKind::ConnectionReset);
        assert!(
            error.to_string().ends_with("I/O error: peer hung up"),
            "{error}"
        );
        assert_eq!(error.line, 22);
        assert!(std::error::Error::source(&error).is_some());
    }

    /// Hands out at most a few bytes per read, so events straddle blocks.
    struct TrickleReader<'a> {
        data: &'a [u8],
    }

    impl Read for TrickleReader<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(out.len()).min(7);
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn line_numbers_stay_exact_across_read_blocks() {
        // 20 000 lines is several 64 KiB blocks; the bad node is the last.
        let mut body = String::from("<create>\n");
        for id in 1..20_000 {
            body.push_str(&format!(
                "<node id=\"{id}\" lat=\"1.5\" lon=\"2.5\" user=\"x\"/>\n"
            ));
        }
        body.push_str("<node id=\"20000\" lat=\"1.5\"\n lon=\"?\"/>\n</create>\n");
        let xml = document(&body);
        assert!(xml.len() > 3 * 64 * 1024);
        let expected = "test.osc:20003: node 20000: invalid number lon=\"?\" in <node>";
        assert_eq!(parse_error(&xml).to_string(), expected);
        let trickle = BufReader::with_capacity(
            5,
            TrickleReader {
                data: xml.as_bytes(),
            },
        );
        let error = OscReader::new(trickle, SOURCE)
            .find_map(Result::err)
            .unwrap();
        assert_eq!(error.to_string(), expected);
        let cut = &xml[..xml.find("<node id=\"20000\"").unwrap()];
        let mut truncated = OscReader::new(
            BufReader::with_capacity(
                3,
                TrickleReader {
                    data: cut.as_bytes(),
                },
            ),
            SOURCE,
        );
        let error = truncated.find_map(Result::err).unwrap();
        assert!(
            error
                .to_string()
                .starts_with("test.osc:20003: unexpected end"),
            "{error}"
        );
    }

    #[test]
    fn reader_stops_after_the_first_error() {
        let xml = document(concat!(
            "<create>\n",
            "<node id=\"x\"/>\n",
            "<node id=\"1\" lat=\"1\" lon=\"1\"/>\n",
            "</create>\n",
        ));
        let mut reader = OscReader::new(xml.as_bytes(), SOURCE);
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none());
    }

    #[test]
    fn gzip_round_trip_and_multiple_members() {
        let compressed = gzip(SAMPLE.as_bytes());
        let set = parse_osc_gz(&compressed, "sample.osc.gz").unwrap();
        assert_eq!(set, parse_osc(SAMPLE.as_bytes(), SOURCE).unwrap());

        let (head, tail) = SAMPLE.split_at(SAMPLE.find("<modify>").unwrap());
        let mut two_members = gzip(head.as_bytes());
        two_members.extend(gzip(tail.as_bytes()));
        assert_eq!(parse_osc_gz(&two_members, "two.osc.gz").unwrap(), set);
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let compressed = gzip(SAMPLE.as_bytes());
        // Cuts in the deflate data, in the checksum trailer (where the XML
        // inside is already complete), and of the last byte only.
        for cut in [
            10,
            compressed.len() / 2,
            compressed.len() - 6,
            compressed.len() - 1,
        ] {
            let error = parse_osc_gz(&compressed[..cut], "cut.osc.gz").unwrap_err();
            assert!(
                matches!(error.kind, OscErrorKind::Io(_)),
                "cut at {cut}: {error}"
            );
            assert!(error.to_string().starts_with("cut.osc.gz:"), "{error}");
        }
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let compressed = gzip(SAMPLE.as_bytes());
        // A flipped byte in the CRC-32 trailer: every byte of XML decodes
        // fine, only reading to the end notices.
        let mut bad_checksum = compressed.clone();
        let crc_position = bad_checksum.len() - 8;
        bad_checksum[crc_position] ^= 0xff;
        let error = parse_osc_gz(&bad_checksum, "crc.osc.gz").unwrap_err();
        assert!(matches!(error.kind, OscErrorKind::Io(_)), "{error}");

        for position in [3, 20, compressed.len() / 2] {
            let mut corrupt = compressed.clone();
            corrupt[position] ^= 0x55;
            assert!(
                parse_osc_gz(&corrupt, "bad.osc.gz").is_err(),
                "flipped byte {position}"
            );
        }
        let not_gzip = parse_osc_gz(SAMPLE.as_bytes(), "plain.osc.gz").unwrap_err();
        assert!(matches!(not_gzip.kind, OscErrorKind::Io(_)), "{not_gzip}");
    }

    #[test]
    fn read_osc_file_detects_gzip_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.osc.gz");
        std::fs::write(&plain, SAMPLE).unwrap();
        let compressed = dir.path().join("compressed.osc");
        std::fs::write(&compressed, gzip(SAMPLE.as_bytes())).unwrap();
        let expected = parse_osc(SAMPLE.as_bytes(), SOURCE).unwrap();
        assert_eq!(read_osc_file(&plain).unwrap(), expected);
        assert_eq!(read_osc_file(&compressed).unwrap(), expected);

        let missing = dir.path().join("missing.osc");
        let error = read_osc_file(&missing).unwrap_err();
        assert!(matches!(error.kind, OscErrorKind::Io(_)));
        assert!(error
            .to_string()
            .starts_with(&missing.display().to_string()));
    }

    #[test]
    fn timestamps_match_chrono() {
        let mut day = Utc.with_ymd_and_hms(1899, 12, 25, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2101, 3, 5, 0, 0, 0).unwrap();
        let mut offset = 0;
        while day < end {
            offset = (offset + 7919) % 86_400;
            let moment = day + chrono::Duration::seconds(offset);
            let text = moment.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            assert_eq!(parse_utc_seconds(text.as_bytes()), Some(moment), "{text}");
            day += chrono::Duration::days(1);
        }
        for valid in ["2000-02-29T00:00:00Z", "2012-02-29T23:59:59Z"] {
            assert!(parse_utc_seconds(valid.as_bytes()).is_some(), "{valid}");
        }
        for invalid in [
            "1900-02-29T00:00:00Z",
            "2013-02-29T00:00:00Z",
            "2013-04-31T00:00:00Z",
            "2013-00-01T00:00:00Z",
            "2013-13-01T00:00:00Z",
            "2013-01-00T00:00:00Z",
            "2013-01-01T24:00:00Z",
            "2013-01-01T00:60:00Z",
            "2013-01-01T00:00:00",
            "2013-1-01T00:00:00Z",
            "2O13-01-01T00:00:00Z",
            "",
        ] {
            assert_eq!(parse_timestamp(invalid.as_bytes()), None, "{invalid}");
        }
        // Other RFC 3339 forms go through chrono.
        assert_eq!(
            parse_timestamp(b"2013-01-01 00:00:00Z"),
            Some(time("2013-01-01T00:00:00Z"))
        );
        assert_eq!(
            parse_timestamp(b"2013-08-04T22:12:55+02:00"),
            Some(time("2013-08-04T20:12:55Z"))
        );
        assert_eq!(
            parse_timestamp(b"2013-08-04T20:12:55.250Z"),
            Some(time("2013-08-04T20:12:55.250Z"))
        );
    }

    #[test]
    fn decimals_match_std_parse() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let degrees = (state % 3_600_000_001) as f64 / 1e7 - 180.0;
            for text in [
                format!("{degrees:.7}"),
                format!("{degrees}"),
                format!("{degrees:.3}"),
            ] {
                assert_eq!(parse_decimal(text.as_bytes()), text.parse().ok(), "{text}");
            }
        }
        for text in [
            "0",
            "-0.0",
            "180",
            "-180.0000000",
            "5.",
            ".5",
            "1e-5",
            "12345678.123456789",
            "0.1234567890123456789",
            "00000000000000000001.5",
        ] {
            let expected: f64 = text.parse().unwrap();
            assert_eq!(parse_decimal(text.as_bytes()), Some(expected), "{text}");
        }
        for text in [
            "", "-", ".", "1.2.3", "abc", "1,5", "NaN", "inf", "--1", "+",
        ] {
            assert_eq!(parse_decimal(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn integers_reject_junk_and_overflow() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"-42"), Some(-42));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        for junk in ["", "-", "+1", "1.0", " 1", "9223372036854775808", "1a"] {
            assert_eq!(parse_integer(junk.as_bytes()), None, "{junk}");
        }
    }

    const REAL_DIFF: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/000466354.osc.gz"
    );

    #[test]
    fn real_minutely_diff() {
        let Ok(compressed) = std::fs::read(REAL_DIFF) else {
            eprintln!("skipping: ../shared/data/000466354.osc.gz not found");
            return;
        };
        let set = parse_osc_gz(&compressed, "000466354.osc.gz").unwrap();
        // The file holds each object once (`zcat | grep -c` per type and
        // action gives the same figures), so merging changes nothing and the
        // counts are those of the raw file.
        assert_eq!(
            set.counts().counts,
            [[719, 135, 12], [729, 40, 1], [13, 6, 0]]
        );
        let timestamps = set.iter().filter_map(|c| c.object.meta().timestamp);
        let (first, last) = timestamps.fold((None, None), |(lo, hi), t| {
            (
                Some(lo.map_or(t, |lo: DateTime<Utc>| lo.min(t))),
                Some(hi.map_or(t, |hi: DateTime<Utc>| hi.max(t))),
            )
        });
        assert_eq!(first, Some(time("2013-08-04T20:10:25Z")));
        assert_eq!(last, Some(time("2013-08-04T20:13:00Z")));

        let mut raw = Vec::new();
        flate2::bufread::MultiGzDecoder::new(compressed.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        let raw_count = OscReader::new(raw.as_slice(), "raw").count();
        assert_eq!(raw_count, set.len());

        let mut rewritten = Vec::new();
        write_osc(&mut rewritten, "test", set.iter()).unwrap();
        assert_eq!(parse_osc(rewritten.as_slice(), "rewritten").unwrap(), set);
    }
}
