//! Who may talk to the daemon, and what a hostile or careless client can do to it: bearer
//! tokens (256-bit, shown once, stored only as hashes, scoped, revocable on open connections),
//! the socket (mode, private directory, live and stale sockets, `allowed_uids`), the activity
//! log's peer uid, graceful shutdown with a request in flight, connection limits against slow
//! and idle clients, and process hardening.

use crate::common;
use crate::hostile_support;

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{assert_error_answer, error_code, run_with_input, Daemon};
use envault::client::Method;
use hostile_support::{
    audit_file_events, bearer, enc, expect, files_containing, health_ok, json_call, my_uid, send,
    serve_command, sigterm, vm_lck_kb, KeepAlive, Spawned,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

async fn create_database(daemon: &Daemon, name: &str) -> Value {
    expect(
        json_call(
            &daemon.socket,
            &daemon.token,
            "POST",
            "/v1/databases",
            Some(&json!({ "name": name })),
        )
        .await,
        201,
        name,
    )
}

/// `POST /v1/tokens` for an app token on `databases`; the answer.
async fn app_token(daemon: &Daemon, databases: &[&str]) -> Value {
    expect(
        json_call(
            &daemon.socket,
            &daemon.token,
            "POST",
            "/v1/tokens",
            Some(&json!({"role": "app", "databases": databases})),
        )
        .await,
        201,
        "create app token",
    )
}

async fn revoke_token(daemon: &Daemon, id: &str) {
    let path = format!("/v1/tokens/{}", enc(id));
    expect(
        json_call(&daemon.socket, &daemon.token, "DELETE", &path, None).await,
        204,
        "revoke token",
    );
}

/// A request with `token`; status and raw body.
async fn with_token(
    daemon: &Daemon,
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    send(&daemon.socket, method, path, &[bearer(token)], body, false).await
}

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

fn socket_mode(path: &std::path::Path) -> u32 {
    let meta = std::fs::symlink_metadata(path).expect("stat the socket");
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    meta.permissions().mode() & 0o7777
}

#[tokio::test]
async fn socket_mode_defaults_to_0660_and_follows_the_setting() {
    let default = Daemon::start().await;
    assert_eq!(socket_mode(&default.socket), 0o660);
    let private = Daemon::start_with_env(&[("ENVAULT_SOCKET_MODE", "0600")]).await;
    assert_eq!(socket_mode(&private.socket), 0o600);
    assert!(health_ok(&private.socket).await);
}

#[tokio::test]
async fn a_socket_in_a_world_writable_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(
        std::fs::metadata(&open).unwrap().permissions().mode() & 0o7777,
        0o777
    );
    let socket = open.join("envault.sock");
    let command = serve_command(dir.path(), &socket, &dir.path().join("data"));
    let output = run_with_input(command, b"", common::STARTUP_TIMEOUT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "serve accepted {}: {text}",
        open.display()
    );
    assert!(
        text.contains("writable by others") && text.contains(&open.display().to_string()),
        "unclear message: {text}"
    );
    assert!(
        !socket.exists(),
        "a socket was created in the open directory"
    );
}

#[tokio::test]
async fn a_second_serve_on_a_live_socket_fails_and_the_first_keeps_serving() {
    let daemon = Daemon::start().await;
    let inode = std::fs::metadata(&daemon.socket).unwrap().ino();
    let other_data = daemon.dir().join("other-data");
    let mut command = daemon.serve_command();
    command.env("ENVAULT_DATA_DIR", &other_data);
    let output = run_with_input(command, b"", common::STARTUP_TIMEOUT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "a second serve started: {text}");
    assert!(
        text.contains("already listening"),
        "unclear message: {text}"
    );
    assert_eq!(
        std::fs::metadata(&daemon.socket).unwrap().ino(),
        inode,
        "the live socket was replaced"
    );
    let (status, _) = daemon.raw_auth("GET", "/v1/keys", b"").await;
    assert_eq!(status, 200, "the first daemon stopped serving");
}

#[tokio::test]
async fn a_stale_socket_after_kill9_is_replaced() {
    let mut daemon = Daemon::start().await;
    create_database(&daemon, "db1").await;
    assert_eq!(
        daemon
            .raw_auth("PUT", "/v1/databases/db1/records/r", b"durable")
            .await
            .0,
        204
    );
    daemon.kill9().await;
    assert!(daemon.socket.exists(), "kill -9 leaves the socket file");
    assert!(UnixStream::connect(&daemon.socket).await.is_err());
    daemon.restart().await;
    assert_eq!(socket_mode(&daemon.socket), 0o660);
    assert_eq!(
        daemon
            .raw_auth("GET", "/v1/databases/db1/records/r", b"")
            .await,
        (200, b"durable".to_vec())
    );
}

#[tokio::test]
async fn allowed_uids_refuses_other_peers_and_logs_their_uid() {
    let mut daemon = Daemon::start().await;
    create_database(&daemon, "db1").await;
    daemon.stop_graceful().await;
    let uid = my_uid();
    let log = daemon.dir().join("daemon.log");

    // Only uid 12345 may talk: we are refused, with the reason in the activity log.
    let config = daemon.dir().join("strict.toml");
    std::fs::write(&config, "allowed_uids = [12345]\n").unwrap();
    let mut command = daemon.serve_command();
    command.arg("--config").arg(&config);
    let mut strict = Spawned::start(command, &daemon.socket, &log).await;
    for (method, path) in [
        ("GET", "/v1/keys"),
        ("PUT", "/v1/databases/db1/records/r"),
        ("GET", "/v1/audit"),
    ] {
        let answer = daemon.raw_auth(method, path, b"v").await;
        assert_error_answer(&answer, 403, "forbidden");
    }
    assert!(health_ok(&daemon.socket).await, "health needs no token");
    assert!(strict.stop().await, "the strict daemon exits 0 on SIGTERM");
    let denials: Vec<Value> = audit_file_events(&daemon.data_dir)
        .into_iter()
        .filter(|e| e["action"] == "auth.denied")
        .collect();
    assert_eq!(denials.len(), 3, "{denials:?}");
    for event in &denials {
        assert_eq!(event["outcome"], "denied", "{event}");
        assert_eq!(event["reason"], "forbidden", "{event}");
        assert_eq!(event["initiator"]["peer_uid"], uid, "{event}");
    }
    // The target is the instance's CRN (the request named no resource); the route is kept.
    for event in &denials {
        let target = event["target"].as_str().unwrap();
        assert!(
            target.starts_with("crn:v1:envault:local:a/") && target.ends_with("::"),
            "{event}"
        );
    }
    assert_eq!(denials[0]["details"]["reference"], "GET /v1/keys");
    assert_eq!(
        denials[1]["details"]["reference"],
        "PUT /v1/databases/db1/records/r"
    );

    // With our uid in the list, the same requests work; the refused PUT wrote nothing.
    let config = daemon.dir().join("ours.toml");
    std::fs::write(&config, format!("allowed_uids = [12345, {uid}]\n")).unwrap();
    let mut command = daemon.serve_command();
    command.arg("--config").arg(&config);
    let mut ours = Spawned::start(command, &daemon.socket, &log).await;
    assert_error_answer(
        &daemon
            .raw_auth("GET", "/v1/databases/db1/records/r", b"")
            .await,
        404,
        "not_found",
    );
    assert_eq!(daemon.raw_auth("GET", "/v1/keys", b"").await.0, 200);
    assert!(ours.stop().await);
}

#[tokio::test]
async fn the_activity_log_records_the_peer_uid() {
    let daemon = Daemon::start().await;
    let uid = my_uid();
    create_database(&daemon, "db1").await;
    let denied = send(
        &daemon.socket,
        "GET",
        "/v1/keys",
        &[bearer("evt_not-a-token")],
        b"",
        false,
    )
    .await;
    assert_error_answer(&denied, 401, "unauthenticated");
    let events = expect(
        json_call(&daemon.socket, &daemon.token, "GET", "/v1/audit", None).await,
        200,
        "audit",
    );
    let events = events["events"].as_array().expect("events");
    let created = events
        .iter()
        .find(|e| e["action"] == "databases.create")
        .unwrap_or_else(|| panic!("no databases.create event in {events:?}"));
    assert_eq!(created["initiator"]["peer_uid"], uid, "{created}");
    assert!(
        created["initiator"]["token_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("tok_")),
        "{created}"
    );
    assert_eq!(created["outcome"], "success");
    let refused = events
        .iter()
        .find(|e| e["action"] == "auth.denied")
        .unwrap_or_else(|| panic!("no auth.denied event in {events:?}"));
    assert_eq!(refused["initiator"]["peer_uid"], uid, "{refused}");
    assert_eq!(refused["initiator"]["token_id"], "anonymous", "{refused}");
    assert_eq!(refused["reason"], "unauthenticated", "{refused}");
    assert!(
        !serde_json::to_string(events)
            .unwrap()
            .contains("evt_not-a-token"),
        "the presented token is logged"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let mut daemon = Daemon::start().await;
    create_database(&daemon, "db1").await;
    let value: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "PUT /v1/databases/db1/records/big HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        daemon.token,
        value.len()
    );
    let mut stream = UnixStream::connect(&daemon.socket).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&value[..1 << 20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    sigterm(daemon.pid());
    // Shutdown has begun once new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while UnixStream::connect(&daemon.socket).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(daemon.is_running(), "exited with a request in flight");
    stream.write_all(&value[1 << 20..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answer within 10 s")
        .expect("read the answer");
    let (status, body) = common::parse_response(&answer)
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&answer)));
    assert_eq!(status, 204, "{:?}", String::from_utf8_lossy(&body));
    // Exit 0, socket file removed (the harness checks both).
    daemon.stop_graceful().await;

    daemon.restart().await;
    let (status, stored) = daemon
        .raw_auth("GET", "/v1/databases/db1/records/big", b"")
        .await;
    assert_eq!(status, 200);
    assert!(stored == value, "the in-flight value was not stored intact");
}

/// Outcome of a slow client: when it was cut off, and whether it got to send everything.
struct Trickle {
    cut_after: Option<Duration>,
    bytes_sent: usize,
}

/// Sends `request` one byte per second; stops when the daemon closes the connection.
async fn trickle(socket: std::path::PathBuf, request: Vec<u8>) -> Trickle {
    let stream = UnixStream::connect(&socket).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let start = Instant::now();
    let mut buffer = [0u8; 256];
    for (sent, byte) in request.iter().enumerate() {
        if writer.write_all(&[*byte]).await.is_err() {
            return Trickle {
                cut_after: Some(start.elapsed()),
                bytes_sent: sent,
            };
        }
        match tokio::time::timeout(Duration::from_secs(1), reader.read(&mut buffer)).await {
            Err(_) => {} // nothing yet: next byte
            Ok(_) => {
                // Closed, or an answer (e.g. 408) before the request was complete.
                return Trickle {
                    cut_after: Some(start.elapsed()),
                    bytes_sent: sent + 1,
                };
            }
        }
    }
    Trickle {
        cut_after: None,
        bytes_sent: request.len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_client_is_cut_off_while_others_are_served() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_REQUEST_TIMEOUT", "2s")]).await;
    let request = format!(
        "GET /v1/keys HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        daemon.token
    )
    .into_bytes();
    let slow = tokio::spawn(trickle(daemon.socket.clone(), request.clone()));
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    while !slow.is_finished() {
        let start = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            send(
                &daemon.socket,
                "GET",
                "/v1/keys",
                &[bearer(&daemon.token)],
                b"",
                false,
            ),
        )
        .await
        .expect("another client waited over 1 s during the trickle");
        assert_eq!(answer.0, 200);
        slowest = slowest.max(start.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let outcome = slow.await.unwrap();
    let cut = outcome
        .cut_after
        .unwrap_or_else(|| panic!("the trickling client sent all {} bytes", request.len()));
    assert!(
        cut >= Duration::from_millis(1500) && cut <= Duration::from_secs(4),
        "cut off after {cut:?} (request_timeout 2 s), {} bytes sent",
        outcome.bytes_sent
    );
    assert!(outcome.bytes_sent < request.len());
    assert!(
        served >= 5,
        "only {served} requests served during the trickle"
    );
    eprintln!("trickler cut after {cut:?}; {served} others served, slowest {slowest:?}");
}

/// Opens `count` connections that never send a byte; returns those that connected.
async fn idle_connections(socket: &std::path::Path, count: usize) -> Vec<UnixStream> {
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        if let Ok(stream) = UnixStream::connect(socket).await {
            idle.push(stream);
        }
    }
    idle
}

/// How many of `streams` the daemon has closed (EOF or error on a non-blocking read).
fn closed_count(streams: &[UnixStream]) -> usize {
    streams
        .iter()
        .filter(|s| {
            let mut byte = [0u8; 1];
            match s.try_read(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            }
        })
        .count()
}

async fn timed_health(socket: &std::path::Path, within: Duration) -> Duration {
    let start = Instant::now();
    let ok = tokio::time::timeout(within, health_ok(socket))
        .await
        .unwrap_or_else(|_| {
            panic!("a fresh client was not served within {within:?}");
        });
    assert!(ok, "health failed");
    start.elapsed()
}

#[tokio::test]
async fn idle_connections_are_dropped_by_the_header_timeout() {
    let daemon = Daemon::start_with_env(&[
        ("ENVAULT_MAX_CONNECTIONS", "64"),
        ("ENVAULT_REQUEST_TIMEOUT", "2s"),
    ])
    .await;
    // Fewer idle connections than permits: fresh clients are served at once.
    let idle = idle_connections(&daemon.socket, 60).await;
    assert_eq!(idle.len(), 60);
    let took = timed_health(&daemon.socket, Duration::from_secs(1)).await;
    eprintln!("served next to 60 idle connections in {took:?}");
    // All of them are dropped once the 2 s header timeout has passed (1.5 s of slack).
    let deadline = Instant::now() + Duration::from_millis(3500);
    loop {
        let closed = closed_count(&idle);
        if closed == idle.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} idle connections outlived the 2 s header timeout",
            idle.len() - closed,
            idle.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the daemon serves as before.
    timed_health(&daemon.socket, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn many_idle_connections_do_not_starve_a_fresh_client() {
    let daemon = Daemon::start_with_env(&[
        ("ENVAULT_MAX_CONNECTIONS", "64"),
        ("ENVAULT_REQUEST_TIMEOUT", "2s"),
    ])
    .await;
    let idle = idle_connections(&daemon.socket, 500).await;
    assert!(idle.len() >= 200, "only {} connected", idle.len());
    let took = timed_health(&daemon.socket, Duration::from_secs(3)).await;
    eprintln!("served behind {} idle connections in {took:?}", idle.len());
}

#[tokio::test]
async fn the_daemon_is_hardened() {
    let daemon = Daemon::start().await;
    let (status, body) = send(&daemon.socket, "GET", "/v1/health", &[], b"", false).await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["dumpable"], false, "{health}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    if my_uid() == 0 {
        assert_eq!(health["memory_locked"], true, "{health}");
        let locked = vm_lck_kb(daemon.pid()).expect("VmLck in /proc/<pid>/status");
        assert!(locked > 0, "VmLck is 0 kB:\n{status}");
    } else {
        eprintln!("not root: memory locking depends on the memlock limit; {health}");
    }
}
