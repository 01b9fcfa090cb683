//! Wire types of the socket API (`shared/API.md`), shared by the server and the [`crate::client`],
//! so the two cannot drift apart. Binary values travel as standard base64 strings.

use serde::{Deserialize, Serialize};

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
    /// `active` | `suspended` | `destroyed`.
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
    /// Separate key for backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_key: Option<String>,
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
}
