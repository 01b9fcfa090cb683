//! Key and database lifecycle (DESIGN.md rules 3–5): disable / enable, key deletion and
//! cryptoshred, soft deletion of databases and their restore, and impact previews (the purge is in
//! `purge_databases`).
//!
//! Every state change that locks data takes the record gate exclusively, so it waits for
//! in-flight record operations and every request that starts after it returns sees the new
//! state (also on connections opened before).

use super::catalog::CatalogChange;
use crate::service::Action;
use uuid::Uuid;

use super::databases::find_database;
use super::keys::find_key;
use super::{now_rfc3339, Principal, ServiceError, Vault};
pub use crate::api::{AffectedResource, Impact, ShredReceipt};
use crate::api::{DatabaseInfo, KeyInfo};
use crate::store::{DatabaseRecord, DatabaseState, KeyOrigin, KeyState};

impl Vault {
    /// What acting on `key_id` affects; `count_records` scans each database (previews only).
    pub(super) fn impact(
        &self,
        action: &str,
        key_id: Uuid,
        count_records: bool,
    ) -> Result<Impact, ServiceError> {
        let (databases, deks) = {
            let catalog = self.read_catalog();
            let dbs: Vec<DatabaseRecord> = catalog
                .databases_under(&key_id)
                .into_iter()
                .cloned()
                .collect();
            let deks = catalog
                .deks
                .values()
                .flat_map(|g| g.values())
                .filter(|d| d.key_id == key_id)
                .count() as u64;
            (dbs, deks)
        };
        let mut affected = Vec::with_capacity(databases.len());
        let mut total = 0;
        for db in databases {
            let records = if count_records {
                Some(self.store.record_count(db.id.as_bytes())?)
            } else {
                None
            };
            total += records.unwrap_or(0);
            affected.push(AffectedResource {
                kind: "database".into(),
                crn: self.crn("database", &db.id),
                name: db.name.clone(),
                state: db.state.as_str().into(),
                state_reason: None,
                role: if db.key_id == key_id {
                    "key"
                } else {
                    "backup_key"
                }
                .into(),
                records,
            });
        }
        let backups = self
            .read_catalog()
            .backups_under(&key_id)
            .into_iter()
            .map(|b| AffectedResource {
                kind: "backup".into(),
                crn: self.crn("backup", &b.id),
                name: b.id.to_string(),
                state: b.state.clone(),
                state_reason: None,
                role: "backup_key".into(),
                records: Some(b.record_count),
            })
            .collect();
        Ok(Impact {
            dry_run: true,
            action: action.into(),
            key: self.crn("key", &key_id),
            databases: affected,
            backups,
            total_records: total,
            wrapped_deks: deks,
        })
    }

    /// Resolves a customer key for a lifecycle action.
    pub(super) fn lifecycle_key(
        &self,
        reference: &str,
    ) -> Result<crate::store::KeyRecord, ServiceError> {
        let catalog = self.read_catalog();
        let key = find_key(&catalog, reference)?;
        if key.origin == KeyOrigin::Provider {
            return Err(ServiceError::Forbidden(
                "provider-managed keys follow their database's lifecycle".into(),
            ));
        }
        Ok(key.clone())
    }

    /// Previews an action on a key.
    pub fn preview(
        &self,
        who: &Principal,
        action: &str,
        reference: &str,
    ) -> Result<Impact, ServiceError> {
        who.require_operator()?;
        let key = self.lifecycle_key(reference)?;
        self.impact(action, key.id, true)
    }

    /// Suspends (`enable = false`) or re-enables a key; takes effect for every later request.
    pub async fn set_key_enabled(
        &self,
        who: &Principal,
        reference: &str,
        enable: bool,
    ) -> Result<KeyInfo, ServiceError> {
        let action = if enable {
            Action::SecretsEnable
        } else {
            Action::SecretsDisable
        };
        let result: Result<KeyInfo, ServiceError> = async {
            who.require_operator()?;
            let _gate = self.records.gate().write().await;
            let _admin = self.admin().await?;
            let mut key = self.lifecycle_key(reference)?;
            if key.state == KeyState::Destroyed {
                return Err(ServiceError::KeyDestroyed(format!(
                    "key {:?} was destroyed",
                    key.name
                )));
            }
            if key.state == KeyState::PendingDestruction {
                return Err(ServiceError::KeyPendingDestruction(format!(
                    "key {:?} is scheduled for destruction; `key cancel-deletion` restores it",
                    key.name
                )));
            }
            let wanted = if enable {
                KeyState::Active
            } else {
                KeyState::Suspended
            };
            if key.state != wanted {
                key.state = wanted;
                self.commit(vec![CatalogChange::PutKey(key.clone())])
                    .await?;
                if !enable {
                    self.keys.deks().purge_root_key(key.id);
                }
            }
            Ok(self.key_info(&self.read_catalog(), &key, false))
        }
        .await;
        let target = self.target_crn(reference, &result.as_ref().map(|k| k.crn.clone()));
        self.audited(who, action, &target, result, None)
    }

    /// Deletes a key. With registrations this needs `force` and is a cryptoshred.
    pub async fn delete_key(
        &self,
        who: &Principal,
        reference: &str,
        force: bool,
    ) -> Result<ShredReceipt, ServiceError> {
        let result: Result<ShredReceipt, ServiceError> = async {
            who.require_operator()?;
            let _gate = self.records.gate().write().await;
            let _admin = self.admin().await?;
            let mut key = self.lifecycle_key(reference)?;
            if key.state == KeyState::Destroyed {
                return Err(ServiceError::KeyDestroyed(format!(
                    "key {:?} was already destroyed",
                    key.name
                )));
            }
            let impact = self.impact("delete", key.id, false)?;
            let in_use = !impact.databases.is_empty() || !impact.backups.is_empty();
            if in_use && !force {
                let names: Vec<String> = impact
                    .databases
                    .iter()
                    .chain(impact.backups.iter())
                    .map(|d| format!("{} ({}, {})", d.name, d.state, d.role))
                    .collect();
                return Err(ServiceError::KeyInUse(format!(
                    "key {:?} protects {} resource(s): {}; use force to cryptoshred",
                    key.name,
                    names.len(),
                    names.join(", ")
                )));
            }
            let destroyed_versions = self.keys.call(|ks| ks.versions(key.id))?;
            self.shred(&mut key).await?;
            let receipt = ShredReceipt {
                key: self.crn("key", &key.id),
                destroyed_versions,
                affected: self.after_shred(impact),
                time: now_rfc3339(),
                audit_chain_head: String::new(),
            };
            // Logged while the gate is still held, so no request refused because of this shred
            // can be logged before the shred itself.
            self.log_shred(who, receipt)
        }
        .await;
        if result.is_ok() {
            return result; // logged inside, while the gate was held
        }
        let target = self.target_crn(reference, &result.as_ref().map(|r| r.key.clone()));
        self.audited(who, Action::SecretsDelete, &target, result, None)
    }

    /// Destroys a key: catalog first (durably marks the key destroyed and its databases
    /// disabled), then the material, then the cached DEKs. A crash after the catalog commit
    /// leaves material that the next start destroys (`reconcile_keystore`), so a shred is
    /// never undone. Caller holds the gate and the admin lock.
    pub(super) async fn shred(
        &self,
        key: &mut crate::store::KeyRecord,
    ) -> Result<Vec<Uuid>, ServiceError> {
        key.state = KeyState::Destroyed;
        let disabled: Vec<DatabaseRecord> = self
            .read_catalog()
            .databases
            .values()
            .filter(|db| db.key_id == key.id)
            .cloned()
            .map(|mut db| {
                if db.state == DatabaseState::Active {
                    db.state = DatabaseState::Disabled;
                }
                db.state_reason = Some("key_destroyed".into());
                db
            })
            .collect();
        let mut ops = vec![
            CatalogChange::PutKey(key.clone()),
            CatalogChange::DeleteJob(key.id),
        ];
        ops.extend(disabled.iter().cloned().map(CatalogChange::PutDatabase));
        let dead_backups: Vec<crate::store::BackupRecord> = self
            .read_catalog()
            .backups_under(&key.id)
            .into_iter()
            .cloned()
            .map(|mut b| {
                b.state = "key_destroyed".into();
                b
            })
            .collect();
        ops.extend(dead_backups.into_iter().map(CatalogChange::PutBackup));
        self.commit(ops).await?;
        let keystore = std::sync::Arc::clone(self.keys.backend());
        let key_id = key.id;
        tokio::task::spawn_blocking(move || keystore.destroy(key_id, None))
            .await
            .map_err(|e| ServiceError::TaskFailed(e.to_string()))??;
        self.keys.deks().purge_root_key(key.id);
        for db in &disabled {
            self.keys.deks().purge_database(db.id);
            self.records.seal_budgets().remove(db.id);
        }
        Ok(disabled.into_iter().map(|db| db.id).collect())
    }

    /// Soft-deletes a database: inaccessible at once, restorable until the period ends.
    pub async fn delete_database(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<DatabaseInfo, ServiceError> {
        let result: Result<DatabaseInfo, ServiceError> = async {
            who.require_operator()?;
            let _gate = self.records.gate().write().await;
            let _admin = self.admin().await?;
            let mut db = find_database(&self.read_catalog(), reference)?.clone();
            match db.state {
                DatabaseState::Active => {}
                DatabaseState::Deleted => {
                    return Err(ServiceError::DatabaseDeleted(format!(
                        "database {:?} is already deleted",
                        db.name
                    )))
                }
                // A shredded database is deleted and purged like any other; its metadata stays
                // readable until the purge.
                DatabaseState::Disabled => {}
            }
            let now = unix_now();
            db.state = DatabaseState::Deleted;
            db.deleted_at = Some(now_rfc3339());
            // Rounded up to the next whole second: the period is never shorter than configured.
            // A shredded database restored after an earlier deletion keeps that purge date.
            let period = self.records.soft_delete_period();
            let period_secs = period.as_secs() + u64::from(period.subsec_nanos() > 0);
            db.purge_at = Some(db.purge_at.unwrap_or(now + period_secs + 1));
            self.commit(vec![CatalogChange::PutDatabase(db.clone())])
                .await?;
            self.keys.deks().purge_database(db.id);
            Ok(self.database_info(&self.read_catalog(), &db))
        }
        .await;
        let target = self.target_crn(reference, &result.as_ref().map(|d| d.crn.clone()));
        self.audited(who, Action::DatabasesDelete, &target, result, None)
    }

    /// Restores a soft-deleted database within its soft-deletion period.
    pub async fn restore_database(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<DatabaseInfo, ServiceError> {
        let result: Result<DatabaseInfo, ServiceError> = async {
            who.require_operator()?;
            let _admin = self.admin().await?;
            let mut db = find_database(&self.read_catalog(), reference)?.clone();
            if db.state != DatabaseState::Deleted {
                return Err(ServiceError::Conflict(format!(
                    "database {:?} is not deleted",
                    db.name
                )));
            }
            if db.purge_at.is_some_and(|at| at <= unix_now()) {
                return Err(ServiceError::Conflict(format!(
                    "the soft-deletion period of database {:?} has expired; it is being purged",
                    db.name
                )));
            }
            // A database whose key was shredded comes back disabled and keeps its purge date: its
            // data is gone, so the restore only delays nothing.
            let key_destroyed = self
                .read_catalog()
                .keys
                .get(&db.key_id)
                .is_none_or(|k| k.state == KeyState::Destroyed);
            if key_destroyed {
                db.state = DatabaseState::Disabled;
                db.state_reason = Some("key_destroyed".into());
            } else {
                db.state = DatabaseState::Active;
                db.purge_at = None;
            }
            db.deleted_at = None;
            self.commit(vec![CatalogChange::PutDatabase(db.clone())])
                .await?;
            Ok(self.database_info(&self.read_catalog(), &db))
        }
        .await;
        let target = self.target_crn(reference, &result.as_ref().map(|d| d.crn.clone()));
        self.audited(who, Action::DatabasesRestore, &target, result, None)
    }

    /// The CRN to log: the resolved one, else the key or database the reference names, else
    /// the reference itself.
    pub(super) fn target_crn(
        &self,
        reference: &str,
        resolved: &Result<String, &ServiceError>,
    ) -> String {
        if let Ok(crn) = resolved {
            return crn.clone();
        }
        let catalog = self.read_catalog();
        if let Some(key) = catalog.find_key(reference) {
            return self.crn("key", &key.id);
        }
        if let Some(db) = catalog.find_database(reference) {
            return self.crn("database", &db.id);
        }
        reference.to_string()
    }
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
