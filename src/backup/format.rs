//! The backup file format.
//!
//! ```text
//!   0  magic "EVBK" | version u8 = 1 | 3 reserved zero bytes
//!   8  key slot A (96 bytes)
//! 104  key slot B (96 bytes)
//! 200  header length u32 BE
//! 204  header: JSON of `BackupHeader` (immutable: id, database, backup key id, chunk size,
//!      record count, nonce prefix)
//!   …  payload: STREAM chunks (`crypto::stream`) with AAD = bytes 0..8 || header bytes
//!
//! key slot: seq u32 | key version u32 | wrapped len u16 | wrapped DEK (72 bytes, zero
//!           padded) | checksum: first 8 bytes of SHA-256 over the preceding 82 bytes | 6 zero
//! ```
//!
//! The wrapped backup DEK lives in two slots so that rotating the backup key rewrites only
//! the inactive slot (then fsync): a torn write damages at most the slot being written, and
//! the reader takes the valid slot with the higher `seq`. Rotation is therefore flat in backup
//! size. The slots are not covered by the payload's AAD (they change); the wrapped DEK is
//! itself an authenticated envelope bound to the backup id and backup key.
//!
//! Payload plaintext: records as `key len u32 | key | value len u32 | value`, in key order.

use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// File magic.
pub const MAGIC: &[u8; 4] = b"EVBK";
/// Format version; others are refused.
pub const VERSION: u8 = 1;
const PREAMBLE_LEN: usize = 8;
const SLOT_LEN: usize = 96;
const WRAPPED_MAX: usize = 72;
const SLOTS_END: u64 = (PREAMBLE_LEN + 2 * SLOT_LEN) as u64;
/// Largest header accepted (it holds a few names and ids).
const HEADER_MAX: usize = 64 * 1024;

/// Errors reading or writing backup files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupFormatError {
    /// Not a backup file, an unknown version, or a damaged header.
    #[error("not a valid envault backup: {0}")]
    Invalid(&'static str),
    /// The payload failed to authenticate (truncated, reordered, spliced, altered).
    #[error("backup payload failed to authenticate (truncated, altered or from another backup)")]
    Payload,
    /// I/O.
    #[error("backup I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Database metadata carried in a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackedUpDatabase {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// CRN.
    pub crn: String,
    /// Its records key.
    pub key_id: Uuid,
}

/// The immutable header, bound to every payload chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    /// Backup id.
    pub backup_id: Uuid,
    /// RFC 3339.
    pub created_at: String,
    /// The database backed up.
    pub database: BackedUpDatabase,
    /// Root key wrapping the backup DEK.
    pub backup_key_id: Uuid,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Records in the payload.
    pub record_count: u64,
    /// STREAM nonce prefix, hex.
    pub nonce_prefix: String,
}

/// One wrapped-DEK slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// Higher wins.
    pub seq: u32,
    /// Backup key version that wrapped the DEK.
    pub key_version: u32,
    /// The wrapped DEK envelope.
    pub wrapped: Vec<u8>,
}

impl KeySlot {
    fn encode(&self) -> Result<[u8; SLOT_LEN], BackupFormatError> {
        if self.wrapped.len() > WRAPPED_MAX {
            return Err(BackupFormatError::Invalid("wrapped DEK too long"));
        }
        let mut out = [0u8; SLOT_LEN];
        out[0..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.key_version.to_be_bytes());
        out[8..10].copy_from_slice(&(self.wrapped.len() as u16).to_be_bytes());
        out[10..10 + self.wrapped.len()].copy_from_slice(&self.wrapped);
        let digest = Sha256::digest(&out[..82]);
        out[82..90].copy_from_slice(&digest[..8]);
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != SLOT_LEN || bytes.iter().all(|b| *b == 0) {
            return None;
        }
        let digest = Sha256::digest(&bytes[..82]);
        if bytes[82..90] != digest[..8] || bytes[90..].iter().any(|b| *b != 0) {
            return None;
        }
        let len = u16::from_be_bytes([bytes[8], bytes[9]]) as usize;
        if len > WRAPPED_MAX {
            return None;
        }
        Some(Self {
            seq: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            key_version: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            wrapped: bytes[10..10 + len].to_vec(),
        })
    }
}

/// The parsed front of a backup file.
#[derive(Debug, Clone)]
pub struct BackupFront {
    /// Header.
    pub header: BackupHeader,
    /// The header's exact bytes (bound as AAD).
    pub header_bytes: Vec<u8>,
    /// The valid slot with the highest seq.
    pub slot: KeySlot,
    /// Which slot that is (0 = A, 1 = B).
    pub slot_index: usize,
    /// Where the payload starts.
    pub payload_offset: u64,
}

impl BackupFront {
    /// The AAD of every payload chunk.
    pub fn aad(&self) -> Vec<u8> {
        stream_aad(&self.header_bytes)
    }

    /// The nonce prefix.
    pub fn prefix(&self) -> Result<[u8; 7], BackupFormatError> {
        let text = &self.header.nonce_prefix;
        // Attacker-controlled text: check it is 14 ASCII hex digits before slicing it by byte
        // offsets (a multi-byte character would otherwise split mid-character and panic).
        if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BackupFormatError::Invalid("nonce prefix"));
        }
        let mut out = [0u8; 7];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| BackupFormatError::Invalid("nonce prefix"))?;
        }
        Ok(out)
    }
}

fn preamble() -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..4].copy_from_slice(MAGIC);
    p[4] = VERSION;
    p
}

/// The AAD of payload chunks for a header.
pub fn stream_aad(header_bytes: &[u8]) -> Vec<u8> {
    let mut aad = preamble().to_vec();
    aad.extend_from_slice(header_bytes);
    aad
}

/// Writes preamble, slot A (slot B empty) and header; returns the header bytes.
pub fn write_front(
    out: &mut impl Write,
    header: &BackupHeader,
    slot: &KeySlot,
) -> Result<Vec<u8>, BackupFormatError> {
    let header_bytes =
        serde_json::to_vec(header).map_err(|_| BackupFormatError::Invalid("header"))?;
    out.write_all(&preamble())?;
    out.write_all(&slot.encode()?)?;
    out.write_all(&[0u8; SLOT_LEN])?;
    out.write_all(&(header_bytes.len() as u32).to_be_bytes())?;
    out.write_all(&header_bytes)?;
    Ok(header_bytes)
}

/// Reads and checks the front of a backup file.
pub fn read_front(input: &mut impl Read) -> Result<BackupFront, BackupFormatError> {
    let mut front = [0u8; SLOTS_END as usize + 4];
    input
        .read_exact(&mut front)
        .map_err(|_| BackupFormatError::Invalid("file too short"))?;
    if &front[..4] != MAGIC {
        return Err(BackupFormatError::Invalid("wrong magic"));
    }
    if front[4] != VERSION || front[5..8] != [0, 0, 0] {
        return Err(BackupFormatError::Invalid("unknown version"));
    }
    let slots = [
        KeySlot::decode(&front[PREAMBLE_LEN..PREAMBLE_LEN + SLOT_LEN]),
        KeySlot::decode(&front[PREAMBLE_LEN + SLOT_LEN..SLOTS_END as usize]),
    ];
    let (slot_index, slot) = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.clone().map(|s| (i, s)))
        .max_by_key(|(_, s)| s.seq)
        .ok_or(BackupFormatError::Invalid("no valid key slot"))?;
    let len = u32::from_be_bytes([
        front[SLOTS_END as usize],
        front[SLOTS_END as usize + 1],
        front[SLOTS_END as usize + 2],
        front[SLOTS_END as usize + 3],
    ]) as usize;
    if len == 0 || len > HEADER_MAX {
        return Err(BackupFormatError::Invalid("header length"));
    }
    let mut header_bytes = vec![0u8; len];
    input
        .read_exact(&mut header_bytes)
        .map_err(|_| BackupFormatError::Invalid("file too short"))?;
    let header: BackupHeader = serde_json::from_slice(&header_bytes)
        .map_err(|_| BackupFormatError::Invalid("header is not valid"))?;
    if header.chunk_size as usize != crate::crypto::stream::CHUNK_SIZE {
        return Err(BackupFormatError::Invalid("unsupported chunk size"));
    }
    Ok(BackupFront {
        header,
        header_bytes,
        slot,
        slot_index,
        payload_offset: SLOTS_END + 4 + len as u64,
    })
}

/// Writes `slot` into the inactive slot position of an open backup file and fsyncs it.
pub fn write_slot(
    file: &mut std::fs::File,
    index: usize,
    slot: &KeySlot,
) -> Result<(), BackupFormatError> {
    let offset = (PREAMBLE_LEN + index * SLOT_LEN) as u64;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&slot.encode()?)?;
    file.sync_all()?;
    Ok(())
}

/// Where key slot `index` lives in a backup file, and `slot` encoded for it (for targets that
/// rewrite a copy instead of writing in place).
pub fn encode_slot_at(index: usize, slot: &KeySlot) -> Result<(u64, Vec<u8>), BackupFormatError> {
    if index > 1 {
        return Err(BackupFormatError::Invalid("key slot index"));
    }
    Ok((
        (PREAMBLE_LEN + index * SLOT_LEN) as u64,
        slot.encode()?.to_vec(),
    ))
}

/// Appends one record to a payload buffer.
pub fn encode_record(buffer: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    buffer.extend_from_slice(&(key.len() as u32).to_be_bytes());
    buffer.extend_from_slice(key);
    buffer.extend_from_slice(&(value.len() as u32).to_be_bytes());
    buffer.extend_from_slice(value);
}

/// Takes complete records off the front of `buffer`, leaving a partial one in place.
pub fn drain_records(
    buffer: &mut Vec<u8>,
    mut sink: impl FnMut(&[u8], &[u8]) -> Result<(), BackupFormatError>,
) -> Result<(), BackupFormatError> {
    let mut pos = 0;
    loop {
        let rest = &buffer[pos..];
        if rest.len() < 4 {
            break;
        }
        let key_len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + key_len + 4 {
            break;
        }
        let v = 4 + key_len;
        let value_len =
            u32::from_be_bytes([rest[v], rest[v + 1], rest[v + 2], rest[v + 3]]) as usize;
        if rest.len() < v + 4 + value_len {
            break;
        }
        sink(&rest[4..4 + key_len], &rest[v + 4..v + 4 + value_len])?;
        pos += v + 4 + value_len;
    }
    buffer.drain(..pos);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BackupHeader {
        BackupHeader {
            backup_id: Uuid::from_u128(1),
            created_at: "2026-01-01T00:00:00Z".into(),
            database: BackedUpDatabase {
                id: Uuid::from_u128(2),
                name: "db".into(),
                crn: "crn:x".into(),
                key_id: Uuid::from_u128(3),
            },
            backup_key_id: Uuid::from_u128(3),
            chunk_size: crate::crypto::stream::CHUNK_SIZE as u32,
            record_count: 0,
            nonce_prefix: "00112233445566".into(),
        }
    }

    #[test]
    fn front_round_trip_and_slot_choice() {
        let slot = KeySlot {
            seq: 1,
            key_version: 1,
            wrapped: vec![7; 69],
        };
        let mut bytes = Vec::new();
        write_front(&mut bytes, &header(), &slot).unwrap();
        let front = read_front(&mut bytes.as_slice()).unwrap();
        assert_eq!(front.header, header());
        assert_eq!(front.slot, slot);
        assert_eq!(front.slot_index, 0);
        assert_eq!(front.payload_offset, bytes.len() as u64);
        // A newer slot B wins; a torn slot B (bad checksum) falls back to A.
        let newer = KeySlot {
            seq: 2,
            key_version: 2,
            wrapped: vec![8; 69],
        };
        bytes[104..200].copy_from_slice(&newer.encode().unwrap());
        assert_eq!(read_front(&mut bytes.as_slice()).unwrap().slot, newer);
        bytes[150] ^= 1;
        assert_eq!(read_front(&mut bytes.as_slice()).unwrap().slot, slot);
        let mut bad = bytes.clone();
        bad[4] = 2;
        assert!(read_front(&mut bad.as_slice()).is_err());
    }

    #[test]
    fn records_split_anywhere() {
        let mut encoded = Vec::new();
        encode_record(&mut encoded, b"a", b"1");
        encode_record(&mut encoded, b"bb", &[9; 300]);
        for split in 0..encoded.len() {
            let mut buffer = encoded[..split].to_vec();
            let mut seen = Vec::new();
            drain_records(&mut buffer, |k, v| {
                seen.push((k.to_vec(), v.len()));
                Ok(())
            })
            .unwrap();
            buffer.extend_from_slice(&encoded[split..]);
            drain_records(&mut buffer, |k, v| {
                seen.push((k.to_vec(), v.len()));
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, vec![(b"a".to_vec(), 1), (b"bb".to_vec(), 300)]);
            assert!(buffer.is_empty());
        }
    }
}
