//! Authorizations gate databases on customer keys; wildcards; a backup key and its delegated authorization.

use super::*;

#[tokio::test]
async fn authorizations_gate_databases_on_customer_keys() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = client.create_key("orders-key", None, None).await.unwrap();

    // No authorization: refused, and nothing is created.
    assert_api_error(
        client
            .create_database("orders", Some("orders-key"), None)
            .await,
        403,
        "not_authorized_for_key",
    );
    assert!(client.list_databases().await.unwrap().is_empty());
    assert_api_error(client.get_database("orders").await, 404, "not_found");
    assert!(registrations(&client, "orders-key").await.is_empty());

    // Bad grants change nothing.
    for (body, status, code) in [
        (
            json!({"source": "queues", "target": "orders-key", "roles": ["Reader"]}),
            400,
            "bad_request",
        ),
        (
            json!({"source": "databases", "target": "orders-key", "roles": []}),
            400,
            "bad_request",
        ),
        (
            json!({"source": "databases", "target": "orders-key", "roles": ["Writer"]}),
            400,
            "bad_request",
        ),
        (
            json!({"source": "databases", "target": "orders-key", "roles": ["AuthorizationDelegator"]}),
            400,
            "bad_request",
        ),
        (
            json!({"source": "databases", "target": "no-such-key", "roles": ["Reader"]}),
            404,
            "not_found",
        ),
    ] {
        let answer = call(
            &client,
            Method::POST,
            "/v1/authorizations",
            Some(body.clone()),
        )
        .await;
        assert_json_error(&answer, status, code);
    }
    assert!(authorizations(&client).await.is_empty());

    // Grant: 201 with the key's CRN as target.
    let granted = expect_status(
        grant(&client, "databases", "orders-key", &["Reader"]).await,
        201,
        "grant",
    );
    let grant_id = granted["id"]
        .as_str()
        .expect("authorization id")
        .to_string();
    assert_eq!(granted["source"], "databases");
    assert_eq!(granted["target"], key.crn.as_str());
    assert_eq!(granted["roles"], json!(["Reader"]));
    assert!(
        granted.get("created_by").is_none_or(Value::is_null),
        "{granted}"
    );

    // The identical grant, however the key is named, is a duplicate policy.
    for target in [key.name.as_str(), key.id.as_str(), key.crn.as_str()] {
        let answer = grant(&client, "databases", target, &["Reader"]).await;
        assert_json_error(&answer, 409, "duplicate_policy");
        assert_eq!(answer.1["error"]["message"], DUPLICATE_MESSAGE);
    }
    let answer = grant(&client, "databases", "orders-key", &["Reader", "Reader"]).await;
    assert_json_error(&answer, 409, "duplicate_policy");
    let list = authorizations(&client).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], grant_id.as_str());

    // Now the database can be created and used.
    let db = client
        .create_database("orders", Some("orders-key"), None)
        .await
        .unwrap();
    assert_eq!(db.key, key.id);
    let records = fill(&client, "orders", 3).await;
    assert_records(&client, "orders", &records).await;

    // Revoking locks the key's databases at once, for reads, writes, lists and new databases.
    let reader = daemon.client();
    reader.get_record("orders", "r0").await.unwrap();
    revoke(&client, &grant_id).await.unwrap();
    assert!(authorizations(&client).await.is_empty());
    assert_api_error(
        reader.get_record("orders", "r0").await,
        403,
        "not_authorized_for_key",
    );
    assert_api_error(
        reader.put_record("orders", "r9", b"x").await,
        403,
        "not_authorized_for_key",
    );
    assert_api_error(
        reader.list_records("orders", &Default::default()).await,
        403,
        "not_authorized_for_key",
    );
    assert_api_error(
        client
            .create_database("orders-2", Some("orders-key"), None)
            .await,
        403,
        "not_authorized_for_key",
    );
    // Metadata stays visible; the database itself is untouched.
    assert_eq!(client.get_database("orders").await.unwrap().state, "active");
    assert_api_error(revoke(&client, &grant_id).await, 404, "not_found");

    // Granting again unlocks the same data, on the same connection.
    expect_status(
        grant(&client, "databases", &key.crn, &["Reader"]).await,
        201,
        "re-grant",
    );
    assert_records(&reader, "orders", &records).await;
    reader
        .put_record("orders", "r9", b"after re-grant")
        .await
        .unwrap();
    assert_eq!(
        reader.get_record("orders", "r9").await.unwrap(),
        b"after re-grant"
    );

    // Provider-managed databases need no authorization at all.
    let own = client
        .create_database("own-key-db", None, None)
        .await
        .unwrap();
    assert_eq!(own.key_origin, "provider");
    client.put_record("own-key-db", "a", b"1").await.unwrap();
}

#[tokio::test]
async fn a_wildcard_authorization_covers_every_key() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_key("before", None, None).await.unwrap();
    let star = expect_status(
        grant(&client, "databases", "*", &["Reader"]).await,
        201,
        "grant *",
    );
    assert_eq!(star["target"], "*");
    let star_id = star["id"].as_str().unwrap().to_string();
    assert_json_error(
        &grant(&client, "databases", "*", &["Reader"]).await,
        409,
        "duplicate_policy",
    );
    // A key created after the grant is covered too.
    client.create_key("after", None, None).await.unwrap();
    client
        .create_database("db-before", Some("before"), None)
        .await
        .unwrap();
    client
        .create_database("db-after", Some("after"), None)
        .await
        .unwrap();
    for db in ["db-before", "db-after"] {
        client.put_record(db, "k", db.as_bytes()).await.unwrap();
    }
    // A wildcard `backups` grant is a different policy from the `databases` one.
    expect_status(
        grant(&client, "backups", "*", &["Reader"]).await,
        201,
        "grant backups *",
    );

    revoke(&client, &star_id).await.unwrap();
    for db in ["db-before", "db-after"] {
        assert_api_error(
            client.get_record(db, "k").await,
            403,
            "not_authorized_for_key",
        );
    }
    // A per-key grant unlocks only that key.
    expect_status(
        grant(&client, "databases", "after", &["Reader"]).await,
        201,
        "grant after",
    );
    assert_eq!(
        client.get_record("db-after", "k").await.unwrap(),
        b"db-after"
    );
    assert_api_error(
        client.get_record("db-before", "k").await,
        403,
        "not_authorized_for_key",
    );
}

#[tokio::test]
async fn a_backup_key_needs_a_delegator_and_gets_a_delegated_authorization() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "data-key").await;
    let backup_key = client.create_key("backup-key", None, None).await.unwrap();

    // Reader alone on the backup key is not enough.
    let reader_only = expect_status(
        grant(&client, "databases", "backup-key", &["Reader"]).await,
        201,
        "grant Reader",
    );
    assert_api_error(
        client
            .create_database("ledger", Some("data-key"), Some("backup-key"))
            .await,
        403,
        "not_authorized_for_key",
    );
    assert_api_error(client.get_database("ledger").await, 404, "not_found");
    assert!(
        authorizations(&client)
            .await
            .iter()
            .all(|a| a["source"] != "backups"),
        "a refused database must not leave a delegated authorization"
    );

    // Reader + AuthorizationDelegator is a different policy (not a duplicate).
    let delegator = expect_status(
        grant(
            &client,
            "databases",
            "backup-key",
            &["AuthorizationDelegator", "Reader"],
        )
        .await,
        201,
        "grant delegator",
    );
    assert_json_error(
        &grant(
            &client,
            "databases",
            "backup-key",
            &["Reader", "AuthorizationDelegator"],
        )
        .await,
        409,
        "duplicate_policy",
    );
    let db = client
        .create_database("ledger", Some("data-key"), Some("backup-key"))
        .await
        .unwrap();
    assert_eq!(db.backup_key.as_deref(), Some(backup_key.id.as_str()));

    let delegated_of = |list: &[Value]| -> Vec<Value> {
        list.iter()
            .filter(|a| a["source"] == "backups")
            .cloned()
            .collect()
    };
    let delegated = delegated_of(&authorizations(&client).await);
    assert_eq!(delegated.len(), 1, "{delegated:?}");
    assert_eq!(delegated[0]["target"], backup_key.crn.as_str());
    assert_eq!(delegated[0]["roles"], json!(["Reader"]));
    assert_eq!(delegated[0]["created_by"], db.crn.as_str());
    let first_id = delegated[0]["id"].as_str().unwrap().to_string();

    // The backup key registers the database in its backup_key role.
    let regs = registrations(&client, "backup-key").await;
    assert_eq!(regs["ledger"].1, "backup_key");
    assert_eq!(regs["ledger"].2, db.crn);
    assert_eq!(registrations(&client, "data-key").await["ledger"].1, "key");

    // Removing the delegated authorization makes envault recreate it.
    revoke(&client, &first_id).await.unwrap();
    let recreated = delegated_of(&authorizations(&client).await);
    assert_eq!(recreated.len(), 1, "{recreated:?}");
    assert_ne!(recreated[0]["id"], first_id.as_str());
    assert_eq!(recreated[0]["target"], backup_key.crn.as_str());
    assert_eq!(recreated[0]["created_by"], db.crn.as_str());
    assert_eq!(recreated[0]["roles"], json!(["Reader"]));
    let recreate_events = events(&client, Some("iam.authorizations.recreate")).await;
    assert_eq!(recreate_events.len(), 1, "{recreate_events:?}");
    assert_eq!(recreate_events[0]["outcome"], "success");
    assert_eq!(recreate_events[0]["target"], backup_key.crn.as_str());
    assert_eq!(recreate_events[0]["initiator"]["token_id"], "system");
    let revoke_events = events(&client, Some("iam.authorizations.delete")).await;
    let revoked = revoke_events.last().unwrap()["target"].as_str().unwrap();
    assert!(
        revoked.ends_with(&format!(":authorization:{first_id}")),
        "{revoked}"
    );

    // Revoking the operator's own grants is not undone.
    revoke(&client, delegator["id"].as_str().unwrap())
        .await
        .unwrap();
    revoke(&client, reader_only["id"].as_str().unwrap())
        .await
        .unwrap();
    // The delegated authorization went with its delegator.
    let left = authorizations(&client).await;
    assert!(
        left.iter().all(|a| a["target"] != backup_key.crn.as_str()),
        "{left:?}"
    );
    // Records are under data-key, whose grant stays: still usable.
    client.put_record("ledger", "a", b"1").await.unwrap();
    assert_eq!(client.get_record("ledger", "a").await.unwrap(), b"1");
}
