//! The key and database lifecycle through the real daemon (DESIGN.md rules 1–8): service
//! authorizations, registrations, rotation, disable / enable, soft deletion with restore and
//! purge, key deletion, dry-run previews and the activity log.

use crate::common;
use crate::common::Rng;
use crate::lifecycle_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assert_api_error, unique, Daemon};
use envault::api::KeyInfo;
use envault::client::{Client, Method};
use lifecycle_support::{
    assert_absent_under, assert_audit_chain_ok, assert_json_error, audit_file_events,
    authorizations, call, delete_database, delete_key, disable_key, enable_key, encodings, events,
    expect_status, grant, key_path, poll, raw_code, restore_database, revoke, rotate, usable_key,
    KeepAlive, Needle,
};
use serde_json::{json, Value};

const DUPLICATE_MESSAGE: &str =
    "an access policy with identical attributes and roles already exists";

/// Writes `count` records `r0..` with distinct values into `db`; returns them.
async fn fill(client: &Client, db: &str, count: usize) -> BTreeMap<String, Vec<u8>> {
    let mut records = BTreeMap::new();
    for i in 0..count {
        let key = format!("r{i}");
        let value = format!("{db}/{key}/{}", unique("v")).into_bytes();
        client.put_record(db, &key, &value).await.unwrap();
        records.insert(key, value);
    }
    records
}

/// Every record of `db` reads back exactly.
async fn assert_records(client: &Client, db: &str, records: &BTreeMap<String, Vec<u8>>) {
    for (key, value) in records {
        let got = client
            .get_record(db, key)
            .await
            .unwrap_or_else(|e| panic!("read {db}/{key}: {e}"));
        assert_eq!(&got, value, "{db}/{key}");
    }
}

/// The registrations of a key, by database name: (state, role, crn, id).
async fn registrations(
    client: &Client,
    key: &str,
) -> BTreeMap<String, (String, String, String, String)> {
    let info = client.get_key(key).await.unwrap();
    info.registrations
        .unwrap_or_else(|| panic!("GET /v1/keys/{key} has no registrations field"))
        .into_iter()
        .map(|r| {
            assert_eq!(r.kind, "database");
            (r.name, (r.state, r.role, r.crn, r.id))
        })
        .collect()
}

async fn key_version(client: &Client, key: &str) -> u32 {
    client.get_key(key).await.unwrap().version
}

// ----- authorizations (rules 1 and 7)

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

// ----- registrations (rule 2)

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

// ----- rotation (rule 6)

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

// ----- disable / enable (rule 5)

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

// ----- soft deletion, restore and purge (rule 3)

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

// ----- key deletion (rule 4)

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

// ----- dry runs

#[tokio::test]
async fn dry_runs_preview_the_impact_and_change_nothing() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = usable_key(&client, "previewed").await;
    let mut data = BTreeMap::new();
    for (db, count) in [("p-small", 2usize), ("p-large", 5)] {
        client
            .create_database(db, Some("previewed"), None)
            .await
            .unwrap();
        data.insert(db, fill(&client, db, count).await);
    }
    client
        .create_database("p-gone", Some("previewed"), None)
        .await
        .unwrap();
    delete_database(&client, "p-gone").await.unwrap();
    let events_before = events(&client, None).await.len();

    for (method, path, action) in [
        (
            Method::POST,
            key_path("previewed", "/rotate?dry_run=true"),
            "rotate",
        ),
        (
            Method::POST,
            key_path("previewed", "/disable?dry_run=true"),
            "disable",
        ),
        (
            Method::DELETE,
            key_path("previewed", "?dry_run=true"),
            "delete",
        ),
        (
            Method::DELETE,
            key_path(&key.crn, "?dry_run=true&force=true"),
            "delete",
        ),
    ] {
        let preview = expect_status(call(&client, method, &path, None).await, 200, &path);
        assert_eq!(preview["dry_run"], true, "{preview}");
        assert_eq!(preview["action"], action, "{preview}");
        assert_eq!(preview["key"], key.crn.as_str());
        let mut listed: Vec<(String, u64, String)> = preview["databases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_string(),
                    d["records"].as_u64().unwrap(),
                    d["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            vec![
                ("p-gone".to_string(), 0, "deleted".to_string()),
                ("p-large".to_string(), 5, "active".to_string()),
                ("p-small".to_string(), 2, "active".to_string()),
            ],
            "{preview}"
        );
        assert_eq!(preview["total_records"], 7, "{preview}");
        assert_eq!(preview["wrapped_deks"], 3, "{preview}");
    }

    // Nothing changed: version, state, data, rotation, audit.
    let after = client.get_key("previewed").await.unwrap();
    assert_eq!((after.version, after.state.as_str()), (1, "active"));
    for (db, records) in &data {
        assert_records(&client, db, records).await;
    }
    let rotation = call(
        &client,
        Method::GET,
        &key_path("previewed", "/rotation"),
        None,
    )
    .await;
    assert_json_error(&rotation, 404, "not_found");
    let new_events: Vec<Value> = events(&client, None).await.split_off(events_before);
    assert!(
        new_events
            .iter()
            .all(|e| !e["action"].as_str().unwrap().starts_with("kms.secrets.")),
        "a dry run logged a key action: {new_events:?}"
    );
    // An unknown query parameter is refused rather than ignored (a typo must not shred).
    let answer = call(
        &client,
        Method::DELETE,
        &key_path("previewed", "?dryrun=true"),
        None,
    )
    .await;
    assert_json_error(&answer, 400, "bad_request");
    assert_eq!(client.get_key("previewed").await.unwrap().state, "active");
}

// ----- activity log (rule 8)

#[tokio::test]
async fn the_activity_log_records_every_action_and_denial_but_no_secret() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let mut rng = Rng::new(0xa0d1_7000);
    let imported = rng.bytes(32);
    let marker = format!("AUDIT-MARKER-{}", unique("m"));
    let wrap_secret = format!("WRAP-SECRET-{}", unique("w")).into_bytes();

    let key = client
        .create_key("audited", Some(&imported), None)
        .await
        .unwrap();
    assert_eq!(key.origin, "imported");
    let granted = expect_status(
        grant(&client, "databases", "audited", &["Reader"]).await,
        201,
        "grant",
    );
    let db = client
        .create_database("audited-db", Some("audited"), None)
        .await
        .unwrap();
    client
        .put_record("audited-db", "rec", marker.as_bytes())
        .await
        .unwrap();
    let wrapped = client
        .wrap("audited", Some(&wrap_secret), &[])
        .await
        .unwrap();
    client
        .unwrap("audited", &wrapped.ciphertext, &[])
        .await
        .unwrap();
    rotate(&client, "audited", json!({})).await.unwrap();
    disable_key(&client, "audited").await.unwrap();
    assert_api_error(
        client.get_record("audited-db", "rec").await,
        423,
        "key_suspended",
    );
    enable_key(&client, "audited").await.unwrap();
    delete_database(&client, "audited-db").await.unwrap();
    restore_database(&client, "audited-db").await.unwrap();
    assert_api_error(
        daemon
            .client_with_token(Some("evt_wrong"))
            .list_keys()
            .await,
        401,
        "unauthenticated",
    );
    assert_json_error(
        &grant(&client, "databases", "audited", &["Reader"]).await,
        409,
        "duplicate_policy",
    );
    revoke(&client, granted["id"].as_str().unwrap())
        .await
        .unwrap();
    let temp = client.create_key("short-lived", None, None).await.unwrap();
    delete_key(&client, "short-lived", false).await.unwrap();

    let all = events(&client, None).await;
    let expected: Vec<(&str, &str, &str)> = vec![
        ("kms.secrets.create", "success", key.crn.as_str()),
        ("iam.authorizations.create", "success", key.crn.as_str()),
        ("databases.create", "success", db.crn.as_str()),
        ("kms.secrets.wrap", "success", key.crn.as_str()),
        ("kms.secrets.unwrap", "success", key.crn.as_str()),
        ("kms.secrets.rotate", "success", key.crn.as_str()),
        ("kms.secrets.disable", "success", key.crn.as_str()),
        ("databases.records.read", "denied", ""),
        ("kms.secrets.enable", "success", key.crn.as_str()),
        ("databases.delete", "success", db.crn.as_str()),
        ("databases.restore", "success", db.crn.as_str()),
        ("auth.denied", "denied", ""),
        ("iam.authorizations.create", "failure", ""),
        ("iam.authorizations.delete", "success", ""),
        ("kms.secrets.create", "success", temp.crn.as_str()),
        ("kms.secrets.delete", "success", temp.crn.as_str()),
    ];
    // In this order, and no key or database action beyond these.
    let mut at = 0;
    for (action, outcome, target) in &expected {
        let found = all[at..]
            .iter()
            .position(|e| e["action"] == *action && e["outcome"] == *outcome)
            .unwrap_or_else(|| panic!("no {action} {outcome} after event {at} in {all:#?}"));
        let event = &all[at + found];
        if !target.is_empty() {
            assert_eq!(event["target"], *target, "{event}");
        }
        at += found + 1;
    }
    let counted = |action: &str| all.iter().filter(|e| e["action"] == action).count();
    for (action, count) in [
        ("kms.secrets.create", 2),
        ("kms.secrets.rotate", 1),
        ("kms.secrets.disable", 1),
        ("kms.secrets.enable", 1),
        ("kms.secrets.delete", 1),
        ("kms.secrets.wrap", 1),
        ("kms.secrets.unwrap", 1),
        ("databases.create", 1),
        ("databases.delete", 1),
        ("databases.restore", 1),
        ("iam.authorizations.create", 2),
        ("iam.authorizations.delete", 1),
        ("auth.denied", 1),
    ] {
        assert_eq!(counted(action), count, "{action} events in {all:#?}");
    }
    let denied_read = all
        .iter()
        .find(|e| e["action"] == "databases.records.read")
        .unwrap();
    assert_eq!(denied_read["reason"], "key_suspended", "{denied_read}");
    // The initiator names the token by id and the peer by its uid (SO_PEERCRED).
    let uid = std::os::unix::fs::MetadataExt::uid(&daemon.dir().metadata().unwrap());
    let created = all
        .iter()
        .find(|e| e["action"] == "kms.secrets.create")
        .unwrap();
    assert_eq!(created["initiator"]["peer_uid"], uid, "{created}");
    let auth_denied = all.iter().find(|e| e["action"] == "auth.denied").unwrap();
    assert_eq!(
        auth_denied["initiator"]["token_id"], "anonymous",
        "{auth_denied}"
    );
    assert_eq!(auth_denied["reason"], "unauthenticated");
    for event in &all {
        for field in ["time", "action", "target", "outcome"] {
            assert!(event[field].is_string(), "{field} missing in {event}");
        }
        time::OffsetDateTime::parse(
            event["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("time of {event}: {e}"));
        let token_id = event["initiator"]["token_id"].as_str().unwrap();
        assert!(!token_id.is_empty() && token_id != daemon.token, "{event}");
    }

    // Filters: exact action, a prefix, and since.
    let rotates = events(&client, Some("kms.secrets.rotate")).await;
    assert_eq!(rotates.len(), 1);
    let kms = events(&client, Some("kms.secrets.*")).await;
    assert_eq!(kms.len(), 8, "{kms:#?}");
    assert!(kms
        .iter()
        .all(|e| e["action"].as_str().unwrap().starts_with("kms.secrets.")));
    let since = all.last().unwrap()["time"].as_str().unwrap();
    let path = format!("/v1/audit?since={}", envault::client::encode_segment(since));
    let recent = expect_status(call(&client, Method::GET, &path, None).await, 200, &path);
    let recent = recent["events"].as_array().unwrap();
    assert!(!recent.is_empty() && recent.len() < all.len());
    assert!(recent.iter().all(|e| e["time"].as_str().unwrap() >= since));

    // The chain verifies and matches the file line for line.
    let report = assert_audit_chain_ok(&client).await;
    let lines = audit_file_events(&daemon);
    assert_eq!(report["events"].as_u64().unwrap() as usize, lines.len());
    assert_eq!(report["head"], lines.last().unwrap()["hash"]);
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
    }
    // The log is not readable without a token.
    let answer = daemon
        .client_with_token(None)
        .request(Method::GET, "/v1/audit", None)
        .await
        .unwrap();
    assert_eq!(answer.0, 401);

    // No key material, wrapped secret, record value or token secret in the log.
    let mut needles: Vec<Needle> = encodings("imported key", &imported);
    needles.extend(encodings("record marker", marker.as_bytes()));
    needles.extend(encodings("wrapped plaintext", &wrap_secret));
    needles.extend(encodings("operator token", daemon.token.as_bytes()));
    let log_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        daemon.data_dir.join("audit.log"),
        log_dir.path().join("audit.log"),
    )
    .unwrap();
    assert_absent_under(log_dir.path(), &needles);
    // Nor anywhere else in the data dir, apart from the operator token file itself.
    needles.retain(|n| !n.what.starts_with("operator token"));
    assert_absent_under(&daemon.data_dir, &needles);
}
