//! Typed catalog changes: what a commit writes to the store, what a shared store's change feed
//! reports, and the one function that applies either to the in-memory view.

use uuid::Uuid;

use super::{
    authorization_key, backup_key, database_key, dek_key, instance_key, job_key, key_key,
    policy_key, token_key, transit_key, Catalog, TransitSettings, AUTHORIZATION, BACKUP, DATABASE,
    DEK, INSTANCE, JOB, KEY, POLICY, TOKEN, TRANSIT,
};
use crate::service::ServiceError;
use crate::store::{
    codec, AuthorizationRecord, BackupRecord, CatalogOp, DatabaseRecord, DatabaseState, DekRecord,
    InstanceRecord, KeyPolicyRecord, KeyRecord, KeyState, RotationJob, StoreError, TokenRecord,
};

/// One change to one catalog entry.
#[derive(Debug, Clone)]
pub enum CatalogChange {
    /// Insert or replace a root key.
    PutKey(KeyRecord),
    /// Remove a root key's record.
    DeleteKey(Uuid),
    /// Insert or replace a database.
    PutDatabase(DatabaseRecord),
    /// Remove a database's record (its DEK generations are separate entries).
    DeleteDatabase(Uuid),
    /// Insert or replace a DEK generation.
    PutDek(DekRecord),
    /// Remove a DEK generation.
    DeleteDek {
        /// Owning database.
        database: Uuid,
        /// Generation.
        generation: u32,
    },
    /// Insert or replace a token (by id).
    PutToken(TokenRecord),
    /// Remove a token, by id.
    DeleteToken(String),
    /// Set the instance identity.
    PutInstance(InstanceRecord),
    /// Remove the instance identity.
    DeleteInstance,
    /// Insert or replace an authorization.
    PutAuthorization(AuthorizationRecord),
    /// Remove an authorization, by id.
    DeleteAuthorization(String),
    /// Insert or replace a key's unfinished rotation job.
    PutJob(RotationJob),
    /// Remove a key's rotation job, by key id.
    DeleteJob(Uuid),
    /// Insert or replace a backup registration.
    PutBackup(BackupRecord),
    /// Remove a backup registration.
    DeleteBackup(Uuid),
    /// Insert or replace a root key's transit settings.
    PutTransit(Uuid, TransitSettings),
    /// Remove a root key's transit settings.
    DeleteTransit(Uuid),
    /// Insert or replace a root key's policies.
    PutPolicy(Uuid, KeyPolicyRecord),
    /// Remove a root key's policies.
    DeletePolicy(Uuid),
}

/// What an applied change means for the caches beside the catalog (DEKs, seal budgets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The key is no longer usable (or gone): drop DEKs it wraps.
    KeyUnusable(Uuid),
    /// The database changed state or generation (or is gone): drop its seal budget, and its
    /// DEKs when `unusable`.
    Database {
        /// The database.
        id: Uuid,
        /// Whether it can no longer be read or written.
        unusable: bool,
    },
}

impl CatalogChange {
    /// The store operation that makes this change durable.
    pub fn to_op(&self) -> CatalogOp {
        use CatalogChange as C;
        match self {
            C::PutKey(r) => CatalogOp::Put(key_key(&r.id), codec::encode(r)),
            C::DeleteKey(id) => CatalogOp::Delete(key_key(id)),
            C::PutDatabase(r) => CatalogOp::Put(database_key(&r.id), codec::encode(r)),
            C::DeleteDatabase(id) => CatalogOp::Delete(database_key(id)),
            C::PutDek(r) => CatalogOp::Put(dek_key(&r.database_id, r.generation), codec::encode(r)),
            C::DeleteDek {
                database,
                generation,
            } => CatalogOp::Delete(dek_key(database, *generation)),
            C::PutToken(r) => CatalogOp::Put(token_key(&r.id), codec::encode(r)),
            C::DeleteToken(id) => CatalogOp::Delete(token_key(id)),
            C::PutInstance(r) => CatalogOp::Put(instance_key(), codec::encode(r)),
            C::DeleteInstance => CatalogOp::Delete(instance_key()),
            C::PutAuthorization(r) => CatalogOp::Put(authorization_key(&r.id), codec::encode(r)),
            C::DeleteAuthorization(id) => CatalogOp::Delete(authorization_key(id)),
            C::PutJob(r) => CatalogOp::Put(job_key(&r.key_id), codec::encode(r)),
            C::DeleteJob(id) => CatalogOp::Delete(job_key(id)),
            C::PutBackup(r) => CatalogOp::Put(backup_key(&r.id), codec::encode(r)),
            C::DeleteBackup(id) => CatalogOp::Delete(backup_key(id)),
            C::PutTransit(id, s) => CatalogOp::Put(transit_key(id), codec::encode(s)),
            C::DeleteTransit(id) => CatalogOp::Delete(transit_key(id)),
            C::PutPolicy(id, p) => CatalogOp::Put(policy_key(id), codec::encode(p)),
            C::DeletePolicy(id) => CatalogOp::Delete(policy_key(id)),
        }
    }

    /// Decodes a stored entry (`None`: removed) into a change. `Ok(None)` for an entry kind
    /// from a newer version of envault: not ours to interpret.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<Self>, ServiceError> {
        use CatalogChange as C;
        let Some(slash) = key.iter().position(|b| *b == b'/') else {
            return Err(corrupt(key, "no kind"));
        };
        let (kind, rest) = (&key[..slash], &key[slash + 1..]);
        let kind = std::str::from_utf8(kind).map_err(|_| corrupt(key, "kind not UTF-8"))?;
        let text = || String::from_utf8_lossy(rest).into_owned();
        let id = || id_of(key, rest);
        Ok(Some(match (kind, value) {
            (KEY, Some(v)) => C::PutKey(codec::decode(key, v)?),
            (KEY, None) => C::DeleteKey(id()?),
            (DATABASE, Some(v)) => C::PutDatabase(codec::decode(key, v)?),
            (DATABASE, None) => C::DeleteDatabase(id()?),
            (DEK, Some(v)) => C::PutDek(codec::decode(key, v)?),
            (DEK, None) => C::DeleteDek {
                database: id()?,
                generation: rest
                    .get(16..20)
                    .and_then(|g| <[u8; 4]>::try_from(g).ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| corrupt(key, "no generation"))?,
            },
            (TOKEN, Some(v)) => C::PutToken(codec::decode(key, v)?),
            (TOKEN, None) => C::DeleteToken(text()),
            (INSTANCE, Some(v)) => C::PutInstance(codec::decode(key, v)?),
            (INSTANCE, None) => C::DeleteInstance,
            (AUTHORIZATION, Some(v)) => C::PutAuthorization(codec::decode(key, v)?),
            (AUTHORIZATION, None) => C::DeleteAuthorization(text()),
            (JOB, Some(v)) => C::PutJob(codec::decode(key, v)?),
            (JOB, None) => C::DeleteJob(id()?),
            (BACKUP, Some(v)) => C::PutBackup(codec::decode(key, v)?),
            (BACKUP, None) => C::DeleteBackup(id()?),
            (TRANSIT, Some(v)) => C::PutTransit(id()?, codec::decode(key, v)?),
            (TRANSIT, None) => C::DeleteTransit(id()?),
            (POLICY, Some(v)) => C::PutPolicy(id()?, codec::decode(key, v)?),
            (POLICY, None) => C::DeletePolicy(id()?),
            (other, _) => {
                tracing::warn!(kind = other, "ignoring a catalog entry of an unknown kind");
                return Ok(None);
            }
        }))
    }
}

/// Applies one change to the in-memory catalog, keeping its indexes true, and says what it
/// means for the caches. The only function that changes a loaded [`Catalog`].
pub fn apply(catalog: &mut Catalog, change: &CatalogChange) -> Option<Effect> {
    use CatalogChange as C;
    match change {
        C::PutKey(record) => {
            if let Some(old) = catalog.keys.get(&record.id) {
                catalog.key_names.remove(&old.name);
            }
            catalog.key_names.insert(record.name.clone(), record.id);
            catalog.keys.insert(record.id, record.clone());
            (record.state != KeyState::Active).then_some(Effect::KeyUnusable(record.id))
        }
        C::DeleteKey(id) => {
            if let Some(old) = catalog.keys.remove(id) {
                catalog.key_names.remove(&old.name);
            }
            Some(Effect::KeyUnusable(*id))
        }
        C::PutDatabase(record) => {
            let moved = catalog
                .databases
                .get(&record.id)
                .is_none_or(|old| old.generation != record.generation || old.state != record.state);
            if let Some(old) = catalog.databases.get(&record.id) {
                catalog.database_names.remove(&old.name);
            }
            catalog
                .database_names
                .insert(record.name.clone(), record.id);
            catalog.databases.insert(record.id, record.clone());
            moved.then_some(Effect::Database {
                id: record.id,
                unusable: record.state != DatabaseState::Active,
            })
        }
        C::DeleteDatabase(id) => {
            if let Some(old) = catalog.databases.remove(id) {
                catalog.database_names.remove(&old.name);
            }
            Some(Effect::Database {
                id: *id,
                unusable: true,
            })
        }
        C::PutDek(record) => {
            catalog
                .deks
                .entry(record.database_id)
                .or_default()
                .insert(record.generation, record.clone());
            None
        }
        C::DeleteDek {
            database,
            generation,
        } => {
            if let Some(generations) = catalog.deks.get_mut(database) {
                generations.remove(generation);
                if generations.is_empty() {
                    catalog.deks.remove(database);
                }
            }
            None
        }
        C::PutToken(record) => {
            catalog.tokens_by_hash.retain(|_, t| t.id != record.id);
            catalog
                .tokens_by_hash
                .insert(record.hash.clone(), record.clone());
            None
        }
        C::DeleteToken(id) => {
            catalog.tokens_by_hash.retain(|_, t| t.id != *id);
            None
        }
        C::PutInstance(record) => {
            catalog.instance = Some(record.clone());
            None
        }
        C::DeleteInstance => {
            catalog.instance = None;
            None
        }
        C::PutAuthorization(record) => {
            catalog
                .authorizations
                .insert(record.id.clone(), record.clone());
            None
        }
        C::DeleteAuthorization(id) => {
            catalog.authorizations.remove(id);
            None
        }
        C::PutJob(job) => {
            catalog.jobs.insert(job.key_id, job.clone());
            None
        }
        C::DeleteJob(key) => {
            catalog.jobs.remove(key);
            None
        }
        C::PutBackup(record) => {
            catalog.backups.insert(record.id, record.clone());
            None
        }
        C::DeleteBackup(id) => {
            catalog.backups.remove(id);
            None
        }
        C::PutTransit(key, settings) => {
            catalog.transit.insert(*key, settings.clone());
            None
        }
        C::DeleteTransit(key) => {
            catalog.transit.remove(key);
            None
        }
        C::PutPolicy(key, policy) => {
            catalog.policies.insert(*key, policy.clone());
            None
        }
        C::DeletePolicy(key) => {
            catalog.policies.remove(key);
            None
        }
    }
}

fn id_of(key: &[u8], rest: &[u8]) -> Result<Uuid, ServiceError> {
    rest.get(..16)
        .and_then(|raw| Uuid::from_slice(raw).ok())
        .ok_or_else(|| corrupt(key, "no id"))
}

fn corrupt(key: &[u8], reason: &str) -> ServiceError {
    ServiceError::Store(StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    })
}
