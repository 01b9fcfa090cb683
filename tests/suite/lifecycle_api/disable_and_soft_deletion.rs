//! Disable and enable on open connections; soft deletion, restore and purge, also across a restart.

use super::*;

#[tokio::test]
async fn disable_and_enable_take_effect_on_already_open_connections() {
    let daemon = Daemon::start().await;
    let admin = daemon.client();
    usable_key(&admin, "switch").await;
    usable_key(&admin, "bystander").await;
    admin
        .create_database("locked", Some("switch"), None)
        .await
        .unwrap();
    admin
        .create_database("free", Some("bystander"), None)
        .await
        .unwrap();
    admin.put_record("locked", "k", b"value").await.unwrap();
    admin.put_record("free", "k", b"free").await.unwrap();

    // Two readers: the typed client (one instance) and a raw kept-alive socket.
    let reader = daemon.client();
    let mut socket = KeepAlive::open(&daemon.socket, &daemon.token).await;
    let get = "/v1/databases/locked/records/k";
    assert_eq!(reader.get_record("locked", "k").await.unwrap(), b"value");
    assert_eq!(
        socket.request("GET", get, b"").await,
        (200, b"value".to_vec())
    );

    let disabled = disable_key(&admin, "switch").await.unwrap();
    assert_eq!(disabled["state"], "suspended", "{disabled}");
    assert_api_error(reader.get_record("locked", "k").await, 423, "key_suspended");
    let (status, body) = socket.request("GET", get, b"").await;
    assert_eq!(
        (status, raw_code(&body)),
        (423, "key_suspended".to_string())
    );
    let (status, body) = socket.request("PUT", get, b"new").await;
    assert_eq!(
        (status, raw_code(&body)),
        (423, "key_suspended".to_string())
    );
    assert_api_error(
        reader.put_record("locked", "k2", b"x").await,
        423,
        "key_suspended",
    );
    assert_api_error(
        reader.delete_record("locked", "k").await,
        423,
        "key_suspended",
    );
    assert_api_error(
        reader.list_records("locked", &Default::default()).await,
        423,
        "key_suspended",
    );
    assert_api_error(admin.wrap("switch", None, &[]).await, 423, "key_suspended");
    assert_api_error(
        admin
            .create_database("locked-2", Some("switch"), None)
            .await,
        423,
        "key_suspended",
    );
    assert_eq!(admin.get_key("switch").await.unwrap().state, "suspended");
    assert_eq!(admin.get_database("locked").await.unwrap().state, "active");
    // Other keys are unaffected; disabling twice is harmless.
    assert_eq!(reader.get_record("free", "k").await.unwrap(), b"free");
    disable_key(&admin, "switch").await.unwrap();

    // Survives a restart: a suspended key stays suspended.
    let mut daemon = daemon;
    drop(socket);
    daemon.stop_graceful().await;
    daemon.restart().await;
    let reader = daemon.client();
    let admin = daemon.client();
    let mut socket = KeepAlive::open(&daemon.socket, &daemon.token).await;
    assert_api_error(reader.get_record("locked", "k").await, 423, "key_suspended");
    assert_eq!(socket.request("GET", get, b"").await.0, 423);

    let enabled = enable_key(&admin, "switch").await.unwrap();
    assert_eq!(enabled["state"], "active", "{enabled}");
    assert_eq!(reader.get_record("locked", "k").await.unwrap(), b"value");
    assert_eq!(
        socket.request("GET", get, b"").await,
        (200, b"value".to_vec())
    );
    assert_eq!(socket.request("PUT", get, b"new").await.0, 204);
    assert_eq!(reader.get_record("locked", "k").await.unwrap(), b"new");
    // The kept-alive socket answered every request above: the same connection saw each change.
    assert_api_error(enable_key(&admin, "nope").await, 404, "not_found");
}

#[tokio::test]
async fn soft_delete_restore_and_purge() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_SOFT_DELETE_PERIOD", "2s")]).await;
    let client = daemon.client();
    let key = usable_key(&client, "soft").await;
    let db = client
        .create_database("trash", Some("soft"), None)
        .await
        .unwrap();
    let records = fill(&client, "trash", 3).await;

    let deleted = delete_database(&client, "trash").await.unwrap();
    assert_eq!(deleted["state"], "deleted", "{deleted}");
    assert!(deleted["deleted_at"].is_string(), "{deleted}");
    assert!(deleted["purge_at"].is_string(), "{deleted}");
    assert_api_error(
        client.get_record("trash", "r0").await,
        409,
        "database_deleted",
    );
    assert_api_error(
        client.put_record("trash", "r9", b"x").await,
        409,
        "database_deleted",
    );
    assert_api_error(
        client.list_records("trash", &Default::default()).await,
        409,
        "database_deleted",
    );
    assert_api_error(
        delete_database(&client, "trash").await,
        409,
        "database_deleted",
    );
    let shown = client.get_database("trash").await.unwrap();
    assert_eq!(shown.state, "deleted");
    assert_eq!(shown.id, db.id);
    assert_eq!(registrations(&client, "soft").await["trash"].0, "deleted");
    assert!(client
        .list_databases()
        .await
        .unwrap()
        .iter()
        .any(|d| d.name == "trash" && d.state == "deleted"));

    let restored = restore_database(&client, "trash").await.unwrap();
    assert_eq!(restored["state"], "active", "{restored}");
    assert_records(&client, "trash", &records).await;
    assert_api_error(restore_database(&client, "trash").await, 409, "conflict");
    assert_eq!(registrations(&client, "soft").await["trash"].0, "active");

    // Delete again and let the period run out: the purge drops data and registration.
    delete_database(&client, "trash").await.unwrap();
    let started = Instant::now();
    poll(Duration::from_secs(10), "the purge of trash", || async {
        match client.get_database("trash").await {
            Err(e) if e.code() == Some("not_found") => Some(()),
            Ok(info) => {
                assert_eq!(info.state, "deleted");
                None
            }
            Err(e) => panic!("GET trash: {e}"),
        }
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "purged after {:?}, well before the 2 s period",
        started.elapsed()
    );
    assert!(registrations(&client, "soft").await.is_empty());
    assert_api_error(client.get_record("trash", "r0").await, 404, "not_found");
    assert_api_error(restore_database(&client, "trash").await, 404, "not_found");
    let purges = events(&client, Some("databases.purge")).await;
    assert_eq!(purges.len(), 1, "{purges:?}");
    assert_eq!(purges[0]["target"], db.crn.as_str());
    assert_eq!(purges[0]["outcome"], "success");
    // The key outlived its purged database and, without registrations, deletes without force.
    assert_eq!(client.get_key(&key.id).await.unwrap().state, "active");
    let receipt = expect_status(
        call(&client, Method::DELETE, &key_path("soft", ""), None).await,
        200,
        "delete the key of a purged database",
    );
    assert_eq!(receipt["affected"], json!([]), "{receipt}");
    // The name is free again, and the new database starts empty.
    let again = client.create_database("trash", None, None).await.unwrap();
    assert_ne!(again.id, db.id);
    assert_api_error(client.get_record("trash", "r0").await, 404, "not_found");
}

#[tokio::test]
async fn purge_resumes_after_a_restart_and_shreds_provider_keys() {
    let mut daemon = Daemon::start_with_env(&[("ENVAULT_SOFT_DELETE_PERIOD", "2s")]).await;
    let client = daemon.client();
    usable_key(&client, "customer").await;
    let customer_db = client
        .create_database("cust", Some("customer"), None)
        .await
        .unwrap();
    let provider_db = client.create_database("prov", None, None).await.unwrap();
    assert_eq!(provider_db.key_origin, "provider");
    let provider_key = client.get_key(&provider_db.key).await.unwrap();
    assert_eq!(provider_key.origin, "provider");
    assert!(client
        .list_keys()
        .await
        .unwrap()
        .iter()
        .all(|k| k.id != provider_db.key));
    for db in ["cust", "prov"] {
        fill(&client, db, 2).await;
        delete_database(&client, db).await.unwrap();
    }
    daemon.stop_graceful().await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    daemon.restart().await;
    let client = daemon.client();
    for db in [&customer_db, &provider_db] {
        poll(
            Duration::from_secs(10),
            "the purge after restart",
            || async {
                match client.get_database(&db.id).await {
                    Err(e) if e.code() == Some("not_found") => Some(()),
                    Ok(_) => None,
                    Err(e) => panic!("GET {}: {e}", db.name),
                }
            },
        )
        .await;
    }
    assert!(registrations(&client, "customer").await.is_empty());
    // The provider-managed key went with its database.
    assert_api_error(client.get_key(&provider_db.key).await, 404, "not_found");
    assert_api_error(client.get_key(&provider_db.key_crn).await, 404, "not_found");
    // The purge's event is appended once the purge (catalog, keystore) is done, which is a
    // moment after the database stops being visible.
    poll(Duration::from_secs(10), "both purge events", || async {
        let purged: Vec<String> = events(&client, Some("databases.purge"))
            .await
            .iter()
            .map(|e| e["target"].as_str().unwrap().to_string())
            .collect();
        (purged.contains(&customer_db.crn) && purged.contains(&provider_db.crn)).then_some(())
    })
    .await;
    // The material is gone from the keystore too (checked with the daemon stopped).
    daemon.stop_graceful().await;
    let keystore = envault::keystore::file::FileKeystore::open(
        &daemon.data_dir,
        &daemon.data_dir.join("master.key"),
    )
    .expect("open the keystore");
    let provider_id = uuid::Uuid::parse_str(&provider_db.key).unwrap();
    use envault::keystore::RootKeyBackend as _;
    assert!(
        keystore.versions(provider_id).expect("versions").is_empty(),
        "provider key material survived the purge"
    );
}

/// The soft-deletion period is a promise: a database deleted just before a second boundary is
/// still restorable `period - 0.5 s` later.
#[tokio::test]
async fn restore_works_for_the_whole_period() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_SOFT_DELETE_PERIOD", "3s")]).await;
    let client = daemon.client();
    let db = client.create_database("late", None, None).await.unwrap();
    client.put_record("late", "k", b"v").await.unwrap();
    // Delete at .80–.95 of a wall-clock second.
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let fraction = now.subsec_millis();
        if (800..900).contains(&fraction) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    delete_database(&client, "late").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2400)).await;
    let restored = restore_database(&client, &db.id).await;
    assert!(
        restored.is_ok(),
        "2.4 s into a 3 s soft-deletion period the database must be restorable: {restored:?}"
    );
    assert_eq!(client.get_record("late", "k").await.unwrap(), b"v");
}
