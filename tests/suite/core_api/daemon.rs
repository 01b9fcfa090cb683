//! The daemon itself: restarts keep data, socket ownership, one daemon per data dir, concurrent writers.

use super::*;

#[tokio::test]
async fn data_survives_a_graceful_restart() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let material = patterned(42);
    let key = client
        .create_key("byok", Some(&material), None)
        .await
        .unwrap();
    allow_databases(&client, "byok").await;
    let customer = client
        .create_database("customer", Some("byok"), None)
        .await
        .unwrap();
    let provider = client
        .create_database("provider", None, None)
        .await
        .unwrap();
    let generated = client.create_key("spare", None, None).await.unwrap();
    let wrapped = client
        .wrap("byok", Some(b"app secret"), &["a".into()])
        .await
        .unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut expected = Vec::new();
    for db in ["customer", "provider"] {
        for i in 0..30 {
            let value = format!("{db} value {i}").into_bytes();
            client
                .put_record(db, &format!("r/{i:02}"), &value)
                .await
                .unwrap();
            expected.push((db, format!("r/{i:02}"), value));
        }
        client.put_record(db, "big", &big).await.unwrap();
        expected.push((db, "big".to_string(), big.clone()));
        client.put_record(db, "gone", b"x").await.unwrap();
        client.delete_record(db, "gone").await.unwrap();
    }
    let keys_before = client.list_keys().await.unwrap();
    let dbs_before = client.list_databases().await.unwrap();
    let token_before = daemon.token.clone();
    drop(client);

    daemon.stop_graceful().await;
    assert!(!daemon.is_running());
    assert_unreachable(&daemon).await;
    daemon.restart().await;
    assert_eq!(
        daemon.token, token_before,
        "the operator token file is kept"
    );

    let client = daemon.client();
    for (db, rec, value) in &expected {
        assert_eq!(
            &client.get_record(db, rec).await.unwrap(),
            value,
            "{db}/{rec} after restart"
        );
    }
    for db in ["customer", "provider"] {
        assert_api_error(client.get_record(db, "gone").await, 404, "not_found");
        let page = client
            .list_records(db, &query(None, None, None))
            .await
            .unwrap();
        assert_eq!(page.keys.len(), 31);
    }
    assert_eq!(client.list_keys().await.unwrap(), keys_before);
    assert_eq!(client.list_databases().await.unwrap(), dbs_before);
    assert_eq!(client.get_database("customer").await.unwrap(), customer);
    assert_eq!(client.get_database("provider").await.unwrap(), provider);
    assert_eq!(client.get_key("byok").await.unwrap().crn, key.crn);
    assert_eq!(client.get_key("spare").await.unwrap().id, generated.id);
    assert_eq!(
        *client
            .unwrap("byok", &wrapped.ciphertext, &["a".into()])
            .await
            .unwrap(),
        b"app secret"
    );
    // Still writable, and names are still taken.
    client
        .put_record("customer", "after", b"restart")
        .await
        .unwrap();
    assert_api_error(client.create_key("byok", None, None).await, 409, "conflict");
    assert_api_error(
        client.create_database("provider", None, None).await,
        409,
        "conflict",
    );
    daemon.stop_graceful().await;
}

/// With the daemon stopped, the client reports a connection error (not an API error).
async fn assert_unreachable(daemon: &Daemon) {
    let error = daemon.client().list_keys().await.unwrap_err();
    assert!(
        matches!(error, envault::client::ClientError::Connect { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_second_daemon_on_a_live_socket_fails_clearly() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_database("db", None, None).await.unwrap();
    client.put_record("db", "r", b"before").await.unwrap();

    // Same socket, its own data dir: refused at bind, naming the socket.
    let mut command = daemon.serve_command();
    command.env("ENVAULT_DATA_DIR", daemon.dir().join("data2"));
    let output = common::run_with_input(command, b"", common::STARTUP_TIMEOUT);
    assert!(!output.status.success(), "a second serve must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: another envault daemon is already listening on")
            && stderr.contains(&daemon.socket.display().to_string()),
        "stderr: {stderr}"
    );

    // Same socket and same data dir (the usual mistake: running `envault serve` twice): it
    // fails too, and leaves the first daemon alone.
    let output = common::run_with_input(daemon.serve_command(), b"", common::STARTUP_TIMEOUT);
    assert!(!output.status.success(), "a second serve must fail");
    assert!(String::from_utf8_lossy(&output.stderr).contains("error:"));

    // The first daemon keeps its socket and keeps serving.
    assert!(daemon.socket.exists());
    assert_eq!(client.get_record("db", "r").await.unwrap(), b"before");
    client.put_record("db", "r", b"after").await.unwrap();
    assert_eq!(
        daemon.client().get_record("db", "r").await.unwrap(),
        b"after"
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_data_dir_says_why() {
    let daemon = Daemon::start().await;
    let output = common::run_with_input(daemon.serve_command(), b"", common::STARTUP_TIMEOUT);
    assert!(!output.status.success(), "a second serve must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Only the final `error:` line counts (log lines may say anything).
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        error.starts_with("error: another envault daemon is already listening on")
            || error.contains("in use")
            || error.contains("locked by")
            || error.contains("already running"),
        "the error says another daemon holds the socket or data dir: {error}"
    );
    assert!(daemon.client().health().await.is_ok());
}

#[tokio::test]
async fn a_stale_socket_is_replaced_after_kill9() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_database("db", None, None).await.unwrap();
    // Writes are acknowledged only once durable, so SIGKILL right after must not lose them.
    for i in 0..20 {
        client
            .put_record("db", &format!("r{i}"), format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    drop(client);
    daemon.kill9().await;
    assert!(daemon.socket.exists(), "SIGKILL leaves the socket file");
    assert!(
        std::os::unix::net::UnixStream::connect(&daemon.socket).is_err(),
        "nothing listens on the stale socket"
    );

    daemon.restart().await;
    let client = daemon.client();
    for i in 0..20 {
        assert_eq!(
            client.get_record("db", &format!("r{i}")).await.unwrap(),
            format!("v{i}").as_bytes()
        );
    }
    client.put_record("db", "new", b"1").await.unwrap();
    daemon.stop_graceful().await;
}

#[tokio::test]
async fn concurrent_writers_are_all_acknowledged_and_stored() {
    const TASKS: usize = 16;
    const PUTS: usize = 50;
    let daemon = Daemon::start().await;
    let admin = daemon.client();
    usable_key(&admin, "ck").await;
    admin
        .create_database("shared", Some("ck"), None)
        .await
        .unwrap();
    admin
        .create_database("shared-provider", None, None)
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let client = daemon.client();
        tasks.spawn(async move {
            let db = if task % 2 == 0 {
                "shared"
            } else {
                "shared-provider"
            };
            for i in 0..PUTS {
                let key = format!("t{task:02}/{i:03}");
                let value = format!("{task}:{i}:{}", "x".repeat(i * 10));
                client
                    .put_record(db, &key, value.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("put {db}/{key}: {e}"));
            }
            task
        });
    }
    let mut done = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        done.insert(result.expect("writer task panicked"));
    }
    assert_eq!(done.len(), TASKS);

    let mut listed = 0;
    for db in ["shared", "shared-provider"] {
        let mut after: Option<String> = None;
        let mut keys = Vec::new();
        loop {
            let page = admin
                .list_records(db, &query(None, after.as_deref(), Some(97)))
                .await
                .unwrap();
            keys.extend(page.keys);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(keys.len(), TASKS / 2 * PUTS, "{db}");
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, keys, "pages are ordered and do not repeat");
        listed += keys.len();
    }
    assert_eq!(listed, TASKS * PUTS);
    for task in 0..TASKS {
        let db = if task % 2 == 0 {
            "shared"
        } else {
            "shared-provider"
        };
        for i in 0..PUTS {
            let value = admin
                .get_record(db, &format!("t{task:02}/{i:03}"))
                .await
                .unwrap();
            assert_eq!(
                value,
                format!("{task}:{i}:{}", "x".repeat(i * 10)).as_bytes()
            );
        }
    }
}

#[tokio::test]
async fn names_are_unique_per_daemon_not_global() {
    // Two daemons are independent: same names, different instance ids in their CRNs.
    let first = Daemon::start().await;
    let second = Daemon::start().await;
    let name = unique("k");
    let a = first.client().create_key(&name, None, None).await.unwrap();
    let b = second.client().create_key(&name, None, None).await.unwrap();
    assert_ne!(
        check_crn(&a.crn, "key", &a.id),
        check_crn(&b.crn, "key", &b.id),
        "each data dir has its own instance id"
    );
    let db: DatabaseInfo = first
        .client()
        .create_database("d", None, None)
        .await
        .unwrap();
    assert_api_error(second.client().get_database(&db.id).await, 404, "not_found");
}
