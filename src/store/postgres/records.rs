//! Sealed records: `records(database, key) -> value`, with the same ordering and paging
//! semantics as the embedded store (byte order of keys, `after` exclusive).

use deadpool_postgres::Pool;

use super::catalog::prefix_end;
use super::conn::{sql_error, Conn};
use crate::store::{CatalogEntries, StoreError};

const PUT: &str = "INSERT INTO records (database, key, value) VALUES ($1, $2, $3) \
     ON CONFLICT (database, key) DO UPDATE SET value = EXCLUDED.value";
const GET: &str = "SELECT value FROM records WHERE database = $1 AND key = $2";
const DELETE: &str = "DELETE FROM records WHERE database = $1 AND key = $2";
const KEYS_RANGE: &str = "SELECT key FROM records \
     WHERE database = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT $4";
const KEYS_FROM: &str =
    "SELECT key FROM records WHERE database = $1 AND key >= $2 ORDER BY key LIMIT $3";
/// Rows in key order while the sizes of the rows before each stay under $4 (so at least one
/// row, however large). The window runs over the index scan under the LIMIT; only the rows
/// kept are sent, so a page's memory is bounded on both sides.
const PAGE: &str = "SELECT key, value FROM ( \
       SELECT key, value, \
              sum(octet_length(value)) OVER (ORDER BY key) - octet_length(value) AS before \
       FROM records WHERE database = $1 AND key >= $2 ORDER BY key LIMIT $3 \
     ) AS page WHERE before < $4 ORDER BY key";
const COUNT: &str = "SELECT count(*) FROM records WHERE database = $1";
const PURGE_BATCH: &str = "DELETE FROM records WHERE database = $1 AND key IN \
     (SELECT key FROM records WHERE database = $1 LIMIT 10000)";

/// The smallest key strictly after `after`: `after || 0x00`.
fn successor(after: &[u8]) -> Vec<u8> {
    let mut next = after.to_vec();
    next.push(0);
    next
}

fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn put(
    pool: Pool,
    database: [u8; 16],
    key: Vec<u8>,
    sealed: Vec<u8>,
) -> Result<(), StoreError> {
    let conn = Conn::get(&pool).await?;
    let stmt = conn.prepare_cached(PUT).await.map_err(sql_error)?;
    conn.execute(&stmt, &[&&database[..], &key, &sealed])
        .await
        .map_err(sql_error)?;
    conn.done();
    Ok(())
}

pub(super) async fn get(
    pool: Pool,
    database: [u8; 16],
    key: Vec<u8>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let conn = Conn::get(&pool).await?;
    let stmt = conn.prepare_cached(GET).await.map_err(sql_error)?;
    let row = conn
        .query_opt(&stmt, &[&&database[..], &key])
        .await
        .map_err(sql_error)?;
    conn.done();
    Ok(row.map(|row| row.get(0)))
}

pub(super) async fn delete(
    pool: Pool,
    database: [u8; 16],
    key: Vec<u8>,
) -> Result<bool, StoreError> {
    let conn = Conn::get(&pool).await?;
    let stmt = conn.prepare_cached(DELETE).await.map_err(sql_error)?;
    let n = conn
        .execute(&stmt, &[&&database[..], &key])
        .await
        .map_err(sql_error)?;
    conn.done();
    Ok(n > 0)
}

pub(super) async fn keys(
    pool: Pool,
    database: [u8; 16],
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    limit: usize,
) -> Result<Vec<Vec<u8>>, StoreError> {
    // Keys >= the greater of the prefix and after's successor, below the prefix's end.
    let start = match after.map(|a| successor(&a)) {
        Some(next) if next > prefix => next,
        _ => prefix.clone(),
    };
    let conn = Conn::get(&pool).await?;
    let limit = sql_limit(limit);
    let rows = match prefix_end(&prefix) {
        Some(end) => {
            let stmt = conn.prepare_cached(KEYS_RANGE).await.map_err(sql_error)?;
            conn.query(&stmt, &[&&database[..], &start, &end, &limit])
                .await
        }
        None => {
            let stmt = conn.prepare_cached(KEYS_FROM).await.map_err(sql_error)?;
            conn.query(&stmt, &[&&database[..], &start, &limit]).await
        }
    }
    .map_err(sql_error)?;
    conn.done();
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

pub(super) async fn page(
    pool: Pool,
    database: [u8; 16],
    after: Option<Vec<u8>>,
    limit: usize,
    max_bytes: usize,
) -> Result<CatalogEntries, StoreError> {
    let start = after.map(|a| successor(&a)).unwrap_or_default();
    let conn = Conn::get(&pool).await?;
    let stmt = conn.prepare_cached(PAGE).await.map_err(sql_error)?;
    let rows = conn
        .query(
            &stmt,
            &[
                &&database[..],
                &start,
                &sql_limit(limit),
                &sql_limit(max_bytes),
            ],
        )
        .await
        .map_err(sql_error)?;
    conn.done();
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub(super) async fn count(pool: Pool, database: [u8; 16]) -> Result<u64, StoreError> {
    let conn = Conn::get(&pool).await?;
    let stmt = conn.prepare_cached(COUNT).await.map_err(sql_error)?;
    let n: i64 = conn
        .query_one(&stmt, &[&&database[..]])
        .await
        .map_err(sql_error)?
        .get(0);
    conn.done();
    Ok(n.max(0) as u64)
}

/// Deletes up to 10 000 records of `database`; returns how many.
pub(super) async fn purge_batch(pool: Pool, database: [u8; 16]) -> Result<u64, StoreError> {
    let conn = Conn::get(&pool).await?;
    let stmt = conn.prepare_cached(PURGE_BATCH).await.map_err(sql_error)?;
    let n = conn
        .execute(&stmt, &[&&database[..]])
        .await
        .map_err(sql_error)?;
    conn.done();
    Ok(n)
}
