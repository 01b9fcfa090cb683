//! Bodies and answers of key policies (`/v1/keys/{key}/policy`) and of dual authorization.

use serde::{Deserialize, Serialize};

/// `PUT /v1/keys/{key}/policy` body; absent fields are left as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPolicyRequest {
    /// "90d" (1d–2560d) or "off"; absent: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_every: Option<String>,
    /// Whether deleting the key needs two different operator tokens; absent: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_auth: Option<bool>,
}

/// A key's policies as shown by `GET /v1/keys/{key}` and the policy routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPolicyInfo {
    /// Rotation period in days, if the key rotates automatically.
    #[serde(default)]
    pub rotate_every_days: Option<u32>,
    /// Where the period comes from: `key` (its policy) or `instance` (`[keys] rotate_every`).
    #[serde(default)]
    pub rotation_source: Option<String>,
    /// RFC 3339 of the newest rotation, if it was ever rotated.
    #[serde(default)]
    pub last_rotation: Option<String>,
    /// RFC 3339 at which the policy rotates it next (past: it runs at the next scheduler pass).
    #[serde(default)]
    pub next_rotation: Option<String>,
    /// Whether deleting it needs two different operator tokens.
    #[serde(default)]
    pub dual_auth_delete: bool,
    /// Where that comes from: `key` or `instance` (`[lifecycle] dual_auth_delete`).
    #[serde(default)]
    pub dual_auth_source: Option<String>,
    /// A pending first approval of its deletion: the token id.
    #[serde(default)]
    pub deletion_authorized_by: Option<String>,
    /// RFC 3339 at which that approval lapses.
    #[serde(default)]
    pub deletion_authorized_until: Option<String>,
}

/// `DELETE /v1/keys/{key}` answer (202) to a first approval under dual authorization: nothing
/// was deleted yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletionApproval {
    /// Key CRN.
    pub key: String,
    /// Key name.
    pub name: String,
    /// Always `deletion_authorized`.
    pub state: String,
    /// The approving token's id.
    pub authorized_by: String,
    /// RFC 3339 at which the approval lapses.
    pub authorization_expires_at: String,
}
