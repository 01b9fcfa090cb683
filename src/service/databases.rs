//! Databases: create (under a customer key or a provider-managed one), list, show.

use super::catalog::CatalogChange;
use crate::service::Action;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use uuid::Uuid;

use super::authz::{DATABASES, DELEGATOR, READER};
use super::keys::{find_key, require_usable};
use super::{now_rfc3339, unix_to_rfc3339, validate_name, Principal, ServiceError, Vault};
use crate::api::{CreateDatabaseRequest, DatabaseInfo};
use crate::crypto::bindings::dek_context;
use crate::crypto::{Cipher, EnvelopeKind, SecretKey};
use crate::keystore::{NewKey, RootKeyRef};
use crate::store::{DatabaseRecord, DatabaseState, DekRecord, KeyOrigin, KeyRecord, KeyState};

impl Vault {
    /// Creates a database. Without `key`, a provider-managed root key is created for it.
    /// A customer key needs a `databases` → key `Reader` authorization; a backup key also needs
    /// `AuthorizationDelegator`, and then gets its delegated `backups` authorization.
    pub async fn create_database(
        &self,
        who: &Principal,
        request: CreateDatabaseRequest,
    ) -> Result<DatabaseInfo, ServiceError> {
        let name = request.name.clone();
        let authorized = self.create_missing_authorizations(who, &request).await;
        let mut result: Result<DatabaseInfo, ServiceError> = async {
            authorized?;
            who.require_operator()?;
            validate_name("database", &request.name)?;
            let _admin = self.admin().await?;
            let (customer_key, backup_key) = {
                let catalog = self.read_catalog();
                if catalog.database_names.contains_key(&request.name) {
                    return Err(ServiceError::Conflict(format!(
                        "a database named {:?} already exists",
                        request.name
                    )));
                }
                let customer = |reference: &Option<String>| -> Result<Option<KeyRecord>, ServiceError> {
                    let Some(reference) = reference else {
                        return Ok(None);
                    };
                    let key = find_key(&catalog, reference)?;
                    if key.origin == KeyOrigin::Provider {
                        return Err(ServiceError::BadRequest(
                            "a provider-managed key belongs to its own database".into(),
                        ));
                    }
                    require_usable(key)?;
                    Ok(Some(key.clone()))
                };
                let customer_key = customer(&request.key)?;
                let backup_key = customer(&request.backup_key)?;
                // The database's own key named as its backup key is no separate backup key: it
                // needs what the key needs, at creation as at backup time (`check_backup_key`).
                let same_key =
                    matches!((&customer_key, &backup_key), (Some(k), Some(b)) if k.id == b.id);
                if let Some(key) = &customer_key {
                    if !catalog.is_authorized(DATABASES, &key.id, &[READER]) {
                        return Err(ServiceError::NotAuthorizedForKey(format!(
                            "no {DATABASES:?} authorization with role {READER} exists for key {:?}",
                            key.name
                        )));
                    }
                }
                if let Some(key) = backup_key.as_ref().filter(|_| !same_key) {
                    if !catalog.is_authorized(DATABASES, &key.id, &[READER, DELEGATOR]) {
                        return Err(ServiceError::NotAuthorizedForKey(format!(
                            "backup key {:?} needs a {DATABASES:?} authorization with roles {READER} and {DELEGATOR}",
                            key.name
                        )));
                    }
                }
                (customer_key, backup_key)
            };
            let database_id = Uuid::new_v4();
            let mut ops = Vec::new();
            let root = match customer_key {
                Some(key) => key,
                None => {
                    let provider = KeyRecord {
                        id: Uuid::new_v4(),
                        name: format!("provider-{database_id}"),
                        description: Some(format!("provider-managed key of database {}", request.name)),
                        origin: KeyOrigin::Provider,
                        state: KeyState::Active,
                        version: 1,
                        created_at: now_rfc3339(),
                        owner_database: Some(database_id),
                        last_rotated_at: None,
                        destroy_at: None,
                    };
                    self.install_key(provider.clone(), NewKey::Generate).await?;
                    provider
                }
            };
            let record = DatabaseRecord {
                id: database_id,
                name: request.name,
                key_id: root.id,
                backup_key_id: backup_key.map(|k| k.id),
                state: DatabaseState::Active,
                state_reason: None,
                created_at: now_rfc3339(),
                deleted_at: None,
                purge_at: None,
                generation: 1,
            };
            let (dek_record, cipher) = self.new_dek(&record, &root, 1)?;
            ops.push(CatalogChange::PutDatabase(record.clone()));
            ops.push(CatalogChange::PutDek(dek_record));
            if let Err(err) = self.commit(ops).await {
                if root.origin == KeyOrigin::Provider {
                    self.drop_provider_key(&root).await;
                }
                return Err(err);
            }
            self.keys.deks().insert(record.id, 1, root.id, cipher);
            Ok(self.database_info(&self.read_catalog(), &record))
        }
        .await;
        if let Ok(info) = &result {
            let separate = info
                .backup_key
                .as_deref()
                .filter(|k| *k != info.key)
                .and_then(|k| Uuid::parse_str(k).ok());
            if let Some(backup_key) = separate {
                if let Err(err) = self.ensure_delegation(backup_key, &info.crn).await {
                    result = Err(err);
                }
            }
        }
        let target = result.as_ref().map(|d| d.crn.clone()).unwrap_or(name);
        self.audited(who, Action::DatabasesCreate, &target, result, None)
    }

    /// With `create_authorization`, grants the `databases` authorizations the request's keys
    /// lack, as the seeds do when they create the service authorization if it is missing:
    /// `Reader` on the key, `Reader` + `AuthorizationDelegator` on a separate backup key. Keys
    /// that are missing or provider-managed are left to the creation's own checks.
    async fn create_missing_authorizations(
        &self,
        who: &Principal,
        request: &CreateDatabaseRequest,
    ) -> Result<(), ServiceError> {
        if !request.create_authorization {
            return Ok(());
        }
        who.require_operator()?;
        let needs: Vec<(Uuid, Vec<&str>)> = {
            let catalog = self.read_catalog();
            let customer = |reference: &Option<String>| {
                reference
                    .as_deref()
                    .and_then(|r| catalog.find_key(r))
                    .filter(|k| k.origin != KeyOrigin::Provider)
                    .map(|k| k.id)
            };
            let key = customer(&request.key);
            let backup = customer(&request.backup_key).filter(|b| Some(*b) != key);
            key.map(|k| (k, vec![READER]))
                .into_iter()
                .chain(backup.map(|b| (b, vec![READER, DELEGATOR])))
                .filter(|(k, roles)| !catalog.is_authorized(DATABASES, k, roles))
                .collect()
        };
        for (key, roles) in needs {
            let grant = super::authz::GrantRequest {
                source: DATABASES.into(),
                target: key.to_string(),
                roles: roles.into_iter().map(String::from).collect(),
            };
            match self.grant(who, grant).await {
                Ok(_) | Err(ServiceError::DuplicatePolicy) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Generates a DEK for `generation`, wrapped by the root key's newest version.
    pub(super) fn new_dek(
        &self,
        database: &DatabaseRecord,
        root: &KeyRecord,
        generation: u32,
    ) -> Result<(DekRecord, Arc<Cipher>), ServiceError> {
        let dek = SecretKey::generate().map_err(|_| ServiceError::Random)?;
        let wrapped = self.keys.call(|ks| {
            ks.seal(
                RootKeyRef {
                    key_id: root.id,
                    version: root.version,
                },
                EnvelopeKind::WrappedDek,
                &dek_context(database.id.as_bytes(), generation, root.id.as_bytes()),
                dek.expose_secret(),
            )
        })?;
        let record = DekRecord {
            database_id: database.id,
            generation,
            key_id: root.id,
            key_version: root.version,
            wrapped: B64.encode(wrapped),
            seals_reserved: 0,
        };
        Ok((record, Arc::new(Cipher::new(&dek))))
    }

    /// Undoes a provider key whose database never became durable.
    async fn drop_provider_key(&self, key: &KeyRecord) {
        let _ = self.keys.call(|ks| ks.destroy(key.id, None));
        let _ = self.commit(vec![CatalogChange::DeleteKey(key.id)]).await;
    }

    /// Every database, by name.
    pub fn list_databases(&self, who: &Principal) -> Result<Vec<DatabaseInfo>, ServiceError> {
        self.list_databases_in(who, None)
    }

    /// Every database in `state` (`active`, `deleted`, `disabled`), or in any state, by name.
    pub fn list_databases_in(
        &self,
        who: &Principal,
        state: Option<&str>,
    ) -> Result<Vec<DatabaseInfo>, ServiceError> {
        who.require_operator()?;
        let states = [
            DatabaseState::Active,
            DatabaseState::Deleted,
            DatabaseState::Disabled,
        ];
        let wanted = match state {
            None => None,
            Some(name) => Some(states.into_iter().find(|s| s.as_str() == name).ok_or_else(
                || {
                    ServiceError::BadRequest(format!(
                        "unknown database state {name:?}: use active, deleted or disabled"
                    ))
                },
            )?),
        };
        let catalog = self.read_catalog();
        let mut dbs: Vec<&DatabaseRecord> = catalog
            .databases
            .values()
            .filter(|db| wanted.is_none_or(|s| db.state == s))
            .collect();
        dbs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(dbs
            .into_iter()
            .map(|db| self.database_info(&catalog, db))
            .collect())
    }

    /// One database, in any state.
    pub fn show_database(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<DatabaseInfo, ServiceError> {
        who.require_operator()?;
        let catalog = self.read_catalog();
        let db = find_database(&catalog, reference)?;
        Ok(self.database_info(&catalog, db))
    }

    pub(super) fn database_info(
        &self,
        catalog: &super::Catalog,
        db: &DatabaseRecord,
    ) -> DatabaseInfo {
        let origin = catalog
            .keys
            .get(&db.key_id)
            .map(|k| k.origin.as_str())
            .unwrap_or("unknown");
        DatabaseInfo {
            id: db.id.to_string(),
            crn: self.crn("database", &db.id),
            name: db.name.clone(),
            state: db.state.as_str().into(),
            state_reason: db.state_reason.clone(),
            key: db.key_id.to_string(),
            key_crn: self.crn("key", &db.key_id),
            key_origin: origin.into(),
            backup_key: db.backup_key_id.map(|id| id.to_string()),
            backup_key_name: catalog
                .keys
                .get(&db.backup_key_id.unwrap_or(db.key_id))
                .map(|k| match k.origin {
                    KeyOrigin::Provider => "provider-managed".to_string(),
                    _ => k.name.clone(),
                }),
            created_at: db.created_at.clone(),
            deleted_at: db.deleted_at.clone(),
            purge_at: db.purge_at.map(unix_to_rfc3339),
        }
    }
}

/// Looks a database up by name, id or CRN, or fails with `not_found`.
pub(super) fn find_database<'a>(
    catalog: &'a super::Catalog,
    reference: &str,
) -> Result<&'a DatabaseRecord, ServiceError> {
    catalog
        .find_database(reference)
        .ok_or_else(|| ServiceError::NotFound(format!("no database named {reference:?}")))
}
