//! Key lifecycle answers: rotation jobs, dry-run impact previews and shred receipts.

use serde::{Deserialize, Serialize};

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

impl RotationStatus {
    /// A job that exists but has not rewrapped anything yet.
    pub fn pending(job: String, target_version: u32) -> Self {
        Self {
            job,
            state: "pending".into(),
            target_version,
            total: 0,
            done: 0,
            retired_versions: Vec::new(),
            backups_rewrapped: 0,
            error: None,
        }
    }
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
