//! Versioned schema migrations, applied at connect in one transaction that holds a
//! transaction-level advisory lock, so nodes starting together apply each one exactly once.
//!
//! Never edit a released migration: append a new one.

use super::conn::{sql_error, Conn};
use crate::store::StoreError;

/// Advisory lock key serializing migrations ("envault" + 0x00).
const MIGRATION_LOCK: i64 = 0x656e_7661_756c_7400;

/// (version, SQL), applied in order.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
    -- Catalog entries (codec-encoded, opaque here). value NULL is the tombstone of a removed
    -- entry; version is the catalog version of the entry's last change (the change feed).
    CREATE TABLE catalog (
        key bytea PRIMARY KEY,
        value bytea NULL,
        version bigint NOT NULL
    );
    CREATE INDEX catalog_by_version ON catalog (version);
    -- One row: bumped by every catalog batch, whose row lock also serializes catalog writers,
    -- so versions commit in order.
    CREATE TABLE catalog_version (
        id integer PRIMARY KEY CHECK (id = 1),
        version bigint NOT NULL
    );
    INSERT INTO catalog_version (id, version) VALUES (1, 0);
    -- Sealed records (ciphertext envelopes) by database id and record key.
    CREATE TABLE records (
        database bytea NOT NULL,
        key bytea NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (database, key)
    );
    -- Ciphertext and wrapped keys do not compress: store them out of line uncompressed
    -- rather than trying.
    ALTER TABLE records ALTER COLUMN value SET STORAGE EXTERNAL;
    ALTER TABLE catalog ALTER COLUMN value SET STORAGE EXTERNAL;
    ",
)];

/// Brings the schema up to date; refuses a schema newer than this build knows.
pub(super) async fn apply(conn: &mut Conn) -> Result<(), StoreError> {
    let tx = conn.transaction().await.map_err(sql_error)?;
    // Statement time limits do not apply to schema changes, which may wait for another node.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = 0; SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(sql_error)?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(sql_error)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let newest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if let Some(v) = applied.iter().find(|v| **v > newest) {
        return Err(StoreError::Backend(format!(
            "the PostgreSQL schema is at version {v}, newer than this envault knows ({newest}): \
             upgrade envault"
        )));
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(sql_error)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(sql_error)?;
        tracing::info!(version, "applied PostgreSQL schema migration");
    }
    tx.commit().await.map_err(sql_error)
}
