//! Health, tokens, keys (generated, imported, listed, shown, refused) and wrap / unwrap / rewrap.

use super::*;

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
