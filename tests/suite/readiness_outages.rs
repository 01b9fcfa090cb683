//! Readiness through the real daemon when what it depends on goes away: the PostgreSQL store
//! stopped as a crash would, the transit root-key backend killed or frozen. `/v1/health`
//! answers 503 naming that component (and only it), liveness stays 200, and both come back
//! without a restart of envault once the server is back.

#![cfg(feature = "external-suites")]

use crate::backend_support;
use crate::common;

use std::time::{Duration, Instant};

use backend_support::Fixture;
use common::pg_support::Postgres;
use common::Daemon;
use serde_json::Value;

/// How long readiness may take to turn after a server comes back: the connection pool and
/// the HTTP agent reconnect on their next call.
const RECOVERY: Duration = Duration::from_secs(30);

/// `GET /v1/health`: status and body.
async fn health(daemon: &Daemon) -> (u16, Value) {
    let (status, body) = daemon.raw("GET", "/v1/health", &[], b"").await;
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (status, body)
}

/// The components reported failing, with their reasons.
fn failing(health: &Value) -> Vec<(String, String)> {
    health["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            (
                c["component"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn assert_live(daemon: &Daemon) {
    let (status, body) = daemon.raw("GET", "/v1/health/live", &[], b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// Asserts the daemon is not ready because of `component` alone; returns the reason given.
async fn assert_not_ready_because_of(daemon: &Daemon, component: &str) -> String {
    let started = Instant::now();
    let (status, body) = health(daemon).await;
    // A dead server is reported within the probe's limit, not after a hang.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "readiness took {:?}",
        started.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    let failing = failing(&body);
    assert_eq!(failing.len(), 1, "{body}");
    assert_eq!(failing[0].0, component, "{body}");
    assert!(!failing[0].1.is_empty(), "no reason given: {body}");
    assert_live(daemon).await;
    failing[0].1.clone()
}

/// Polls readiness until 200 with every component ok.
async fn wait_ready(daemon: &Daemon) {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let (status, body) = health(daemon).await;
        if status == 200 {
            assert_eq!(body["status"], "ok");
            assert!(failing(&body).is_empty(), "{body}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again within {RECOVERY:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgresql_makes_the_store_unready_until_it_is_back() {
    let mut pg = Postgres::start();
    let url = pg.create_database("envault");
    let daemon = Daemon::start_with_env(&[
        ("ENVAULT_STORE_BACKEND", "postgres"),
        ("ENVAULT_STORE_URL", &url),
        ("ENVAULT_STORE_POOL_SIZE", "4"),
        ("ENVAULT_STORE_TIMEOUT", "2s"),
    ])
    .await;
    let client = daemon.client();
    client
        .create_database("orders", None, None)
        .await
        .expect("create database");
    client
        .put_record("orders", "r", b"before")
        .await
        .expect("put");
    wait_ready(&daemon).await;

    pg.crash();
    let reason = assert_not_ready_because_of(&daemon, "store").await;
    assert!(reason.contains("PostgreSQL"), "{reason}");
    assert!(!reason.contains(common::pg_support::PASSWORD), "{reason}");
    // Asked again: still unready, the daemon still up.
    assert_not_ready_because_of(&daemon, "store").await;

    pg.start_server();
    wait_ready(&daemon).await;
    assert_live(&daemon).await;
    assert_eq!(
        client.get_record("orders", "r").await.expect("get"),
        b"before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_frozen_transit_server_makes_the_key_backend_unready_until_it_is_back() {
    let mut fixture = Fixture::transit_persistent();
    let daemon = fixture.daemon().await;
    let client = daemon.client();
    client
        .create_key("root", None, None)
        .await
        .expect("create key");
    wait_ready(&daemon).await;

    let bao = fixture.bao.as_mut().expect("bao");
    bao.kill();
    let reason = assert_not_ready_because_of(&daemon, "key_backend").await;
    assert!(reason.contains("transit"), "{reason}");
    let bao = fixture.bao.as_mut().expect("bao");
    bao.restart();
    wait_ready(&daemon).await;

    // Accepts connections but answers nothing: the probe gives up instead of hanging.
    let bao = fixture.bao.as_mut().expect("bao");
    bao.pause(true);
    assert_not_ready_because_of(&daemon, "key_backend").await;
    let bao = fixture.bao.as_mut().expect("bao");
    bao.pause(false);
    wait_ready(&daemon).await;
    assert!(
        client
            .list_keys()
            .await
            .expect("list keys")
            .iter()
            .any(|k| k.name == "root"),
        "the key is still there"
    );
}
