//! Shred receipts (DESIGN.md rule 4): what a cryptoshred touched, as it is after the shred,
//! and the `kms.secrets.delete` event whose own hash the receipt names.

use super::{Action, Principal, ServiceError, Vault};
use crate::api::{AffectedResource, Impact, ShredReceipt};

impl Vault {
    /// The resources a shred touched, as they are after it: databases under the key
    /// `disabled` (or still `deleted`), backups under it `disabled`, each with reason
    /// `key_destroyed`; databases that only backed up under it keep their state, with reason
    /// `backup_key_destroyed`.
    pub(super) fn after_shred(&self, impact: Impact) -> Vec<AffectedResource> {
        let catalog = self.read_catalog();
        let databases = impact.databases.into_iter().map(|mut db| {
            if let Some(now) = catalog.find_database(&db.crn) {
                db.state = now.state.as_str().into();
            }
            db.state_reason = Some(if db.role == "key" {
                "key_destroyed".into()
            } else {
                "backup_key_destroyed".into()
            });
            db
        });
        let backups = impact.backups.into_iter().map(|mut b| {
            b.state = "disabled".into();
            b.state_reason = Some("key_destroyed".into());
            b
        });
        databases.chain(backups).collect()
    }

    /// Appends the `kms.secrets.delete` event holding the receipt without its hash, then
    /// names that event's hash in the receipt. Caller holds the gate.
    pub(super) fn log_shred(
        &self,
        who: &Principal,
        mut receipt: ShredReceipt,
    ) -> Result<ShredReceipt, ServiceError> {
        let target = receipt.key.clone();
        let mut details = serde_json::to_value(&receipt).ok();
        if let Some(serde_json::Value::Object(map)) = details.as_mut() {
            map.remove("audit_chain_head");
        }
        receipt.audit_chain_head = self
            .activity
            .append(
                who,
                Action::SecretsDelete,
                &target,
                None,
                "success",
                None,
                details,
            )
            .map_err(|e| ServiceError::AuditLog(format!("activity log: {e}")))?;
        Ok(receipt)
    }
}
