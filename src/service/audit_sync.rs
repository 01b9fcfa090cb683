//! When the activity log's lines reach the disk (`[audit] data_plane_sync`).
//!
//! Every event's line is written to the file (`write_all`, in chain order, under the log's lock)
//! before the request it records is answered, whatever the setting: a daemon crash or `kill -9`
//! loses no answered event, since the line is already in the kernel's page cache. The setting
//! only decides when the `fdatasync` that makes it survive a power loss or a kernel crash runs:
//!
//! - `always` (the default): before the answer, for every event. Writers share fsyncs (group
//!   commit, [`Durability::sync_through`]).
//! - `interval`: a successful data-plane event ([`is_data_plane`]: the per-call crypto
//!   operations wrap, unwrap, transit encrypt/decrypt/rewrap/datakey, KMS v2 Encrypt/Decrypt)
//!   is answered once its line is written, and a background thread starts an fsync at most
//!   `sync_interval` after the first line left unsynced. A power loss can lose the data-plane
//!   events of the last `sync_interval` (plus the fsync's own time). Every other event (key,
//!   authorization, database, backup and token actions, shred receipts, and any denied or
//!   failed outcome, data-plane or not) still waits for its fsync, and that fsync also covers
//!   every data-plane line written before it, so a durable event never follows a lost one.
//!
//! After each fsync, and before the events it covers are answered, the log's head (event count
//! and last hash) is written to `audit.head` (`super::audit_head`; one `pwrite`, its
//! `fdatasync` runs in the background), so that an answered event cut from the end of the log
//! is detected.
//!
//! OpenBao's and Vault's file audit device write each entry with no fsync at all; `interval`
//! stays stricter than that: a bounded window instead of whenever the kernel writes back.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::audit_chain::Head;
use super::audit_head::HeadFile;
pub use crate::api::AuditSyncStats;
pub use crate::config::DataPlaneSync;

/// Action names of the data-plane events. The call sites that log them use these constants, so
/// that a renamed action cannot silently fall out of [`is_data_plane`].
pub mod data_plane {
    use crate::service::Action;

    /// `POST /v1/keys/{key}/wrap`.
    pub const WRAP: &str = Action::SecretsWrap.as_str();
    /// `POST /v1/keys/{key}/unwrap`.
    pub const UNWRAP: &str = Action::SecretsUnwrap.as_str();
    /// `POST /v1/keys/{key}/rewrap`: app-held material re-wrapped under the newest version
    /// (not the rotation job, which logs `kms.secrets.rotate`).
    pub const REWRAP: &str = Action::SecretsRewrap.as_str();
    /// Transit `encrypt/<name>`.
    pub const TRANSIT_ENCRYPT: &str = Action::TransitEncrypt.as_str();
    /// Transit `decrypt/<name>`.
    pub const TRANSIT_DECRYPT: &str = Action::TransitDecrypt.as_str();
    /// Transit `rewrap/<name>`.
    pub const TRANSIT_REWRAP: &str = Action::TransitRewrap.as_str();
    /// Transit `datakey/{plaintext|wrapped}/<name>`.
    pub const TRANSIT_DATAKEY: &str = Action::TransitDatakey.as_str();
    /// KMS v2 `Encrypt`.
    pub const KMS_V2_ENCRYPT: &str = Action::KmsV2Encrypt.as_str();
    /// KMS v2 `Decrypt`.
    pub const KMS_V2_DECRYPT: &str = Action::KmsV2Decrypt.as_str();

    /// Every data-plane action.
    pub const ALL: [&str; 9] = [
        WRAP,
        UNWRAP,
        REWRAP,
        TRANSIT_ENCRYPT,
        TRANSIT_DECRYPT,
        TRANSIT_REWRAP,
        TRANSIT_DATAKEY,
        KMS_V2_ENCRYPT,
        KMS_V2_DECRYPT,
    ];
}

/// Whether `action` is a per-call crypto operation (data plane) rather than a change to keys,
/// authorizations, databases, backups or tokens (control plane).
pub fn is_data_plane(action: &str) -> bool {
    data_plane::ALL.contains(&action)
}

/// Whether an event must be on disk before its request is answered under `policy`. Only a
/// successful data-plane event may wait for the interval fsync: denials and failures are what
/// an investigation looks for first, and they are rare, so they keep the strict contract.
pub fn waits_for_fsync(policy: DataPlaneSync, action: &str, outcome: &str) -> bool {
    match policy {
        DataPlaneSync::Always => true,
        DataPlaneSync::Interval(_) => !(outcome == "success" && is_data_plane(action)),
    }
}

/// Group-commit state: how many events are durable, and whether an fsync is running.
struct SyncState {
    durable: u64,
    syncing: bool,
}

/// The interval thread's inbox.
struct Deferred {
    /// When the oldest line not yet covered by an fsync was written (`None`: nothing waits).
    since: Option<Instant>,
    /// Set when the log is dropped.
    stop: bool,
}

/// The log file's fsync side, shared by writers and the interval thread.
pub(super) struct Durability {
    /// The log file, for fsyncs run without holding the log's lock.
    file: File,
    /// Events whose lines are completely written; raised under the log's lock after each write.
    written: AtomicU64,
    /// The chain head after the last written line (with `written`, under the log's lock).
    latest: Mutex<Head>,
    /// Where each fsync's head is recorded, after the fsync (`super::audit_head`). Only the
    /// thread running the fsync writes it.
    head_file: Mutex<HeadFile>,
    state: Mutex<SyncState>,
    synced: Condvar,
    /// `fdatasync` calls made (for `GET /v1/health` and the tests).
    fsyncs: AtomicU64,
    deferred: Mutex<Deferred>,
    wake: Condvar,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both states are a few counters changed in single statements: a panic elsewhere cannot
    // leave them half-changed, so a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Durability {
    /// `head.events` lines are in `file` and on disk already, and recorded in `head_file`.
    pub(super) fn new(file: File, head: Head, head_file: HeadFile) -> Self {
        let events = head.events;
        Self {
            file,
            written: AtomicU64::new(events),
            latest: Mutex::new(head),
            head_file: Mutex::new(head_file),
            state: Mutex::new(SyncState {
                durable: events,
                syncing: false,
            }),
            synced: Condvar::new(),
            fsyncs: AtomicU64::new(0),
            deferred: Mutex::new(Deferred {
                since: None,
                stop: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Records that the first `head.events` lines are written. Called under the log's lock,
    /// so the count only grows.
    pub(super) fn wrote(&self, head: Head) {
        *lock(&self.latest) = head;
        self.written.store(head.events, Ordering::Release);
    }

    /// Events whose lines are written.
    pub(super) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Events known to be on disk.
    pub(super) fn durable(&self) -> u64 {
        lock(&self.state).durable
    }

    /// `fdatasync` calls so far.
    pub(super) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Returns once the first `events` events are on disk: at once if an earlier fsync covered
    /// them, else after waiting for the running fsync and, if that one started too early,
    /// running the next one (which covers every line written by then).
    pub(super) fn sync_through(&self, events: u64) -> std::io::Result<()> {
        let mut state = lock(&self.state);
        loop {
            if state.durable >= events {
                return Ok(());
            }
            if !state.syncing {
                break;
            }
            state = self.synced.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.syncing = true;
        drop(state);
        // Read before the fsync: every line counted here was written before it starts.
        let head = *lock(&self.latest);
        let covered = head.events;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        // The head is recorded only once the lines it counts are on disk, so after any crash
        // the log is at least as long as its head file says.
        let result = self
            .file
            .sync_data()
            .and_then(|()| lock(&self.head_file).write(head));
        let mut state = lock(&self.state);
        state.syncing = false;
        if result.is_ok() {
            state.durable = state.durable.max(covered);
        }
        self.synced.notify_all();
        result
    }

    /// Leaves the lines written so far to the interval thread.
    pub(super) fn defer(&self) {
        let mut deferred = lock(&self.deferred);
        if deferred.since.is_none() {
            deferred.since = Some(Instant::now());
            self.wake.notify_one();
        }
    }

    /// The interval thread: waits for a deferred line, lets `interval` pass from when it was
    /// written, then fsyncs everything written by then. On stop it fsyncs what is left, so a
    /// clean shutdown loses nothing.
    fn run_interval(&self, interval: Duration) {
        let mut deferred = lock(&self.deferred);
        while !deferred.stop {
            let Some(since) = deferred.since else {
                deferred = self.wake.wait(deferred).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let due = since + interval;
            let now = Instant::now();
            if now < due {
                deferred = self
                    .wake
                    .wait_timeout(deferred, due - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            // Lines written from here on start a new window; this fsync covers the older ones.
            deferred.since = None;
            drop(deferred);
            let result = self.sync_through(self.written());
            deferred = lock(&self.deferred);
            if let Err(err) = result {
                // The requests were answered already; all that can be done is to say so and try
                // again one interval later.
                tracing::error!(error = %err, "activity log: interval fsync failed; retrying");
                deferred.since.get_or_insert_with(Instant::now);
            }
        }
        drop(deferred);
        if let Err(err) = self.sync_through(self.written()) {
            tracing::error!(error = %err, "activity log: final fsync failed");
        }
    }
}

/// The background fsync thread of `interval` mode. Dropping it stops the thread after a final
/// fsync and waits for it, so the log's file is synced and closed when the log is gone.
pub(super) struct IntervalSyncer {
    durability: Arc<Durability>,
    thread: Option<JoinHandle<()>>,
}

impl IntervalSyncer {
    pub(super) fn start(durability: Arc<Durability>, interval: Duration) -> std::io::Result<Self> {
        let shared = Arc::clone(&durability);
        let thread = std::thread::Builder::new()
            .name("envault-audit-sync".into())
            .spawn(move || shared.run_interval(interval))?;
        Ok(Self {
            durability,
            thread: Some(thread),
        })
    }
}

impl Drop for IntervalSyncer {
    fn drop(&mut self) {
        lock(&self.durability.deferred).stop = true;
        self.durability.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has already been reported by the panic hook; there is
            // nothing more to do with it while dropping.
            let _ = thread.join();
        }
    }
}

/// The setting in effect and the counters, for `GET /v1/health`.
pub(super) fn stats(policy: DataPlaneSync, durability: &Durability) -> AuditSyncStats {
    let (mode, interval) = match policy {
        DataPlaneSync::Always => ("always", None),
        DataPlaneSync::Interval(interval) => ("interval", Some(interval)),
    };
    AuditSyncStats {
        data_plane_sync: mode.into(),
        sync_interval_ms: interval.map(|i| i.as_millis().try_into().unwrap_or(u64::MAX)),
        written_events: durability.written(),
        durable_events: durability.durable(),
        fsyncs: durability.fsyncs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_plane_actions_are_the_crypto_calls() {
        for action in [
            "kms.secrets.wrap",
            "kms.secrets.unwrap",
            "kms.secrets.rewrap",
            "kms.transit.encrypt",
            "kms.transit.decrypt",
            "kms.transit.rewrap",
            "kms.transit.datakey",
            "kms.kmsv2.encrypt",
            "kms.kmsv2.decrypt",
        ] {
            assert!(is_data_plane(action), "{action}");
        }
        for action in [
            "kms.secrets.create",
            "kms.secrets.rotate",
            "kms.secrets.delete",
            "kms.secrets.disable",
            "kms.secrets.enable",
            "kms.transit.create",
            "kms.transit.config",
            "kms.transit.read",
            "iam.authorizations.create",
            "iam.authorizations.delete",
            "iam.tokens.create",
            "databases.create",
            "databases.purge",
            "databases.records.read",
            "backups.create",
            "backups.restore",
            "auth.denied",
            "kms.secrets.wrap.extra",
            "",
        ] {
            assert!(!is_data_plane(action), "{action}");
        }
    }

    #[test]
    fn only_successful_data_plane_events_skip_the_fsync() {
        let interval = DataPlaneSync::Interval(Duration::from_millis(100));
        assert!(!waits_for_fsync(interval, "kms.secrets.wrap", "success"));
        assert!(!waits_for_fsync(interval, "kms.transit.decrypt", "success"));
        assert!(waits_for_fsync(interval, "kms.secrets.wrap", "denied"));
        assert!(waits_for_fsync(interval, "kms.secrets.unwrap", "failure"));
        assert!(waits_for_fsync(interval, "kms.secrets.delete", "success"));
        assert!(waits_for_fsync(interval, "databases.create", "success"));
        for outcome in ["success", "denied", "failure"] {
            assert!(waits_for_fsync(
                DataPlaneSync::Always,
                "kms.secrets.wrap",
                outcome
            ));
        }
    }
}
