//! Binary COPY helpers: values PostgreSQL reads in its binary wire format,
//! including the extension types (PostGIS geometry, hstore) whose type OIDs
//! are only known at run time.

use crate::osm::Tags;
use bytes::{BufMut, BytesMut};
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::GenericClient;
use std::error::Error;

/// Bytes already in a type's binary format (EWKB for geometry, an encoded
/// hstore), sent as they are.
#[derive(Debug)]
pub struct RawBinary<'a>(pub &'a [u8]);

impl ToSql for RawBinary<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// hstore's binary format (`hstore_recv`): pair count, then for each pair
/// the key and the value as length-prefixed bytes. Later duplicates of a
/// key are dropped, as hstore keeps the first.
pub fn encode_hstore(tags: &Tags) -> Vec<u8> {
    let mut seen = std::collections::HashSet::with_capacity(tags.len());
    let unique: Vec<&(String, String)> = tags
        .iter()
        .filter(|(k, _)| seen.insert(k.as_str()))
        .collect();
    let mut out = Vec::with_capacity(
        4 + unique
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(&(unique.len() as i32).to_be_bytes());
    for (key, value) in unique {
        out.extend_from_slice(&(key.len() as i32).to_be_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as i32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The run-time types of PostGIS `geometry` and `hstore`.
#[derive(Debug, Clone)]
pub struct ExtensionTypes {
    pub geometry: Type,
    pub hstore: Type,
}

impl ExtensionTypes {
    pub fn lookup(client: &mut impl GenericClient) -> Result<Self, postgres::Error> {
        let statement = client.prepare("SELECT NULL::geometry, NULL::hstore")?;
        let columns = statement.columns();
        Ok(ExtensionTypes {
            geometry: columns[0].type_().clone(),
            hstore: columns[1].type_().clone(),
        })
    }
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
        assert_eq!(
            encode_hstore(&tags),
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
