//! Every front end shares one listener layer. Here, through the real daemon: the transit TCP
//! listener drains on SIGTERM like the socket API (every request already started is answered,
//! new connections are refused, then the daemon exits 0).

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How many transit connections have a request in flight when the signal arrives.
const CLIENTS: usize = 6;

/// A free loopback port (the listener is closed again before the daemon binds it).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// The head of a transit request with a body of `length` bytes, keeping the connection open.
fn head(method: &str, path: &str, token: &str, length: usize) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Vault-Token: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 answer (headers and a `Content-Length` body) from the stream.
async fn read_answer(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(answer) = parse_response(&buf) {
            return answer;
        }
        let n = tokio::time::timeout(STARTUP_TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("the answer arrives")
            .expect("read the answer");
        assert!(n > 0, "the connection closed before the answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_started_transit_request_then_exits_0() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut daemon = Daemon::start_with_env(&[("ENVAULT_TRANSIT_LISTEN", &listen)]).await;
    let key = unique("tk");
    let mut setup = TcpStream::connect(&listen).await.unwrap();
    setup
        .write_all(&head(
            "POST",
            &format!("/v1/transit/keys/{key}"),
            &daemon.token,
            2,
        ))
        .await
        .unwrap();
    setup.write_all(b"{}").await.unwrap();
    let (status, body) = read_answer(&mut setup).await;
    assert!(
        (200..300).contains(&status),
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    drop(setup);

    // Each client sends the head and half the body of an encrypt request: the request has
    // started (authenticated, reading its body) when the signal arrives.
    let plaintext = base64::engine::general_purpose::STANDARD.encode(b"in flight");
    let body = format!(r#"{{"plaintext":"{plaintext}"}}"#).into_bytes();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(&listen).await.unwrap();
        let path = format!("/v1/transit/encrypt/{key}");
        stream
            .write_all(&head("POST", &path, &daemon.token, body.len()))
            .await
            .unwrap();
        stream.write_all(first).await.unwrap();
        clients.push(stream);
    }
    // Let the daemon accept every connection and read every head.
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.send_sigterm();

    // The listener stops accepting; the daemon waits for the requests in flight.
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while TcpStream::connect(&listen).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the transit listener still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        daemon.is_running(),
        "the daemon exited with transit requests in flight; log:\n{}",
        daemon.log()
    );

    for stream in &mut clients {
        stream.write_all(rest).await.unwrap();
    }
    for stream in &mut clients {
        let (status, answer) = read_answer(stream).await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("vault:v1:"), "a ciphertext: {text}");
    }
    daemon.wait_graceful_exit().await;
}
