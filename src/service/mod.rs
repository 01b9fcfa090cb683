//! The rules of DESIGN.md: root keys, databases, records, tokens. Route handlers call one
//! method of [`Vault`] each; this layer owns state checks, durability and the DEK cache.
//!
//! `Vault` is a facade over what every part shares (the store and its group-commit flusher,
//! the in-memory catalog, the admin mutex, the cluster state) and five parts that own the rest
//! of the state, each reached only through its methods:
//!
//! - `keyring::Keyring`, keys and keystore: the root-key backend, the DEK cache, the import
//!   tokens;
//! - `record_state::RecordState`, databases and records: the gate, the per-database locks,
//!   the seal budgets, free space, limits;
//! - `backups::Backups`: the backup target and what is known of its objects;
//! - `jobs::JobState`: rotation progress, token last uses, instance-wide key policies;
//! - `activity::Activity`, audit: the activity log and this instance's CRNs; every event is
//!   a typed [`Action`].
//!
//! # Lock order
//!
//! Locks are taken in this order, never the reverse: a lock further down may be taken while
//! one above it is held, not the other way round.
//!
//! | # | Lock | Kind | Taken by |
//! |---|------|------|----------|
//! | 1 | `RecordState::gate` | tokio `RwLock` | record operations and batches (shared, for their whole duration); disable, shred, revoke, scheduled deletion (exclusive, before 3) |
//! | 2 | a database lock (`Vault::database_lock`) | tokio `RwLock` per database | record writes and deletes (shared); a backup's snapshot (exclusive) |
//! | 3 | the admin mutex (`Vault::admin`) | tokio `Mutex` | every catalog mutation, held until its commit is applied; a record write reserving seal budget takes it under 1 and 2 |
//! | 4 | the cluster admin lock | PostgreSQL advisory lock | with 3, on a shared store only |
//! | 5 | `ClusterState::refresh` | tokio `Mutex` | with 3 while the catalog is brought up to date; alone when a request refreshes it |
//! | 6 | the catalog (`Vault::catalog`) | std `RwLock` | short reads and the one writer `catalog::apply`; never held across an `.await` |
//! | 7 | the database-lock map, the seal budgets, the DEK cache's shards, rotation progress, token last uses, the backup rejects (`Backups::rejected`, under 6's read lock) | std `Mutex`/`RwLock` | single lookups or updates, never across an `.await`, never while taking another lock |
//! | 8 | the activity log (its tail and fsync state) | std `Mutex` | `AuditLog::append`; never with 6 held (the target is resolved first) |
//!
//! The group-commit flusher and the keystore are no locks here: they are awaited (or called)
//! with at most 1–5 held. A shred takes 1 exclusively and then 3, so no record operation is
//! between its check and its acknowledgement while the key's state changes.

mod activity;
mod audit;
mod audit_action;
mod audit_chain;
mod audit_head;
mod audit_sync;
mod authz;
mod backup_adoption;
mod backups;
mod catalog;
mod cluster;
mod data_dir;
mod databases;
mod dek_cache;
mod disk_space;
mod dual_auth;
mod durability;
mod error;
mod import_tokens;
mod jobs;
mod keyring;
mod keys;
mod kms_v2;
mod lifecycle;
mod policies;
mod purge_backups;
mod purge_databases;
mod readiness;
mod record_batch;
mod record_state;
mod records;
mod rotation;
mod scheduled_deletion;
mod seal_budget;
mod secure_import;
mod shred_receipt;
mod token_lifecycle;
mod tokens;
mod transit;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use uuid::Uuid;

pub use crate::api::ComponentHealth;
pub use audit::{verify_data_dir, AuditEvent, AuditLog, ChainKey, VerifyReport};
pub use audit_action::Action;
pub use audit_sync::data_plane;
pub use authz::{AuthorizationInfo, GrantRequest};
pub use backups::BackupInfo;
pub use catalog::Catalog;
pub use data_dir::DataDirError;
pub use dual_auth::DeletionApproval;
pub use error::ServiceError;
pub use import_tokens::{ImportError, ImportSettings, ImportTokens, RejectCause};
pub use lifecycle::{AffectedResource, Impact, ShredReceipt};
pub use policies::{
    parse_rotate_every, KeyPolicyInfo, SetPolicyRequest, MAX_ROTATE_DAYS, MIN_ROTATE_DAYS,
};
pub use record_batch::{BatchOp, BatchOutcome, MAX_BATCH_OPS};
pub use rotation::RotationStatus;
pub use secure_import::{import_settings, IMPORT_TOKEN_CREATE, IMPORT_TOKEN_READ};
pub use token_lifecycle::unix_now;
pub use tokens::{CreateTokenRequest, NewToken, Principal, TokenHash, TokenInfo};
pub use transit::{ItemResults, OpenItem, SealItem, TransitKey, TransitSealed};

use crate::config::Config;
use crate::keystore::RootKeyBackend;
use crate::store::{CatalogOp, InstanceRecord, Store};
use catalog::CatalogChange;
use dek_cache::DekCache;
use disk_space::DiskSpace;
use durability::GroupFlusher;

/// Request-size limits the service enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest record value.
    pub max_record_size: usize,
    /// Largest record key, in bytes.
    pub max_record_key: usize,
}

/// The daemon's state: what every part shares (store, catalog, admin mutex, cluster state)
/// and the parts (see the module doc).
pub struct Vault {
    store: Arc<dyn Store>,
    flusher: GroupFlusher,
    catalog: RwLock<Catalog>,
    /// Serializes catalog mutations (create, delete, state changes) so each computes its
    /// change from a state no other mutation is changing. Record traffic takes it only to
    /// reserve seal budget.
    admin: tokio::sync::Mutex<()>,
    /// Following other nodes' catalog changes on a shared store.
    cluster: cluster::ClusterState,
    /// Keys and keystore: the root-key backend, the DEK cache, the import tokens.
    keys: keyring::Keyring,
    /// Databases and records: the gate, database locks, seal budgets, free space, limits.
    records: record_state::RecordState,
    /// Backups: the backup target and what is known of its objects.
    backups: backups::Backups,
    /// Jobs: rotation progress, token last uses, instance-wide key policies.
    jobs: jobs::JobState,
    /// Audit: the activity log and this instance's CRNs.
    activity: activity::Activity,
}

impl Vault {
    /// Opens the data dir (creating it, the master key and the keystore on first start).
    /// Must run inside a tokio runtime (it starts the flusher task).
    pub fn open(config: &Config) -> Result<Self, ServiceError> {
        let data_dir = &config.data_dir;
        // Checked and opened in this order so that a refusal creates nothing: the data dir's
        // permissions and the master key first, then the catalog against the keystore file,
        // and only then the keystore (which creates a master key on first start).
        data_dir::prepare(config)?;
        // The embedded store creates its own directory (after migrating an earlier sled store).
        let store_dir = crate::store::fjall_store::migrate::Layout::of(data_dir).fjall;
        let store = crate::store::open(config, data_dir).map_err(|source| {
            if config.store.backend != "postgres" {
                DataDirError::Store {
                    path: store_dir.display().to_string(),
                    source,
                }
                .into()
            } else {
                ServiceError::Store(source)
            }
        })?;
        let keystore = {
            let (catalog, _) = Catalog::load_versioned(store.as_ref())?;
            data_dir::check_keystore_file(config, &catalog)?;
            let keystore = crate::keystore::open_backend(config)?;
            data_dir::check_keystore_holds_catalog_keys(keystore.as_ref(), &catalog)?;
            keystore
        };
        let audit = audit::open_in(config, keystore.as_ref(), config.audit.data_plane_sync)?;
        let limits = Limits {
            max_record_size: config.limits.max_record_size,
            max_record_key: config.limits.max_record_key,
        };
        let mut vault = Self::with_parts(
            store,
            keystore,
            audit,
            config.backup_dir(),
            config.instance.clone(),
            limits,
            config.lifecycle.soft_delete_period,
        )?
        .with_dek_cache(config.cache.max_deks, config.cache.dek_ttl);
        vault.records.set_disk_space(DiskSpace::new(
            data_dir.clone(),
            config.limits.min_free_space,
        ));
        vault.backups = backups::Backups::new(
            crate::backup::target::from_config(config)?,
            config.backup.keep_after_purge,
        );
        vault.jobs.set_policy_defaults(policies::PolicyDefaults {
            provider_rotate_every_days: config.keys.rotate_every_days,
            dual_auth_delete: config.lifecycle.dual_auth_delete,
        });
        vault
            .keys
            .set_import_tokens(ImportTokens::new(import_settings(&config.keys)));
        Ok(vault)
    }

    /// Assembles a vault from backends (tests use this with temp dirs).
    pub fn with_parts(
        store: Arc<dyn Store>,
        keystore: Arc<dyn RootKeyBackend>,
        audit: AuditLog,
        backup_dir: std::path::PathBuf,
        instance_name: String,
        limits: Limits,
        soft_delete_period: Duration,
    ) -> Result<Self, ServiceError> {
        let (catalog, version) = Catalog::load_versioned(store.as_ref())?;
        let (mut catalog, instance) = Self::ensure_instance(store.as_ref(), catalog)?;
        catalog.instance_name = instance_name.clone();
        let flusher = GroupFlusher::start(Arc::clone(&store));
        Ok(Self {
            store,
            keys: keyring::Keyring::new(keystore),
            catalog: RwLock::new(catalog),
            backups: backups::Backups::new(
                Arc::new(crate::backup::target::local::LocalDirTarget::new(
                    backup_dir,
                )),
                Duration::ZERO,
            ),
            flusher,
            admin: tokio::sync::Mutex::new(()),
            cluster: cluster::ClusterState::at_version(version),
            activity: activity::Activity::new(audit, instance_name, instance.id),
            records: record_state::RecordState::new(limits, soft_delete_period),
            jobs: jobs::JobState::default(),
        })
    }

    /// The instance identity, created at first start. On a shared store, under the cluster
    /// admin lock and after a reload, so that nodes starting together agree on one.
    fn ensure_instance(
        store: &dyn Store,
        catalog: Catalog,
    ) -> Result<(Catalog, InstanceRecord), ServiceError> {
        if let Some(instance) = catalog.instance.clone() {
            return Ok((catalog, instance));
        }
        let _cluster = store.lock(crate::store::ClusterLockName::Admin)?;
        let (mut catalog, _) = Catalog::load_versioned(store)?;
        if let Some(instance) = catalog.instance.clone() {
            return Ok((catalog, instance));
        }
        let instance = InstanceRecord {
            id: Uuid::new_v4(),
            created_at: now_rfc3339(),
        };
        let change = CatalogChange::PutInstance(instance.clone());
        store.catalog_apply(vec![change.to_op()])?;
        store.flush()?;
        catalog::apply(&mut catalog, &change);
        Ok((catalog, instance))
    }

    /// The keystore backend's description (for start-up logs).
    pub fn keystore_info(&self) -> crate::keystore::BackendInfo {
        self.keys.backend().describe()
    }

    fn read_catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        // Every catalog mutation is a set of map inserts done after the durable write, so a
        // panic elsewhere cannot leave it half-changed: a poisoned lock is still consistent.
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_catalog(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes catalog changes atomically, waits until they are durable, then applies the same
    /// changes to the in-memory catalog (and its caches). A failed write changes nothing in
    /// memory; callers hold the admin lock, so no other change interleaves.
    async fn commit(&self, changes: Vec<CatalogChange>) -> Result<(), ServiceError> {
        let ops: Vec<CatalogOp> = changes.iter().map(CatalogChange::to_op).collect();
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.catalog_apply(ops))
            .await
            .map_err(|e| ServiceError::TaskFailed(e.to_string()))??;
        self.flusher.durable().await?;
        self.apply_changes(&changes);
        Ok(())
    }

    /// Applies changes already in the store (committed here or by another node) to the
    /// in-memory catalog, then drops what they made stale in the caches.
    fn apply_changes(&self, changes: &[CatalogChange]) {
        let effects: Vec<catalog::Effect> = {
            let mut catalog = self.write_catalog();
            changes
                .iter()
                .filter_map(|change| catalog::apply(&mut catalog, change))
                .collect()
        };
        for effect in effects {
            match effect {
                catalog::Effect::KeyUnusable(key) => {
                    self.keys.deks().purge_root_key(key);
                }
                catalog::Effect::Database { id, unusable } => {
                    self.records.seal_budgets().remove(id);
                    if unusable {
                        self.keys.deks().purge_database(id);
                    }
                }
            }
        }
    }

    /// The CRN to log for `reference` when a request failed before resolving it: the key or
    /// database it names, else the reference itself.
    fn reference_crn(&self, reference: &str) -> String {
        self.target_crn(reference, &Err(&ServiceError::NotFound(String::new())))
    }

    /// `crn:v1:envault:local:a/<instance>:<instance-id>:<kind>:<id>`.
    pub fn crn(&self, kind: &str, id: &Uuid) -> String {
        self.activity.crn(kind, id)
    }

    /// [`Vault::crn`] for resources whose ids are not UUIDs (tokens, authorizations).
    pub fn crn_named(&self, kind: &str, id: &str) -> String {
        self.activity.crn_named(kind, id)
    }

    /// Every activity-log target is a CRN: a reference (name, id) that names a resource becomes
    /// its CRN; one that names nothing (a failed creation, a foreign CRN, a denied route) is
    /// logged against this instance's CRN (`…:<instance-id>::`), the reference kept in the
    /// details as `reference`.
    fn audit_target(&self, target: &str) -> (String, Option<String>) {
        if target.starts_with(&self.activity.own_prefix()) {
            return (target.to_string(), None);
        }
        let resolved = {
            let catalog = self.read_catalog();
            if let Some(key) = catalog.find_key(target) {
                Some(self.crn("key", &key.id))
            } else if let Some(db) = catalog.find_database(target) {
                Some(self.crn("database", &db.id))
            } else if let Some(id) = Uuid::parse_str(target)
                .ok()
                .filter(|id| catalog.backups.contains_key(id))
            {
                Some(self.crn("backup", &id))
            } else if catalog.authorizations.contains_key(target) {
                Some(self.crn_named("authorization", target))
            } else if catalog.tokens_by_hash.values().any(|t| t.id == target) {
                Some(self.crn_named("token", target))
            } else {
                None
            }
        };
        match resolved {
            Some(crn) => (crn, None),
            None => (self.activity.instance_crn(), Some(target.to_string())),
        }
    }

    /// Appends an event, its target made a CRN first ([`Vault::audit_target`]).
    pub(crate) fn audit_append(
        &self,
        who: &Principal,
        action: Action,
        target: &str,
        outcome: &str,
        reason: Option<String>,
        details: Option<serde_json::Value>,
    ) -> std::io::Result<String> {
        let (target, reference) = self.audit_target(target);
        self.activity
            .append(who, action, &target, reference, outcome, reason, details)
    }

    /// Appends the outcome of `action` on `target` to the activity log and passes `result`
    /// through ([`activity::Activity::record`]), the target made a CRN first.
    pub(crate) fn audited<T>(
        &self,
        who: &Principal,
        action: Action,
        target: &str,
        result: Result<T, ServiceError>,
        details: Option<serde_json::Value>,
    ) -> Result<T, ServiceError> {
        self.activity
            .record(who, action, self.audit_target(target), result, details)
    }

    /// Logs a denied request only (record traffic is not logged when it succeeds).
    pub(crate) fn audit_denial<T>(
        &self,
        who: &Principal,
        action: Action,
        target: &str,
        result: Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        match &result {
            Err(err) if err.is_denial() => self.audited(who, action, target, result, None),
            _ => result,
        }
    }

    /// The activity log.
    pub fn audit_log(&self) -> &AuditLog {
        self.activity.log()
    }

    /// Makes everything written so far durable (used at shutdown).
    pub async fn flush(&self) -> Result<(), ServiceError> {
        self.flusher.durable().await
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.records.limits()
    }

    /// Number of DEKs currently unwrapped in memory.
    pub fn cached_dek_count(&self) -> usize {
        self.keys.deks().len()
    }

    /// Size and counters of the DEK cache (`GET /v1/health`).
    pub fn dek_cache_stats(&self) -> crate::api::DekCacheStats {
        self.keys.deks().stats()
    }

    /// The store's value-log counters, when it has one (`GET /v1/health`).
    pub fn value_log_stats(&self) -> Option<crate::api::ValueLogStats> {
        self.store.value_log_stats()
    }

    /// Replaces the (still empty) DEK cache by one with the configured cap and lifetime.
    pub fn with_dek_cache(mut self, max_deks: usize, ttl: Option<Duration>) -> Self {
        self.keys.set_dek_cache(DekCache::new(max_deks, ttl));
        self
    }
}

/// Current time, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// A Unix time, RFC 3339 UTC (empty if out of range).
pub(crate) fn unix_to_rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Names of keys and databases: 1–128 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
/// This rules out `/`, `..`, NUL, control characters and anything that needs URL escaping.
pub fn validate_name(kind: &str, name: &str) -> Result<(), ServiceError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(ok_char)
        && !name.starts_with(['.', '-'])
        && Uuid::parse_str(name).is_err();
    if valid {
        Ok(())
    } else {
        Err(ServiceError::BadRequest(format!(
            "invalid {kind} name {name:?}: use 1-128 characters from A-Z a-z 0-9 . _ -, not starting with . or -, and not a UUID"
        )))
    }
}
