//! Backups to an S3 bucket, against a real SeaweedFS S3 gateway (`tests/s3_support`)
//! and the real daemon: every backup verb on the bucket, metadata, retention, the server killed
//! during an upload, a bucket that denies writes, an altered object, shredding the backup key,
//! and listing the bucket after the node's data dir was restored from an older copy.

#![cfg(feature = "external-suites")]

use crate::backup_support;
use crate::common;
use crate::common::{wait_for, Rng};
use crate::s3_support;

use std::collections::BTreeMap;
use std::time::Duration;

use backup_support::{
    assert_json_error, assert_no_database, assert_same_records, audit_events, backup_key,
    create_backup, create_backup_raw, database_count, delete_backup_raw, dump, expect,
    get_backup_raw, id_of, list_backups, records_key, restore, restore_raw, rotate, shred,
};
use common::{unique, Daemon};
use envault::client::Client;
use s3_support::{Weed, ADMIN_KEY, ADMIN_SECRET, BUCKET, LIMITED_KEY, LIMITED_SECRET};
use serde_json::Value;

async fn daemon_on(
    weed: &Weed,
    prefix: &str,
    key: &str,
    secret: &str,
    extra: &[(&str, &str)],
) -> Daemon {
    let mut env = weed.daemon_env(prefix, key, secret);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Daemon::start_with_env(&env).await
}

/// `count` records of about `size` bytes each.
fn records(seed: u64, count: usize, size: usize) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let len = size / 2 + rng.below(size as u64) as usize;
            (format!("rec/{i:05}"), rng.bytes(len))
        })
        .collect()
}

/// Keys A (records) and B (backup), and a database under them holding `records`.
async fn database_with(client: &Client, records: &BTreeMap<String, Vec<u8>>) -> (String, String) {
    let a = records_key(client, &unique("key-a")).await;
    let (b, _) = backup_key(client, &unique("key-b")).await;
    let db = client
        .create_database(&unique("db"), Some(&a.name), Some(&b.name))
        .await
        .expect("create database");
    for (key, value) in records {
        client.put_record(&db.name, key, value).await.expect("put");
    }
    (db.name, b.name)
}

fn object_key(prefix: &str, id: &str) -> String {
    format!("{prefix}/{id}.evb")
}

fn meta(attributes: &object_store::Attributes, key: &'static str) -> Option<String> {
    attributes
        .get(&object_store::Attribute::Metadata(key.into()))
        .map(|v| v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_show_restore_delete_on_s3() {
    let weed = Weed::start().await;
    let prefix = "node-a/backups";
    let daemon = daemon_on(&weed, prefix, ADMIN_KEY, ADMIN_SECRET, &[]).await;
    let client = daemon.client();
    let mut data = records(1, 300, 3000);
    data.insert("big".into(), Rng::new(9).bytes(3 * 1024 * 1024));
    let (db, b) = database_with(&client, &data).await;

    let info = create_backup(&client, &db).await;
    let id = id_of(&info);
    let key = object_key(prefix, &id);
    assert_eq!(info["path"], format!("s3://{BUCKET}/{key}"), "{info}");
    assert_eq!(info["state"], "available");
    assert_eq!(info["record_count"], data.len() as u64);
    // One finished object, of the size reported, in the backup format.
    let objects = weed.objects(prefix).await;
    assert_eq!(objects, vec![(key.clone(), info["size"].as_u64().unwrap())]);
    let bytes = weed.get(&key).await;
    assert_eq!(
        &bytes[..5],
        b"EVBK\x01",
        "same backup format as local files"
    );
    assert!(
        !common::contains(&bytes, &data["big"][1000..1064]),
        "plaintext in the object"
    );
    assert!(
        !common::contains(&bytes, b"rec/00001"),
        "record key in the clear"
    );
    // The header's ids are the object's metadata.
    let attributes = weed.attributes(&key).await;
    let b_id = client.get_key(&b).await.unwrap().id;
    assert_eq!(
        meta(&attributes, "envault-backup-id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        meta(&attributes, "envault-database-id"),
        info["database_id"].as_str().map(String::from)
    );
    assert_eq!(meta(&attributes, "envault-backup-key-id"), Some(b_id));
    assert_eq!(
        meta(&attributes, "envault-created-at"),
        info["created_at"].as_str().map(String::from)
    );

    assert_eq!(list_backups(&client).await, vec![info.clone()]);
    assert_eq!(
        expect(get_backup_raw(&client, &id).await, 200, "show"),
        info
    );

    let into = unique("restored");
    let restored = restore(&client, &id, &into, None).await;
    assert_eq!(restored.name, into);
    assert_same_records(&dump(&client, &into).await, &data, "restore from S3");

    // The CLI shows the same backup with its s3:// path.
    let out = daemon.cli(&["backup", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    // Rotating the backup key and retiring the old version rewrites the object's key slot: it
    // is replaced by a copy differing only there, metadata kept, and still restores.
    rotate(&client, &b, true).await;
    let rotated = expect(
        get_backup_raw(&client, &id).await,
        200,
        "show after rotation",
    );
    assert_eq!(rotated["key_version"], 2, "{rotated}");
    let after = weed.get(&key).await;
    assert_eq!(after.len(), bytes.len());
    let changed: Vec<usize> = (0..after.len()).filter(|&i| after[i] != bytes[i]).collect();
    assert!(
        !changed.is_empty() && changed.iter().all(|i| (8..200).contains(i)),
        "only the key slots change: {changed:?}"
    );
    let kept = weed.attributes(&key).await;
    assert_eq!(
        meta(&kept, "envault-backup-id").as_deref(),
        Some(id.as_str())
    );
    let into = unique("after-rotation");
    restore(&client, &id, &into, None).await;
    assert_same_records(&dump(&client, &into).await, &data, "restore after rotation");

    assert_eq!(delete_backup_raw(&client, &id).await.0, 204);
    assert!(
        weed.objects(prefix).await.is_empty(),
        "delete removes the object"
    );
    assert!(list_backups(&client).await.is_empty());
    assert_json_error(&get_backup_raw(&client, &id).await, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_keep_the_retention_in_the_bucket() {
    let weed = Weed::start().await;
    let prefix = "retention";
    let daemon = daemon_on(
        &weed,
        prefix,
        ADMIN_KEY,
        ADMIN_SECRET,
        &[
            ("ENVAULT_BACKUP_SCHEDULE", "1s"),
            ("ENVAULT_BACKUP_RETENTION", "2"),
        ],
    )
    .await;
    let client = daemon.client();
    let data = records(2, 50, 1000);
    let (db, _) = database_with(&client, &data).await;
    let created = wait_for(
        Duration::from_secs(30),
        "four scheduled backups",
        || async {
            let events = audit_events(&client, "backups.create").await;
            let ok = events.iter().filter(|e| e["outcome"] == "success").count();
            (ok >= 4).then_some(ok)
        },
    )
    .await;
    assert!(created >= 4);
    // Between a backup and its retention pass there may briefly be three: wait for two.
    let listed = wait_for(Duration::from_secs(10), "retention applied", || async {
        let listed = list_backups(&client).await;
        let objects = weed.objects(prefix).await;
        (listed.len() == 2 && objects.len() == 2).then_some((listed, objects))
    })
    .await;
    let (listed, objects) = listed;
    for info in &listed {
        assert_eq!(info["database"], db.as_str());
        let key = object_key(prefix, &id_of(info));
        assert!(
            objects.iter().any(|(k, _)| *k == key),
            "{key} in {objects:?}"
        );
    }
    // The newest kept backup restores.
    let newest = id_of(listed.last().unwrap());
    let into = unique("from-schedule");
    restore(&client, &newest, &into, None).await;
    assert_same_records(&dump(&client, &into).await, &data, "scheduled backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_upload_leaves_no_backup() {
    let mut weed = Weed::start().await;
    let prefix = "killed";
    let daemon = daemon_on(&weed, prefix, ADMIN_KEY, ADMIN_SECRET, &[]).await;
    let client = daemon.client();
    // 96 MiB: a dozen multipart parts, so the kill lands mid-upload.
    let data = records(3, 96, 1024 * 1024);
    let (db, _) = database_with(&client, &data).await;

    let backup = {
        let client = daemon.client();
        let db = db.clone();
        tokio::spawn(async move { create_backup_raw(&client, &db).await })
    };
    // As soon as the multipart upload exists, freeze the server (so the upload cannot finish
    // on a fast machine), then kill it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while weed.pending_upload_entries() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    weed.freeze();
    assert!(
        !backup.is_finished(),
        "the backup finished before the server was stopped: make the database larger"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    weed.kill9();
    let answer = backup.await.unwrap();
    assert_eq!(answer.0, 500, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], "backup_target_error");
    let message = answer.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("upload of s3://") && message.contains(prefix),
        "the error names the interrupted upload: {message}"
    );
    let events = audit_events(&client, "backups.create").await;
    assert_eq!(events.last().unwrap()["outcome"], "failure", "{events:?}");

    weed.restart().await;
    assert!(
        weed.objects(prefix).await.is_empty(),
        "no object from the killed upload"
    );
    assert!(
        list_backups(&client).await.is_empty(),
        "nothing lists as a finished backup"
    );

    let info = create_backup(&client, &db).await;
    assert_eq!(info["record_count"], data.len() as u64);
    let listed = list_backups(&client).await;
    assert_eq!(listed, vec![info.clone()]);
    assert_eq!(
        weed.objects(prefix).await,
        vec![(
            object_key(prefix, &id_of(&info)),
            info["size"].as_u64().unwrap()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_denying_writes_fails_clearly_and_the_schedule_retries() {
    let mut weed = Weed::start().await;
    let prefix = "denied";
    let daemon = daemon_on(
        &weed,
        prefix,
        LIMITED_KEY,
        LIMITED_SECRET,
        &[
            ("ENVAULT_BACKUP_SCHEDULE", "2s"),
            ("ENVAULT_BACKUP_RETENTION", "3"),
        ],
    )
    .await;
    let client = daemon.client();
    let data = records(4, 40, 1000);
    let (db, _) = database_with(&client, &data).await;

    let answer = create_backup_raw(&client, &db).await;
    assert_eq!(answer.0, 500, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], "backup_target_error");
    let message = answer.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("s3://") && message.contains("AccessDenied"),
        "the error says the bucket refused: {message}"
    );
    // The schedule fails too, and retries (every second after a failure).
    let failures = wait_for(
        Duration::from_secs(20),
        "retried scheduled backups",
        || async {
            let events = audit_events(&client, "backups.create").await;
            let failed = events.iter().filter(|e| e["outcome"] == "failure").count();
            (failed >= 3).then_some(failed)
        },
    )
    .await;
    assert!(failures >= 3);
    assert!(list_backups(&client).await.is_empty());
    assert!(weed.objects(prefix).await.is_empty());

    // Once the bucket accepts writes, the next retry succeeds.
    weed.set_limited_can_write(true);
    weed.restart().await;
    let listed = wait_for(
        Duration::from_secs(30),
        "a scheduled backup after the fix",
        || async {
            let listed = list_backups(&client).await;
            (!listed.is_empty()).then_some(listed)
        },
    )
    .await;
    assert_eq!(listed[0]["database"], db.as_str());
    let events = audit_events(&client, "backups.create").await;
    assert!(events.iter().any(|e| e["outcome"] == "success"));
    assert!(!weed.objects(prefix).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_objects_are_refused_and_create_nothing() {
    let weed = Weed::start().await;
    let prefix = "tamper";
    let daemon = daemon_on(&weed, prefix, ADMIN_KEY, ADMIN_SECRET, &[]).await;
    let client = daemon.client();
    let data = records(5, 200, 2000);
    let (db, _) = database_with(&client, &data).await;
    let info = create_backup(&client, &db).await;
    let id = id_of(&info);
    let key = object_key(prefix, &id);
    let original = weed.get(&key).await;
    let attributes = weed.attributes(&key).await;
    let count = database_count(&client).await;

    // A flipped byte in the middle of the payload, then the last byte gone.
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let truncated = original[..original.len() - 1].to_vec();
    for (altered, what) in [(flipped, "flipped byte"), (truncated, "truncated")] {
        weed.put(&key, altered, attributes.clone()).await;
        let into = unique("tampered");
        let answer = restore_raw(&client, &id, &into, None).await;
        // The request is fine and the stored object is damaged: the records' integrity error.
        assert_json_error(&answer, 500, "integrity_error");
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("authenticate"), "{what}: {message}");
        assert_no_database(&client, &into).await;
        assert_eq!(
            database_count(&client).await,
            count,
            "{what}: nothing created"
        );
    }

    // Metadata naming another backup: refused before anything is read.
    let mut wrong = object_store::Attributes::new();
    for (k, v) in attributes.iter() {
        wrong.insert(k.clone(), v.clone());
    }
    wrong.insert(
        object_store::Attribute::Metadata("envault-backup-id".into()),
        uuid::Uuid::new_v4().to_string().into(),
    );
    weed.put(&key, original.clone(), wrong).await;
    let answer = restore_raw(&client, &id, &unique("tampered"), None).await;
    assert_json_error(&answer, 500, "integrity_error");
    assert_eq!(database_count(&client).await, count);

    // Put back as it was, it restores.
    weed.put(&key, original, attributes).await;
    let into = unique("intact");
    restore(&client, &id, &into, None).await;
    assert_same_records(&dump(&client, &into).await, &data, "untampered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shredding_the_backup_key_makes_every_object_unrestorable() {
    let weed = Weed::start().await;
    let prefix = "shred";
    let daemon = daemon_on(&weed, prefix, ADMIN_KEY, ADMIN_SECRET, &[]).await;
    let client = daemon.client();
    let data = records(6, 60, 1000);
    let (db, b) = database_with(&client, &data).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(id_of(&create_backup(&client, &db).await));
    }
    shred(&client, &b).await;
    for id in &ids {
        let info = expect(get_backup_raw(&client, id).await, 200, "backup");
        assert_eq!(info["state"], "key_destroyed", "{info}");
        let into = unique("dead");
        assert_json_error(
            &restore_raw(&client, id, &into, None).await,
            423,
            "key_destroyed",
        );
        assert_no_database(&client, &into).await;
    }
    // The objects stay, useless, until deleted; deleting removes them.
    assert_eq!(weed.objects(prefix).await.len(), 3);
    for id in &ids {
        assert_eq!(delete_backup_raw(&client, id).await.0, 204);
    }
    assert!(weed.objects(prefix).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_alone_lists_backups_after_the_data_dir_is_restored() {
    let weed = Weed::start().await;
    let prefix = "recovery";
    let mut daemon = daemon_on(&weed, prefix, ADMIN_KEY, ADMIN_SECRET, &[]).await;
    let client = daemon.client();
    let data = records(7, 120, 2000);
    let (db, _) = database_with(&client, &data).await;

    // A file-level copy of the data dir, taken before any backup exists.
    daemon.stop_graceful().await;
    let saved = daemon.dir().join("data-copy");
    copy_dir(&daemon.data_dir, &saved);
    daemon.restart().await;
    let client = daemon.client();
    let first = create_backup(&client, &db).await;
    let second = create_backup(&client, &db).await;
    let before: Vec<Value> = list_backups(&client).await;
    assert_eq!(before, vec![first.clone(), second.clone()]);

    // Objects that are not this node's backups: junk, and a copy under another id.
    let junk_id = uuid::Uuid::new_v4();
    weed.put(
        &object_key(prefix, &junk_id.to_string()),
        vec![7u8; 5000],
        Default::default(),
    )
    .await;
    let copied_id = uuid::Uuid::new_v4();
    let first_key = object_key(prefix, &id_of(&first));
    let attributes = weed.attributes(&first_key).await;
    weed.put(
        &object_key(prefix, &copied_id.to_string()),
        weed.get(&first_key).await,
        attributes,
    )
    .await;

    // The data dir is lost and restored from the copy: its catalog knows no backup.
    daemon.stop_graceful().await;
    std::fs::remove_dir_all(&daemon.data_dir).unwrap();
    copy_dir(&saved, &daemon.data_dir);
    daemon.restart().await;
    let client = daemon.client();
    let after = list_backups(&client).await;
    assert_eq!(
        after, before,
        "the bucket's verified backups, and nothing else"
    );
    assert_eq!(
        weed.objects(prefix).await.len(),
        4,
        "foreign objects are left alone"
    );
    let into = unique("recovered");
    restore(&client, &id_of(&second), &into, None).await;
    assert_same_records(&dump(&client, &into).await, &data, "restore after recovery");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Without envault's own static keys, object_store's credential chain is used: here the
/// `AWS_*` environment variables (the same chain goes on to web identity, the container
/// endpoint and instance metadata on a real deployment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_credential_chain_is_used_without_static_keys() {
    let weed = Weed::start().await;
    let prefix = "chain/backups";
    let env: Vec<(String, String)> = weed
        .daemon_env(prefix, ADMIN_KEY, ADMIN_SECRET)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("ENVAULT_S3_"))
        .chain([
            ("AWS_ACCESS_KEY_ID".to_string(), ADMIN_KEY.to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                ADMIN_SECRET.to_string(),
            ),
        ])
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let daemon = Daemon::start_with_env(&env).await;
    let client = daemon.client();
    let data = records(5, 20, 500);
    let (db, _) = database_with(&client, &data).await;
    let info = create_backup(&client, &db).await;
    let id = id_of(&info);
    let objects = weed.objects(prefix).await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].0, object_key(prefix, &id));

    // Wrong keys in the chain are refused by the service, and say so.
    let env: Vec<(String, String)> = weed
        .daemon_env("chain/denied", ADMIN_KEY, ADMIN_SECRET)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("ENVAULT_S3_"))
        .chain([
            ("AWS_ACCESS_KEY_ID".to_string(), "AKIDNOTAKEY".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                "not-the-secret".to_string(),
            ),
        ])
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let denied = Daemon::start_with_env(&env).await;
    let client = denied.client();
    let (db, _) = database_with(&client, &data).await;
    let answer = create_backup_raw(&client, &db).await;
    assert_json_error(&answer, 500, "backup_target_error");
}

/// A purge destroys the purged database's objects in the bucket, and its key then deletes
/// without force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_deletes_the_databases_objects() {
    let weed = Weed::start().await;
    let prefix = "node-a/purged";
    let extra = [("ENVAULT_SOFT_DELETE_PERIOD", "1s")];
    let daemon = daemon_on(&weed, prefix, ADMIN_KEY, ADMIN_SECRET, &extra).await;
    let client = daemon.client();
    let (db, _) = database_with(&client, &records(3, 20, 100)).await;
    for _ in 0..2 {
        create_backup(&client, &db).await;
    }
    assert_eq!(weed.objects(prefix).await.len(), 2);
    let key = client.get_database(&db).await.unwrap().key;
    client
        .request(
            envault::client::Method::DELETE,
            &format!("/v1/databases/{db}"),
            None,
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.get_database(&db).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "{db} was not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(weed.objects(prefix).await, Vec::<(String, u64)>::new());
    let (status, body) = client
        .request(
            envault::client::Method::DELETE,
            &format!("/v1/keys/{key}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}
