//! The activity log: `<data_dir>/audit.log`, one JSON object per line, hash-chained.
//!
//! ```text
//! line 1: {"magic":"envault-audit","version":1}
//! line n: {"seq":n-1,"time":…,"action":…,"target":…,"initiator":{…},"outcome":…,
//!          "reason":…,"details":…,"prev":<hash of line n-1>,"hash":<this line's hash>}
//! hash = hex SHA-256( prev || the line serialized with "hash":"" )
//! ```
//!
//! Every event's line is written to the file (`write_all`, under the log's lock, so in chain
//! order) before the request it records is answered: a daemon crash or `kill -9` loses no
//! answered event. By default (`[audit] data_plane_sync = "always"`) the line is also fsynced
//! before the answer. Appends share fsyncs (group commit): a writer appends its line under the
//! log's lock, then waits for one `fdatasync` that started after its line was written, running
//! it itself when none is in flight; concurrent writers are covered by the same call instead of
//! queueing one each. With `data_plane_sync = "interval"`, successful data-plane events (wrap,
//! unwrap, transit and KMS v2 crypto calls) are answered once written and fsynced by a
//! background thread at most `sync_interval` later, so a power loss can lose the data-plane
//! events of that last interval; every other event still waits for its fsync. See
//! [`super::audit_sync`].
//!
//! Editing, removing or reordering any line breaks the chain at that line, which `verify`
//! reports. Events carry names, CRNs and reasons only: never key material, never record values.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub use crate::api::{AuditEvent, AuditInitiator as Initiator, AuditVerifyReport as VerifyReport};

use super::audit_sync::{self, AuditSyncStats, DataPlaneSync, Durability, IntervalSyncer};
use super::{now_rfc3339, Principal};

const HEADER: &str = r#"{"magic":"envault-audit","version":1}"#;
/// The chain's starting hash (before the first event).
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditEvent {
    fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let json = serde_json::to_vec(&unhashed).unwrap_or_default();
        chain_hash(&self.prev, &json)
    }
}

/// hex SHA-256(prev || the line serialized with `"hash":""`). Runs on every event, so on every
/// data-plane request: hex-encoded without a `format!` per byte.
fn chain_hash(prev: &str, unhashed_json: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(unhashed_json);
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in hasher.finalize() {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    hex
}

/// Serializes a new event (its `hash` still empty) once, for both its hash and its line: the
/// line is the hashed bytes with the hash filled into the trailing `"hash":""`, which is what
/// serializing the hashed event gives (`hash` is the last field). Falls back to serializing
/// again should the layout ever differ.
fn hashed_line(event: &mut AuditEvent) -> serde_json::Result<Vec<u8>> {
    const EMPTY_HASH_END: &[u8] = br#""hash":""}"#;
    let mut line = serde_json::to_vec(&*event)?;
    event.hash = chain_hash(&event.prev, &line);
    if line.ends_with(EMPTY_HASH_END) {
        line.truncate(line.len() - 2);
        line.extend_from_slice(event.hash.as_bytes());
        line.extend_from_slice(b"\"}");
    } else {
        line = serde_json::to_vec(&*event)?;
    }
    line.push(b'\n');
    Ok(line)
}

struct Tail {
    file: File,
    seq: u64,
    head: String,
}

/// The append-only, hash-chained activity log.
pub struct AuditLog {
    path: PathBuf,
    tail: Mutex<Tail>,
    /// When lines reach the disk: group commit and the interval thread.
    durability: Arc<Durability>,
    policy: DataPlaneSync,
    /// The background fsync thread of `interval` mode; stopped (after a last fsync) on drop.
    _syncer: Option<IntervalSyncer>,
}

/// Errors writing the log; a request whose event cannot be written fails.
pub type AuditResult<T> = Result<T, std::io::Error>;

impl AuditLog {
    /// Opens (or creates) the log and finds the chain's head; every event is fsynced before
    /// its answer (`data_plane_sync = "always"`).
    pub fn open(path: &Path) -> AuditResult<Self> {
        Self::open_with(path, DataPlaneSync::Always)
    }

    /// Like [`AuditLog::open`], with the `[audit]` durability policy (`interval` starts the
    /// background fsync thread).
    pub fn open_with(path: &Path, policy: DataPlaneSync) -> AuditResult<Self> {
        let exists = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(path)?;
        let (seq, head) = if exists {
            let cut = cut_torn_tail(&file)?;
            if cut > 0 {
                tracing::warn!(
                    bytes = cut,
                    "audit log ended in a partial line (a crash while appending); removed it"
                );
            }
            let report = verify_file(path)?;
            if !report.ok {
                tracing::error!(
                    line = report.first_broken_line,
                    problem = report.problem.as_deref().unwrap_or(""),
                    "audit log chain is broken; appending after the last good event"
                );
            }
            // A previous run in "interval" mode may have been killed with lines not yet
            // fsynced: sync them once here rather than count them as durable unsynced.
            file.sync_data()?;
            (report.events, report.head)
        } else {
            writeln!(file, "{HEADER}")?;
            file.sync_all()?;
            (0, GENESIS.to_string())
        };
        // Everything written so far is now on disk, so durability starts at the chain's end.
        let durability = Arc::new(Durability::new(file.try_clone()?, seq));
        let syncer = match policy {
            DataPlaneSync::Always => None,
            DataPlaneSync::Interval(interval) => {
                Some(IntervalSyncer::start(Arc::clone(&durability), interval)?)
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            tail: Mutex::new(Tail { file, seq, head }),
            durability,
            policy,
            _syncer: syncer,
        })
    }

    /// Appends an event and (unless [`audit_sync::waits_for_fsync`] says the interval thread
    /// may do it) fsyncs it; returns the new chain head.
    pub fn append(
        &self,
        who: &Principal,
        action: &str,
        target: &str,
        outcome: &str,
        reason: Option<String>,
        details: Option<serde_json::Value>,
    ) -> AuditResult<String> {
        self.append_with(who, action, target, outcome, reason, |_| details)
    }

    /// Like [`AuditLog::append`], with details built from the chain head the event follows
    /// (a shred receipt names it), under the log's lock so nothing can come in between.
    pub fn append_with(
        &self,
        who: &Principal,
        action: &str,
        target: &str,
        outcome: &str,
        reason: Option<String>,
        details: impl FnOnce(&str) -> Option<serde_json::Value>,
    ) -> AuditResult<String> {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let details = details(&tail.head);
        let mut event = AuditEvent {
            seq: tail.seq,
            time: now_rfc3339(),
            action: action.to_string(),
            target: target.to_string(),
            initiator: Initiator {
                token_id: who.token_id.clone(),
                peer_uid: who.peer_uid,
            },
            outcome: outcome.to_string(),
            reason,
            details,
            prev: tail.head.clone(),
            hash: String::new(),
        };
        let line = hashed_line(&mut event).map_err(std::io::Error::other)?;
        tail.file.write_all(&line)?;
        // The line is in the file: the chain moves on even if the fsync below fails.
        tail.seq += 1;
        tail.head = event.hash.clone();
        let written = tail.seq;
        self.durability.wrote(written);
        drop(tail);
        if audit_sync::waits_for_fsync(self.policy, action, outcome) {
            blocking(|| self.durability.sync_through(written))?;
        } else {
            self.durability.defer();
        }
        Ok(event.hash)
    }

    /// The `[audit]` setting in effect and the fsync counters (`GET /v1/health`).
    pub fn sync_stats(&self) -> AuditSyncStats {
        audit_sync::stats(self.policy, &self.durability)
    }

    /// Whether the log can still take events: the open file is still the one named by its
    /// path (not moved or deleted underneath the daemon, whose events would then go nowhere a
    /// reader looks) and its filesystem accepts a data sync.
    pub fn probe(&self) -> AuditResult<()> {
        use std::os::unix::fs::MetadataExt;
        let file = {
            let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            tail.file.try_clone()?
        };
        let open = file.metadata()?;
        let named = std::fs::metadata(&self.path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        if (open.dev(), open.ino()) != (named.dev(), named.ino()) {
            return Err(std::io::Error::other(format!(
                "{} was moved or replaced while the daemon writes to it",
                self.path.display()
            )));
        }
        file.sync_data()
    }

    /// The current chain head.
    pub fn head(&self) -> String {
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .head
            .clone()
    }

    /// Events matching `action` (exact, or prefix when it ends in `*`) at or after `since`.
    pub fn query(&self, action: Option<&str>, since: Option<&str>) -> AuditResult<Vec<AuditEvent>> {
        // Compared as instants: RFC 3339 text with varying fraction digits or offsets does not
        // sort as time does.
        let since = match since {
            Some(text) => Some(parse_time(text).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("since must be an RFC 3339 time, got {text:?}"),
                )
            })?),
            None => None,
        };
        let file = File::open(&self.path)?;
        let mut events = Vec::new();
        for line in BufReader::new(file).lines().skip(1) {
            let Ok(event) = serde_json::from_str::<AuditEvent>(&line?) else {
                continue;
            };
            let action_ok = match action {
                None | Some("") => true,
                Some(a) => match a.strip_suffix('*') {
                    Some(prefix) => event.action.starts_with(prefix),
                    None => event.action == a,
                },
            };
            let since_ok = since.is_none_or(|s| parse_time(&event.time).is_some_and(|t| t >= s));
            if action_ok && since_ok {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Checks the whole chain.
    pub fn verify(&self) -> AuditResult<VerifyReport> {
        let _tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        verify_file(&self.path)
    }
}

/// Runs a blocking wait on a multi-thread tokio runtime without stalling its worker (the
/// worker's other tasks move to another thread); elsewhere just runs it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Removes a last line without its newline: the write of an event cut short by a crash. Its
/// request was never answered (an append returns only after the whole line is written), and
/// appending after it would break the chain for good at that line.
fn cut_torn_tail(file: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(newline) = chunk.iter().rposition(|b| *b == b'\n') {
            let keep = start + newline as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
                file.sync_data()?;
            }
            return Ok(len - keep);
        }
        end = start;
    }
    // Not even the header line is whole: leave it to `verify_file` to report.
    Ok(0)
}

fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Checks a log file's header and chain; reports the first broken line.
pub fn verify_file(path: &Path) -> AuditResult<VerifyReport> {
    let file = File::open(path)?;
    let mut head = GENESIS.to_string();
    let mut events = 0u64;
    let broken = |line: u64, problem: &str, events: u64, head: String| VerifyReport {
        ok: false,
        events,
        first_broken_line: Some(line),
        problem: Some(problem.to_string()),
        head,
    };
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        let number = index as u64 + 1;
        if index == 0 {
            if line != HEADER {
                return Ok(broken(number, "missing or unknown header", 0, head));
            }
            continue;
        }
        let Ok(event) = serde_json::from_str::<AuditEvent>(&line) else {
            return Ok(broken(number, "not a valid event", events, head));
        };
        if event.seq != events {
            return Ok(broken(number, "sequence number out of order", events, head));
        }
        if event.prev != head {
            return Ok(broken(
                number,
                "previous-hash link does not match",
                events,
                head,
            ));
        }
        if event.compute_hash() != event.hash {
            return Ok(broken(number, "hash does not match content", events, head));
        }
        head = event.hash;
        events += 1;
    }
    Ok(VerifyReport {
        ok: true,
        events,
        first_broken_line: None,
        problem: None,
        head,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The single serialization gives the line and hash that serializing twice gave.
    #[test]
    fn hashed_line_matches_hashing_then_serializing() {
        for details in [None, Some(serde_json::json!({ "items": 1, "failed": 0 }))] {
            let mut event = AuditEvent {
                seq: 3,
                time: now_rfc3339(),
                action: "kms.transit.encrypt".into(),
                target: "crn:\"quoted\"".into(),
                initiator: Initiator {
                    token_id: "tok_1".into(),
                    peer_uid: Some(0),
                },
                outcome: "success".into(),
                reason: Some("why".into()),
                details,
                prev: GENESIS.into(),
                hash: String::new(),
            };
            let line = hashed_line(&mut event).unwrap();
            assert_eq!(event.hash, event.compute_hash());
            let mut expected = serde_json::to_vec(&event).unwrap();
            expected.push(b'\n');
            assert_eq!(line, expected);
        }
    }

    /// Group commit: concurrent appenders (plain threads and tokio tasks that block in place)
    /// each get their event on disk, in one unbroken chain.
    #[test]
    fn concurrent_appends_share_fsyncs_and_keep_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = std::sync::Arc::new(AuditLog::open(&path).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = std::sync::Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let target = format!("crn:{t}:{i}");
                        log.append(
                            &Principal::system(),
                            "kms.secrets.wrap",
                            &target,
                            "success",
                            None,
                            None,
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let log = std::sync::Arc::clone(&log);
                    tokio::spawn(async move {
                        for i in 0..25 {
                            let target = format!("crn:task{t}:{i}");
                            log.append(
                                &Principal::system(),
                                "kms.secrets.unwrap",
                                &target,
                                "success",
                                None,
                                None,
                            )
                            .unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        for thread in threads {
            thread.join().unwrap();
        }
        let report = log.verify().unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.events, 400);
        assert_eq!(log.durability.durable(), 400);
    }

    fn wrap(log: &AuditLog, outcome: &str) {
        log.append(
            &Principal::system(),
            "kms.secrets.wrap",
            "crn:k",
            outcome,
            None,
            None,
        )
        .unwrap();
    }

    /// `interval`: a successful wrap is answered with its line written and chained but not
    /// fsynced; a denied wrap and a control-plane event are fsynced before they return, and
    /// their fsync covers the wrap before them.
    #[test]
    fn interval_mode_defers_only_successful_data_plane_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // Long enough that the thread cannot run during the test.
        let log =
            AuditLog::open_with(&path, DataPlaneSync::Interval(Duration::from_secs(10))).unwrap();
        wrap(&log, "success");
        wrap(&log, "success");
        assert_eq!(log.durability.fsyncs(), 0);
        assert_eq!(log.durability.durable(), 0);
        assert_eq!(log.durability.written(), 2);
        let report = verify_file(&path).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.events, 2);
        assert_eq!(report.head, log.head());

        wrap(&log, "denied");
        assert_eq!(log.durability.fsyncs(), 1);
        assert_eq!(log.durability.durable(), 3);
        wrap(&log, "success");
        log.append(
            &Principal::system(),
            "kms.secrets.create",
            "crn:k2",
            "success",
            None,
            None,
        )
        .unwrap();
        assert_eq!(log.durability.fsyncs(), 2);
        assert_eq!(log.durability.durable(), 5);
        let stats = log.sync_stats();
        assert_eq!(stats.data_plane_sync, "interval");
        assert_eq!(stats.sync_interval_ms, Some(10_000));
        assert_eq!((stats.written_events, stats.durable_events), (5, 5));
        assert!(log.verify().unwrap().ok);
    }

    /// The background thread fsyncs deferred lines about one interval after the first of them,
    /// with one `fdatasync` for the lot.
    #[test]
    fn interval_thread_makes_data_plane_events_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let interval = Duration::from_millis(50);
        let log = AuditLog::open_with(&path, DataPlaneSync::Interval(interval)).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..3 {
            wrap(&log, "success");
        }
        while log.durability.durable() < 3 {
            // Generous: the machine running the tests may be loaded.
            assert!(start.elapsed() < Duration::from_secs(10), "never synced");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(start.elapsed() >= interval, "synced before the interval");
        assert!((1..=3).contains(&log.durability.fsyncs()));
        assert!(log.verify().unwrap().ok);
    }

    /// Dropping the log stops its thread at once (not after the interval), after a last fsync.
    #[test]
    fn dropping_the_log_stops_the_sync_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log =
            AuditLog::open_with(&path, DataPlaneSync::Interval(Duration::from_secs(10))).unwrap();
        wrap(&log, "success");
        let durability = Arc::downgrade(&log.durability);
        let start = std::time::Instant::now();
        drop(log);
        assert!(start.elapsed() < Duration::from_secs(5));
        // The thread held the other reference; it is gone, so the thread has exited.
        assert!(durability.upgrade().is_none());
        assert_eq!(verify_file(&path).unwrap().events, 1);
    }

    #[test]
    fn a_line_torn_by_a_crash_is_cut_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let who = Principal::system();
        let log = AuditLog::open(&path).unwrap();
        for target in ["crn:a", "crn:b"] {
            log.append(&who, "kms.secrets.create", target, "success", None, None)
                .unwrap();
        }
        drop(log);
        let whole = std::fs::read(&path).unwrap();
        // The write of a third event, cut short: no newline at its end.
        let mut torn = whole.clone();
        torn.extend_from_slice(br#"{"seq":2,"time":"2026-11-27T05:00:00Z","act"#);
        std::fs::write(&path, &torn).unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        log.append(&who, "kms.secrets.delete", "crn:a", "success", None, None)
            .unwrap();
        let report = log.verify().unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.events, 3);
    }

    #[test]
    fn chain_verifies_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let who = Principal::system();
        for i in 0..5 {
            log.append(
                &who,
                "kms.secrets.create",
                &format!("crn:{i}"),
                "success",
                None,
                None,
            )
            .unwrap();
        }
        assert!(log.verify().unwrap().ok);
        assert_eq!(log.verify().unwrap().events, 5);
        drop(log);
        // Reopen continues the chain.
        let log = AuditLog::open(&path).unwrap();
        log.append(&who, "kms.secrets.delete", "crn:x", "success", None, None)
            .unwrap();
        assert_eq!(log.verify().unwrap().events, 6);
        assert_eq!(
            log.query(Some("kms.secrets.delete"), None).unwrap().len(),
            1
        );
        assert_eq!(log.query(Some("kms.*"), None).unwrap().len(), 6);
        let text = std::fs::read_to_string(&path).unwrap();
        let tampered = text.replacen("crn:2", "crn:9", 1);
        std::fs::write(&path, tampered).unwrap();
        let report = verify_file(&path).unwrap();
        assert!(!report.ok);
        assert_eq!(report.first_broken_line, Some(4));
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(2);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        assert_eq!(verify_file(&path).unwrap().first_broken_line, Some(3));
    }
}
