//! Scheduled deletion of a root key: `key delete --force --after 7d` puts the key in state
//! `pending_destruction` at once (everything under it is unreadable, like a disable), and the
//! policy scheduler shreds it at its date with the same cryptoshred and receipt as an immediate
//! deletion. Until then `key cancel-deletion` restores access.
//!
//! The date is stored in the key record (`destroy_at`), so a daemon that was down at that date
//! shreds the key at its next start.

use crate::service::Action;
use std::time::Duration;

use super::catalog::CatalogChange;
use super::token_lifecycle::{rfc3339_of, unix_now};
use super::{now_rfc3339, Principal, ServiceError, Vault};
use crate::api::{Impact, KeyInfo, ShredReceipt};
use crate::store::{KeyRecord, KeyState, TokenRole};

/// Shortest waiting period of a scheduled deletion.
pub const MIN_DELETION_WAIT: Duration = Duration::from_secs(86_400);
/// Longest waiting period of a scheduled deletion.
pub const MAX_DELETION_WAIT: Duration = Duration::from_secs(30 * 86_400);

/// Parses a waiting period ("7d"; 1d to 30d).
pub fn parse_deletion_wait(text: &str) -> Result<Duration, ServiceError> {
    crate::config::parse_duration(text)
        .filter(|d| *d >= MIN_DELETION_WAIT && *d <= MAX_DELETION_WAIT)
        .ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "invalid waiting period {text:?}: use a duration from 1d to 30d, such as \"7d\""
            ))
        })
}

impl Vault {
    /// Previews a scheduled deletion (`?dry_run=true&after=7d`).
    pub fn preview_scheduled_deletion(
        &self,
        who: &Principal,
        reference: &str,
        after: &str,
    ) -> Result<Impact, ServiceError> {
        parse_deletion_wait(after)?;
        self.preview(who, &format!("delete after {after}"), reference)
    }

    /// Schedules the destruction of a key after `after`; logged as
    /// `kms.secrets.scheduledeletion`.
    pub async fn schedule_key_deletion(
        &self,
        who: &Principal,
        reference: &str,
        force: bool,
        after: &str,
    ) -> Result<KeyInfo, ServiceError> {
        let result: Result<KeyInfo, ServiceError> = async {
            who.require_operator()?;
            let wait = parse_deletion_wait(after)?;
            let _gate = self.records.gate().write().await;
            let _admin = self.admin().await?;
            let mut key = self.lifecycle_key(reference)?;
            match key.state {
                KeyState::Destroyed => {
                    return Err(ServiceError::KeyDestroyed(format!(
                        "key {:?} was already destroyed",
                        key.name
                    )))
                }
                KeyState::PendingDestruction => {
                    return Err(ServiceError::Conflict(format!(
                        "key {:?} is already scheduled for destruction at {}",
                        key.name,
                        key.destroy_at.map(rfc3339_of).unwrap_or_default()
                    )))
                }
                KeyState::Active | KeyState::Suspended => {}
            }
            let impact = self.impact("delete", key.id, false)?;
            if (!impact.databases.is_empty() || !impact.backups.is_empty()) && !force {
                return Err(ServiceError::KeyInUse(format!(
                    "key {:?} protects {} resource(s); use force to schedule its cryptoshred",
                    key.name,
                    impact.databases.len() + impact.backups.len()
                )));
            }
            key.state = KeyState::PendingDestruction;
            key.destroy_at = Some(unix_now().saturating_add(wait.as_secs()));
            self.commit(vec![CatalogChange::PutKey(key.clone())])
                .await?;
            Ok(self.key_info(&self.read_catalog(), &key, false))
        }
        .await;
        let target = self.target_crn(reference, &result.as_ref().map(|k| k.crn.clone()));
        let details = result
            .as_ref()
            .ok()
            .map(|k| serde_json::json!({ "destroy_at": k.destroy_at, "waiting_period": after }));
        self.audited(
            who,
            Action::SecretsScheduleDeletion,
            &target,
            result,
            details,
        )
    }

    /// `POST /v1/keys/{key}/cancel_deletion`: cancels a scheduled deletion, or else a pending
    /// dual-authorization approval.
    pub async fn cancel_key_deletion(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<KeyInfo, ServiceError> {
        let key = who
            .require_operator()
            .and_then(|()| self.lifecycle_key(reference));
        let key = match key {
            Ok(key) => key,
            Err(err) => {
                let target = self.target_crn(reference, &Err(&err));
                return self.audited(who, Action::SecretsCancelDeletion, &target, Err(err), None);
            }
        };
        if key.state != KeyState::PendingDestruction
            && self.cancel_delete_approval(who, key.id).await?
        {
            let catalog = self.read_catalog();
            return Ok(self.key_info(&catalog, &key, false));
        }
        self.cancel_scheduled_deletion(who, key).await
    }

    /// Cancels a scheduled deletion: the key is active again; logged as
    /// `kms.secrets.canceldeletion`.
    async fn cancel_scheduled_deletion(
        &self,
        who: &Principal,
        key: KeyRecord,
    ) -> Result<KeyInfo, ServiceError> {
        let result: Result<KeyInfo, ServiceError> = async {
            let mut key = key.clone();
            let _gate = self.records.gate().write().await;
            let _admin = self.admin().await?;
            // Re-read under the locks: the shred may have run meanwhile.
            let current = self.lifecycle_key(&key.id.to_string())?;
            if current.state != KeyState::PendingDestruction {
                return Err(ServiceError::Conflict(format!(
                    "key {:?} is not scheduled for destruction (state {})",
                    key.name,
                    current.state.as_str()
                )));
            }
            key = current;
            key.state = KeyState::Active;
            key.destroy_at = None;
            self.commit(vec![CatalogChange::PutKey(key.clone())])
                .await?;
            Ok(self.key_info(&self.read_catalog(), &key, false))
        }
        .await;
        let target = self.crn("key", &key.id);
        self.audited(who, Action::SecretsCancelDeletion, &target, result, None)
    }

    /// Shreds every key whose scheduled date has passed; returns how many, and the Unix time
    /// of the next one scheduled.
    pub async fn run_due_destructions(&self) -> (usize, Option<u64>) {
        let now = unix_now();
        let (due, next) = {
            let catalog = self.read_catalog();
            let mut due = Vec::new();
            let mut next: Option<u64> = None;
            for key in catalog.keys.values() {
                match (key.state, key.destroy_at) {
                    (KeyState::PendingDestruction, Some(at)) if at <= now => due.push(key.id),
                    (KeyState::PendingDestruction, Some(at)) => {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                    _ => {}
                }
            }
            (due, next)
        };
        let mut done = 0;
        for key_id in due {
            match self.shred_scheduled(key_id, now).await {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(key = %key_id, error = %err, "scheduled key destruction failed; retrying later");
                }
            }
        }
        (done, next)
    }

    /// The shred of a scheduled deletion, once its date has passed (checked again under the
    /// locks: it may have been cancelled or shredded by another node meanwhile).
    async fn shred_scheduled(&self, key_id: uuid::Uuid, now: u64) -> Result<bool, ServiceError> {
        let initiator = Principal {
            token_id: "policy:scheduled-deletion".into(),
            role: TokenRole::Operator,
            databases: Vec::new(),
            peer_uid: None,
        };
        let _gate = self.records.gate().write().await;
        let _admin = self.admin().await?;
        let Some(mut key) = self.read_catalog().keys.get(&key_id).cloned() else {
            return Ok(false);
        };
        if key.state != KeyState::PendingDestruction || key.destroy_at.is_none_or(|at| at > now) {
            return Ok(false);
        }
        let impact = self.impact("delete", key.id, false)?;
        let destroyed_versions = self.keys.call(|ks| ks.versions(key.id))?;
        let target = self.crn("key", &key.id);
        if let Err(err) = self.shred(&mut key).await {
            return self.audited(&initiator, Action::SecretsDelete, &target, Err(err), None);
        }
        let mut affected = impact.databases;
        affected.extend(impact.backups);
        let mut receipt = ShredReceipt {
            key: target.clone(),
            destroyed_versions,
            affected,
            time: now_rfc3339(),
            audit_chain_head: String::new(),
        };
        self.activity
            .log()
            .append_with(
                &initiator,
                Action::SecretsDelete.as_str(),
                &target,
                "success",
                None,
                |head| {
                    receipt.audit_chain_head = head.to_string();
                    serde_json::to_value(&receipt).ok()
                },
            )
            .map_err(|e| {
                ServiceError::Store(crate::store::StoreError::Backend(format!(
                    "activity log: {e}"
                )))
            })?;
        Ok(true)
    }
}
