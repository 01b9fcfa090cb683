//! Backups of the real daemon (DESIGN.md rule 7, API.md "Backups"): round trip under a separate
//! backup key, restore with a key override, registrations, snapshot consistency under
//! concurrent writers, the delegation rules, cryptoshred of the database key and of the backup
//! key, deletion, rotation rewrapping only the header slots, and scheduled backups with retention.

use crate::backup_support;
use crate::common;
use crate::common::{wait_for, Rng};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backup_support::{
    assert_failed, assert_json_error, assert_no_database, assert_same_records, audit_events,
    authorizations, backup_dir, backup_dir_files, backup_file, backup_key, call, create_backup,
    create_backup_raw, database_count, delete_backup_raw, dump, expect, get_backup_raw, get_key,
    grant, id_of, list_backups, records_key, restore, restore_raw, rotate, shred, HEADER_LEN_AT,
    SLOT_A,
};
use common::{unique, Daemon};
use envault::client::{Client, Method};
use serde_json::Value;

/// ~300 records: small binary ones, a few of 200–260 KiB, a few empty ones, some keys with
/// characters that need encoding.
fn sample_records(seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut records = BTreeMap::new();
    for i in 0..296u64 {
        let value = match i {
            7 | 107 | 207 => Vec::new(),
            10 | 150 | 295 => {
                let extra = rng.below(60 * 1024) as usize;
                rng.bytes(200 * 1024 + extra)
            }
            _ => {
                let len = 1 + rng.below(3000) as usize;
                rng.bytes(len)
            }
        };
        records.insert(format!("rec/{i:04}"), value);
    }
    records.insert("with space".into(), b"spaced".to_vec());
    records.insert("ünïcödé/ключ".into(), rng.bytes(77));
    records.insert("percent%2Fslash".into(), Vec::new());
    records.insert("z".repeat(1024), rng.bytes(10));
    records
}

async fn write_records(client: &Client, db: &str, records: &BTreeMap<String, Vec<u8>>) {
    for (key, value) in records {
        client
            .put_record(db, key, value)
            .await
            .unwrap_or_else(|e| panic!("put {db}/{key}: {e}"));
    }
}

/// Keys A (records) and B (backup), a database under A with backup key B, filled.
struct Setup {
    a: envault::api::KeyInfo,
    b: envault::api::KeyInfo,
    db: envault::api::DatabaseInfo,
    records: BTreeMap<String, Vec<u8>>,
}

async fn setup(client: &Client, records: BTreeMap<String, Vec<u8>>) -> Setup {
    let a = records_key(client, &unique("key-a")).await;
    let (b, _) = backup_key(client, &unique("key-b")).await;
    let db = client
        .create_database(&unique("db"), Some(&a.name), Some(&b.name))
        .await
        .expect("create a database with a backup key");
    assert_eq!(db.key, a.id);
    assert_eq!(db.backup_key.as_deref(), Some(b.id.as_str()));
    write_records(client, &db.name, &records).await;
    Setup { a, b, db, records }
}

/// The `registrations` of a key.
async fn registrations_of(client: &Client, key: &str) -> Vec<Value> {
    let info = get_key(client, key).await;
    info["registrations"]
        .as_array()
        .unwrap_or_else(|| panic!("no registrations in {info}"))
        .clone()
}

/// `DELETE /v1/authorizations/{id}`.
async fn revoke(client: &Client, id: &str) {
    let answer = call(
        client,
        Method::DELETE,
        &format!("/v1/authorizations/{id}"),
        None,
    )
    .await;
    assert_eq!(answer.0, 204, "revoke {id}: {}", answer.1);
}

#[track_caller]
fn check_time(text: &str) {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_under_a_backup_key_with_registrations_and_audit() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let s = setup(&client, sample_records(1)).await;
    assert_same_records(&dump(&client, &s.db.name).await, &s.records, "source db");

    let info = create_backup(&client, &s.db.name).await;
    let id = id_of(&info);
    uuid::Uuid::parse_str(&id).expect("backup id is a UUID");
    let path = backup_file(&daemon, &id);
    assert!(
        info["crn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":backup:{id}")),
        "{info}"
    );
    assert_eq!(info["database"], s.db.name.as_str());
    assert_eq!(info["database_id"], s.db.id.as_str());
    assert_eq!(
        info["key"],
        s.b.id.as_str(),
        "the backup key wraps the backup"
    );
    assert_eq!(info["key_crn"], s.b.crn.as_str());
    assert_eq!(info["key_version"], 1);
    assert_eq!(info["record_count"], s.records.len() as u64);
    assert_eq!(info["state"], "available");
    assert_eq!(info["path"], path.display().to_string().as_str());
    check_time(info["created_at"].as_str().unwrap());
    let size = std::fs::metadata(&path).expect("backup file exists").len();
    assert_eq!(info["size"], size);
    let payload: usize = s.records.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    assert!(
        size as usize > payload,
        "the file holds every record ({size} bytes for {payload} bytes of records)"
    );
    // Never the plaintext on disk: a large value's bytes do not appear in the file.
    let file_bytes = std::fs::read(&path).unwrap();
    let probe = &s.records["rec/0150"][1000..1064];
    assert!(!common::contains(&file_bytes, probe), "plaintext in backup");
    assert!(
        !common::contains(&file_bytes, b"rec/0001"),
        "record key in the clear"
    );
    assert_eq!(backup_dir_files(&daemon), vec![format!("{id}.evb")]);

    let listed = list_backups(&client).await;
    assert_eq!(listed, vec![info.clone()], "GET /v1/backups");
    assert_eq!(
        expect(get_backup_raw(&client, &id).await, 200, "GET backup"),
        info
    );
    assert_eq!(
        expect(
            get_backup_raw(&client, info["crn"].as_str().unwrap()).await,
            200,
            "GET backup by CRN"
        ),
        info
    );

    // Restore under the original database's key.
    let into = unique("restored");
    let restored = restore(&client, &id, &into, None).await;
    assert_eq!(restored.name, into);
    assert_eq!(restored.state, "active");
    assert_eq!(restored.key, s.a.id, "restored under the original key");
    assert_ne!(restored.id, s.db.id);
    assert_same_records(&dump(&client, &into).await, &s.records, "restore");

    // Restore with a key override.
    let c = records_key(&client, &unique("key-c")).await;
    let into_c = unique("restored-c");
    let restored_c = restore(&client, &id, &into_c, Some(&c.name)).await;
    assert_eq!(restored_c.key, c.id, "restored under the key override");
    assert_same_records(&dump(&client, &into_c).await, &s.records, "restore to C");
    // The restored databases are independent of the source.
    client
        .put_record(&s.db.name, "rec/0000", b"changed")
        .await
        .unwrap();
    assert_eq!(
        client.get_record(&into, "rec/0000").await.unwrap(),
        s.records["rec/0000"]
    );

    // A restore into an existing name, of an unknown backup, or with an unknown key creates
    // nothing.
    let count = database_count(&client).await;
    assert_json_error(
        &restore_raw(&client, &id, &s.db.name, None).await,
        409,
        "conflict",
    );
    let nowhere = unique("nowhere");
    assert_json_error(
        &restore_raw(&client, &uuid::Uuid::new_v4().to_string(), &nowhere, None).await,
        404,
        "not_found",
    );
    assert_json_error(
        &restore_raw(&client, &id, &nowhere, Some("no-such-key")).await,
        404,
        "not_found",
    );
    assert_no_database(&client, &nowhere).await;
    assert_eq!(database_count(&client).await, count);

    // The backup is registered with B.
    let registrations = registrations_of(&client, &s.b.name).await;
    let reg = registrations
        .iter()
        .find(|r| r["kind"] == "backup")
        .unwrap_or_else(|| panic!("no backup registration on B: {registrations:?}"));
    assert_eq!(reg["id"], id.as_str());
    assert_eq!(reg["crn"], info["crn"]);
    assert_eq!(reg["state"], "available");
    assert_eq!(reg["role"], "backup_key");
    assert!(registrations.iter().any(|r| r["kind"] == "database"
        && r["id"] == s.db.id.as_str()
        && r["role"] == "backup_key"));
    // ... and not with A (A protects the database's records, not the backup).
    assert!(!registrations_of(&client, &s.a.name)
        .await
        .iter()
        .any(|r| r["kind"] == "backup"));
    let refused = call(
        &client,
        Method::DELETE,
        &format!("/v1/keys/{}", s.b.id),
        None,
    )
    .await;
    assert_json_error(&refused, 409, "key_in_use");
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&id) || message.contains("backup of"),
        "key_in_use names the backup: {message}"
    );
    assert_eq!(get_key(&client, &s.b.name).await["state"], "active");

    // Only operators manage backups.
    let app = expect(
        call(
            &client,
            Method::POST,
            "/v1/tokens",
            Some(serde_json::json!({"role": "app", "databases": [s.db.name]})),
        )
        .await,
        201,
        "app token",
    );
    let app = daemon.client_with_token(app["token"].as_str());
    assert_json_error(&create_backup_raw(&app, &s.db.name).await, 403, "forbidden");
    assert_json_error(&get_backup_raw(&app, &id).await, 403, "forbidden");
    let into_app = unique("by-app");
    assert_json_error(
        &restore_raw(&app, &id, &into_app, None).await,
        403,
        "forbidden",
    );
    assert_no_database(&client, &into_app).await;
    assert_json_error(
        &call(&app, Method::GET, "/v1/backups", None).await,
        403,
        "forbidden",
    );
    assert_json_error(
        &call(&app, Method::DELETE, &format!("/v1/backups/{id}"), None).await,
        403,
        "forbidden",
    );
    assert!(path.exists());

    // The activity log.
    let creates = audit_events(&client, "backups.create").await;
    assert!(
        creates
            .iter()
            .any(|e| e["outcome"] == "success" && e["target"] == info["crn"]),
        "backups.create event: {creates:?}"
    );
    let restores = audit_events(&client, "backups.restore").await;
    let ok: Vec<&Value> = restores
        .iter()
        .filter(|e| e["outcome"] == "success")
        .collect();
    assert_eq!(ok.len(), 2, "two successful restores: {restores:?}");
    assert!(ok.iter().all(|e| e["target"] == info["crn"]));
    assert!(ok
        .iter()
        .any(|e| e["details"]["into"] == restored.crn.as_str()));
    assert!(
        restores
            .iter()
            .filter(|e| e["outcome"] != "success")
            .count()
            >= 3,
        "failed restores are logged: {restores:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_file_and_the_registration() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let s = setup(&client, sample_records(2)).await;
    let first = create_backup(&client, &s.db.name).await;
    let second = create_backup(&client, &s.db.name).await;
    let (id, other) = (id_of(&first), id_of(&second));
    assert_ne!(id, other);
    assert!(backup_file(&daemon, &id).exists());

    let answer = call(&client, Method::DELETE, &format!("/v1/backups/{id}"), None).await;
    assert_eq!(answer.0, 204, "delete backup: {}", answer.1);
    assert!(!backup_file(&daemon, &id).exists(), "the file is removed");
    assert_eq!(backup_dir_files(&daemon), vec![format!("{other}.evb")]);
    assert_json_error(&get_backup_raw(&client, &id).await, 404, "not_found");
    let listed: Vec<String> = list_backups(&client).await.iter().map(id_of).collect();
    assert_eq!(listed, vec![other.clone()]);
    let registrations = registrations_of(&client, &s.b.id).await;
    assert!(!registrations.iter().any(|r| r["id"] == id.as_str()));
    assert!(registrations.iter().any(|r| r["id"] == other.as_str()));
    let nowhere = unique("nowhere");
    assert_json_error(
        &restore_raw(&client, &id, &nowhere, None).await,
        404,
        "not_found",
    );
    assert_no_database(&client, &nowhere).await;
    let again = call(&client, Method::DELETE, &format!("/v1/backups/{id}"), None).await;
    assert_json_error(&again, 404, "not_found");

    // The other backup is untouched.
    let into = unique("restored");
    restore(&client, &other, &into, None).await;
    assert_same_records(&dump(&client, &into).await, &s.records, "other backup");

    let deletes = audit_events(&client, "backups.delete").await;
    assert!(
        deletes.iter().any(|e| e["outcome"] == "success"),
        "backups.delete event: {deletes:?}"
    );
    assert!(
        deletes.iter().any(|e| e["outcome"] != "success"),
        "the failed delete is logged: {deletes:?}"
    );
}

/// Value of writer records: the key repeated `1 + i % 97` times.
fn writer_value(key: &str, i: usize) -> Vec<u8> {
    key.repeat(1 + i % 97).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_consistent_snapshots_under_concurrent_writers() {
    const WRITERS: usize = 4;
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = records_key(&client, &unique("key")).await;
    let db = client
        .create_database(&unique("db"), Some(&key.name), None)
        .await
        .unwrap();
    // Some bulk so that a backup takes a moment.
    let mut rng = Rng::new(3);
    let mut preload = BTreeMap::new();
    for i in 0..300 {
        preload.insert(format!("bulk/{i:04}"), rng.bytes(8 * 1024));
    }
    write_records(&client, &db.name, &preload).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = daemon.client();
        let stop = Arc::clone(&stop);
        let name = db.name.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}/{i:06}");
                client
                    .put_record(&name, &key, &writer_value(&key, i))
                    .await
                    .unwrap_or_else(|e| panic!("writer {w}: put {key}: {e}"));
                i += 1;
            }
            i
        }));
    }
    // Let the writers get going, then take backups while they write.
    wait_for(Duration::from_secs(20), "writers to start", || {
        let client = &client;
        let name = &db.name;
        async move {
            let page = client
                .list_records(
                    name,
                    &envault::api::RecordListQuery {
                        prefix: Some("w".into()),
                        after: None,
                        limit: Some(1000),
                    },
                )
                .await
                .unwrap();
            (page.keys.len() >= 40).then_some(())
        }
    })
    .await;
    let mut backups = Vec::new();
    for _ in 0..3 {
        backups.push(create_backup(&client, &db.name).await);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.await.expect("writer task"));
    }
    let live = client.list_databases().await.unwrap();
    assert!(live.iter().any(|d| d.name == db.name));

    let mut previous = [0usize; WRITERS];
    for (n, info) in backups.iter().enumerate() {
        let into = unique("snap");
        restore(&client, &id_of(info), &into, None).await;
        let records = dump(&client, &into).await;
        assert_eq!(
            records.len() as u64,
            info["record_count"].as_u64().unwrap(),
            "backup {n}: restored count == record_count"
        );
        let mut per_writer = vec![BTreeSet::new(); WRITERS];
        for (key, value) in &records {
            if let Some(bulk) = preload.get(key) {
                assert!(value == bulk, "backup {n}: {key} differs");
                continue;
            }
            let (w, i) = key
                .strip_prefix('w')
                .and_then(|rest| rest.split_once('/'))
                .map(|(w, i)| (w.parse::<usize>().unwrap(), i.parse::<usize>().unwrap()))
                .unwrap_or_else(|| panic!("backup {n}: unexpected key {key:?}"));
            assert_eq!(
                value,
                &writer_value(key, i),
                "backup {n}: torn or wrong value for {key}"
            );
            per_writer[w].insert(i);
        }
        assert_eq!(
            preload.keys().filter(|k| records.contains_key(*k)).count(),
            preload.len(),
            "backup {n}: every preloaded record"
        );
        for (w, seen) in per_writer.iter().enumerate() {
            // Each writer writes sequentially: a snapshot holds a prefix of its writes.
            let count = seen.len();
            assert_eq!(
                seen.iter().copied().collect::<Vec<_>>(),
                (0..count).collect::<Vec<_>>(),
                "backup {n}: writer {w}'s writes are not a prefix"
            );
            assert!(
                count >= previous[w],
                "backup {n}: writer {w} went back in time"
            );
            assert!(count <= written[w]);
            previous[w] = count;
        }
    }
    let first: usize = backups[0]["record_count"].as_u64().unwrap() as usize;
    let last: usize = backups[2]["record_count"].as_u64().unwrap() as usize;
    assert!(
        last > first,
        "writers kept writing between backups ({first} then {last})"
    );
    let total: usize = written.iter().sum::<usize>() + preload.len();
    assert_eq!(record_count(&client, &db.name).await, total);
}

async fn record_count(client: &Client, db: &str) -> usize {
    backup_support::all_keys(client, db).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_rules_for_backup_keys() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let a = records_key(&client, &unique("key-a")).await;
    let b = client
        .create_key(&unique("key-b"), None, None)
        .await
        .unwrap();
    let reader_only = grant(&client, "databases", &b.id, &["Reader"]).await;
    let name = unique("db");

    // Reader alone is not enough for a backup key.
    let count = database_count(&client).await;
    let refused = call(
        &client,
        Method::POST,
        "/v1/databases",
        Some(serde_json::json!({"name": name, "key": a.name, "backup_key": b.name})),
    )
    .await;
    assert_json_error(&refused, 403, "not_authorized_for_key");
    assert_no_database(&client, &name).await;
    assert_eq!(database_count(&client).await, count);
    assert!(
        !authorizations(&client)
            .await
            .iter()
            .any(|a| a["source"] == "backups"),
        "no delegation without a delegator"
    );

    let delegator = grant(
        &client,
        "databases",
        &b.id,
        &["Reader", "AuthorizationDelegator"],
    )
    .await;
    let db = client
        .create_database(&name, Some(&a.name), Some(&b.name))
        .await
        .unwrap();
    let delegated = |list: &[Value]| -> Vec<Value> {
        list.iter()
            .filter(|a| a["source"] == "backups" && a["target"] == b.crn.as_str())
            .cloned()
            .collect()
    };
    let first = delegated(&authorizations(&client).await);
    assert_eq!(first.len(), 1, "one delegated authorization: {first:?}");
    assert_eq!(first[0]["roles"], serde_json::json!(["Reader"]));
    assert_eq!(first[0]["created_by"], db.crn.as_str());

    // Revoking the delegated policy: envault recreates it.
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    revoke(&client, &first_id).await;
    let again = delegated(&authorizations(&client).await);
    assert_eq!(
        again.len(),
        1,
        "the delegated authorization is back: {again:?}"
    );
    assert_ne!(again[0]["id"], first_id.as_str());
    assert_eq!(again[0]["created_by"], db.crn.as_str());
    assert_eq!(again[0]["roles"], serde_json::json!(["Reader"]));

    let records = sample_records(4)
        .into_iter()
        .filter(|(k, _)| k.starts_with("rec/00"))
        .collect::<BTreeMap<_, _>>();
    write_records(&client, &db.name, &records).await;
    let before = create_backup(&client, &db.name).await;
    assert_eq!(before["key"], b.id.as_str());

    // Revoking the delegator authorization: backups of this database under B can neither be
    // made nor restored.
    revoke(&client, &delegator).await;
    let files = backup_dir_files(&daemon);
    assert_json_error(
        &create_backup_raw(&client, &db.name).await,
        403,
        "not_authorized_for_key",
    );
    assert_eq!(
        backup_dir_files(&daemon),
        files,
        "no file for a refused backup"
    );
    assert_eq!(list_backups(&client).await.len(), 1);
    let count = database_count(&client).await;
    let into = unique("restored");
    assert_json_error(
        &restore_raw(&client, &id_of(&before), &into, None).await,
        403,
        "not_authorized_for_key",
    );
    assert_no_database(&client, &into).await;
    assert_eq!(database_count(&client).await, count);
    // The database itself (under A) is unaffected.
    assert_eq!(
        client.get_record(&db.name, "rec/0001").await.unwrap(),
        records["rec/0001"]
    );
    client.put_record(&db.name, "after", b"x").await.unwrap();
    let denied = audit_events(&client, "backups.create").await;
    assert!(
        denied
            .iter()
            .any(|e| e["outcome"] != "success" && e["reason"] == "not_authorized_for_key"),
        "the refused backup is logged: {denied:?}"
    );

    // Granting it again restores both.
    revoke(&client, &reader_only).await;
    grant(
        &client,
        "databases",
        &b.id,
        &["Reader", "AuthorizationDelegator"],
    )
    .await;
    create_backup(&client, &db.name).await;
    restore(&client, &id_of(&before), &into, None).await;
    assert_same_records(
        &dump(&client, &into).await,
        &records,
        "restore after re-grant",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shredding_the_database_key_or_the_backup_key() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let records: BTreeMap<String, Vec<u8>> = sample_records(5)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("rec/02"))
        .collect();
    let s = setup(&client, records).await;
    let backup = create_backup(&client, &s.db.name).await;
    let id = id_of(&backup);
    // A second database under its own key A2, with the same backup key B.
    let a2 = records_key(&client, &unique("key-a2")).await;
    let db2 = client
        .create_database(&unique("db2"), Some(&a2.name), Some(&s.b.name))
        .await
        .unwrap();
    write_records(&client, &db2.name, &s.records).await;
    let backup2 = create_backup(&client, &db2.name).await;
    let id2 = id_of(&backup2);

    // Shred A: the database is gone for good, its backup under B is not.
    shred(&client, &s.a.name).await;
    let shredded = client.get_database(&s.db.name).await.unwrap();
    assert_eq!(shredded.state, "disabled");
    let read = call(
        &client,
        Method::GET,
        &format!("/v1/databases/{}/records/rec%2F0001", s.db.name),
        None,
    )
    .await;
    assert_json_error(&read, 423, "key_destroyed");
    assert_eq!(
        expect(get_backup_raw(&client, &id).await, 200, "backup")["state"],
        "available"
    );
    // Without a key override the restore would need A.
    let count = database_count(&client).await;
    let nowhere = unique("nowhere");
    assert_json_error(
        &restore_raw(&client, &id, &nowhere, None).await,
        423,
        "key_destroyed",
    );
    assert_no_database(&client, &nowhere).await;
    assert_eq!(database_count(&client).await, count);
    let c = records_key(&client, &unique("key-c")).await;
    let into = unique("rescued");
    let rescued = restore(&client, &id, &into, Some(&c.id)).await;
    assert_eq!(rescued.key, c.id);
    assert_same_records(&dump(&client, &into).await, &s.records, "rescued");

    // A suspended B locks its backups until it is enabled again.
    let key_action = |action: &'static str| {
        let client = &client;
        let path = format!("/v1/keys/{}/{action}", s.b.id);
        async move { expect(call(client, Method::POST, &path, None).await, 200, action) }
    };
    key_action("disable").await;
    let into = unique("suspended");
    assert_json_error(
        &restore_raw(&client, &id2, &into, None).await,
        423,
        "key_suspended",
    );
    assert_no_database(&client, &into).await;
    assert_json_error(
        &create_backup_raw(&client, &db2.name).await,
        423,
        "key_suspended",
    );
    key_action("enable").await;
    restore(&client, &id2, &into, None).await;
    assert_same_records(&dump(&client, &into).await, &s.records, "after enable");

    // Shred B: every backup under it is unrestorable; the databases under A2 and C still
    // read and write.
    shred(&client, &s.b.name).await;
    for backup_id in [&id, &id2] {
        let info = expect(get_backup_raw(&client, backup_id).await, 200, "backup");
        assert_eq!(info["state"], "key_destroyed", "{info}");
        let into = unique("dead");
        assert_json_error(
            &restore_raw(&client, backup_id, &into, Some(&c.id)).await,
            423,
            "key_destroyed",
        );
        assert_json_error(
            &restore_raw(&client, backup_id, &into, None).await,
            423,
            "key_destroyed",
        );
        assert_no_database(&client, &into).await;
    }
    assert_eq!(
        client.get_database(&db2.name).await.unwrap().state,
        "active"
    );
    assert_same_records(
        &dump(&client, &db2.name).await,
        &s.records,
        "db2 after B shred",
    );
    client.put_record(&db2.name, "new", b"value").await.unwrap();
    assert_same_records(
        &dump(&client, &into).await,
        &s.records,
        "rescued after B shred",
    );
    assert_json_error(
        &create_backup_raw(&client, &db2.name).await,
        423,
        "key_destroyed",
    );
    // The files stay (their headers are useless without B) until deleted.
    assert!(backup_file(&daemon, &id2).exists());
    assert_eq!(delete_backup_raw(&client, &id2).await.0, 204);
    assert!(!backup_file(&daemon, &id2).exists());
}

/// Indices where two equally long byte strings differ.
fn differing(before: &[u8], after: &[u8]) -> Vec<usize> {
    assert_eq!(before.len(), after.len(), "file size changed");
    (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_backup_key_rewraps_only_the_header_slots() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let s = setup(&client, sample_records(6)).await;
    let x = create_backup(&client, &s.db.name).await;
    let id = id_of(&x);
    let path = backup_file(&daemon, &id);
    let v1 = std::fs::read(&path).unwrap();

    let rotated = rotate(&client, &s.b.name, false).await;
    assert_eq!(rotated["version"], 2, "{rotated}");
    let after = expect(get_backup_raw(&client, &id).await, 200, "backup");
    assert_eq!(after["key_version"], 2, "rewrapped: {after}");
    assert_eq!(after["size"], x["size"]);
    let v2 = std::fs::read(&path).unwrap();
    let changed = differing(&v1, &v2);
    assert!(!changed.is_empty(), "rotation rewrote the header");
    assert!(
        changed
            .iter()
            .all(|&i| (SLOT_A..HEADER_LEN_AT).contains(&i)),
        "only the key slots change: {changed:?}"
    );
    let into = unique("after-rotate");
    restore(&client, &id, &into, None).await;
    assert_same_records(&dump(&client, &into).await, &s.records, "after rotation");
    // A backup made under version 2.
    let y = create_backup(&client, &s.db.name).await;
    assert_eq!(y["key_version"], 2);

    let retired = rotate(&client, &s.b.name, true).await;
    assert_eq!(retired["version"], 3, "{retired}");
    for (info, what) in [(&x, "x"), (&y, "y")] {
        let now = expect(get_backup_raw(&client, &id_of(info)).await, 200, what);
        assert_eq!(now["key_version"], 3, "{what}: {now}");
        assert_eq!(now["size"], info["size"]);
    }
    let v3 = std::fs::read(&path).unwrap();
    let changed = differing(&v2, &v3);
    assert!(!changed.is_empty());
    assert!(
        changed
            .iter()
            .all(|&i| (SLOT_A..HEADER_LEN_AT).contains(&i)),
        "only the key slots change: {changed:?}"
    );
    assert_eq!(
        v1[HEADER_LEN_AT..],
        v3[HEADER_LEN_AT..],
        "header and payload untouched"
    );
    for info in [&x, &y] {
        let into = unique("after-retire");
        restore(&client, &id_of(info), &into, None).await;
        assert_same_records(&dump(&client, &into).await, &s.records, "after retire");
    }

    // The retired versions are gone: the file as it was before any rotation (its only slot
    // wrapped under version 1) no longer opens.
    std::fs::write(&path, &v1).unwrap();
    let count = database_count(&client).await;
    let into = unique("old-slot");
    let answer = restore_raw(&client, &id, &into, None).await;
    assert_failed(
        &answer,
        "restore from a version-1-only header after retire_old",
    );
    assert_no_database(&client, &into).await;
    assert_eq!(database_count(&client).await, count);
    std::fs::write(&path, &v3).unwrap();
    restore(&client, &id, &into, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_keep_the_retention() {
    let daemon = Daemon::start_with_env(&[
        ("ENVAULT_BACKUP_SCHEDULE", "1s"),
        ("ENVAULT_BACKUP_RETENTION", "2"),
    ])
    .await;
    let client = daemon.client();
    let mut dbs = Vec::new();
    for n in 0..2 {
        let db = client
            .create_database(&unique("sched"), None, None)
            .await
            .unwrap();
        for i in 0..20 {
            client
                .put_record(&db.name, &format!("r{i}"), format!("{n}-{i}").as_bytes())
                .await
                .unwrap();
        }
        dbs.push(db);
    }
    let successes = |events: &[Value]| events.iter().filter(|e| e["outcome"] == "success").count();
    // Three rounds over two databases (plus one, as the first round may have run before the
    // second database existed).
    wait_for(Duration::from_secs(30), "three scheduled rounds", || {
        let client = &client;
        async move { (successes(&audit_events(client, "backups.create").await) >= 7).then_some(()) }
    })
    .await;

    // Retention applies right after each backup, and a round runs every second: a listing may
    // catch the moment between a round's backup and its pruning, so look until one does not.
    let counts = |listed: &[Value]| {
        dbs.iter()
            .map(|db| {
                let n = listed
                    .iter()
                    .filter(|b| b["database_id"] == db.id.as_str())
                    .count();
                (db.name.clone(), n)
            })
            .collect::<Vec<_>>()
    };
    let mut listed = list_backups(&client).await;
    for _ in 0..20 {
        if counts(&listed).iter().all(|(_, n)| *n <= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        listed = list_backups(&client).await;
    }
    let over: Vec<_> = counts(&listed)
        .into_iter()
        .filter(|(_, n)| *n > 2)
        .collect();
    assert!(over.is_empty(), "more than 2 backups kept: {over:?}");
    for db in &dbs {
        let own: Vec<&Value> = listed
            .iter()
            .filter(|b| b["database_id"] == db.id.as_str())
            .collect();
        assert!(
            (1..=2).contains(&own.len()),
            "{}: {} backups",
            db.name,
            own.len()
        );
        // The kept ones restore.
        let newest = own.last().unwrap();
        let into = unique("from-schedule");
        restore(&client, &id_of(newest), &into, None).await;
        assert_eq!(backup_support::all_keys(&client, &into).await.len(), 20);
    }
    let deletes = audit_events(&client, "backups.delete").await;
    assert!(
        successes(&deletes) >= 2,
        "retention deletes are logged: {deletes:?}"
    );
    // Files on disk are exactly the registered ones (no leftovers from pruned backups). A
    // round may be between writing a file and registering it: look a few times.
    let mut mismatch = None;
    for _ in 0..10 {
        let registered: BTreeSet<String> = list_backups(&client)
            .await
            .iter()
            .map(|b| format!("{}.evb", id_of(b)))
            .collect();
        let files: BTreeSet<String> = backup_dir_files(&daemon).into_iter().collect();
        if files == registered {
            mismatch = None;
            break;
        }
        mismatch = Some((files, registered));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        mismatch.is_none(),
        "files in {} differ from the registrations: {mismatch:?}",
        backup_dir(&daemon).display()
    );
}
