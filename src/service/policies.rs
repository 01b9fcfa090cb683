//! Key policies: automatic rotation ("rotate every N days") and dual authorization of deletion
//! (see `dual_auth`).
//!
//! A policy is a catalog entry of its own (`policy/<key id>`), so that setting one never
//! rewrites the key. Provider-managed keys have no entry: they follow the instance default,
//! `[keys] rotate_every`. The due time of a rotation is computed from stored timestamps only
//! (the key's last rotation, else its creation), so a daemon that was down when a rotation fell
//! due runs it at its next start, and no clock is kept anywhere else.

use crate::service::Action;
use uuid::Uuid;

use super::catalog::Catalog;
use super::token_lifecycle::{rfc3339_of, unix_now};
use super::{now_rfc3339, Principal, ServiceError, Vault};
use crate::store::TokenRole;
use crate::store::{KeyOrigin, KeyRecord, KeyState};

pub use crate::api::{KeyPolicyInfo, SetPolicyRequest};
pub use crate::config::{parse_rotate_every, MAX_ROTATE_DAYS, MIN_ROTATE_DAYS};
const DAY: u64 = 86_400;

/// Instance-wide policy settings from the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyDefaults {
    /// `[keys] rotate_every` in days: the rotation period of provider-managed keys.
    pub provider_rotate_every_days: Option<u32>,
    /// `[lifecycle] dual_auth_delete`: every customer key needs two operators to delete.
    pub dual_auth_delete: bool,
}

/// Unix seconds of an RFC 3339 time (0 if it does not parse: treated as long ago).
pub(super) fn unix_of(text: &str) -> u64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
        .unwrap_or(0)
}

impl Vault {
    /// The rotation period of `key` in days and where it comes from.
    fn rotation_period(&self, catalog: &Catalog, key: &KeyRecord) -> Option<(u32, &'static str)> {
        if key.origin == KeyOrigin::Provider {
            return self
                .jobs
                .policy_defaults()
                .provider_rotate_every_days
                .map(|d| (d, "instance"));
        }
        catalog
            .policies
            .get(&key.id)
            .and_then(|p| p.rotate_every_days)
            .map(|d| (d, "key"))
    }

    /// Whether deleting `key` needs two operators, and where that comes from.
    pub(super) fn dual_auth_for(&self, catalog: &Catalog, key: &KeyRecord) -> Option<&'static str> {
        if catalog
            .policies
            .get(&key.id)
            .is_some_and(|p| p.dual_auth_delete)
        {
            Some("key")
        } else if self.jobs.policy_defaults().dual_auth_delete && key.origin != KeyOrigin::Provider
        {
            Some("instance")
        } else {
            None
        }
    }

    /// Unix seconds at which the policy rotates `key` next, if it has one.
    fn next_rotation(&self, catalog: &Catalog, key: &KeyRecord) -> Option<u64> {
        let (days, _) = self.rotation_period(catalog, key)?;
        let base = key
            .last_rotated_at
            .unwrap_or_else(|| unix_of(&key.created_at));
        Some(base.saturating_add(u64::from(days) * DAY))
    }

    /// The policy view of `key` (for `key show`).
    pub(super) fn policy_info(&self, catalog: &Catalog, key: &KeyRecord) -> KeyPolicyInfo {
        let period = self.rotation_period(catalog, key);
        let dual = self.dual_auth_for(catalog, key);
        let approval = catalog
            .policies
            .get(&key.id)
            .and_then(|p| p.delete_approval.clone())
            .filter(|a| a.expires_at > unix_now());
        KeyPolicyInfo {
            rotate_every_days: period.map(|(d, _)| d),
            rotation_source: period.map(|(_, s)| s.to_string()),
            last_rotation: key.last_rotated_at.map(rfc3339_of),
            next_rotation: (key.state == KeyState::Active)
                .then(|| self.next_rotation(catalog, key))
                .flatten()
                .map(rfc3339_of),
            dual_auth_delete: dual.is_some(),
            dual_auth_source: dual.map(str::to_string),
            deletion_authorized_by: approval.as_ref().map(|a| a.token_id.clone()),
            deletion_authorized_until: approval.map(|a| rfc3339_of(a.expires_at)),
        }
    }

    /// Sets a customer key's policies (operator only); logged as `kms.secrets.setkeypolicies`.
    pub async fn set_key_policy(
        &self,
        who: &Principal,
        reference: &str,
        request: SetPolicyRequest,
    ) -> Result<KeyPolicyInfo, ServiceError> {
        let result: Result<KeyPolicyInfo, ServiceError> = async {
            who.require_operator()?;
            let rotate = request
                .rotate_every
                .as_deref()
                .map(parse_rotate_every)
                .transpose()
                .map_err(ServiceError::BadRequest)?;
            if rotate.is_none() && request.dual_auth.is_none() {
                return Err(ServiceError::BadRequest(
                    "name a policy to set: rotate_every and/or dual_auth".into(),
                ));
            }
            let _admin = self.admin().await?;
            let key = self.lifecycle_key(reference)?;
            if key.state == KeyState::Destroyed {
                return Err(ServiceError::KeyDestroyed(format!(
                    "key {:?} was destroyed",
                    key.name
                )));
            }
            let mut policy = self
                .read_catalog()
                .policies
                .get(&key.id)
                .cloned()
                .unwrap_or_default();
            if let Some(rotate) = rotate {
                policy.rotate_every_days = rotate;
            }
            if let Some(dual) = request.dual_auth {
                policy.dual_auth_delete = dual;
                if !dual {
                    policy.delete_approval = None;
                }
            }
            policy.updated_at = now_rfc3339();
            self.put_policy(key.id, policy).await?;
            Ok(self.policy_info(&self.read_catalog(), &key))
        }
        .await;
        let target = self.target_crn(reference, &Err(&ServiceError::Integrity));
        let details = result
            .as_ref()
            .ok()
            .and_then(|p| serde_json::to_value(p).ok());
        self.audited(who, Action::SecretsSetKeyPolicies, &target, result, details)
    }

    /// A key's policies (operator only).
    pub fn key_policy(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<KeyPolicyInfo, ServiceError> {
        who.require_operator()?;
        let catalog = self.read_catalog();
        let key = super::keys::find_key(&catalog, reference)?;
        Ok(self.policy_info(&catalog, key))
    }

    /// Starts and runs every rotation a policy made due by now, one key after the other; each
    /// is the same resumable job as a manual rotation, logged with the policy as initiator.
    /// Returns how many ran and the Unix time of the next one due (for the scheduler's sleep).
    pub async fn run_due_rotations(&self) -> (usize, Option<u64>) {
        let now = unix_now();
        let (due, next) = {
            let catalog = self.read_catalog();
            let mut due = Vec::new();
            let mut next: Option<u64> = None;
            for key in catalog.keys.values() {
                if key.state != KeyState::Active || catalog.jobs.contains_key(&key.id) {
                    continue;
                }
                let Some(at) = self.next_rotation(&catalog, key) else {
                    continue;
                };
                if at <= now {
                    due.push(key.id);
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            (due, next)
        };
        let mut ran = 0;
        for key_id in due {
            match self.rotate_by_policy(key_id, now).await {
                Ok(true) => ran += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(key = %key_id, error = %err, "scheduled rotation failed; retrying later");
                }
            }
        }
        (ran, next)
    }

    /// Rotates one key if its policy still makes it due once the admin lock is held (another
    /// node may have rotated it meanwhile). `Ok(false)`: nothing to do.
    async fn rotate_by_policy(&self, key_id: Uuid, now: u64) -> Result<bool, ServiceError> {
        let (job, initiator) = {
            let _admin = self.admin().await?;
            let (key, days) = {
                let catalog = self.read_catalog();
                let Some(key) = catalog.keys.get(&key_id).cloned() else {
                    return Ok(false);
                };
                let due = key.state == KeyState::Active
                    && !catalog.jobs.contains_key(&key_id)
                    && self
                        .next_rotation(&catalog, &key)
                        .is_some_and(|at| at <= now);
                match self.rotation_period(&catalog, &key) {
                    Some((days, _)) if due => (key, days),
                    _ => return Ok(false),
                }
            };
            if !self.claim_rotation(key_id)? {
                return Ok(false);
            }
            let initiator = Principal {
                token_id: format!("policy:rotate-every-{days}d"),
                role: TokenRole::Operator,
                databases: Vec::new(),
                peer_uid: None,
            };
            match self.start_claimed_rotation(key, false).await {
                Ok(job) => (job, initiator),
                Err(err) => {
                    self.release_rotation(key_id);
                    let target = self.crn("key", &key_id);
                    return self.audited(
                        &initiator,
                        Action::SecretsRotate,
                        &target,
                        Err(err),
                        None,
                    );
                }
            }
        };
        tracing::info!(key = %key_id, job = %job.id, "rotation due by policy");
        self.run_rotation(&initiator, job).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_periods() {
        assert_eq!(parse_rotate_every("90d"), Ok(Some(90)));
        assert_eq!(parse_rotate_every("1d"), Ok(Some(1)));
        assert_eq!(parse_rotate_every("2560d"), Ok(Some(2560)));
        assert_eq!(parse_rotate_every("off"), Ok(None));
        for bad in ["0d", "2561d", "90", "12h", "3m", "-1d", "d"] {
            assert!(parse_rotate_every(bad).is_err(), "{bad}");
        }
    }
}
