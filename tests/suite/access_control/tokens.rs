//! App tokens: 256-bit, scoped, never stored; revocation on an already open connection.

use super::*;

#[tokio::test]
async fn app_tokens_are_256_bit_scoped_and_never_stored() {
    let mut daemon = Daemon::start().await;
    let db1 = create_database(&daemon, "db1").await;
    create_database(&daemon, "db2").await;
    let put = daemon
        .raw_auth("PUT", "/v1/databases/db2/records/secret", b"db2 only")
        .await;
    assert_eq!(put.0, 204);

    let created = app_token(&daemon, &["db1"]).await;
    let token = created["token"].as_str().expect("token shown at creation");
    let id = created["id"].as_str().expect("token id");
    let secret = token
        .strip_prefix("evt_")
        .unwrap_or_else(|| panic!("token {token:?} lacks the evt_ prefix"));
    let raw = URL_SAFE_NO_PAD
        .decode(secret)
        .unwrap_or_else(|e| panic!("token body is not unpadded base64url ({e}): {secret:?}"));
    assert_eq!(raw.len(), 32, "a token carries 256 random bits");
    assert_eq!(secret.len(), 43);
    assert!(
        !id.contains(secret) && !secret.contains(id),
        "id derived from the secret"
    );
    assert_eq!(
        created["databases"],
        json!([db1["id"]]),
        "the token is scoped to db1 by id: {created}"
    );
    // Fresh randomness each time.
    let others: Vec<String> = [
        app_token(&daemon, &["db1"]).await,
        app_token(&daemon, &["db1"]).await,
    ]
    .iter()
    .map(|t| t["token"].as_str().unwrap().to_string())
    .collect();
    assert!(others[0] != token && others[1] != token && others[0] != others[1]);

    // Listed without any secret.
    let (status, listing) = daemon.raw_auth("GET", "/v1/tokens", b"").await;
    assert_eq!(status, 200);
    for needle in [token, secret, &others[0], &others[1]] {
        assert!(
            !common::contains(&listing, needle.as_bytes()),
            "GET /v1/tokens shows a secret: {}",
            String::from_utf8_lossy(&listing)
        );
    }
    let listing: Value = serde_json::from_slice(&listing).unwrap();
    let tokens = listing["tokens"].as_array().expect("tokens array");
    let mine = tokens
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("token {id} not listed: {listing}"));
    assert_eq!(mine["role"], "app");
    assert_eq!(mine["databases"], json!([db1["id"]]));
    for listed in tokens {
        let fields: Vec<&String> = listed.as_object().expect("token object").keys().collect();
        assert!(
            !fields
                .iter()
                .any(|f| ["token", "secret", "hash"].contains(&f.as_str())),
            "a listed token has a secret-bearing field: {listed}"
        );
    }

    // Records of db1: put, get, list, delete.
    let rec = "/v1/databases/db1/records/app%2Fvalue";
    assert_eq!(
        with_token(&daemon, token, "PUT", rec, b"hello").await.0,
        204
    );
    assert_eq!(
        with_token(&daemon, token, "GET", rec, b"").await,
        (200, b"hello".to_vec())
    );
    let (status, page) = with_token(&daemon, token, "GET", "/v1/databases/db1/records", b"").await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_slice(&page).unwrap();
    assert_eq!(page["keys"], json!(["app/value"]));
    assert_eq!(with_token(&daemon, token, "DELETE", rec, b"").await.0, 204);
    assert_error_answer(
        &with_token(&daemon, token, "GET", rec, b"").await,
        404,
        "not_found",
    );
    // The database may also be named by its id.
    let by_id = format!("/v1/databases/{}/records/x", db1["id"].as_str().unwrap());
    assert_eq!(with_token(&daemon, token, "PUT", &by_id, b"1").await.0, 204);

    // db2 and every non-record route: 403.
    let denied: &[(&str, &str, &str)] = &[
        ("GET", "/v1/databases/db2/records/secret", ""),
        ("PUT", "/v1/databases/db2/records/secret", "overwritten"),
        ("DELETE", "/v1/databases/db2/records/secret", ""),
        ("GET", "/v1/databases/db2/records", ""),
        (
            "POST",
            "/v1/databases/db2/records:batch",
            r#"{"ops":[{"op":"put","key":"secret","value":"AA=="}]}"#,
        ),
        ("GET", "/v1/keys", ""),
        ("POST", "/v1/keys", r#"{"name":"k-app"}"#),
        ("GET", "/v1/authorizations", ""),
        (
            "POST",
            "/v1/authorizations",
            r#"{"source":"databases","target":"*","roles":["Reader"]}"#,
        ),
        ("GET", "/v1/databases", ""),
        ("POST", "/v1/databases", r#"{"name":"db-app"}"#),
        ("GET", "/v1/databases/db1", ""),
        ("DELETE", "/v1/databases/db1", ""),
        ("POST", "/v1/databases/db1/backups", ""),
        ("GET", "/v1/backups", ""),
        ("GET", "/v1/tokens", ""),
        ("POST", "/v1/tokens", r#"{"role":"operator"}"#),
        ("DELETE", "/v1/tokens/tok_000000000000", ""),
        ("GET", "/v1/audit", ""),
        ("GET", "/v1/audit/verify", ""),
    ];
    for (method, path, body) in denied {
        let answer = with_token(&daemon, token, method, path, body.as_bytes()).await;
        assert_eq!(
            (answer.0, error_code(&answer.1).as_str()),
            (403, "forbidden"),
            "app token: {method} {path}"
        );
    }
    assert_eq!(
        daemon
            .raw_auth("GET", "/v1/databases/db2/records/secret", b"")
            .await,
        (200, b"db2 only".to_vec())
    );
    let (_, databases) = daemon.raw_auth("GET", "/v1/databases", b"").await;
    let databases: Value = serde_json::from_slice(&databases).unwrap();
    assert_eq!(databases["databases"].as_array().unwrap().len(), 2);

    // Nothing on disk (catalog, records, audit log, daemon log) holds a token's secret.
    daemon.stop_graceful().await;
    for needle in [token, secret, &others[0], &others[1]] {
        let found = files_containing(daemon.dir(), needle.as_bytes());
        assert!(found.is_empty(), "a token secret is stored in {found:?}");
    }
    let found = files_containing(daemon.dir(), &raw);
    assert!(
        found.is_empty(),
        "the token's raw bytes are stored in {found:?}"
    );
    // The catalog does know the token (by hash): it still works after a restart.
    daemon.restart().await;
    assert_eq!(
        with_token(&daemon, token, "GET", &by_id, b"").await,
        (200, b"1".to_vec())
    );
}

#[tokio::test]
async fn revocation_applies_on_an_already_open_connection() {
    let daemon = Daemon::start().await;
    create_database(&daemon, "db1").await;

    // The typed client keeps one connection.
    let first = app_token(&daemon, &["db1"]).await;
    let client = daemon.client_with_token(first["token"].as_str());
    let (status, _) = client
        .request(Method::PUT, "/v1/databases/db1/records/r", Some(b"v"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (status, body) = client
        .request(Method::GET, "/v1/databases/db1/records/r", None)
        .await
        .unwrap();
    assert_eq!((status, &body[..]), (200, &b"v"[..]));
    revoke_token(&daemon, first["id"].as_str().unwrap()).await;
    let (status, body) = client
        .request(Method::GET, "/v1/databases/db1/records/r", None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "unauthenticated");

    // Provably the same socket: a raw keep-alive connection that fails on any close.
    let second = app_token(&daemon, &["db1"]).await;
    let token = second["token"].as_str().unwrap();
    let mut connection = KeepAlive::open(&daemon.socket).await;
    let path = "/v1/databases/db1/records/r";
    for _ in 0..3 {
        let answer = connection.request("GET", path, Some(token), b"").await;
        assert_eq!(answer.expect("kept-alive request").0, 200);
    }
    revoke_token(&daemon, second["id"].as_str().unwrap()).await;
    for _ in 0..2 {
        let answer = connection
            .request("GET", path, Some(token), b"")
            .await
            .expect("the connection stays open after a 401");
        assert_error_answer(&answer, 401, "unauthenticated");
    }
    // The operator token works on that same connection.
    let answer = connection
        .request("GET", path, Some(&daemon.token), b"")
        .await
        .expect("same connection");
    assert_eq!(answer, (200, b"v".to_vec()));
}
