//! Unwrapped DEKs, in memory only: the hot path's source of DEKs, so a record read or write
//! unwraps only on a miss. Entries are expanded ciphers that zeroize on drop; they are purged at
//! once when their database or root key is disabled, shredded or purged.
//!
//! Bounded: at most `max` entries; past that the least recently used ones are evicted (in a
//! batch of about 1/64 of the capacity, so one scan pays for many evictions). With a non-zero
//! `ttl` an entry is dropped that long after it was unwrapped, so the next use must unwrap
//! again through the root-key backend: the ttl is how long cached DEKs keep serving without it.
//!
//! Read path: one shard's read lock, a map lookup and a relaxed store of the entry's use tick;
//! no write lock on a hit. Shards are picked by the DEK's database id (random UUIDs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::api::DekCacheStats;
use crate::crypto::Cipher;

const SHARDS: usize = 16;

type Key = (Uuid, u32);

/// A cached DEK, the root key it was unwrapped with (to purge by key), and its age and use.
struct Entry {
    cipher: Arc<Cipher>,
    root_key: Uuid,
    inserted: Instant,
    last_used: AtomicU64,
}

type Shard = RwLock<HashMap<Key, Entry>>;

/// DEKs by (database, generation), bounded, LRU, optionally expiring.
pub struct DekCache {
    shards: Vec<Shard>,
    max: usize,
    ttl: Option<Duration>,
    len: AtomicUsize,
    /// Logical clock of uses: a larger tick is a more recent use.
    clock: AtomicU64,
    /// Held by the one thread evicting; others skip (the cache may exceed `max` briefly).
    evicting: Mutex<()>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
}

impl Default for DekCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_DEKS, None)
    }
}

/// `[cache] max_deks` when not configured.
pub const DEFAULT_MAX_DEKS: usize = 100_000;

impl DekCache {
    /// A cache of at most `max` (at least 1) DEKs, each kept at most `ttl` (`None`: no expiry).
    pub fn new(max: usize, ttl: Option<Duration>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            max: max.max(1),
            ttl: ttl.filter(|t| !t.is_zero()),
            len: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            evicting: Mutex::new(()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    fn shard(&self, database: Uuid) -> &Shard {
        &self.shards[(database.as_u128() as usize) % SHARDS]
    }

    fn read(shard: &Shard) -> RwLockReadGuard<'_, HashMap<Key, Entry>> {
        // Map operations cannot panic halfway: a poisoned lock still holds a consistent map.
        shard.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(shard: &Shard) -> RwLockWriteGuard<'_, HashMap<Key, Entry>> {
        shard.write().unwrap_or_else(|p| p.into_inner())
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn is_expired(&self, entry: &Entry) -> bool {
        self.ttl.is_some_and(|ttl| entry.inserted.elapsed() >= ttl)
    }

    /// The cached DEK, if any and not expired.
    pub fn get(&self, database: Uuid, generation: u32) -> Option<Arc<Cipher>> {
        let shard = self.shard(database);
        let key = (database, generation);
        {
            let entries = Self::read(shard);
            match entries.get(&key) {
                None => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Some(entry) if !self.is_expired(entry) => {
                    entry.last_used.store(self.tick(), Ordering::Relaxed);
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(Arc::clone(&entry.cipher));
                }
                Some(_) => {}
            }
        }
        // Expired: drop it (unless another thread replaced it meanwhile) and report a miss.
        let mut entries = Self::write(shard);
        if entries.get(&key).is_some_and(|e| self.is_expired(e)) {
            entries.remove(&key);
            self.len.fetch_sub(1, Ordering::Relaxed);
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Caches a DEK, evicting the least recently used ones if the cache is over its cap.
    pub fn insert(&self, database: Uuid, generation: u32, root_key: Uuid, cipher: Arc<Cipher>) {
        let entry = Entry {
            cipher,
            root_key,
            inserted: Instant::now(),
            last_used: AtomicU64::new(self.tick()),
        };
        let replaced = Self::write(self.shard(database))
            .insert((database, generation), entry)
            .is_some();
        if !replaced && self.len.fetch_add(1, Ordering::Relaxed) + 1 > self.max {
            self.evict();
        }
    }

    /// Evicts least recently used entries down to about `max - max/64`.
    fn evict(&self) {
        let Ok(_evicting) = self.evicting.try_lock() else {
            return; // another thread is at it
        };
        let len = self.len.load(Ordering::Relaxed);
        if len <= self.max {
            return;
        }
        let target = self.max - self.max / 64;
        let excess = len - target;
        let mut ages: Vec<(u64, Key)> = Vec::with_capacity(len);
        for shard in &self.shards {
            let entries = Self::read(shard);
            ages.extend(
                entries
                    .iter()
                    .map(|(k, e)| (e.last_used.load(Ordering::Relaxed), *k)),
            );
        }
        let excess = excess.min(ages.len());
        if excess == 0 {
            return;
        }
        ages.select_nth_unstable_by_key(excess - 1, |(tick, _)| *tick);
        for (tick, key) in &ages[..excess] {
            let mut entries = Self::write(self.shard(key.0));
            // Skip an entry used since the scan: it is recent now.
            if entries
                .get(key)
                .is_some_and(|e| e.last_used.load(Ordering::Relaxed) == *tick)
            {
                entries.remove(key);
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops every DEK of a database. Returns how many were dropped.
    pub fn purge_database(&self, database: Uuid) -> usize {
        self.purge(|(db, _), _| *db == database)
    }

    /// Drops every DEK unwrapped by a root key.
    pub fn purge_root_key(&self, root_key: Uuid) -> usize {
        self.purge(|_, entry| entry.root_key == root_key)
    }

    fn purge(&self, matches: impl Fn(&Key, &Entry) -> bool) -> usize {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut entries = Self::write(shard);
            let before = entries.len();
            entries.retain(|k, e| !matches(k, e));
            dropped += before - entries.len();
        }
        self.len.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// Number of cached DEKs (for tests and metrics).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Counters for `GET /v1/health`.
    pub fn stats(&self) -> DekCacheStats {
        DekCacheStats {
            size: self.len() as u64,
            max: self.max as u64,
            ttl_seconds: self.ttl.map_or(0, |t| t.as_secs()),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn cipher() -> Arc<Cipher> {
        Arc::new(Cipher::new(&SecretKey::generate().unwrap()))
    }

    #[test]
    fn hit_and_miss_are_counted() {
        let cache = DekCache::new(10, None);
        let (db, root) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(cache.get(db, 1).is_none());
        cache.insert(db, 1, root, cipher());
        assert!(cache.get(db, 1).is_some());
        assert!(cache.get(db, 2).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.size), (1, 2, 1));
    }

    #[test]
    fn evicts_least_recently_used_beyond_the_cap() {
        let cache = DekCache::new(4, None);
        let root = Uuid::new_v4();
        let dbs: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        for db in &dbs[..4] {
            cache.insert(*db, 1, root, cipher());
        }
        // Use all but dbs[1], so dbs[1] is the least recently used.
        for i in [0, 2, 3] {
            assert!(cache.get(dbs[i], 1).is_some());
        }
        cache.insert(dbs[4], 1, root, cipher());
        assert_eq!(cache.len(), 4);
        assert!(cache.get(dbs[1], 1).is_none(), "LRU entry must be evicted");
        for i in [0, 2, 3, 4] {
            assert!(cache.get(dbs[i], 1).is_some(), "entry {i} must stay");
        }
        assert_eq!(cache.stats().evictions, 1);
    }

    #[test]
    fn stays_bounded_under_churn() {
        let cache = DekCache::new(1000, None);
        let root = Uuid::new_v4();
        let shared = cipher();
        for _ in 0..10_000 {
            cache.insert(Uuid::new_v4(), 1, root, Arc::clone(&shared));
            assert!(cache.len() <= 1000);
        }
        let stats = cache.stats();
        assert_eq!(stats.size as usize, cache.len());
        assert_eq!(stats.evictions + stats.size, 10_000);
        // Everything but the cache's own references was released.
        assert_eq!(Arc::strong_count(&shared), 1 + cache.len());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = DekCache::new(10, Some(Duration::from_millis(50)));
        let (db, root) = (Uuid::new_v4(), Uuid::new_v4());
        cache.insert(db, 1, root, cipher());
        assert!(cache.get(db, 1).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.get(db, 1).is_none(), "expired entry must not serve");
        let stats = cache.stats();
        assert_eq!((stats.expired, stats.size, stats.hits), (1, 0, 1));
        // A fresh insert serves again.
        cache.insert(db, 1, root, cipher());
        assert!(cache.get(db, 1).is_some());
    }

    #[test]
    fn zero_ttl_never_expires_and_purges_count() {
        let cache = DekCache::new(10, Some(Duration::ZERO));
        let (db, root) = (Uuid::new_v4(), Uuid::new_v4());
        cache.insert(db, 1, root, cipher());
        cache.insert(db, 2, root, cipher());
        cache.insert(Uuid::new_v4(), 1, Uuid::new_v4(), cipher());
        assert_eq!(cache.stats().ttl_seconds, 0);
        assert_eq!(cache.purge_database(db), 2);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.purge_root_key(root), 0);
    }
}
