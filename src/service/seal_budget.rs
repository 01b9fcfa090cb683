//! Nonce budgets of DEK generations. Records use 96-bit random nonces, safe for 2^32 seals
//! per key, so each DEK generation seals at most [`MAX_SEALS_PER_GENERATION`] = 2^31 records
//! before a new generation starts. The count survives restarts through reservations: the
//! catalog stores how far the count may go (`seals_reserved`), raised in steps before use, and a
//! restart resumes from the reserved mark, never from a lower number.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use super::catalog::CatalogChange;
use super::{ServiceError, Vault};

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
    /// The generation to seal with, reserving more budget (or starting a generation) if due.
    pub(super) async fn seal_generation(&self, database: Uuid) -> Result<u32, ServiceError> {
        loop {
            if let Some(generation) = self.records.seal_budgets().take(database) {
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
            .records
            .seal_budgets()
            .get(database)
            .filter(|b| b.generation == db.generation)
            .unwrap_or(SealBudget {
                generation: db.generation,
                used: current.seals_reserved,
                reserved: current.seals_reserved,
            });
        if budget.used < budget.reserved && budget.used < MAX_SEALS_PER_GENERATION {
            self.records.seal_budgets().set(database, budget);
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
            self.records.seal_budgets().set(
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
        self.keys
            .deks()
            .insert(database, generation, root.id, cipher);
        self.records.seal_budgets().set(
            database,
            SealBudget {
                generation,
                used: 0,
                reserved: RESERVATION_STEP,
            },
        );
        Ok(())
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
            .records
            .seal_budgets()
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
        self.records.seal_budgets().set(
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
