//! Many record operations of one database in one request (`POST …/records:batch`).
//!
//! Each request over the socket pays a round trip, HTTP framing and, for writes, a wait for the
//! group commit. A batch pays them once for up to [`MAX_BATCH_OPS`] operations. It is not a
//! transaction: operations run in order and each succeeds or fails on its own, like Vault's
//! `batch_input`. What holds for the whole batch:
//! - it is checked before anything runs: the token, the database's state, every record key and
//!   every value's size. Bad input fails the whole batch and changes nothing;
//! - the answer comes once every write in it is durable (one flush for the batch), so a
//!   reported success is acknowledged exactly like a single `PUT`.

use crate::service::Action;
use uuid::Uuid;

use super::{Principal, ServiceError, Vault};

/// Most operations in one batch.
pub const MAX_BATCH_OPS: usize = 1000;

/// One operation of a batch.
#[derive(Debug)]
pub enum BatchOp {
    /// Write `value` under `key`.
    Put {
        /// Record key.
        key: String,
        /// Plaintext value.
        value: Vec<u8>,
    },
    /// Read `key`.
    Get {
        /// Record key.
        key: String,
    },
    /// Remove `key`.
    Delete {
        /// Record key.
        key: String,
    },
}

impl BatchOp {
    fn key(&self) -> &str {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Get { key } | BatchOp::Delete { key } => key,
        }
    }
}

/// What one operation did.
#[derive(Debug)]
pub enum BatchOutcome {
    /// The put is durable.
    Written,
    /// The delete is durable.
    Deleted,
    /// The value read.
    Value(Vec<u8>),
    /// This operation failed; the others are unaffected.
    Failed(ServiceError),
}

impl Vault {
    /// Runs a batch of record operations on one database. Denials are logged.
    pub async fn record_batch(
        &self,
        who: &Principal,
        database: &str,
        ops: Vec<BatchOp>,
    ) -> Result<Vec<BatchOutcome>, ServiceError> {
        let result: Result<Vec<BatchOutcome>, ServiceError> = async move {
            let _gate = self.records.gate().read().await;
            let db = self.usable_database(who, database)?;
            let written_bytes = self.validate_batch(&ops)?;
            let writes = ops.iter().any(|op| !matches!(op, BatchOp::Get { .. }));
            let lock = self.database_lock(db);
            // Writers share the lock; a backup takes it exclusively for its snapshot.
            let _writing = if writes {
                Some(lock.read().await)
            } else {
                None
            };
            if written_bytes > 0 {
                self.records.disk_space().ensure_room(written_bytes)?;
            }
            let mut outcomes = Vec::with_capacity(ops.len());
            // Reads stop adding values once the answer holds `max_record_size` bytes of them, so
            // a batch's answer is no bigger than the largest single GET.
            let mut read_budget = self.records.limits().max_record_size;
            for op in ops {
                outcomes.push(self.run_batch_op(db, op, &mut read_budget).await);
            }
            if writes {
                self.flusher.durable().await?;
            }
            Ok(outcomes)
        }
        .await;
        self.audit_denial(who, Action::RecordsBatch, database, result)
    }

    /// Checks the whole batch before any of it runs; returns the bytes its puts will write.
    fn validate_batch(&self, ops: &[BatchOp]) -> Result<u64, ServiceError> {
        if ops.is_empty() || ops.len() > MAX_BATCH_OPS {
            return Err(ServiceError::BadRequest(format!(
                "a batch holds 1 to {MAX_BATCH_OPS} operations, not {}",
                ops.len()
            )));
        }
        let mut written = 0u64;
        for (index, op) in ops.iter().enumerate() {
            self.validate_record_key(op.key())
                .map_err(|err| ServiceError::BadRequest(format!("operation {index}: {err}")))?;
            if let BatchOp::Put { key, value } = op {
                if value.len() > self.records.limits().max_record_size {
                    return Err(ServiceError::TooLarge(format!(
                        "operation {index}: record value exceeds {} bytes",
                        self.records.limits().max_record_size
                    )));
                }
                written += (key.len() + value.len()) as u64;
            }
        }
        Ok(written)
    }

    async fn run_batch_op(&self, db: Uuid, op: BatchOp, read_budget: &mut usize) -> BatchOutcome {
        let result = match op {
            BatchOp::Put { key, value } => self
                .seal_and_store(db, &key, &value)
                .await
                .map(|()| BatchOutcome::Written),
            BatchOp::Delete { key } => self
                .remove_record(db, &key)
                .await
                .map(|()| BatchOutcome::Deleted),
            BatchOp::Get { key } => match self.load_and_open(db, &key).await {
                Ok(value) if value.len() > *read_budget => Err(ServiceError::TooLarge(format!(
                    "the batch's answer would exceed {} bytes of values: read {key:?} \
                     with a later request",
                    self.records.limits().max_record_size
                ))),
                Ok(value) => {
                    *read_budget -= value.len();
                    Ok(BatchOutcome::Value(value))
                }
                Err(err) => Err(err),
            },
        };
        result.unwrap_or_else(BatchOutcome::Failed)
    }
}
