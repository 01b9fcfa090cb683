//! Several envault nodes over one PostgreSQL store: separate processes, separate
//! sockets and data dirs, one database, one OpenBao transit server for the root keys. A change
//! made through one node holds on the others for every request that starts after the call
//! returned; rotations and purges are claimed once across nodes; a node killed mid-rotation
//! leaves the job to another; a PostgreSQL restart gives 503 `store_unavailable` while it is
//! down and loses nothing acknowledged. Every server is started here and stopped at the end.

#![cfg(feature = "external-suites")]

use crate::backend_support;
use crate::common;
use crate::common::files_under;
use crate::lifecycle_support;

use std::time::{Duration, Instant};

use backend_support::{Fixture, Kind};
use common::pg_support::{self, Postgres};
use common::{allow_databases, assert_api_error, contains, Daemon};
use envault::client::Client;

/// A PostgreSQL server, a transit server and the environment of a node using both.
struct Cluster {
    pg: Postgres,
    transit: Fixture,
    url: String,
}

impl Cluster {
    fn start(database: &str) -> Cluster {
        let pg = Postgres::start();
        let url = pg.create_database(database);
        Cluster {
            pg,
            transit: Fixture::start(Kind::Transit),
            url,
        }
    }

    /// Starts one more node on the shared store, with `extra` settings.
    async fn node(&self, extra: &[(&str, &str)]) -> Daemon {
        let mut env = self.transit.env();
        env.push(("ENVAULT_STORE_BACKEND".into(), "postgres".into()));
        env.push(("ENVAULT_STORE_URL".into(), self.url.clone()));
        env.push(("ENVAULT_STORE_TIMEOUT".into(), "2s".into()));
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Daemon::start_with_env(&pairs).await
    }
}

/// A database under a customer key, with `n` records `r0..`, created through `client`.
async fn seed(client: &Client, key: &str, db: &str, n: usize) {
    client
        .create_key(key, None, None)
        .await
        .expect("create key");
    allow_databases(client, key).await;
    client
        .create_database(db, Some(key), None)
        .await
        .expect("create database");
    for i in 0..n {
        client
            .put_record(db, &format!("r{i}"), format!("{db} value {i}").as_bytes())
            .await
            .expect("put");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_holds_on_the_others_for_the_next_request() {
    let cluster = Cluster::start("coherence");
    let a = cluster.node(&[]).await;
    let b = cluster.node(&[]).await;
    let c = cluster.node(&[]).await;
    assert!(
        a.log().contains("store: PostgreSQL"),
        "node A does not say it runs on PostgreSQL: {}",
        a.log()
    );
    let (ca, cb, cc) = (a.client(), b.client(), c.client());
    seed(&ca, "orders-key", "orders", 3).await;

    // Written on A, read on B and C; written on B, read on A.
    assert_eq!(
        cb.get_record("orders", "r1").await.expect("read on B"),
        b"orders value 1"
    );
    assert_eq!(
        cc.get_record("orders", "r2").await.expect("read on C"),
        b"orders value 2"
    );
    cb.put_record("orders", "from-b", b"written on B")
        .await
        .expect("put on B");
    assert_eq!(
        ca.get_record("orders", "from-b").await.expect("read on A"),
        b"written on B"
    );
    // The same CRNs everywhere: one instance identity.
    assert_eq!(
        ca.get_key("orders-key").await.expect("key on A").crn,
        cc.get_key("orders-key").await.expect("key on C").crn
    );

    // Rotated on A (retiring version 1): B and C see version 2 at once, read and write under
    // it, and refuse what only version 1 opened.
    let aad = vec!["tenant-1".to_string()];
    let v1 = cb
        .wrap("orders-key", Some(b"app secret"), &aad)
        .await
        .expect("wrap on B under v1");
    assert_eq!(v1.key_version, 1);
    let rotated = ca
        .rotate_key("orders-key", true, true)
        .await
        .expect("rotate on A");
    assert_eq!(
        (rotated.version, rotated.job.state.as_str()),
        (2, "completed")
    );
    assert_eq!(cb.get_key("orders-key").await.expect("key on B").version, 2);
    assert_eq!(
        cc.get_record("orders", "r0").await.expect("read on C"),
        b"orders value 0"
    );
    cc.put_record("orders", "after-rotation", b"v2")
        .await
        .expect("put on C");
    assert_api_error(
        cb.unwrap("orders-key", &v1.ciphertext, &aad).await,
        400,
        "bad_request",
    );
    let v2 = cc
        .wrap("orders-key", Some(b"x"), &aad)
        .await
        .expect("wrap on C");
    assert_eq!(v2.key_version, 2);

    // Disabled on A: refused on B and C by the very next request; enabled again: served.
    ca.disable_key("orders-key").await.expect("disable on A");
    assert_api_error(cb.get_record("orders", "r0").await, 423, "key_suspended");
    assert_api_error(
        cc.put_record("orders", "x", b"x").await,
        423,
        "key_suspended",
    );
    ca.enable_key("orders-key").await.expect("enable on A");
    assert_eq!(
        cb.get_record("orders", "r0").await.expect("read on B"),
        b"orders value 0"
    );

    // A token issued on B works on C; revoked on C, refused on A at once.
    let token = cb
        .create_token("app", &["orders".to_string()])
        .await
        .expect("token on B");
    let secret = token["token"].as_str().expect("secret").to_string();
    let id = token["id"].as_str().expect("token id").to_string();
    let app_on_c = c.client_with_token(Some(&secret));
    assert_eq!(
        app_on_c.get_record("orders", "r1").await.expect("app on C"),
        b"orders value 1"
    );
    cc.revoke_token(&id).await.expect("revoke on C");
    let app_on_a = a.client_with_token(Some(&secret));
    assert_api_error(
        app_on_a.get_record("orders", "r1").await,
        401,
        "unauthenticated",
    );

    // Shredded on B: refused on A and C at once, and nothing of it is left in memory there.
    cb.get_record("orders", "r0")
        .await
        .expect("B caches the DEK");
    ca.get_record("orders", "r0")
        .await
        .expect("A caches the DEK");
    let receipt = cb.delete_key("orders-key", true).await.expect("shred on B");
    assert!(!receipt.affected.is_empty());
    for client in [&ca, &cc] {
        assert_api_error(
            client.get_record("orders", "r0").await,
            423,
            "key_destroyed",
        );
    }
    let health = ca.health().await.expect("health on A");
    let cached = health.dek_cache.map(|c| c.size);
    assert_eq!(cached, Some(0), "A still holds a DEK of the shredded key");
    // Metadata stays readable everywhere.
    let shown = cc.get_key("orders-key").await.expect("key on C");
    assert_eq!(shown.state, "destroyed");

    // The database replaced under the nodes (its catalog version goes back, as after restoring
    // a dump): a node reloads its whole catalog instead of trusting what it remembers.
    cluster
        .pg
        .psql("coherence", "UPDATE catalog_version SET version = 1");
    let shown = cb
        .get_key("orders-key")
        .await
        .expect("key on B after the reload");
    assert_eq!(shown.state, "destroyed");
    assert!(
        b.log().contains("reloading the whole catalog"),
        "B did not reload: {}",
        b.log()
    );
    cb.create_database("after-reload", None, None)
        .await
        .expect("B still changes the catalog");
    assert!(ca.get_database("after-reload").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sees_only_ciphertext_before_and_after_a_shred() {
    let cluster = Cluster::start("sealed");
    let a = cluster.node(&[]).await;
    let b = cluster.node(&[]).await;
    let client = a.client();
    // An imported key (BYOK into transit) whose bytes we can look for.
    let material: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    client
        .create_key("byok", Some(&material), None)
        .await
        .expect("import");
    allow_databases(&client, "byok").await;
    client
        .create_database("secrets", Some("byok"), None)
        .await
        .expect("database");
    let marker = b"PLAINTEXT-MARKER-7f3a9c";
    for i in 0..20 {
        let value = [marker.as_slice(), format!("-{i}").as_bytes()].concat();
        b.client()
            .put_record("secrets", &format!("k{i}"), &value)
            .await
            .expect("put on B");
    }
    // pg_dump writes bytea columns as hex: look for both spellings.
    let spellings = |bytes: &[u8]| vec![bytes.to_vec(), hex(bytes).into_bytes()];
    let before = cluster.pg.pg_dump("sealed");
    assert!(
        contains(&before, hex(b"secrets").as_bytes()),
        "pg_dump does not hold the catalog"
    );
    for needle in spellings(marker).iter().chain(&spellings(&material)) {
        assert!(
            !contains(&before, needle),
            "plaintext or key bytes in pg_dump"
        );
    }

    client.delete_key("byok", true).await.expect("shred");
    assert_api_error(
        b.client().get_record("secrets", "k1").await,
        423,
        "key_destroyed",
    );
    // Everything reaches the data files (heap and WAL) before the scan.
    cluster.pg.psql("sealed", "CHECKPOINT");
    let after = cluster.pg.pg_dump("sealed");
    for needle in spellings(marker).iter().chain(&spellings(&material)) {
        assert!(
            !contains(&after, needle),
            "plaintext or key bytes in pg_dump after the shred"
        );
    }
    for file in files_under(&cluster.pg.data_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(!contains(&bytes, marker), "plaintext in {}", file.display());
        assert!(
            !contains(&bytes, &material),
            "key bytes in {}",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_and_a_shred_end_in_one_state() {
    let cluster = Cluster::start("jobs");
    let a = cluster.node(&[]).await;
    let b = cluster.node(&[]).await;
    let (ca, cb) = (a.client(), b.client());
    seed(&ca, "shared-key", "ledger", 2).await;
    for i in 0..20 {
        ca.create_database(&format!("ledger-{i}"), Some("shared-key"), None)
            .await
            .expect("database");
    }

    // Both nodes rotate the same key at once: versions are never handed out twice.
    let (ra, rb) = tokio::join!(
        ca.rotate_key("shared-key", false, true),
        cb.rotate_key("shared-key", false, true)
    );
    let mut versions = Vec::new();
    for answer in [ra, rb] {
        match answer {
            Ok(done) => versions.push(done.version),
            Err(err) => assert_api_error::<()>(Err(err), 409, "conflict"),
        }
    }
    assert!(!versions.is_empty(), "neither rotation ran");
    versions.sort_unstable();
    versions.dedup();
    let key_a = ca.get_key("shared-key").await.expect("key on A");
    let key_b = cb.get_key("shared-key").await.expect("key on B");
    assert_eq!(key_a.version, key_b.version);
    assert_eq!(
        key_a.version,
        1 + versions.len() as u32,
        "versions {versions:?}"
    );
    assert_eq!(
        cb.get_record("ledger", "r1").await.expect("read"),
        b"ledger value 1"
    );

    // One node rotates while the other shreds: the key ends destroyed on both, no job left.
    let (rotation, shred) = tokio::join!(
        ca.rotate_key("shared-key", false, true),
        cb.delete_key("shared-key", true)
    );
    shred.expect("the shred succeeds");
    if let Err(err) = rotation {
        let text = format!("{err:?}");
        assert!(
            text.contains("key_destroyed") || text.contains("conflict"),
            "the rotation failed otherwise: {text}"
        );
    }
    for client in [&ca, &cb] {
        let key = client.get_key("shared-key").await.expect("key");
        assert_eq!(key.state, "destroyed");
        assert_api_error(
            client.get_record("ledger", "r0").await,
            423,
            "key_destroyed",
        );
    }
    // A new rotation is refused on both: no half-finished job remains to be resumed.
    for client in [&ca, &cb] {
        assert!(client.rotate_key("shared-key", false, true).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_node_dies_is_finished_by_another() {
    let cluster = Cluster::start("orphan");
    let mut a = cluster.node(&[]).await;
    let b = cluster.node(&[]).await;
    let ca = a.client();
    seed(&ca, "big-key", "db-0", 1).await;
    // Enough DEKs that the rewrap (one transit call each) outlives the kill below.
    for i in 1..300 {
        ca.create_database(&format!("db-{i}"), Some("big-key"), None)
            .await
            .expect("database");
    }
    let started = ca
        .rotate_key("big-key", false, false)
        .await
        .expect("rotate");
    assert_eq!(started.version, 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    a.kill9().await;
    let cb = b.client();
    // B's sweep claims the orphaned job (A's claim died with its session) and finishes it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(status) = cb.rotation_status("big-key").await {
            if status.state == "completed" {
                assert_eq!(status.target_version, 2);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "B did not finish the rotation; B's log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b.log().contains("resuming rotation"), "{}", b.log());
    // Every DEK is under version 2 now: retiring version 1 leaves every record readable.
    let retired = cb
        .rotate_key("big-key", true, true)
        .await
        .expect("rotate, retire");
    assert_eq!(retired.job.retired_versions, vec![1, 2]);
    assert_eq!(
        cb.get_record("db-0", "r0").await.expect("read"),
        b"db-0 value 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_deleted_database_is_purged_once_across_nodes() {
    let cluster = Cluster::start("purge");
    let period = [("ENVAULT_SOFT_DELETE_PERIOD", "1s")];
    let a = cluster.node(&period).await;
    let b = cluster.node(&period).await;
    let ca = a.client();
    ca.create_database("temp", None, None)
        .await
        .expect("database");
    ca.put_record("temp", "k", b"v").await.expect("put");
    ca.delete_database("temp").await.expect("soft delete");
    let gone = Instant::now() + Duration::from_secs(20);
    while ca.get_database("temp").await.is_ok() || b.client().get_database("temp").await.is_ok() {
        assert!(Instant::now() < gone, "not purged in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both sweeps have run several times by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let purges: usize = [&a, &b]
        .iter()
        .map(|node| {
            lifecycle_support::audit_file_events(node)
                .iter()
                .filter(|e| e["action"] == "databases.purge")
                .count()
        })
        .sum();
    assert_eq!(purges, 1, "the purge ran {purges} times across the nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_gives_503_then_heals_and_loses_nothing() {
    let mut cluster = Cluster::start("faults");
    let a = cluster.node(&[]).await;
    let b = cluster.node(&[]).await;
    let ca = a.client();
    ca.create_database("steady", None, None)
        .await
        .expect("database");

    cluster.pg.stop();
    let down = ca.put_record("steady", "while-down", b"x").await;
    assert_api_error(down, 503, "store_unavailable");
    assert_api_error(
        b.client().get_record("steady", "nothing").await,
        503,
        "store_unavailable",
    );

    // Writes keep coming while the server comes back; every acknowledged one must survive.
    let writer = {
        let client = a.client();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut refused = 0;
            let until = Instant::now() + Duration::from_secs(6);
            let mut i = 0;
            while Instant::now() < until {
                let key = format!("w{i}");
                match client.put_record("steady", &key, key.as_bytes()).await {
                    Ok(()) => acknowledged.push(key),
                    Err(err) => {
                        let text = format!("{err:?}");
                        assert!(
                            text.contains("store_unavailable"),
                            "unexpected error: {text}"
                        );
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
            (acknowledged, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.pg.start_server();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.pg.restart();
    let (acknowledged, refused) = writer.await.expect("writer");
    assert!(!acknowledged.is_empty(), "the nodes never reconnected");
    assert!(refused > 0, "no request met the outage");
    // The outage was logged (503s, reconnects), never with the store password.
    for node in [&a, &b] {
        assert!(
            !node.log().contains(pg_support::PASSWORD),
            "the store password is in a node's log"
        );
    }
    let cb = b.client();
    for key in &acknowledged {
        assert_eq!(
            cb.get_record("steady", key)
                .await
                .expect("acknowledged write"),
            key.as_bytes()
        );
    }
}

/// Lowercase hex, as pg_dump prints bytea.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
