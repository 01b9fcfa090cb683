//! Load generator for a Vault-transit-compatible endpoint over TCP (issue 11): the same
//! client against envault's `[compat] transit_listen` and against `bao server -dev`.
//!
//! `cargo run --release --example transit_load -- ADDR TOKEN KEY SECONDS CONCURRENCY`
//!
//! Creates KEY (idempotent on both servers), then runs an encrypt phase and a decrypt phase of
//! SECONDS each: CONCURRENCY tasks, each on its own keep-alive HTTP/1.1 connection, sending
//! one request at a time with a 64-byte plaintext. Prints ops/s, p50 and p99 per phase, and
//! fails on any non-200 answer.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

async fn post(
    sender: &mut Sender,
    token: &str,
    path: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let request = hyper::Request::post(path)
        .header("host", "localhost")
        .header("x-vault-token", token)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    sender.ready().await.expect("connection ready");
    let response = sender.send_request(request).await.expect("send");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).expect("JSON answer")
}

/// Runs `phase` on every connection for `seconds`; returns (ops/s, p50 ms, p99 ms).
async fn run(
    addr: &str,
    token: &str,
    concurrency: usize,
    seconds: u64,
    path: String,
    body: serde_json::Value,
) -> (f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (addr, token, path, body) = (
            addr.to_string(),
            token.to_string(),
            path.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&addr).await;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                post(&mut sender, &token, &path, &body).await;
                latencies.push(t.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    (all.len() as f64 / elapsed, pct(0.50), pct(0.99))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, token, key, seconds, concurrency] = args.as_slice() else {
        eprintln!("usage: transit_load ADDR TOKEN KEY SECONDS CONCURRENCY");
        std::process::exit(2);
    };
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY");
    let mut sender = connect(addr).await;
    post(
        &mut sender,
        token,
        &format!("/v1/transit/keys/{key}"),
        &serde_json::json!({}),
    )
    .await;
    let plaintext = B64.encode([7u8; 64]);
    let sample = post(
        &mut sender,
        token,
        &format!("/v1/transit/encrypt/{key}"),
        &serde_json::json!({ "plaintext": plaintext }),
    )
    .await;
    let ciphertext = sample["data"]["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string();
    let enc = run(
        addr,
        token,
        concurrency,
        seconds,
        format!("/v1/transit/encrypt/{key}"),
        serde_json::json!({ "plaintext": plaintext }),
    )
    .await;
    let dec = run(
        addr,
        token,
        concurrency,
        seconds,
        format!("/v1/transit/decrypt/{key}"),
        serde_json::json!({ "ciphertext": ciphertext }),
    )
    .await;
    for (name, (ops, p50, p99)) in [("encrypt", enc), ("decrypt", dec)] {
        println!("{name}: {ops:.0} ops/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
}
