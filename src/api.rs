//! Wire types of the socket API (`shared/API.md`), shared by the server and the [`crate::client`],
//! so the two cannot drift apart. Binary values travel as standard base64 strings.

mod kms;
pub use kms::{KeyPolicyInfo, SetPolicyRequest};

use serde::{Deserialize, Serialize};

pub use crate::store::ValueLogStats;

/// Error body: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable snake_case code and a human sentence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable code, e.g. `key_destroyed`.
    pub code: String,
    /// Human sentence.
    pub message: String,
}

/// `POST /v1/keys` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Unique name.
    pub name: String,
    /// Base64 of exactly 32 bytes to import; absent = generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A root key as the API shows it. Never carries material.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyInfo {
    /// UUID.
    pub id: String,
    /// `crn:v1:envault:local:a/<instance>:<instance-id>:key:<id>`.
    pub crn: String,
    /// Unique name.
    pub name: String,
    /// `generated` | `imported` | `provider`.
    pub origin: String,
    /// `active` | `suspended` | `pending_destruction` | `destroyed`.
    pub state: String,
    /// Newest version (the one that wraps).
    pub version: u32,
    /// RFC 3339 time.
    pub created_at: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Only on `GET /v1/keys/{key}`: what this key protects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrations: Option<Vec<Registration>>,
    /// Only on `GET /v1/keys/{key}`: rotation and deletion policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<KeyPolicyInfo>,
    /// In state `pending_destruction`: RFC 3339 of the shred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_at: Option<String>,
}

/// One resource a key protects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    /// `database` | `backup`.
    pub kind: String,
    /// Resource id.
    pub id: String,
    /// Resource CRN.
    pub crn: String,
    /// Resource name (databases) or id (backups).
    pub name: String,
    /// Resource state, e.g. `active`, `deleted`, `disabled`.
    pub state: String,
    /// `key` (records) or `backup_key`.
    pub role: String,
    /// When this registration ends by itself: a soft-deleted database's purge, a kept backup's
    /// expiry (RFC 3339). Absent while it lasts until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_at: Option<String>,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyList {
    /// Customer keys (provider-managed keys are not listed).
    pub keys: Vec<KeyInfo>,
}

/// `POST /v1/keys/{key}/wrap` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrapRequest {
    /// Base64 plaintext to wrap; absent = generate and return a new 32-byte DEK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
    /// Additional authenticated data; the same list must be given to unwrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<Vec<String>>,
}

/// `POST /v1/keys/{key}/wrap` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrapResponse {
    /// Base64 envelope.
    pub ciphertext: String,
    /// Root key version that wrapped it.
    pub key_version: u32,
    /// Base64 of the generated DEK, only when the request sent no plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
}

/// `POST /v1/keys/{key}/unwrap` and `/rewrap` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnwrapRequest {
    /// Base64 envelope from wrap.
    pub ciphertext: String,
    /// The AAD given to wrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<Vec<String>>,
}

/// `POST /v1/keys/{key}/unwrap` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnwrapResponse {
    /// Base64 plaintext.
    pub plaintext: String,
}

/// `POST /v1/keys/{key}/rewrap` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewrapResponse {
    /// Base64 envelope under the newest version.
    pub ciphertext: String,
    /// That version.
    pub key_version: u32,
}

/// `POST /v1/databases` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDatabaseRequest {
    /// Unique name.
    pub name: String,
    /// Customer key (name, id or CRN); absent = provider-managed key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Separate key for backups; `backup_encryption_key_crn` (the seed's name) is accepted too.
    /// The database's own key named here is no separate backup key: backups use it under the
    /// database's own authorization.
    #[serde(
        default,
        alias = "backup_encryption_key_crn",
        skip_serializing_if = "Option::is_none"
    )]
    pub backup_key: Option<String>,
    /// Create the `databases` authorizations the keys need when they are missing (`Reader` on
    /// the key, `Reader` + `AuthorizationDelegator` on a separate backup key); existing ones
    /// are kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_authorization: bool,
}

/// `GET /v1/databases` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseListQuery {
    /// Only databases in this state: `active`, `deleted` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A database as the API shows it (in every state, shredded included).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// UUID.
    pub id: String,
    /// CRN.
    pub crn: String,
    /// Unique name.
    pub name: String,
    /// `active` | `deleted` | `disabled`.
    pub state: String,
    /// Why it is not active (`key_destroyed`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// Id of the root key protecting records.
    pub key: String,
    /// CRN of that key.
    pub key_crn: String,
    /// `generated` | `imported` | `provider`.
    pub key_origin: String,
    /// Id of the backup key, if one was named.
    pub backup_key: Option<String>,
    /// Name of the key backups are made under: the backup key's, else the database's own key's
    /// (`provider-managed` when envault made that key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_key_name: Option<String>,
    /// RFC 3339 time.
    pub created_at: String,
    /// When it was soft-deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// When a soft-deleted database is purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_at: Option<String>,
}

/// `GET /v1/databases`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseList {
    /// Every database.
    pub databases: Vec<DatabaseInfo>,
}

/// `GET /v1/databases/{db}/records?prefix=&after=&limit=` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordListQuery {
    /// Only keys starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only keys strictly after this (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Page size (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `POST /v1/databases/{db}/records:batch` body: operations run in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordBatchRequest {
    /// 1 to 1,000 operations.
    pub ops: Vec<RecordBatchOp>,
}

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum RecordBatchOp {
    /// Write a record.
    Put {
        /// Record key.
        key: String,
        /// Value, base64.
        value: String,
    },
    /// Read a record.
    Get {
        /// Record key.
        key: String,
    },
    /// Remove a record.
    Delete {
        /// Record key.
        key: String,
    },
}

impl RecordBatchOp {
    /// A put of raw bytes (base64-encoded here).
    pub fn put(key: impl Into<String>, value: &[u8]) -> Self {
        use base64::Engine as _;
        RecordBatchOp::Put {
            key: key.into(),
            value: base64::engine::general_purpose::STANDARD.encode(value),
        }
    }
}

impl RecordBatchResult {
    /// The value of a successful get, decoded; `None` when there is none or it is not base64.
    pub fn value_bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let value = self.value.as_ref()?;
        base64::engine::general_purpose::STANDARD.decode(value).ok()
    }
}

/// `POST …/records:batch` answer: one result per operation, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordBatchResponse {
    /// Results, in the order of the operations.
    pub results: Vec<RecordBatchResult>,
}

/// What one operation of a batch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatchResult {
    /// The status the single-record route would have answered: 204 for a put or delete, 200
    /// for a get, else the error's status.
    pub status: u16,
    /// The value of a successful get, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why this operation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// A page of record keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordPage {
    /// Keys in byte order.
    pub keys: Vec<String>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

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

// ----- lifecycle, authorizations and the activity log (client-side view of the answers)

/// `POST /v1/keys/{key}/rotate` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Destroy the older versions once every DEK is rewrapped.
    #[serde(default)]
    pub retire_old: bool,
    /// Answer only when the rewrap job is done (the daemon's default); `false` answers 202 at
    /// once and the job runs in the background (follow it with `GET /v1/keys/{key}/rotation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

/// Progress of a key's rotation job (`GET /v1/keys/{key}/rotation`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotationStatus {
    /// Job id.
    pub job: String,
    /// `pending` | `running` | `completed` | `failed` (a failed job resumes at the next start).
    pub state: String,
    /// Version every DEK is rewrapped to.
    pub target_version: u32,
    /// DEKs to rewrap in all.
    pub total: u64,
    /// DEKs rewrapped so far.
    pub done: u64,
    /// Versions destroyed at the end (`retire_old`).
    #[serde(default)]
    pub retired_versions: Vec<u32>,
    /// Backup headers rewrapped.
    #[serde(default)]
    pub backups_rewrapped: u64,
    /// Why the job failed (`state` = `failed`); it resumes at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/keys/{key}/rotate` answer: 200 when the job is done, 202 when it was started in
/// the background.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotateResponse {
    /// The key's new version.
    pub version: u32,
    /// The job's status when the answer was sent.
    pub job: RotationStatus,
}

/// One resource a lifecycle action touches (in previews and shred receipts).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AffectedResource {
    /// `database` | `backup`.
    pub kind: String,
    /// CRN.
    pub crn: String,
    /// Name.
    pub name: String,
    /// State: before the action in previews, after it in shred receipts.
    pub state: String,
    /// Why, in shred receipts: `key_destroyed` (records or backups under the key) or
    /// `backup_key_destroyed` (a database that kept its records but lost its backup key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// `key` or `backup_key`.
    pub role: String,
    /// Records it holds: counted for previews, absent from shred receipts (a shred does not
    /// scan records, so that its cost stays flat in data size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
}

/// What a rotate / disable / delete of a key would affect (`?dry_run=true`); nothing changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Impact {
    /// Always true.
    pub dry_run: bool,
    /// `rotate` | `disable` | `delete`.
    pub action: String,
    /// Key CRN.
    pub key: String,
    /// Databases the key protects.
    #[serde(default)]
    pub databases: Vec<AffectedResource>,
    /// Backups under the key.
    #[serde(default)]
    pub backups: Vec<AffectedResource>,
    /// Records in those databases.
    #[serde(default)]
    pub total_records: u64,
    /// Wrapped DEKs under the key (what a rotation rewraps).
    #[serde(default)]
    pub wrapped_deks: u64,
}

/// `DELETE /v1/keys/{key}` answer: proof of the deletion (a cryptoshred when it had data).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShredReceipt {
    /// Key CRN.
    pub key: String,
    /// Versions whose material was destroyed.
    pub destroyed_versions: Vec<u32>,
    /// Resources made unreadable.
    #[serde(default)]
    pub affected: Vec<AffectedResource>,
    /// RFC 3339.
    pub time: String,
    /// Hash of the `kms.secrets.delete` event in the activity log (the chain head right after
    /// it); that event's details are this receipt without this field.
    pub audit_chain_head: String,
}

/// `POST /v1/authorizations` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// `databases` | `backups`.
    pub source: String,
    /// A key (name, id or CRN) or `*`.
    pub target: String,
    /// `Reader`, optionally `AuthorizationDelegator`.
    pub roles: Vec<String>,
}

/// An authorization letting a source service use a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthorizationInfo {
    /// Id.
    pub id: String,
    /// Source service.
    pub source: String,
    /// Target key CRN, or `*`.
    pub target: String,
    /// Roles.
    pub roles: Vec<String>,
    /// CRN of the database that caused a delegated authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// `GET /v1/authorizations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationList {
    /// Every authorization, delegated ones included.
    pub authorizations: Vec<AuthorizationInfo>,
}

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
