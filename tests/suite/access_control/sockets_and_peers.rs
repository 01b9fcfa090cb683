//! Socket mode, world-writable directories, live and stale sockets, allowed_uids and the peer uid in the activity log.

use super::*;

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
