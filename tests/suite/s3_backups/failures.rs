//! Failures: the server killed during an upload, a bucket denying writes, altered objects, a shredded backup key.

use super::*;

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
