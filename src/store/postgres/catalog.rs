//! The catalog: atomic batches that each bump the catalog version, prefix scans, and the
//! change feed other nodes follow.

use deadpool_postgres::Pool;
use futures::future::try_join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::IsolationLevel;

use super::conn::{sql_error, Conn};
use crate::store::{CatalogChanges, CatalogEntries, CatalogOp, StoreError};

const BUMP_VERSION: &str =
    "UPDATE catalog_version SET version = version + 1 WHERE id = 1 RETURNING version";
const CURRENT_VERSION: &str = "SELECT version FROM catalog_version WHERE id = 1";
/// A put, or with a NULL value the tombstone of a delete.
const UPSERT: &str = "INSERT INTO catalog (key, value, version) VALUES ($1, $2, $3) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version";
const SCAN_RANGE: &str = "SELECT key, value FROM catalog \
     WHERE key >= $1 AND key < $2 AND value IS NOT NULL ORDER BY key";
const SCAN_FROM: &str =
    "SELECT key, value FROM catalog WHERE key >= $1 AND value IS NOT NULL ORDER BY key";
const CHANGES: &str = "SELECT key, value FROM catalog WHERE version > $1 ORDER BY version, key";

/// The smallest byte string greater than every string starting with `prefix`; `None` when
/// there is none (empty or all-0xFF prefix: the range is unbounded above).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Applies `ops` in one transaction under a new catalog version.
pub(super) async fn apply(pool: Pool, ops: Vec<CatalogOp>) -> Result<(), StoreError> {
    let mut conn = Conn::get(&pool).await?;
    let tx = conn.transaction().await.map_err(sql_error)?;
    // The row lock taken here is held to commit: concurrent batches (from any node) commit in
    // version order, so a reader that sees version V also sees every change up to V.
    let bump = tx.prepare_cached(BUMP_VERSION).await.map_err(sql_error)?;
    let version: i64 = tx.query_one(&bump, &[]).await.map_err(sql_error)?.get(0);
    let upsert = tx.prepare_cached(UPSERT).await.map_err(sql_error)?;
    let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = ops
        .into_iter()
        .map(|op| match op {
            CatalogOp::Put(key, value) => (key.0, Some(value)),
            CatalogOp::Delete(key) => (key.0, None),
        })
        .collect();
    let params: Vec<[&(dyn ToSql + Sync); 3]> = rows
        .iter()
        .map(|(key, value)| [key as &(dyn ToSql + Sync), value, &version])
        .collect();
    // Pipelined in order on the one connection: a later op on the same key wins.
    try_join_all(params.iter().map(|p| tx.execute(&upsert, p)))
        .await
        .map_err(sql_error)?;
    tx.commit().await.map_err(sql_error)?;
    conn.done();
    Ok(())
}

/// Live entries whose key starts with `prefix`, in key order.
pub(super) async fn scan(pool: Pool, prefix: Vec<u8>) -> Result<CatalogEntries, StoreError> {
    let conn = Conn::get(&pool).await?;
    let rows = match prefix_end(&prefix) {
        Some(end) => {
            let stmt = conn.prepare_cached(SCAN_RANGE).await.map_err(sql_error)?;
            conn.query(&stmt, &[&prefix, &end]).await
        }
        None => {
            let stmt = conn.prepare_cached(SCAN_FROM).await.map_err(sql_error)?;
            conn.query(&stmt, &[&prefix]).await
        }
    }
    .map_err(sql_error)?;
    conn.done();
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The current version and every entry changed after `since`, tombstones as `None`.
pub(super) async fn changes(pool: Pool, since: u64) -> Result<CatalogChanges, StoreError> {
    let since = i64::try_from(since).unwrap_or(i64::MAX);
    let mut conn = Conn::get(&pool).await?;
    // Called before every request: one cheap prepared statement when nothing changed.
    let current_version = conn
        .prepare_cached(CURRENT_VERSION)
        .await
        .map_err(sql_error)?;
    let current: i64 = conn
        .query_one(&current_version, &[])
        .await
        .map_err(sql_error)?
        .get(0);
    if current <= since {
        conn.done();
        return Ok(CatalogChanges {
            version: current as u64,
            entries: Vec::new(),
        });
    }
    // One snapshot for the version and the rows, so they agree.
    let tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(sql_error)?;
    let version: i64 = tx
        .query_one(&current_version, &[])
        .await
        .map_err(sql_error)?
        .get(0);
    let stmt = tx.prepare_cached(CHANGES).await.map_err(sql_error)?;
    let rows = tx.query(&stmt, &[&since]).await.map_err(sql_error)?;
    tx.commit().await.map_err(sql_error)?;
    conn.done();
    Ok(CatalogChanges {
        version: version as u64,
        entries: rows.iter().map(|row| (row.get(0), row.get(1))).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"db/"), Some(b"db0".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
