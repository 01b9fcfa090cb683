//! The backups of a purged database (DESIGN.md rule 3): the purge destroys them with the
//! database, unless `[backup] keep_after_purge` keeps them for a stated time; a kept backup
//! carries its own expiry, stays registered with its key until then, and is destroyed by the
//! same sweep that purges databases once it passes.
//!
//! Destroying a backup means its wrapped DEK first, then its file or object: in a directory
//! both key slots are overwritten in place (an unlinked file's blocks would otherwise still
//! hold the wrapped DEK), then the file is removed; an object store deletes the object as one
//! unit. The registration goes last, so a crash in between leaves a registration whose object
//! is already gone, which the next sweep finishes.

use crate::service::Action;
use std::sync::Arc;

use uuid::Uuid;

use super::catalog::CatalogChange;
use super::lifecycle::unix_now;
use super::{Principal, ServiceError, Vault};
use crate::backup::format::KeySlot;
use crate::backup::target::{BackupTarget, TargetError};
use crate::store::{BackupRecord, DatabaseRecord, KeyOrigin};

/// What a database's purge does with its backups and delegations: catalog changes, and the
/// objects to destroy before they commit.
pub(super) struct PurgePlan {
    /// Backups destroyed with the database.
    pub doomed: Vec<BackupRecord>,
    /// Backups kept, with their expiry set.
    pub kept: Vec<BackupRecord>,
    /// Delegated authorizations the database caused.
    pub delegations: Vec<String>,
}

impl PurgePlan {
    /// The catalog changes of the plan (the database's own are the caller's).
    pub fn changes(&self) -> Vec<CatalogChange> {
        let mut changes: Vec<CatalogChange> = self
            .doomed
            .iter()
            .map(|b| CatalogChange::DeleteBackup(b.id))
            .collect();
        changes.extend(self.kept.iter().cloned().map(CatalogChange::PutBackup));
        changes.extend(
            self.delegations
                .iter()
                .cloned()
                .map(CatalogChange::DeleteAuthorization),
        );
        changes
    }

    /// Whether a kept backup still needs `key_id` (a provider key then outlives its database
    /// until the backup expires).
    pub fn keeps_key(&self, key_id: &Uuid) -> bool {
        self.kept.iter().any(|b| b.key_id == *key_id)
    }
}

impl Vault {
    /// Plans the purge of `db`'s backups and delegations. Caller holds the admin lock.
    pub(super) fn plan_purge(&self, db: &DatabaseRecord, now: u64) -> PurgePlan {
        let catalog = self.read_catalog();
        let own: Vec<BackupRecord> = catalog
            .backups
            .values()
            .filter(|b| b.database_id == db.id && b.expires_at.is_none())
            .cloned()
            .collect();
        let keep = self.backups.keep_after_purge();
        let (doomed, kept) = if keep.is_zero() {
            (own, Vec::new())
        } else {
            let until = now + keep.as_secs() + u64::from(keep.subsec_nanos() > 0);
            let kept = own
                .into_iter()
                .map(|mut b| {
                    b.expires_at = Some(until);
                    b
                })
                .collect();
            (Vec::new(), kept)
        };
        let crn = self.crn("database", &db.id);
        let delegations = catalog
            .authorizations
            .values()
            .filter(|a| a.created_by.as_deref() == Some(crn.as_str()))
            .map(|a| a.id.clone())
            .collect();
        PurgePlan {
            doomed,
            kept,
            delegations,
        }
    }

    /// Destroys the backups' wrapped DEKs, then their files or objects.
    pub(super) async fn destroy_backup_objects(
        &self,
        backups: &[BackupRecord],
    ) -> Result<(), ServiceError> {
        if backups.is_empty() {
            return Ok(());
        }
        let target = Arc::clone(self.backups.target());
        let files: Vec<String> = backups.iter().map(|b| b.file.clone()).collect();
        tokio::task::spawn_blocking(move || {
            files
                .iter()
                .try_for_each(|file| destroy_object(target.as_ref(), file))
        })
        .await
        .map_err(|e| ServiceError::TaskFailed(e.to_string()))??;
        Ok(())
    }

    /// Destroys every kept backup whose expiry has passed, and a provider key left only for
    /// them. Returns how many backups it destroyed.
    pub(super) async fn purge_expired_backups(&self) -> Result<usize, ServiceError> {
        let due = |now: u64| -> Vec<BackupRecord> {
            self.read_catalog()
                .backups
                .values()
                .filter(|b| b.expires_at.is_some_and(|at| at <= now))
                .cloned()
                .collect()
        };
        if due(unix_now()).is_empty() {
            return Ok(0);
        }
        let _admin = self.admin().await?;
        // Again under the lock: on a shared store another node may have destroyed them.
        let doomed = due(unix_now());
        self.destroy_backup_objects(&doomed).await?;
        let orphan_keys: Vec<Uuid> = {
            let catalog = self.read_catalog();
            catalog
                .keys
                .values()
                .filter(|k| k.origin == KeyOrigin::Provider)
                .filter(|k| {
                    k.owner_database
                        .is_some_and(|db| !catalog.databases.contains_key(&db))
                })
                .filter(|k| {
                    catalog
                        .backups_under(&k.id)
                        .iter()
                        .all(|b| doomed.iter().any(|d| d.id == b.id))
                })
                .map(|k| k.id)
                .collect()
        };
        let mut changes: Vec<CatalogChange> = doomed
            .iter()
            .map(|b| CatalogChange::DeleteBackup(b.id))
            .collect();
        changes.extend(orphan_keys.iter().map(|k| CatalogChange::DeleteKey(*k)));
        self.commit(changes).await?;
        for key in &orphan_keys {
            self.keys.call(|ks| ks.destroy(*key, None))?;
            self.keys.deks().purge_root_key(*key);
        }
        drop(_admin);
        for b in &doomed {
            let details = serde_json::json!({
                "database": self.crn("database", &b.database_id),
                "reason": "expired after its database's purge",
            });
            self.audited(
                &Principal::system(),
                Action::BackupsPurge,
                &self.crn("backup", &b.id),
                Ok(()),
                Some(details),
            )?;
        }
        Ok(doomed.len())
    }
}

/// Overwrites both key slots of a backup file (a directory target), then removes it. A file
/// already gone counts as destroyed (a sweep interrupted after the removal).
fn destroy_object(target: &dyn BackupTarget, file: &str) -> Result<(), TargetError> {
    if !target.is_shared() {
        match target.open(file) {
            Err(TargetError::NotFound(_)) => return Ok(()),
            Err(err) => return Err(err),
            Ok(opened) => drop(opened),
        }
        let blank = KeySlot {
            seq: 0,
            key_version: 0,
            wrapped: Vec::new(),
        };
        for index in 0..2 {
            target.write_slot(file, index, &blank)?;
        }
    }
    match target.delete(file) {
        Ok(()) | Err(TargetError::NotFound(_)) => Ok(()),
        Err(err) => Err(err),
    }
}
