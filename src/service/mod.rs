//! The rules of DESIGN.md: root keys, databases, records, tokens. Route handlers call one
//! method here each; this layer owns state checks, durability and the DEK cache.

mod audit;
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
mod keys;
mod kms_v2;
mod lifecycle;
mod policies;
mod purge_backups;
mod purge_databases;
mod readiness;
mod record_batch;
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
pub use tokens::{CreateTokenRequest, NewToken, Principal, TokenInfo};
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

/// The daemon's state: catalog, keystore, store and caches.
pub struct Vault {
    store: Arc<dyn Store>,
    keystore: Arc<dyn RootKeyBackend>,
    /// Whether keystore calls may wait on a device or the network (see `keystore_call`).
    keystore_remote: bool,
    catalog: RwLock<Catalog>,
    deks: DekCache,
    seal_budgets: seal_budget::SealBudgets,
    database_locks: records::DatabaseLocks,
    /// Where backups are written (a local directory or an S3 bucket).
    backup_target: Arc<dyn crate::backup::target::BackupTarget>,
    /// Objects in a shared backup target that did not verify, by name and size, so that
    /// listing does not fetch them again.
    unadoptable_backups: std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
    rotations: rotation::RotationProgress,
    flusher: GroupFlusher,
    /// Serializes catalog mutations (create, delete, state changes) so each computes its
    /// change from a state no other mutation is changing. Record traffic never takes it.
    admin: tokio::sync::Mutex<()>,
    /// Following other nodes' catalog changes on a shared store.
    cluster: cluster::ClusterState,
    /// Record operations hold it shared for their whole duration, acknowledgement included;
    /// disable, shred and purge take it exclusively. So once one of those returns, no write
    /// can still be acknowledged under the old state.
    gate: tokio::sync::RwLock<()>,
    audit: AuditLog,
    instance_name: String,
    instance_id: Uuid,
    limits: Limits,
    soft_delete_period: Duration,
    /// How long backups of a purged database are kept (`[backup] keep_after_purge`).
    keep_after_purge: Duration,
    /// The data dir's free-space floor, checked before record writes.
    disk_space: DiskSpace,
    /// Token last uses not yet persisted.
    token_use: token_lifecycle::TokenUse,
    /// Instance-wide key policies (`[keys] rotate_every`, `[lifecycle] dual_auth_delete`).
    policy_defaults: policies::PolicyDefaults,
    /// This node's import tokens (in memory only; `[keys] import_token_*`).
    import_tokens: import_tokens::ImportTokens,
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
        vault.disk_space = DiskSpace::new(data_dir.clone(), config.limits.min_free_space);
        vault.backup_target = crate::backup::target::from_config(config)?;
        vault.keep_after_purge = config.backup.keep_after_purge;
        vault.policy_defaults = policies::PolicyDefaults {
            provider_rotate_every_days: config.keys.rotate_every_days,
            dual_auth_delete: config.lifecycle.dual_auth_delete,
        };
        vault.import_tokens = ImportTokens::new(import_settings(&config.keys));
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
            keystore_remote: keystore.describe().remote,
            keystore,
            catalog: RwLock::new(catalog),
            deks: DekCache::default(),
            seal_budgets: seal_budget::SealBudgets::default(),
            database_locks: records::DatabaseLocks::default(),
            backup_target: Arc::new(crate::backup::target::local::LocalDirTarget::new(
                backup_dir,
            )),
            unadoptable_backups: Default::default(),
            rotations: rotation::RotationProgress::default(),
            flusher,
            admin: tokio::sync::Mutex::new(()),
            cluster: cluster::ClusterState::at_version(version),
            gate: tokio::sync::RwLock::new(()),
            audit,
            instance_name,
            instance_id: instance.id,
            limits,
            soft_delete_period,
            keep_after_purge: Duration::ZERO,
            disk_space: DiskSpace::unchecked(),
            token_use: Default::default(),
            policy_defaults: Default::default(),
            import_tokens: Default::default(),
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

    /// Runs a keystore call. A remote backend (HSM, transit server) may wait up to its timeout,
    /// so the call then leaves the async worker (`block_in_place`) and the runtime keeps
    /// serving other requests, including those answered from the DEK cache; the file backend is
    /// called inline. (Which backend it is does not matter here, only whether it may block.)
    fn keystore_call<T>(&self, call: impl FnOnce(&dyn RootKeyBackend) -> T) -> T {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if self.keystore_remote && multi_thread {
            tokio::task::block_in_place(|| call(self.keystore.as_ref()))
        } else {
            call(self.keystore.as_ref())
        }
    }

    /// The keystore backend's description (for start-up logs).
    pub fn keystore_info(&self) -> crate::keystore::BackendInfo {
        self.keystore.describe()
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
                    self.deks.purge_root_key(key);
                }
                catalog::Effect::Database { id, unusable } => {
                    self.seal_budgets.remove(id);
                    if unusable {
                        self.deks.purge_database(id);
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
        format!(
            "crn:v1:envault:local:a/{}:{}:{kind}:{id}",
            self.instance_name, self.instance_id
        )
    }

    /// [`Vault::crn`] for resources whose ids are not UUIDs (tokens, authorizations).
    pub fn crn_named(&self, kind: &str, id: &str) -> String {
        format!(
            "crn:v1:envault:local:a/{}:{}:{kind}:{id}",
            self.instance_name, self.instance_id
        )
    }

    /// Every activity-log target is a CRN: a reference (name, id) that names a resource becomes
    /// its CRN; one that names nothing (a failed creation, a foreign CRN, a denied route) is
    /// logged against this instance's CRN (`…:<instance-id>::`), the reference kept in the
    /// details as `reference`.
    fn audit_target(&self, target: &str) -> (String, Option<String>) {
        let own = format!(
            "crn:v1:envault:local:a/{}:{}:",
            self.instance_name, self.instance_id
        );
        if target.starts_with(&own) {
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
            None => (format!("{own}:"), Some(target.to_string())),
        }
    }

    /// Appends an event, its target made a CRN first ([`Vault::audit_target`]).
    pub(crate) fn audit_append(
        &self,
        who: &Principal,
        action: &str,
        target: &str,
        outcome: &str,
        reason: Option<String>,
        details: Option<serde_json::Value>,
    ) -> std::io::Result<String> {
        let (target, reference) = self.audit_target(target);
        let details = match reference {
            None => details,
            Some(reference) => Some(match details {
                Some(serde_json::Value::Object(mut map)) => {
                    map.insert("reference".into(), reference.into());
                    serde_json::Value::Object(map)
                }
                None => serde_json::json!({ "reference": reference }),
                Some(other) => serde_json::json!({ "reference": reference, "details": other }),
            }),
        };
        self.audit
            .append(who, action, &target, outcome, reason, details)
    }

    /// Appends the outcome of `action` on `target` to the activity log and passes `result`
    /// through. A success whose event cannot be written is reported as a storage failure:
    /// the log must never miss an action that was acknowledged.
    pub(crate) fn audited<T>(
        &self,
        who: &Principal,
        action: &str,
        target: &str,
        result: Result<T, ServiceError>,
        details: Option<serde_json::Value>,
    ) -> Result<T, ServiceError> {
        let (outcome, reason) = match &result {
            Ok(_) => ("success", None),
            Err(err) if err.is_denial() => ("denied", Some(err.code().to_string())),
            Err(err) => ("failure", Some(err.code().to_string())),
        };
        if let Err(err) = self.audit_append(who, action, target, outcome, reason, details) {
            tracing::error!(error = %err, action, "cannot append to the activity log");
            return Err(ServiceError::AuditLog(err.to_string()));
        }
        result
    }

    /// Logs a denied request only (record traffic is not logged when it succeeds).
    pub(crate) fn audit_denial<T>(
        &self,
        who: &Principal,
        action: &str,
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
        &self.audit
    }

    /// Makes everything written so far durable (used at shutdown).
    pub async fn flush(&self) -> Result<(), ServiceError> {
        self.flusher.durable().await
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Number of DEKs currently unwrapped in memory.
    pub fn cached_dek_count(&self) -> usize {
        self.deks.len()
    }

    /// Size and counters of the DEK cache (`GET /v1/health`).
    pub fn dek_cache_stats(&self) -> crate::api::DekCacheStats {
        self.deks.stats()
    }

    /// The store's value-log counters, when it has one (`GET /v1/health`).
    pub fn value_log_stats(&self) -> Option<crate::api::ValueLogStats> {
        self.store.value_log_stats()
    }

    /// Replaces the (still empty) DEK cache by one with the configured cap and lifetime.
    pub fn with_dek_cache(mut self, max_deks: usize, ttl: Option<Duration>) -> Self {
        self.deks = DekCache::new(max_deks, ttl);
        self
    }
}

/// Current time, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
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
