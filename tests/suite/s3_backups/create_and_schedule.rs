//! Create, list, show, restore and delete on S3; scheduled backups keep the retention in the bucket.

use super::*;

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
