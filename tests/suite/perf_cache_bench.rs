//! Against the real daemon: the DEK cache's cap, LRU eviction and lifetime as seen in
//! `GET /v1/health`, and the load generator `envault-bench` (zero errors on a healthy daemon,
//! non-zero exit and counted errors when every request fails).

use crate::common;

use std::time::Duration;

use common::{allow_databases, unique, Daemon};
use envault::api::DekCacheStats;
use envault::client::Client;

async fn cache_stats(client: &Client) -> DekCacheStats {
    client
        .health()
        .await
        .expect("health")
        .dek_cache
        .expect("health reports dek_cache")
}

#[tokio::test]
async fn dek_cache_is_capped_with_lru_eviction_and_counted_in_health() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_CACHE_MAX_DEKS", "2")]).await;
    let client = daemon.client();
    let start = cache_stats(&client).await;
    assert_eq!((start.max, start.ttl_seconds, start.size), (2, 0, 0));

    let dbs: Vec<String> = (0..3).map(|_| unique("db")).collect();
    for db in &dbs {
        client.create_database(db, None, None).await.unwrap();
        client.put_record(db, "r", db.as_bytes()).await.unwrap();
    }
    // Three DEKs through a cache of two: at least one was evicted, and reading every database
    // again must unwrap the evicted ones (misses) and still give the right values.
    for _ in 0..2 {
        for db in &dbs {
            assert_eq!(client.get_record(db, "r").await.unwrap(), db.as_bytes());
        }
    }
    let stats = cache_stats(&client).await;
    assert!(stats.size <= 2, "{stats:?}");
    assert!(stats.evictions >= 1, "{stats:?}");
    assert!(stats.misses >= 1, "{stats:?}");
    assert!(stats.hits >= 1, "{stats:?}");
    assert_eq!(stats.expired, 0, "{stats:?}");

    // The same database over and over only hits, once its DEK is back in the cache.
    client.get_record(&dbs[0], "r").await.unwrap();
    let before = cache_stats(&client).await;
    for _ in 0..10 {
        client.get_record(&dbs[0], "r").await.unwrap();
    }
    let after = cache_stats(&client).await;
    assert_eq!(after.hits - before.hits, 10, "{before:?} -> {after:?}");
    assert_eq!(after.misses, before.misses, "{before:?} -> {after:?}");
}

#[tokio::test]
async fn cached_deks_expire_after_the_configured_lifetime() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_CACHE_DEK_TTL", "1s")]).await;
    let client = daemon.client();
    let db = unique("db");
    client.create_database(&db, None, None).await.unwrap();
    client.put_record(&db, "r", b"v").await.unwrap();
    assert_eq!(client.get_record(&db, "r").await.unwrap(), b"v");
    let before = cache_stats(&client).await;
    assert_eq!(before.ttl_seconds, 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Expired: unwrapped again through the keystore, same value.
    assert_eq!(client.get_record(&db, "r").await.unwrap(), b"v");
    let after = cache_stats(&client).await;
    assert!(after.expired > before.expired, "{before:?} -> {after:?}");
    assert!(after.misses > before.misses, "{before:?} -> {after:?}");
    assert_eq!(after.size, 1, "{after:?}");
}

#[tokio::test]
async fn bad_cache_settings_are_refused() {
    for (var, value) in [
        ("ENVAULT_CACHE_MAX_DEKS", "0"),
        ("ENVAULT_CACHE_DEK_TTL", "soon"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(common::binary())
            .arg("serve")
            .env("ENVAULT_SOCKET", dir.path().join("s.sock"))
            .env("ENVAULT_DATA_DIR", dir.path().join("data"))
            .env(var, value)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cache."), "{var}={value}: {stderr}");
        assert!(
            !dir.path().join("data").exists(),
            "{var}={value} changed disk"
        );
    }
}

fn bench_json(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "envault-bench --json printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test]
async fn bench_keeps_clients_busy_and_reports_percentiles() {
    let daemon = Daemon::start().await;
    for op in ["mixed", "unwrap"] {
        let output = daemon.bench(&[
            "--json",
            op,
            "--clients",
            "3",
            "--duration",
            "1s",
            "--warmup",
            "0",
            "--keys",
            "20",
            "--value-size",
            "100",
        ]);
        let report = bench_json(&output);
        assert!(output.status.success(), "{op}: {report}");
        assert_eq!(report["errors"], 0, "{report}");
        assert_eq!(report["clients"], 3, "{report}");
        assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
        assert!(report["ops_per_s"].as_f64().unwrap() > 0.0, "{report}");
        let latency = &report["latency"];
        let (p50, p99, p999) = (
            latency["p50_us"].as_u64().unwrap(),
            latency["p99_us"].as_u64().unwrap(),
            latency["p999_us"].as_u64().unwrap(),
        );
        assert!(0 < p50 && p50 <= p99 && p99 <= p999, "{report}");
    }
    // get found every key the run wrote beforehand.
    let client = daemon.client();
    let page = client
        .list_records("bench", &Default::default())
        .await
        .unwrap();
    assert_eq!(page.keys.len(), 20);
}

#[tokio::test]
async fn bench_counts_failed_requests_and_exits_non_zero() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let (key, db) = (unique("k"), unique("db"));
    client.create_key(&key, None, None).await.unwrap();
    allow_databases(&client, &key).await;
    client.create_database(&db, Some(&key), None).await.unwrap();
    client.disable_key(&key).await.unwrap();
    let output = daemon.bench(&[
        "--json",
        "put",
        "--database",
        &db,
        "--clients",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "0",
    ]);
    assert!(!output.status.success());
    let report = bench_json(&output);
    assert!(report["errors"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["ops"], 0, "{report}");
    let first = report["first_errors"][0].as_str().unwrap();
    assert!(first.contains("key_suspended"), "{report}");
}
