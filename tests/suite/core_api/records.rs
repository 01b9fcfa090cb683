//! Records: round trips, percent-encoded keys, listing by prefix, size and key limits, unknown routes.

use super::*;

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
