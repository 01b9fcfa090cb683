//! Databases (`/v1/databases`): creation, listing and how one is shown.

use serde::{Deserialize, Serialize};

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
