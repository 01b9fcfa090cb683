//! Cluster locks as PostgreSQL session-level advisory locks.
//!
//! The guard keeps the connection whose session holds the lock. Dropping the guard unlocks
//! (waiting for the server's answer, at most the store timeout, so the lock is free once the
//! drop returns) and returns the connection to the pool. If the holder dies (process killed, connection
//! lost, store dropped), its session ends and the server releases the lock by itself, so a
//! lock can never outlive its holder.
//!
//! Locks are not reentrant across calls: each `lock` uses its own session, so a thread that
//! already holds a lock and asks for it again waits for itself (until the lock wait expires).

use std::time::Duration;

use deadpool_postgres::Pool;

use super::conn::{sql_error, Conn};
use crate::store::{ClusterLockGuard, ClusterLockName, StoreError};

/// Advisory lock key of `name`. Keys share one 64-bit space with anything else using advisory
/// locks on the database, hence the "envault" tag in the constants.
pub(super) fn lock_key(name: ClusterLockName) -> i64 {
    const ADMIN: i64 = 0x656e_7661_756c_7401; // "envault" + 0x01
    const ROTATION: i64 = 0x656e_7661_756c_7402; // "envault" + 0x02
    match name {
        ClusterLockName::Admin => ADMIN,
        ClusterLockName::Rotation(id) => {
            let bytes = id.as_bytes();
            let mut first = [0u8; 8];
            first.copy_from_slice(&bytes[..8]);
            // v4 UUIDs are random in their first 8 bytes; the tag keeps the key off ADMIN.
            let key = i64::from_be_bytes(first) ^ ROTATION;
            if key == ADMIN {
                key ^ 1
            } else {
                key
            }
        }
    }
}

/// Waits for the lock, at most `wait`. On failure the connection is closed (an abandoned
/// `pg_advisory_lock` could still succeed later), so no lock is left behind.
pub(super) async fn acquire(
    pool: Pool,
    name: ClusterLockName,
    wait: Duration,
) -> Result<Conn, StoreError> {
    let conn = Conn::get(&pool).await?;
    // Session-level locks survive the COMMIT; SET LOCAL only lifts this statement's limit.
    conn.batch_execute(&format!(
        "BEGIN; SET LOCAL statement_timeout = {}; SELECT pg_advisory_lock({}); COMMIT",
        wait.as_millis().max(1),
        lock_key(name)
    ))
    .await
    .map_err(|e| match sql_error(e) {
        StoreError::Unavailable(m) if m.contains("statement timeout") => StoreError::Unavailable(
            format!("cluster lock {name:?} still held by another node after {wait:?}"),
        ),
        other => other,
    })?;
    Ok(conn)
}

/// Takes the lock if free; `None` (and the connection back to the pool) if another session
/// holds it.
pub(super) async fn try_acquire(
    pool: Pool,
    name: ClusterLockName,
) -> Result<Option<Conn>, StoreError> {
    let conn = Conn::get(&pool).await?;
    let stmt = conn
        .prepare_cached("SELECT pg_try_advisory_lock($1)")
        .await
        .map_err(sql_error)?;
    let taken: bool = conn
        .query_one(&stmt, &[&lock_key(name)])
        .await
        .map_err(sql_error)?
        .get(0);
    if taken {
        Ok(Some(conn))
    } else {
        conn.done();
        Ok(None)
    }
}

/// A held cluster lock.
pub(super) struct PgLock {
    conn: Option<Conn>,
    key: i64,
    handle: tokio::runtime::Handle,
    timeout: Duration,
}

impl PgLock {
    pub(super) fn new(
        conn: Conn,
        name: ClusterLockName,
        handle: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Self {
        Self {
            conn: Some(conn),
            key: lock_key(name),
            handle,
            timeout,
        }
    }
}

impl ClusterLockGuard for PgLock {}

impl Drop for PgLock {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let (key, timeout) = (self.key, self.timeout);
        let (released, wait) = std::sync::mpsc::sync_channel::<()>(1);
        // Unlock on the store's runtime. If unlocking fails or times out, `conn` is closed
        // instead of reused, which releases the lock too; if the store is gone, the spawned
        // task is dropped with the same effect.
        self.handle.spawn(async move {
            let unlocked = tokio::time::timeout(
                timeout,
                conn.query_one("SELECT pg_advisory_unlock($1)", &[&key]),
            )
            .await;
            if let Ok(Ok(row)) = unlocked {
                if row.get::<_, bool>(0) {
                    conn.done();
                }
            }
            let _ = released.send(());
        });
        // Wait (bounded) so the lock is free for others once the guard is gone: a node that
        // drops it and at once asks "is it free?" elsewhere gets a true answer.
        let _ = wait.recv_timeout(timeout + Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_by_name() {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let admin = lock_key(ClusterLockName::Admin);
        let ka = lock_key(ClusterLockName::Rotation(a));
        assert_ne!(admin, ka);
        assert_ne!(ka, lock_key(ClusterLockName::Rotation(b)));
        assert_eq!(ka, lock_key(ClusterLockName::Rotation(a)));
    }
}
