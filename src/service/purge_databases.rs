//! Purge of soft-deleted databases whose period has ended: records, DEKs, registration, and a
//! provider-managed key with them; and how often the purge task looks.

use crate::service::Action;
use uuid::Uuid;

use super::catalog::CatalogChange;
use super::lifecycle::unix_now;
use super::{Principal, ServiceError, Vault};
use crate::store::{DatabaseRecord, DatabaseState, KeyOrigin};

impl Vault {
    /// Purges every soft-deleted database whose period has ended: records, DEKs, registration,
    /// and a provider-managed key with them. Idempotent, so a crash mid-purge resumes here.
    pub async fn purge_expired(&self) -> Result<usize, ServiceError> {
        let now = unix_now();
        let due: Vec<DatabaseRecord> = self
            .read_catalog()
            .databases
            .values()
            .filter(|db| purge_due(db, now))
            .cloned()
            .collect();
        let mut purged = 0;
        for db in &due {
            let (result, details) = match self.purge_database(db.id, now).await {
                // Another node purged it, or it was restored meanwhile.
                Ok(None) => continue,
                Ok(Some(details)) => (Ok(()), Some(details)),
                Err(err) => (Err(err), None),
            };
            let target = self.crn("database", &db.id);
            self.audited(
                &Principal::system(),
                Action::DatabasesPurge,
                &target,
                result,
                details,
            )?;
            purged += 1;
        }
        Ok(purged + self.purge_expired_backups().await?)
    }

    /// Purges one database if it is still deleted and due once the admin lock is held (on a
    /// shared store every node runs this sweep; the first one purges, the others find nothing).
    /// Its backups go with it (or are kept, `plan_purge`), and so do its delegations. Returns
    /// the event details, or `None` when there was nothing to purge.
    async fn purge_database(
        &self,
        id: Uuid,
        now: u64,
    ) -> Result<Option<serde_json::Value>, ServiceError> {
        let _admin = self.admin().await?;
        let Some(db) = self
            .read_catalog()
            .databases
            .get(&id)
            .filter(|db| purge_due(db, now))
            .cloned()
        else {
            return Ok(None);
        };
        let db = &db;
        let store = std::sync::Arc::clone(&self.store);
        let id = db.id;
        tokio::task::spawn_blocking(move || store.records_purge(id.as_bytes()))
            .await
            .map_err(|e| ServiceError::TaskFailed(e.to_string()))??;
        let generations: Vec<u32> = self
            .read_catalog()
            .deks
            .get(&db.id)
            .map(|g| g.keys().copied().collect())
            .unwrap_or_default();
        let mut ops: Vec<CatalogChange> = generations
            .iter()
            .map(|g| CatalogChange::DeleteDek {
                database: db.id,
                generation: *g,
            })
            .collect();
        ops.push(CatalogChange::DeleteDatabase(db.id));
        let plan = self.plan_purge(db, now);
        // The backups' DEKs and objects go before the registrations that name them.
        self.destroy_backup_objects(&plan.doomed).await?;
        ops.extend(plan.changes());
        let provider = self
            .read_catalog()
            .keys
            .get(&db.key_id)
            .filter(|k| k.origin == KeyOrigin::Provider && !plan.keeps_key(&k.id))
            .cloned();
        if let Some(key) = &provider {
            ops.push(CatalogChange::DeleteKey(key.id));
        }
        self.commit(ops).await?;
        if let Some(key) = &provider {
            self.keys.call(|ks| ks.destroy(key.id, None))?;
            self.keys.deks().purge_root_key(key.id);
        }
        self.keys.deks().purge_database(db.id);
        self.records.seal_budgets().remove(db.id);
        let crns = |list: &[crate::store::BackupRecord]| -> Vec<String> {
            list.iter().map(|b| self.crn("backup", &b.id)).collect()
        };
        Ok(Some(serde_json::json!({
            "backups_destroyed": crns(&plan.doomed),
            "backups_kept": crns(&plan.kept),
            "delegations_removed": plan.delegations.len(),
        })))
    }

    /// How often the purge task should look for expired soft deletions.
    pub fn purge_interval(&self) -> std::time::Duration {
        (self.records.soft_delete_period() / 4).clamp(
            std::time::Duration::from_millis(250),
            std::time::Duration::from_secs(60),
        )
    }
}

/// Whether a database is due for purging: soft-deleted, or shredded and restored after a
/// deletion (which keeps its purge date), with that date passed.
fn purge_due(db: &DatabaseRecord, now: u64) -> bool {
    matches!(db.state, DatabaseState::Deleted | DatabaseState::Disabled)
        && db.purge_at.is_some_and(|at| at <= now)
}
