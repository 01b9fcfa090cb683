//! Records: the hot path. Every operation checks state in memory, takes its DEK from the
//! cache, and (for writes) returns only once the change is durable.
//!
//! Nonce budget: records use 96-bit random nonces, safe for 2^32 seals per key. Each DEK
//! generation seals at most [`MAX_SEALS_PER_GENERATION`] = 2^31 records before a new generation
//! starts. The count survives restarts through reservations: the catalog stores how far the
//! count may go (`seals_reserved`), raised in steps before use, and a restart resumes from the
//! reserved mark, never from a lower number.

use super::catalog::CatalogChange;
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
use crate::store::{DatabaseState, KeyOrigin, KeyState, TokenRole};

/// Seals per DEK generation before a new generation starts (far under the 2^32 bound).
pub const MAX_SEALS_PER_GENERATION: u64 = 1 << 31;
/// How many seals one persisted reservation allows.
const RESERVATION_STEP: u64 = 1 << 20;

/// Seal accounting of one database's current generation.
#[derive(Debug, Clone, Copy)]
pub(super) struct SealBudget {
    generation: u32,
    used: u64,
    reserved: u64,
}

/// Seal budgets by database.
#[derive(Default)]
pub(super) struct SealBudgets(Mutex<HashMap<Uuid, SealBudget>>);

impl SealBudgets {
    /// Takes one seal from the budget, or `None` if a reservation (or new generation) is due.
    fn take(&self, database: Uuid) -> Option<u32> {
        let mut budgets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let budget = budgets.get_mut(&database)?;
        if budget.used < budget.reserved && budget.used < MAX_SEALS_PER_GENERATION {
            budget.used += 1;
            Some(budget.generation)
        } else {
            None
        }
    }

    fn get(&self, database: Uuid) -> Option<SealBudget> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&database)
            .copied()
    }

    fn set(&self, database: Uuid, budget: SealBudget) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(database, budget);
    }

    /// Forgets a database's budget (on purge or shred).
    pub(super) fn remove(&self, database: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&database);
    }
}

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
        }
    }

    pub(super) fn validate_record_key(&self, key: &str) -> Result<(), ServiceError> {
        let max = self.limits.max_record_key;
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
        if let Some(cipher) = self.deks.get(database, generation) {
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
            .keystore_call(|ks| {
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
        self.deks
            .insert(database, generation, record.key_id, Arc::clone(&cipher));
        Ok(cipher)
    }

    /// The generation to seal with, reserving more budget (or starting a generation) if due.
    async fn seal_generation(&self, database: Uuid) -> Result<u32, ServiceError> {
        loop {
            if let Some(generation) = self.seal_budgets.take(database) {
                return Ok(generation);
            }
            self.reserve_seals(database).await?;
        }
    }

    async fn reserve_seals(&self, database: Uuid) -> Result<(), ServiceError> {
        let _admin = self.admin().await?;
        let (db, current) = {
            let catalog = self.read_catalog();
            let db = catalog
                .databases
                .get(&database)
                .cloned()
                .ok_or(ServiceError::Internal(
                    "a database being written is not in the catalog",
                ))?;
            let dek = catalog
                .deks
                .get(&database)
                .and_then(|g| g.get(&db.generation))
                .cloned()
                .ok_or(ServiceError::Internal(
                    "a database's current DEK generation is not in the catalog",
                ))?;
            (db, dek)
        };
        let budget = self
            .seal_budgets
            .get(database)
            .filter(|b| b.generation == db.generation)
            .unwrap_or(SealBudget {
                generation: db.generation,
                used: current.seals_reserved,
                reserved: current.seals_reserved,
            });
        if budget.used < budget.reserved && budget.used < MAX_SEALS_PER_GENERATION {
            self.seal_budgets.set(database, budget);
            return Ok(()); // another writer reserved while we waited
        }
        // Seals are counted from the catalog's high-water mark: on a shared store other nodes
        // reserve ranges of the same DEK, and each node's range must be its own.
        let start = budget.used.max(current.seals_reserved);
        if start < MAX_SEALS_PER_GENERATION {
            let mut dek = current;
            dek.seals_reserved = (start + RESERVATION_STEP).min(MAX_SEALS_PER_GENERATION);
            let reserved = dek.seals_reserved;
            self.commit(vec![CatalogChange::PutDek(dek)]).await?;
            self.seal_budgets.set(
                database,
                SealBudget {
                    generation: db.generation,
                    used: start,
                    reserved,
                },
            );
            return Ok(());
        }
        // The generation is exhausted: start the next one under the key's newest version.
        let root =
            self.read_catalog()
                .keys
                .get(&db.key_id)
                .cloned()
                .ok_or(ServiceError::Internal(
                    "a database's key is not in the catalog",
                ))?;
        let generation = db.generation + 1;
        let (mut dek, cipher) = self.new_dek(&db, &root, generation)?;
        dek.seals_reserved = RESERVATION_STEP;
        let mut next_db = db;
        next_db.generation = generation;
        self.commit(vec![
            CatalogChange::PutDek(dek),
            CatalogChange::PutDatabase(next_db),
        ])
        .await?;
        self.deks.insert(database, generation, root.id, cipher);
        self.seal_budgets.set(
            database,
            SealBudget {
                generation,
                used: 0,
                reserved: RESERVATION_STEP,
            },
        );
        Ok(())
    }

    /// Seals and stores a record; returns once it is durable.
    async fn put_record_inner(
        &self,
        who: &Principal,
        database: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), ServiceError> {
        let _gate = self.gate.read().await;
        let db = self.usable_database(who, database)?;
        let lock = self.database_lock(db);
        let _writing = lock.read().await;
        self.validate_record_key(key)?;
        if value.len() > self.limits.max_record_size {
            return Err(ServiceError::TooLarge(format!(
                "record value exceeds {} bytes",
                self.limits.max_record_size
            )));
        }
        self.disk_space
            .ensure_room((key.len() + value.len()) as u64)?;
        self.seal_and_store(db, key, value).await?;
        self.flusher.durable().await
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

    /// Reads and opens a record.
    async fn get_record_inner(
        &self,
        who: &Principal,
        database: &str,
        key: &str,
    ) -> Result<Vec<u8>, ServiceError> {
        let _gate = self.gate.read().await;
        let db = self.usable_database(who, database)?;
        self.validate_record_key(key)?;
        self.load_and_open(db, key).await
    }

    /// Reads and opens one record of a usable database (the caller holds the gate).
    pub(super) async fn load_and_open(&self, db: Uuid, key: &str) -> Result<Vec<u8>, ServiceError> {
        let sealed = self
            .store
            .record_get_async(*db.as_bytes(), key.as_bytes().to_vec())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no record {key:?}")))?;
        let envelope = Envelope(EnvelopeKind::Record);
        let generation = envelope
            .label(&sealed)
            .map_err(|_| ServiceError::Integrity)?;
        let cipher = self.dek(db, generation)?;
        let (_, plain) = envelope
            .open(
                &cipher,
                &record_context(db.as_bytes(), key.as_bytes()),
                sealed,
            )
            .map_err(|_| ServiceError::Integrity)?;
        Ok(plain)
    }

    /// Deletes a record; returns once durable. `not_found` if it did not exist.
    async fn delete_record_inner(
        &self,
        who: &Principal,
        database: &str,
        key: &str,
    ) -> Result<(), ServiceError> {
        let _gate = self.gate.read().await;
        let db = self.usable_database(who, database)?;
        let lock = self.database_lock(db);
        let _writing = lock.read().await;
        self.validate_record_key(key)?;
        self.remove_record(db, key).await?;
        self.flusher.durable().await
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

    /// Lists record keys by prefix, in pages.
    async fn list_records_inner(
        &self,
        who: &Principal,
        database: &str,
        query: RecordListQuery,
    ) -> Result<RecordPage, ServiceError> {
        let _gate = self.gate.read().await;
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
        let result = self.put_record_inner(who, database, key, value).await;
        self.audit_denial(who, "databases.records.write", database, result)
    }

    /// Reads and opens a record. Denials are logged.
    pub async fn get_record(
        &self,
        who: &Principal,
        database: &str,
        key: &str,
    ) -> Result<Vec<u8>, ServiceError> {
        let result = self.get_record_inner(who, database, key).await;
        self.audit_denial(who, "databases.records.read", database, result)
    }

    /// Deletes a record; `not_found` if it did not exist. Denials are logged.
    pub async fn delete_record(
        &self,
        who: &Principal,
        database: &str,
        key: &str,
    ) -> Result<(), ServiceError> {
        let result = self.delete_record_inner(who, database, key).await;
        self.audit_denial(who, "databases.records.delete", database, result)
    }

    /// Lists record keys by prefix, in pages. Denials are logged.
    pub async fn list_records(
        &self,
        who: &Principal,
        database: &str,
        query: RecordListQuery,
    ) -> Result<RecordPage, ServiceError> {
        let result = self.list_records_inner(who, database, query).await;
        self.audit_denial(who, "databases.records.list", database, result)
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
            .database_locks
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(database).or_default())
    }

    /// Reserves `count` seals at once (bulk restore); returns the generation to seal with.
    pub(super) async fn reserve_bulk_seals(
        &self,
        database: Uuid,
        count: u64,
    ) -> Result<u32, ServiceError> {
        let _admin = self.admin().await?;
        let (db, mut dek) = {
            let catalog = self.read_catalog();
            let db = catalog
                .databases
                .get(&database)
                .cloned()
                .ok_or(ServiceError::Internal(
                    "a database being written is not in the catalog",
                ))?;
            let dek = catalog
                .deks
                .get(&database)
                .and_then(|g| g.get(&db.generation))
                .cloned()
                .ok_or(ServiceError::Internal(
                    "a database's current DEK generation is not in the catalog",
                ))?;
            (db, dek)
        };
        let used = self
            .seal_budgets
            .get(database)
            .filter(|b| b.generation == db.generation)
            .map_or(dek.seals_reserved, |b| b.used.max(dek.seals_reserved));
        let end = used.saturating_add(count);
        if end > MAX_SEALS_PER_GENERATION {
            return Err(ServiceError::BadRequest(
                "too many records for one DEK generation".into(),
            ));
        }
        dek.seals_reserved = end;
        self.commit(vec![CatalogChange::PutDek(dek)]).await?;
        self.seal_budgets.set(
            database,
            SealBudget {
                generation: db.generation,
                used: end,
                reserved: end,
            },
        );
        Ok(db.generation)
    }
}
