//! Unwrapped DEKs, in memory only: the hot path's one source of DEKs, so a record read or
//! write never unwraps. Entries are expanded ciphers that zeroize on drop; they are purged at
//! once when their database or root key is disabled, shredded or purged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::crypto::Cipher;

/// A cached DEK and the root key it was unwrapped with (to purge by key).
struct Entry {
    cipher: Arc<Cipher>,
    root_key: Uuid,
}

/// DEKs by (database, generation).
#[derive(Default)]
pub struct DekCache {
    entries: RwLock<HashMap<(Uuid, u32), Entry>>,
}

impl DekCache {
    /// The cached DEK, if any.
    pub fn get(&self, database: Uuid, generation: u32) -> Option<Arc<Cipher>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(database, generation))
            .map(|e| Arc::clone(&e.cipher))
    }

    /// Caches a DEK.
    pub fn insert(&self, database: Uuid, generation: u32, root_key: Uuid, cipher: Arc<Cipher>) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.insert((database, generation), Entry { cipher, root_key });
    }

    /// Drops every DEK of a database. Returns how many were dropped.
    pub fn purge_database(&self, database: Uuid) -> usize {
        self.purge(|(db, _), _| *db == database)
    }

    /// Drops every DEK unwrapped by a root key.
    pub fn purge_root_key(&self, root_key: Uuid) -> usize {
        self.purge(|_, entry| entry.root_key == root_key)
    }

    fn purge(&self, matches: impl Fn(&(Uuid, u32), &Entry) -> bool) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let before = entries.len();
        entries.retain(|k, e| !matches(k, e));
        before - entries.len()
    }

    /// Number of cached DEKs (for tests and metrics).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}
