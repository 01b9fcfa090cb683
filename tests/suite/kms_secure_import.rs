//! Secure import of root keys through the real daemon: import tokens (`POST /v1/import_token`,
//! `envault key import-token`), key material wrapped with RSA-OAEP-SHA-256 under a token's
//! RSA-4096 key with the token's nonce sealed under it (AES-256-GCM), `envault key create
//! --import FILE --secure`, and what fails: a replay after the token is used up, an expired
//! token, a nonce sealed under other material, an unknown token (one made before a restart),
//! plaintext import when `[keys] plaintext_import = false`. The activity log records token
//! creation and secure imports, and never the material.
//!
//! RSA-4096 key generation takes seconds in debug builds: each test creates few tokens.

use crate::common;
use crate::lifecycle_support;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::cli_output::{fails_with, ok, ok_json};
use common::{unique, Daemon};
use envault::client::Method;
use envault::crypto::{Cipher, SecretKey};
use lifecycle_support::{
    assert_absent_under, assert_json_error, audit_file_events, call, encodings, events,
    expect_status,
};
use rsa::pkcs8::DecodePublicKey as _;
use serde_json::{json, Value};

/// 32 bytes of key material, different in every test run.
fn material() -> Vec<u8> {
    let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

async fn new_token(daemon: &Daemon, body: Value) -> Value {
    expect_status(
        call(
            &daemon.client(),
            Method::POST,
            "/v1/import_token",
            Some(body),
        )
        .await,
        201,
        "create import token",
    )
}

/// The importer's half, written here from the wire format alone (not with the client's
/// helper): `material` under the token's public key, `nonce` sealed under `seal_key`.
fn seal(token: &Value, material: &[u8], nonce: &[u8], seal_key: &[u8]) -> Value {
    let der = B64.decode(token["public_key"].as_str().unwrap()).unwrap();
    let public = rsa::PublicKey::from_public_key_der(&der).expect("an SPKI RSA public key");
    let wrapped = public.oaep_encrypt::<rsa::sha2::Sha256>(material).unwrap();
    let iv = [0x24u8; 12];
    let mut sealed = nonce.to_vec();
    let tag = Cipher::new(&SecretKey::from_slice(seal_key).unwrap())
        .seal_in_place(&iv, &[], &mut sealed)
        .unwrap();
    sealed.extend_from_slice(&tag);
    json!({
        "import_token": token["id"],
        "encrypted_payload": B64.encode(wrapped),
        "encrypted_nonce": B64.encode(sealed),
        "iv": B64.encode(iv),
    })
}

fn nonce_of(token: &Value) -> Vec<u8> {
    B64.decode(token["nonce"].as_str().unwrap()).unwrap()
}

fn with_name(sealed: &Value, name: &str) -> Value {
    let mut body = sealed.clone();
    body["name"] = json!(name);
    body
}

async fn create_key(daemon: &Daemon, body: Value) -> (u16, Value) {
    call(&daemon.client(), Method::POST, "/v1/keys", Some(body)).await
}

async fn remaining_uses(daemon: &Daemon, id: &str) -> u64 {
    let path = format!("/v1/import_token/{id}");
    let token = expect_status(
        call(&daemon.client(), Method::GET, &path, None).await,
        200,
        "show import token",
    );
    token["remaining_uses"].as_u64().unwrap()
}

/// Creates a database under `key`, writes and reads back a record through it.
async fn records_work_under(daemon: &Daemon, key: &str) {
    let client = daemon.client();
    common::allow_databases(&client, key).await;
    let db = unique("db");
    let created = expect_status(
        call(
            &client,
            Method::POST,
            "/v1/databases",
            Some(json!({ "name": db, "key": key })),
        )
        .await,
        201,
        "create database under the imported key",
    );
    let info = client.get_key(key).await.unwrap();
    assert_eq!(created["key"], info.id.as_str());
    assert_eq!(info.origin, "imported");
    client
        .put_record(&db, "r1", b"imported-key data")
        .await
        .unwrap();
    assert_eq!(
        client.get_record(&db, "r1").await.unwrap(),
        b"imported-key data".to_vec()
    );
}

#[tokio::test]
async fn api_round_trip_then_replay_fails() {
    let daemon = Daemon::start().await;
    let token = new_token(&daemon, json!({ "ttl": "5m", "max_uses": 1 })).await;
    // The public half: an RSA-4096 SPKI, in DER and PEM, and a 32-byte nonce.
    let der = B64.decode(token["public_key"].as_str().unwrap()).unwrap();
    let public = rsa::PublicKey::from_public_key_der(&der).unwrap();
    let pem = token["public_key_pem"].as_str().unwrap();
    assert_eq!(rsa::PublicKey::from_public_key_pem(pem).unwrap(), public);
    assert_eq!(rsa::traits::PublicKeyParts::size(&public), 512);
    assert_eq!(nonce_of(&token).len(), 32);
    assert_eq!(token["encryption_algorithm"], "RSAES_OAEP_SHA_256");
    assert_eq!(
        (token["max_uses"].as_u64(), token["remaining_uses"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(token["crn"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":import-token:{}", token["id"].as_str().unwrap())));
    assert!(token["expires_at"].as_str().unwrap() > token["created_at"].as_str().unwrap());

    let material = material();
    let sealed = seal(&token, &material, &nonce_of(&token), &material);
    let name = unique("secure");
    let key = expect_status(
        create_key(&daemon, with_name(&sealed, &name)).await,
        201,
        "secure import",
    );
    assert_eq!(key["origin"], "imported");
    records_work_under(&daemon, &name).await;

    // The same wrapped payload again: the token was used up, and forgot its private key.
    let replay = create_key(&daemon, with_name(&sealed, &unique("replay"))).await;
    assert_json_error(&replay, 409, "import_token_used_up");
    let shown = call(
        &daemon.client(),
        Method::GET,
        &format!("/v1/import_token/{}", token["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_json_error(&shown, 409, "import_token_used_up");

    // Nothing of the material on disk, in any encoding.
    daemon
        .client()
        .request(Method::GET, "/v1/health", None)
        .await
        .unwrap();
    assert_absent_under(
        &daemon.data_dir,
        &encodings("imported key material", &material),
    );
}

#[tokio::test]
async fn failures_after_decryption_look_alike_and_take_a_use() {
    let daemon = Daemon::start().await;
    let token = new_token(&daemon, json!({ "max_uses": 3 })).await;
    let id = token["id"].as_str().unwrap().to_string();
    let material = material();
    let nonce = nonce_of(&token);

    // Refused before any decryption: no use taken.
    let unknown = with_name(&seal(&token, &material, &nonce, &material), &unique("k"));
    let mut unknown = unknown;
    unknown["import_token"] = json!(uuid::Uuid::new_v4().to_string());
    assert_json_error(
        &create_key(&daemon, unknown).await,
        404,
        "import_token_not_found",
    );
    let mut malformed = with_name(&seal(&token, &material, &nonce, &material), &unique("k"));
    malformed["iv"] = json!("not base64!");
    assert_json_error(&create_key(&daemon, malformed).await, 400, "bad_request");
    let mut partial = with_name(&seal(&token, &material, &nonce, &material), &unique("k"));
    partial.as_object_mut().unwrap().remove("iv");
    assert_json_error(&create_key(&daemon, partial).await, 400, "bad_request");
    assert_eq!(remaining_uses(&daemon, &id).await, 3);

    // The nonce sealed under other material, then a payload that is not RSA-OAEP under this
    // key: the same status, code and sentence, and a use taken each time.
    let wrong_seal = seal(&token, &material, &nonce, &[0x5au8; 32]);
    let first = create_key(&daemon, with_name(&wrong_seal, &unique("k"))).await;
    assert_json_error(&first, 400, "secure_import_failed");
    let mut garbage = seal(&token, &material, &nonce, &material);
    garbage["encrypted_payload"] = json!(B64.encode([0x33u8; 512]));
    let second = create_key(&daemon, with_name(&garbage, &unique("k"))).await;
    assert_json_error(&second, 400, "secure_import_failed");
    assert_eq!(first.1, second.1, "one answer for every rejection");
    assert_eq!(remaining_uses(&daemon, &id).await, 1);

    // Nothing was created, and the last use still imports.
    let keys = daemon.client().list_keys().await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let name = unique("last-use");
    let good = seal(&token, &material, &nonce, &material);
    expect_status(
        create_key(&daemon, with_name(&good, &name)).await,
        201,
        "last use",
    );
    assert_eq!(daemon.client().list_keys().await.unwrap().len(), 1);

    // The activity log: the token's creation and the secure import, no material.
    let created = events(&daemon.client(), Some("kms.import-token.create")).await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(created[0]["target"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":import-token:{id}")));
    assert_eq!(created[0]["outcome"], "success");
    let imports = events(&daemon.client(), Some("kms.secrets.create")).await;
    let secure: Vec<&Value> = imports
        .iter()
        .filter(|e| {
            e["details"]["import"] == "secure" && e["details"]["import_token"] == id.as_str()
        })
        .collect();
    // The malformed one, two rejections and the success (the unknown token names another id).
    assert_eq!(secure.len(), 4, "{imports:?}");
    assert_eq!(
        secure.iter().filter(|e| e["outcome"] == "success").count(),
        1
    );
    assert_eq!(
        secure
            .iter()
            .filter(|e| e["reason"] == "secure_import_failed")
            .count(),
        2,
        "{secure:?}"
    );
    // The activity log file holds the same events.
    let in_file = audit_file_events(&daemon);
    assert!(in_file
        .iter()
        .any(|e| e["action"] == "kms.import-token.create"));
    assert_absent_under(
        &daemon.data_dir,
        &encodings("imported key material", &material),
    );
}

#[tokio::test]
async fn cli_secure_import_and_import_tokens() {
    let daemon = Daemon::start().await;
    let material = material();
    let file = daemon.dir().join("key.bin");
    std::fs::write(&file, &material).unwrap();
    let name = unique("cli-secure");
    let key = ok_json(&daemon.cli(&[
        "--json",
        "key",
        "create",
        &name,
        "--import",
        file.to_str().unwrap(),
        "--secure",
    ]));
    assert_eq!(key["origin"], "imported");
    records_work_under(&daemon, &name).await;
    // The exchange used a single-use token of its own, and the import says it was secure.
    let tokens = events(&daemon.client(), Some("kms.import-token.create")).await;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["details"]["max_uses"], 1);
    let imports = events(&daemon.client(), Some("kms.secrets.create")).await;
    assert_eq!(imports.last().unwrap()["details"]["import"], "secure");

    // `key import-token create` / `show`.
    let token = ok_json(&daemon.cli(&[
        "--json",
        "key",
        "import-token",
        "create",
        "--ttl",
        "2m",
        "--max-uses",
        "2",
    ]));
    assert_eq!(token["remaining_uses"], 2);
    let id = token["id"].as_str().unwrap();
    let text = ok(&daemon.cli(&["key", "import-token", "show", id]));
    assert!(text.contains("2 of 2"), "{text}");
    assert!(text.contains("-----BEGIN PUBLIC KEY-----"), "{text}");
    fails_with(
        &daemon.cli(&[
            "key",
            "import-token",
            "show",
            &uuid::Uuid::new_v4().to_string(),
        ]),
        "import_token_not_found",
    );
    // Beyond the configured maxima: refused, nothing created.
    fails_with(
        &daemon.cli(&["key", "import-token", "create", "--max-uses", "11"]),
        "bad_request",
    );
    // Material that is not 32 bytes is refused before anything is sent.
    std::fs::write(&file, b"short").unwrap();
    let output = daemon.cli(&[
        "key",
        "create",
        &unique("k"),
        "--import",
        file.to_str().unwrap(),
        "--secure",
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    // Two tokens made (the refused --max-uses 11 is logged as a failure), none for the short
    // material.
    let made = events(&daemon.client(), Some("kms.import-token.create")).await;
    assert_eq!(
        made.iter().filter(|e| e["outcome"] == "success").count(),
        2,
        "{made:?}"
    );
    assert_eq!(made.len(), 3, "{made:?}");

    let log = std::fs::read(daemon.data_dir.join("audit.log")).unwrap();
    for needle in encodings("material", &material) {
        assert!(
            !common::contains(&log, &needle.bytes),
            "{} in the activity log",
            needle.what
        );
    }
}

#[tokio::test]
async fn secure_import_only_and_expiry() {
    let mut daemon = Daemon::start_with_env(&[
        ("ENVAULT_KEYS_PLAINTEXT_IMPORT", "false"),
        ("ENVAULT_KEYS_IMPORT_TOKEN_TTL", "2s"),
    ])
    .await;
    let material = material();
    // Plaintext import is refused, through the API and the CLI.
    let plaintext = create_key(
        &daemon,
        json!({ "name": unique("plain"), "payload": B64.encode(&material) }),
    )
    .await;
    assert_json_error(&plaintext, 403, "plaintext_import_disabled");
    let file = daemon.dir().join("key.b64");
    std::fs::write(&file, B64.encode(&material)).unwrap();
    fails_with(
        &daemon.cli(&[
            "key",
            "create",
            &unique("plain"),
            "--import",
            file.to_str().unwrap(),
        ]),
        "plaintext_import_disabled",
    );
    assert!(daemon.client().list_keys().await.unwrap().is_empty());
    // Generated keys are unaffected.
    daemon
        .client()
        .create_key(&unique("generated"), None, None)
        .await
        .unwrap();

    // A token with the configured 2 s validity, used after it expired.
    let token = new_token(&daemon, json!({})).await;
    let sealed = seal(&token, &material, &nonce_of(&token), &material);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = create_key(&daemon, with_name(&sealed, &unique("late"))).await;
    assert_json_error(&late, 409, "import_token_expired");

    // The secure path is the way in.
    let name = unique("secure-only");
    let key = ok_json(&daemon.cli(&[
        "--json",
        "key",
        "create",
        &name,
        "--import",
        file.to_str().unwrap(),
        "--secure",
    ]));
    assert_eq!(key["origin"], "imported");
    records_work_under(&daemon, &name).await;

    // Tokens live in the daemon's memory only: a restart forgets them.
    let token = new_token(&daemon, json!({ "ttl": "1h" })).await;
    let sealed = seal(&token, &material, &nonce_of(&token), &material);
    daemon.stop_graceful().await;
    daemon.restart().await;
    let forgotten = create_key(&daemon, with_name(&sealed, &unique("after-restart"))).await;
    assert_json_error(&forgotten, 404, "import_token_not_found");

    let denied = events(&daemon.client(), Some("kms.secrets.create")).await;
    assert!(
        denied
            .iter()
            .any(|e| e["outcome"] == "denied" && e["reason"] == "plaintext_import_disabled"),
        "{denied:?}"
    );
}
