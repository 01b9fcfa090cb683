//! Persistent catalog and sealed records behind the [`Store`] trait; [`sled_store::SledStore`]
//! is the embedded backend (PostgreSQL later).
//!
//! The store only ever holds ciphertext, wrapped DEKs and metadata: never root-key material
//! (see `keystore`), never a plaintext record.

pub mod codec;
pub mod model;
pub mod sled_store;

pub use model::*;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database failed (I/O, corruption, disk full).
    #[error("storage failure: {0}")]
    Backend(String),
    /// A stored value does not decode (wrong magic, unknown version, bad JSON).
    #[error("corrupt catalog entry {key}: {reason}")]
    Corrupt {
        /// The entry's key, printable.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        StoreError::Backend(err.to_string())
    }
}

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
}
