//! Databases are created, listed and shown.

use super::*;

#[tokio::test]
async fn databases_are_created_listed_and_shown() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = usable_key(&client, "db-key").await;

    let with_key = client
        .create_database("with-key", Some("db-key"), None)
        .await
        .unwrap();
    assert_eq!(with_key.name, "with-key");
    assert_eq!(with_key.state, "active");
    assert_eq!(with_key.key, key.id);
    assert_eq!(with_key.key_crn, key.crn);
    assert_eq!(with_key.key_origin, "generated");
    assert_eq!(with_key.backup_key, None);
    assert_eq!(with_key.state_reason, None);
    assert_eq!(with_key.deleted_at, None);
    check_time(&with_key.created_at);
    let instance = check_crn(&with_key.crn, "database", &with_key.id);
    assert_eq!(check_crn(&key.crn, "key", &key.id), instance);

    // By id and CRN of the key too.
    let by_key_id = client
        .create_database("by-key-id", Some(&key.id), None)
        .await
        .unwrap();
    assert_eq!(by_key_id.key, key.id);
    let by_key_crn = client
        .create_database("by-key-crn", Some(&key.crn), None)
        .await
        .unwrap();
    assert_eq!(by_key_crn.key, key.id);

    let provider = client
        .create_database("provider", None, None)
        .await
        .unwrap();
    assert_eq!(provider.key_origin, "provider");
    assert_ne!(provider.key, key.id);
    check_crn(&provider.key_crn, "key", &provider.key);
    let provider2 = client
        .create_database("provider2", None, None)
        .await
        .unwrap();
    assert_ne!(
        provider2.key, provider.key,
        "each database gets its own provider key"
    );

    // The raw answer: 201 with the documented fields.
    let (status, value) = json_request(
        &client,
        Method::POST,
        "/v1/databases",
        &json!({ "name": "raw-db" }),
    )
    .await;
    assert_eq!(status, 201, "{value}");
    for field in ["id", "crn", "name", "state", "key", "backup_key"] {
        assert!(value.get(field).is_some(), "{field} missing from {value}");
    }

    // Errors.
    assert_api_error(
        client.create_database("with-key", None, None).await,
        409,
        "conflict",
    );
    assert_api_error(
        client
            .create_database("ghost", Some("no-such-key"), None)
            .await,
        404,
        "not_found",
    );
    assert_api_error(
        client
            .create_database("ghost", Some(&Uuid::new_v4().to_string()), None)
            .await,
        404,
        "not_found",
    );
    assert_api_error(
        client.create_database("bad/name", None, None).await,
        400,
        "bad_request",
    );
    for body in [
        json!({}),
        json!({ "name": "x", "unknown": 1 }),
        json!({ "name": 1 }),
    ] {
        let (status, value) = json_request(&client, Method::POST, "/v1/databases", &body).await;
        assert_eq!(
            (status, value["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{body}"
        );
    }
    assert_api_error(client.get_database("ghost").await, 404, "not_found");
    assert_api_error(
        client.get_database(&Uuid::new_v4().to_string()).await,
        404,
        "not_found",
    );

    // List: every database, by name, and nothing the errors above would have made.
    let listed = client.list_databases().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "by-key-crn",
            "by-key-id",
            "provider",
            "provider2",
            "raw-db",
            "with-key"
        ]
    );
    let listed_with_key = listed.iter().find(|d| d.name == "with-key").unwrap();
    assert_eq!(listed_with_key, &with_key);

    // Show by name, id and CRN.
    let by_name = client.get_database("with-key").await.unwrap();
    let by_id = client.get_database(&with_key.id).await.unwrap();
    let by_crn = client.get_database(&with_key.crn).await.unwrap();
    assert_eq!(by_name, with_key);
    assert_eq!(by_id, with_key);
    assert_eq!(by_crn, with_key);

    // The key's registrations name its three databases.
    let shown = client.get_key("db-key").await.unwrap();
    let mut registered: Vec<String> = shown
        .registrations
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!((r.kind.as_str(), r.role.as_str()), ("database", "key"));
            r.name
        })
        .collect();
    registered.sort();
    assert_eq!(registered, ["by-key-crn", "by-key-id", "with-key"]);
}
