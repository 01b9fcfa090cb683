//! The databases part's own state: what record traffic and the state changes that race it
//! share. Record and database operations run on the facade (they read the catalog, open DEKs
//! through the keys part and log denials through the audit part).

use std::time::Duration;

use super::disk_space::DiskSpace;
use super::records::DatabaseLocks;
use super::seal_budget::SealBudgets;
use super::Limits;

/// The gate, the per-database locks, the seal budgets, the free-space floor and the limits.
pub(crate) struct RecordState {
    /// Record operations hold it shared for their whole duration, acknowledgement included;
    /// disable, shred and purge take it exclusively. So once one of those returns, no write
    /// can still be acknowledged under the old state.
    gate: tokio::sync::RwLock<()>,
    locks: DatabaseLocks,
    seal_budgets: SealBudgets,
    /// The data dir's free-space floor, checked before record writes.
    disk_space: DiskSpace,
    limits: Limits,
    soft_delete_period: Duration,
}

impl RecordState {
    pub(crate) fn new(limits: Limits, soft_delete_period: Duration) -> Self {
        Self {
            gate: tokio::sync::RwLock::new(()),
            locks: DatabaseLocks::default(),
            seal_budgets: SealBudgets::default(),
            disk_space: DiskSpace::unchecked(),
            limits,
            soft_delete_period,
        }
    }

    /// With the data dir's free-space floor checked before writes.
    pub(crate) fn set_disk_space(&mut self, disk_space: DiskSpace) {
        self.disk_space = disk_space;
    }

    /// The gate between record traffic (shared) and disable, shred and purge (exclusive).
    pub(crate) fn gate(&self) -> &tokio::sync::RwLock<()> {
        &self.gate
    }

    /// The per-database write locks.
    pub(crate) fn locks(&self) -> &DatabaseLocks {
        &self.locks
    }

    /// How many more records each database's DEK may seal.
    pub(crate) fn seal_budgets(&self) -> &SealBudgets {
        &self.seal_budgets
    }

    /// The free-space floor.
    pub(crate) fn disk_space(&self) -> &DiskSpace {
        &self.disk_space
    }

    /// Request-size limits.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// How long a deleted database can be restored.
    pub(crate) fn soft_delete_period(&self) -> Duration {
        self.soft_delete_period
    }
}
