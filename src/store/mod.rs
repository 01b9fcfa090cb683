//! Persistent catalog and sealed records behind the [`Store`] trait. [`fjall_store::FjallStore`]
//! is the embedded backend (one node); `postgres::PostgresStore` is shared by several nodes,
//! which is why the trait also carries catalog change feeds and cluster locks.
//! [`sled_legacy`] only reads a data dir written by the earlier sled store, for
//! `fjall_store::migrate`.
//!
//! The store only ever holds ciphertext, wrapped DEKs and metadata: never root-key material
//! (see `keystore`), never a plaintext record.

pub mod codec;
pub mod fjall_store;
pub mod model;
mod open;
pub mod postgres;
pub mod sled_legacy;

pub use open::{open, show_progress};

pub use model::*;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database failed (I/O, corruption, disk full).
    #[error("storage failure: {0}")]
    Backend(String),
    /// The store cannot be reached right now (a database server down or restarting); nothing
    /// was changed as far as envault knows, and the request may be retried.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Bytes the store read back fail its checksum: the records there are unreadable, the
    /// rest of the store is not affected.
    #[error("damaged data: {0}")]
    Damaged(String),
    /// A stored value does not decode (wrong magic, unknown version, bad JSON).
    #[error("corrupt catalog entry {key}: {reason}")]
    Corrupt {
        /// The entry's key, printable.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

pub use crate::api::ValueLogStats;

/// Catalog entries as (key, encoded value) pairs.
pub type CatalogEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// One change to the catalog; a list of them is applied atomically.
#[derive(Debug, Clone)]
pub enum CatalogOp {
    /// Insert or replace an entry.
    Put(CatalogKey, Vec<u8>),
    /// Remove an entry.
    Delete(CatalogKey),
}

/// Catalog entries changed after some version, for nodes sharing a store.
#[derive(Debug, Clone, Default)]
pub struct CatalogChanges {
    /// The catalog's version after these changes (pass it as `since` next time).
    pub version: u64,
    /// (key, new value) in the order they were made; `None` for a removed entry.
    pub entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// A lock shared by every node of a store (the embedded store has one node, so its locks only
/// exist in the process). Dropping the guard releases it; so does the holder's death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterLockName {
    /// Serializes catalog mutations (create, state changes, rotation batches, purges).
    Admin,
    /// Claims the run of a rotation job (by key id), so one node runs it at a time.
    Rotation(uuid::Uuid),
}

/// Held while a cluster lock is held.
pub trait ClusterLockGuard: Send {}

/// The guard of a lock that only exists within one process.
pub struct LocalLock;
impl ClusterLockGuard for LocalLock {}

/// A store call's answer for async callers (see [`Store::record_get_async`]).
pub type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The key of a catalog entry: a kind and an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogKey(pub Vec<u8>);

/// The persistent side of envault.
///
/// Mutations are applied in memory and become durable at the next [`Store::flush`]; callers
/// acknowledge a write only after a flush that started after it.
pub trait Store: Send + Sync {
    /// Applies `ops` atomically: after a crash either all or none are visible.
    fn catalog_apply(&self, ops: Vec<CatalogOp>) -> Result<(), StoreError>;
    /// Every catalog entry whose key starts with `prefix`, in key order.
    fn catalog_scan(&self, prefix: &[u8]) -> Result<CatalogEntries, StoreError>;
    /// Stores a sealed record.
    fn record_put(
        &self,
        database: &[u8; 16],
        key: &[u8],
        sealed: Vec<u8>,
    ) -> Result<(), StoreError>;
    /// [`Store::record_put`] for bulk writers (a restore) on a blocking thread: a store may
    /// make it wait until its write buffers drain, so that writing faster than the store
    /// flushes does not grow the daemon. The request path never waits here.
    fn record_put_bulk(
        &self,
        database: &[u8; 16],
        key: &[u8],
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.record_put(database, key, sealed)
    }
    /// Reads a sealed record.
    fn record_get(&self, database: &[u8; 16], key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes a record; `true` if it existed.
    fn record_delete(&self, database: &[u8; 16], key: &[u8]) -> Result<bool, StoreError>;
    /// Record keys starting with `prefix`, strictly after `after`, at most `limit`.
    fn record_keys(
        &self,
        database: &[u8; 16],
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Records (key, sealed value) strictly after `after`, in key order: at most `limit`, and
    /// no more once the values add up to `max_bytes` (at least one record, however large), so
    /// a page's memory is bounded whatever the record sizes.
    fn record_page(
        &self,
        database: &[u8; 16],
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<CatalogEntries, StoreError>;
    /// Number of records in a database.
    fn record_count(&self, database: &[u8; 16]) -> Result<u64, StoreError>;
    /// Removes every record of a database; returns how many.
    fn records_purge(&self, database: &[u8; 16]) -> Result<u64, StoreError>;
    /// Makes every mutation applied so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// [`Store::record_get`] for the request path. A store that waits on the network (the
    /// shared one) answers without holding the caller's worker thread meanwhile; the default
    /// runs the synchronous call inline, which is what the embedded store wants.
    fn record_get_async(
        &self,
        database: [u8; 16],
        key: Vec<u8>,
    ) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.record_get(&database, &key)))
    }
    /// [`Store::record_put`] for the request path (see [`Store::record_get_async`]).
    fn record_put_async(
        &self,
        database: [u8; 16],
        key: Vec<u8>,
        sealed: Vec<u8>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(self.record_put(&database, &key, sealed)))
    }
    /// [`Store::record_delete`] for the request path (see [`Store::record_get_async`]).
    fn record_delete_async(&self, database: [u8; 16], key: Vec<u8>) -> StoreFuture<'_, bool> {
        Box::pin(std::future::ready(self.record_delete(&database, &key)))
    }
    /// [`Store::catalog_changes`] for the per-request check (see [`Store::record_get_async`]).
    fn catalog_changes_async(&self, since: u64) -> StoreFuture<'_, CatalogChanges> {
        Box::pin(std::future::ready(self.catalog_changes(since)))
    }

    /// Whether other envault processes share this store (so the in-memory catalog must follow
    /// their changes, and cluster locks are real). The embedded store is never shared.
    fn is_shared(&self) -> bool {
        false
    }
    /// The earlier sled store's value log, for `GET /v1/health`; no current store has one, so
    /// every store answers `None`.
    fn value_log_stats(&self) -> Option<ValueLogStats> {
        None
    }
    /// The catalog's current version and every entry changed after version `since`
    /// (0 = everything). A store that is not shared has nothing to report.
    ///
    /// A version below `since` means the shared store was replaced or restored under the
    /// caller (its history is not the one `since` came from): reload the whole catalog.
    fn catalog_changes(&self, since: u64) -> Result<CatalogChanges, StoreError> {
        let _ = since;
        Ok(CatalogChanges::default())
    }
    /// Takes a cluster lock, waiting for it. Callers also hold the in-process lock for the
    /// same purpose, so the embedded store has nothing to take.
    fn lock(&self, name: ClusterLockName) -> Result<Box<dyn ClusterLockGuard>, StoreError> {
        let _ = name;
        Ok(Box::new(LocalLock))
    }
    /// Takes a cluster lock if no node holds it.
    fn try_lock(
        &self,
        name: ClusterLockName,
    ) -> Result<Option<Box<dyn ClusterLockGuard>>, StoreError> {
        let _ = name;
        Ok(Some(Box::new(LocalLock)))
    }
}
