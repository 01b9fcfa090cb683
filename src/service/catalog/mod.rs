//! The in-memory view of the catalog: every key, database, DEK record and token, loaded at
//! start and kept equal to the store, so that request checks (state, names, which DEK) never
//! touch the disk or decode JSON.
//!
//! The view is a fold over typed changes ([`CatalogChange`]): loading applies one change per
//! stored entry, a local commit writes its changes to the store and then applies the same
//! changes, and a change another node made (read from a shared store's change feed) is decoded
//! into the same type and applied by the same function, [`apply`]. Nothing else writes to it.

mod change;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ServiceError;
use crate::store::codec;
use crate::store::{
    AuthorizationRecord, BackupRecord, CatalogKey, DatabaseRecord, DekRecord, InstanceRecord,
    KeyOrigin, KeyRecord, RotationJob, Store, TokenRecord,
};

pub(super) use change::{apply, CatalogChange, Effect};

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
/// Transit settings, by root key id.
pub const TRANSIT: &str = "transit";
/// Key policies (rotation, dual authorization of deletion), by root key id.
pub const POLICY: &str = "policy";

/// Every entry kind this version of envault reads, in load order.
const KINDS: [&str; 10] = [
    KEY,
    DATABASE,
    DEK,
    TOKEN,
    INSTANCE,
    AUTHORIZATION,
    JOB,
    BACKUP,
    TRANSIT,
    POLICY,
];

/// Catalog key of a root key's policies.
pub fn policy_key(id: &Uuid) -> CatalogKey {
    codec::key(POLICY, &[id.as_bytes()])
}

/// Catalog key of the instance identity.
pub fn instance_key() -> CatalogKey {
    codec::key(INSTANCE, &[])
}

/// Catalog key of a root key's transit settings.
pub fn transit_key(id: &Uuid) -> CatalogKey {
    codec::key(TRANSIT, &[id.as_bytes()])
}

/// Transit settings of one root key (absent = defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitSettings {
    /// Ciphertexts of older versions are refused; 0 and 1 both mean "every version".
    #[serde(default)]
    pub min_decryption_version: u32,
    /// Whether `DELETE transit/keys/<name>` may delete (shred) the key.
    #[serde(default)]
    pub deletion_allowed: bool,
    /// Unix creation time of versions added through transit rotation.
    #[serde(default)]
    pub version_times: BTreeMap<u32, i64>,
}

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
    /// Transit settings by root key id.
    pub transit: HashMap<Uuid, TransitSettings>,
    /// The instance name of this daemon's CRNs (`a/<name>`), from the configuration; the
    /// Vault sets it whenever it installs a catalog, so references can be checked in full.
    pub instance_name: String,
    /// Key policies by key id.
    pub policies: HashMap<Uuid, crate::store::KeyPolicyRecord>,
}

impl Catalog {
    /// Loads the whole catalog from the store: every entry of every known kind, applied as a
    /// change. Entries of a kind this version does not know are left alone.
    pub fn load(store: &dyn Store) -> Result<Self, ServiceError> {
        let mut catalog = Catalog::default();
        for kind in KINDS {
            for (key, value) in store.catalog_scan(&codec::key(kind, &[]).0)? {
                if let Some(change) = CatalogChange::decode(&key, Some(&value))? {
                    apply(&mut catalog, &change);
                }
            }
        }
        Ok(catalog)
    }

    /// The id a CRN names when `reference` is a CRN (`crn:v1:…`): `Some(None)` unless it is a
    /// CRN of this account and instance, for a resource of `kind`, exactly as
    /// [`super::Vault::crn`] writes it. A CRN of another instance never resolves to a local
    /// resource that happens to share its id.
    pub fn crn_id(&self, reference: &str, kind: &str) -> Option<Option<Uuid>> {
        let rest = reference.strip_prefix("crn:v1:")?;
        let Some(instance) = &self.instance else {
            return Some(None);
        };
        let prefix = format!(
            "envault:local:a/{}:{}:{kind}:",
            self.instance_name, instance.id
        );
        Some(
            rest.strip_prefix(&prefix)
                .and_then(|id| Uuid::try_parse(id).ok().filter(|u| u.to_string() == id)),
        )
    }

    /// Finds a key by name, id or CRN (`…:key:<id>`).
    pub fn find_key(&self, reference: &str) -> Option<&KeyRecord> {
        let by_id = |text: &str| Uuid::parse_str(text).ok().and_then(|id| self.keys.get(&id));
        if let Some(id) = self.crn_id(reference, "key") {
            return id.and_then(|id| self.keys.get(&id));
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
        if let Some(id) = self.crn_id(reference, "database") {
            return id.and_then(|id| self.databases.get(&id));
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

#[cfg(test)]
mod tests;
