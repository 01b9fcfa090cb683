//! A backup round trip under a backup key, with registrations and the activity log; deleting a backup.

use super::*;

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
