//! Backups are consistent snapshots under concurrent writers; the delegation rules of backup keys.

use super::*;

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
