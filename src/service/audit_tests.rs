//! Tests of the activity log: group commit, interval fsyncs, torn tails, the keyed chain and
//! its head file.

use std::time::Duration;

use super::*;

fn key() -> ChainKey {
    ChainKey::new(crate::crypto::SecretKey::from_slice(&[7u8; 32]).unwrap())
}

/// Group commit: concurrent appenders (plain threads and tokio tasks that block in place)
/// each get their event on disk, in one unbroken chain.
#[test]
fn concurrent_appends_share_fsyncs_and_keep_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = std::sync::Arc::new(AuditLog::open(&path, key()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..25 {
                    let target = format!("crn:{t}:{i}");
                    log.append(
                        &Principal::system(),
                        "kms.secrets.wrap",
                        &target,
                        "success",
                        None,
                        None,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let log = std::sync::Arc::clone(&log);
                tokio::spawn(async move {
                    for i in 0..25 {
                        let target = format!("crn:task{t}:{i}");
                        log.append(
                            &Principal::system(),
                            "kms.secrets.unwrap",
                            &target,
                            "success",
                            None,
                            None,
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    for thread in threads {
        thread.join().unwrap();
    }
    let report = log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 400);
    assert_eq!(log.durability.durable(), 400);
}

fn wrap(log: &AuditLog, outcome: &str) {
    log.append(
        &Principal::system(),
        "kms.secrets.wrap",
        "crn:k",
        outcome,
        None,
        None,
    )
    .unwrap();
}

/// `interval`: a successful wrap is answered with its line written and chained but not
/// fsynced; a denied wrap and a control-plane event are fsynced before they return, and
/// their fsync covers the wrap before them.
#[test]
fn interval_mode_defers_only_successful_data_plane_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    // Long enough that the thread cannot run during the test.
    let log = AuditLog::open_with(
        &path,
        key(),
        DataPlaneSync::Interval(Duration::from_secs(10)),
    )
    .unwrap();
    wrap(&log, "success");
    wrap(&log, "success");
    assert_eq!(log.durability.fsyncs(), 0);
    assert_eq!(log.durability.durable(), 0);
    assert_eq!(log.durability.written(), 2);
    let report = verify_path(&path, &key()).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 2);
    assert_eq!(report.head, log.head());

    wrap(&log, "denied");
    assert_eq!(log.durability.fsyncs(), 1);
    assert_eq!(log.durability.durable(), 3);
    wrap(&log, "success");
    log.append(
        &Principal::system(),
        "kms.secrets.create",
        "crn:k2",
        "success",
        None,
        None,
    )
    .unwrap();
    assert_eq!(log.durability.fsyncs(), 2);
    assert_eq!(log.durability.durable(), 5);
    let stats = log.sync_stats();
    assert_eq!(stats.data_plane_sync, "interval");
    assert_eq!(stats.sync_interval_ms, Some(10_000));
    assert_eq!((stats.written_events, stats.durable_events), (5, 5));
    assert!(log.verify().unwrap().ok);
}

/// The background thread fsyncs deferred lines about one interval after the first of them,
/// with one `fdatasync` for the lot.
#[test]
fn interval_thread_makes_data_plane_events_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let interval = Duration::from_millis(50);
    let log = AuditLog::open_with(&path, key(), DataPlaneSync::Interval(interval)).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..3 {
        wrap(&log, "success");
    }
    while log.durability.durable() < 3 {
        // Generous: the machine running the tests may be loaded.
        assert!(start.elapsed() < Duration::from_secs(10), "never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(start.elapsed() >= interval, "synced before the interval");
    assert!((1..=3).contains(&log.durability.fsyncs()));
    assert!(log.verify().unwrap().ok);
}

/// Dropping the log stops its thread at once (not after the interval), after a last fsync.
#[test]
fn dropping_the_log_stops_the_sync_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_with(
        &path,
        key(),
        DataPlaneSync::Interval(Duration::from_secs(10)),
    )
    .unwrap();
    wrap(&log, "success");
    let durability = Arc::downgrade(&log.durability);
    let start = std::time::Instant::now();
    drop(log);
    assert!(start.elapsed() < Duration::from_secs(5));
    // The thread held the other reference; it is gone, so the thread has exited.
    assert!(durability.upgrade().is_none());
    assert_eq!(verify_path(&path, &key()).unwrap().events, 1);
}

#[test]
fn a_line_torn_by_a_crash_is_cut_and_the_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let who = Principal::system();
    let log = AuditLog::open(&path, key()).unwrap();
    for target in ["crn:a", "crn:b"] {
        log.append(&who, "kms.secrets.create", target, "success", None, None)
            .unwrap();
    }
    drop(log);
    let whole = std::fs::read(&path).unwrap();
    // The write of a third event, cut short: no newline at its end.
    let mut torn = whole.clone();
    torn.extend_from_slice(br#"{"seq":2,"time":"2026-11-27T05:00:00Z","act"#);
    std::fs::write(&path, &torn).unwrap();
    let log = AuditLog::open(&path, key()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    log.append(&who, "kms.secrets.delete", "crn:a", "success", None, None)
        .unwrap();
    let report = log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 3);
}

#[test]
fn chain_verifies_and_detects_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, key()).unwrap();
    let who = Principal::system();
    for i in 0..5 {
        log.append(
            &who,
            "kms.secrets.create",
            &format!("crn:{i}"),
            "success",
            None,
            None,
        )
        .unwrap();
    }
    assert!(log.verify().unwrap().ok);
    assert_eq!(log.verify().unwrap().events, 5);
    drop(log);
    // Reopen continues the chain.
    let log = AuditLog::open(&path, key()).unwrap();
    log.append(&who, "kms.secrets.delete", "crn:x", "success", None, None)
        .unwrap();
    assert_eq!(log.verify().unwrap().events, 6);
    assert_eq!(
        log.query(Some("kms.secrets.delete"), None).unwrap().len(),
        1
    );
    assert_eq!(log.query(Some("kms.*"), None).unwrap().len(), 6);
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = text.replacen("crn:2", "crn:9", 1);
    std::fs::write(&path, tampered).unwrap();
    let report = verify_path(&path, &key()).unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken_line, Some(4));
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(2);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    assert_eq!(
        verify_path(&path, &key()).unwrap().first_broken_line,
        Some(3)
    );
}

fn create(log: &AuditLog, target: &str) {
    log.append(
        &Principal::system(),
        "kms.secrets.create",
        target,
        "success",
        None,
        None,
    )
    .unwrap();
}

/// A log as the daemon wrote it before the chain was keyed: version-1 header, plain SHA-256.
fn legacy_log(path: &Path, events: usize) {
    use sha2::{Digest, Sha256};
    let mut text = String::from(super::super::audit_chain::HEADER_V1);
    text.push('\n');
    let mut prev = GENESIS.to_string();
    for seq in 0..events {
        let mut event = AuditEvent {
            seq: seq as u64,
            time: "2026-01-01T00:00:00Z".into(),
            action: "kms.secrets.create".into(),
            target: format!("crn:old:{seq}"),
            initiator: Initiator {
                token_id: "tok".into(),
                peer_uid: None,
            },
            outcome: "success".into(),
            reason: None,
            details: None,
            chain: None,
            prev: prev.clone(),
            hash: String::new(),
        };
        let json = serde_json::to_vec(&event).unwrap();
        let digest: [u8; 32] = Sha256::new()
            .chain_update(prev.as_bytes())
            .chain_update(&json)
            .finalize()
            .into();
        event.hash = super::super::audit_chain::hex(&digest);
        text.push_str(&serde_json::to_string(&event).unwrap());
        text.push('\n');
        prev = event.hash;
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn an_old_log_still_verifies_and_new_lines_are_keyed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    legacy_log(&path, 3);
    // Verifies as it is (no head file yet: it was never anchored).
    let report = verify_path(&path, &key()).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 3);
    let log = AuditLog::open(&path, key()).unwrap();
    create(&log, "crn:new");
    let report = log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 4);
    drop(log);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        !lines[3].contains("\"chain\""),
        "old lines stay as they were"
    );
    assert!(
        lines[4].contains(r#""chain":"hmac-sha256""#),
        "{}",
        lines[4]
    );
    // Upgraded: the head file now anchors it, so cutting the new line is found.
    std::fs::write(&path, lines[..4].join("\n") + "\n").unwrap();
    let report = verify_path(&path, &key()).unwrap();
    assert!(!report.ok && report.problem.unwrap().contains("lines were removed"));
    assert!(AuditLog::open(&path, key()).is_err());
}

#[test]
fn removed_last_lines_and_a_missing_head_are_found_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, key()).unwrap();
    for i in 0..4 {
        create(&log, &format!("crn:{i}"));
    }
    log.append(
        &Principal::system(),
        "kms.secrets.delete",
        "crn:1",
        "success",
        None,
        None,
    )
    .unwrap();
    drop(log);
    let whole = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = whole.lines().collect();
    // Cut the delete (and the line before it): the chain is valid, only shorter.
    std::fs::write(&path, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    let report = verify_path(&path, &key()).unwrap();
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.events, 3);
    assert!(report
        .problem
        .as_deref()
        .unwrap()
        .contains("audit.head records 5"));
    let refused = AuditLog::open(&path, key()).err().expect("refused");
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        refused.to_string().contains("lines were removed"),
        "{refused}"
    );
    // The refusal changed nothing: putting the lines back makes the log whole again.
    std::fs::write(&path, &whole).unwrap();
    assert!(verify_path(&path, &key()).unwrap().ok);
    // Without its head file, a keyed log cannot be checked for removed lines: refused too.
    let head = audit_head::head_path(&path);
    std::fs::remove_file(&head).unwrap();
    assert!(!verify_path(&path, &key()).unwrap().ok);
    assert!(AuditLog::open(&path, key()).is_err());
}

#[test]
fn a_chain_recomputed_without_the_key_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, key()).unwrap();
    for i in 0..4 {
        create(&log, &format!("crn:{i}"));
    }
    drop(log);
    // Rewrite the log from scratch the old (unkeyed) way with one event changed, and a
    // version-1 header: the head file's keyed hash no longer matches.
    legacy_log(&path, 4);
    let report = verify_path(&path, &key()).unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(report.problem.as_deref().unwrap().contains("audit.head"));
    // Keyed lines recomputed with another key: the first one fails.
    let other = ChainKey::new(crate::crypto::SecretKey::from_slice(&[8u8; 32]).unwrap());
    let elsewhere = tempfile::tempdir().unwrap();
    let forged = elsewhere.path().join("audit.log");
    let log = AuditLog::open(&forged, other).unwrap();
    create(&log, "crn:forged");
    drop(log);
    let report = verify_path(&forged, &key()).unwrap();
    assert_eq!(report.first_broken_line, Some(2), "{report:?}");
}
