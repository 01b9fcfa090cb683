//! The in-memory view of the catalog: every key, database, DEK record and token, loaded at
//! start and updated after each durable change, so that request checks (state, names, which
//! DEK) never touch the disk or decode JSON.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::ServiceError;
use crate::store::codec;
use crate::store::{
    AuthorizationRecord, BackupRecord, CatalogKey, DatabaseRecord, DekRecord, InstanceRecord,
    KeyOrigin, KeyRecord, RotationJob, Store, TokenRecord,
};

/// Catalog key kinds.
pub const KEY: &str = "key";
/// Databases.
pub const DATABASE: &str = "db";
/// DEK generations: `dek/` + database id + generation (BE).
pub const DEK: &str = "dek";
/// Tokens, by id.
pub const TOKEN: &str = "token";
/// Instance identity.
pub const INSTANCE: &str = "instance";
/// Authorizations, by id.
pub const AUTHORIZATION: &str = "authz";
/// Unfinished rotation jobs, by key id.
pub const JOB: &str = "job";
/// Backups, by id.
pub const BACKUP: &str = "backup";

/// Catalog key of a backup.
pub fn backup_key(id: &Uuid) -> CatalogKey {
    codec::key(BACKUP, &[id.as_bytes()])
}

/// Catalog key of an authorization.
pub fn authorization_key(id: &str) -> CatalogKey {
    codec::key(AUTHORIZATION, &[id.as_bytes()])
}

/// Catalog key of a key's unfinished rotation job.
pub fn job_key(key_id: &Uuid) -> CatalogKey {
    codec::key(JOB, &[key_id.as_bytes()])
}

/// Catalog key of a root key.
pub fn key_key(id: &Uuid) -> CatalogKey {
    codec::key(KEY, &[id.as_bytes()])
}

/// Catalog key of a database.
pub fn database_key(id: &Uuid) -> CatalogKey {
    codec::key(DATABASE, &[id.as_bytes()])
}

/// Catalog key of a DEK generation.
pub fn dek_key(database: &Uuid, generation: u32) -> CatalogKey {
    codec::key(DEK, &[database.as_bytes(), &generation.to_be_bytes()])
}

/// Catalog key of a token.
pub fn token_key(id: &str) -> CatalogKey {
    codec::key(TOKEN, &[id.as_bytes()])
}

/// Everything the catalog holds, indexed for request-time lookups.
#[derive(Default)]
pub struct Catalog {
    /// Root keys by id.
    pub keys: HashMap<Uuid, KeyRecord>,
    /// Root key ids by name.
    pub key_names: HashMap<String, Uuid>,
    /// Databases by id.
    pub databases: HashMap<Uuid, DatabaseRecord>,
    /// Database ids by name.
    pub database_names: HashMap<String, Uuid>,
    /// DEK generations by database.
    pub deks: HashMap<Uuid, BTreeMap<u32, DekRecord>>,
    /// Tokens by hex SHA-256 of the secret.
    pub tokens_by_hash: HashMap<String, TokenRecord>,
    /// Instance identity, if created.
    pub instance: Option<InstanceRecord>,
    /// Authorizations by id.
    pub authorizations: HashMap<String, AuthorizationRecord>,
    /// Unfinished rotation jobs by key id.
    pub jobs: HashMap<Uuid, RotationJob>,
    /// Backups by id.
    pub backups: HashMap<Uuid, BackupRecord>,
    /// Transit settings by root key id (issue 11).
    pub transit: HashMap<Uuid, super::transit::TransitSettings>,
    /// Key rotation policies by key id.
    pub policies: HashMap<Uuid, crate::store::KeyPolicyRecord>,
}

fn scan<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    kind: &str,
) -> Result<Vec<T>, ServiceError> {
    let prefix = codec::key(kind, &[]).0;
    store
        .catalog_scan(&prefix)?
        .into_iter()
        .map(|(k, v)| codec::decode(&k, &v).map_err(ServiceError::from))
        .collect()
}

impl Catalog {
    /// Loads the whole catalog from the store.
    pub fn load(store: &dyn Store) -> Result<Self, ServiceError> {
        let mut catalog = Catalog::default();
        for key in scan::<KeyRecord>(store, KEY)? {
            catalog.put_key(key);
        }
        for db in scan::<DatabaseRecord>(store, DATABASE)? {
            catalog.put_database(db);
        }
        for dek in scan::<DekRecord>(store, DEK)? {
            catalog.put_dek(dek);
        }
        for token in scan::<TokenRecord>(store, TOKEN)? {
            catalog.tokens_by_hash.insert(token.hash.clone(), token);
        }
        catalog.instance = scan::<InstanceRecord>(store, INSTANCE)?.into_iter().next();
        for authz in scan::<AuthorizationRecord>(store, AUTHORIZATION)? {
            catalog.authorizations.insert(authz.id.clone(), authz);
        }
        for backup in scan::<BackupRecord>(store, BACKUP)? {
            catalog.backups.insert(backup.id, backup);
        }
        for job in scan::<RotationJob>(store, JOB)? {
            catalog.jobs.insert(job.key_id, job);
        }
        catalog.transit = super::transit::load_settings(store)?;
        catalog.policies = super::policies::load_policies(store)?;
        Ok(catalog)
    }

    /// Inserts or replaces a key, keeping the name index true.
    pub fn put_key(&mut self, key: KeyRecord) {
        if let Some(old) = self.keys.get(&key.id) {
            self.key_names.remove(&old.name);
        }
        self.key_names.insert(key.name.clone(), key.id);
        self.keys.insert(key.id, key);
    }

    /// Removes a key record.
    pub fn remove_key(&mut self, id: &Uuid) {
        if let Some(old) = self.keys.remove(id) {
            self.key_names.remove(&old.name);
        }
    }

    /// Inserts or replaces a database, keeping the name index true.
    pub fn put_database(&mut self, db: DatabaseRecord) {
        if let Some(old) = self.databases.get(&db.id) {
            self.database_names.remove(&old.name);
        }
        self.database_names.insert(db.name.clone(), db.id);
        self.databases.insert(db.id, db);
    }

    /// Removes a database and its DEK records.
    pub fn remove_database(&mut self, id: &Uuid) {
        if let Some(old) = self.databases.remove(id) {
            self.database_names.remove(&old.name);
        }
        self.deks.remove(id);
    }

    /// Inserts or replaces a DEK generation record.
    pub fn put_dek(&mut self, dek: DekRecord) {
        self.deks
            .entry(dek.database_id)
            .or_default()
            .insert(dek.generation, dek);
    }

    /// Finds a key by name, id or CRN (`…:key:<id>`).
    pub fn find_key(&self, reference: &str) -> Option<&KeyRecord> {
        let by_id = |text: &str| Uuid::parse_str(text).ok().and_then(|id| self.keys.get(&id));
        if let Some(rest) = reference.strip_prefix("crn:v1:") {
            let id = rest.rsplit_once(":key:").map(|(_, id)| id)?;
            return by_id(id);
        }
        by_id(reference).or_else(|| {
            self.key_names
                .get(reference)
                .and_then(|id| self.keys.get(id))
        })
    }

    /// Finds a database by name, id or CRN (`…:database:<id>`).
    pub fn find_database(&self, reference: &str) -> Option<&DatabaseRecord> {
        let by_id = |text: &str| {
            Uuid::parse_str(text)
                .ok()
                .and_then(|id| self.databases.get(&id))
        };
        if let Some(rest) = reference.strip_prefix("crn:v1:") {
            let id = rest.rsplit_once(":database:").map(|(_, id)| id)?;
            return by_id(id);
        }
        by_id(reference).or_else(|| {
            self.database_names
                .get(reference)
                .and_then(|id| self.databases.get(id))
        })
    }

    /// Databases whose records or backups `key_id` protects.
    pub fn databases_under(&self, key_id: &Uuid) -> Vec<&DatabaseRecord> {
        let mut dbs: Vec<&DatabaseRecord> = self
            .databases
            .values()
            .filter(|db| db.key_id == *key_id || db.backup_key_id == Some(*key_id))
            .collect();
        dbs.sort_by(|a, b| a.name.cmp(&b.name));
        dbs
    }

    /// Customer keys (not provider-managed), by name.
    pub fn customer_keys(&self) -> Vec<&KeyRecord> {
        let mut keys: Vec<&KeyRecord> = self
            .keys
            .values()
            .filter(|k| k.origin != KeyOrigin::Provider)
            .collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        keys
    }
}

impl Catalog {
    /// Whether an authorization from `source` to `key` (or `*`) carries every role in `roles`.
    pub fn is_authorized(&self, source: &str, key: &Uuid, roles: &[&str]) -> bool {
        self.authorizations.values().any(|a| {
            a.source == source
                && (a.target.is_none() || a.target == Some(*key))
                && roles.iter().all(|r| a.roles.iter().any(|have| have == r))
        })
    }
}

impl Catalog {
    /// Backups whose DEK `key_id` wraps, oldest first.
    pub fn backups_under(&self, key_id: &Uuid) -> Vec<&BackupRecord> {
        let mut list: Vec<&BackupRecord> = self
            .backups
            .values()
            .filter(|b| b.key_id == *key_id)
            .collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        list
    }
}
