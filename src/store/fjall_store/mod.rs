//! The embedded backend: one fjall database (an LSM tree with a write-ahead journal) in
//! `<data_dir>/fjall`, with two keyspaces.
//!
//! - `catalog`: `kind/id` → [`super::codec`]-encoded entries; applied in atomic batches.
//! - `records`: `database id (16 bytes) | record key` → the sealed record envelope. Every
//!   value is kept in fjall's blob files (key–value separation, [`BLOB_THRESHOLD`]), each
//!   blob under its own checksum: a damaged byte in one record's value fails that record
//!   only, where a table block of inline values would fail all its neighbours too. The LSM
//!   tables hold keys and blob pointers, and compaction does not rewrite the values.
//!
//! Writes go to the journal's buffer; [`Store::flush`] is the only durability point: one
//! `persist(SyncData)` of the journal per group commit, which makes every write before it
//! durable in order (fjall orders memtable flushes after the journal).
//!
//! Memory: the block cache is capped by `[store] cache_size` and scans go through it; the
//! records' memtable is flushed to a table at [`MEMTABLE`] bytes. So a backup or restore of
//! any size stays within both.

pub mod migrate;

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};

use super::{CatalogOp, Store, StoreError};

/// Record values of at least this many bytes live in blob files: all of them (a sealed
/// record is never empty). Stored with the keyspace when it is created: a store created with
/// an earlier threshold keeps it (its records read the same either way).
pub const BLOB_THRESHOLD: u32 = 1;
/// Largest memtable of one keyspace.
const MEMTABLE: u64 = 8 << 20;
/// Most bytes all memtables (the active ones and those waiting to be flushed) may hold before
/// a bulk write (restore, migration) waits for a flush: one full memtable being flushed while the next fills.
/// fjall rotates a full memtable only once a background worker gets to it, so under a fast
/// writer (a restore) the active one otherwise grows far past [`MEMTABLE`]: hundreds of MiB.
const WRITE_BUFFER_CAP: u64 = 2 * MEMTABLE;
/// Longest a bulk write waits for [`WRITE_BUFFER_CAP`] (then it goes ahead anyway).
const WRITE_BUFFER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// fjall's background threads (memtable flushes and compactions). With more than one, fjall
/// 3.1's first worker hands every compaction back to the queue and takes the next message,
/// which is that compaction again while the other worker is busy: it spins on its channel for
/// as long as a compaction runs (under callgrind, 42% of the daemon's instructions during a
/// PUT load, 1.4 million channel round trips in 12 s). One worker runs flushes and
/// compactions in turn and never spins.
const BACKGROUND_WORKERS: usize = 1;

/// fjall-backed [`Store`].
pub struct FjallStore {
    dir: PathBuf,
    db: Database,
    catalog: Keyspace,
    records: Keyspace,
}

impl FjallStore {
    /// Opens or creates the store in `dir`, with a block cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let opened = Database::builder(dir)
            .cache_size(cache_bytes)
            .manual_journal_persist(true)
            .worker_threads(BACKGROUND_WORKERS)
            .open();
        let db = opened.map_err(|err| open_error(dir, err))?;
        let catalog = db
            .keyspace("catalog", || {
                KeyspaceCreateOptions::default().manual_journal_persist(true)
            })
            .map_err(|err| open_error(dir, err))?;
        let records = db
            .keyspace("records", || {
                KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(MEMTABLE)
                    .with_kv_separation(Some(
                        KvSeparationOptions::default().separation_threshold(BLOB_THRESHOLD),
                    ))
            })
            .map_err(|err| open_error(dir, err))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db,
            catalog,
            records,
        })
    }

    /// Every record of every database, (full key, sealed value), in key order (migration and
    /// tests).
    pub fn all_records(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.records.iter().map(|g| {
            let (k, v) = g.into_inner().map_err(|e| self.read_error(e))?;
            Ok((k.to_vec(), v.to_vec()))
        })
    }

    /// Writes (full key, sealed value) records in one batch, not yet durable (migration).
    pub fn put_raw(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StoreError> {
        self.bound_write_buffer();
        let mut batch = self.db.batch();
        for (k, v) in records {
            batch.insert(&self.records, k, v);
        }
        batch.commit().map_err(|e| self.write_error(e))
    }

    /// Makes everything durable, tables included (end of a migration).
    pub fn persist_all(&self) -> Result<(), StoreError> {
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.write_error(e))
    }

    /// A failed read: damaged bytes are the record's integrity problem, the rest the store's.
    fn read_error(&self, err: fjall::Error) -> StoreError {
        if is_damage(&err) {
            StoreError::Damaged(format!(
                "stored bytes in {} fail their checksum ({err}): a record's value (that \
                 record only) or a table block (the records in it) cannot be read",
                self.dir.display()
            ))
        } else {
            StoreError::Backend(format!("store {}: {err}", self.dir.display()))
        }
    }

    /// Waits (a bounded time) while the memtables hold more than [`WRITE_BUFFER_CAP`], so
    /// that writing faster than fjall flushes does not grow the daemon without bound.
    fn bound_write_buffer(&self) {
        if self.db.write_buffer_size() <= WRITE_BUFFER_CAP {
            return;
        }
        let started = std::time::Instant::now();
        while self.db.write_buffer_size() > WRITE_BUFFER_CAP
            && started.elapsed() < WRITE_BUFFER_WAIT
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn write_error(&self, err: fjall::Error) -> StoreError {
        StoreError::Backend(format!("store {}: {err}", self.dir.display()))
    }

    fn after_key(database: &[u8; 16], after: Option<&[u8]>, floor: Vec<u8>) -> Vec<u8> {
        match after {
            Some(after) => {
                // Strictly after `after`: its successor in byte order is `after || 0x00`.
                let mut start = record_key(database, after);
                start.push(0);
                start.max(floor)
            }
            None => floor,
        }
    }
}

/// Whether fjall's error means bytes on disk are damaged (as opposed to I/O or a full disk).
fn is_damage(err: &fjall::Error) -> bool {
    use fjall::LsmError;
    matches!(
        err,
        fjall::Error::Storage(
            LsmError::ChecksumMismatch { .. }
                | LsmError::InvalidTrailer
                | LsmError::InvalidHeader(_)
                | LsmError::InvalidTag(_)
                | LsmError::Decompress(_)
        ) | fjall::Error::InvalidTrailer
            | fjall::Error::InvalidTag(_)
            | fjall::Error::Decompress(_)
            | fjall::Error::JournalRecovery(_)
    )
}

/// Why the store in `dir` does not open, and what the operator can do about it.
fn open_error(dir: &Path, err: fjall::Error) -> StoreError {
    let dir = dir.display();
    match err {
        fjall::Error::Locked => StoreError::Backend(format!(
            "the store {dir} is locked by another process: stop the other envault daemon using \
             this data dir, then start again"
        )),
        fjall::Error::Io(io) => StoreError::Backend(format!(
            "the store {dir} could not be opened: {io}; check the directory's permissions and \
             free space, then start again"
        )),
        other if is_damage(&other) => StoreError::Backend(format!(
            "the store {dir} is damaged ({other}): stop envault, move {dir} aside and restore \
             the data dir from a copy or the databases from their backups"
        )),
        other => StoreError::Backend(format!(
            "the store {dir} could not be opened ({other}): if it was written by a newer envault, \
             run that version; otherwise restore the data dir from a copy"
        )),
    }
}

fn record_key(database: &[u8; 16], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + key.len());
    out.extend_from_slice(database);
    out.extend_from_slice(key);
    out
}

impl Store for FjallStore {
    fn catalog_apply(&self, ops: Vec<CatalogOp>) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for op in ops {
            match op {
                CatalogOp::Put(key, value) => batch.insert(&self.catalog, key.0, value),
                CatalogOp::Delete(key) => batch.remove(&self.catalog, key.0),
            }
        }
        batch.commit().map_err(|e| self.write_error(e))
    }

    fn catalog_scan(&self, prefix: &[u8]) -> Result<super::CatalogEntries, StoreError> {
        self.catalog
            .prefix(prefix)
            .map(|g| {
                let (k, v) = g.into_inner().map_err(|e| self.read_error(e))?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn record_put(
        &self,
        database: &[u8; 16],
        key: &[u8],
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.records
            .insert(record_key(database, key), sealed)
            .map_err(|e| self.write_error(e))
    }

    fn record_put_bulk(
        &self,
        database: &[u8; 16],
        key: &[u8],
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        // On a blocking thread (a restore): waiting here cannot stall request handling.
        self.bound_write_buffer();
        self.record_put(database, key, sealed)
    }

    fn record_get(&self, database: &[u8; 16], key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .records
            .get(record_key(database, key))
            .map_err(|e| self.read_error(e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn record_delete(&self, database: &[u8; 16], key: &[u8]) -> Result<bool, StoreError> {
        let key = record_key(database, key);
        let existed = self
            .records
            .contains_key(&key)
            .map_err(|e| self.read_error(e))?;
        if existed {
            self.records.remove(key).map_err(|e| self.write_error(e))?;
        }
        Ok(existed)
    }

    fn record_keys(
        &self,
        database: &[u8; 16],
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let full_prefix = record_key(database, prefix);
        let start = Self::after_key(database, after, full_prefix.clone());
        let mut keys = Vec::with_capacity(limit.min(1024));
        for g in self.records.range(start..) {
            if keys.len() >= limit {
                break;
            }
            // Keys only: a separated value is never read.
            let k = g.key().map_err(|e| self.read_error(e))?;
            if !k.starts_with(&full_prefix) {
                break;
            }
            keys.push(k[16..].to_vec());
        }
        Ok(keys)
    }

    fn record_page(
        &self,
        database: &[u8; 16],
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<super::CatalogEntries, StoreError> {
        let start = Self::after_key(database, after, database.to_vec());
        let mut out = Vec::with_capacity(limit.min(4096));
        let mut bytes = 0usize;
        for g in self.records.range(start..) {
            if out.len() >= limit || bytes >= max_bytes {
                break;
            }
            let (k, v) = g.into_inner().map_err(|e| self.read_error(e))?;
            if !k.starts_with(database) {
                break;
            }
            bytes = bytes.saturating_add(v.len());
            out.push((k[16..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn record_count(&self, database: &[u8; 16]) -> Result<u64, StoreError> {
        let mut count = 0;
        for g in self.records.prefix(database) {
            g.key().map_err(|e| self.read_error(e))?;
            count += 1;
        }
        Ok(count)
    }

    fn records_purge(&self, database: &[u8; 16]) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            // Bounded batches, so purging a huge database never holds all its keys.
            let mut keys = Vec::new();
            for g in self.records.prefix(database).take(10_000) {
                keys.push(g.key().map_err(|e| self.read_error(e))?);
            }
            if keys.is_empty() {
                return Ok(removed);
            }
            removed += keys.len() as u64;
            let mut batch = self.db.batch();
            for k in keys {
                batch.remove(&self.records, k);
            }
            batch.commit().map_err(|e| self.write_error(e))?;
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .persist(PersistMode::SyncData)
            .map_err(|e| self.write_error(e))
    }
}

#[cfg(test)]
mod tests;
