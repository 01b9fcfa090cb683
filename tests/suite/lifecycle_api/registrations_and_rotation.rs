//! Registrations list every database; rotation adds a version and keeps records and ciphertext; rotation jobs.

use super::*;

#[tokio::test]
async fn registrations_list_every_database_including_soft_deleted_ones() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = usable_key(&client, "shared").await;
    usable_key(&client, "other").await;
    let mut created = BTreeMap::new();
    for name in ["alpha", "beta", "gamma"] {
        let db = client
            .create_database(name, Some("shared"), None)
            .await
            .unwrap();
        created.insert(name.to_string(), db);
    }
    client
        .create_database("elsewhere", Some("other"), None)
        .await
        .unwrap();
    client
        .create_database("provider-db", None, None)
        .await
        .unwrap();

    let regs = registrations(&client, &key.crn).await;
    assert_eq!(
        regs.keys().cloned().collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"],
        "only the databases under this key"
    );
    for (name, db) in &created {
        let (state, role, crn, id) = &regs[name];
        assert_eq!((state.as_str(), role.as_str()), ("active", "key"));
        assert_eq!(crn, &db.crn);
        assert_eq!(id, &db.id);
    }
    // The list shows no registrations; the key's own GET (by name, id or CRN) does.
    let listed: Vec<KeyInfo> = client.list_keys().await.unwrap();
    assert!(listed.iter().all(|k| k.registrations.is_none()));
    assert_eq!(registrations(&client, &key.id).await, regs);

    delete_database(&client, "beta").await.unwrap();
    let regs = registrations(&client, "shared").await;
    assert_eq!(regs.len(), 3, "a soft-deleted database stays registered");
    assert_eq!(regs["beta"].0, "deleted");
    assert_eq!(regs["beta"].2, created["beta"].crn);
    assert_eq!(regs["alpha"].0, "active");
    restore_database(&client, "beta").await.unwrap();
    assert_eq!(registrations(&client, "shared").await["beta"].0, "active");
}

#[tokio::test]
async fn rotation_adds_a_version_and_keeps_records_and_app_ciphertext() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = usable_key(&client, "rotating").await;
    assert_eq!(key.version, 1);
    let mut data = BTreeMap::new();
    for db in ["r-one", "r-two"] {
        client
            .create_database(db, Some("rotating"), None)
            .await
            .unwrap();
        data.insert(db, fill(&client, db, 4).await);
    }
    let secret = b"app-held secret material".to_vec();
    let aad = vec!["tenant-7".to_string()];
    let wrapped_v1 = client.wrap("rotating", Some(&secret), &aad).await.unwrap();
    assert_eq!(wrapped_v1.key_version, 1);

    let answer = expect_status(
        call(
            &client,
            Method::POST,
            &key_path("rotating", "/rotate"),
            Some(json!({})),
        )
        .await,
        200,
        "rotate",
    );
    assert_eq!(answer["version"], 2, "{answer}");
    assert_eq!(answer["job"]["state"], "completed", "{answer}");
    assert_eq!(answer["job"]["target_version"], 2);
    assert_eq!(answer["job"]["total"], 2, "one DEK per database: {answer}");
    assert_eq!(answer["job"]["done"], 2);
    assert_eq!(key_version(&client, "rotating").await, 2);
    let status = expect_status(
        call(
            &client,
            Method::GET,
            &key_path("rotating", "/rotation"),
            None,
        )
        .await,
        200,
        "rotation status",
    );
    assert_eq!(status["state"], "completed");
    assert_eq!(status["target_version"], 2);

    for (db, records) in &data {
        assert_records(&client, db, records).await;
    }
    // Ciphertext wrapped before the rotation still unwraps, and rewraps to the new version.
    let plain = client
        .unwrap("rotating", &wrapped_v1.ciphertext, &aad)
        .await
        .unwrap();
    assert_eq!(plain.as_slice(), secret.as_slice());
    let rewrapped = client
        .rewrap("rotating", &wrapped_v1.ciphertext, &aad)
        .await
        .unwrap();
    assert_eq!(rewrapped.key_version, 2);
    assert_ne!(rewrapped.ciphertext, wrapped_v1.ciphertext);
    let plain = client
        .unwrap("rotating", &rewrapped.ciphertext, &aad)
        .await
        .unwrap();
    assert_eq!(plain.as_slice(), secret.as_slice());
    assert_eq!(
        client
            .wrap("rotating", Some(&secret), &aad)
            .await
            .unwrap()
            .key_version,
        2
    );
    // The AAD still binds.
    assert_api_error(
        client.unwrap("rotating", &wrapped_v1.ciphertext, &[]).await,
        400,
        "bad_request",
    );

    // A new database after the rotation, and a write to an old one, both work.
    client
        .create_database("r-three", Some("rotating"), None)
        .await
        .unwrap();
    data.insert("r-three", fill(&client, "r-three", 2).await);
    client.put_record("r-one", "late", b"late").await.unwrap();
    data.get_mut("r-one")
        .unwrap()
        .insert("late".into(), b"late".to_vec());

    // Retiring: everything is rewrapped to v3, then v1 and v2 are destroyed.
    let answer = expect_status(
        call(
            &client,
            Method::POST,
            &key_path("rotating", "/rotate"),
            Some(json!({"retire_old": true})),
        )
        .await,
        200,
        "rotate retire_old",
    );
    assert_eq!(answer["version"], 3, "{answer}");
    assert_eq!(answer["job"]["state"], "completed");
    assert_eq!(answer["job"]["retired_versions"], json!([1, 2]), "{answer}");
    assert_eq!(key_version(&client, "rotating").await, 3);
    for ciphertext in [&wrapped_v1.ciphertext, &rewrapped.ciphertext] {
        assert_api_error(
            client.unwrap("rotating", ciphertext, &aad).await,
            400,
            "bad_request",
        );
        assert_api_error(
            client.rewrap("rotating", ciphertext, &aad).await,
            400,
            "bad_request",
        );
    }
    for (db, records) in &data {
        assert_records(&client, db, records).await;
    }
    let wrapped_v3 = client.wrap("rotating", Some(&secret), &aad).await.unwrap();
    assert_eq!(wrapped_v3.key_version, 3);

    // Nothing depended on the retired versions: a restart (DEK cache empty) reads everything.
    let mut daemon = daemon;
    daemon.stop_graceful().await;
    daemon.restart().await;
    let client = daemon.client();
    for (db, records) in &data {
        assert_records(&client, db, records).await;
    }
    let plain = client
        .unwrap("rotating", &wrapped_v3.ciphertext, &aad)
        .await
        .unwrap();
    assert_eq!(plain.as_slice(), secret.as_slice());
    assert_eq!(key_version(&client, "rotating").await, 3);
    // A provider-managed key is not rotated by operators.
    let own = client.create_database("own", None, None).await.unwrap();
    let answer = call(&client, Method::POST, &key_path(&own.key, "/rotate"), None).await;
    assert!(answer.0 == 403 || answer.0 == 404, "{answer:?}");
}

#[tokio::test]
async fn rotating_a_suspended_or_missing_key_fails_cleanly() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "sleepy").await;
    disable_key(&client, "sleepy").await.unwrap();
    let answer = call(&client, Method::POST, &key_path("sleepy", "/rotate"), None).await;
    assert_json_error(&answer, 423, "key_suspended");
    assert_eq!(key_version(&client, "sleepy").await, 1);
    let answer = call(&client, Method::POST, &key_path("nope", "/rotate"), None).await;
    assert_json_error(&answer, 404, "not_found");
    let answer = call(&client, Method::GET, &key_path("sleepy", "/rotation"), None).await;
    assert_json_error(&answer, 404, "not_found");
}

/// `POST /rotate` with `wait: false` answers 202 with the job it started, and the status route
/// describes that job from then on, never the previous rotation.
#[tokio::test]
async fn a_rotation_started_without_waiting_reports_its_own_job() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "async").await;
    client
        .create_database("async-db", Some("async"), None)
        .await
        .unwrap();
    for round in 0..5 {
        let (status, answer) = call(
            &client,
            Method::POST,
            &key_path("async", "/rotate"),
            Some(json!({"wait": false})),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        let version = answer["version"].clone();
        assert_eq!(version, round + 2, "{answer}");
        assert_eq!(
            answer["job"]["target_version"], version,
            "round {round}: {answer}"
        );
        let now = expect_status(
            call(&client, Method::GET, &key_path("async", "/rotation"), None).await,
            200,
            "rotation status",
        );
        assert_eq!(now["target_version"], version, "round {round}: {now}");
        poll(
            Duration::from_secs(10),
            "the rotation to complete",
            || async {
                let now = expect_status(
                    call(&client, Method::GET, &key_path("async", "/rotation"), None).await,
                    200,
                    "rotation status",
                );
                (now["state"] == "completed").then_some(())
            },
        )
        .await;
    }
}
