//! Binary COPY: rows encoded by hand in PostgreSQL's binary wire format,
//! extension types (PostGIS geometry as EWKB, hstore) included: binary COPY
//! fields carry no type OIDs, so these need no run-time type lookup.

use crate::osm::Tags;
use postgres::types::Type;
use postgres::{CopyInWriter, GenericClient};
use std::io::Write;

/// Why a statement or a COPY failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// PostgreSQL refused the statement or the data.
    #[error(transparent)]
    Db(#[from] postgres::Error),
    /// Sending COPY data failed (the connection broke mid-stream).
    #[error("sending COPY data: {0}")]
    Send(#[from] std::io::Error),
}

/// Encoded rows are sent in chunks of about this size: few, large
/// CopyData messages cost both sides less than many small ones.
const COPY_CHUNK: usize = 256 << 10;

/// A binary COPY (`COPY … FROM STDIN BINARY`) whose rows are encoded
/// here, field by field, straight into one buffer: no per-value trait
/// dispatch or type check, and the buffer goes out in large chunks. The
/// caller starts each row with [`begin_row`](Self::begin_row), then writes
/// one field per column given to [`start`](Self::start), in that order.
pub struct CopyStream<'c> {
    sink: CopyInWriter<'c>,
    buf: Vec<u8>,
    /// Fields per row: the number of columns.
    fields: i16,
}

impl<'c> CopyStream<'c> {
    /// Starts a binary COPY into `columns` (names as they go into SQL) of
    /// `table`.
    pub fn start(
        client: &'c mut impl GenericClient,
        table: &str,
        columns: &[&str],
    ) -> Result<Self, CopyError> {
        let statement = format!("COPY {table} ({}) FROM STDIN BINARY", columns.join(", "));
        let sink = client.copy_in(&statement)?;
        let mut buf = Vec::with_capacity(COPY_CHUNK + 16 * 1024);
        // Signature, flags, header extension length.
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        Ok(CopyStream {
            sink,
            buf,
            fields: columns.len() as i16,
        })
    }

    /// Starts a row, sending what is buffered first when the buffer is
    /// full.
    pub fn begin_row(&mut self) -> Result<(), CopyError> {
        if self.buf.len() >= COPY_CHUNK {
            self.sink.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.buf.extend_from_slice(&self.fields.to_be_bytes());
        Ok(())
    }

    /// A NULL field.
    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// An `int8` (`bigint`) field.
    pub fn int8(&mut self, value: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// An `int4` (`integer`) field.
    pub fn int4(&mut self, value: i32) {
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// An `int2` (`smallint`) field.
    pub fn int2(&mut self, value: i16) {
        self.buf.extend_from_slice(&2i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// A `float4` (`real`) field.
    pub fn float4(&mut self, value: f32) {
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_bits().to_be_bytes());
    }

    /// A `bool` field.
    pub fn bool(&mut self, value: bool) {
        self.buf.extend_from_slice(&1i32.to_be_bytes());
        self.buf.push(value as u8);
    }

    /// A field already in its type's binary format (text's is its UTF-8
    /// bytes; EWKB for geometry; an encoded hstore).
    pub fn bytes(&mut self, value: &[u8]) {
        self.buf
            .extend_from_slice(&(value.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(value);
    }

    /// A field whose bytes `write` appends; its length is filled in after.
    pub fn with_bytes(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        write(&mut self.buf);
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// A one-dimensional `int8[]` without nulls (`array_recv`'s format).
    pub fn int8_array(&mut self, values: &[i64]) {
        self.with_bytes(|out| {
            let dimensions: i32 = if values.is_empty() { 0 } else { 1 };
            out.extend_from_slice(&dimensions.to_be_bytes());
            out.extend_from_slice(&0i32.to_be_bytes()); // no nulls
            out.extend_from_slice(&(Type::INT8.oid() as i32).to_be_bytes());
            if !values.is_empty() {
                out.extend_from_slice(&(values.len() as i32).to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
                for value in values {
                    out.extend_from_slice(&8i32.to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
        });
    }

    /// A one-dimensional `text[]` without nulls (`array_recv`'s format;
    /// a text element's binary form is its UTF-8 bytes). The header is
    /// patched once the elements are counted; an empty array is `{}`.
    pub fn text_array<'s>(&mut self, values: impl IntoIterator<Item = &'s str>) {
        self.with_bytes(|out| {
            let header = out.len();
            out.extend_from_slice(&1i32.to_be_bytes()); // dimensions
            out.extend_from_slice(&0i32.to_be_bytes()); // no nulls
            out.extend_from_slice(&(Type::TEXT.oid() as i32).to_be_bytes());
            out.extend_from_slice(&0i32.to_be_bytes()); // count, patched
            out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
            let mut count = 0i32;
            for value in values {
                count += 1;
                out.extend_from_slice(&(value.len() as i32).to_be_bytes());
                out.extend_from_slice(value.as_bytes());
            }
            if count == 0 {
                // Zero dimensions, no dimension header.
                out.truncate(header);
                out.extend_from_slice(&0i32.to_be_bytes());
                out.extend_from_slice(&0i32.to_be_bytes());
                out.extend_from_slice(&(Type::TEXT.oid() as i32).to_be_bytes());
            } else {
                out[header + 12..header + 16].copy_from_slice(&count.to_be_bytes());
            }
        });
    }

    /// A `jsonb` field: format version 1, then the JSON text `write`
    /// appends.
    pub fn jsonb(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.with_bytes(|out| {
            out.push(1);
            write(out);
        });
    }

    /// Sends the rest and ends the COPY; returns the rows PostgreSQL took.
    pub fn finish(mut self) -> Result<u64, CopyError> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.sink.write_all(&self.buf)?;
        Ok(self.sink.finish()?)
    }
}

/// Appends `value` as a JSON string literal.
pub fn json_string(out: &mut Vec<u8>, value: &str) {
    serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
}

/// Appends tags as a JSON object (a later duplicate key wins in `jsonb`,
/// as it did when the tags were collected into a map).
pub fn json_tags(out: &mut Vec<u8>, tags: &Tags) {
    out.push(b'{');
    for (i, (key, value)) in tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, key);
        out.push(b':');
        json_string(out, value);
    }
    out.push(b'}');
}

/// hstore's binary format (`hstore_recv`): pair count, then for each pair
/// the key and the value as length-prefixed bytes. Later duplicates of a
/// key are dropped, as hstore keeps the first.
pub fn write_hstore(out: &mut Vec<u8>, tags: &Tags) {
    let count_at = out.len();
    out.extend_from_slice(&0i32.to_be_bytes());
    let mut count = 0i32;
    for (i, (key, value)) in tags.iter().enumerate() {
        // Tag lists are short: a scan beats hashing.
        if tags[..i].iter().any(|(earlier, _)| earlier == key) {
            continue;
        }
        count += 1;
        out.extend_from_slice(&(key.len() as i32).to_be_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as i32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hstore_encoding_keeps_first_duplicate() {
        let tags = vec![
            ("a".to_string(), "1".to_string()),
            ("bc".to_string(), "".to_string()),
            ("a".to_string(), "2".to_string()),
        ];
        let mut encoded = Vec::new();
        write_hstore(&mut encoded, &tags);
        assert_eq!(
            encoded,
            [
                &2i32.to_be_bytes()[..],
                &1i32.to_be_bytes(),
                b"a",
                &1i32.to_be_bytes(),
                b"1",
                &2i32.to_be_bytes(),
                b"bc",
                &0i32.to_be_bytes(),
            ]
            .concat()
        );
    }
}
