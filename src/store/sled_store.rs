//! The embedded backend: one sled database with two trees.
//!
//! - `catalog`: `kind/id` → [`super::codec`]-encoded entries; applied in atomic batches.
//! - `records`: `database id (16 bytes) | record key` → sealed record envelope.

use std::path::Path;

use super::{CatalogOp, Store, StoreError};

/// sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    catalog: sled::Tree,
    records: sled::Tree,
}

impl SledStore {
    /// Opens or creates the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        // Flushing is ours to drive (group commit before each acknowledgement); sled's own
        // periodic flush stays on as a backstop.
        // A bounded page cache keeps the daemon's memory flat whatever the data size.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .open()?;
        let catalog = db.open_tree("catalog")?;
        let records = db.open_tree("records")?;
        Ok(Self {
            db,
            catalog,
            records,
        })
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
        self.records.insert(record_key(database, key), sealed)?;
        Ok(())
    }

    fn record_get(&self, database: &[u8; 16], key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .records
            .get(record_key(database, key))?
            .map(|v| v.to_vec()))
    }

    fn record_delete(&self, database: &[u8; 16], key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.records.remove(record_key(database, key))?.is_some())
    }

    fn record_keys(
        &self,
        database: &[u8; 16],
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
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
                self.records.range(start..)
            }
            None => self.records.range(full_prefix.clone()..),
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
        for item in self.records.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(database) || out.len() >= limit || bytes >= max_bytes {
                break;
            }
            bytes = bytes.saturating_add(v.len());
            out.push((k[16..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn record_count(&self, database: &[u8; 16]) -> Result<u64, StoreError> {
        let mut count = 0;
        for item in self.records.scan_prefix(database) {
            item?;
            count += 1;
        }
        Ok(count)
    }

    fn records_purge(&self, database: &[u8; 16]) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            // Remove in bounded batches so purging a huge database never holds everything.
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in self.records.scan_prefix(database).keys().take(10_000) {
                batch.remove(item?);
                n += 1;
            }
            if n == 0 {
                return Ok(removed);
            }
            self.records.apply_batch(batch)?;
            removed += n;
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec;

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
