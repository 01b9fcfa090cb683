//! The activity log: `<data_dir>/audit.log`, one JSON object per line, chained with
//! HMAC-SHA-256 under a key the log never holds, and anchored by `audit.head`. The line
//! formats and the chain check are in [`super::audit_chain`], the head file in
//! [`super::audit_head`].
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
//! Editing, removing or reordering any line breaks the chain at that line, and removing the
//! last lines leaves the log shorter than its head file; `verify` reports both. A log that is
//! shorter than its head file, or whose head file is missing or forged, is refused at start
//! (appending would overwrite the evidence). Events carry names, CRNs and reasons only: never
//! key material, never record values.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::api::{AuditEvent, AuditInitiator as Initiator, AuditVerifyReport as VerifyReport};

pub use super::audit_chain::ChainKey;
use super::audit_chain::{hashed_line, verify_file, Checked, Head, GENESIS, HEADER};
use super::audit_head::{self, HeadFile};
use super::audit_sync::{self, AuditSyncStats, DataPlaneSync, Durability, IntervalSyncer};
use super::{now_rfc3339, DataDirError, Principal, ServiceError};

struct Tail {
    file: File,
    seq: u64,
    head: String,
}

/// The append-only, hash-chained activity log.
pub struct AuditLog {
    path: PathBuf,
    key: ChainKey,
    tail: Mutex<Tail>,
    /// When lines reach the disk: group commit and the interval thread.
    durability: Arc<Durability>,
    policy: DataPlaneSync,
    /// The background fsync thread of `interval` mode; stopped (after a last fsync) on drop.
    _syncer: Option<IntervalSyncer>,
}

/// Errors writing the log; a request whose event cannot be written fails. A log refused at
/// start (see the module docs) is an error of kind `InvalidData`.
pub type AuditResult<T> = Result<T, std::io::Error>;

fn refuse(path: &Path, problem: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "activity log {}: {problem}. Keep audit.log and audit.head as evidence; to start \
             anyway, move both aside (a new log begins)",
            path.display()
        ),
    )
}

impl AuditLog {
    /// Opens (or creates) the log and finds the chain's head; every event is fsynced before
    /// its answer (`data_plane_sync = "always"`).
    pub fn open(path: &Path, key: ChainKey) -> AuditResult<Self> {
        Self::open_with(path, key, DataPlaneSync::Always)
    }

    /// Like [`AuditLog::open`], with the `[audit]` durability policy (`interval` starts the
    /// background fsync thread).
    pub fn open_with(path: &Path, key: ChainKey, policy: DataPlaneSync) -> AuditResult<Self> {
        let head_path = audit_head::head_path(path);
        let exists = path.exists();
        let anchor = audit_head::read(&head_path, &key)?;
        if !exists {
            match &anchor {
                Ok(None) => {}
                Ok(Some(head)) => {
                    return Err(refuse(
                        path,
                        &format!(
                            "the log is missing but audit.head records {} events",
                            head.events
                        ),
                    ))
                }
                Err(problem) => return Err(refuse(path, problem)),
            }
        }
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
            let upgrading = matches!(anchor, Ok(None));
            let Checked {
                report,
                anchor_failed,
            } = verify_file(path, &key, anchor)?;
            if anchor_failed {
                return Err(refuse(path, report.problem.as_deref().unwrap_or("")));
            }
            if !report.ok {
                tracing::error!(
                    line = report.first_broken_line,
                    problem = report.problem.as_deref().unwrap_or(""),
                    "audit log chain is broken; appending after the last good event"
                );
            } else if upgrading {
                tracing::info!(
                    events = report.events,
                    "activity log written before its chain was keyed: its lines still verify, \
                     new lines are keyed (HMAC-SHA-256) and its head is now recorded"
                );
            }
            // A previous run in "interval" mode may have been killed with lines not yet
            // fsynced: sync them once here rather than count them as durable unsynced.
            file.sync_data()?;
            (report.events, report.head)
        } else {
            writeln!(file, "{HEADER}")?;
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            (0, GENESIS.to_string())
        };
        // Everything written so far is now on disk, so durability (and the head file) starts
        // at the chain's end.
        let durable = Head::new(seq, &head);
        let head_file = HeadFile::open(&head_path, &key, durable)?;
        let durability = Arc::new(Durability::new(file.try_clone()?, durable, head_file));
        let syncer = match policy {
            DataPlaneSync::Always => None,
            DataPlaneSync::Interval(interval) => {
                Some(IntervalSyncer::start(Arc::clone(&durability), interval)?)
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            key,
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
            chain: None,
            prev: tail.head.clone(),
            hash: String::new(),
        };
        let line = hashed_line(&mut event, &self.key).map_err(std::io::Error::other)?;
        tail.file.write_all(&line)?;
        // The line is in the file: the chain moves on even if the fsync below fails.
        tail.seq += 1;
        tail.head = event.hash.clone();
        let written = tail.seq;
        self.durability.wrote(Head::new(written, &tail.head));
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

    /// Checks the whole chain, and the log against its head file.
    pub fn verify(&self) -> AuditResult<VerifyReport> {
        let _tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        verify_path(&self.path, &self.key)
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

/// Opens `<data_dir>/audit.log` for the daemon, keyed by the keystore's chain key (or, for
/// backends that derive none, the key in `<data_dir>/audit.key`).
pub(super) fn open_in(
    config: &crate::config::Config,
    keystore: &dyn crate::keystore::RootKeyBackend,
    policy: DataPlaneSync,
) -> Result<AuditLog, ServiceError> {
    let path = config.data_dir.join("audit.log");
    let key = match keystore.audit_chain_key()? {
        Some(key) => key,
        None => audit_head::load_or_create_key_file(&config.data_dir.join(KEY_FILE))
            .map_err(|e| storage(&path, e))?,
    };
    AuditLog::open_with(&path, ChainKey::new(key), policy).map_err(|e| storage(&path, e))
}

const KEY_FILE: &str = "audit.key";

fn storage(path: &Path, err: std::io::Error) -> ServiceError {
    if err.kind() == std::io::ErrorKind::InvalidData {
        return DataDirError::ActivityLog(err.to_string()).into();
    }
    ServiceError::AuditLog(format!("activity log {}: {err}", path.display()))
}

/// `envault audit verify --data-dir`: checks the log of a data dir with the daemon stopped (or
/// running), creating nothing. The chain key comes from the master key file (file keystore)
/// or `audit.key` (other backends).
pub fn verify_data_dir(config: &crate::config::Config) -> Result<VerifyReport, ServiceError> {
    let path = config.data_dir.join("audit.log");
    let key = if config.keystore.backend == "file" {
        crate::keystore::audit_key_from_file(&config.master_key_path())?
    } else {
        let key_path = config.data_dir.join(KEY_FILE);
        audit_head::load_key_file(&key_path)
            .map_err(|e| storage(&key_path, e))?
            .ok_or_else(|| {
                storage(
                    &key_path,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no chain key file"),
                )
            })?
    };
    if !path.exists() {
        return Err(storage(
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no activity log"),
        ));
    }
    verify_path(&path, &ChainKey::new(key)).map_err(|e| storage(&path, e))
}

/// Checks the log at `path` and its head file with `key` (also with the daemon stopped).
pub fn verify_path(path: &Path, key: &ChainKey) -> AuditResult<VerifyReport> {
    let anchor = audit_head::read(&audit_head::head_path(path), key)?;
    Ok(verify_file(path, key, anchor)?.report)
}

fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
