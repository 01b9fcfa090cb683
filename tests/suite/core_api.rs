//! The socket API of the real daemon, route by route: statuses, error codes and JSON fields
//! (`shared/API.md`), persistence across restarts, socket ownership and concurrent writers.

use crate::common;

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::{allow_databases, assert_api_error, assert_error_answer, error_code, unique, Daemon};
use envault::api::{DatabaseInfo, KeyInfo, RecordListQuery};
use envault::client::{encode_segment, Client, Method};
use serde_json::{json, Value};
use uuid::Uuid;

/// Splits `crn:v1:envault:local:a/<instance>:<instance-id>:<kind>:<id>` and checks its fixed
/// parts; returns the instance id.
#[track_caller]
fn check_crn(crn: &str, kind: &str, id: &str) -> Uuid {
    let parts: Vec<&str> = crn.split(':').collect();
    assert_eq!(parts.len(), 8, "CRN {crn}");
    assert_eq!(&parts[..4], &["crn", "v1", "envault", "local"], "CRN {crn}");
    assert_eq!(parts[4], "a/envault", "CRN {crn}: default instance name");
    let instance = Uuid::parse_str(parts[5]).unwrap_or_else(|_| panic!("CRN {crn}: instance id"));
    assert_eq!(parts[6], kind, "CRN {crn}");
    assert_eq!(parts[7], id, "CRN {crn}");
    instance
}

#[track_caller]
fn check_time(text: &str) {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
}

fn query(prefix: Option<&str>, after: Option<&str>, limit: Option<usize>) -> RecordListQuery {
    RecordListQuery {
        prefix: prefix.map(str::to_string),
        after: after.map(str::to_string),
        limit,
    }
}

/// Creates a customer key and lets databases use it.
async fn usable_key(client: &Client, name: &str) -> KeyInfo {
    let key = client.create_key(name, None, None).await.unwrap();
    allow_databases(client, &key.name).await;
    key
}

async fn json_request(client: &Client, method: Method, path: &str, body: &Value) -> (u16, Value) {
    let (status, bytes) = client
        .request(method, path, Some(body.to_string().as_bytes()))
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, value)
}

#[tokio::test]
async fn health_answers_without_a_token() {
    let daemon = Daemon::start().await;
    let (status, body) = daemon.raw("GET", "/v1/health", &[], b"").await;
    assert_eq!(status, 200);
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["status"], "ok");
    assert_eq!(value["version"], env!("CARGO_PKG_VERSION"));
    let health = daemon.client_with_token(None).health().await.unwrap();
    assert_eq!(health.status, "ok");
}

#[tokio::test]
async fn large_records_round_trip_and_health_reports_no_value_log() {
    // Large values are fjall's blob files (or PostgreSQL's TOAST): there is no envault value
    // log any more, so health has nothing to report under `value_log`.
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = usable_key(&client, "vlog").await;
    client
        .create_database("vlog-db", Some(&key.name), None)
        .await
        .unwrap();
    let value = vec![7u8; 100 * 1024];
    client.put_record("vlog-db", "big", &value).await.unwrap();
    assert_eq!(
        client.get_record("vlog-db", "big").await.unwrap(),
        value,
        "a large record reads back"
    );
    let health = client.health().await.unwrap();
    assert_eq!(health.value_log, None);
    client.delete_record("vlog-db", "big").await.unwrap();
}

#[tokio::test]
async fn token_is_required_and_checked() {
    let daemon = Daemon::start().await;
    let none = daemon.raw("GET", "/v1/keys", &[], b"").await;
    assert_error_answer(&none, 401, "unauthenticated");
    let wrong = [("Authorization".to_string(), "Bearer evt_wrong".to_string())];
    assert_error_answer(
        &daemon.raw("GET", "/v1/keys", &wrong, b"").await,
        401,
        "unauthenticated",
    );
    // The right secret under another scheme is not a bearer token.
    let basic = [(
        "Authorization".to_string(),
        format!("Basic {}", daemon.token),
    )];
    assert_error_answer(
        &daemon.raw("GET", "/v1/keys", &basic, b"").await,
        401,
        "unauthenticated",
    );
    // Nothing is created without a token.
    let create = daemon
        .raw("POST", "/v1/keys", &[], br#"{"name":"nope"}"#)
        .await;
    assert_error_answer(&create, 401, "unauthenticated");
    for path in ["/v1/databases", "/v1/databases/x/records", "/v1/keys/x"] {
        assert_error_answer(
            &daemon.raw("GET", path, &[], b"").await,
            401,
            "unauthenticated",
        );
    }
    assert_api_error(
        daemon
            .client_with_token(Some("evt_bogus"))
            .list_keys()
            .await,
        401,
        "unauthenticated",
    );
    let ok = daemon.raw_auth("GET", "/v1/keys", b"").await;
    assert_eq!(ok.0, 200);
    let keys: Value = serde_json::from_slice(&ok.1).unwrap();
    assert_eq!(keys, json!({ "keys": [] }));
    assert!(daemon.client().list_keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn keys_are_generated_imported_listed_and_shown() {
    let daemon = Daemon::start().await;
    let client = daemon.client();

    let generated = client
        .create_key("orders-key", None, Some("for orders"))
        .await
        .unwrap();
    assert_eq!(generated.name, "orders-key");
    assert_eq!(generated.origin, "generated");
    assert_eq!(generated.state, "active");
    assert_eq!(generated.version, 1);
    assert_eq!(generated.description.as_deref(), Some("for orders"));
    Uuid::parse_str(&generated.id).unwrap();
    let instance = check_crn(&generated.crn, "key", &generated.id);
    check_time(&generated.created_at);

    let material: Vec<u8> = (100u8..132).collect();
    let imported = client
        .create_key("byok", Some(&material), None)
        .await
        .unwrap();
    assert_eq!(imported.origin, "imported");
    assert_eq!(imported.state, "active");
    assert_eq!(imported.version, 1);
    assert_ne!(imported.id, generated.id);
    assert_eq!(check_crn(&imported.crn, "key", &imported.id), instance);

    // The raw answer: 201 with the documented fields and no material.
    let (status, body) = daemon
        .raw_auth("POST", "/v1/keys", br#"{"name":"raw-key"}"#)
        .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let value: Value = serde_json::from_slice(&body).unwrap();
    for field in [
        "id",
        "crn",
        "name",
        "origin",
        "state",
        "version",
        "created_at",
    ] {
        assert!(value.get(field).is_some(), "{field} missing from {value}");
    }
    assert!(value.get("payload").is_none() && value.get("material").is_none());
    assert!(
        value.get("registrations").is_none(),
        "only show has registrations"
    );

    // A database under the generated key, one with a provider key.
    allow_databases(&client, "orders-key").await;
    let orders = client
        .create_database("orders", Some("orders-key"), None)
        .await
        .unwrap();
    let provider_db = client.create_database("scratch", None, None).await.unwrap();
    assert_eq!(provider_db.key_origin, "provider");

    // List: customer keys only, by name; provider keys are not listed.
    let listed = client.list_keys().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["byok", "orders-key", "raw-key"]);
    assert!(listed.iter().all(|k| k.origin != "provider"));
    assert!(!listed.iter().any(|k| k.id == provider_db.key));
    assert!(listed.iter().all(|k| k.registrations.is_none()));

    // Show by name, id and CRN: the same key, with its registrations.
    let by_name = client.get_key("orders-key").await.unwrap();
    let by_id = client.get_key(&generated.id).await.unwrap();
    let by_crn = client.get_key(&generated.crn).await.unwrap();
    assert_eq!(by_name, by_id);
    assert_eq!(by_name, by_crn);
    assert_eq!(by_name.id, generated.id);
    assert_eq!(by_name.crn, generated.crn);
    assert_eq!(by_name.created_at, generated.created_at);
    let registrations = by_name.registrations.expect("show lists registrations");
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    let registration = &registrations[0];
    assert_eq!(registration.kind, "database");
    assert_eq!(registration.id, orders.id);
    assert_eq!(registration.crn, orders.crn);
    assert_eq!(registration.name, "orders");
    assert_eq!(registration.state, "active");
    assert_eq!(registration.role, "key");
    let unused = client.get_key("byok").await.unwrap();
    assert_eq!(unused.registrations, Some(vec![]));
}

#[tokio::test]
async fn key_creation_errors() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_key("taken", None, None).await.unwrap();

    assert_api_error(
        client.create_key("taken", None, None).await,
        409,
        "conflict",
    );
    assert_api_error(
        client.create_key("taken", Some(&patterned(7)), None).await,
        409,
        "conflict",
    );
    for (name, payload) in [
        ("bad-b64", json!("not base64 !!!")),
        ("short", json!(BASE64.encode([1u8; 31]))),
        ("long", json!(BASE64.encode([1u8; 33]))),
        ("empty", json!("")),
        ("number", json!(42)),
    ] {
        let (status, value) = json_request(
            &client,
            Method::POST,
            "/v1/keys",
            &json!({ "name": name, "payload": payload }),
        )
        .await;
        assert_eq!(status, 400, "{name}: {value}");
        assert_eq!(value["error"]["code"], "bad_request", "{name}: {value}");
    }
    assert_api_error(
        client.create_key("short2", Some(&[1u8; 31]), None).await,
        400,
        "bad_request",
    );
    assert_api_error(
        client.create_key("long2", Some(&[1u8; 33]), None).await,
        400,
        "bad_request",
    );
    let too_long = "x".repeat(129);
    for bad_name in [
        "",
        "a/b",
        "has space",
        ".hidden",
        "-dash",
        too_long.as_str(),
    ] {
        assert_api_error(
            client.create_key(bad_name, None, None).await,
            400,
            "bad_request",
        );
    }
    // Malformed JSON, wrong types, missing and unknown fields.
    for body in [
        &b"not json"[..],
        br#"{"name": "x""#,
        br#"{"name": 5}"#,
        br#"{}"#,
        br#"[]"#,
        br#"{"name": "x", "bogus": 1}"#,
    ] {
        let answer = daemon.raw_auth("POST", "/v1/keys", body).await;
        assert_error_answer(&answer, 400, "bad_request");
    }
    // Nothing above created a key; the refused names are still free.
    let names: Vec<String> = client
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["taken"]);
    let key = client
        .create_key("short", Some(&patterned(1)), None)
        .await
        .unwrap();
    assert_eq!(key.origin, "imported");

    // Unknown keys: 404 everywhere a key is named.
    assert_api_error(client.get_key("missing").await, 404, "not_found");
    assert_api_error(
        client.get_key(&Uuid::new_v4().to_string()).await,
        404,
        "not_found",
    );
    let foreign_crn = format!(
        "crn:v1:envault:local:a/envault:{}:key:{}",
        Uuid::new_v4(),
        Uuid::new_v4()
    );
    assert_api_error(client.get_key(&foreign_crn).await, 404, "not_found");
    assert_api_error(client.wrap("missing", None, &[]).await, 404, "not_found");
    assert_api_error(
        client.unwrap("missing", "AAAA", &[]).await,
        404,
        "not_found",
    );
    assert_api_error(
        client.rewrap("missing", "AAAA", &[]).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn wrap_unwrap_and_rewrap() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = client.create_key("wrapper", None, None).await.unwrap();
    let other = client.create_key("other", None, None).await.unwrap();

    // No plaintext: a fresh 32-byte DEK comes back with its ciphertext.
    let wrapped = client.wrap("wrapper", None, &[]).await.unwrap();
    assert_eq!(wrapped.key_version, 1);
    let dek = wrapped.dek.clone().expect("a generated DEK is returned");
    assert_eq!(dek.len(), 32);
    let again = client.wrap("wrapper", None, &[]).await.unwrap();
    assert_ne!(*again.dek.unwrap(), *dek, "each wrap generates a new DEK");
    assert_ne!(again.ciphertext, wrapped.ciphertext);
    let ciphertext = BASE64.decode(&wrapped.ciphertext).unwrap();
    assert!(
        ciphertext.len() >= 32 + 16,
        "ciphertext carries DEK and tag"
    );
    assert!(
        !common::contains(&ciphertext, &dek),
        "DEK visible in ciphertext"
    );

    // Unwrap by name, id and CRN.
    for reference in [&key.name, &key.id, &key.crn] {
        let plain = client
            .unwrap(reference, &wrapped.ciphertext, &[])
            .await
            .unwrap();
        assert_eq!(*plain, *dek);
    }

    // Wrap a given plaintext with AAD: the answer carries no plaintext.
    let secret = b"application secret \x00\xff".to_vec();
    let aad = vec!["tenant=7".to_string(), "purpose=backup".to_string()];
    let (status, value) = json_request(
        &client,
        Method::POST,
        "/v1/keys/wrapper/wrap",
        &json!({ "plaintext": BASE64.encode(&secret), "aad": aad }),
    )
    .await;
    assert_eq!(status, 200, "{value}");
    assert!(value.get("plaintext").is_none(), "{value}");
    assert_eq!(value["key_version"], 1);
    let sealed = value["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(
        *client.unwrap("wrapper", &sealed, &aad).await.unwrap(),
        secret
    );

    // Wrong, missing, reordered or extra AAD: 400, and the answer leaks nothing.
    let secret_b64 = BASE64.encode(&secret);
    for wrong in [
        json!({ "ciphertext": sealed, "aad": ["tenant=8", "purpose=backup"] }),
        json!({ "ciphertext": sealed }),
        json!({ "ciphertext": sealed, "aad": ["purpose=backup", "tenant=7"] }),
        json!({ "ciphertext": sealed, "aad": ["tenant=7", "purpose=backup", "x"] }),
        json!({ "ciphertext": sealed, "aad": ["tenant=7purpose=backup"] }),
    ] {
        let (status, bytes) = client
            .request(
                Method::POST,
                "/v1/keys/wrapper/unwrap",
                Some(wrong.to_string().as_bytes()),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{wrong}");
        assert_eq!(error_code(&bytes), "bad_request");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&secret_b64) && !text.contains("plaintext\":"),
            "{text}"
        );
    }
    let with_aad = client
        .wrap("wrapper", None, &["ctx".to_string()])
        .await
        .unwrap();
    assert_api_error(
        client.unwrap("wrapper", &with_aad.ciphertext, &[]).await,
        400,
        "bad_request",
    );
    assert_eq!(
        *client
            .unwrap("wrapper", &with_aad.ciphertext, &["ctx".to_string()])
            .await
            .unwrap(),
        *with_aad.dek.unwrap()
    );

    // Rewrap: a new ciphertext under the newest version that opens to the same plaintext.
    let rewrapped = client.rewrap("wrapper", &sealed, &aad).await.unwrap();
    assert_eq!(rewrapped.key_version, 1);
    assert_ne!(rewrapped.ciphertext, sealed);
    assert_eq!(
        *client
            .unwrap("wrapper", &rewrapped.ciphertext, &aad)
            .await
            .unwrap(),
        secret
    );
    assert_api_error(
        client.rewrap("wrapper", &sealed, &[]).await,
        400,
        "bad_request",
    );

    // Another key cannot open it, nor rewrap it.
    assert_api_error(
        client.unwrap(&other.name, &wrapped.ciphertext, &[]).await,
        400,
        "bad_request",
    );
    assert_api_error(
        client.rewrap(&other.name, &wrapped.ciphertext, &[]).await,
        400,
        "bad_request",
    );

    // Truncated, bit-flipped, empty, garbage and non-base64 ciphertexts: 400.
    let mut tampered = Vec::new();
    for cut in [1, 16, ciphertext.len() / 2, ciphertext.len() - 1] {
        tampered.push(BASE64.encode(&ciphertext[..cut]));
    }
    for index in [0, 5, ciphertext.len() / 2, ciphertext.len() - 1] {
        let mut flipped = ciphertext.clone();
        flipped[index] ^= 0x01;
        tampered.push(BASE64.encode(&flipped));
    }
    let mut longer = ciphertext.clone();
    longer.push(0);
    tampered.push(BASE64.encode(&longer));
    tampered.push(String::new());
    tampered.push(BASE64.encode([0u8; 80]));
    tampered.push("@@not base64@@".to_string());
    for bad in &tampered {
        assert_api_error(client.unwrap("wrapper", bad, &[]).await, 400, "bad_request");
    }

    // Plaintext must be valid base64; unknown fields are refused.
    for body in [
        json!({ "plaintext": "%%%" }),
        json!({ "plaintext": BASE64.encode(b"x"), "bogus": true }),
        json!({ "aad": "not a list" }),
    ] {
        let (status, value) =
            json_request(&client, Method::POST, "/v1/keys/wrapper/wrap", &body).await;
        assert_eq!(status, 400, "{body}: {value}");
        assert_eq!(value["error"]["code"], "bad_request");
    }
    let (status, value) = json_request(
        &client,
        Method::POST,
        "/v1/keys/wrapper/unwrap",
        &json!({ "ciphertext": wrapped.ciphertext, "extra": 1 }),
    )
    .await;
    assert_eq!(
        (status, value["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
}

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

#[tokio::test]
async fn records_round_trip() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "rk").await;
    client
        .create_database("db", Some("rk"), None)
        .await
        .unwrap();
    client.create_database("other", None, None).await.unwrap();

    client.put_record("db", "r1", b"hello").await.unwrap();
    assert_eq!(client.get_record("db", "r1").await.unwrap(), b"hello");
    // By database id too.
    let db = client.get_database("db").await.unwrap();
    assert_eq!(client.get_record(&db.id, "r1").await.unwrap(), b"hello");
    // Overwrite.
    client.put_record("db", "r1", b"world!").await.unwrap();
    assert_eq!(client.get_record("db", "r1").await.unwrap(), b"world!");
    // Records are per database.
    assert_api_error(client.get_record("other", "r1").await, 404, "not_found");

    // Raw: 204 on put and delete, 200 octet-stream on get.
    let put = daemon
        .raw_auth("PUT", "/v1/databases/db/records/raw", b"\x00raw\xff")
        .await;
    assert_eq!(put, (204, Vec::new()));
    let got = daemon
        .raw_auth("GET", "/v1/databases/db/records/raw", b"")
        .await;
    assert_eq!(got, (200, b"\x00raw\xff".to_vec()));

    // Binary values, every byte value, and an empty value.
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    client.put_record("db", "bin", &binary).await.unwrap();
    assert_eq!(client.get_record("db", "bin").await.unwrap(), binary);
    client.put_record("db", "empty", b"").await.unwrap();
    assert_eq!(client.get_record("db", "empty").await.unwrap(), b"");
    let page = client
        .list_records("db", &query(None, None, None))
        .await
        .unwrap();
    assert_eq!(page.keys, ["bin", "empty", "r1", "raw"]);
    assert_eq!(page.next, None);

    // Delete: 204, then 404 on get and on a second delete.
    let deleted = daemon
        .raw_auth("DELETE", "/v1/databases/db/records/raw", b"")
        .await;
    assert_eq!(deleted, (204, Vec::new()));
    assert_api_error(client.get_record("db", "raw").await, 404, "not_found");
    assert_api_error(client.delete_record("db", "raw").await, 404, "not_found");
    client.delete_record("db", "empty").await.unwrap();
    assert_api_error(client.get_record("db", "empty").await, 404, "not_found");
    assert_api_error(client.get_record("db", "never").await, 404, "not_found");
    assert_api_error(client.delete_record("db", "never").await, 404, "not_found");
    let page = client
        .list_records("db", &query(None, None, None))
        .await
        .unwrap();
    assert_eq!(page.keys, ["bin", "r1"]);

    // Unknown database: 404 on every record route.
    assert_api_error(client.put_record("nodb", "r", b"v").await, 404, "not_found");
    assert_api_error(client.get_record("nodb", "r").await, 404, "not_found");
    assert_api_error(client.delete_record("nodb", "r").await, 404, "not_found");
    assert_api_error(
        client.list_records("nodb", &query(None, None, None)).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn record_keys_are_percent_encoded_segments() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_database("db", None, None).await.unwrap();
    let keys = [
        "a/b c",
        "dir/sub/file.txt",
        " leading and trailing ",
        "ünïcødé/☃/日本語",
        "100% sure?#frag&x=y+z",
        "..",
        ".",
        "a..b",
        "slash/",
        "/",
        "emoji 🦀",
    ];
    for (i, key) in keys.iter().enumerate() {
        client
            .put_record("db", key, format!("value {i}").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("put {key:?}: {e}"));
    }
    for (i, key) in keys.iter().enumerate() {
        let value = client
            .get_record("db", key)
            .await
            .unwrap_or_else(|e| panic!("get {key:?}: {e}"));
        assert_eq!(value, format!("value {i}").as_bytes(), "{key:?}");
    }
    let page = client
        .list_records("db", &query(None, None, None))
        .await
        .unwrap();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort(); // byte order of UTF-8 = order of str
    assert_eq!(page.keys, expected);

    // The same keys by hand-encoded path, and a prefix that needs encoding.
    let path = format!("/v1/databases/db/records/{}", encode_segment("a/b c"));
    assert_eq!(path, "/v1/databases/db/records/a%2Fb%20c");
    assert_eq!(
        daemon.raw_auth("GET", &path, b"").await,
        (200, b"value 0".to_vec())
    );
    let page = client
        .list_records("db", &query(Some("ünïcødé/"), None, None))
        .await
        .unwrap();
    assert_eq!(page.keys, ["ünïcødé/☃/日本語"]);
    let page = client
        .list_records("db", &query(Some("100% sure?#"), None, None))
        .await
        .unwrap();
    assert_eq!(page.keys, ["100% sure?#frag&x=y+z"]);

    // Different encodings of one key name the same record; "a/b" is not "a%2Fb".
    client.put_record("db", "x y", b"1").await.unwrap();
    let plus = daemon
        .raw_auth("GET", "/v1/databases/db/records/x%20y", b"")
        .await;
    assert_eq!(plus, (200, b"1".to_vec()));
    let unencoded = daemon
        .raw_auth("GET", "/v1/databases/db/records/a/b", b"")
        .await;
    assert_error_answer(&unencoded, 404, "not_found");

    // Invalid UTF-8 after decoding, and control characters: 400.
    let bad = daemon
        .raw_auth("GET", "/v1/databases/db/records/%FF%FE", b"")
        .await;
    assert_error_answer(&bad, 400, "bad_request");
    assert_api_error(
        client.put_record("db", "tab\there", b"v").await,
        400,
        "bad_request",
    );
    assert_api_error(
        client.put_record("db", "nul\0", b"v").await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn record_listing_pages_by_prefix() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_database("db", None, None).await.unwrap();
    let mut all = Vec::new();
    for i in 0..20 {
        all.push(format!("p/{i:02}"));
    }
    for i in 0..5 {
        all.push(format!("q/{i}"));
    }
    all.push("p".to_string());
    all.push("pz".to_string());
    for key in &all {
        client.put_record("db", key, key.as_bytes()).await.unwrap();
    }
    all.sort();

    // Default page: everything, no next.
    let page = client
        .list_records("db", &query(None, None, None))
        .await
        .unwrap();
    assert_eq!(page.keys, all);
    assert_eq!(page.next, None);

    // Prefix "p/": 20 keys in pages of 7, 7, 6 following `next`.
    let p: Vec<String> = all
        .iter()
        .filter(|k| k.starts_with("p/"))
        .cloned()
        .collect();
    assert_eq!(p.len(), 20);
    let first = client
        .list_records("db", &query(Some("p/"), None, Some(7)))
        .await
        .unwrap();
    assert_eq!(first.keys, p[..7]);
    assert_eq!(first.next.as_deref(), Some("p/06"));
    let second = client
        .list_records("db", &query(Some("p/"), first.next.as_deref(), Some(7)))
        .await
        .unwrap();
    assert_eq!(second.keys, p[7..14]);
    assert_eq!(second.next.as_deref(), Some("p/13"));
    let third = client
        .list_records("db", &query(Some("p/"), second.next.as_deref(), Some(7)))
        .await
        .unwrap();
    assert_eq!(third.keys, p[14..]);
    assert_eq!(third.next, None, "the last page has no next");

    // An exactly full last page has no next either.
    let exact = client
        .list_records("db", &query(Some("q/"), None, Some(5)))
        .await
        .unwrap();
    assert_eq!(exact.keys, ["q/0", "q/1", "q/2", "q/3", "q/4"]);
    assert_eq!(exact.next, None);

    // `after` is exclusive and need not be an existing key.
    let after = client
        .list_records("db", &query(None, Some("p/195"), Some(3)))
        .await
        .unwrap();
    assert_eq!(after.keys, ["pz", "q/0", "q/1"]);
    assert_eq!(after.next.as_deref(), Some("q/1"));
    let after_last = client
        .list_records("db", &query(None, Some("q/4"), None))
        .await
        .unwrap();
    assert!(after_last.keys.is_empty());
    assert_eq!(after_last.next, None);

    // A prefix with no keys, and limit 1.
    let none = client
        .list_records("db", &query(Some("zzz"), None, None))
        .await
        .unwrap();
    assert!(none.keys.is_empty() && none.next.is_none());
    let one = client
        .list_records("db", &query(Some("p"), None, Some(1)))
        .await
        .unwrap();
    assert_eq!(one.keys, ["p"]);
    assert_eq!(one.next.as_deref(), Some("p"));

    // Raw query strings: JSON shape, and bad parameters.
    let (status, body) = daemon
        .raw_auth("GET", "/v1/databases/db/records?prefix=q%2F&limit=2", b"")
        .await;
    assert_eq!(status, 200);
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value, json!({ "keys": ["q/0", "q/1"], "next": "q/1" }));
    for bad in ["limit=0", "limit=1001", "limit=-1", "limit=ten", "bogus=1"] {
        let answer = daemon
            .raw_auth("GET", &format!("/v1/databases/db/records?{bad}"), b"")
            .await;
        assert_error_answer(&answer, 400, "bad_request");
    }
    let max = daemon
        .raw_auth("GET", "/v1/databases/db/records?limit=1000", b"")
        .await;
    assert_eq!(max.0, 200);
}

#[tokio::test]
async fn record_size_and_key_limits() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_MAX_RECORD_SIZE", "1KiB")]).await;
    let client = daemon.client();
    client.create_database("db", None, None).await.unwrap();

    let at_limit = vec![b'v'; 1024];
    client
        .put_record("db", "at-limit", &at_limit)
        .await
        .unwrap();
    assert_eq!(client.get_record("db", "at-limit").await.unwrap(), at_limit);
    assert_api_error(
        client.put_record("db", "over", &[b'v'; 1025]).await,
        413,
        "too_large",
    );
    assert_api_error(client.get_record("db", "over").await, 404, "not_found");

    // A chunked body with no declared length is cut at the limit too.
    let mut request = format!(
        "PUT /v1/databases/db/records/chunked HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        daemon.token
    )
    .into_bytes();
    for _ in 0..3 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'c'; 0x200]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = common::parse_response(&daemon.raw_bytes(&request).await).unwrap();
    assert_error_answer(&answer, 413, "too_large");
    assert_api_error(client.get_record("db", "chunked").await, 404, "not_found");

    // Record keys: 1024 bytes after decoding are fine, 1025 are not.
    let long_key = "k".repeat(1024);
    client.put_record("db", &long_key, b"v").await.unwrap();
    assert_eq!(client.get_record("db", &long_key).await.unwrap(), b"v");
    let multibyte = "é".repeat(512); // 1024 bytes
    client.put_record("db", &multibyte, b"v").await.unwrap();
    let too_long = "k".repeat(1025);
    assert_api_error(
        client.put_record("db", &too_long, b"v").await,
        400,
        "bad_request",
    );
    assert_api_error(client.get_record("db", &too_long).await, 400, "bad_request");
    let too_long_multibyte = format!("{multibyte}x");
    assert_api_error(
        client.put_record("db", &too_long_multibyte, b"v").await,
        400,
        "bad_request",
    );

    // The daemon is still healthy and the stored records intact.
    let page = client
        .list_records("db", &query(None, None, None))
        .await
        .unwrap();
    let mut expected = vec!["at-limit".to_string(), long_key, multibyte];
    expected.sort();
    assert_eq!(page.keys, expected);
}

#[tokio::test]
async fn a_large_oversized_value_gets_413_not_a_broken_pipe() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_MAX_RECORD_SIZE", "1KiB")]).await;
    let client = daemon.client();
    client.create_database("db", None, None).await.unwrap();
    assert_api_error(
        client.put_record("db", "over", &vec![b'v'; 1 << 20]).await,
        413,
        "too_large",
    );
    // The CLI says why too.
    let file = daemon.dir().join("big.bin");
    std::fs::write(&file, vec![b'v'; 1 << 20]).unwrap();
    let output = daemon.cli(&["put", "db", "over", file.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim_end().ends_with("(too_large)"), "{stderr}");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let daemon = Daemon::start().await;
    daemon
        .client()
        .create_database("db", None, None)
        .await
        .unwrap();
    for path in [
        "/v1/nope",
        "/v2/keys",
        "/",
        "/v1/keys/a/b/c",
        "/v1/databases/db/records/a/b",
        "/v1/databases/db/nothing",
    ] {
        let answer = daemon.raw_auth("GET", path, b"").await;
        assert_error_answer(&answer, 404, "not_found");
    }
    for (method, path) in [
        ("DELETE", "/v1/keys"),
        ("PUT", "/v1/keys"),
        ("POST", "/v1/health"),
        ("GET", "/v1/keys/k/wrap"),
        ("POST", "/v1/databases/db/records"),
        ("PATCH", "/v1/databases/db/records/r"),
        ("POST", "/v1/databases/db/records/r"),
    ] {
        let answer = daemon.raw_auth(method, path, b"").await;
        assert_eq!(answer.0, 405, "{method} {path}");
        assert_eq!(
            error_code(&answer.1),
            "method_not_allowed",
            "{method} {path}"
        );
    }

    // Malformed HTTP gets a 4xx (or a closed connection), never a crash.
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /v1/health HTTP/9.9\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ] {
        let answer = daemon.raw_bytes(garbage).await;
        if let Some((status, _)) = common::parse_response(&answer) {
            // 505 is hyper's answer to an unknown HTTP version.
            assert!(
                (400..500).contains(&status) || status == 505,
                "{status} for {garbage:?}"
            );
        }
    }
    let health = daemon.client_with_token(None).health().await.unwrap();
    assert_eq!(health.status, "ok");
}

#[tokio::test]
async fn data_survives_a_graceful_restart() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let material = patterned(42);
    let key = client
        .create_key("byok", Some(&material), None)
        .await
        .unwrap();
    allow_databases(&client, "byok").await;
    let customer = client
        .create_database("customer", Some("byok"), None)
        .await
        .unwrap();
    let provider = client
        .create_database("provider", None, None)
        .await
        .unwrap();
    let generated = client.create_key("spare", None, None).await.unwrap();
    let wrapped = client
        .wrap("byok", Some(b"app secret"), &["a".into()])
        .await
        .unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut expected = Vec::new();
    for db in ["customer", "provider"] {
        for i in 0..30 {
            let value = format!("{db} value {i}").into_bytes();
            client
                .put_record(db, &format!("r/{i:02}"), &value)
                .await
                .unwrap();
            expected.push((db, format!("r/{i:02}"), value));
        }
        client.put_record(db, "big", &big).await.unwrap();
        expected.push((db, "big".to_string(), big.clone()));
        client.put_record(db, "gone", b"x").await.unwrap();
        client.delete_record(db, "gone").await.unwrap();
    }
    let keys_before = client.list_keys().await.unwrap();
    let dbs_before = client.list_databases().await.unwrap();
    let token_before = daemon.token.clone();
    drop(client);

    daemon.stop_graceful().await;
    assert!(!daemon.is_running());
    assert_unreachable(&daemon).await;
    daemon.restart().await;
    assert_eq!(
        daemon.token, token_before,
        "the operator token file is kept"
    );

    let client = daemon.client();
    for (db, rec, value) in &expected {
        assert_eq!(
            &client.get_record(db, rec).await.unwrap(),
            value,
            "{db}/{rec} after restart"
        );
    }
    for db in ["customer", "provider"] {
        assert_api_error(client.get_record(db, "gone").await, 404, "not_found");
        let page = client
            .list_records(db, &query(None, None, None))
            .await
            .unwrap();
        assert_eq!(page.keys.len(), 31);
    }
    assert_eq!(client.list_keys().await.unwrap(), keys_before);
    assert_eq!(client.list_databases().await.unwrap(), dbs_before);
    assert_eq!(client.get_database("customer").await.unwrap(), customer);
    assert_eq!(client.get_database("provider").await.unwrap(), provider);
    assert_eq!(client.get_key("byok").await.unwrap().crn, key.crn);
    assert_eq!(client.get_key("spare").await.unwrap().id, generated.id);
    assert_eq!(
        *client
            .unwrap("byok", &wrapped.ciphertext, &["a".into()])
            .await
            .unwrap(),
        b"app secret"
    );
    // Still writable, and names are still taken.
    client
        .put_record("customer", "after", b"restart")
        .await
        .unwrap();
    assert_api_error(client.create_key("byok", None, None).await, 409, "conflict");
    assert_api_error(
        client.create_database("provider", None, None).await,
        409,
        "conflict",
    );
    daemon.stop_graceful().await;
}

/// With the daemon stopped, the client reports a connection error (not an API error).
async fn assert_unreachable(daemon: &Daemon) {
    let error = daemon.client().list_keys().await.unwrap_err();
    assert!(
        matches!(error, envault::client::ClientError::Connect { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_second_daemon_on_a_live_socket_fails_clearly() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_database("db", None, None).await.unwrap();
    client.put_record("db", "r", b"before").await.unwrap();

    // Same socket, its own data dir: refused at bind, naming the socket.
    let mut command = daemon.serve_command();
    command.env("ENVAULT_DATA_DIR", daemon.dir().join("data2"));
    let output = common::run_with_input(command, b"", common::STARTUP_TIMEOUT);
    assert!(!output.status.success(), "a second serve must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: another envault daemon is already listening on")
            && stderr.contains(&daemon.socket.display().to_string()),
        "stderr: {stderr}"
    );

    // Same socket and same data dir (the usual mistake: running `envault serve` twice): it
    // fails too, and leaves the first daemon alone.
    let output = common::run_with_input(daemon.serve_command(), b"", common::STARTUP_TIMEOUT);
    assert!(!output.status.success(), "a second serve must fail");
    assert!(String::from_utf8_lossy(&output.stderr).contains("error:"));

    // The first daemon keeps its socket and keeps serving.
    assert!(daemon.socket.exists());
    assert_eq!(client.get_record("db", "r").await.unwrap(), b"before");
    client.put_record("db", "r", b"after").await.unwrap();
    assert_eq!(
        daemon.client().get_record("db", "r").await.unwrap(),
        b"after"
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_data_dir_says_why() {
    let daemon = Daemon::start().await;
    let output = common::run_with_input(daemon.serve_command(), b"", common::STARTUP_TIMEOUT);
    assert!(!output.status.success(), "a second serve must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Only the final `error:` line counts (log lines may say anything).
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        error.starts_with("error: another envault daemon is already listening on")
            || error.contains("in use")
            || error.contains("locked by")
            || error.contains("already running"),
        "the error says another daemon holds the socket or data dir: {error}"
    );
    assert!(daemon.client().health().await.is_ok());
}

#[tokio::test]
async fn a_stale_socket_is_replaced_after_kill9() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_database("db", None, None).await.unwrap();
    // Writes are acknowledged only once durable, so SIGKILL right after must not lose them.
    for i in 0..20 {
        client
            .put_record("db", &format!("r{i}"), format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    drop(client);
    daemon.kill9().await;
    assert!(daemon.socket.exists(), "SIGKILL leaves the socket file");
    assert!(
        std::os::unix::net::UnixStream::connect(&daemon.socket).is_err(),
        "nothing listens on the stale socket"
    );

    daemon.restart().await;
    let client = daemon.client();
    for i in 0..20 {
        assert_eq!(
            client.get_record("db", &format!("r{i}")).await.unwrap(),
            format!("v{i}").as_bytes()
        );
    }
    client.put_record("db", "new", b"1").await.unwrap();
    daemon.stop_graceful().await;
}

#[tokio::test]
async fn concurrent_writers_are_all_acknowledged_and_stored() {
    const TASKS: usize = 16;
    const PUTS: usize = 50;
    let daemon = Daemon::start().await;
    let admin = daemon.client();
    usable_key(&admin, "ck").await;
    admin
        .create_database("shared", Some("ck"), None)
        .await
        .unwrap();
    admin
        .create_database("shared-provider", None, None)
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let client = daemon.client();
        tasks.spawn(async move {
            let db = if task % 2 == 0 {
                "shared"
            } else {
                "shared-provider"
            };
            for i in 0..PUTS {
                let key = format!("t{task:02}/{i:03}");
                let value = format!("{task}:{i}:{}", "x".repeat(i * 10));
                client
                    .put_record(db, &key, value.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("put {db}/{key}: {e}"));
            }
            task
        });
    }
    let mut done = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        done.insert(result.expect("writer task panicked"));
    }
    assert_eq!(done.len(), TASKS);

    let mut listed = 0;
    for db in ["shared", "shared-provider"] {
        let mut after: Option<String> = None;
        let mut keys = Vec::new();
        loop {
            let page = admin
                .list_records(db, &query(None, after.as_deref(), Some(97)))
                .await
                .unwrap();
            keys.extend(page.keys);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(keys.len(), TASKS / 2 * PUTS, "{db}");
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, keys, "pages are ordered and do not repeat");
        listed += keys.len();
    }
    assert_eq!(listed, TASKS * PUTS);
    for task in 0..TASKS {
        let db = if task % 2 == 0 {
            "shared"
        } else {
            "shared-provider"
        };
        for i in 0..PUTS {
            let value = admin
                .get_record(db, &format!("t{task:02}/{i:03}"))
                .await
                .unwrap();
            assert_eq!(
                value,
                format!("{task}:{i}:{}", "x".repeat(i * 10)).as_bytes()
            );
        }
    }
}

#[tokio::test]
async fn names_are_unique_per_daemon_not_global() {
    // Two daemons are independent: same names, different instance ids in their CRNs.
    let first = Daemon::start().await;
    let second = Daemon::start().await;
    let name = unique("k");
    let a = first.client().create_key(&name, None, None).await.unwrap();
    let b = second.client().create_key(&name, None, None).await.unwrap();
    assert_ne!(
        check_crn(&a.crn, "key", &a.id),
        check_crn(&b.crn, "key", &b.id),
        "each data dir has its own instance id"
    );
    let db: DatabaseInfo = first
        .client()
        .create_database("d", None, None)
        .await
        .unwrap();
    assert_api_error(second.client().get_database(&db.id).await, 404, "not_found");
}

/// 32 bytes of key material that are not all one value (which imports refuse).
fn patterned(seed: u8) -> [u8; 32] {
    std::array::from_fn(|i| seed.wrapping_add(i as u8))
}
