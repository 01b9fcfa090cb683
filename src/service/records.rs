//! Records: the hot path. Every operation checks state in memory, takes its DEK from the
//! cache, and (for writes) returns only once the change is durable. Which DEK generation seals
//! a record, and its nonce budget, is `seal_budget`'s.

use crate::service::Action;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use uuid::Uuid;

use super::authz::{DATABASES, READER};
use super::databases::find_database;
use super::{Principal, ServiceError, Vault};
use crate::api::{RecordListQuery, RecordPage};
use crate::crypto::bindings::{dek_context, record_context};
use crate::crypto::{Cipher, Envelope, EnvelopeKind, SecretKey};
use crate::store::{DatabaseState, KeyOrigin, KeyState, StoreError, TokenRole};

impl Vault {
    /// Checks that `who` may use the database's records now; returns its id.
    pub(super) fn usable_database(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<Uuid, ServiceError> {
        let catalog = self.read_catalog();
        let db = find_database(&catalog, reference)?;
        if who.role == TokenRole::App && !who.databases.contains(&db.id) {
            return Err(ServiceError::Forbidden(format!(
                "this token may not use database {:?}",
                db.name
            )));
        }
        match db.state {
            DatabaseState::Active => {}
            DatabaseState::Deleted => {
                return Err(ServiceError::DatabaseDeleted(format!(
                    "database {:?} is deleted",
                    db.name
                )))
            }
            DatabaseState::Disabled => {
                return Err(ServiceError::KeyDestroyed(format!(
                    "database {:?} is disabled: {}",
                    db.name,
                    db.state_reason.as_deref().unwrap_or("disabled")
                )))
            }
        }
        let key = catalog.keys.get(&db.key_id).ok_or(ServiceError::Internal(
            "a database's key is not in the catalog",
        ))?;
        if key.origin != KeyOrigin::Provider
            && !catalog.is_authorized(DATABASES, &key.id, &[READER])
        {
            return Err(ServiceError::NotAuthorizedForKey(format!(
                "the {DATABASES:?} authorization for the key of database {:?} was revoked",
                db.name
            )));
        }
        match key.state {
            KeyState::Active => Ok(db.id),
            KeyState::Suspended => Err(ServiceError::KeySuspended(format!(
                "the key of database {:?} is suspended",
                db.name
            ))),
            KeyState::Destroyed => Err(ServiceError::KeyDestroyed(format!(
                "the key of database {:?} was destroyed",
                db.name
            ))),
            KeyState::PendingDestruction => Err(ServiceError::KeyPendingDestruction(format!(
                "the key of database {:?} is scheduled for destruction",
                db.name
            ))),
        }
    }

    pub(super) fn validate_record_key(&self, key: &str) -> Result<(), ServiceError> {
        let max = self.records.limits().max_record_key;
        if key.is_empty() || key.len() > max {
            return Err(ServiceError::BadRequest(format!(
                "record key must be 1 to {max} bytes"
            )));
        }
        if key.chars().any(char::is_control) {
            return Err(ServiceError::BadRequest(
                "record key must not contain control characters".into(),
            ));
        }
        Ok(())
    }

    /// The DEK of (database, generation): from the cache, else unwrapped once and cached.
    pub(super) fn dek(&self, database: Uuid, generation: u32) -> Result<Arc<Cipher>, ServiceError> {
        if let Some(cipher) = self.keys.deks().get(database, generation) {
            return Ok(cipher);
        }
        let record = {
            let catalog = self.read_catalog();
            catalog
                .deks
                .get(&database)
                .and_then(|gens| gens.get(&generation))
                .cloned()
                .ok_or(ServiceError::Internal(
                    "a record's DEK generation is not in the catalog",
                ))?
        };
        let wrapped = B64
            .decode(&record.wrapped)
            .map_err(|_| ServiceError::Integrity)?;
        let plain = self
            .keys
            .call(|ks| {
                ks.open(
                    record.key_id,
                    EnvelopeKind::WrappedDek,
                    &dek_context(database.as_bytes(), generation, record.key_id.as_bytes()),
                    wrapped,
                )
            })
            .map_err(ServiceError::from_stored_open)?;
        let dek = SecretKey::from_slice(&plain).map_err(|_| ServiceError::Integrity)?;
        let cipher = Arc::new(Cipher::new(&dek));
        self.keys
            .deks()
            .insert(database, generation, record.key_id, Arc::clone(&cipher));
        Ok(cipher)
    }

    /// Seals a validated record and hands it to the store (durable at the next flush). The
    /// caller holds the gate and the database's write lock.
    pub(super) async fn seal_and_store(
        &self,
        db: Uuid,
        key: &str,
        value: &[u8],
    ) -> Result<(), ServiceError> {
        let generation = self.seal_generation(db).await?;
        let cipher = self.dek(db, generation)?;
        let sealed = Envelope(EnvelopeKind::Record)
            .seal(
                &cipher,
                generation,
                &record_context(db.as_bytes(), key.as_bytes()),
                value,
            )
            .map_err(|_| ServiceError::Random)?;
        self.store
            .record_put_async(*db.as_bytes(), key.as_bytes().to_vec(), sealed)
            .await?;
        Ok(())
    }

    /// Reads and opens one record of a usable database (the caller holds the gate).
    pub(super) async fn load_and_open(&self, db: Uuid, key: &str) -> Result<Vec<u8>, ServiceError> {
        let damaged = || ServiceError::RecordDamaged(key.to_string());
        let sealed = match self
            .store
            .record_get_async(*db.as_bytes(), key.as_bytes().to_vec())
            .await
        {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return Err(ServiceError::NotFound(format!("no record {key:?}"))),
            Err(StoreError::Damaged(why)) => {
                tracing::error!(record = key, %why, "a record's stored bytes are damaged");
                return Err(damaged());
            }
            Err(other) => return Err(other.into()),
        };
        let envelope = Envelope(EnvelopeKind::Record);
        let generation = envelope.label(&sealed).map_err(|_| damaged())?;
        let cipher = self.dek(db, generation)?;
        let (_, plain) = envelope
            .open(
                &cipher,
                &record_context(db.as_bytes(), key.as_bytes()),
                sealed,
            )
            .map_err(|_| damaged())?;
        Ok(plain)
    }

    /// Removes one record (durable at the next flush); `not_found` if it did not exist. The
    /// caller holds the gate and the database's write lock.
    pub(super) async fn remove_record(&self, db: Uuid, key: &str) -> Result<(), ServiceError> {
        if self
            .store
            .record_delete_async(*db.as_bytes(), key.as_bytes().to_vec())
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("no record {key:?}")))
        }
    }
}

impl Vault {
    /// Seals and stores a record; returns once it is durable. Denials are logged.
    pub async fn put_record(
        &self,
        who: &Principal,
        database: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), ServiceError> {
        let result: Result<(), ServiceError> = async move {
            let _gate = self.records.gate().read().await;
            let db = self.usable_database(who, database)?;
            let lock = self.database_lock(db);
            let _writing = lock.read().await;
            self.validate_record_key(key)?;
            if value.len() > self.records.limits().max_record_size {
                return Err(ServiceError::TooLarge(format!(
                    "record value exceeds {} bytes",
                    self.records.limits().max_record_size
                )));
            }
            self.records
                .disk_space()
                .ensure_room((key.len() + value.len()) as u64)?;
            self.seal_and_store(db, key, value).await?;
            self.flusher.durable().await
        }
        .await;
        self.audit_denial(who, Action::RecordsWrite, database, result)
    }

    /// Reads and opens a record. Denials are logged.
    pub async fn get_record(
        &self,
        who: &Principal,
        database: &str,
        key: &str,
    ) -> Result<Vec<u8>, ServiceError> {
        let result: Result<Vec<u8>, ServiceError> = async move {
            let _gate = self.records.gate().read().await;
            let db = self.usable_database(who, database)?;
            self.validate_record_key(key)?;
            self.load_and_open(db, key).await
        }
        .await;
        self.audit_denial(who, Action::RecordsRead, database, result)
    }

    /// Deletes a record; `not_found` if it did not exist. Denials are logged.
    pub async fn delete_record(
        &self,
        who: &Principal,
        database: &str,
        key: &str,
    ) -> Result<(), ServiceError> {
        let result: Result<(), ServiceError> = async move {
            let _gate = self.records.gate().read().await;
            let db = self.usable_database(who, database)?;
            let lock = self.database_lock(db);
            let _writing = lock.read().await;
            self.validate_record_key(key)?;
            self.remove_record(db, key).await?;
            self.flusher.durable().await
        }
        .await;
        self.audit_denial(who, Action::RecordsDelete, database, result)
    }

    /// Lists record keys by prefix, in pages. Denials are logged.
    pub async fn list_records(
        &self,
        who: &Principal,
        database: &str,
        query: RecordListQuery,
    ) -> Result<RecordPage, ServiceError> {
        let result: Result<RecordPage, ServiceError> = async move {
            let _gate = self.records.gate().read().await;
            let db = self.usable_database(who, database)?;
            let limit = query.limit.unwrap_or(100);
            if !(1..=1000).contains(&limit) {
                return Err(ServiceError::BadRequest("limit must be 1 to 1000".into()));
            }
            let prefix = query.prefix.unwrap_or_default();
            let mut keys = self.store_call(|store| {
                store.record_keys(
                    db.as_bytes(),
                    prefix.as_bytes(),
                    query.after.as_deref().map(str::as_bytes),
                    limit + 1,
                )
            })?;
            let more = keys.len() > limit;
            keys.truncate(limit);
            let keys: Vec<String> = keys
                .into_iter()
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .collect();
            let next = if more { keys.last().cloned() } else { None };
            Ok(RecordPage { keys, next })
        }
        .await;
        self.audit_denial(who, Action::RecordsList, database, result)
    }
}

/// Per-database locks: writers hold one shared, a backup holds it exclusively while it takes
/// its snapshot.
#[derive(Default)]
pub(super) struct DatabaseLocks(Mutex<HashMap<Uuid, Arc<tokio::sync::RwLock<()>>>>);

impl Vault {
    /// The write lock of a database.
    pub(super) fn database_lock(&self, database: Uuid) -> Arc<tokio::sync::RwLock<()>> {
        let mut locks = self
            .records
            .locks()
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(database).or_default())
    }
}
