//! The activity log as the API shows it: events and the hash-chain check.

use serde::{Deserialize, Serialize};

/// Who made an audited request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditInitiator {
    /// Token id (never the secret), or `system` / `anonymous`.
    pub token_id: String,
    /// Peer uid of the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_uid: Option<u32>,
}

/// One event of the activity log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    /// Position in the log, from 0.
    pub seq: u64,
    /// RFC 3339.
    pub time: String,
    /// `kms.secrets.delete`, `databases.create`, …
    pub action: String,
    /// Target CRN (or the reference given, when it did not resolve).
    pub target: String,
    /// Who.
    pub initiator: AuditInitiator,
    /// `success` | `failure` | `denied`.
    pub outcome: String,
    /// Error code or explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Structured extras (receipts, counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// How `hash` is computed: `"hmac-sha256"` (keyed chain); absent on lines of logs written
    /// before the chain was keyed (plain SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Hash of the previous event.
    pub prev: String,
    /// Hash of this event.
    pub hash: String,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvents {
    /// Matching events, oldest first.
    pub events: Vec<AuditEvent>,
}

/// `GET /v1/audit/verify`: the result of checking the log's hash chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditVerifyReport {
    /// Whether every line checks.
    pub ok: bool,
    /// Events checked (up to the first broken line).
    pub events: u64,
    /// 1-based line number of the first broken line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_broken_line: Option<u64>,
    /// What is wrong there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Hash of the last good event.
    pub head: String,
}
