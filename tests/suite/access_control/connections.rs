//! Connections: SIGTERM lets a request finish, trickling and idle clients are cut off, and the process is hardened.

use super::*;

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
