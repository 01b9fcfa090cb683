//! Registered backups: listing (adopting a shared target's objects), showing, deleting,
//! rewrapping headers on rotation, and cleaning the local directory.

use crate::service::Action;
use uuid::Uuid;

use super::BackupInfo;
use crate::backup::format::KeySlot;
use crate::crypto::bindings::backup_dek_context;
use crate::crypto::EnvelopeKind;
use crate::keystore::RootKeyRef;
use crate::service::catalog::CatalogChange;
use crate::service::{Principal, ServiceError, Vault};
use crate::store::BackupRecord;

impl Vault {
    /// Every backup, newest last. A shared target (S3) is listed first, and objects this
    /// node has no registration for are adopted when they verify (`backup_adoption`).
    pub async fn list_backups(&self, who: &Principal) -> Result<Vec<BackupInfo>, ServiceError> {
        who.require_operator()?;
        self.adopt_backup_objects().await?;
        let catalog = self.read_catalog();
        let mut list: Vec<&BackupRecord> = catalog.backups.values().collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(list.into_iter().map(|b| self.backup_info(b)).collect())
    }

    /// One backup.
    pub async fn show_backup(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<BackupInfo, ServiceError> {
        who.require_operator()?;
        Ok(self.backup_info(&self.find_backup_adopting(reference).await?))
    }

    /// Deletes a backup's registration and file.
    pub async fn delete_backup(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<(), ServiceError> {
        let target = self
            .find_backup(reference)
            .map(|b| self.crn("backup", &b.id))
            .unwrap_or_else(|_| reference.to_string());
        let result: Result<(), ServiceError> = async {
            who.require_operator()?;
            let record = self.find_backup_adopting(reference).await?;
            // Adoption takes `admin` too: it cannot re-register the object being deleted.
            let _admin = self.admin().await?;
            // The object first: if the target refuses, the backup stays registered and listed.
            tokio::task::block_in_place(|| self.backups.target().delete(&record.file))?;
            self.commit(vec![CatalogChange::DeleteBackup(record.id)])
                .await?;
            Ok(())
        }
        .await;
        self.audited(who, Action::BackupsDelete, &target, result, None)
    }

    /// Rewraps every backup header under `key_id` to `version` (rotation). Flat in backup
    /// size: only the inactive key slot is written.
    pub(in crate::service) fn rewrap_backups(
        &self,
        key_id: Uuid,
        version: u32,
    ) -> Result<Vec<BackupRecord>, ServiceError> {
        let pending: Vec<BackupRecord> = self
            .read_catalog()
            .backups_under(&key_id)
            .into_iter()
            .filter(|b| b.key_version < version && b.state == "available")
            .cloned()
            .collect();
        let mut done = Vec::with_capacity(pending.len());
        for mut record in pending {
            let (front, payload) = self.open_backup_payload(&record)?;
            drop(payload);
            let context = backup_dek_context(record.id.as_bytes(), key_id.as_bytes());
            if front.slot.key_version < version {
                let plain = self.keys.call(|ks| {
                    ks.open(
                        key_id,
                        EnvelopeKind::BackupDek,
                        &context,
                        front.slot.wrapped.clone(),
                    )
                })?;
                let wrapped = self.keys.call(|ks| {
                    ks.seal(
                        RootKeyRef { key_id, version },
                        EnvelopeKind::BackupDek,
                        &context,
                        &plain,
                    )
                })?;
                let slot = KeySlot {
                    seq: front
                        .slot
                        .seq
                        .checked_add(1)
                        .ok_or(ServiceError::BadRequest(
                            "backup key slot sequence exhausted".into(),
                        ))?,
                    key_version: version,
                    wrapped,
                };
                self.backups
                    .target()
                    .write_slot(&record.file, 1 - front.slot_index, &slot)?;
            }
            record.key_version = version;
            done.push(record);
        }
        Ok(done)
    }

    /// Deletes temp files of interrupted backups and files no registration names (local
    /// directory only: a shared target's unregistered objects are adopted instead).
    pub fn clean_backup_dir(&self) -> Result<usize, ServiceError> {
        let known: std::collections::HashSet<String> = self
            .read_catalog()
            .backups
            .values()
            .map(|b| b.file.clone())
            .collect();
        Ok(self.backups.target().clean(&known)?)
    }
}
