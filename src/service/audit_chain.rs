//! The activity log's line formats and its chain check.
//!
//! ```text
//! line 1 (header): {"magic":"envault-audit","version":2}      (version 1: written before the
//!                                                               chain was keyed)
//! event line:      {"seq":…,…,"details":…,"chain":"hmac-sha256","prev":<hash n-1>,"hash":<hash n>}
//! keyed hash  = hex HMAC-SHA-256(chain key, prev || the line serialized with "hash":"")
//! legacy hash = hex SHA-256(prev || the line serialized with "hash":"")  (no "chain" field)
//! ```
//!
//! The chain key comes from the keystore (derived from the master key with the file backend)
//! and is never written in the log, so whoever can edit the file but does not hold the key
//! cannot recompute a valid chain. Legacy lines verify as before, but only in a version-1 log
//! and only before its first keyed line: a daemon that upgrades an old log appends keyed lines
//! after the old ones, and an unkeyed line after a keyed one is a rewrite.
//!
//! Truncation (cutting the last lines) leaves a valid chain; the head file (`audit.head`,
//! [`super::audit_head`]) records how far the log reached, and the check compares the two.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use hmac::Mac as _;
use sha2::{Digest, Sha256};

use crate::api::{AuditEvent, AuditVerifyReport as VerifyReport};
use crate::crypto::SecretKey;

/// Header of logs whose lines are all keyed.
pub(super) const HEADER: &str = r#"{"magic":"envault-audit","version":2}"#;
/// Header of logs begun before the chain was keyed (their first lines are legacy).
pub(super) const HEADER_V1: &str = r#"{"magic":"envault-audit","version":1}"#;
/// The chain's starting hash (before the first event).
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// `chain` of keyed lines.
pub(super) const KEYED: &str = "hmac-sha256";

/// The key of the HMAC chain (and of the head file's tags). Zeroized on drop, no `Debug`.
pub struct ChainKey(SecretKey);

impl ChainKey {
    /// Wraps key material from the keystore or the chain key file.
    pub fn new(key: SecretKey) -> Self {
        Self(key)
    }

    /// A second handle on the same key (the head file keeps one).
    pub(super) fn duplicate(&self) -> Self {
        // 32 bytes into 32 bytes cannot fail; the fallback is unreachable.
        Self(SecretKey::from_slice(self.0.expose_secret()).unwrap_or_else(|_| unreachable!()))
    }

    /// HMAC-SHA-256 over the concatenation of `parts`.
    pub(super) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // Any key length is accepted by HMAC; the error branch cannot happen.
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(self.0.expose_secret()) else {
            unreachable!("HMAC takes keys of any length")
        };
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Where the log stood: `events` lines, the last with this hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub events: u64,
    pub hash: [u8; 32],
}

impl Head {
    /// The head for `events` events whose last hash is `hash_hex` (zeros when unparseable:
    /// such a head never matches, which verification then reports).
    pub(super) fn new(events: u64, hash_hex: &str) -> Self {
        Self {
            events,
            hash: unhex(hash_hex).unwrap_or([0u8; 32]),
        }
    }
}

/// Lower-case hex, without a `format!` per byte (runs on every event).
pub(super) fn hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    hex
}

/// The 32 bytes of a 64-digit hex hash (`None` if it is not one).
pub(super) fn unhex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let value = |d: u8| char::from(d).to_digit(16).map(|v| v as u8);
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

fn chain_hash(key: Option<&ChainKey>, prev: &str, unhashed_json: &[u8]) -> String {
    match key {
        Some(key) => hex(&key.mac(&[prev.as_bytes(), unhashed_json])),
        None => {
            let mut hasher = Sha256::new();
            hasher.update(prev.as_bytes());
            hasher.update(unhashed_json);
            hex(&hasher.finalize().into())
        }
    }
}

/// The hash an event's line should carry: keyed or legacy as its `chain` field says.
fn compute_hash(event: &AuditEvent, key: &ChainKey) -> String {
    let mut unhashed = event.clone();
    unhashed.hash = String::new();
    let json = serde_json::to_vec(&unhashed).unwrap_or_default();
    let keyed = event.chain.is_some();
    chain_hash(keyed.then_some(key), &event.prev, &json)
}

/// Marks a new event keyed, serializes it (its `hash` still empty) once, and fills in its
/// keyed hash: the line is the hashed bytes with the hash put into the trailing `"hash":""`,
/// which is what serializing the hashed event gives (`hash` is the last field). Falls back to
/// serializing again should the layout ever differ.
pub(super) fn hashed_line(event: &mut AuditEvent, key: &ChainKey) -> serde_json::Result<Vec<u8>> {
    const EMPTY_HASH_END: &[u8] = br#""hash":""}"#;
    event.chain = Some(KEYED.to_string());
    let mut line = serde_json::to_vec(&*event)?;
    event.hash = chain_hash(Some(key), &event.prev, &line);
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

/// A verification report, and whether it failed on the head file (lines removed at the end,
/// the head file missing or forged) rather than on a line of the log.
pub(super) struct Checked {
    pub report: VerifyReport,
    pub anchor_failed: bool,
}

fn broken(line: u64, problem: impl Into<String>, events: u64, head: &str) -> Checked {
    Checked {
        report: VerifyReport {
            ok: false,
            events,
            first_broken_line: Some(line),
            problem: Some(problem.into()),
            head: head.to_string(),
        },
        anchor_failed: false,
    }
}

/// Checks a log's header and chain, then the chain against `anchor` (the head file's
/// content: `Ok(None)` when there is none, `Err` when it is damaged or forged).
pub(super) fn verify_file(
    path: &Path,
    key: &ChainKey,
    anchor: Result<Option<Head>, String>,
) -> std::io::Result<Checked> {
    let file = File::open(path)?;
    let mut head = GENESIS.to_string();
    let mut events = 0u64;
    // Legacy (unkeyed) lines are accepted only in a version-1 log before its first keyed line.
    let mut legacy_allowed = false;
    let mut keyed_log = false;
    let anchored_at = anchor
        .as_ref()
        .ok()
        .and_then(|a| a.as_ref())
        .map(|a| a.events);
    // The hash after `anchored_at` events, to compare with the head file.
    let mut hash_at_anchor = (anchored_at == Some(0)).then(|| GENESIS.to_string());
    let mut lines = 0u64;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        let number = index as u64 + 1;
        lines = number;
        if index == 0 {
            match line.as_str() {
                HEADER => keyed_log = true,
                HEADER_V1 => legacy_allowed = true,
                _ => return Ok(broken(number, "missing or unknown header", 0, &head)),
            }
            continue;
        }
        let Ok(event) = serde_json::from_str::<AuditEvent>(&line) else {
            return Ok(broken(number, "not a valid event", events, &head));
        };
        if event.seq != events {
            return Ok(broken(
                number,
                "sequence number out of order",
                events,
                &head,
            ));
        }
        if event.prev != head {
            return Ok(broken(
                number,
                "previous-hash link does not match",
                events,
                &head,
            ));
        }
        match event.chain.as_deref() {
            None if !legacy_allowed => {
                return Ok(broken(
                    number,
                    "unkeyed line in a keyed log (the chain was recomputed without the key)",
                    events,
                    &head,
                ))
            }
            None => {}
            Some(KEYED) => {
                legacy_allowed = false;
                keyed_log = true;
            }
            Some(_) => return Ok(broken(number, "unknown chain format", events, &head)),
        }
        if compute_hash(&event, key) != event.hash {
            return Ok(broken(number, "hash does not match content", events, &head));
        }
        head = event.hash;
        events += 1;
        if anchored_at == Some(events) {
            hash_at_anchor = Some(head.clone());
        }
    }
    let anchor_problem = match anchor {
        Err(problem) => Some(problem),
        Ok(None) if keyed_log => Some(
            "the head file audit.head is missing: the log cannot be checked for removed lines"
                .into(),
        ),
        Ok(None) => None,
        Ok(Some(anchor)) => match hash_at_anchor {
            None => Some(format!(
                "the log ends after {events} events but audit.head records {}: lines were removed",
                anchor.events
            )),
            Some(hash) if unhex(&hash) != Some(anchor.hash) => Some(format!(
                "event {} does not match the hash audit.head records: the log was replaced",
                anchor.events
            )),
            Some(_) => None,
        },
    };
    if let Some(problem) = anchor_problem {
        let mut checked = broken(lines + 1, problem, events, &head);
        checked.anchor_failed = true;
        return Ok(checked);
    }
    Ok(Checked {
        report: VerifyReport {
            ok: true,
            events,
            first_broken_line: None,
            problem: None,
            head,
        },
        anchor_failed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AuditInitiator;

    fn key(byte: u8) -> ChainKey {
        ChainKey::new(SecretKey::from_slice(&[byte; 32]).unwrap())
    }

    fn event(prev: &str) -> AuditEvent {
        AuditEvent {
            seq: 3,
            time: super::super::now_rfc3339(),
            action: "kms.transit.encrypt".into(),
            target: "crn:\"quoted\"".into(),
            initiator: AuditInitiator {
                token_id: "tok_1".into(),
                peer_uid: Some(0),
            },
            outcome: "success".into(),
            reason: Some("why".into()),
            details: Some(serde_json::json!({ "items": 1 })),
            chain: None,
            prev: prev.into(),
            hash: String::new(),
        }
    }

    /// The single serialization gives the line and hash that serializing twice gives, and the
    /// hash depends on the key.
    #[test]
    fn hashed_line_matches_hashing_then_serializing() {
        let mut e = event(GENESIS);
        let line = hashed_line(&mut e, &key(1)).unwrap();
        assert_eq!(e.chain.as_deref(), Some(KEYED));
        assert_eq!(e.hash, compute_hash(&e, &key(1)));
        assert_ne!(e.hash, compute_hash(&e, &key(2)));
        let mut expected = serde_json::to_vec(&e).unwrap();
        expected.push(b'\n');
        assert_eq!(line, expected);
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex(GENESIS), Some([0u8; 32]));
        assert_eq!(unhex("zz"), None);
    }
}
