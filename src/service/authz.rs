//! Service authorizations (DESIGN.md rules 1 and 7): a database may use a customer key only
//! while a `databases` → key `Reader` authorization exists; a backup key additionally needs
//! `AuthorizationDelegator`, and envault then keeps a delegated `backups` → key `Reader`
//! authorization in place for as long as the database names that backup key.

use super::catalog::CatalogChange;
use crate::service::Action;
use uuid::Uuid;

pub use crate::api::{AuthorizationInfo, GrantRequest};

use super::keys::find_key;
use super::{now_rfc3339, Principal, ServiceError, Vault};
use crate::store::{AuthorizationRecord, DatabaseState, KeyOrigin};

/// The role every use of a key needs.
pub const READER: &str = "Reader";
/// The role that lets a database delegate backups under a key.
pub const DELEGATOR: &str = "AuthorizationDelegator";
/// Source service of databases.
pub const DATABASES: &str = "databases";
/// Source service of backups.
pub const BACKUPS: &str = "backups";

fn new_id() -> Result<String, ServiceError> {
    let mut bytes = [0u8; 8];
    crate::crypto::os_random(&mut bytes).map_err(|_| ServiceError::Random)?;
    Ok(format!(
        "authz_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

impl Vault {
    pub(super) fn authorization_info(&self, a: &AuthorizationRecord) -> AuthorizationInfo {
        AuthorizationInfo {
            id: a.id.clone(),
            source: a.source.clone(),
            target: a
                .target
                .map(|k| self.crn("key", &k))
                .unwrap_or_else(|| "*".into()),
            roles: a.roles.clone(),
            created_by: a.created_by.clone(),
            created_at: a.created_at.clone(),
        }
    }

    /// Grants an authorization; an identical one fails with `duplicate_policy`.
    pub async fn grant(
        &self,
        who: &Principal,
        request: GrantRequest,
    ) -> Result<AuthorizationInfo, ServiceError> {
        let target_ref = request.target.clone();
        let result = self.grant_as(who, request, None).await;
        let target = result
            .as_ref()
            .map(|a| a.target.clone())
            .unwrap_or(target_ref);
        self.audited(who, Action::AuthorizationsCreate, &target, result, None)
    }

    /// Grants without logging: the callers log it as their own action (a grant, or the
    /// daemon recreating an authorization it needs), `created_by` kept from the original.
    async fn grant_as(
        &self,
        who: &Principal,
        request: GrantRequest,
        created_by: Option<String>,
    ) -> Result<AuthorizationInfo, ServiceError> {
        who.require_operator()?;
        if request.source != DATABASES && request.source != BACKUPS {
            return Err(ServiceError::BadRequest(
                "source must be \"databases\" or \"backups\"".into(),
            ));
        }
        let mut roles = request.roles.clone();
        roles.sort();
        roles.dedup();
        if !roles.iter().any(|r| r == READER) || roles.iter().any(|r| r != READER && r != DELEGATOR)
        {
            return Err(ServiceError::BadRequest(format!(
                "roles must include {READER:?} and may add {DELEGATOR:?}"
            )));
        }
        let _admin = self.admin().await?;
        let target = if request.target == "*" {
            None
        } else {
            let catalog = self.read_catalog();
            let key = find_key(&catalog, &request.target)?;
            if key.origin == KeyOrigin::Provider {
                return Err(ServiceError::BadRequest(
                    "provider-managed keys need no authorization".into(),
                ));
            }
            Some(key.id)
        };
        // A delegated authorization belongs to its database: the same policy delegated by two
        // databases is two authorizations, each removed with its own database.
        let duplicate = self.read_catalog().authorizations.values().any(|a| {
            a.source == request.source
                && a.target == target
                && a.roles == roles
                && a.created_by == created_by
        });
        if duplicate {
            return Err(ServiceError::DuplicatePolicy);
        }
        let record = AuthorizationRecord {
            id: new_id()?,
            source: request.source,
            target,
            roles,
            created_by,
            created_at: now_rfc3339(),
        };
        let info = self.authorization_info(&record);
        self.commit(vec![CatalogChange::PutAuthorization(record)])
            .await?;
        Ok(info)
    }

    /// Every authorization.
    pub fn list_authorizations(
        &self,
        who: &Principal,
    ) -> Result<Vec<AuthorizationInfo>, ServiceError> {
        who.require_operator()?;
        let catalog = self.read_catalog();
        let mut list: Vec<AuthorizationInfo> = catalog
            .authorizations
            .values()
            .map(|a| self.authorization_info(a))
            .collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    /// Revokes an authorization. Revoking the `databases` authorization of a key in use locks
    /// its databases at once (cached DEKs dropped) until it is granted again. Revoking the last
    /// delegator of a key removes the delegated `backups` authorizations on it with it. A
    /// delegated authorization removed alone is recreated while its database still names the
    /// backup key and a delegator exists.
    pub async fn revoke(&self, who: &Principal, id: &str) -> Result<(), ServiceError> {
        let result: Result<(AuthorizationRecord, Vec<AuthorizationRecord>), ServiceError> = async {
            who.require_operator()?;
            let _gate = self.records.gate().write().await;
            let _admin = self.admin().await?;
            let record = self
                .read_catalog()
                .authorizations
                .get(id)
                .cloned()
                .ok_or_else(|| ServiceError::NotFound(format!("no authorization {id:?}")))?;
            let orphans = self.orphaned_delegations(id);
            let mut changes = vec![CatalogChange::DeleteAuthorization(id.to_string())];
            changes.extend(
                orphans
                    .iter()
                    .map(|a| CatalogChange::DeleteAuthorization(a.id.clone())),
            );
            self.commit(changes).await?;
            // Drop cached DEKs of every key that lost its authorization: the next use must pass
            // the check again, and fails until a new grant.
            let lost: Vec<Uuid> = {
                let catalog = self.read_catalog();
                catalog
                    .keys
                    .values()
                    .filter(|k| k.origin != KeyOrigin::Provider)
                    .filter(|k| !catalog.is_authorized(DATABASES, &k.id, &[READER]))
                    .map(|k| k.id)
                    .collect()
            };
            for key in lost {
                self.keys.deks().purge_root_key(key);
            }
            Ok((record, orphans))
        }
        .await;
        let target = match &result {
            Ok(_) => self.crn_named("authorization", id),
            Err(_) => id.to_string(),
        };
        let (record, orphans) =
            self.audited(who, Action::AuthorizationsDelete, &target, result, None)?;
        for orphan in orphans {
            let details = serde_json::json!({ "with_delegator": target });
            self.audited(
                &Principal::system(),
                Action::AuthorizationsDelete,
                &self.crn_named("authorization", &orphan.id),
                Ok(()),
                Some(details),
            )?;
        }
        if record.created_by.is_some() {
            self.restore_delegations(&record).await?;
        }
        Ok(())
    }

    /// The delegated authorizations that lose their last delegator (a `databases`
    /// authorization with `AuthorizationDelegator` on their key, or on every key) when the
    /// authorization `removed` goes.
    fn orphaned_delegations(&self, removed: &str) -> Vec<AuthorizationRecord> {
        let catalog = self.read_catalog();
        let delegator = |key: Uuid| {
            catalog.authorizations.values().any(|a| {
                a.id != removed
                    && a.source == DATABASES
                    && a.target.is_none_or(|t| t == key)
                    && [READER, DELEGATOR]
                        .iter()
                        .all(|r| a.roles.iter().any(|have| have == r))
            })
        };
        catalog
            .authorizations
            .values()
            .filter(|a| a.id != removed && a.created_by.is_some() && a.source == BACKUPS)
            .filter(|a| a.target.is_none_or(|key| !delegator(key)))
            .cloned()
            .collect()
    }

    /// Recreates a removed delegated authorization while its database still names the backup
    /// key and a delegator for that key exists.
    async fn restore_delegations(&self, removed: &AuthorizationRecord) -> Result<(), ServiceError> {
        let Some(key) = removed.target else {
            return Ok(());
        };
        let still_needed = {
            let catalog = self.read_catalog();
            let database = removed
                .created_by
                .as_deref()
                .and_then(|crn| catalog.find_database(crn));
            database.is_some_and(|db| {
                db.backup_key_id == Some(key)
                    && db.key_id != key
                    && db.state != DatabaseState::Disabled
            }) && catalog.is_authorized(DATABASES, &key, &[READER, DELEGATOR])
        };
        if !still_needed {
            return Ok(());
        }
        let request = GrantRequest {
            source: BACKUPS.into(),
            target: key.to_string(),
            roles: vec![READER.into()],
        };
        let system = Principal::system();
        let result = self
            .grant_as(&system, request, removed.created_by.clone())
            .await;
        let target = self.crn("key", &key);
        self.audited(
            &system,
            Action::AuthorizationsRecreate,
            &target,
            result,
            None,
        )?;
        Ok(())
    }

    /// Ensures the database's own delegated `backups` → backup key authorization exists, while
    /// a delegator for that key does (never without one).
    pub(super) async fn ensure_delegation(
        &self,
        backup_key: Uuid,
        database_crn: &str,
    ) -> Result<(), ServiceError> {
        {
            let catalog = self.read_catalog();
            let own = catalog.authorizations.values().any(|a| {
                a.source == BACKUPS
                    && a.target == Some(backup_key)
                    && a.created_by.as_deref() == Some(database_crn)
            });
            if own || !catalog.is_authorized(DATABASES, &backup_key, &[READER, DELEGATOR]) {
                return Ok(());
            }
        }
        let request = GrantRequest {
            source: BACKUPS.into(),
            target: backup_key.to_string(),
            roles: vec![READER.into()],
        };
        match self
            .grant_as(
                &Principal::system(),
                request,
                Some(database_crn.to_string()),
            )
            .await
        {
            Ok(_) | Err(ServiceError::DuplicatePolicy) => Ok(()),
            Err(err) => Err(err),
        }
    }
}
