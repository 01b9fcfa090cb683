//! Several envault nodes over one shared store.
//!
//! Each node keeps the whole catalog in memory (request checks never wait on the database),
//! so what a node changes must reach the others before it matters. Two rules give the
//! guarantee "a change is in force on every node for every request that starts after the
//! changing call returned":
//!
//! 1. **Every catalog mutation runs under the cluster admin lock** ([`Vault::admin`]): the local
//!    mutex, then the store's cluster-wide lock (a PostgreSQL advisory lock), then a catalog
//!    refresh, so the change is computed from the latest state and mutations of different
//!    nodes are serialized. The store bumps the catalog's version in the same transaction.
//! 2. **Every request first asks the store for the catalog's version** ([`Vault::refresh_catalog`],
//!    one indexed single-row query) and, when it moved, applies the changed entries before
//!    authenticating. A call on node A returns only after its commit; any request starting on
//!    node B afterwards reads a version that includes it.
//!
//! LISTEN/NOTIFY would only make rule 2 cheaper (skip the query when nothing was announced), but
//! a notification can arrive after a request has started, so it cannot give the guarantee on
//! its own; the per-request version check does. The embedded store is never shared and skips
//! all of this.
//!
//! While this node holds the admin lock, no other node can change the catalog, and this node's
//! own changes are applied to memory by its commits (`Vault::commit`, with the same
//! [`catalog::apply`] that applies other nodes' changes); request refreshes are skipped
//! then, which also keeps a slow refresh from overwriting a newer local change with an older
//! fetched one (refreshes and the admin lock's own refresh are serialized by `refresh`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use uuid::Uuid;

use super::catalog::{self, Catalog, CatalogChange};
use super::{ServiceError, Vault};
use crate::store::{ClusterLockGuard, ClusterLockName, RotationJob, Store};

/// Per-node state of the shared catalog.
#[derive(Default)]
pub(super) struct ClusterState {
    /// The catalog version this node's memory reflects.
    version: AtomicU64,
    /// Serializes catalog refreshes (and the admin lock's refresh) so they apply in order.
    refresh: tokio::sync::Mutex<()>,
    /// Whether this node holds the admin lock (so the catalog cannot change elsewhere).
    admin_held: AtomicBool,
    /// Rotation jobs this node has claimed, with the claim (released when the job ends).
    claims: std::sync::Mutex<std::collections::HashMap<Uuid, Box<dyn ClusterLockGuard>>>,
}

impl ClusterState {
    /// State of a node whose catalog was loaded at `version`.
    pub(super) fn at_version(version: u64) -> Self {
        Self {
            version: AtomicU64::new(version),
            ..Self::default()
        }
    }
}

/// Held while this node may mutate the catalog: the in-process admin mutex and, on a shared
/// store, the cluster-wide lock. Field order is drop order: the cluster lock goes first.
pub(crate) struct AdminGuard<'a> {
    _cluster: Box<dyn ClusterLockGuard>,
    _local: tokio::sync::MutexGuard<'a, ()>,
    held: &'a AtomicBool,
}

impl Drop for AdminGuard<'_> {
    fn drop(&mut self) {
        self.held.store(false, Ordering::Release);
    }
}

impl Vault {
    /// Takes the admin lock (see the module doc); on a shared store, also the cluster lock,
    /// then brings the catalog up to date.
    pub(crate) async fn admin(&self) -> Result<AdminGuard<'_>, ServiceError> {
        let local = self.admin.lock().await;
        let cluster = if self.store.is_shared() {
            let store = Arc::clone(&self.store);
            tokio::task::spawn_blocking(move || store.lock(ClusterLockName::Admin))
                .await
                .map_err(|e| ServiceError::TaskFailed(e.to_string()))??
        } else {
            Box::new(crate::store::LocalLock)
        };
        if self.store.is_shared() {
            let _refreshing = self.cluster.refresh.lock().await;
            self.pull_catalog_changes()?;
            // Set before `refresh` is released, so that no request refresh can start between
            // this one and this node's own commits (it could apply an older fetched value
            // over a newer local one).
            self.cluster.admin_held.store(true, Ordering::Release);
        }
        Ok(AdminGuard {
            _cluster: cluster,
            _local: local,
            held: &self.cluster.admin_held,
        })
    }

    /// Applies catalog changes other nodes made since this node last looked; called before
    /// every request is authenticated. Free on the embedded store.
    pub async fn refresh_catalog(&self) -> Result<(), ServiceError> {
        if !self.store.is_shared() || self.cluster.admin_held.load(Ordering::Acquire) {
            return Ok(());
        }
        let since = self.cluster.version.load(Ordering::Acquire);
        let probe = self.store.catalog_changes_async(since).await?;
        if probe.version == since {
            return Ok(());
        }
        let _refreshing = self.cluster.refresh.lock().await;
        if self.cluster.admin_held.load(Ordering::Acquire) {
            return Ok(());
        }
        self.pull_catalog_changes()
    }

    /// Fetches and applies every change after this node's version. Caller holds `refresh`.
    fn pull_catalog_changes(&self) -> Result<(), ServiceError> {
        let since = self.cluster.version.load(Ordering::Acquire);
        let changes = self.store_call(|store| store.catalog_changes(since))?;
        if changes.version == since {
            return Ok(());
        }
        if changes.version < since {
            return self.reload_catalog();
        }
        let mut decoded = Vec::with_capacity(changes.entries.len());
        for (key, value) in &changes.entries {
            decoded.extend(CatalogChange::decode(key, value.as_deref())?);
        }
        self.apply_changes(&decoded);
        tracing::debug!(
            from = since,
            to = changes.version,
            entries = changes.entries.len(),
            "catalog refreshed"
        );
        self.cluster
            .version
            .store(changes.version, Ordering::Release);
        Ok(())
    }

    /// The store's catalog version went back: the database was replaced (restored from a
    /// dump, say). Nothing this node remembers can be trusted: reload everything and drop
    /// every cached DEK and seal budget.
    fn reload_catalog(&self) -> Result<(), ServiceError> {
        tracing::warn!("the store's catalog version went back; reloading the whole catalog");
        let (mut catalog, version) = self.store_call(|store| Catalog::load_versioned(store))?;
        let databases: Vec<Uuid> = {
            let mut current = self.write_catalog();
            catalog.instance_name = std::mem::take(&mut current.instance_name);
            let mut ids: Vec<Uuid> = current.databases.keys().copied().collect();
            ids.extend(catalog.databases.keys().copied());
            *current = catalog;
            ids
        };
        for id in databases {
            self.keys.deks().purge_database(id);
            self.records.seal_budgets().remove(id);
        }
        self.cluster.version.store(version, Ordering::Release);
        Ok(())
    }

    /// Runs a store call. A shared store waits on the network, so the call then leaves the
    /// async worker (`block_in_place`), like remote keystore calls.
    pub(super) fn store_call<T>(&self, call: impl FnOnce(&dyn Store) -> T) -> T {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if self.store.is_shared() && multi_thread {
            tokio::task::block_in_place(|| call(self.store.as_ref()))
        } else {
            call(self.store.as_ref())
        }
    }

    /// Claims the run of `key`'s rotation job for this node. `false` if another node (or this
    /// one) already runs it. A node that dies loses its claims with its database session.
    pub(super) fn claim_rotation(&self, key: Uuid) -> Result<bool, ServiceError> {
        let mut claims = self
            .cluster
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if claims.contains_key(&key) {
            return Ok(false);
        }
        match self.store_call(|store| store.try_lock(ClusterLockName::Rotation(key)))? {
            Some(guard) => {
                claims.insert(key, guard);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Releases a claim taken by [`Vault::claim_rotation`].
    pub(super) fn release_rotation(&self, key: Uuid) {
        self.cluster
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// Unfinished rotation jobs nobody runs, now claimed by this node: at start, and
    /// periodically on a shared store to resume the jobs of a node that died.
    pub fn claim_orphan_rotations(&self) -> Vec<RotationJob> {
        let jobs: Vec<RotationJob> = self.read_catalog().jobs.values().cloned().collect();
        jobs.into_iter()
            .filter(|job| match self.claim_rotation(job.key_id) {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot claim a rotation job; retrying later");
                    false
                }
            })
            .collect()
    }

    /// Whether other nodes share this node's store.
    pub fn store_is_shared(&self) -> bool {
        self.store.is_shared()
    }
}

impl Catalog {
    /// Loads the catalog and the version it reflects. A shared store is read through its change
    /// feed from version 0, so the entries and the version come from one snapshot.
    pub(super) fn load_versioned(store: &dyn Store) -> Result<(Self, u64), ServiceError> {
        if !store.is_shared() {
            return Ok((Catalog::load(store)?, 0));
        }
        let changes = store.catalog_changes(0)?;
        let mut catalog = Catalog::default();
        for (key, value) in &changes.entries {
            if let Some(change) = CatalogChange::decode(key, value.as_deref())? {
                catalog::apply(&mut catalog, &change);
            }
        }
        Ok((catalog, changes.version))
    }
}
