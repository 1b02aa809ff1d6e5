//! Reading OSM files for import: PBF (blocks decoded in parallel), `.osm`
//! and `.osm.gz` XML. Objects arrive in file order, in batches, and the
//! order osm2pgsql requires is checked: nodes, then ways, then relations,
//! each by ascending id.

use crate::osm::osc::OscReader;
use crate::osm::{
    owned_tags, Location, Member, Meta, Node, Object, ObjectId, ObjectType, Relation, Way,
};
use chrono::DateTime;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

/// Why an OSM file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Opening, reading or decoding failed.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong, and where in the file when known.
        message: String,
    },
    /// The file breaks osm2pgsql's order rule (nodes, ways, relations,
    /// each by ascending id, each id once).
    #[error("{path}: input is not ordered: {current} after {previous} (osm2pgsql's input rule: nodes, ways, relations, each by ascending id, each id once)")]
    Order {
        /// The file.
        path: PathBuf,
        /// The object read before.
        previous: ObjectId,
        /// The object out of order.
        current: ObjectId,
    },
}

/// What kind of file a path holds, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OSM PBF.
    Pbf,
    /// OSM XML (`.osm`).
    Xml,
    /// Gzip-compressed OSM XML (`.osm.gz`).
    XmlGz,
}

/// The format of the file at `path`, from its first bytes (not its name).
pub fn detect_format(path: &Path) -> Result<Format, InputError> {
    let mut head = [0u8; 16];
    let mut file = File::open(path).map_err(|e| read_error(path, e))?;
    let n = read_up_to(&mut file, &mut head).map_err(|e| read_error(path, e))?;
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Format::XmlGz);
    }
    // A PBF file opens with a blob header whose first field is the string
    // "OSMHeader" (protobuf tag 0x0a, length 9).
    if head.len() >= 15 && head[4..6] == [0x0a, 0x09] && &head[6..15] == b"OSMHeader" {
        return Ok(Format::Pbf);
    }
    if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<') {
        return Ok(Format::Xml);
    }
    Err(InputError::Read {
        path: path.to_path_buf(),
        message: "not an OSM file (neither PBF nor XML nor gzip'd XML)".into(),
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        let n = file.read(&mut buf[total..])?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total)
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> InputError {
    InputError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Checks osm2pgsql's ordering rule across batches.
struct OrderCheck<'a> {
    path: &'a Path,
    previous: Option<ObjectId>,
}

impl OrderCheck<'_> {
    fn check(&mut self, objects: &[Object]) -> Result<(), InputError> {
        for object in objects {
            let current = object.object_id();
            if let Some(previous) = self.previous {
                if current <= previous {
                    return Err(InputError::Order {
                        path: self.path.to_path_buf(),
                        previous,
                        current,
                    });
                }
            }
            self.previous = Some(current);
        }
        Ok(())
    }
}

/// Which object metadata a reader must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// Version, timestamp, changeset, uid and user.
    Full,
    /// Timestamps only (XML input keeps everything anyway): the import
    /// needs nothing else, and copying every PBF object's user name was a
    /// tenth of the decoding (perf, import of Liechtenstein ×100).
    Timestamps,
}

/// Reads `path` and hands its objects to `sink` in batches, in file order.
/// PBF blocks are decoded on `threads` threads. `sink` errors stop the
/// reading and are returned as they are.
pub fn read_objects<E: From<InputError>>(
    path: &Path,
    threads: usize,
    metadata: Metadata,
    mut sink: impl FnMut(Vec<Object>) -> Result<(), E>,
) -> Result<(), E> {
    let mut order = OrderCheck {
        path,
        previous: None,
    };
    let mut checked_sink = |batch: Vec<Object>| -> Result<(), E> {
        order.check(&batch)?;
        sink(batch)
    };
    match detect_format(path)? {
        Format::Pbf => read_pbf(path, threads.max(1), metadata, &mut checked_sink),
        Format::Xml => {
            let file = File::open(path).map_err(|e| read_error(path, e))?;
            read_xml(
                BufReader::with_capacity(1 << 16, file),
                path,
                &mut checked_sink,
            )
        }
        Format::XmlGz => {
            let file = File::open(path).map_err(|e| read_error(path, e))?;
            let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file));
            read_xml(
                BufReader::with_capacity(1 << 16, gz),
                path,
                &mut checked_sink,
            )
        }
    }
}

const XML_BATCH: usize = 8192;

fn read_xml<R: std::io::BufRead, E: From<InputError>>(
    reader: R,
    path: &Path,
    sink: &mut impl FnMut(Vec<Object>) -> Result<(), E>,
) -> Result<(), E> {
    let mut batch = Vec::with_capacity(XML_BATCH);
    for change in OscReader::new_osm_file(reader, path.display().to_string()) {
        let change = change.map_err(|e| InputError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        batch.push(change.object);
        if batch.len() == XML_BATCH {
            sink(std::mem::replace(&mut batch, Vec::with_capacity(XML_BATCH)))?;
        }
    }
    if !batch.is_empty() {
        sink(batch)?;
    }
    Ok(())
}

fn read_pbf<E: From<InputError>>(
    path: &Path,
    threads: usize,
    metadata: Metadata,
    sink: &mut impl FnMut(Vec<Object>) -> Result<(), E>,
) -> Result<(), E> {
    let blobs = osmpbf::BlobReader::from_path(path).map_err(|e| read_error(path, e))?;
    // A pipeline: one thread reads blobs, `threads` decode them, and the
    // caller's thread hands the results on in file order while the next
    // blobs decode. At most `ahead` blobs are in flight (a permit each),
    // enough to keep every decoder busy, few enough to bound memory: one
    // decoding and one ready per decoder (four per decoder held 8 decoded
    // blocks, ~25 MB at Liechtenstein ×100, for no measured gain).
    let ahead = threads * 2;
    std::thread::scope(|scope| {
        let (blob_tx, blob_rx) = sync_channel::<(usize, Result<osmpbf::Blob, InputError>)>(ahead);
        let (decoded_tx, decoded_rx) =
            sync_channel::<(usize, Result<Vec<Object>, InputError>)>(ahead);
        let (permit_tx, permit_rx) = sync_channel::<()>(ahead);
        for _ in 0..ahead {
            permit_tx.send(()).expect("the receiver is alive");
        }
        scope.spawn(move || {
            for (index, blob) in blobs.enumerate() {
                if permit_rx.recv().is_err() {
                    return; // the caller stopped
                }
                let blob = blob.map_err(|e| read_error(path, format!("blob {index}: {e}")));
                let failed = blob.is_err();
                if blob_tx.send((index, blob)).is_err() || failed {
                    return;
                }
            }
        });
        let blob_rx = Arc::new(Mutex::new(blob_rx));
        for _ in 0..threads {
            let (blob_rx, decoded_tx) = (blob_rx.clone(), decoded_tx.clone());
            scope.spawn(move || loop {
                let job = blob_rx.lock().expect("no decoder panicked").recv();
                let Ok((index, blob)) = job else {
                    return; // all blobs read, or the caller stopped
                };
                let decoded = blob.and_then(|blob| decode_blob(path, index, &blob, metadata));
                if decoded_tx.send((index, decoded)).is_err() {
                    return;
                }
            });
        }
        drop(decoded_tx);
        // Decoders finish out of order: hold results until their turn.
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (index, decoded) in decoded_rx {
            waiting.insert(index, decoded);
            while let Some(decoded) = waiting.remove(&next) {
                next += 1;
                let objects = decoded?;
                if !objects.is_empty() {
                    sink(objects)?;
                }
                // At most `ahead` permits are ever out: this never blocks.
                let _ = permit_tx.send(());
            }
        }
        Ok(())
    })
}

fn decode_blob(
    path: &Path,
    index: usize,
    blob: &osmpbf::Blob,
    metadata: Metadata,
) -> Result<Vec<Object>, InputError> {
    let block = match blob.decode() {
        Ok(osmpbf::BlobDecode::OsmData(block)) => block,
        Ok(_) => return Ok(Vec::new()),
        Err(e) => return Err(read_error(path, format!("blob {index}: {e}"))),
    };
    // Writers put 8000 objects in a block (osmium, osmosis): sized once
    // instead of grown by doubling, a copy of the block each time.
    let mut objects = Vec::with_capacity(8000);
    let bad = |what: &str, id: i64, e: &dyn std::fmt::Display| {
        read_error(path, format!("blob {index}: {what} {id}: {e}"))
    };
    for element in block.elements() {
        let object = match element {
            osmpbf::Element::Node(n) => Object::Node(Node {
                id: n.id(),
                meta: info_meta(&n.info(), metadata),
                location: Some(Location::from_fixed(n.decimicro_lon(), n.decimicro_lat())),
                tags: owned_tags(n.tags()),
            }),
            osmpbf::Element::DenseNode(n) => {
                let info = n.info();
                Object::Node(Node {
                    id: n.id(),
                    meta: match info {
                        Some(i) if metadata == Metadata::Full => meta(
                            Some(i.version()),
                            Some(i.milli_timestamp()),
                            Some(i.changeset()),
                            Some(i.uid() as i64),
                            i.user().ok(),
                        ),
                        Some(i) => meta(None, Some(i.milli_timestamp()), None, None, None),
                        None => Meta::default(),
                    },
                    location: Some(Location::from_fixed(n.decimicro_lon(), n.decimicro_lat())),
                    tags: owned_tags(n.tags()),
                })
            }
            osmpbf::Element::Way(w) => Object::Way(Way {
                id: w.id(),
                meta: info_meta(&w.info(), metadata),
                nodes: w.refs().collect(),
                tags: owned_tags(w.tags()),
            }),
            osmpbf::Element::Relation(r) => {
                let mut members = Vec::new();
                for m in r.members() {
                    let role = m.role().map_err(|e| bad("relation", r.id(), &e))?;
                    members.push(Member {
                        kind: match m.member_type {
                            osmpbf::RelMemberType::Node => ObjectType::Node,
                            osmpbf::RelMemberType::Way => ObjectType::Way,
                            osmpbf::RelMemberType::Relation => ObjectType::Relation,
                        },
                        id: m.member_id,
                        role: role.to_string(),
                    });
                }
                Object::Relation(Relation {
                    id: r.id(),
                    meta: info_meta(&r.info(), metadata),
                    members,
                    tags: owned_tags(r.tags()),
                })
            }
        };
        objects.push(object);
    }
    Ok(objects)
}

/// The metadata of a PBF node, way or relation.
fn info_meta(info: &osmpbf::Info<'_>, metadata: Metadata) -> Meta {
    if metadata == Metadata::Timestamps {
        return meta(None, info.milli_timestamp(), None, None, None);
    }
    meta(
        info.version(),
        info.milli_timestamp(),
        info.changeset(),
        info.uid().map(i64::from),
        info.user().and_then(|u| u.ok()),
    )
}

fn meta(
    version: Option<i32>,
    milli_timestamp: Option<i64>,
    changeset: Option<i64>,
    uid: Option<i64>,
    user: Option<&str>,
) -> Meta {
    Meta {
        version: version.filter(|v| *v >= 0).map(|v| v as u32),
        timestamp: milli_timestamp.and_then(DateTime::from_timestamp_millis),
        changeset,
        uid,
        user: user.filter(|u| !u.is_empty()).map(str::to_string),
    }
}
