//! Backups (`/v1/backups`, `/v1/databases/{db}/backups`).

use serde::{Deserialize, Serialize};

/// A backup as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupInfo {
    /// Id.
    pub id: String,
    /// CRN.
    pub crn: String,
    /// Database name at backup time.
    pub database: String,
    /// Database id.
    pub database_id: String,
    /// Backup key id.
    pub key: String,
    /// Backup key CRN.
    pub key_crn: String,
    /// Backup key version wrapping the DEK.
    pub key_version: u32,
    /// File size.
    pub size: u64,
    /// Records.
    pub record_count: u64,
    /// RFC 3339.
    pub created_at: String,
    /// `available` | `key_destroyed`.
    pub state: String,
    /// File path, or `s3://BUCKET/KEY` of the object.
    pub path: String,
    /// When a backup kept after its database's purge is destroyed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `GET /v1/backups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupList {
    /// Every backup.
    pub backups: Vec<BackupInfo>,
}

/// `POST /v1/backups/{id}/restore` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBackupRequest {
    /// Name of the new database.
    pub into: String,
    /// Key (name, id or CRN) protecting the new database; absent: as the daemon decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}
