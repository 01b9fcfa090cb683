//! Listing a shared backup target (an S3 bucket) from the bucket itself: objects
//! this node has no registration for — written before its data dir was restored from an older
//! copy, or lost with it — are registered when they verify:
//! - the object is named `<backup id>.evb` and its header names that id;
//! - its metadata (the header's ids) matches the header;
//! - its backup key is one this node knows, and the wrapped backup DEK opens under it with
//!   this backup's id and key bound (an envelope that no one without the key can forge).
//!
//! The payload itself is authenticated on restore, as for every backup. Objects that do not
//! verify are never listed, and remembered (by name and size) so that they are not fetched
//! again on every listing.

use super::catalog::CatalogChange;
use super::{ServiceError, Vault};
use crate::backup::format;
use crate::backup::target::{backup_id_of, ObjectEntry, OpenedObject, TargetError};
use crate::crypto::bindings::backup_dek_context;
use crate::crypto::EnvelopeKind;
use crate::store::BackupRecord;

impl Vault {
    /// Registers the shared target's verified, unregistered objects. No-op for a local dir.
    pub(super) async fn adopt_backup_objects(&self) -> Result<(), ServiceError> {
        if !self.backups.target().is_shared() {
            return Ok(());
        }
        // Serialized with deletes, so an object being deleted is not registered again.
        let _admin = self.admin().await?;
        let objects = tokio::task::block_in_place(|| self.backups.target().list())?;
        let candidates: Vec<ObjectEntry> = {
            let catalog = self.read_catalog();
            let rejected = self.backups.rejected();
            objects
                .into_iter()
                .filter(|o| {
                    backup_id_of(&o.name).is_some_and(|id| !catalog.backups.contains_key(&id))
                        && !rejected.contains(&(o.name.clone(), o.size))
                })
                .collect()
        };
        for object in candidates {
            match tokio::task::block_in_place(|| self.verify_backup_object(&object))? {
                Verdict::Gone => {}
                Verdict::Adopt(record) => {
                    let id = record.id;
                    self.commit(vec![CatalogChange::PutBackup(record)]).await?;
                    tracing::info!(backup = %id, object = %self.backups.target().location(&object.name), "registered a backup found in the backup target");
                }
                Verdict::Reject(reason) => {
                    tracing::warn!(object = %self.backups.target().location(&object.name), reason = %reason, "not listing an object of the backup target that does not verify");
                    self.backups.reject(object.name, object.size);
                }
            }
        }
        Ok(())
    }

    /// Whether an object verifies (see the module doc). Failing to read it at all is an
    /// error of the listing, not a verdict on the object.
    fn verify_backup_object(&self, object: &ObjectEntry) -> Result<Verdict, ServiceError> {
        let opened = match self.backups.target().open(&object.name) {
            Ok(opened) => opened,
            Err(TargetError::NotFound(_)) => return Ok(Verdict::Gone),
            Err(e) => return Err(e.into()),
        };
        Ok(match self.check_backup_object(object, opened) {
            Ok(record) => Verdict::Adopt(record),
            Err(reason) => Verdict::Reject(reason),
        })
    }

    fn check_backup_object(
        &self,
        object: &ObjectEntry,
        opened: OpenedObject,
    ) -> Result<BackupRecord, String> {
        let id = backup_id_of(&object.name).ok_or("not a backup object name")?;
        let mut reader = opened.reader;
        let front = format::read_front(&mut reader).map_err(|e| e.to_string())?;
        drop(reader);
        let header = &front.header;
        if header.backup_id != id {
            return Err("the header names another backup".into());
        }
        let meta = opened
            .meta
            .ok_or("the object carries no envault metadata")?;
        if meta.backup_id != id
            || meta.database_id != header.database.id
            || meta.backup_key_id != header.backup_key_id
            || meta.created_at != header.created_at
        {
            return Err("the object's metadata does not match its header".into());
        }
        let key_known = self.read_catalog().keys.contains_key(&header.backup_key_id);
        if !key_known {
            return Err(format!(
                "its backup key {} is not known here",
                header.backup_key_id
            ));
        }
        let plain = self
            .keys
            .backend()
            .open(
                header.backup_key_id,
                EnvelopeKind::BackupDek,
                &backup_dek_context(id.as_bytes(), header.backup_key_id.as_bytes()),
                front.slot.wrapped.clone(),
            )
            .map_err(|e| format!("its backup DEK does not open: {e}"))?;
        drop(plain);
        Ok(BackupRecord {
            id,
            database_id: header.database.id,
            database_name: header.database.name.clone(),
            key_id: header.backup_key_id,
            key_version: front.slot.key_version,
            file: object.name.clone(),
            size: object.size,
            record_count: header.record_count,
            created_at: header.created_at.clone(),
            state: "available".into(),
            expires_at: None,
        })
    }
}

enum Verdict {
    /// Deleted since it was listed.
    Gone,
    Adopt(BackupRecord),
    /// Why it is not a backup of this node's keys.
    Reject(String),
}
