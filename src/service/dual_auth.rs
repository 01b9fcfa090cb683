//! Dual authorization of key deletion: with the key's policy `dual_auth` (or the instance's
//! `[lifecycle] dual_auth_delete`), the first operator's delete only records an approval valid
//! for 7 days, and all operations continue meanwhile. A delete by a different operator token
//! within those days carries out the deletion it asks for (immediate or scheduled). The same
//! token twice is refused; either operator (any operator) can cancel the approval; after 7
//! days it lapses and a delete starts over. Each step is an activity-log event naming its
//! initiator, and the second approval's event names both.

use crate::service::Action;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::catalog::CatalogChange;
use super::token_lifecycle::{rfc3339_of, unix_now};
use super::{Principal, ServiceError, Vault};
use crate::store::{DeleteApproval, KeyPolicyRecord, KeyState};

/// How long a first approval waits for the second operator.
pub const APPROVAL_LIFETIME: u64 = 7 * 86_400;

/// The answer (202) to a first approval: nothing was deleted yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletionApproval {
    /// Key CRN.
    pub key: String,
    /// Key name.
    pub name: String,
    /// Always `deletion_authorized`.
    pub state: String,
    /// The approving token's id.
    pub authorized_by: String,
    /// RFC 3339 at which the approval lapses.
    pub authorization_expires_at: String,
}

impl Vault {
    /// Checks dual authorization before a deletion. `Ok(None)`: go ahead (no dual authorization,
    /// or a different operator approved first); `Ok(Some)`: this was the first approval, now
    /// recorded, and nothing is to be deleted yet.
    pub async fn authorize_key_deletion(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<Option<DeletionApproval>, ServiceError> {
        let result: Result<Step, ServiceError> = async {
            who.require_operator()?;
            let _admin = self.admin().await?;
            let key = self.lifecycle_key(reference)?;
            let (required, mut policy) = {
                let catalog = self.read_catalog();
                (
                    self.dual_auth_for(&catalog, &key).is_some(),
                    catalog.policies.get(&key.id).cloned().unwrap_or_default(),
                )
            };
            // A destroyed key: the deletion itself reports it.
            if !required || key.state == KeyState::Destroyed {
                return Ok(Step::NotNeeded);
            }
            let now = unix_now();
            match policy.delete_approval.clone().filter(|a| a.expires_at > now) {
                Some(first) if first.token_id == who.token_id => Err(ServiceError::Conflict(format!(
                    "the deletion of key {:?} is already authorized by this token ({}); a different operator token must carry it out before {}",
                    key.name,
                    first.token_id,
                    rfc3339_of(first.expires_at)
                ))),
                Some(first) => Ok(Step::Second {
                    key: key.id,
                    first: first.token_id,
                }),
                None => {
                    let approval = DeleteApproval {
                        token_id: who.token_id.clone(),
                        expires_at: now.saturating_add(APPROVAL_LIFETIME),
                    };
                    policy.delete_approval = Some(approval.clone());
                    self.put_policy(key.id, policy).await?;
                    Ok(Step::First(DeletionApproval {
                        key: self.crn("key", &key.id),
                        name: key.name.clone(),
                        state: "deletion_authorized".into(),
                        authorized_by: approval.token_id,
                        authorization_expires_at: rfc3339_of(approval.expires_at),
                    }))
                }
            }
        }
        .await;
        match result {
            Ok(Step::NotNeeded) => Ok(None),
            Ok(Step::First(approval)) => {
                let details = serde_json::json!({
                    "authorized_by": [approval.authorized_by],
                    "expires_at": approval.authorization_expires_at,
                });
                let target = approval.key.clone();
                self.audited(
                    who,
                    Action::SecretsSetKeyForDeletion,
                    &target,
                    Ok(Some(approval)),
                    Some(details),
                )
            }
            Ok(Step::Second { key, first }) => {
                let details = serde_json::json!({ "authorized_by": [first, who.token_id] });
                let target = self.crn("key", &key);
                self.audited(
                    who,
                    Action::SecretsSetKeyForDeletion,
                    &target,
                    Ok(None),
                    Some(details),
                )
            }
            Err(err) => {
                let target = self.target_crn(reference, &Err(&err));
                self.audited(
                    who,
                    Action::SecretsSetKeyForDeletion,
                    &target,
                    Err(err),
                    None,
                )
            }
        }
    }

    /// Drops the approval a deletion used (no-op without one).
    pub async fn clear_delete_approval(&self, reference: &str) -> Result<(), ServiceError> {
        let _admin = self.admin().await?;
        let Some(key) = self.read_catalog().find_key(reference).map(|k| k.id) else {
            return Ok(());
        };
        let policy = self.read_catalog().policies.get(&key).cloned();
        match policy {
            Some(mut policy) if policy.delete_approval.is_some() => {
                policy.delete_approval = None;
                self.put_policy(key, policy).await
            }
            _ => Ok(()),
        }
    }

    /// Cancels a pending approval; `Ok(false)` if there is none. Logged as
    /// `kms.secrets.unsetkeyfordeletion`.
    pub(super) async fn cancel_delete_approval(
        &self,
        who: &Principal,
        key_id: Uuid,
    ) -> Result<bool, ServiceError> {
        let result = async {
            let _admin = self.admin().await?;
            let policy = self.read_catalog().policies.get(&key_id).cloned();
            let now = unix_now();
            match policy {
                Some(mut policy)
                    if policy
                        .delete_approval
                        .as_ref()
                        .is_some_and(|a| a.expires_at > now) =>
                {
                    let first = policy.delete_approval.take().map(|a| a.token_id);
                    self.put_policy(key_id, policy).await?;
                    Ok(first)
                }
                _ => Ok(None),
            }
        }
        .await;
        match result {
            Ok(None) => Ok(false),
            Ok(Some(first)) => {
                let details = serde_json::json!({ "authorized_by": [first] });
                let target = self.crn("key", &key_id);
                self.audited(
                    who,
                    Action::SecretsUnsetKeyForDeletion,
                    &target,
                    Ok(true),
                    Some(details),
                )
            }
            Err(err) => {
                let target = self.crn("key", &key_id);
                self.audited(
                    who,
                    Action::SecretsUnsetKeyForDeletion,
                    &target,
                    Err(err),
                    None,
                )
            }
        }
    }

    /// Stores a key's policy record (removed when it asks for nothing); caller holds the admin
    /// lock.
    pub(super) async fn put_policy(
        &self,
        key: Uuid,
        policy: KeyPolicyRecord,
    ) -> Result<(), ServiceError> {
        let empty = policy.rotate_every_days.is_none()
            && !policy.dual_auth_delete
            && policy.delete_approval.is_none();
        let change = if empty {
            CatalogChange::DeletePolicy(key)
        } else {
            CatalogChange::PutPolicy(key, policy)
        };
        self.commit(vec![change]).await
    }
}

enum Step {
    NotNeeded,
    First(DeletionApproval),
    Second { key: Uuid, first: String },
}
