//! The PostgreSQL store through the `Store` trait, against a real server started by
//! the test: catalog batches and change feed, record semantics identical to the embedded
//! store, cluster locks across store instances, migrations racing, and a server going down
//! and coming back under the same store instance.

#![cfg(feature = "external-suites")]

use crate::common::pg_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use envault::store::fjall_store::FjallStore;
use envault::store::postgres::PostgresStore;
use envault::store::{CatalogKey, CatalogOp, ClusterLockName, Store, StoreError};
use pg_support::{Postgres, PASSWORD};

const TIMEOUT: Duration = Duration::from_secs(2);

fn connect(url: &str) -> PostgresStore {
    PostgresStore::connect(url, 4, TIMEOUT).expect("connect to the test server")
}

fn put(key: &[u8], value: &[u8]) -> CatalogOp {
    CatalogOp::Put(CatalogKey(key.to_vec()), value.to_vec())
}

fn delete(key: &[u8]) -> CatalogOp {
    CatalogOp::Delete(CatalogKey(key.to_vec()))
}

fn entry(key: &[u8], value: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (key.to_vec(), value.to_vec())
}

/// Retries `f` until it succeeds or `limit` passes.
fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn catalog_batches_tombstones_and_change_feed() {
    let pg = Postgres::start();
    let url = pg.create_database("catalog");
    let store = connect(&url);
    assert!(store.is_shared());
    let start = store.catalog_changes(0).unwrap();
    assert_eq!((start.version, start.entries.len()), (0, 0));
    let sessions = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'envault'",
    );
    assert!(sessions.trim().parse::<u32>().unwrap() >= 1, "{sessions}");

    store
        .catalog_apply(vec![
            put(b"db/1", b"a"),
            put(b"db/2", b"b"),
            put(b"key/1", b"c"),
        ])
        .unwrap();
    let feed = store.catalog_changes(0).unwrap();
    assert_eq!(feed.version, 1);
    assert_eq!(
        feed.entries,
        vec![
            (b"db/1".to_vec(), Some(b"a".to_vec())),
            (b"db/2".to_vec(), Some(b"b".to_vec())),
            (b"key/1".to_vec(), Some(b"c".to_vec())),
        ]
    );

    // A delete is a tombstone in the feed, and gone from scans.
    store.catalog_apply(vec![delete(b"db/1")]).unwrap();
    assert_eq!(
        store.catalog_scan(b"db/").unwrap(),
        vec![entry(b"db/2", b"b")]
    );
    assert_eq!(
        store.catalog_scan(b"").unwrap(),
        vec![entry(b"db/2", b"b"), entry(b"key/1", b"c")]
    );
    let feed = store.catalog_changes(1).unwrap();
    assert_eq!(feed.version, 2);
    assert_eq!(feed.entries, vec![(b"db/1".to_vec(), None)]);
    let nothing = store.catalog_changes(2).unwrap();
    assert_eq!((nothing.version, nothing.entries.len()), (2, 0));
    // From 0, entries come in the order they were changed.
    let all = store.catalog_changes(0).unwrap();
    let keys: Vec<&[u8]> = all.entries.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"db/2"[..], b"key/1", b"db/1"]);

    // Within one batch the later op on a key wins; an empty batch changes nothing.
    store
        .catalog_apply(vec![
            put(b"db/1", b"x"),
            put(b"db/1", b"y"),
            delete(b"key/1"),
        ])
        .unwrap();
    store.catalog_apply(Vec::new()).unwrap();
    assert_eq!(
        store.catalog_scan(b"").unwrap(),
        vec![entry(b"db/1", b"y"), entry(b"db/2", b"b")]
    );
    assert_eq!(store.catalog_changes(3).unwrap().version, 3);

    // Prefixes ending in 0xFF bytes have no upper bound to compute.
    store
        .catalog_apply(vec![
            put(&[0xFF, 0xFF, 1], b"hi"),
            put(&[0xFE, 0xFF], b"lo"),
        ])
        .unwrap();
    assert_eq!(
        store.catalog_scan(&[0xFF, 0xFF]).unwrap(),
        vec![entry(&[0xFF, 0xFF, 1], b"hi")]
    );
    assert_eq!(
        store.catalog_scan(&[0xFE]).unwrap(),
        vec![entry(&[0xFE, 0xFF], b"lo")]
    );
    assert_eq!(store.catalog_scan(&[0xFF]).unwrap().len(), 1);

    // Another node on the same database sees the same catalog and feed; so does a fresh
    // connection after this one is gone (every batch was committed before it returned).
    let other = connect(&url);
    assert_eq!(
        other.catalog_scan(b"").unwrap(),
        store.catalog_scan(b"").unwrap()
    );
    let feed = other.catalog_changes(3).unwrap();
    assert_eq!(feed.version, 4);
    assert_eq!(feed.entries.len(), 2);
    let before = store.catalog_scan(b"").unwrap();
    drop(store);
    drop(other);
    assert_eq!(connect(&url).catalog_scan(b"").unwrap(), before);
}

/// Record semantics every store must share: byte order, `after` exclusive, prefixes, limits,
/// byte-bounded pages, counts and purges scoped to one database.
fn record_semantics(store: &dyn Store) {
    let a = [1u8; 16];
    let b = [2u8; 16];
    assert_eq!(store.record_get(&a, b"x1").unwrap(), None);
    for key in ["x1", "x2", "x3", "y1"] {
        store.record_put(&a, key.as_bytes(), b"v".to_vec()).unwrap();
    }
    store.record_put(&b, b"x9", b"other".to_vec()).unwrap();
    store.record_put(&a, b"x2", b"v2".to_vec()).unwrap(); // overwrite
    assert_eq!(store.record_get(&a, b"x2").unwrap(), Some(b"v2".to_vec()));
    assert_eq!(store.record_get(&b, b"x2").unwrap(), None);

    let page = store.record_keys(&a, b"x", None, 2).unwrap();
    assert_eq!(page, vec![b"x1".to_vec(), b"x2".to_vec()]);
    let page = store.record_keys(&a, b"x", Some(b"x2"), 2).unwrap();
    assert_eq!(page, vec![b"x3".to_vec()]);
    assert_eq!(store.record_keys(&a, b"", Some(b"a"), 10).unwrap().len(), 4);
    assert_eq!(
        store.record_keys(&a, b"", Some(b"x3"), 10).unwrap(),
        vec![b"y1".to_vec()]
    );
    assert_eq!(
        store.record_keys(&a, b"x", Some(b"z"), 10).unwrap().len(),
        0
    );
    assert_eq!(store.record_keys(&a, b"", None, 0).unwrap().len(), 0);

    // Binary keys sort bytewise: 0x00 and 0xFF included, a prefix of 0xFFs has no end.
    let c = [3u8; 16];
    for key in [
        &[0x00][..],
        &[0x00, 0x00],
        &[0x7F],
        &[0xFF],
        &[0xFF, 0x00],
        &[0xFF, 0xFF],
    ] {
        store.record_put(&c, key, key.to_vec()).unwrap();
    }
    let all = store.record_keys(&c, b"", None, 100).unwrap();
    assert_eq!(
        all,
        vec![
            vec![0x00],
            vec![0x00, 0x00],
            vec![0x7F],
            vec![0xFF],
            vec![0xFF, 0x00],
            vec![0xFF, 0xFF]
        ]
    );
    assert_eq!(
        store.record_keys(&c, &[0xFF], Some(&[0xFF]), 100).unwrap(),
        vec![vec![0xFF, 0x00], vec![0xFF, 0xFF]]
    );
    assert_eq!(
        store.record_keys(&c, &[0xFF, 0xFF], None, 100).unwrap(),
        vec![vec![0xFF, 0xFF]]
    );
    assert_eq!(
        store.record_keys(&c, &[0x00], Some(&[0x00]), 100).unwrap(),
        vec![vec![0x00, 0x00]]
    );

    // Pages: bounded by count and by bytes, at least one record however large.
    let d = [4u8; 16];
    for (key, len) in [("a", 100), ("b", 100), ("c", 1000), ("d", 10)] {
        store.record_put(&d, key.as_bytes(), vec![7; len]).unwrap();
    }
    let keys = |page: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
        page.into_iter().map(|(k, _)| k).collect()
    };
    let page = store.record_page(&d, None, 10, 150).unwrap();
    assert_eq!(keys(page), vec![b"a".to_vec(), b"b".to_vec()]);
    let page = store.record_page(&d, Some(b"b"), 10, 50).unwrap();
    assert_eq!(page, vec![(b"c".to_vec(), vec![7; 1000])]);
    assert_eq!(store.record_page(&d, None, 3, usize::MAX).unwrap().len(), 3);
    let page = store.record_page(&d, Some(b"c"), 3, usize::MAX).unwrap();
    assert_eq!(page, vec![(b"d".to_vec(), vec![7; 10])]);
    assert_eq!(
        store
            .record_page(&d, Some(b"d"), 3, usize::MAX)
            .unwrap()
            .len(),
        0
    );

    // Deletes, counts and purges stay within their database.
    assert!(store.record_delete(&a, b"y1").unwrap());
    assert!(!store.record_delete(&a, b"y1").unwrap());
    assert_eq!(store.record_get(&a, b"y1").unwrap(), None);
    assert_eq!(store.record_count(&a).unwrap(), 3);
    assert_eq!(store.records_purge(&a).unwrap(), 3);
    assert_eq!(store.record_count(&a).unwrap(), 0);
    assert_eq!(store.records_purge(&a).unwrap(), 0);
    assert_eq!(store.record_count(&b).unwrap(), 1);
    assert_eq!(
        store.record_get(&b, b"x9").unwrap(),
        Some(b"other".to_vec())
    );
    store.flush().unwrap();

    // Large values round-trip intact.
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    store.record_put(&b, b"big", big.clone()).unwrap();
    assert_eq!(store.record_get(&b, b"big").unwrap(), Some(big));
}

#[test]
fn records_behave_exactly_like_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    record_semantics(&FjallStore::open(dir.path(), 8 << 20).unwrap());

    let pg = Postgres::start();
    let store = connect(&pg.create_database("records"));
    record_semantics(&store);
    // Durable on return: a new connection pool sees everything.
    drop(store);
    let again = connect(&pg.url("records"));
    assert_eq!(again.record_count(&[2u8; 16]).unwrap(), 2);
}

#[test]
fn cluster_locks_exclude_other_nodes_until_released_or_the_holder_is_gone() {
    let pg = Postgres::start();
    let url = pg.create_database("locks");
    let node_a = Arc::new(connect(&url));
    let node_b = connect(&url);
    let rotation = ClusterLockName::Rotation(uuid::Uuid::new_v4());

    let held = node_a.lock(ClusterLockName::Admin).unwrap();
    assert!(node_b.try_lock(ClusterLockName::Admin).unwrap().is_none());
    // Other names are independent.
    let rot = node_b
        .try_lock(rotation)
        .unwrap()
        .expect("rotation lock free");
    assert!(node_a.try_lock(rotation).unwrap().is_none());
    drop(rot);
    drop(held);
    // Released when the guard's drop returns.
    let held_b = node_b
        .try_lock(ClusterLockName::Admin)
        .unwrap()
        .expect("admin lock released on drop");
    assert!(node_a.try_lock(rotation).unwrap().is_some());

    // lock() waits for the holder.
    let waiter = {
        let node_a = node_a.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let guard = node_a.lock(ClusterLockName::Admin).unwrap();
            (start.elapsed(), guard)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiter.is_finished(), "lock() did not wait for node B");
    drop(held_b);
    let (waited, guard_a) = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    drop(guard_a);

    // A node that goes away (its store dropped, guard still alive) releases its locks.
    let node_c = connect(&url);
    let orphan = ClusterLockName::Rotation(uuid::Uuid::new_v4());
    let guard_c = node_c.try_lock(orphan).unwrap().expect("free");
    assert!(node_a.try_lock(orphan).unwrap().is_none());
    drop(node_c);
    eventually(Duration::from_secs(5), || node_a.try_lock(orphan).unwrap());
    drop(guard_c); // after its store: no panic, nothing to release
}

#[test]
fn the_store_is_unavailable_while_the_server_is_down_and_recovers_by_itself() {
    let mut pg = Postgres::start();
    let url = pg.create_database("faults");
    let store = connect(&url);
    let db = [9u8; 16];
    store.record_put(&db, b"before", b"kept".to_vec()).unwrap();
    store.catalog_apply(vec![put(b"db/1", b"a")]).unwrap();

    // A crash: only the WAL holds what was acknowledged.
    pg.crash();
    let unavailable = |what: &str, result: Result<(), StoreError>, start: Instant| {
        let elapsed = start.elapsed();
        match result {
            Err(StoreError::Unavailable(message)) => {
                assert!(!message.contains(PASSWORD), "{what}: {message}");
            }
            other => panic!("{what}: expected Unavailable, got {other:?}"),
        }
        assert!(
            elapsed < TIMEOUT + Duration::from_secs(2),
            "{what} took {elapsed:?}"
        );
    };
    let t = Instant::now();
    unavailable("get", store.record_get(&db, b"before").map(drop), t);
    let t = Instant::now();
    unavailable("put", store.record_put(&db, b"during", b"x".to_vec()), t);
    let t = Instant::now();
    unavailable("changes", store.catalog_changes(1).map(drop), t);
    let t = Instant::now();
    unavailable("apply", store.catalog_apply(vec![put(b"db/2", b"b")]), t);
    let t = Instant::now();
    unavailable("lock", store.lock(ClusterLockName::Admin).map(drop), t);

    // Back up: the same store instance reconnects by itself (its closed connections are
    // replaced at checkout, so not even the first call fails); nothing acknowledged was lost.
    pg.start_server();
    assert_eq!(
        store.record_get(&db, b"before").unwrap(),
        Some(b"kept".to_vec())
    );
    store.record_put(&db, b"after", b"y".to_vec()).unwrap();
    assert_eq!(store.record_count(&db).unwrap(), 2);
    assert_eq!(
        store.catalog_scan(b"db/").unwrap(),
        vec![entry(b"db/1", b"a")]
    );
    assert!(store.lock(ClusterLockName::Admin).is_ok());

    // A restart under the same instance (fast shutdown ends every session) is also absorbed.
    pg.restart();
    assert_eq!(store.record_count(&db).unwrap(), 2);
    assert_eq!(
        store.record_get(&db, b"after").unwrap(),
        Some(b"y".to_vec())
    );
    assert_eq!(store.catalog_changes(0).unwrap().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_work_from_async_workers_and_blocking_threads() {
    let pg = Postgres::start();
    let store: Arc<dyn Store> = Arc::new(connect(&pg.create_database("async")));
    // Inline on an async worker thread: no nested-runtime panic.
    store
        .record_put(&[1; 16], b"inline", b"v".to_vec())
        .unwrap();
    assert!(store.catalog_changes(0).unwrap().entries.is_empty());
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let inline = store.clone();
        tasks.push(tokio::spawn(async move {
            inline.record_put(&[1; 16], &[i], vec![i; 64]).unwrap();
            let guard = inline.try_lock(ClusterLockName::Rotation(uuid::Uuid::new_v4()));
            assert!(guard.unwrap().is_some());
        }));
        let blocking = store.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            blocking.catalog_apply(vec![put(&[b'k', i], b"v")]).unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.record_count(&[1; 16]).unwrap(), 9);
    assert_eq!(store.catalog_changes(0).unwrap().version, 8);
    // Dropping the store inside a runtime must not panic either.
    drop(store);
}

#[test]
fn migrations_run_once_when_nodes_start_together_and_newer_schemas_are_refused() {
    let pg = Postgres::start();
    let url = pg.create_database("migrations");
    let nodes: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::connect(&url, 2, TIMEOUT).map(drop))
        })
        .collect();
    for node in nodes {
        node.join().unwrap().expect("every node starts");
    }
    let applied = pg.psql(
        "migrations",
        "SELECT string_agg(version::text, ',') FROM schema_migrations",
    );
    let expected: Vec<String> = envault::store::postgres::migrations::MIGRATIONS
        .iter()
        .map(|(v, _)| v.to_string())
        .collect();
    assert_eq!(applied.trim(), expected.join(","));

    pg.psql(
        "migrations",
        "INSERT INTO schema_migrations (version) VALUES (9999)",
    );
    match PostgresStore::connect(&url, 2, TIMEOUT) {
        Err(StoreError::Backend(message)) => assert!(message.contains("9999"), "{message}"),
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[test]
fn connection_failures_are_reported_without_the_password() {
    let pg = Postgres::start();
    pg.create_database("auth");
    let wrong = format!(
        "postgres://postgres:Wrong-{PASSWORD}@127.0.0.1:{}/auth",
        pg.port()
    );
    let message = match PostgresStore::connect(&wrong, 2, TIMEOUT) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("a wrong password was accepted"),
    };
    assert!(!message.contains(PASSWORD), "{message}");
    assert!(message.contains("password"), "{message}");

    // Nothing listening: Unavailable, quickly, without the password.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/auth");
    let start = Instant::now();
    match PostgresStore::connect(&down, 2, TIMEOUT) {
        Err(StoreError::Unavailable(message)) => assert!(!message.contains(PASSWORD), "{message}"),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(start.elapsed() < TIMEOUT * 4 + Duration::from_secs(2));
    match PostgresStore::connect(&format!("postgres://u:{PASSWORD}@[bad"), 2, TIMEOUT) {
        Err(err) => assert!(!err.to_string().contains(PASSWORD), "{err}"),
        Ok(_) => panic!("a malformed URL was accepted"),
    }
}
