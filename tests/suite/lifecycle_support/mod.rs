//! Helpers shared by the lifecycle tests (`lifecycle_api`, `shred_proof`, `rotation_crash`):
//! JSON calls through the typed client's raw escape hatch, the activity log, a raw keep-alive
//! connection (to prove "the same open connection"), a scan of the data dir for secrets, polling
//! and a seeded random generator.

use crate::common::files_under;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use envault::api::KeyInfo;
use envault::client::{encode_segment, Client, ClientError, Method};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::common::{self, Daemon};

/// Sends `body` as JSON (or nothing) and returns the status and the JSON answer (`null` when
/// the body is empty).
pub async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let (status, bytes) = client
        .request(method.clone(), path, text.as_deref().map(str::as_bytes))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: answer is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, value)
}

/// [`call`] that must answer `status`; returns the JSON.
#[track_caller]
pub fn expect_status(answer: (u16, Value), status: u16, what: &str) -> Value {
    assert_eq!(answer.0, status, "{what}: answer {}", answer.1);
    answer.1
}

/// Asserts a JSON answer is the API error `status` / `code`.
#[track_caller]
pub fn assert_json_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "answer {}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "answer {}", answer.1);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {}",
        answer.1
    );
}

/// A lifecycle call through the raw escape hatch (independent of the typed client's lifecycle
/// methods): the JSON answer of a success (`null` when empty), or the API error.
pub async fn lifecycle(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ClientError> {
    let text = body.map(|b| b.to_string());
    let (status, bytes) = client
        .request(method, path, text.as_deref().map(str::as_bytes))
        .await?;
    if !(200..300).contains(&status) {
        return Err(ClientError::from_response(status, &bytes));
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Protocol(format!("{path}: answer is not JSON: {e}")))
}

/// `POST /v1/keys/{key}/disable`.
pub async fn disable_key(client: &Client, key: &str) -> Result<Value, ClientError> {
    lifecycle(client, Method::POST, &key_path(key, "/disable"), None).await
}

/// `POST /v1/keys/{key}/enable`.
pub async fn enable_key(client: &Client, key: &str) -> Result<Value, ClientError> {
    lifecycle(client, Method::POST, &key_path(key, "/enable"), None).await
}

/// `DELETE /v1/keys/{key}` (`?force=true` when `force`): the receipt.
pub async fn delete_key(client: &Client, key: &str, force: bool) -> Result<Value, ClientError> {
    let suffix = if force { "?force=true" } else { "" };
    lifecycle(client, Method::DELETE, &key_path(key, suffix), None).await
}

/// `POST /v1/keys/{key}/rotate` with `body`.
pub async fn rotate(client: &Client, key: &str, body: Value) -> Result<Value, ClientError> {
    lifecycle(client, Method::POST, &key_path(key, "/rotate"), Some(body)).await
}

/// `DELETE /v1/authorizations/{id}`.
pub async fn revoke(client: &Client, id: &str) -> Result<Value, ClientError> {
    let path = format!("/v1/authorizations/{}", encode_segment(id));
    lifecycle(client, Method::DELETE, &path, None).await
}

/// `DELETE /v1/databases/{db}` (soft delete).
pub async fn delete_database(client: &Client, db: &str) -> Result<Value, ClientError> {
    lifecycle(client, Method::DELETE, &db_path(db, ""), None).await
}

/// `POST /v1/databases/{db}/restore`.
pub async fn restore_database(client: &Client, db: &str) -> Result<Value, ClientError> {
    lifecycle(client, Method::POST, &db_path(db, "/restore"), None).await
}

/// `/v1/keys/{key}{suffix}` with the key percent-encoded.
pub fn key_path(key: &str, suffix: &str) -> String {
    format!("/v1/keys/{}{suffix}", encode_segment(key))
}

/// `/v1/databases/{db}{suffix}` with the name percent-encoded.
pub fn db_path(db: &str, suffix: &str) -> String {
    format!("/v1/databases/{}{suffix}", encode_segment(db))
}

/// `POST /v1/authorizations`; returns the raw answer.
pub async fn grant(client: &Client, source: &str, target: &str, roles: &[&str]) -> (u16, Value) {
    call(
        client,
        Method::POST,
        "/v1/authorizations",
        Some(json!({ "source": source, "target": target, "roles": roles })),
    )
    .await
}

/// Every authorization.
pub async fn authorizations(client: &Client) -> Vec<Value> {
    let list = expect_status(
        call(client, Method::GET, "/v1/authorizations", None).await,
        200,
        "list authorizations",
    );
    list["authorizations"]
        .as_array()
        .unwrap_or_else(|| panic!("no authorizations array in {list}"))
        .clone()
}

/// Creates a customer key (generated) and grants `databases` → it `Reader`.
pub async fn usable_key(client: &Client, name: &str) -> KeyInfo {
    let key = client
        .create_key(name, None, None)
        .await
        .unwrap_or_else(|e| panic!("create key {name}: {e}"));
    common::allow_databases(client, &key.name).await;
    key
}

/// Activity-log events, optionally filtered by action.
pub async fn events(client: &Client, action: Option<&str>) -> Vec<Value> {
    let path = match action {
        Some(action) => format!("/v1/audit?action={}", encode_segment(action)),
        None => "/v1/audit".to_string(),
    };
    let answer = expect_status(call(client, Method::GET, &path, None).await, 200, &path);
    answer["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events array in {answer}"))
        .clone()
}

/// The lines of `<data_dir>/audit.log` after the header, parsed.
pub fn audit_file_events(daemon: &Daemon) -> Vec<Value> {
    let text = std::fs::read_to_string(daemon.data_dir.join("audit.log")).expect("read audit.log");
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("audit.log has a header"))
        .expect("audit.log header is JSON");
    assert_eq!(header["magic"], "envault-audit", "audit.log header");
    lines
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("audit line {line}: {e}")))
        .collect()
}

/// `GET /v1/audit/verify` must report an intact chain; returns the report.
pub async fn assert_audit_chain_ok(client: &Client) -> Value {
    let report = expect_status(
        call(client, Method::GET, "/v1/audit/verify", None).await,
        200,
        "audit verify",
    );
    assert_eq!(report["ok"], true, "audit chain: {report}");
    report
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 connection kept open across requests: a request that arrives on it after a
/// state change must see the change (DESIGN.md: "for each request that starts after it").
/// Any close by the daemon fails the test, so every answer provably came over the same socket.
pub struct KeepAlive {
    stream: UnixStream,
    buffer: Vec<u8>,
    token: String,
}

impl KeepAlive {
    /// Connects to the daemon's socket with `token`.
    pub async fn open(socket: &Path, token: &str) -> KeepAlive {
        KeepAlive {
            stream: UnixStream::connect(socket)
                .await
                .expect("connect to the daemon socket"),
            buffer: Vec::new(),
            token: token.to_string(),
        }
    }

    /// Sends one request on the connection and reads exactly one answer.
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            self.token,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream
            .write_all(&request)
            .await
            .expect("write on the kept-alive connection");
        tokio::time::timeout(Duration::from_secs(10), self.read_answer())
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} {path} within 10 s"))
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .expect("read on the kept-alive connection");
        assert!(n > 0, "the daemon closed the kept-alive connection");
        self.buffer.extend_from_slice(&chunk[..n]);
    }

    async fn read_answer(&mut self) -> (u16, Vec<u8>) {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.fill().await;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        self.buffer.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            }
            if name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
                chunked = true;
            }
            if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                panic!("the daemon announced it closes the kept-alive connection: {head:?}");
            }
        }
        let body = if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else if chunked {
            self.read_chunked().await
        } else {
            let length = length.unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
            while self.buffer.len() < length {
                self.fill().await;
            }
            self.buffer.drain(..length).collect()
        };
        (status, body)
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                self.fill().await;
            };
            let size_text = String::from_utf8_lossy(&self.buffer[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            self.buffer.drain(..line_end + 2);
            while self.buffer.len() < size + 2 {
                self.fill().await;
            }
            body.extend(self.buffer.drain(..size));
            self.buffer.drain(..2);
            if size == 0 {
                return body;
            }
        }
    }
}

/// The `error.code` of a raw JSON error body.
pub fn raw_code(body: &[u8]) -> String {
    common::error_code(body)
}

/// A value that must not be found on disk, and how to name it in a failure.
pub struct Needle {
    /// What it is, for the failure message.
    pub what: String,
    /// The bytes searched for.
    pub bytes: Vec<u8>,
}

/// Lowercase hex.
pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Uppercase hex.
pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// `value` raw, in base64 (standard and URL-safe, padded or not) and in hex (both cases).
pub fn encodings(what: &str, value: &[u8]) -> Vec<Needle> {
    let forms = [
        ("raw", value.to_vec()),
        ("base64", STANDARD.encode(value).into_bytes()),
        (
            "base64 unpadded",
            STANDARD_NO_PAD.encode(value).into_bytes(),
        ),
        ("base64url", URL_SAFE.encode(value).into_bytes()),
        (
            "base64url unpadded",
            URL_SAFE_NO_PAD.encode(value).into_bytes(),
        ),
        ("hex", hex_lower(value).into_bytes()),
        ("HEX", hex_upper(value).into_bytes()),
    ];
    let mut needles: Vec<Needle> = Vec::new();
    for (form, bytes) in forms {
        if !needles.iter().any(|n| n.bytes == bytes) {
            needles.push(Needle {
                what: format!("{what} ({form})"),
                bytes,
            });
        }
    }
    needles
}

/// Asserts no file under `dir` contains any needle; names file, offset and needle otherwise.
pub fn assert_absent_under(dir: &Path, needles: &[Needle]) {
    let files = files_under(dir);
    assert!(!files.is_empty(), "no files under {}", dir.display());
    for file in files {
        let bytes = common::read_file(&file);
        // A preallocated journal is mostly zero padding at its end. A needle with a non-zero
        // byte cannot lie wholly in it, so its scan ends one needle past the last non-zero byte.
        let data_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1);
        for needle in needles {
            let end = if needle.bytes.iter().any(|b| *b != 0) {
                (data_end + needle.bytes.len()).min(bytes.len())
            } else {
                bytes.len()
            };
            if let Some(at) = bytes[..end]
                .windows(needle.bytes.len())
                .position(|w| w == needle.bytes.as_slice())
            {
                panic!("{} found in {} at offset {at}", needle.what, file.display());
            }
        }
    }
}
