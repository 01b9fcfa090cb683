//! The activity log: `<data_dir>/audit.log`, one JSON object per line, hash-chained.
//!
//! ```text
//! line 1: {"magic":"envault-audit","version":1}
//! line n: {"seq":n-1,"time":…,"action":…,"target":…,"initiator":{…},"outcome":…,
//!          "reason":…,"details":…,"prev":<hash of line n-1>,"hash":<this line's hash>}
//! hash = hex SHA-256( prev || the line serialized with "hash":"" )
//! ```
//!
//! Each append is fsynced before the request it records is answered. Appends that arrive while
//! an fsync runs share the next one (group commit): the line is written under the tail lock,
//! then the writer waits until an fsync that started after its write has finished. Editing, removing or
//! reordering any line breaks the chain at that line, which `verify` reports. Events carry
//! names, CRNs and reasons only: never key material, never record values.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

pub use crate::api::{AuditEvent, AuditInitiator as Initiator, AuditVerifyReport as VerifyReport};

use super::{now_rfc3339, Principal};

const HEADER: &str = r#"{"magic":"envault-audit","version":1}"#;
/// The chain's starting hash (before the first event).
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditEvent {
    fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let json = serde_json::to_vec(&unhashed).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(self.prev.as_bytes());
        hasher.update(&json);
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
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
    /// Events known durable (every event with `seq` below it was fsynced); taken before `tail`.
    durable: Mutex<u64>,
    /// A second handle on the log, fsynced without holding `tail` so appends continue.
    sync_handle: File,
}

/// Errors writing the log; a request whose event cannot be written fails.
pub type AuditResult<T> = Result<T, std::io::Error>;

impl AuditLog {
    /// Opens (or creates) the log and finds the chain's head.
    pub fn open(path: &Path) -> AuditResult<Self> {
        let exists = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(path)?;
        let (seq, head) = if exists {
            let report = verify_file(path)?;
            if !report.ok {
                tracing::error!(
                    line = report.first_broken_line,
                    problem = report.problem.as_deref().unwrap_or(""),
                    "audit log chain is broken; appending after the last good event"
                );
            }
            (report.events, report.head)
        } else {
            writeln!(file, "{HEADER}")?;
            file.sync_all()?;
            (0, GENESIS.to_string())
        };
        let sync_handle = file.try_clone()?;
        Ok(Self {
            path: path.to_path_buf(),
            tail: Mutex::new(Tail { file, seq, head }),
            durable: Mutex::new(seq),
            sync_handle,
        })
    }

    /// Appends an event and fsyncs; returns the new chain head.
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
        event.hash = event.compute_hash();
        let mut line = serde_json::to_vec(&event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        tail.file.write_all(&line)?;
        tail.seq += 1;
        tail.head = event.hash.clone();
        let written = tail.seq;
        drop(tail);
        self.sync_through(written)?;
        Ok(event.hash)
    }

    /// Returns once the first `written` events are durable: either an fsync that began after
    /// they were written has finished, or this call runs one, covering everything written so
    /// far (the appends that queued up during the previous fsync included).
    fn sync_through(&self, written: u64) -> AuditResult<()> {
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        if *durable >= written {
            return Ok(());
        }
        let target = self.tail.lock().unwrap_or_else(|p| p.into_inner()).seq;
        self.sync_handle.sync_data()?;
        *durable = target;
        Ok(())
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
    use super::*;

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
