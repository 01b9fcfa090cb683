//! Read-only access to the store of earlier releases (sled 0.34 plus a value log), kept only
//! so `fjall_store::migrate` can copy a data dir written by them. Nothing here writes.
//!
//! Layout of `<data_dir>/store`: sled's `db` and `conf` files with the trees `catalog`
//! (entries as the catalog keeps them today) and `records` (`database id | record key` → the
//! sealed record, or for values over 2 KiB a 25-byte pointer into `values/`). A pointer is
//! `"EVVP" | version 1 | segment u64 LE | offset u64 LE | value_len u32 LE`; a segment file
//! `values/<segment as 16 hex digits>.evv` starts `"EVVL" | version u16 LE (1) | 0u16`, and
//! an entry is `value_len u32 LE | key_len u16 LE | crc32 u32 LE of (key ‖ value) | key | value`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{CatalogEntries, StoreError};

const POINTER_MAGIC: &[u8; 4] = b"EVVP";
const POINTER_LEN: usize = 25;
const SEGMENT_MAGIC: &[u8; 4] = b"EVVL";
const ENTRY_HEADER_LEN: usize = 10;

/// The sled store of a data dir, opened to be read.
pub struct SledLegacy {
    dir: PathBuf,
    catalog: sled::Tree,
    records: sled::Tree,
    // Dropped last: the trees belong to it.
    _db: sled::Db,
}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        StoreError::Backend(format!("the earlier sled store: {err}"))
    }
}

fn corrupt(key: String, reason: &str) -> StoreError {
    StoreError::Corrupt {
        key,
        reason: reason.to_string(),
    }
}

impl SledLegacy {
    /// Opens the sled store in `dir` (sled takes its file lock, so a daemon of an earlier
    /// release still running on the data dir is refused).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .open()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            catalog: db.open_tree("catalog")?,
            records: db.open_tree("records")?,
            _db: db,
        })
    }

    /// Every catalog entry, in key order.
    pub fn catalog(&self) -> Result<CatalogEntries, StoreError> {
        self.catalog
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Every record of every database, (full key, sealed value), in key order, large values
    /// read from the value log and checked against their key and CRC-32.
    pub fn records(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.records.iter().map(|item| {
            let (k, stored) = item?;
            let value = if stored.starts_with(POINTER_MAGIC) {
                self.read_value(&k, &stored)?
            } else {
                stored.to_vec()
            };
            Ok((k.to_vec(), value))
        })
    }

    fn read_value(&self, key: &[u8], pointer: &[u8]) -> Result<Vec<u8>, StoreError> {
        if pointer.len() != POINTER_LEN || pointer[4] != 1 {
            return Err(corrupt(
                hex(key),
                "value pointer of unknown version or length",
            ));
        }
        let u64_at = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&pointer[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        let (segment, offset) = (u64_at(5), u64_at(13));
        let value_len = u32::from_le_bytes([pointer[21], pointer[22], pointer[23], pointer[24]]);
        let path = self.dir.join("values").join(format!("{segment:016x}.evv"));
        let what = || format!("{}:{offset}", path.display());
        let io = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", what()));
        let file = File::open(&path).map_err(io)?;
        let mut magic = [0u8; 6];
        file.read_exact_at(&mut magic, 0).map_err(io)?;
        if &magic[..4] != SEGMENT_MAGIC || magic[4..6] != 1u16.to_le_bytes() {
            return Err(corrupt(what(), "not a value-log segment of version 1"));
        }
        let mut head = vec![0u8; ENTRY_HEADER_LEN + key.len()];
        file.read_exact_at(&mut head, offset).map_err(io)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let key_len = usize::from(u16::from_le_bytes([head[4], head[5]]));
        let crc = u32::from_le_bytes([head[6], head[7], head[8], head[9]]);
        if len != value_len || key_len != key.len() || &head[ENTRY_HEADER_LEN..] != key {
            return Err(corrupt(what(), "the entry belongs to another record"));
        }
        let mut value = vec![0u8; len as usize];
        file.read_exact_at(&mut value, offset + head.len() as u64)
            .map_err(io)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(key);
        hasher.update(&value);
        if hasher.finalize() != crc {
            return Err(corrupt(what(), "checksum mismatch"));
        }
        Ok(value)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
