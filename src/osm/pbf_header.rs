//! Replication fields of an OSM PBF file's header block (`HeaderBlock` in
//! osmformat.proto, written by osmium and Geofabrik): the
//! feed, sequence and timestamp an extract was cut at, which is where
//! updates for it start.
//!
//! Only the first blob of the file is read, with a minimal protobuf
//! decoder: general PBF readers do not expose fields 32–34.

use chrono::{DateTime, Utc};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What the header says about replication. Each field is optional; which
/// combination is usable is the caller's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PbfReplicationHeader {
    /// `osmosis_replication_base_url`: the replication feed the extract
    /// follows.
    pub base_url: Option<String>,
    /// `osmosis_replication_sequence_number`: the feed's sequence number
    /// the extract is up to date with.
    pub sequence: Option<u64>,
    /// `osmosis_replication_timestamp`: the data's time.
    pub timestamp: Option<DateTime<Utc>>,
    /// `writingprogram`: the program that wrote the file.
    pub writing_program: Option<String>,
}

/// Why the header of a PBF file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PbfHeaderError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

/// Blob headers and header blocks are tiny; anything bigger is corruption.
const MAX_BLOB_HEADER: usize = 64 * 1024;
const MAX_BLOB: usize = 32 * 1024 * 1024;

/// Reads the replication fields from the header of the PBF file at `path`.
pub fn read_pbf_header(path: &Path) -> Result<PbfReplicationHeader, PbfHeaderError> {
    let fail = |message: String| PbfHeaderError {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut len = [0u8; 4];
    file.read_exact(&mut len).map_err(|e| {
        fail(format!(
            "not an OSM PBF file (cannot read blob length: {e})"
        ))
    })?;
    let header_len = u32::from_be_bytes(len) as usize;
    if header_len == 0 || header_len > MAX_BLOB_HEADER {
        return Err(fail(format!(
            "not an OSM PBF file (first blob header length {header_len})"
        )));
    }
    let mut blob_header = vec![0u8; header_len];
    file.read_exact(&mut blob_header)
        .map_err(|e| fail(format!("truncated blob header: {e}")))?;
    let (kind, data_size) = parse_blob_header(&blob_header).map_err(fail)?;
    if kind != "OSMHeader" {
        return Err(fail(format!(
            "not an OSM PBF file (first blob is {kind:?}, expected \"OSMHeader\")"
        )));
    }
    if data_size > MAX_BLOB {
        return Err(fail(format!(
            "header blob of {data_size} bytes is too large"
        )));
    }
    let mut blob = vec![0u8; data_size];
    file.read_exact(&mut blob)
        .map_err(|e| fail(format!("truncated header blob: {e}")))?;
    let block = blob_contents(&blob).map_err(fail)?;
    parse_header_block(&block).map_err(fail)
}

fn parse_blob_header(bytes: &[u8]) -> Result<(String, usize), String> {
    let mut kind = None;
    let mut size = None;
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Bytes(b)) => kind = Some(String::from_utf8_lossy(b).into_owned()),
            (3, Value::Varint(v)) => size = Some(v as usize),
            _ => {}
        }
    }
    match (kind, size) {
        (Some(k), Some(s)) => Ok((k, s)),
        _ => Err("blob header lacks type or datasize".into()),
    }
}

/// The uncompressed payload of a blob (raw or zlib; the other codecs are
/// not used for header blocks by any writer we know of).
fn blob_contents(bytes: &[u8]) -> Result<Vec<u8>, String> {
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Bytes(raw)) => return Ok(raw.to_vec()),
            (3, Value::Bytes(zlib)) => {
                let mut out = Vec::new();
                flate2::read::ZlibDecoder::new(zlib)
                    .take(MAX_BLOB as u64)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("corrupt zlib data in header blob: {e}"))?;
                return Ok(out);
            }
            (4..=7, Value::Bytes(_)) => {
                return Err("header blob uses an unsupported compression (lzma/lz4/zstd)".into())
            }
            _ => {}
        }
    }
    Err("header blob has no data".into())
}

fn parse_header_block(bytes: &[u8]) -> Result<PbfReplicationHeader, String> {
    let mut header = PbfReplicationHeader::default();
    for field in Fields::new(bytes) {
        match field? {
            (16, Value::Bytes(b)) => {
                header.writing_program = Some(String::from_utf8_lossy(b).into_owned())
            }
            // Negative or zero values mean "unset" (pyosmium ignores them too).
            (32, Value::Varint(v)) if (v as i64) > 0 => {
                header.timestamp = DateTime::from_timestamp(v as i64, 0)
            }
            (33, Value::Varint(v)) if (v as i64) > 0 => header.sequence = Some(v),
            (34, Value::Bytes(b)) if !b.is_empty() => {
                header.base_url = Some(String::from_utf8_lossy(b).into_owned())
            }
            _ => {}
        }
    }
    Ok(header)
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterates over the (field number, value) pairs of a protobuf message.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or("truncated protobuf varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("protobuf varint too long".into())
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or("truncated protobuf field")?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let item = (|| {
            let key = self.varint()?;
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => {
                    self.skip(8)?;
                    Value::Fixed
                }
                2 => {
                    let len = self.varint()? as usize;
                    Value::Bytes(self.skip(len)?)
                }
                5 => {
                    self.skip(4)?;
                    Value::Fixed
                }
                wire => return Err(format!("unsupported protobuf wire type {wire}")),
            };
            Ok((key >> 3, value))
        })();
        if item.is_err() {
            self.pos = self.bytes.len();
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn field_bytes(no: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(no << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn field_varint(no: u64, v: u64, out: &mut Vec<u8>) {
        varint(no << 3, out);
        varint(v, out);
    }

    /// Writes a PBF file holding only a header blob (zlib-compressed).
    fn write_pbf(block: &[u8]) -> tempfile::NamedTempFile {
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(block).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut blob = Vec::new();
        field_varint(2, block.len() as u64, &mut blob);
        field_bytes(3, &zlib, &mut blob);
        let mut header = Vec::new();
        field_bytes(1, b"OSMHeader", &mut header);
        field_varint(3, blob.len() as u64, &mut header);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&(header.len() as u32).to_be_bytes())
            .unwrap();
        file.write_all(&header).unwrap();
        file.write_all(&blob).unwrap();
        file
    }

    #[test]
    fn reads_replication_fields() {
        let mut block = Vec::new();
        field_bytes(4, b"OsmSchema-V0.6", &mut block);
        field_bytes(16, b"test-writer", &mut block);
        field_varint(32, 1375556402, &mut block);
        field_varint(33, 9999999, &mut block);
        field_bytes(
            34,
            b"http://example.com/europe/liechtenstein-updates",
            &mut block,
        );
        let file = write_pbf(&block);
        let header = read_pbf_header(file.path()).unwrap();
        assert_eq!(
            header.base_url.as_deref(),
            Some("http://example.com/europe/liechtenstein-updates")
        );
        assert_eq!(header.sequence, Some(9999999));
        assert_eq!(
            crate::replication::state::format_timestamp(header.timestamp.unwrap()),
            "2013-08-03T19:00:02Z"
        );
        assert_eq!(header.writing_program.as_deref(), Some("test-writer"));
    }

    #[test]
    fn header_without_replication_fields() {
        let mut block = Vec::new();
        field_bytes(4, b"OsmSchema-V0.6", &mut block);
        let file = write_pbf(&block);
        assert_eq!(
            read_pbf_header(file.path()).unwrap(),
            PbfReplicationHeader::default()
        );
    }

    #[test]
    fn non_pbf_file_is_a_clear_error() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"<?xml version='1.0'?><osm/>").unwrap();
        let err = read_pbf_header(file.path()).unwrap_err().to_string();
        assert!(err.contains("not an OSM PBF file"), "{err}");
        assert!(err.contains(&file.path().display().to_string()), "{err}");
    }

    #[test]
    fn reads_the_liechtenstein_extract_when_present() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/liechtenstein-2013-08-03.osm.pbf"
        ));
        if !path.exists() {
            eprintln!("skipping: {} not found", path.display());
            return;
        }
        let header = read_pbf_header(path).unwrap();
        assert_eq!(header.sequence, Some(9999999));
        assert_eq!(
            header.base_url.as_deref(),
            Some("http://example.com/europe/liechtenstein-updates")
        );
        assert_eq!(
            crate::replication::state::format_timestamp(header.timestamp.unwrap()),
            "2013-08-03T19:00:02Z"
        );
    }
}
