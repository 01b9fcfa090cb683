//! The key lifecycle rules of DESIGN.md "Resources and rules" through the real daemon, where
//! they were easiest to get wrong: request bodies that are not objects, CRNs of other
//! instances, the seed's `backup_encryption_key_crn`, creating authorizations when missing, and
//! activity-log targets. (Shredded databases and receipts are in `shredded_lifecycle`, the
//! purge of backups and per-database delegations in `backup_purge`.)

use crate::common;
use crate::lifecycle_support;

use common::{assert_api_error, Daemon};
use envault::api::CreateDatabaseRequest;
use envault::client::{Client, Method};
use lifecycle_support::{
    assert_json_error, audit_file_events, authorizations, call, delete_database, expect_status,
    grant, key_path, usable_key,
};
use serde_json::{json, Value};

/// Raw JSON text to `path`; the status and the JSON answer.
async fn post_text(client: &Client, path: &str, body: &str) -> (u16, Value) {
    let (status, bytes) = client
        .request(Method::POST, path, Some(body.as_bytes()))
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The names of every key.
async fn key_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_json_body_that_is_not_an_object_is_refused_and_changes_nothing() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "kept").await;
    let before = key_names(&client).await;
    let import = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let not_objects = [
        ("/v1/keys", "[\"x\"]".to_string()),
        ("/v1/keys", format!("[\"y\", \"{import}\"]")),
        ("/v1/keys", "\"z\"".to_string()),
        ("/v1/keys", "null".to_string()),
        ("/v1/keys", " 7 ".to_string()),
        ("/v1/databases", "[\"db-x\"]".to_string()),
        (
            "/v1/authorizations",
            "[\"databases\", \"kept\", [\"Reader\"]]".to_string(),
        ),
        ("/v1/tokens", "[\"app\"]".to_string()),
        ("/v1/databases/any/records:batch", "[[]]".to_string()),
    ];
    for (path, body) in &not_objects {
        let answer = post_text(&client, path, body).await;
        assert_json_error(&answer, 400, "bad_request");
        assert!(
            answer.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("object"),
            "{path} {body}: {}",
            answer.1
        );
    }
    assert_eq!(key_names(&client).await, before, "nothing was created");
    assert!(client.list_databases().await.unwrap().is_empty());
    assert_eq!(authorizations(&client).await.len(), 1);
    // An object, with leading whitespace, is still a body.
    let answer = post_text(&client, "/v1/keys", " \n {\"name\": \"x\"}").await;
    assert_eq!(answer.0, 201, "{}", answer.1);
    // The optional body of a rotation is refused the same way.
    let answer = post_text(&client, &key_path("x", "/rotate"), "[true]").await;
    assert_json_error(&answer, 400, "bad_request");
    assert_eq!(client.get_key("x").await.unwrap().version, 1);
}

#[tokio::test]
async fn crns_of_another_account_or_instance_are_refused() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = usable_key(&client, "local").await;
    let db = client
        .create_database("local-db", Some("local"), None)
        .await
        .unwrap();
    // crn:v1:envault:local:a/<name>:<instance>:key:<id>
    let (own_prefix, id) = key.crn.rsplit_once(":key:").unwrap();
    assert_eq!(id, key.id);
    let (account_part, instance) = own_prefix.rsplit_once(':').unwrap();
    let other_uuid = "0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f";
    assert_eq!(client.get_key(&key.crn).await.unwrap().id, key.id);
    for foreign in [
        format!("crn:v1:bluemix:public:kms:us-south:a/other:other:key:{id}"),
        format!("crn:v1:envault:local:a/other:{instance}:key:{id}"),
        format!("{account_part}:{other_uuid}:key:{id}"),
        format!("{own_prefix}:database:{id}"),
        format!("{own_prefix}:key:{id}:extra"),
        key.crn.to_uppercase(),
    ] {
        assert_api_error(client.get_key(&foreign).await, 404, "not_found");
        assert_api_error(
            client.create_database("never", Some(&foreign), None).await,
            404,
            "not_found",
        );
        let wrap = call(
            &client,
            Method::POST,
            &key_path(&foreign, "/wrap"),
            Some(json!({})),
        )
        .await;
        assert_json_error(&wrap, 404, "not_found");
    }
    let (db_prefix, db_id) = db.crn.rsplit_once(":database:").unwrap();
    assert_eq!(db_id, db.id);
    let foreign_db = format!("crn:v1:envault:local:a/other:{instance}:database:{db_id}");
    assert_api_error(client.get_database(&foreign_db).await, 404, "not_found");
    assert_api_error(
        delete_database(&client, &foreign_db).await,
        404,
        "not_found",
    );
    assert_eq!(client.get_database(&db.crn).await.unwrap().state, "active");
    assert!(db_prefix.starts_with("crn:v1:envault:local:a/"));
    assert!(client
        .list_databases()
        .await
        .unwrap()
        .iter()
        .all(|d| d.name != "never"));
}

#[tokio::test]
async fn the_seed_field_name_names_the_backup_key_and_the_own_key_follows_one_rule() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "records").await;
    let backup = client.create_key("vault-b", None, None).await.unwrap();
    let granted = grant(
        &client,
        "databases",
        "vault-b",
        &["Reader", "AuthorizationDelegator"],
    )
    .await;
    assert_eq!(granted.0, 201, "{}", granted.1);

    let created = expect_status(
        call(
            &client,
            Method::POST,
            "/v1/databases",
            Some(json!({
                "name": "seeded",
                "key": "records",
                "backup_encryption_key_crn": backup.crn,
            })),
        )
        .await,
        201,
        "create with backup_encryption_key_crn",
    );
    assert_eq!(created["backup_key"], backup.id.as_str(), "{created}");
    assert_eq!(created["backup_key_name"], "vault-b", "{created}");
    let made = client.create_backup("seeded").await.unwrap();
    assert_eq!(made["key"], backup.id.as_str(), "{made}");
    // Both names at once is one field given twice.
    let both = call(
        &client,
        Method::POST,
        "/v1/databases",
        Some(json!({
            "name": "twice", "key": "records",
            "backup_key": "vault-b", "backup_encryption_key_crn": backup.crn,
        })),
    )
    .await;
    assert_json_error(&both, 400, "bad_request");

    // The database's own key as its backup key needs what the key needs (Reader), at creation
    // and at backup time alike, and delegates nothing.
    let own = usable_key(&client, "own").await;
    let before = authorizations(&client).await.len();
    let db = client
        .create_database("own-db", Some("own"), Some(&own.crn))
        .await
        .unwrap();
    assert_eq!(db.backup_key.as_deref(), Some(own.id.as_str()));
    assert_eq!(db.backup_key_name.as_deref(), Some("own"));
    client.put_record("own-db", "r", b"v").await.unwrap();
    let made = client.create_backup("own-db").await.unwrap();
    assert_eq!(made["key"], own.id.as_str(), "{made}");
    assert_eq!(authorizations(&client).await.len(), before);
    // A separate backup key still needs the delegator.
    client.create_key("plain", None, None).await.unwrap();
    common::allow_databases(&client, "plain").await;
    assert_api_error(
        client
            .create_database("needs-delegator", Some("own"), Some("plain"))
            .await,
        403,
        "not_authorized_for_key",
    );
}

#[tokio::test]
async fn authorizations_are_created_if_missing_when_asked() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let bare = client.create_key("bare", None, None).await.unwrap();
    client.create_key("bare-backups", None, None).await.unwrap();
    assert_api_error(
        client.create_database("refused", Some("bare"), None).await,
        403,
        "not_authorized_for_key",
    );
    let request = |name: &str, backup: Option<&str>| CreateDatabaseRequest {
        name: name.into(),
        key: Some("bare".into()),
        backup_key: backup.map(String::from),
        create_authorization: true,
    };
    client
        .create_database_with(&request("asked", Some("bare-backups")))
        .await
        .unwrap();
    let mut policies: Vec<(String, Vec<String>)> = authorizations(&client)
        .await
        .iter()
        .filter(|a| a["source"] == "databases")
        .map(|a| {
            let roles = a["roles"].as_array().unwrap();
            (
                a["target"].as_str().unwrap().to_string(),
                roles
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    policies.sort();
    let backups_crn = client.get_key("bare-backups").await.unwrap().crn;
    let mut expected = vec![
        (bare.crn.clone(), vec!["Reader".to_string()]),
        (
            backups_crn,
            vec!["AuthorizationDelegator".to_string(), "Reader".to_string()],
        ),
    ];
    expected.sort();
    assert_eq!(policies, expected);
    // Present ones are kept, not duplicated.
    let count = authorizations(&client).await.len();
    client
        .create_database_with(&request("again", Some("bare-backups")))
        .await
        .unwrap();
    // (plus the delegated backups authorization of the new database)
    assert_eq!(authorizations(&client).await.len(), count + 1);
    let raw = call(
        &client,
        Method::POST,
        "/v1/databases",
        Some(json!({"name": "raw", "key": "bare", "create_authorization": true})),
    )
    .await;
    assert_eq!(raw.0, 201, "{}", raw.1);

    // The CLI: --create-authorization, and authz grant --if-missing.
    client.create_key("cli-key", None, None).await.unwrap();
    let out = daemon.cli(&[
        "db",
        "create",
        "cli-db",
        "--key",
        "cli-key",
        "--create-authorization",
    ]);
    assert!(out.status.success(), "{out:?}");
    let grant_args = [
        "authz",
        "grant",
        "--source",
        "databases",
        "--target",
        "cli-key",
        "--role",
        "Reader",
    ];
    let out = daemon.cli(&grant_args);
    assert!(!out.status.success(), "a duplicate grant fails: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("duplicate_policy"),
        "{out:?}"
    );
    let mut if_missing = grant_args.to_vec();
    if_missing.push("--if-missing");
    let out = daemon.cli(&if_missing);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already granted"),
        "{out:?}"
    );
    client.create_key("fresh", None, None).await.unwrap();
    let out = daemon.cli(&[
        "authz",
        "grant",
        "--source",
        "databases",
        "--target",
        "fresh",
        "--if-missing",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("granted"),
        "{out:?}"
    );
    client
        .create_database("fresh-db", Some("fresh"), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_audit_target_is_a_crn() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "audited").await;
    client
        .create_database("audited-db", Some("audited"), None)
        .await
        .unwrap();
    client.put_record("audited-db", "r", b"v").await.unwrap();
    let backup = client.create_backup("audited-db").await.unwrap();
    client
        .delete_backup(backup["id"].as_str().unwrap())
        .await
        .unwrap();
    // Failures and refusals that name nothing, or name things by name or id.
    assert!(client.create_key("audited", None, None).await.is_err());
    assert!(client.create_key("bad name", None, None).await.is_err());
    assert!(client
        .create_database("audited-db", None, None)
        .await
        .is_err());
    let missing = grant(&client, "databases", "no-such-key", &["Reader"]).await;
    assert_eq!(missing.0, 404);
    assert!(lifecycle_support::revoke(&client, "authz_0000")
        .await
        .is_err());
    assert!(client.delete_backup("no-such-backup").await.is_err());
    let token = client
        .create_token("app", &["audited-db".to_string()])
        .await
        .unwrap();
    let token_id = token["id"].as_str().unwrap().to_string();
    let app = daemon.client_with_token(Some(token["token"].as_str().unwrap()));
    assert!(app.create_key("nope", None, None).await.is_err());
    client.revoke_token(&token_id).await.unwrap();
    let anonymous = daemon.client_with_token(Some("not-a-token"));
    assert!(anonymous.list_keys().await.is_err());
    delete_database(&client, "audited-db").await.unwrap();

    let log = audit_file_events(&daemon);
    assert!(log.len() > 12, "{log:?}");
    let prefix = "crn:v1:envault:local:a/";
    for event in &log {
        let target = event["target"].as_str().unwrap();
        assert!(target.starts_with(prefix), "target is not a CRN: {event}");
    }
    // What resolved is named by its own CRN, what did not is the instance with the reference.
    let with_reference: Vec<&Value> = log
        .iter()
        .filter(|e| e["details"]["reference"].is_string())
        .collect();
    for event in &with_reference {
        assert!(event["target"].as_str().unwrap().ends_with("::"), "{event}");
    }
    let references: Vec<&str> = with_reference
        .iter()
        .map(|e| e["details"]["reference"].as_str().unwrap())
        .collect();
    for expected in ["bad name", "no-such-key", "authz_0000", "no-such-backup"] {
        assert!(
            references.contains(&expected),
            "{expected} in {references:?}"
        );
    }
    let token_events: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "iam.tokens.delete")
        .collect();
    assert!(
        token_events[0]["target"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":token:{token_id}")),
        "{token_events:?}"
    );
}
