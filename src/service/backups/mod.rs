//! Backups (DESIGN.md rule 7): a consistent snapshot of a database re-sealed under a fresh
//! backup DEK, wrapped by the database's backup key (or its own key), in one object of the
//! backup target (`backup::target`: a directory or an S3 bucket) that becomes visible only
//! once complete. Restore verifies the whole object before creating anything.
//!
//! Parts: `create` (making backups, scheduled ones included), `restore`, `registry` (listing,
//! showing, deleting, rewrapping on rotation, cleaning); here, the API view of a backup and
//! the checks and readers they share.

mod create;
mod registry;
mod restore;

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::authz::{BACKUPS, DATABASES, DELEGATOR, READER};
use super::keys::require_usable;
use super::{ServiceError, Vault};
use crate::backup::format::{self, BackupFormatError, BackupHeader, KeySlot};
use crate::backup::target::{BackupTarget, TargetError};
use crate::store::{BackupRecord, KeyOrigin, KeyRecord};

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

impl From<TargetError> for ServiceError {
    fn from(err: TargetError) -> Self {
        match err {
            TargetError::NotFound(m) => ServiceError::NotFound(m),
            TargetError::Config(m) => ServiceError::BadRequest(m),
            TargetError::Failed(m) => ServiceError::BackupTarget(m),
        }
    }
}

impl From<BackupFormatError> for ServiceError {
    fn from(err: BackupFormatError) -> Self {
        match err {
            BackupFormatError::Io(e) => ServiceError::BackupTarget(e.to_string()),
            // Every backup read comes from a stored object, never from the request: a file
            // that does not parse or authenticate is damaged data, answered like a damaged
            // record (the detail goes to the daemon's log).
            other => {
                tracing::error!(error = %other, "a stored backup failed its integrity check");
                ServiceError::Integrity
            }
        }
    }
}

impl Vault {
    pub(super) fn backup_info(&self, b: &BackupRecord) -> BackupInfo {
        BackupInfo {
            id: b.id.to_string(),
            crn: self.crn("backup", &b.id),
            database: b.database_name.clone(),
            database_id: b.database_id.to_string(),
            key: b.key_id.to_string(),
            key_crn: self.crn("key", &b.key_id),
            key_version: b.key_version,
            size: b.size,
            record_count: b.record_count,
            created_at: b.created_at.clone(),
            state: b.state.clone(),
            path: self.backups.target().location(&b.file),
            expires_at: b.expires_at.map(super::unix_to_rfc3339),
        }
    }

    /// Checks rule 7 for using `backup_key` on behalf of a database that names it, and keeps
    /// the delegated `backups` authorization in place.
    async fn check_backup_key(
        &self,
        backup_key: &KeyRecord,
        database_key: Uuid,
        database_crn: &str,
    ) -> Result<(), ServiceError> {
        require_usable(backup_key)?;
        if backup_key.origin == KeyOrigin::Provider {
            return Ok(());
        }
        let roles: &[&str] = if backup_key.id == database_key {
            &[READER]
        } else {
            &[READER, DELEGATOR]
        };
        if !self
            .read_catalog()
            .is_authorized(DATABASES, &backup_key.id, roles)
        {
            return Err(ServiceError::NotAuthorizedForKey(format!(
                "no {DATABASES:?} authorization with roles {} for backup key {:?}",
                roles.join("+"),
                backup_key.name
            )));
        }
        if backup_key.id != database_key {
            self.ensure_delegation(backup_key.id, database_crn).await?;
            if !self
                .read_catalog()
                .is_authorized(BACKUPS, &backup_key.id, &[READER])
            {
                return Err(ServiceError::NotAuthorizedForKey(format!(
                    "no delegated {BACKUPS:?} authorization for backup key {:?}",
                    backup_key.name
                )));
            }
        }
        Ok(())
    }

    /// [`Vault::find_backup`], adopting the target's unregistered objects first when the
    /// backup is not registered (a shared target may hold it).
    async fn find_backup_adopting(&self, reference: &str) -> Result<BackupRecord, ServiceError> {
        match self.find_backup(reference) {
            Err(ServiceError::NotFound(_)) if self.backups.target().is_shared() => {
                self.adopt_backup_objects().await?;
                self.find_backup(reference)
            }
            other => other,
        }
    }

    fn find_backup(&self, reference: &str) -> Result<BackupRecord, ServiceError> {
        let missing = || ServiceError::NotFound(format!("no backup {reference:?}"));
        let catalog = self.read_catalog();
        let id = match catalog.crn_id(reference, "backup") {
            Some(id) => id,
            None => Uuid::parse_str(reference).ok(),
        }
        .ok_or_else(missing)?;
        catalog.backups.get(&id).cloned().ok_or_else(missing)
    }

    /// Opens a registered backup's object and reads its front, checking it against the
    /// registration (and against the object's metadata, where the target keeps some); the
    /// returned reader is positioned at the payload.
    fn open_backup_payload(
        &self,
        record: &BackupRecord,
    ) -> Result<(format::BackupFront, Box<dyn Read + Send>), ServiceError> {
        let opened = self.backups.target().open(&record.file)?;
        let mut reader = opened.reader;
        let front = format::read_front(&mut reader)?;
        let meta_matches = opened.meta.as_ref().is_none_or(|m| {
            m.backup_id == front.header.backup_id
                && m.backup_key_id == front.header.backup_key_id
                && m.database_id == front.header.database.id
        });
        if front.header.backup_id != record.id
            || front.header.backup_key_id != record.key_id
            || !meta_matches
        {
            tracing::error!(backup = %record.id, "backup file does not match its registration");
            return Err(ServiceError::Integrity);
        }
        Ok((front, reader))
    }
}

fn header_prefix(header: &BackupHeader) -> Result<[u8; 7], ServiceError> {
    let front = format::BackupFront {
        header: header.clone(),
        header_bytes: Vec::new(),
        slot: KeySlot {
            seq: 0,
            key_version: 0,
            wrapped: Vec::new(),
        },
        slot_index: 0,
        payload_offset: 0,
    };
    Ok(front.prefix()?)
}

/// The backups part's own state: the target backups are written to, and what is known
/// about its objects. The backup operations themselves run on the facade, since they read the
/// catalog, take the database locks and log through the audit part.
pub(crate) struct Backups {
    target: Arc<dyn BackupTarget>,
    /// Objects in a shared backup target that did not verify, by name and size, so that
    /// listing does not fetch them again.
    unadoptable: Mutex<HashSet<(String, u64)>>,
    /// How long backups of a purged database are kept (`[backup] keep_after_purge`).
    keep_after_purge: Duration,
}

impl Backups {
    pub(crate) fn new(target: Arc<dyn BackupTarget>, keep_after_purge: Duration) -> Self {
        Self {
            target,
            unadoptable: Mutex::default(),
            keep_after_purge,
        }
    }

    /// Where backups are written (a local directory or an S3 bucket).
    pub(crate) fn target(&self) -> &Arc<dyn BackupTarget> {
        &self.target
    }

    /// How long backups of a purged database are kept.
    pub(crate) fn keep_after_purge(&self) -> Duration {
        self.keep_after_purge
    }

    /// The objects that did not verify (held briefly, under the catalog's read lock at most).
    pub(crate) fn rejected(&self) -> MutexGuard<'_, HashSet<(String, u64)>> {
        // A set of names changed by single inserts: a poisoned lock is still consistent.
        self.unadoptable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes an object that did not verify, so that it is not fetched again.
    pub(crate) fn reject(&self, name: String, size: u64) {
        self.rejected().insert((name, size));
    }
}
