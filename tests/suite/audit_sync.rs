//! `[audit] data_plane_sync` through the real daemon and socket.
//!
//! - `interval`: wraps, unwraps and transit encrypts are answered before their fsync
//!   (`GET /v1/health` shows written events ahead of durable ones), a key creation is fsynced
//!   before its answer and covers them; after `kill -9` under wrap/unwrap load and a restart,
//!   the chain verifies (`envault audit verify`) and every answered wrap and unwrap is in it.
//! - `always` (the default): every answered event is durable.
//! - A bad setting stops the daemon at start with a message naming it.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::Daemon;
use envault::api::AuditSyncStats;
use envault::client::Client;

/// Wrap/unwrap workers of the kill test, each on its own key.
const WORKERS: usize = 4;

/// Sync interval of the kill test: far longer than the test, so no interval fsync runs before
/// the kill and the answered lines survive only because they were written before the answer.
const LONG_INTERVAL: &str = "10s";

fn interval_env(interval: &str) -> [(&'static str, String); 2] {
    [
        ("ENVAULT_AUDIT_DATA_PLANE_SYNC", "interval".into()),
        ("ENVAULT_AUDIT_SYNC_INTERVAL", interval.into()),
    ]
}

async fn start(env: &[(&'static str, String)]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start_with_env(&env).await
}

/// The `audit` part of `GET /v1/health`.
async fn audit_health(client: &Client) -> AuditSyncStats {
    client
        .health()
        .await
        .expect("health")
        .audit
        .expect("health reports the activity log")
}

/// (written, durable, fsyncs) from `GET /v1/health`.
async fn audit_counters(client: &Client) -> (u64, u64, u64) {
    let audit = audit_health(client).await;
    (audit.written_events, audit.durable_events, audit.fsyncs)
}

/// Successful events of `action` in the log, per target CRN.
async fn logged(client: &Client, action: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for event in client.audit(Some(action), None).await.expect("query log") {
        if event.outcome == "success" {
            *counts.entry(event.target).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_mode_defers_data_plane_fsyncs_and_keeps_answered_events_through_sigkill() {
    let mut daemon = start(&interval_env(LONG_INTERVAL)).await;
    let client = daemon.client();
    let health = client.health().await.expect("health");
    let audit = health.audit.expect("health reports the activity log");
    assert_eq!(audit.data_plane_sync, "interval");
    assert_eq!(audit.sync_interval_ms, Some(10_000));

    let mut keys = Vec::new();
    for i in 0..WORKERS {
        let key = client
            .create_key(&common::unique(&format!("audit-sync-{i}")), None, None)
            .await
            .expect("create key");
        keys.push(key);
    }
    // A key creation is control plane: on disk before its answer.
    let (written, durable, _) = audit_counters(&client).await;
    assert_eq!(
        written, durable,
        "a control-plane event was answered unsynced"
    );

    // Data plane: answered with the line written, not fsynced (the interval is 10 s).
    let wrapped = client
        .wrap(&keys[0].name, Some(b"dek"), &[])
        .await
        .expect("wrap");
    client
        .unwrap(&keys[0].name, &wrapped.ciphertext, &[])
        .await
        .expect("unwrap");
    let plaintext = base64::engine::general_purpose::STANDARD.encode(b"x");
    let (status, body) = daemon
        .raw_auth(
            "POST",
            &format!("/v1/transit/encrypt/{}", keys[0].name),
            format!(r#"{{"plaintext":"{plaintext}"}}"#).as_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (written_after, durable_after, fsyncs_after) = audit_counters(&client).await;
    assert_eq!(written_after, written + 3);
    assert_eq!(
        durable_after, durable,
        "a data-plane event waited for its fsync"
    );

    // A denied unwrap (wrong AAD) is fsynced before its answer, with every line before it.
    client
        .unwrap(&keys[0].name, &wrapped.ciphertext, &["other".into()])
        .await
        .expect_err("unwrap with another AAD");
    let (written_denied, durable_denied, fsyncs_denied) = audit_counters(&client).await;
    assert_eq!(written_denied, written_after + 1);
    assert_eq!(durable_denied, written_denied);
    assert!(fsyncs_denied > fsyncs_after);

    // Load: each worker wraps and unwraps on its own key until the kill.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = keys
        .iter()
        .map(|key| {
            let (client, name, stop) = (daemon.client(), key.name.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut wraps, mut unwraps) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(wrapped) = client.wrap(&name, None, &[]).await else {
                        break;
                    };
                    wraps += 1;
                    if client
                        .unwrap(&name, &wrapped.ciphertext, &[])
                        .await
                        .is_err()
                    {
                        break;
                    }
                    unwraps += 1;
                }
                (wraps, unwraps)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    daemon.kill9().await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = Vec::new();
    for worker in workers {
        answered.push(worker.await.expect("worker"));
    }
    assert!(
        answered.iter().all(|(wraps, _)| *wraps > 0),
        "every worker got wraps answered before the kill: {answered:?}"
    );

    daemon.restart().await;
    let client = daemon.client();
    let report = client.audit_verify().await.expect("verify");
    assert!(report.ok, "the chain is broken after kill -9: {report:?}");
    let output = daemon.cli(&["audit", "verify"]);
    assert!(
        output.status.success(),
        "envault audit verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wraps = logged(&client, "kms.secrets.wrap").await;
    let unwraps = logged(&client, "kms.secrets.unwrap").await;
    for (i, (key, (answered_wraps, answered_unwraps))) in keys.iter().zip(&answered).enumerate() {
        // The first key also had the single wrap and unwrap above.
        let before = u64::from(i == 0);
        let in_log = wraps.get(&key.crn).copied().unwrap_or(0);
        // At most one more: the request in flight at the kill may have been logged unanswered.
        assert!(
            (answered_wraps + before..=answered_wraps + before + 1).contains(&in_log),
            "key {i}: {answered_wraps} wraps answered after the first {before}, {in_log} logged"
        );
        let in_log = unwraps.get(&key.crn).copied().unwrap_or(0);
        assert!(
            (answered_unwraps + before..=answered_unwraps + before + 1).contains(&in_log),
            "key {i}: {answered_unwraps} unwraps answered after the first {before}, {in_log} logged"
        );
    }
}

/// With the background thread at a short interval, deferred lines become durable on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_thread_syncs_data_plane_events() {
    let daemon = start(&interval_env("20ms")).await;
    let client = daemon.client();
    let key = client
        .create_key(&common::unique("audit-sync-thread"), None, None)
        .await
        .expect("create key");
    for _ in 0..5 {
        client.wrap(&key.name, None, &[]).await.expect("wrap");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (written, durable, _) = audit_counters(&client).await;
        if durable == written {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{written} written, only {durable} durable after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_mode_fsyncs_every_answered_event() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = client
        .create_key(&common::unique("audit-sync-always"), None, None)
        .await
        .expect("create key");
    for _ in 0..3 {
        let wrapped = client.wrap(&key.name, None, &[]).await.expect("wrap");
        client
            .unwrap(&key.name, &wrapped.ciphertext, &[])
            .await
            .expect("unwrap");
    }
    let audit = audit_health(&client).await;
    assert_eq!(audit.data_plane_sync, "always");
    assert_eq!(audit.sync_interval_ms, None);
    assert_eq!(audit.written_events, audit.durable_events);
}

/// A bad `[audit]` value stops `envault serve` before it listens, naming the setting.
#[test]
fn bad_audit_settings_are_refused_at_start() {
    for (var, value, named) in [
        (
            "ENVAULT_AUDIT_DATA_PLANE_SYNC",
            "sometimes",
            "audit.data_plane_sync",
        ),
        ("ENVAULT_AUDIT_SYNC_INTERVAL", "0ms", "audit.sync_interval"),
        ("ENVAULT_AUDIT_SYNC_INTERVAL", "30s", "audit.sync_interval"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = std::process::Command::new(common::binary());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ENVAULT_") {
                command.env_remove(name);
            }
        }
        command
            .current_dir(dir.path())
            .arg("serve")
            .env("ENVAULT_SOCKET", dir.path().join("envault.sock"))
            .env("ENVAULT_DATA_DIR", dir.path().join("data"))
            .env(var, value);
        let output = common::run_with_input(command, b"", common::STARTUP_TIMEOUT);
        assert!(!output.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(named) && stderr.contains(value),
            "{var}={value}: {stderr}"
        );
    }
}
