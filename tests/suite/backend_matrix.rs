//! The root-key backend matrix: one lifecycle scenario, run against the file keystore,
//! an OpenBao transit server and a SoftHSM2 token through the real daemon; plus the faults of
//! a remote backend (down, paused) and the start-up refusals of bad settings.

#![cfg(feature = "external-suites")]

use crate::backend_support;
use crate::common;

use std::time::{Duration, Instant};

use backend_support::{serve_fails, Fixture, Kind, BACKEND_TIMEOUT};
use common::{allow_databases, assert_api_error, Daemon};
use uuid::Uuid;

/// Runs `$scenario(Kind)` once per backend, as `<scenario>_<backend>` tests.
macro_rules! backend_matrix {
    ($scenario:ident: $($test:ident => $kind:expr),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $scenario($kind).await;
            }
        )+
    };
}

backend_matrix!(lifecycle:
    lifecycle_file => Kind::File,
    lifecycle_transit => Kind::Transit,
    lifecycle_pkcs11 => Kind::Pkcs11,
);

backend_matrix!(transit_api:
    transit_api_file => Kind::File,
    transit_api_transit => Kind::Transit,
    transit_api_pkcs11 => Kind::Pkcs11,
);

backend_matrix!(imported_rotation:
    imported_rotation_file => Kind::File,
    imported_rotation_transit => Kind::Transit,
    imported_rotation_pkcs11 => Kind::Pkcs11,
);

/// An imported key rotates on every backend (transit: the BYOK import allows rotation), and
/// what it protects reads back across the rotation.
async fn imported_rotation(kind: Kind) {
    let fixture = Fixture::start(kind);
    let daemon = fixture.daemon().await;
    let client = daemon.client();
    let material: Vec<u8> = [Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes()].concat();
    client
        .create_key("byok", Some(&material), None)
        .await
        .expect("import");
    allow_databases(&client, "byok").await;
    client
        .create_database("byok-db", Some("byok"), None)
        .await
        .expect("database");
    client
        .put_record("byok-db", "r", b"before")
        .await
        .expect("put");
    let aad = vec!["a".to_string()];
    let wrapped = client
        .wrap("byok", Some(b"secret"), &aad)
        .await
        .expect("wrap");
    let rotated = client
        .rotate_key("byok", false, true)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: rotate an imported key: {e}"));
    assert_eq!(
        (rotated.version, rotated.job.state.as_str()),
        (2, "completed")
    );
    assert_eq!(read(&daemon, "byok-db", "r").await, b"before");
    let opened = client
        .unwrap("byok", &wrapped.ciphertext, &aad)
        .await
        .expect("unwrap v1");
    assert_eq!(opened.as_slice(), b"secret");
    assert_eq!(
        client
            .wrap("byok", None, &aad)
            .await
            .expect("wrap")
            .key_version,
        2
    );
}

/// A transit server that refuses an operation is answered with a code naming the refusal
/// (502 `key_backend_refused`, the server's reason in the message), never a bare 500, and
/// nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_refusal_is_named() {
    let fixture = Fixture::start(Kind::Transit);
    let bao = fixture.bao.as_ref().expect("bao");
    let policy = r#"path "transit/*" { capabilities = ["create", "read", "update", "list", "delete"] }
path "transit/keys/+/rotate" { capabilities = ["deny"] }"#;
    let (status, answer) = bao.call(
        "PUT",
        "sys/policies/acl/no-rotate",
        Some(serde_json::json!({ "policy": policy })),
    );
    assert!(status < 300, "policy: {status} {answer}");
    let (status, answer) = bao.call(
        "POST",
        "auth/token/create",
        Some(serde_json::json!({ "policies": ["no-rotate"] })),
    );
    assert!(status < 300, "token: {status} {answer}");
    let limited = answer["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_string();
    let mut env = fixture.env();
    for (name, value) in env.iter_mut() {
        if name == "ENVAULT_TRANSIT_TOKEN" {
            *value = limited.clone();
        }
    }
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let daemon = Daemon::start_with_env(&pairs).await;
    let client = daemon.client();
    client.create_key("held", None, None).await.expect("create");
    let refused = client.rotate_key("held", false, true).await;
    let err = refused.expect_err("the server refuses the rotation");
    assert_eq!(err.status(), Some(502), "{err}");
    assert_eq!(err.code(), Some("key_backend_refused"), "{err}");
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert_eq!(client.get_key("held").await.expect("show").version, 1);
}

/// The Vault-transit-compatible front end on each backend: its `vault:v<N>:`
/// ciphertexts leave the envelope header implicit, so decrypt must rebuild it the way the
/// backend wrote it, across a rotation too.
async fn transit_api(kind: Kind) {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let fixture = Fixture::start(kind);
    let daemon = fixture.daemon().await;
    let call = |path: String, body: serde_json::Value| {
        let daemon = &daemon;
        async move {
            let (status, answer) = daemon
                .raw_auth("POST", &path, body.to_string().as_bytes())
                .await;
            let answer: serde_json::Value =
                serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null);
            assert!(status < 300, "{kind:?} POST {path}: {status} {answer}");
            answer
        }
    };
    call("/v1/transit/keys/orders".into(), serde_json::json!({})).await;
    let plaintext = b"card 4242 4242 4242 4242";
    let aad = b64(b"order-17");
    let encrypt = serde_json::json!({"plaintext": b64(plaintext), "associated_data": aad});
    let v1 = call("/v1/transit/encrypt/orders".into(), encrypt.clone()).await["data"]["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string();
    assert!(v1.starts_with("vault:v1:"), "{v1}");
    call(
        "/v1/transit/keys/orders/rotate".into(),
        serde_json::json!({}),
    )
    .await;
    let v2 = call("/v1/transit/encrypt/orders".into(), encrypt).await["data"]["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string();
    assert!(v2.starts_with("vault:v2:"), "{v2}");
    for ciphertext in [&v1, &v2] {
        let answer = call(
            "/v1/transit/decrypt/orders".into(),
            serde_json::json!({"ciphertext": ciphertext, "associated_data": aad}),
        )
        .await;
        assert_eq!(
            answer["data"]["plaintext"],
            b64(plaintext),
            "{kind:?} {ciphertext}"
        );
    }
    // The wrong associated data does not open.
    let (status, _) = daemon
        .raw_auth(
            "POST",
            "/v1/transit/decrypt/orders",
            serde_json::json!({"ciphertext": v2, "associated_data": b64(b"order-18")})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(status, 400, "{kind:?}: wrong associated data");
}

fn id(info: &envault::api::KeyInfo) -> Uuid {
    Uuid::parse_str(&info.id).expect("key id is a UUID")
}

async fn read(daemon: &Daemon, db: &str, record: &str) -> Vec<u8> {
    daemon
        .client()
        .get_record(db, record)
        .await
        .unwrap_or_else(|e| panic!("read {db}/{record}: {e:?}"))
}

/// Create (generated and imported), wrap/unwrap/rewrap, records, rotate (keep and retire),
/// restart, disable/enable, shred, restart: the same calls and the same answers on every
/// backend, plus a look at the backend itself after the shred.
async fn lifecycle(kind: Kind) {
    let fixture = Fixture::start(kind);
    let mut daemon = fixture.daemon().await;
    let name = format!("{kind:?}").to_lowercase();
    assert!(
        daemon
            .log()
            .lines()
            .any(|l| l.contains("root-key backend") && l.contains(&format!("\"{name}\""))),
        "the daemon does not run the {name} backend: {}",
        daemon.log()
    );
    let client = daemon.client();

    let root = client
        .create_key("root", None, None)
        .await
        .expect("create key");
    assert_eq!((root.origin.as_str(), root.version), ("generated", 1));
    allow_databases(&client, "root").await;

    // Import (transit: BYOK through the server's wrapping key).
    let material: Vec<u8> = [Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes()].concat();
    let imported = client
        .create_key("imported", Some(&material), None)
        .await
        .expect("import a key");
    assert_eq!(imported.origin, "imported");
    // Bad input changes nothing.
    assert_api_error(
        client
            .create_key("short", Some(&material[..31]), None)
            .await,
        400,
        "bad_request",
    );
    assert!(client
        .list_keys()
        .await
        .expect("list")
        .iter()
        .all(|k| k.name != "short"));

    // The wrap API.
    let aad = vec!["tenant-7".to_string()];
    let wrapped = client
        .wrap("root", Some(b"app secret"), &aad)
        .await
        .expect("wrap");
    assert_eq!(wrapped.key_version, 1);
    let plain = client
        .unwrap("root", &wrapped.ciphertext, &aad)
        .await
        .expect("unwrap");
    assert_eq!(plain.as_slice(), b"app secret");
    assert_api_error(
        client
            .unwrap("root", &wrapped.ciphertext, &["tenant-8".into()])
            .await,
        400,
        "bad_request",
    );
    let fresh = client
        .wrap("root", None, &[])
        .await
        .expect("wrap a new DEK");
    let dek = fresh.dek.expect("a generated DEK is returned");
    assert_eq!(dek.len(), 32);
    let again = client
        .unwrap("root", &fresh.ciphertext, &[])
        .await
        .expect("unwrap DEK");
    assert_eq!(again.as_slice(), dek.as_slice());

    // Databases under a customer key, a provider key and (where supported) an imported key.
    client
        .create_database("orders", Some("root"), None)
        .await
        .expect("create db");
    client
        .create_database("scratch", None, None)
        .await
        .expect("create provider db");
    for n in 0..3 {
        client
            .put_record("orders", &format!("r{n}"), format!("order {n}").as_bytes())
            .await
            .expect("put");
    }
    client
        .put_record("scratch", "s", b"scratch value")
        .await
        .expect("put");
    {
        allow_databases(&client, "imported").await;
        client
            .create_database("legacy", Some("imported"), None)
            .await
            .expect("db under import");
        client
            .put_record("legacy", "l", b"legacy value")
            .await
            .expect("put");
    }

    // A database with a backup key, and one backup (its DEK sealed by the backend).
    client
        .create_key("backups", None, None)
        .await
        .expect("backup key");
    let roles = ["Reader".to_string(), "AuthorizationDelegator".to_string()];
    client
        .grant("databases", "backups", &roles)
        .await
        .expect("grant the backup key");
    client
        .create_database("archive", Some("root"), Some("backups"))
        .await
        .expect("db with backup key");
    client
        .put_record("archive", "a", b"archived")
        .await
        .expect("put");
    let backup = client.create_backup("archive").await.expect("backup");
    let backup_id = backup["id"].as_str().expect("backup id").to_string();

    // Rotation keeping old versions, then retiring them.
    let rotated = client
        .rotate_key("root", false, true)
        .await
        .expect("rotate");
    assert_eq!(
        (rotated.version, rotated.job.state.as_str()),
        (2, "completed")
    );
    assert_eq!(
        client
            .unwrap("root", &wrapped.ciphertext, &aad)
            .await
            .expect("v1 still opens")
            .as_slice(),
        b"app secret"
    );
    let rewrapped = client
        .rewrap("root", &wrapped.ciphertext, &aad)
        .await
        .expect("rewrap");
    assert_eq!(rewrapped.key_version, 2);
    let rotated = client
        .rotate_key("root", true, true)
        .await
        .expect("rotate, retire");
    assert_eq!(rotated.version, 3);
    assert_eq!(rotated.job.retired_versions, vec![1, 2]);
    assert_api_error(
        client.unwrap("root", &wrapped.ciphertext, &aad).await,
        400,
        "bad_request",
    );
    assert_eq!(read(&daemon, "orders", "r1").await, b"order 1");
    let wrapped3 = client
        .wrap("root", Some(b"after rotation"), &aad)
        .await
        .expect("wrap v3");
    assert_eq!(wrapped3.key_version, 3);

    // Restart: every DEK is unwrapped anew by the backend.
    daemon.stop_graceful().await;
    fixture.with_backend(&daemon, |backend| {
        assert_eq!(backend.versions(id(&root)).expect("versions"), vec![3]);
        assert!(backend.key_ids().expect("key ids").contains(&id(&root)));
    });
    daemon.restart().await;
    let client = daemon.client();
    for n in 0..3 {
        assert_eq!(
            read(&daemon, "orders", &format!("r{n}")).await,
            format!("order {n}").as_bytes()
        );
    }
    assert_eq!(read(&daemon, "scratch", "s").await, b"scratch value");
    let restored = client
        .restore_backup(&backup_id, "archive-restored", None)
        .await
        .expect("restore after restart");
    assert_eq!(restored.name, "archive-restored");
    assert_eq!(read(&daemon, "archive-restored", "a").await, b"archived");
    client
        .put_record("orders", "after-restart", b"written")
        .await
        .expect("put");
    assert_eq!(
        client
            .unwrap("root", &wrapped3.ciphertext, &aad)
            .await
            .expect("unwrap")
            .as_slice(),
        b"after rotation"
    );

    // Disable and enable.
    assert_eq!(
        client.disable_key("root").await.expect("disable").state,
        "suspended"
    );
    assert_api_error(
        client.get_record("orders", "r0").await,
        423,
        "key_suspended",
    );
    assert_api_error(
        client.wrap("root", Some(b"x"), &[]).await,
        423,
        "key_suspended",
    );
    client.enable_key("root").await.expect("enable");
    assert_eq!(read(&daemon, "orders", "after-restart").await, b"written");

    // Shred.
    let receipt = client.delete_key("root", true).await.expect("shred");
    assert_eq!(receipt.destroyed_versions, vec![3]);
    assert!(
        receipt.affected.iter().any(|a| a.name == "orders"),
        "{receipt:?}"
    );
    assert_api_error(
        client.get_record("orders", "r0").await,
        423,
        "key_destroyed",
    );
    assert_api_error(
        client.unwrap("root", &wrapped3.ciphertext, &aad).await,
        423,
        "key_destroyed",
    );
    assert_eq!(read(&daemon, "scratch", "s").await, b"scratch value");
    let objects_before = fixture.token_objects();
    assert_eq!(read(&daemon, "legacy", "l").await, b"legacy value");
    let receipt = client
        .delete_key("imported", true)
        .await
        .expect("shred import");
    assert_eq!(receipt.destroyed_versions, vec![1]);
    assert_api_error(client.get_record("legacy", "l").await, 423, "key_destroyed");
    if kind == Kind::Pkcs11 {
        // One token object file per destroyed version is gone from the token directory.
        assert_eq!(fixture.token_objects(), objects_before - 1);
    }

    // What must remain in the backend: the keys of the databases still readable, and the
    // backup key.
    let mut expected =
        vec![Uuid::parse_str(&client.get_key("backups").await.expect("key").id).expect("uuid")];
    for db in ["scratch", "archive-restored"] {
        let info = client.get_database(db).await.expect("db");
        let key = Uuid::parse_str(&info.key).expect("uuid");
        if key != id(&root) && !expected.contains(&key) {
            expected.push(key);
        }
    }
    expected.sort_unstable();
    daemon.stop_graceful().await;
    fixture.with_backend(&daemon, |backend| {
        assert!(backend.versions(id(&root)).expect("versions").is_empty());
        let ids = backend.key_ids().expect("key ids");
        assert!(
            !ids.contains(&id(&root)),
            "the shredded key is still in the backend"
        );
        assert!(backend
            .versions(id(&imported))
            .expect("versions")
            .is_empty());
        assert!(!ids.contains(&id(&imported)));
        let mut ids = ids;
        ids.sort_unstable();
        assert_eq!(ids, expected, "keys left in the backend");
    });
    fixture.assert_bytes_absent(&daemon, &material);

    daemon.restart().await;
    let client = daemon.client();
    assert_eq!(read(&daemon, "scratch", "s").await, b"scratch value");
    assert_api_error(
        client.get_record("orders", "r1").await,
        423,
        "key_destroyed",
    );
    assert_eq!(
        client.get_key("root").await.expect("key").state,
        "destroyed"
    );
}

/// The transit server dies, then is paused, mid-run: requests that need an unwrap fail fast
/// with 503 `key_backend_unavailable`, cached DEKs keep serving, nothing is half-written, and
/// the daemon recovers by itself when the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_outage_fails_fast_and_recovers() {
    let mut fixture = Fixture::transit_persistent();
    let mut daemon = fixture.daemon().await;
    let client = daemon.client();
    client
        .create_key("root", None, None)
        .await
        .expect("create key");
    allow_databases(&client, "root").await;
    for db in ["hot", "cold"] {
        client
            .create_database(db, Some("root"), None)
            .await
            .expect("create db");
        client
            .put_record(db, "r", db.as_bytes())
            .await
            .expect("put");
    }
    // A fresh daemon has no DEK cached; reading `hot` caches its DEK, `cold` stays cold.
    daemon.stop_graceful().await;
    daemon.restart().await;
    let client = daemon.client();
    assert_eq!(read(&daemon, "hot", "r").await, b"hot");

    for outage in ["killed", "paused"] {
        let bao = fixture.bao.as_mut().expect("bao");
        if outage == "killed" {
            bao.kill();
        } else {
            bao.pause(true);
        }
        // Served from the DEK cache: reads and writes go on.
        assert_eq!(read(&daemon, "hot", "r").await, b"hot", "{outage}");
        client
            .put_record("hot", outage, b"during outage")
            .await
            .expect("cached write");
        // Needs the server: 503 within the timeout (plus scheduling slack), not a hang.
        let started = Instant::now();
        assert_api_error(
            client.get_record("cold", "r").await,
            503,
            "key_backend_unavailable",
        );
        assert_api_error(
            client.wrap("root", Some(b"x"), &[]).await,
            503,
            "key_backend_unavailable",
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed < 2 * BACKEND_TIMEOUT + Duration::from_secs(3),
            "{outage}: two failing calls took {elapsed:?}"
        );
        // Nothing half-written: a key or database that needs the server is not created.
        assert_api_error(
            client.create_key(&format!("k-{outage}"), None, None).await,
            503,
            "key_backend_unavailable",
        );
        assert_api_error(
            client
                .create_database(&format!("db-{outage}"), Some("root"), None)
                .await,
            503,
            "key_backend_unavailable",
        );
        let keys = client.list_keys().await.expect("list");
        assert!(
            keys.iter().all(|k| k.name != format!("k-{outage}")),
            "{keys:?}"
        );
        let dbs = client.list_databases().await.expect("list dbs");
        assert_eq!(dbs.len(), 2, "{dbs:?}");

        let bao = fixture.bao.as_mut().expect("bao");
        if outage == "killed" {
            bao.restart();
        } else {
            bao.pause(false);
        }
        // Back: the daemon recovers by itself, no restart.
        assert_eq!(read(&daemon, "cold", "r").await, b"cold", "{outage}");
        assert_eq!(read(&daemon, "hot", outage).await, b"during outage");
        client
            .create_key(&format!("k-{outage}"), None, None)
            .await
            .expect("create after outage");
        // `cold` is cached now; the next outage round needs a fresh daemon to be cold again.
        daemon.stop_graceful().await;
        daemon.restart().await;
        assert_eq!(read(&daemon, "hot", "r").await, b"hot");
    }
}

/// Bad transit settings stop `envault serve` at start with one sentence that never shows the
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transit_settings_stop_serve() {
    let fixture = Fixture::start(Kind::Transit);
    let good = fixture.env();
    let with = |name: &str, value: &str| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            good.iter().filter(|(k, _)| k != name).cloned().collect();
        env.push((name.into(), value.into()));
        env
    };
    let unreachable = format!("http://127.0.0.1:{}", backend_support::free_port());
    let cases = [
        (
            with("ENVAULT_TRANSIT_TOKEN", "s.wrong-token-123"),
            "refused the token",
        ),
        (
            with("ENVAULT_TRANSIT_ADDRESS", &unreachable),
            "cannot reach the transit server",
        ),
        (
            with("ENVAULT_TRANSIT_MOUNT", "no-such-mount"),
            "no transit engine is mounted",
        ),
        (
            with("ENVAULT_TRANSIT_ADDRESS", "ftp://127.0.0.1:1"),
            "must start with http",
        ),
        (
            good.iter()
                .filter(|(k, _)| k != "ENVAULT_TRANSIT_TOKEN")
                .cloned()
                .collect(),
            "no transit token",
        ),
    ];
    for (env, expected) in cases {
        let output = serve_fails(&env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(expected),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("wrong-token-123"),
            "the token leaked: {stderr}"
        );
        assert!(
            !stderr.contains(&fixture.bao.as_ref().expect("bao").token),
            "{stderr}"
        );
    }
}

/// Bad PKCS#11 settings stop `envault serve` at start with one sentence that never shows the
/// PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pkcs11_settings_stop_serve() {
    let fixture = Fixture::start(Kind::Pkcs11);
    let good = fixture.env();
    let with = |name: &str, value: &str| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            good.iter().filter(|(k, _)| k != name).cloned().collect();
        env.push((name.into(), value.into()));
        env
    };
    let cases = [
        (
            with("ENVAULT_PKCS11_PIN", "wrong-pin-9876"),
            "refused the PIN",
        ),
        (
            with("ENVAULT_PKCS11_MODULE", "/nonexistent/libpkcs11.so"),
            "does not exist",
        ),
        (
            with("ENVAULT_PKCS11_TOKEN_LABEL", "no-such-token"),
            "no PKCS#11 token labelled",
        ),
        (
            good.iter()
                .filter(|(k, _)| k != "ENVAULT_PKCS11_PIN")
                .cloned()
                .collect(),
            "no PKCS#11 PIN",
        ),
    ];
    for (env, expected) in cases {
        let output = serve_fails(&env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(expected),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("wrong-pin-9876"),
            "the PIN leaked: {stderr}"
        );
        assert!(
            !stderr.contains(&fixture.hsm.as_ref().expect("hsm").pin),
            "{stderr}"
        );
    }
}
