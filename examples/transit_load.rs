//! Load generator for a Vault-transit-compatible endpoint: the same client against
//! envault (its Unix socket or its `[compat] transit_listen` TCP port) and against
//! `bao server -dev` (its TCP listener or a `listener "unix"` from a config file).
//!
//! `cargo run --release --example transit_load -- ADDR TOKEN KEY SECONDS CONCURRENCY`
//!
//! ADDR is `host:port`, `http://host:port` or `unix:///path/to/socket`.
//!
//! Creates KEY (idempotent on both servers), then runs an encrypt phase and a decrypt phase of
//! SECONDS each: CONCURRENCY tasks, each on its own keep-alive HTTP/1.1 connection, sending
//! one request at a time with a 64-byte plaintext. Prints ops/s, p50 and p99 per phase, and
//! fails on any non-200 answer.
//!
//! The generator shares the CPUs with the server it measures, so its own per-request work is
//! kept small and identical for every peer. The timed phases use a minimal HTTP/1.1 client in
//! each connection's own task: the whole request (head and body) is built once per phase and
//! written with one call, and the answer is read up to its `Content-Length` and checked by
//! status and by the field it must carry. (hyper's client hands every request to a separate
//! connection task: two task wake-ups per request.) The key set-up and one full round trip,
//! whose JSON is parsed and checked, go through hyper before the timed phases. `TRANSIT_LOAD_THREADS` sets its tokio
//! worker threads (default 1: one core's worth of client, whatever the peer).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type Sender = SendRequest<Full<Bytes>>;

/// Where the transit engine listens.
#[derive(Clone)]
enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

impl Addr {
    fn parse(text: &str) -> Self {
        if let Some(path) = text.strip_prefix("unix://") {
            return Addr::Unix(PathBuf::from(path));
        }
        let authority = text.strip_prefix("http://").unwrap_or(text);
        Addr::Tcp(authority.trim_end_matches('/').to_string())
    }
}

async fn connect(addr: &Addr) -> Sender {
    match addr {
        Addr::Tcp(authority) => {
            let stream = tokio::net::TcpStream::connect(authority)
                .await
                .expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(connection);
            sender
        }
        Addr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .expect("connect");
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(connection);
            sender
        }
    }
}

/// One request, prepared once and sent many times.
#[derive(Clone)]
struct Call {
    path: String,
    token: HeaderValue,
    body: Bytes,
}

impl Call {
    fn new(token: &str, path: String, body: &serde_json::Value) -> Self {
        Self {
            path,
            token: HeaderValue::from_str(token).expect("token is a header value"),
            body: Bytes::from(body.to_string()),
        }
    }
}

/// Sends `call`; panics on a non-2xx answer. Returns the answer's body.
async fn send(sender: &mut Sender, call: &Call) -> Bytes {
    let mut request = hyper::Request::post(call.path.as_str())
        .body(Full::new(call.body.clone()))
        .expect("request");
    let headers = request.headers_mut();
    headers.insert(HOST, HeaderValue::from_static("localhost"));
    headers.insert("x-vault-token", call.token.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
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
        "{}: {status} {}",
        call.path,
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

async fn post(sender: &mut Sender, call: &Call) -> serde_json::Value {
    serde_json::from_slice(&send(sender, call).await).expect("JSON answer")
}

/// One connection of a timed phase: the raw stream and its read buffer.
struct Raw<S> {
    stream: S,
    buf: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    /// Writes `request` (a complete HTTP/1.1 request) and reads one answer; panics unless it
    /// is a 200 with a `Content-Length` body containing `expect`.
    async fn round_trip(&mut self, request: &[u8], expect: &[u8]) {
        self.stream.write_all(request).await.expect("write");
        self.buf.clear();
        let (head_end, length) = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).expect("UTF-8 answer head");
                assert!(
                    head.starts_with("HTTP/1.1 200 "),
                    "answer: {}",
                    String::from_utf8_lossy(&self.buf)
                );
                let length = head
                    .split("\r\n")
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().expect("Content-Length"))
                    })
                    .expect("answer without Content-Length");
                break (end + 4, length);
            }
            self.fill().await;
        };
        while self.buf.len() < head_end + length {
            self.fill().await;
        }
        let body = &self.buf[head_end..head_end + length];
        assert!(
            find(body, expect).is_some(),
            "answer without {}: {}",
            String::from_utf8_lossy(expect),
            String::from_utf8_lossy(body)
        );
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// The whole request of a timed phase, as bytes on the wire (the headers hyper sent).
fn raw_request(call: &Call) -> Vec<u8> {
    let mut request = format!(
        "POST {} HTTP/1.1\r\nhost: localhost\r\nx-vault-token: {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        call.path,
        call.token.to_str().expect("token"),
        call.body.len()
    )
    .into_bytes();
    request.extend_from_slice(&call.body);
    request
}

/// Sends `request` in a loop until `deadline`; returns the latencies in microseconds.
async fn timed<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    request: &[u8],
    expect: &[u8],
    deadline: Instant,
) -> Vec<u64> {
    let mut raw = Raw {
        stream,
        buf: Vec::with_capacity(4096),
    };
    let mut latencies = Vec::with_capacity(1 << 16);
    while Instant::now() < deadline {
        let t = Instant::now();
        raw.round_trip(request, expect).await;
        latencies.push(t.elapsed().as_micros() as u64);
    }
    latencies
}

/// Runs `call` on every connection for `seconds`; returns (ops/s, p50 ms, p99 ms). Every
/// answer must be a 200 containing `expect` (the result field), so an empty 200 is not counted.
async fn run(
    addr: &Addr,
    concurrency: usize,
    seconds: u64,
    call: Call,
    expect: &'static [u8],
) -> (f64, f64, f64) {
    let request = std::sync::Arc::new(raw_request(&call));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (addr, request) = (addr.clone(), std::sync::Arc::clone(&request));
        tasks.push(tokio::spawn(async move {
            match &addr {
                Addr::Tcp(authority) => {
                    let stream = tokio::net::TcpStream::connect(authority)
                        .await
                        .expect("connect");
                    stream.set_nodelay(true).expect("nodelay");
                    timed(stream, &request, expect, deadline).await
                }
                Addr::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path)
                        .await
                        .expect("connect");
                    timed(stream, &request, expect, deadline).await
                }
            }
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

async fn bench(addr: Addr, token: String, key: String, seconds: u64, concurrency: usize) {
    let mut sender = connect(&addr).await;
    post(
        &mut sender,
        &Call::new(
            &token,
            format!("/v1/transit/keys/{key}"),
            &serde_json::json!({}),
        ),
    )
    .await;
    let plaintext = B64.encode([7u8; 64]);
    let encrypt = Call::new(
        &token,
        format!("/v1/transit/encrypt/{key}"),
        &serde_json::json!({ "plaintext": plaintext }),
    );
    let sample = post(&mut sender, &encrypt).await;
    let ciphertext = sample["data"]["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string();
    let decrypt = Call::new(
        &token,
        format!("/v1/transit/decrypt/{key}"),
        &serde_json::json!({ "ciphertext": ciphertext }),
    );
    let opened = post(&mut sender, &decrypt).await;
    assert_eq!(
        opened["data"]["plaintext"].as_str(),
        Some(plaintext.as_str()),
        "decrypt does not return the plaintext"
    );
    drop(sender);
    let enc = run(
        &addr,
        concurrency,
        seconds,
        encrypt,
        b"\"ciphertext\":\"vault:v",
    )
    .await;
    let dec = run(&addr, concurrency, seconds, decrypt, b"\"plaintext\":\"").await;
    for (name, (ops, p50, p99)) in [("encrypt", enc), ("decrypt", dec)] {
        println!("{name}: {ops:.0} ops/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, token, key, seconds, concurrency] = args.as_slice() else {
        eprintln!("usage: transit_load ADDR TOKEN KEY SECONDS CONCURRENCY");
        std::process::exit(2);
    };
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY");
    let threads: usize = std::env::var("TRANSIT_LOAD_THREADS")
        .ok()
        .map(|t| t.parse().expect("TRANSIT_LOAD_THREADS"))
        .unwrap_or(1);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("runtime");
    runtime.block_on(bench(
        Addr::parse(addr),
        token.clone(),
        key.clone(),
        seconds,
        concurrency,
    ));
}
