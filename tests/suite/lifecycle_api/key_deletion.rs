//! Key deletion: force only while registrations exist; a shredded soft-deleted database stays shredded.

use super::*;

#[tokio::test]
async fn key_deletion_needs_force_only_while_registrations_exist() {
    let daemon = Daemon::start().await;
    let client = daemon.client();

    // No registrations: deletes without force, with a receipt.
    let lonely = client.create_key("lonely", None, None).await.unwrap();
    let answer = expect_status(
        call(&client, Method::DELETE, &key_path("lonely", ""), None).await,
        200,
        "delete unused key",
    );
    assert_eq!(answer["key"], lonely.crn.as_str(), "{answer}");
    assert_eq!(answer["destroyed_versions"], json!([1]));
    assert_eq!(answer["affected"], json!([]));
    assert_eq!(client.get_key("lonely").await.unwrap().state, "destroyed");
    assert_api_error(client.wrap("lonely", None, &[]).await, 423, "key_destroyed");
    assert_api_error(
        delete_key(&client, "lonely", true).await,
        423,
        "key_destroyed",
    );
    assert_api_error(enable_key(&client, "lonely").await, 423, "key_destroyed");

    // An active database: refused without force, and nothing changes.
    usable_key(&client, "busy").await;
    client
        .create_database("busy-db", Some("busy"), None)
        .await
        .unwrap();
    client.put_record("busy-db", "k", b"v").await.unwrap();
    let answer = call(&client, Method::DELETE, &key_path("busy", ""), None).await;
    assert_json_error(&answer, 409, "key_in_use");
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("busy-db"),
        "the refusal names what the key protects: {}",
        answer.1
    );
    assert_eq!(client.get_key("busy").await.unwrap().state, "active");
    assert_eq!(client.get_record("busy-db", "k").await.unwrap(), b"v");

    // Only a soft-deleted database: still in use.
    usable_key(&client, "fading").await;
    client
        .create_database("fading-db", Some("fading"), None)
        .await
        .unwrap();
    delete_database(&client, "fading-db").await.unwrap();
    let answer = call(&client, Method::DELETE, &key_path("fading", ""), None).await;
    assert_json_error(&answer, 409, "key_in_use");
    assert_eq!(client.get_key("fading").await.unwrap().state, "active");

    // A database naming the key only as its backup key counts as well.
    usable_key(&client, "main").await;
    let spare = client.create_key("spare", None, None).await.unwrap();
    expect_status(
        grant(
            &client,
            "databases",
            "spare",
            &["Reader", "AuthorizationDelegator"],
        )
        .await,
        201,
        "grant delegator",
    );
    client
        .create_database("backed", Some("main"), Some("spare"))
        .await
        .unwrap();
    let answer = call(&client, Method::DELETE, &key_path(&spare.id, ""), None).await;
    assert_json_error(&answer, 409, "key_in_use");

    // Forced: a cryptoshred of the soft-deleted database's key.
    let answer = expect_status(
        call(
            &client,
            Method::DELETE,
            &key_path("fading", "?force=true"),
            None,
        )
        .await,
        200,
        "forced delete",
    );
    let affected = answer["affected"].as_array().unwrap();
    assert_eq!(affected.len(), 1, "{answer}");
    assert_eq!(affected[0]["name"], "fading-db");
    assert_eq!(affected[0]["state"], "deleted");
    assert_eq!(client.get_key("fading").await.unwrap().state, "destroyed");
    let fading = client.get_database("fading-db").await.unwrap();
    assert_eq!(fading.state_reason.as_deref(), Some("key_destroyed"));
    assert_api_error(
        client.get_record("fading-db", "k").await,
        409,
        "database_deleted",
    );
    assert_api_error(delete_key(&client, "nope", true).await, 404, "not_found");
}

/// A shred is irreversible for every database under the key, soft-deleted ones included: such
/// a database never comes back `active` (a restore may refuse, or bring back the metadata
/// `disabled`), and its records stay unreadable.
#[tokio::test]
async fn a_shredded_soft_deleted_database_never_comes_back_active() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "gone").await;
    client
        .create_database("gone-db", Some("gone"), None)
        .await
        .unwrap();
    client.put_record("gone-db", "k", b"v").await.unwrap();
    delete_database(&client, "gone-db").await.unwrap();
    delete_key(&client, "gone", true).await.unwrap();
    let restored = restore_database(&client, "gone-db").await;
    let shown = client.get_database("gone-db").await.unwrap();
    assert_eq!(shown.state_reason.as_deref(), Some("key_destroyed"));
    match restored {
        Ok(answer) => {
            assert_eq!(answer["state"], "disabled", "{answer}");
            assert_eq!(shown.state, "disabled");
            assert_api_error(
                client.get_record("gone-db", "k").await,
                423,
                "key_destroyed",
            );
            assert_api_error(
                client.put_record("gone-db", "k", b"x").await,
                423,
                "key_destroyed",
            );
        }
        Err(err) => {
            assert_eq!(err.code(), Some("conflict"), "{err}");
            assert_eq!(shown.state, "deleted");
            assert_api_error(
                client.get_record("gone-db", "k").await,
                409,
                "database_deleted",
            );
        }
    }
    // Still registered with the destroyed key, never active.
    let regs = registrations(&client, "gone").await;
    assert_ne!(regs["gone-db"].0, "active");
}
