//! Rotation of imported keys on every backend, a backend refusal named, and the transit API on each backend.

use super::*;

/// An imported key rotates on every backend (transit: the BYOK import allows rotation), and
/// what it protects reads back across the rotation.
pub(super) async fn imported_rotation(kind: Kind) {
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
pub(super) async fn transit_api(kind: Kind) {
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
