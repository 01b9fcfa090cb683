//! The embedded backend: one sled database with three trees, plus a value log.
//!
//! - `catalog`: `kind/id` → [`super::codec`]-encoded entries; applied in atomic batches.
//! - `records`: `database id (16 bytes) | record key` → the sealed record envelope when it is at
//!   most [`value_log::INLINE_MAX`] bytes, else a [`value_log::Pointer`] into the value log
//!   (`<dir>/values/`), which keeps large values out of sled's page cache.
//! - `value_stats`: segment id → dead bytes in it, so compaction knows after a restart which
//!   segments are worth it (approximate after a crash, which only delays or hastens one).

mod compaction;
mod sled_sync;
pub mod value_log;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sled_sync::SledFiles;
use value_log::{Pointer, ValueLog, INLINE_MAX, SEGMENT_MAX};

use super::{CatalogOp, Store, StoreError};

/// sled-backed [`Store`].
pub struct SledStore {
    shared: Arc<SledShared>,
    catalog: sled::Tree,
    compactor: Mutex<Option<JoinHandle<()>>>,
}

/// What the request paths and the compaction thread share.
struct SledShared {
    db: sled::Db,
    /// sled's files, for the sync its own flush leaves out.
    sled_files: SledFiles,
    records: sled::Tree,
    value_stats: sled::Tree,
    values: ValueLog,
    /// Set when the store is dropped: compaction stops between entries.
    closing: AtomicBool,
    compacting: AtomicBool,
    compaction_lock: Mutex<()>,
    compacted_segments: std::sync::atomic::AtomicU64,
    /// Dead-byte counts changed since they were last written to `value_stats`.
    stats_dirty: AtomicBool,
    /// Segments compaction found damaged; left alone until the next start.
    damaged: Mutex<BTreeSet<u64>>,
}

impl SledStore {
    /// Opens or creates the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_segment_max(dir, SEGMENT_MAX)
    }

    /// [`SledStore::open`] with value-log segments closed at `segment_max` bytes (tests use
    /// small ones to exercise compaction).
    pub fn open_with_segment_max(dir: &Path, segment_max: u64) -> Result<Self, StoreError> {
        // Flushing is ours to drive (group commit before each acknowledgement); sled's own
        // periodic flush stays on as a backstop. sled's cache bound does not hold for a scan
        // (see `value_log`), which is why large values live outside it; small records still
        // pass through it.
        let db = open_sled(dir)?;
        let catalog = db.open_tree("catalog")?;
        let records = db.open_tree("records")?;
        let value_stats = db.open_tree("value_stats")?;
        let values = ValueLog::open(&dir.join("values"), segment_max)?;
        let sled_files = SledFiles::open(dir)?;
        let segments = values.stats();
        for item in value_stats.iter() {
            let (id, dead) = item?;
            match (
                <[u8; 8]>::try_from(id.as_ref()),
                <[u8; 8]>::try_from(dead.as_ref()),
            ) {
                (Ok(id), Ok(dead)) if segments.contains_key(&u64::from_be_bytes(id)) => {
                    values.set_dead(u64::from_be_bytes(id), u64::from_le_bytes(dead));
                }
                _ => {
                    value_stats.remove(id)?;
                }
            }
        }
        let store = Self {
            shared: Arc::new(SledShared {
                db,
                sled_files,
                records,
                value_stats,
                values,
                closing: AtomicBool::new(false),
                compacting: AtomicBool::new(false),
                compaction_lock: Mutex::new(()),
                compacted_segments: std::sync::atomic::AtomicU64::new(0),
                stats_dirty: AtomicBool::new(false),
                damaged: Mutex::new(BTreeSet::new()),
            }),
            catalog,
            compactor: Mutex::new(None),
        };
        store.start_compaction_if_due();
        Ok(store)
    }

    /// Starts a compaction thread when a segment is due and none is running.
    fn start_compaction_if_due(&self) {
        let shared = &self.shared;
        if shared.compacting.load(Ordering::Acquire) || compaction::candidates(shared).is_empty() {
            return;
        }
        if shared.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let worker = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("envault-compact".into())
            .spawn(move || {
                if let Err(err) = compaction::run(&worker) {
                    tracing::warn!(%err, "value log compaction failed; it is retried later");
                }
                worker.compacting.store(false, Ordering::Release);
            });
        match spawned {
            Ok(handle) => {
                let mut slot = self.compactor.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(finished) = slot.replace(handle) {
                    // `compacting` was false, so that thread is done or about to be.
                    let _ = finished.join();
                }
            }
            Err(err) => {
                shared.compacting.store(false, Ordering::Release);
                tracing::warn!(%err, "could not start value log compaction");
            }
        }
    }

    /// Every record of every database, (full key, sealed value), in key order, values read
    /// from the value log where sled holds a pointer (migration to the fjall store).
    pub fn all_records(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.shared.records.iter().filter_map(|item| {
            let (k, stored) = match item {
                Ok(kv) => kv,
                Err(err) => return Some(Err(err.into())),
            };
            match self.shared.resolve(&k, stored) {
                Ok(Some(value)) => Some(Ok((k.to_vec(), value))),
                Ok(None) => None,
                Err(err) => Some(Err(err)),
            }
        })
    }

    /// Runs compaction now, on this thread, and waits for it (tests).
    #[cfg(test)]
    fn compact_now(&self) -> Result<(), StoreError> {
        compaction::run(&self.shared)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        let handle = self
            .compactor
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl SledShared {
    fn put(&self, key: Vec<u8>, sealed: Vec<u8>) -> Result<(), StoreError> {
        let old = if sealed.len() > INLINE_MAX {
            let pointer = self.values.append(&key, &sealed)?;
            match self.records.insert(key.as_slice(), &pointer.encode()[..]) {
                Ok(old) => old,
                Err(err) => {
                    self.values.mark_dead(&pointer, key.len());
                    return Err(err.into());
                }
            }
        } else {
            self.records.insert(key.as_slice(), sealed)?
        };
        if let Some(old) = old {
            self.release(key.len(), &old);
        }
        Ok(())
    }

    /// Counts a replaced or removed sled value's log entry, if it had one, as dead.
    fn release(&self, key_len: usize, stored: &[u8]) {
        if let Ok(Some(pointer)) = Pointer::decode(stored) {
            self.values.mark_dead(&pointer, key_len);
            self.stats_dirty.store(true, Ordering::Release);
        }
    }

    /// The sealed record a sled value stands for: itself, or what its pointer names.
    fn resolve(&self, key: &[u8], stored: sled::IVec) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stored = stored;
        // A pointer whose segment is gone was moved by compaction after we read it: read the
        // record's pointer again. Each retry means another compaction finished meanwhile.
        for _ in 0..8 {
            let Some(pointer) = Pointer::decode(&stored)? else {
                return Ok(Some(stored.to_vec()));
            };
            if let Some(value) = self.values.read(&pointer, key)? {
                return Ok(Some(value));
            }
            match self.records.get(key)? {
                Some(current) => stored = current,
                None => return Ok(None),
            }
        }
        Err(StoreError::Backend(
            "value log: a record's value kept moving while it was read".into(),
        ))
    }

    /// Values before pointers: a pointer made durable never names bytes that are not.
    fn flush(&self) -> Result<(), StoreError> {
        self.values.sync()?;
        if self.stats_dirty.swap(false, Ordering::AcqRel) {
            for (id, stats) in self.values.stats() {
                self.value_stats
                    .insert(id.to_be_bytes(), &stats.dead.to_le_bytes()[..])?;
            }
        }
        self.db.flush()?;
        self.sled_files.sync()
    }

    fn damaged(&self, id: u64) -> bool {
        self.damaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    fn mark_damaged(&self, id: u64) {
        self.damaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }

    fn forget_segment(&self, id: u64) -> Result<(), StoreError> {
        self.value_stats.remove(id.to_be_bytes())?;
        Ok(())
    }
}

/// Opens sled, waiting up to a second for its file lock: a store dropped an instant ago
/// (a restart in the same process, a test reopening) may still be releasing it from sled's
/// flusher thread.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let mut attempts = 0;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .open()
        {
            Err(sled::Error::Io(err))
                if attempts < 20 && err.to_string().contains("could not acquire lock") =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

fn record_key(database: &[u8; 16], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + key.len());
    out.extend_from_slice(database);
    out.extend_from_slice(key);
    out
}

impl Store for SledStore {
    fn catalog_apply(&self, ops: Vec<CatalogOp>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                CatalogOp::Put(key, value) => batch.insert(key.0, value),
                CatalogOp::Delete(key) => batch.remove(key.0),
            }
        }
        Ok(self.catalog.apply_batch(batch)?)
    }

    fn catalog_scan(&self, prefix: &[u8]) -> Result<super::CatalogEntries, StoreError> {
        self.catalog
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item?;
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
        self.shared.put(record_key(database, key), sealed)
    }

    fn record_get(&self, database: &[u8; 16], key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = record_key(database, key);
        match self.shared.records.get(&key)? {
            Some(stored) => self.shared.resolve(&key, stored),
            None => Ok(None),
        }
    }

    fn record_delete(&self, database: &[u8; 16], key: &[u8]) -> Result<bool, StoreError> {
        let key = record_key(database, key);
        match self.shared.records.remove(&key)? {
            Some(old) => {
                self.shared.release(key.len(), &old);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn record_keys(
        &self,
        database: &[u8; 16],
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let records = &self.shared.records;
        let full_prefix = record_key(database, prefix);
        let mut keys = Vec::with_capacity(limit.min(1024));
        let iter = match after {
            Some(after) => {
                // Start strictly after `after`: its successor in byte order is `after || 0x00`.
                let mut start = record_key(database, after);
                start.push(0);
                let start = if start > full_prefix {
                    start
                } else {
                    full_prefix.clone()
                };
                records.range(start..)
            }
            None => records.range(full_prefix.clone()..),
        };
        for item in iter {
            let (k, _) = item?;
            if !k.starts_with(&full_prefix) || keys.len() >= limit {
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
        let start = match after {
            Some(after) => {
                let mut start = record_key(database, after);
                start.push(0);
                start
            }
            None => database.to_vec(),
        };
        let mut out = Vec::with_capacity(limit.min(4096));
        let mut bytes = 0usize;
        for item in self.shared.records.range(start..) {
            let (k, stored) = item?;
            if !k.starts_with(database) || out.len() >= limit || bytes >= max_bytes {
                break;
            }
            // A record deleted since the range read it is simply not in the page.
            if let Some(value) = self.shared.resolve(&k, stored)? {
                bytes = bytes.saturating_add(value.len());
                out.push((k[16..].to_vec(), value));
            }
        }
        Ok(out)
    }

    fn record_count(&self, database: &[u8; 16]) -> Result<u64, StoreError> {
        let mut count = 0;
        for item in self.shared.records.scan_prefix(database) {
            item?;
            count += 1;
        }
        Ok(count)
    }

    fn records_purge(&self, database: &[u8; 16]) -> Result<u64, StoreError> {
        let records = &self.shared.records;
        let mut removed = 0;
        loop {
            // Remove in bounded batches so purging a huge database never holds everything.
            let mut batch = sled::Batch::default();
            let mut released = Vec::new();
            let mut n = 0;
            for item in records.scan_prefix(database).take(10_000) {
                let (key, stored) = item?;
                if Pointer::decode(&stored).ok().flatten().is_some() {
                    released.push((key.len(), stored));
                }
                batch.remove(key);
                n += 1;
            }
            if n == 0 {
                return Ok(removed);
            }
            records.apply_batch(batch)?;
            for (key_len, stored) in released {
                self.shared.release(key_len, &stored);
            }
            removed += n;
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.shared.flush()?;
        self.start_compaction_if_due();
        Ok(())
    }

    fn value_log_stats(&self) -> Option<super::ValueLogStats> {
        let segments = self.shared.values.stats();
        Some(super::ValueLogStats {
            segments: segments.len() as u64,
            bytes: segments.values().map(|s| s.total).sum(),
            dead_bytes: segments.values().map(|s| s.dead).sum(),
            compacted_segments: self.shared.compacted_segments.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec;

    fn big(tag: u8, len: usize) -> Vec<u8> {
        // Starts like a sealed record, as every value the service stores does.
        let mut value = b"EVRC".to_vec();
        value.resize(len, tag);
        value
    }

    fn segment_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("values")).unwrap().count()
    }

    #[test]
    fn large_values_live_in_the_value_log_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = [3u8; 16];
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.record_put(&db, b"small", big(1, 100)).unwrap();
            store.record_put(&db, b"large", big(2, 300_000)).unwrap();
            let raw = store.shared.records.get(record_key(&db, b"large")).unwrap();
            assert!(
                raw.unwrap().starts_with(b"EVVP"),
                "a pointer, not the value"
            );
            let raw = store.shared.records.get(record_key(&db, b"small")).unwrap();
            assert_eq!(raw.unwrap().len(), 100, "small values stay inline");
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.record_get(&db, b"large").unwrap(),
            Some(big(2, 300_000))
        );
        let page = store.record_page(&db, None, 10, usize::MAX).unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[0], (b"large".to_vec(), big(2, 300_000)));
        assert!(store.record_delete(&db, b"large").unwrap());
        assert_eq!(store.record_get(&db, b"large").unwrap(), None);
    }

    #[test]
    fn compaction_reclaims_dead_segments_and_keeps_every_live_value() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let mut expected = std::collections::BTreeMap::new();
        {
            let store = SledStore::open_with_segment_max(dir.path(), 16 << 10).unwrap();
            for round in 0..3u8 {
                for i in 0..20u8 {
                    let key = format!("r{i:02}");
                    // Keys 0..10 are overwritten every round; keys 10..20 only written once.
                    if round == 0 || i < 10 {
                        let value = big(round * 20 + i, 5_000);
                        store.record_put(&a, key.as_bytes(), value.clone()).unwrap();
                        expected.insert(key, value);
                    }
                }
            }
            for i in 0..10u8 {
                store.record_put(&b, &[i], big(i, 4_000)).unwrap();
            }
            assert!(store.record_delete(&a, b"r19").unwrap());
            expected.remove("r19");
            assert_eq!(store.records_purge(&b).unwrap(), 10);
            // No background compaction: this test runs it itself.
            store.shared.compacting.store(true, Ordering::Release);
            store.flush().unwrap();
            let due = compaction::candidates(&store.shared);
            let before = segment_files(dir.path());
            store.compact_now().unwrap();
            let after = segment_files(dir.path());
            assert!(after < before, "{before} segments before, {after} after");
            let left = store.shared.values.stats();
            assert!(
                due.iter().all(|id| !left.contains_key(id)),
                "{due:?} {left:?}"
            );
            let stats = store.value_log_stats().unwrap();
            assert_eq!(stats.compacted_segments, due.len() as u64);
            assert_eq!(stats.segments, left.len() as u64);
            for (key, value) in &expected {
                let read = store.record_get(&a, key.as_bytes()).unwrap();
                assert_eq!(read.as_ref(), Some(value), "{key}");
            }
            store.flush().unwrap();
        }
        let store = SledStore::open_with_segment_max(dir.path(), 16 << 10).unwrap();
        let page = store.record_page(&a, None, 100, usize::MAX).unwrap();
        let read: std::collections::BTreeMap<String, Vec<u8>> = page
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), v))
            .collect();
        assert_eq!(read, expected);
        assert_eq!(store.record_count(&b).unwrap(), 0);
    }

    #[test]
    fn dead_counts_persist_so_compaction_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = [5u8; 16];
        {
            let store = SledStore::open_with_segment_max(dir.path(), 16 << 10).unwrap();
            for i in 0..12u8 {
                store.record_put(&db, &[i], big(i, 5_000)).unwrap();
            }
            for i in 0..12u8 {
                store.record_delete(&db, &[i]).unwrap();
            }
            // Flushed with the counts, but closed before any compaction could run.
            store.shared.compacting.store(true, Ordering::Release);
            store.flush().unwrap();
        }
        let store = SledStore::open_with_segment_max(dir.path(), 16 << 10).unwrap();
        assert!(!compaction::candidates(&store.shared).is_empty());
        store.compact_now().unwrap();
        // Only the segment this run opened is left.
        assert_eq!(segment_files(dir.path()), 1);
    }

    #[test]
    fn a_flush_starts_compaction_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let db = [6u8; 16];
        let store = SledStore::open_with_segment_max(dir.path(), 16 << 10).unwrap();
        for i in 0..12u8 {
            store.record_put(&db, &[i], big(i, 5_000)).unwrap();
        }
        store.record_put(&db, b"live", big(99, 5_000)).unwrap();
        for i in 0..12u8 {
            store.record_delete(&db, &[i]).unwrap();
        }
        let before = segment_files(dir.path());
        store.flush().unwrap();
        // Liveness, not speed: wait (up to a minute) for the thread to finish its pass.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while store.shared.compacting.load(Ordering::Acquire)
            || !compaction::candidates(&store.shared).is_empty()
        {
            assert!(std::time::Instant::now() < deadline, "compaction never ran");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(segment_files(dir.path()) < before);
        assert_eq!(
            store.record_get(&db, b"live").unwrap(),
            Some(big(99, 5_000))
        );
    }

    #[test]
    fn reads_during_compaction_always_see_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let db = [9u8; 16];
        let store = Arc::new(SledStore::open_with_segment_max(dir.path(), 32 << 10).unwrap());
        for i in 0..40u8 {
            store.record_put(&db, &[i], big(i, 3_000)).unwrap();
        }
        // Make every closed segment mostly dead while leaving one live value in each.
        for i in (0..40u8).filter(|i| i % 8 != 0) {
            store.record_delete(&db, &[i]).unwrap();
        }
        store.shared.compacting.store(true, Ordering::Release);
        store.flush().unwrap();
        let due = compaction::candidates(&store.shared);
        assert!(!due.is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut reads = 0;
                    while !stop.load(Ordering::Acquire) || reads == 0 {
                        for i in (0..40u8).step_by(8) {
                            let value = store.record_get(&db, &[i]).unwrap();
                            assert_eq!(value, Some(big(i, 3_000)));
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        store.compact_now().unwrap();
        stop.store(true, Ordering::Release);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
        let left = store.shared.values.stats();
        assert!(
            due.iter().all(|id| !left.contains_key(id)),
            "{due:?} {left:?}"
        );
    }

    #[test]
    fn an_entry_cut_short_by_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let db = [4u8; 16];
        {
            let store = SledStore::open_with_segment_max(dir.path(), 1 << 20).unwrap();
            store.record_put(&db, b"kept", big(1, 10_000)).unwrap();
            for gone in [b"gone1", b"gone2"] {
                store.record_put(&db, gone, big(2, 10_000)).unwrap();
                store.record_delete(&db, gone).unwrap();
            }
            store.flush().unwrap();
        }
        // A crash in the middle of an append: half an entry at the end of the segment.
        let segment = dir.path().join("values").join(format!("{:016x}.evv", 1));
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.extend_from_slice(&[0x10, 0x27, 0, 0, 4, 0, 1, 2]);
        std::fs::write(&segment, bytes).unwrap();
        let store = SledStore::open_with_segment_max(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            store.record_get(&db, b"kept").unwrap(),
            Some(big(1, 10_000))
        );
        store.compact_now().unwrap();
        assert!(!segment.exists(), "the half-dead segment was compacted");
        assert_eq!(
            store.record_get(&db, b"kept").unwrap(),
            Some(big(1, 10_000))
        );
    }

    #[test]
    fn record_pages_stop_at_the_byte_bound_but_hold_at_least_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let db = [7u8; 16];
        for (key, len) in [("a", 100), ("b", 100), ("c", 1000), ("d", 10)] {
            store.record_put(&db, key.as_bytes(), vec![0; len]).unwrap();
        }
        let keys = |page: crate::store::CatalogEntries| -> Vec<Vec<u8>> {
            page.into_iter().map(|(k, _)| k).collect()
        };
        // 100 + 100 reaches 150: the page stops after "b".
        let page = store.record_page(&db, None, 10, 150).unwrap();
        assert_eq!(keys(page), vec![b"a".to_vec(), b"b".to_vec()]);
        // One record larger than the bound still comes alone.
        let page = store.record_page(&db, Some(b"b"), 10, 50).unwrap();
        assert_eq!(keys(page), vec![b"c".to_vec()]);
        // The count limit still applies, and the whole database pages through.
        let page = store.record_page(&db, None, 3, usize::MAX).unwrap();
        assert_eq!(page.len(), 3);
        let page = store.record_page(&db, Some(b"c"), 3, usize::MAX).unwrap();
        assert_eq!(keys(page), vec![b"d".to_vec()]);
    }

    #[test]
    fn records_page_by_prefix_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let a = [1u8; 16];
        let b = [2u8; 16];
        for key in ["x1", "x2", "x3", "y1"] {
            store.record_put(&a, key.as_bytes(), b"v".to_vec()).unwrap();
        }
        store.record_put(&b, b"x9", b"v".to_vec()).unwrap();
        let page = store.record_keys(&a, b"x", None, 2).unwrap();
        assert_eq!(page, vec![b"x1".to_vec(), b"x2".to_vec()]);
        let page = store.record_keys(&a, b"x", Some(b"x2"), 2).unwrap();
        assert_eq!(page, vec![b"x3".to_vec()]);
        assert_eq!(store.record_keys(&a, b"", Some(b"a"), 10).unwrap().len(), 4);
        assert_eq!(store.record_count(&a).unwrap(), 4);
        assert_eq!(store.records_purge(&a).unwrap(), 4);
        assert_eq!(store.record_count(&a).unwrap(), 0);
        assert_eq!(store.record_count(&b).unwrap(), 1);
    }

    #[test]
    fn catalog_batches_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let ops = vec![
                CatalogOp::Put(codec::key("db", &[b"1"]), codec::encode(&1u32)),
                CatalogOp::Put(codec::key("db", &[b"2"]), codec::encode(&2u32)),
                CatalogOp::Put(codec::key("key", &[b"1"]), codec::encode(&3u32)),
            ];
            store.catalog_apply(ops).unwrap();
            store
                .catalog_apply(vec![CatalogOp::Delete(codec::key("db", &[b"1"]))])
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let dbs = store.catalog_scan(b"db/").unwrap();
        assert_eq!(dbs.len(), 1);
        assert_eq!(codec::decode::<u32>(&dbs[0].0, &dbs[0].1).unwrap(), 2);
    }
}
