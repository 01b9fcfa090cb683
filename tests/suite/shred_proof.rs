//! The cryptoshred proof (DESIGN.md rule 4): a forced key deletion makes everything under the
//! key unreadable at once, on connections that were already open, durably across a restart,
//! with the material gone from every file of the data dir, and no write acknowledged after it.

use crate::common;
use crate::common::Rng;
use crate::lifecycle_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_api_error, Daemon};
use envault::client::{Client, Method};
use envault::keystore::file::FileKeystore;
use envault::keystore::RootKeyBackend as _;
use lifecycle_support::{
    assert_absent_under, assert_audit_chain_ok, audit_file_events, delete_key, enable_key,
    encodings, expect_status, grant, key_path, lifecycle, raw_code, usable_key, KeepAlive, Needle,
};
use serde_json::Value;
use uuid::Uuid;

/// Records per database in the proof.
const RECORDS: usize = 6;

/// Writes `RECORDS` records with unique markers into `db`; returns (record key, marker).
async fn write_marked(client: &Client, db: &str, rng: &mut Rng) -> BTreeMap<String, String> {
    let mut written = BTreeMap::new();
    for i in 0..RECORDS {
        let marker = format!("SHREDMARK-{db}-{i}-{:016x}", rng.next_u64());
        let key = format!("rec-{i}");
        let value = format!(
            "{{\"secret\":\"{marker}\",\"pad\":\"{}\"}}",
            "x".repeat(i * 10)
        );
        client.put_record(db, &key, value.as_bytes()).await.unwrap();
        written.insert(key, marker);
    }
    written
}

/// The keystore as the stopped daemon left it.
fn open_keystore(daemon: &Daemon) -> FileKeystore {
    FileKeystore::open(&daemon.data_dir, &daemon.data_dir.join("master.key"))
        .expect("open the keystore of the stopped daemon")
}

#[tokio::test]
async fn a_forced_delete_shreds_everything_under_the_key() {
    let mut daemon = Daemon::start().await;
    let admin = daemon.client();
    let mut rng = Rng::new(0x5e7d_0001);
    let root_bytes = rng.bytes(32);

    let doomed = admin
        .create_key("doomed", Some(&root_bytes), None)
        .await
        .unwrap();
    assert_eq!((doomed.origin.as_str(), doomed.version), ("imported", 1));
    expect_status(
        grant(&admin, "databases", "doomed", &["Reader"]).await,
        201,
        "grant databases -> doomed",
    );
    let survivor = usable_key(&admin, "survivor").await;
    let mut markers: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    let mut databases = BTreeMap::new();
    for (db, key) in [
        ("shred-a", "doomed"),
        ("shred-b", "doomed"),
        ("kept-c", "survivor"),
    ] {
        databases.insert(
            db,
            admin.create_database(db, Some(key), None).await.unwrap(),
        );
        markers.insert(db, write_marked(&admin, db, &mut rng).await);
    }

    // Readers whose connections are open before the shred.
    let reader = daemon.client();
    let mut socket = KeepAlive::open(&daemon.socket, &daemon.token).await;
    let read_path = "/v1/databases/shred-a/records/rec-0";
    let first = reader.get_record("shred-a", "rec-0").await.unwrap();
    assert!(String::from_utf8_lossy(&first).contains(&markers["shred-a"]["rec-0"]));
    assert_eq!(socket.request("GET", read_path, b"").await.0, 200);

    let receipt = delete_key(&admin, "doomed", true).await.unwrap();

    // The very next request on each open connection is refused.
    assert_api_error(
        reader.get_record("shred-a", "rec-0").await,
        423,
        "key_destroyed",
    );
    let (status, body) = socket.request("GET", read_path, b"").await;
    assert_eq!(
        (status, raw_code(&body)),
        (423, "key_destroyed".to_string())
    );
    let (status, body) = socket.request("PUT", read_path, b"overwrite").await;
    assert_eq!(
        (status, raw_code(&body)),
        (423, "key_destroyed".to_string())
    );
    for db in ["shred-a", "shred-b"] {
        for key in markers[db].keys() {
            assert_api_error(reader.get_record(db, key).await, 423, "key_destroyed");
        }
        assert_api_error(
            reader.put_record(db, "new", b"x").await,
            423,
            "key_destroyed",
        );
        assert_api_error(
            reader.list_records(db, &Default::default()).await,
            423,
            "key_destroyed",
        );
    }
    // The other key's database is untouched.
    for (key, marker) in &markers["kept-c"] {
        let value = reader.get_record("kept-c", key).await.unwrap();
        assert!(String::from_utf8_lossy(&value).contains(marker.as_str()));
    }
    reader.put_record("kept-c", "after", b"fine").await.unwrap();

    // The receipt: key, destroyed versions, both databases (and a record count, if it has one).
    assert_eq!(receipt["key"], doomed.crn.as_str(), "{receipt}");
    assert_eq!(receipt["destroyed_versions"], serde_json::json!([1]));
    let mut affected: Vec<(String, String, String)> = receipt["affected"]
        .as_array()
        .expect("affected list")
        .iter()
        .map(|a| {
            if let Some(records) = a.get("records").filter(|r| !r.is_null()) {
                assert_eq!(records.as_u64(), Some(RECORDS as u64), "{a}");
            }
            (
                a["name"].as_str().unwrap().to_string(),
                a["crn"].as_str().unwrap().to_string(),
                a["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    affected.sort();
    let crn_of = |db: &str| databases[db].crn.clone();
    assert_eq!(
        affected,
        vec![
            ("shred-a".into(), crn_of("shred-a"), "key".into()),
            ("shred-b".into(), crn_of("shred-b"), "key".into()),
        ]
    );
    time::OffsetDateTime::parse(
        receipt["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("receipt time is RFC 3339");

    // The receipt's chain head is the hash of the kms.secrets.delete event itself.
    assert_audit_chain_ok(&admin).await;
    let log = audit_file_events(&daemon);
    let at = log
        .iter()
        .position(|e| {
            e["action"] == "kms.secrets.delete"
                && e["outcome"] == "success"
                && e["target"] == doomed.crn.as_str()
        })
        .expect("a kms.secrets.delete success event in audit.log");
    let head = receipt["audit_chain_head"].as_str().unwrap();
    assert_eq!(log[at]["hash"], head);
    assert_eq!(log[at]["details"]["key"], doomed.crn.as_str());

    // Metadata stays readable; the key cannot come back.
    let key = admin.get_key("doomed").await.unwrap();
    assert_eq!(key.state, "destroyed");
    assert_api_error(enable_key(&admin, "doomed").await, 423, "key_destroyed");
    assert_api_error(admin.wrap("doomed", None, &[]).await, 423, "key_destroyed");
    assert_api_error(
        delete_key(&admin, "doomed", true).await,
        423,
        "key_destroyed",
    );

    // On disk, with the daemon stopped: no file holds the key bytes or any record marker, and
    // the keystore has no material left for the key.
    drop(socket);
    daemon.stop_graceful().await;
    let mut needles: Vec<Needle> = encodings("imported root key", &root_bytes);
    for written in markers.values() {
        for marker in written.values() {
            needles.extend(encodings(
                &format!("record marker {marker}"),
                marker.as_bytes(),
            ));
        }
    }
    assert_absent_under(&daemon.data_dir, &needles);
    {
        let keystore = open_keystore(&daemon);
        let doomed_id = Uuid::parse_str(&doomed.id).unwrap();
        let survivor_id = Uuid::parse_str(&survivor.id).unwrap();
        assert!(
            keystore.versions(doomed_id).expect("versions").is_empty(),
            "the shredded key still has material: {:?}",
            keystore.versions(doomed_id).expect("versions")
        );
        assert!(!keystore.key_ids().expect("list keys").contains(&doomed_id));
        assert_eq!(keystore.versions(survivor_id).expect("versions"), vec![1]);
    }

    // After a restart: still disabled and locked, metadata shown, the rest intact.
    daemon.restart().await;
    let client = daemon.client();
    for db in ["shred-a", "shred-b"] {
        let info = client.get_database(db).await.unwrap();
        assert_eq!(info.state, "disabled", "{info:?}");
        assert_eq!(info.state_reason.as_deref(), Some("key_destroyed"));
        assert_eq!(info.key, doomed.id);
        assert_eq!(info.key_crn, doomed.crn);
        for key in markers[db].keys() {
            assert_api_error(client.get_record(db, key).await, 423, "key_destroyed");
        }
        assert_api_error(
            client.put_record(db, "new", b"x").await,
            423,
            "key_destroyed",
        );
    }
    let key = client.get_key(&doomed.crn).await.unwrap();
    assert_eq!(key.state, "destroyed");
    let regs = key.registrations.expect("registrations");
    assert!(
        regs.iter().all(|r| r.state == "disabled"),
        "registrations after restart: {regs:?}"
    );
    assert_eq!(regs.len(), 2);
    for (key, marker) in &markers["kept-c"] {
        let value = client.get_record("kept-c", key).await.unwrap();
        assert!(String::from_utf8_lossy(&value).contains(marker.as_str()));
    }
    assert_eq!(client.get_record("kept-c", "after").await.unwrap(), b"fine");
    // Importing the same bytes again makes a new, unrelated key: the old data stays shredded.
    let again = client
        .create_key("phoenix", Some(&root_bytes), None)
        .await
        .unwrap();
    assert_ne!(again.id, doomed.id);
    assert_api_error(
        client.get_record("shred-a", "rec-0").await,
        423,
        "key_destroyed",
    );
}

/// One PUT of the race: when it started and ended (relative to the race's start), its record
/// key, and its status (204, or the error code).
#[derive(Debug)]
struct Attempt {
    started: Duration,
    ended: Duration,
    key: String,
    outcome: Result<(), String>,
}

/// What [`shred_under_write_load`] saw.
struct Race {
    receipt: Value,
    attempts: Vec<Attempt>,
    shred_started: Duration,
    shred_returned: Duration,
    cold_writes: u64,
}

/// Four writers hammer PUTs on `hot` (under `hot_key`) and one on `cold` (another key) while
/// `hot_key` is force-deleted; the writers go on for a while after the shred returned.
async fn shred_under_write_load(daemon: &Daemon, hot_key: &str, hot: &str, cold: &str) -> Race {
    let admin = daemon.client();
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = daemon.client();
        let stop = Arc::clone(&stop);
        let hot = hot.to_string();
        writers.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{writer}-{n}");
                n += 1;
                let started = origin.elapsed();
                let result = client.put_record(&hot, &key, key.as_bytes()).await;
                let ended = origin.elapsed();
                attempts.push(Attempt {
                    started,
                    ended,
                    key,
                    outcome: result.map_err(|e| e.code().unwrap_or("transport").to_string()),
                });
            }
            attempts
        }));
    }
    // A writer on the other key's database, which must never be disturbed.
    let cold_writer = {
        let client = daemon.client();
        let stop = Arc::clone(&stop);
        let cold = cold.to_string();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("c{n}");
                client
                    .put_record(&cold, &key, key.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("cold write {key}: {e}"));
                n += 1;
            }
            n
        })
    };

    tokio::time::sleep(Duration::from_millis(250)).await;
    let shred_started = origin.elapsed();
    let receipt = delete_key(&admin, hot_key, true).await.unwrap();
    let shred_returned = origin.elapsed();
    tokio::time::sleep(Duration::from_millis(250)).await;
    stop.store(true, Ordering::Relaxed);
    let mut attempts: Vec<Attempt> = Vec::new();
    for writer in writers {
        attempts.extend(writer.await.unwrap());
    }
    Race {
        receipt,
        attempts,
        shred_started,
        shred_returned,
        cold_writes: cold_writer.await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_write_is_acknowledged_after_the_shred_returns() {
    let daemon = Daemon::start().await;
    let admin = daemon.client();
    usable_key(&admin, "hot-key").await;
    usable_key(&admin, "cold-key").await;
    admin
        .create_database("hot", Some("hot-key"), None)
        .await
        .unwrap();
    admin
        .create_database("cold", Some("cold-key"), None)
        .await
        .unwrap();

    let race = shred_under_write_load(&daemon, "hot-key", "hot", "cold").await;
    let attempts = &race.attempts;
    assert!(race.cold_writes > 0);
    let acknowledged: Vec<&Attempt> = attempts.iter().filter(|a| a.outcome.is_ok()).collect();
    let after: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started > race.shred_returned)
        .collect();
    assert!(
        acknowledged.len() >= 10,
        "too few writes before the shred to race it: {}",
        acknowledged.len()
    );
    assert!(
        after.len() >= 10,
        "too few writes after the shred: {}",
        after.len()
    );
    // Every failure is the shred's refusal, never a storage error or a dropped connection.
    for attempt in attempts {
        if let Err(code) = &attempt.outcome {
            assert_eq!(code, "key_destroyed", "{attempt:?}");
            assert!(
                attempt.ended > race.shred_started,
                "refused before the shred began: {attempt:?}"
            );
        }
    }
    for attempt in &after {
        assert!(
            attempt.outcome.is_err(),
            "a write started {:?} after the shred returned was acknowledged: {attempt:?}",
            attempt.started - race.shred_returned
        );
    }
    // Every acknowledged write, and nothing else, is among the shredded records: a preview of
    // the destroyed key counts exactly the acknowledged writes (none half-written, none lost).
    let affected = &race.receipt["affected"].as_array().expect("affected")[0];
    assert_eq!(affected["name"], "hot");
    let preview = lifecycle(
        &admin,
        Method::DELETE,
        &key_path("hot-key", "?dry_run=true"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(preview["databases"][0]["name"], "hot", "{preview}");
    assert_eq!(
        preview["databases"][0]["records"].as_u64(),
        Some(acknowledged.len() as u64),
        "records stored under the shredded key vs acknowledged writes: {preview}"
    );
    for attempt in &acknowledged {
        assert_api_error(
            admin.get_record("hot", &attempt.key).await,
            423,
            "key_destroyed",
        );
    }
    // The cold database holds every write it was acknowledged.
    for n in [0, race.cold_writes / 2, race.cold_writes - 1] {
        let key = format!("c{n}");
        assert_eq!(
            admin.get_record("cold", &key).await.unwrap(),
            key.as_bytes()
        );
    }
    // The receipt's chain head is the delete event's own hash.
    let log = audit_file_events(&daemon);
    let at = log
        .iter()
        .position(|e| e["action"] == "kms.secrets.delete")
        .expect("kms.secrets.delete event");
    let head: &Value = &race.receipt["audit_chain_head"];
    assert_eq!(&log[at]["hash"], head, "the receipt names its own event");
    assert_audit_chain_ok(&admin).await;
}

/// Under write load the receipt's `audit_chain_head` must still be the hash of the
/// `kms.secrets.delete` event, and no refusal caused by the shred may be logged before the shred
/// itself. Repeated because the window is a few microseconds wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_receipt_chain_head_is_the_delete_event_itself_under_load() {
    let daemon = Daemon::start().await;
    let admin = daemon.client();
    usable_key(&admin, "calm-key").await;
    admin
        .create_database("calm", Some("calm-key"), None)
        .await
        .unwrap();
    for round in 0..6 {
        let key = format!("hot-key-{round}");
        let db = format!("hot-{round}");
        usable_key(&admin, &key).await;
        let db_crn = admin
            .create_database(&db, Some(&key), None)
            .await
            .unwrap()
            .crn;
        let race = shred_under_write_load(&daemon, &key, &db, "calm").await;
        let log = audit_file_events(&daemon);
        let key_crn = race.receipt["key"].as_str().unwrap();
        let at = log
            .iter()
            .position(|e| e["action"] == "kms.secrets.delete" && e["target"] == key_crn)
            .expect("kms.secrets.delete event");
        let head = &race.receipt["audit_chain_head"];
        assert_eq!(
            &log[at]["hash"], head,
            "round {round}: the receipt names its own event"
        );
        // No refusal of a write to the shredded database is logged before the shred.
        let refused_before: Vec<String> = log[..at]
            .iter()
            .filter(|e| e["reason"] == "key_destroyed" && e["target"] == db_crn.as_str())
            .map(|e| format!("{} {} {}", e["action"], e["outcome"], e["target"]))
            .collect();
        assert!(
            refused_before.is_empty(),
            "round {round}: refusals logged before the shred: {refused_before:?}"
        );
    }
}
