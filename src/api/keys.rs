//! Root keys and the key-wrapping routes (`/v1/keys`, `…/wrap`, `…/unwrap`, `…/rewrap`).

use serde::{Deserialize, Serialize};

use super::KeyPolicyInfo;

/// `POST /v1/keys` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Unique name.
    pub name: String,
    /// Base64 of exactly 32 bytes to import; absent = generate (or a secure import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Secure import: the import token whose public key wrapped `encrypted_payload`
    /// (see [`super::SecureImportFields`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_token: Option<String>,
    /// Secure import: base64 of the material, RSA-OAEP-SHA-256 under the token's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_payload: Option<String>,
    /// Secure import: base64 of the token's nonce sealed under the material (AES-256-GCM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_nonce: Option<String>,
    /// Secure import: base64 of the 12-byte IV of that seal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<String>,
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
