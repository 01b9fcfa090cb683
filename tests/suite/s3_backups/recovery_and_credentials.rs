//! The bucket alone lists backups after the data dir is restored; the AWS credential chain; a purge deletes the objects.

use super::*;

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
