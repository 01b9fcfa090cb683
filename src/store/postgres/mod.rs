//! The shared backend: the catalog and the sealed records in PostgreSQL, so several
//! envault nodes can use one store.
//!
//! - Tables: see [`migrations`]. `catalog` keeps a tombstone (`value` NULL) for every removed
//!   entry and the catalog version of each entry's last change, so a node catches up on the
//!   other nodes' changes with one indexed query ([`Store::catalog_changes`]).
//! - The [`Store`] trait is synchronous and is called both from the daemon's async workers and
//!   from blocking threads. The pool and its connections therefore live on a small runtime of
//!   their own; each call spawns its work there and waits on a plain channel, which is legal on
//!   any thread (a `Handle::block_on` would panic inside the caller's runtime).
//! - Every call is bounded by the configured timeout: a server that is down or unreachable
//!   gives [`StoreError::Unavailable`] within it, never a hang. The pool drops closed
//!   connections and opens new ones, so a restarted server is used again without a restart of
//!   envault.
//! - The connection URL may hold a password: it never reaches a log or an error ([`redact`]).
//! - TLS follows `[store] ssl_mode` and `ssl_root_cert` (`tls.rs`); by default none to a
//!   local host, `verify-full` to any other.

mod catalog;
mod conn;
mod locks;
pub mod migrations;
mod records;
mod redact;
mod tls;

use std::future::Future;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::config::PgSslMode;

use super::{
    CatalogChanges, CatalogEntries, CatalogOp, ClusterLockGuard, ClusterLockName, Store,
    StoreError, StoreFuture,
};
use conn::Conn;
pub use redact::redact;

/// Worker threads of the store's own runtime: the work there is waiting on sockets.
const RUNTIME_THREADS: usize = 2;

/// How long [`Store::lock`] waits for a cluster lock, in multiples of the store timeout: lock
/// holders run whole catalog mutations (rotation batches, purges), not single statements.
const LOCK_WAIT_FACTOR: u32 = 12;

/// PostgreSQL-backed [`Store`], shared by every node pointed at the same database.
pub struct PostgresStore {
    pool: Pool,
    handle: tokio::runtime::Handle,
    /// Taken by `Drop`, which shuts it down without blocking (legal in async contexts too).
    runtime: Option<tokio::runtime::Runtime>,
    timeout: Duration,
    /// TLS in force (configured, or chosen by host).
    ssl_mode: PgSslMode,
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL or `key=value` pairs) with at most `pool_size`
    /// connections and applies the pending [`migrations`]. Every later call waits at most
    /// `timeout` for a connection and its statements. TLS as when `[store] ssl_mode` is
    /// empty: none to a Unix socket or loopback address, else `verify-full` against the
    /// system's CAs.
    pub fn connect(url: &str, pool_size: usize, timeout: Duration) -> Result<Self, StoreError> {
        Self::connect_with_tls(url, pool_size, timeout, None, None)
    }

    /// [`PostgresStore::connect`] with TLS as `[store] ssl_mode` (`None` = chosen by host)
    /// and `ssl_root_cert` (`None` = the system's CAs) configure it.
    pub fn connect_with_tls(
        url: &str,
        pool_size: usize,
        timeout: Duration,
        ssl_mode: Option<PgSslMode>,
        ssl_root_cert: Option<&std::path::Path>,
    ) -> Result<Self, StoreError> {
        tls::refuse_url_tls_params(url)?;
        let mut pg = tokio_postgres::Config::from_str(url).map_err(|_| {
            // The parser's message may quote the URL: only the redacted form is shown.
            StoreError::Backend(format!(
                "invalid store URL {:?}: not a PostgreSQL connection string",
                redact(url)
            ))
        })?;
        if pg.get_application_name().is_none() {
            pg.application_name("envault");
        }
        // The server cancels a statement that runs past the timeout (the client also stops
        // waiting, see `run`); a lock wait sets its own, longer limit. A commit returns only
        // once durable, whatever the server's default: writes are acknowledged on return.
        let ours = format!(
            "-c statement_timeout={} -c synchronous_commit=on",
            timeout.as_millis().max(1)
        );
        let options = match pg.get_options() {
            Some(user) if !user.is_empty() => format!("{user} {ours}"),
            _ => ours,
        };
        pg.options(options);
        pg.connect_timeout(timeout);
        pg.keepalives(true);
        let mode = ssl_mode.unwrap_or_else(|| PgSslMode::for_hosts(tls::all_local(&pg)));
        let (driver_mode, connector) = tls::connector(mode, ssl_root_cert)?;
        pg.ssl_mode(driver_mode);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("envault-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the store runtime: {e}")))?;
        let manager = Manager::from_config(
            pg,
            connector,
            ManagerConfig {
                // A closed connection (server restarted) is dropped at checkout and a new one
                // opened; a connection that died silently fails its next statement once.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let store = Self {
            pool,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            timeout,
            ssl_mode: mode,
        };
        let pool = store.pool.clone();
        // Another node may hold the migration lock for a while.
        store.run_for(timeout * 4, "migrations", async move {
            let mut conn = Conn::get(&pool).await?;
            migrations::apply(&mut conn).await?;
            conn.done();
            Ok(())
        })?;
        Ok(store)
    }

    /// The TLS mode in force: the configured one, or the one chosen by host.
    pub fn ssl_mode(&self) -> PgSslMode {
        self.ssl_mode
    }

    /// Runs `work` on the store's runtime and waits for it, at most the store timeout.
    fn run<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.run_for(self.timeout, what, work)
    }

    fn run_for<T, F>(&self, limit: Duration, what: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            // On expiry `work` is dropped, and with it its connection, which `Conn` then
            // closes instead of returning to the pool (its state is unknown).
            let result = tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "{what}: no answer from PostgreSQL within {limit:?}"
                )))
            });
            let _ = tx.send(result);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Backend(format!(
                "{what}: the store's runtime stopped"
            )))
        })
    }
}

impl PostgresStore {
    /// Like [`PostgresStore::run`], for async callers: the caller awaits the answer instead
    /// of blocking its thread, so a daemon worker serves other requests meanwhile.
    fn run_async<T, F>(&self, what: &'static str, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let limit = self.timeout;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.handle.spawn(async move {
            let result = tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "{what}: no answer from PostgreSQL within {limit:?}"
                )))
            });
            let _ = tx.send(result);
        });
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::Backend(format!(
                    "{what}: the store's runtime stopped"
                )))
            })
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.pool.close();
        // Tasks (connections, lock releases) are dropped; closing a connection makes the
        // server release its advisory locks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store for PostgresStore {
    fn catalog_apply(&self, ops: Vec<CatalogOp>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let pool = self.pool.clone();
        self.run("catalog apply", catalog::apply(pool, ops))
    }

    fn catalog_scan(&self, prefix: &[u8]) -> Result<CatalogEntries, StoreError> {
        let pool = self.pool.clone();
        self.run("catalog scan", catalog::scan(pool, prefix.to_vec()))
    }

    fn record_put(
        &self,
        database: &[u8; 16],
        key: &[u8],
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        self.run(
            "record put",
            records::put(pool, *database, key.to_vec(), sealed),
        )
    }

    fn record_get(&self, database: &[u8; 16], key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let pool = self.pool.clone();
        self.run("record get", records::get(pool, *database, key.to_vec()))
    }

    fn record_delete(&self, database: &[u8; 16], key: &[u8]) -> Result<bool, StoreError> {
        let pool = self.pool.clone();
        self.run(
            "record delete",
            records::delete(pool, *database, key.to_vec()),
        )
    }

    fn record_keys(
        &self,
        database: &[u8; 16],
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let pool = self.pool.clone();
        let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
        self.run(
            "record keys",
            records::keys(pool, *database, prefix, after, limit),
        )
    }

    fn record_page(
        &self,
        database: &[u8; 16],
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<CatalogEntries, StoreError> {
        let pool = self.pool.clone();
        let after = after.map(<[u8]>::to_vec);
        self.run(
            "record page",
            records::page(pool, *database, after, limit, max_bytes),
        )
    }

    fn record_count(&self, database: &[u8; 16]) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        self.run("record count", records::count(pool, *database))
    }

    fn records_purge(&self, database: &[u8; 16]) -> Result<u64, StoreError> {
        // In bounded batches, each its own transaction and within the timeout, so purging a
        // huge database never hits the statement limit; a failure leaves a partial purge that
        // the next purge finishes.
        let mut removed = 0;
        loop {
            let pool = self.pool.clone();
            let n = self.run("records purge", records::purge_batch(pool, *database))?;
            if n == 0 {
                return Ok(removed);
            }
            removed += n;
        }
    }

    /// Every statement commits before it returns (`synchronous_commit` stays on), so there
    /// is nothing left to flush.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn record_get_async(
        &self,
        database: [u8; 16],
        key: Vec<u8>,
    ) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.run_async("record get", records::get(self.pool.clone(), database, key))
    }

    fn record_put_async(
        &self,
        database: [u8; 16],
        key: Vec<u8>,
        sealed: Vec<u8>,
    ) -> StoreFuture<'_, ()> {
        self.run_async(
            "record put",
            records::put(self.pool.clone(), database, key, sealed),
        )
    }

    fn record_delete_async(&self, database: [u8; 16], key: Vec<u8>) -> StoreFuture<'_, bool> {
        self.run_async(
            "record delete",
            records::delete(self.pool.clone(), database, key),
        )
    }

    fn catalog_changes_async(&self, since: u64) -> StoreFuture<'_, CatalogChanges> {
        self.run_async(
            "catalog changes",
            catalog::changes(self.pool.clone(), since),
        )
    }

    fn catalog_changes(&self, since: u64) -> Result<CatalogChanges, StoreError> {
        let pool = self.pool.clone();
        self.run("catalog changes", catalog::changes(pool, since))
    }

    fn lock(&self, name: ClusterLockName) -> Result<Box<dyn ClusterLockGuard>, StoreError> {
        let wait = self.timeout * LOCK_WAIT_FACTOR;
        let pool = self.pool.clone();
        let conn = self.run_for(
            wait + self.timeout,
            "cluster lock",
            locks::acquire(pool, name, wait),
        )?;
        Ok(Box::new(locks::PgLock::new(
            conn,
            name,
            self.handle.clone(),
            self.timeout,
        )))
    }

    fn try_lock(
        &self,
        name: ClusterLockName,
    ) -> Result<Option<Box<dyn ClusterLockGuard>>, StoreError> {
        let pool = self.pool.clone();
        let conn = self.run("cluster try-lock", locks::try_acquire(pool, name))?;
        Ok(conn.map(|conn| {
            Box::new(locks::PgLock::new(
                conn,
                name,
                self.handle.clone(),
                self.timeout,
            )) as Box<dyn ClusterLockGuard>
        }))
    }
}
