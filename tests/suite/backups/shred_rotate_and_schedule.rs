//! Shredding the database key or the backup key; rotating the backup key; scheduled backups and retention.

use super::*;

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
