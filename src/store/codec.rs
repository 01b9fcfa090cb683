//! Encoding of catalog entries: `magic "EVCT" | version u8 | JSON`, so an entry of an unknown
//! version fails instead of being misread. Catalog keys are `kind/` followed by binary ids.

use serde::{de::DeserializeOwned, Serialize};

use super::{CatalogKey, StoreError};

const MAGIC: &[u8; 4] = b"EVCT";
const VERSION: u8 = 1;

/// Encodes a catalog value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    // Serializing our own plain structs to a Vec cannot fail (no maps with non-string keys,
    // no I/O); an empty JSON body would be caught by `decode` on read.
    let _ = serde_json::to_writer(&mut out, value);
    out
}

/// Decodes a catalog value stored under `key`.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    if bytes.len() < 5 || &bytes[..4] != MAGIC {
        return Err(corrupt("wrong magic".into()));
    }
    if bytes[4] != VERSION {
        return Err(corrupt(format!("unknown version {}", bytes[4])));
    }
    serde_json::from_slice(&bytes[5..]).map_err(|e| corrupt(e.to_string()))
}

/// Builds the catalog key `kind/` + each part.
pub fn key(kind: &str, parts: &[&[u8]]) -> CatalogKey {
    let mut out = Vec::with_capacity(kind.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>());
    out.extend_from_slice(kind.as_bytes());
    out.push(b'/');
    for part in parts {
        out.extend_from_slice(part);
    }
    CatalogKey(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let bytes = encode(&vec![1u32, 2]);
        assert_eq!(&bytes[..5], b"EVCT\x01");
        let back: Vec<u32> = decode(b"k", &bytes).unwrap();
        assert_eq!(back, vec![1, 2]);
        let mut future = bytes.clone();
        future[4] = 2;
        assert!(decode::<Vec<u32>>(b"k", &future).is_err());
        assert!(decode::<Vec<u32>>(b"k", b"JSON[1]").is_err());
    }
}
