//! Refusals outside the case table: an expired soft delete, concurrent garbage, invalid percent escapes.

use super::*;

/// Restoring a soft-deleted database whose period has ended: purge may have won the race (404)
/// or not yet (409 conflict); nothing else, and the database never comes back.
#[tokio::test]
async fn restoring_an_expired_soft_delete_is_refused() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_SOFT_DELETE_PERIOD", "1s")]).await;
    let s = &daemon.socket;
    let t = &daemon.token;
    for name in ["keep", "doomed"] {
        expect(
            json_call(
                s,
                t,
                "POST",
                "/v1/databases",
                Some(&json!({ "name": name })),
            )
            .await,
            201,
            name,
        );
    }
    let put = daemon
        .raw_auth("PUT", "/v1/databases/keep/records/r", b"kept")
        .await;
    assert_eq!(put.0, 204);
    let put = daemon
        .raw_auth("PUT", "/v1/databases/doomed/records/r", b"doomed")
        .await;
    assert_eq!(put.0, 204);
    expect(
        json_call(s, t, "DELETE", "/v1/databases/doomed", None).await,
        200,
        "soft delete",
    );
    // The period is whole seconds: after 2.1 s it has certainly ended.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let keep_before = all_records(&daemon, "keep").await;
    let (status, body) = json_call(s, t, "POST", "/v1/databases/doomed/restore", None).await;
    match (status, body["error"]["code"].as_str()) {
        (409, Some("conflict")) | (404, Some("not_found")) => {}
        other => panic!("restore after expiry: {other:?} {body}"),
    }
    let (status, body) = json_call(s, t, "GET", "/v1/databases/doomed", None).await;
    assert!(
        status == 404 || body["state"] == "deleted",
        "the expired database is back: {status} {body}"
    );
    let records = daemon
        .raw_auth("GET", "/v1/databases/doomed/records/r", b"")
        .await;
    assert_ne!(records.0, 200, "an expired database's record is readable");
    assert_eq!(all_records(&daemon, "keep").await, keep_before);
    let mut expected = BTreeMap::new();
    expected.insert("r".to_string(), b"kept".to_vec());
    assert_eq!(keep_before, expected);
    let report = expect(
        json_call(s, t, "GET", "/v1/audit/verify", None).await,
        200,
        "verify",
    );
    assert_eq!(report["ok"], true, "{report}");
}

/// The daemon still answers after a burst of every malformed request at once.
#[tokio::test]
async fn concurrent_garbage_does_not_stop_the_daemon() {
    let daemon = Daemon::start().await;
    let garbage: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET /v1/keys HTTP/1.1\r\nContent-Length: zz\r\n\r\n".to_vec(),
        b"\xff\xfe\xfd\r\n\r\n".to_vec(),
        b"GET /v1/keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnothex\r\n"
            .to_vec(),
        vec![b'A'; 70 * 1024],
    ];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let socket = daemon.socket.clone();
        let bytes = garbage[i % garbage.len()].clone();
        tasks.push(tokio::spawn(async move {
            send_bytes(&socket, &bytes).await;
        }));
    }
    for task in tasks {
        task.await.expect("garbage sender");
    }
    let (status, body) = send(
        &daemon.socket,
        "GET",
        "/v1/keys",
        &[bearer(&daemon.token)],
        b"",
        false,
    )
    .await;
    assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(&body));
    assert!(hostile_support::health_ok(&daemon.socket).await);
}

/// An invalid percent escape in a record key is malformed input, like invalid UTF-8 after
/// decoding: it must be refused, not stored under the literal text (which a second spelling,
/// `%25ZZ`, also names).
#[tokio::test]
async fn invalid_percent_escapes_in_record_keys_are_refused() {
    let daemon = Daemon::start().await;
    expect(
        json_call(
            &daemon.socket,
            &daemon.token,
            "POST",
            "/v1/databases",
            Some(&json!({"name": "db"})),
        )
        .await,
        201,
        "create db",
    );
    for key in ["a%ZZb", "a%", "%2", "%%", "a%G0"] {
        let path = format!("/v1/databases/db/records/{key}");
        let answer = daemon.raw_auth("PUT", &path, b"v").await;
        common::assert_error_answer(&answer, 400, "bad_request");
    }
    assert!(all_records(&daemon, "db").await.is_empty());
}
