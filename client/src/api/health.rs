//! `GET /v1/health`: readiness of each component, DEK cache and activity-log counters.

use serde::{Deserialize, Serialize};

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Crate version.
    pub version: String,
    /// Whether the daemon's memory is locked against swapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_locked: Option<bool>,
    /// Whether the daemon can be core-dumped or ptraced (false when hardened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumpable: Option<bool>,
    /// The DEK cache's size and counters since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dek_cache: Option<DekCacheStats>,
    /// The activity log's fsync policy in effect and its counters since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSyncStats>,
    /// The value log of the earlier sled store; no store has one now, so it is always absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_log: Option<ValueLogStats>,
    /// Readiness of each component the daemon needs; any not `ok` makes the answer a 503
    /// with `status` "unavailable".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<ComponentHealth>>,
}

/// One entry of `components` in `GET /v1/health`: the store, the root-key backend or the
/// activity log, and whether it answered its probe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComponentHealth {
    /// `store`, `key_backend` or `activity_log`.
    pub component: String,
    /// Whether it can be used now.
    pub ok: bool,
    /// Why not (an error sentence; never key material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `audit` of `GET /v1/health`: when activity-log lines reach the disk (`[audit]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditSyncStats {
    /// `[audit] data_plane_sync`: "always" or "interval".
    pub data_plane_sync: String,
    /// `[audit] sync_interval` in milliseconds, in "interval" mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_interval_ms: Option<u64>,
    /// Events in the log: their lines are written to the file (they survive a daemon crash).
    pub written_events: u64,
    /// Events known to be fsynced (they survive a power loss too); behind `written_events`
    /// only in "interval" mode, by at most `sync_interval` of data-plane events.
    pub durable_events: u64,
    /// `fdatasync` calls since start (concurrent events share one).
    pub fsyncs: u64,
}

/// `dek_cache` of `GET /v1/health`: unwrapped DEKs held in memory and how the cache fared.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DekCacheStats {
    /// DEKs cached now.
    pub size: u64,
    /// The cap (`[cache] max_deks`).
    pub max: u64,
    /// Lifetime of a cached DEK in seconds (`[cache] dek_ttl`); 0 = no expiry.
    pub ttl_seconds: u64,
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that had to unwrap (absent or expired).
    pub misses: u64,
    /// Entries dropped to stay under the cap (least recently used first).
    pub evictions: u64,
    /// Entries dropped because their lifetime was over.
    pub expired: u64,
}

/// `value_log` of `GET /v1/health`: the value log of the earlier sled store. No store has one
/// any more (large values are fjall's blob files), so health leaves it out; the type stays so
/// clients of the API keep deserializing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueLogStats {
    /// Segment files on disk.
    pub segments: u64,
    /// Entry bytes in them.
    pub bytes: u64,
    /// Of those, bytes of values overwritten or deleted (reclaimed by compaction).
    pub dead_bytes: u64,
    /// Segments compacted (copied forward and deleted) since the daemon started.
    pub compacted_segments: u64,
}
