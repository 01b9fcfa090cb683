//! Helpers of the crash-consistency and disk-full tests: the seed (and its report on failure),
//! a seeded generator, a model of what the daemon acknowledged, bounded JSON calls, listings,
//! polling, raw requests that can be cut by a kill, and a small filesystem for the data dir.

mod small_fs;
pub use small_fs::{dir_files, SmallFs, SmallFsKind};

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use envault::client::{encode_segment, Client, ClientError, Method};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::common::{self, Daemon};

/// Seed used when `ENVAULT_CRASH_SEED` is not set.
pub const DEFAULT_SEED: u64 = 0x5EED_0FC0_FFEE;

/// Longest a single request may take before the daemon counts as hung.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// The run's seed: `ENVAULT_CRASH_SEED` (decimal or `0x` hex), else [`DEFAULT_SEED`].
pub fn seed_from_env() -> u64 {
    match std::env::var("ENVAULT_CRASH_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("ENVAULT_CRASH_SEED={text:?} is not a u64: {e}"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// Prints the seed (and how to rerun) when the test it lives in fails.
pub struct SeedReport {
    binary: &'static str,
    test: &'static str,
    seed: u64,
}

impl SeedReport {
    /// Reports `seed` for `test` (of the suite module `binary`) if the test panics; also prints
    /// it at once.
    pub fn new(binary: &'static str, test: &'static str, seed: u64) -> Self {
        eprintln!("[{test}] seed {seed} (set ENVAULT_CRASH_SEED to reproduce)");
        SeedReport { binary, test, seed }
    }
}

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n[{binary}: {test}] FAILED with seed {seed}; reproduce with:\n  ENVAULT_CRASH_SEED={seed} cargo test --release --test suite {test} -- --nocapture\n",
                binary = self.binary,
                test = self.test,
                seed = self.seed
            );
        }
    }
}

/// How a request ended, seen from the client.
#[derive(Debug)]
pub enum Outcome<T> {
    /// 2xx: the daemon acknowledged it.
    Acked(T),
    /// An API error answer: the daemon refused it (status, code, message).
    Refused(u16, String, String),
    /// No answer (connection refused, reset, cut mid-answer): it may or may not have happened.
    Unknown(String),
}

/// Sorts a client result into an [`Outcome`].
pub fn outcome<T>(result: Result<T, ClientError>) -> Outcome<T> {
    match result {
        Ok(value) => Outcome::Acked(value),
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => Outcome::Refused(status, code, message),
        Err(other) => Outcome::Unknown(other.to_string()),
    }
}

/// Runs `call`, failing the test if the daemon does not answer within [`REQUEST_LIMIT`].
pub async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    match tokio::time::timeout(REQUEST_LIMIT, call).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no answer within {REQUEST_LIMIT:?} (the daemon hangs)"),
    }
}

/// Thread stacks of a hung process (through gdb when it is installed), for a bug report.
pub fn stacks_of(pid: u32) -> String {
    let output = Command::new("timeout")
        .args([
            "30",
            "gdb",
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .output();
    match output {
        Ok(out) if out.status.success() => {
            // Keep the frames, not gdb's chatter.
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
                .map(|l| l.chars().take(160).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        }
        Ok(out) => format!(
            "(no stacks: gdb failed: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("(no stacks: cannot run gdb: {e})"),
    }
}

/// A JSON request through the client's raw escape hatch: status and body (`null` if empty).
pub async fn try_json(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), ClientError> {
    let text = body.map(|b| b.to_string());
    let what = format!("{method} {path}");
    let (status, bytes) = bounded(
        &what,
        client.request(method, path, text.as_deref().map(str::as_bytes)),
    )
    .await?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{what}: answer {status} is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Ok((status, value))
}

/// [`try_json`] that must get an answer.
pub async fn json(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let what = format!("{method} {path}");
    try_json(client, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// [`json`] that must answer `status`; returns the body.
pub async fn expect_json(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let what = format!("{method} {path}");
    let (got, value) = json(client, method, path, body).await;
    assert_eq!(got, status, "{what}: answer {value}");
    value
}

/// `/v1/keys/{key}{suffix}`.
pub fn key_path(key: &str, suffix: &str) -> String {
    format!("/v1/keys/{}{suffix}", encode_segment(key))
}

/// `/v1/databases/{db}{suffix}`.
pub fn db_path(db: &str, suffix: &str) -> String {
    format!("/v1/databases/{}{suffix}", encode_segment(db))
}

/// Creates a customer key and lets databases use it; returns (name, id).
pub async fn customer_key(client: &Client, name: &str) -> (String, String) {
    let key = bounded("create key", client.create_key(name, None, None))
        .await
        .unwrap_or_else(|e| panic!("create key {name}: {e}"));
    common::allow_databases(client, &key.id).await;
    (key.name, key.id)
}

/// Creates a database under `key` (None: provider-managed).
pub async fn database(client: &Client, name: &str, key: Option<&str>) {
    bounded("create database", client.create_database(name, key, None))
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
}

/// Names of the customer keys `GET /v1/keys` lists.
pub async fn key_names(client: &Client) -> BTreeSet<String> {
    let keys = bounded("list keys", client.list_keys())
        .await
        .unwrap_or_else(|e| panic!("GET /v1/keys: {e}"));
    keys.into_iter().map(|k| k.name).collect()
}

/// Databases `GET /v1/databases` lists: name → state.
pub async fn database_states(client: &Client) -> BTreeMap<String, String> {
    let dbs = bounded("list databases", client.list_databases())
        .await
        .unwrap_or_else(|e| panic!("GET /v1/databases: {e}"));
    dbs.into_iter().map(|d| (d.name, d.state)).collect()
}

/// Every record key of a database, through the paged listing.
pub async fn record_keys(client: &Client, db: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let query = envault::api::RecordListQuery {
            prefix: None,
            after: after.clone(),
            limit: Some(1000),
        };
        let page = bounded("list records", client.list_records(db, &query))
            .await
            .unwrap_or_else(|e| panic!("list records of {db}: {e}"));
        keys.extend(page.keys);
        match page.next {
            Some(next) => after = Some(next),
            None => return keys,
        }
    }
}

/// Asserts `GET /v1/audit/verify` reports an intact chain; returns the report.
pub async fn assert_audit_ok(client: &Client, context: &str) -> Value {
    let report = expect_json(client, Method::GET, "/v1/audit/verify", None, 200).await;
    assert_eq!(
        report["ok"], true,
        "{context}: the activity log chain is broken: {report}"
    );
    report
}

/// One record's acknowledged state and the states unanswered operations may have left.
#[derive(Debug, Clone, Default)]
pub struct RecordModel {
    /// The last acknowledged state (`None`: absent or deleted).
    pub acked: Option<Vec<u8>>,
    /// States of operations sent but never answered, any of which may have taken effect.
    pub maybe: Vec<Option<Vec<u8>>>,
}

impl RecordModel {
    /// Whether the daemon may legitimately show `state` now.
    pub fn allows(&self, state: &Option<Vec<u8>>) -> bool {
        &self.acked == state || self.maybe.iter().any(|m| m == state)
    }

    /// Whether the state is known exactly.
    pub fn certain(&self) -> bool {
        self.maybe.is_empty()
    }

    /// An operation leading to `state` was acknowledged.
    pub fn ack(&mut self, state: Option<Vec<u8>>) {
        self.acked = state;
        self.maybe.clear();
    }

    /// An operation leading to `state` got no answer.
    pub fn unknown(&mut self, state: Option<Vec<u8>>) {
        self.maybe.push(state);
    }

    /// The daemon showed `state` (checked with [`RecordModel::allows`]): it is now the state.
    pub fn observed(&mut self, state: Option<Vec<u8>>) {
        self.ack(state);
    }
}

/// Short description of a state for failure messages (length and a fingerprint, not the bytes).
pub fn describe(state: &Option<Vec<u8>>) -> String {
    match state {
        None => "absent".into(),
        Some(v) => {
            let tag_end = v.iter().position(|b| *b == b'|').unwrap_or(0).min(40);
            format!(
                "{} bytes {:?}…",
                v.len(),
                String::from_utf8_lossy(&v[..tag_end])
            )
        }
    }
}

/// Reads a record as a model state: `Ok(Some)` value, `Ok(None)` 404 `not_found`, `Err` other.
pub async fn read_state(client: &Client, db: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
    match outcome(bounded("GET record", client.get_record(db, key)).await) {
        Outcome::Acked(v) => Ok(Some(v)),
        Outcome::Refused(404, code, _) if code == "not_found" => Ok(None),
        Outcome::Refused(status, code, message) => Err(format!("{status} {code}: {message}")),
        Outcome::Unknown(e) => Err(format!("no answer: {e}")),
    }
}

/// A request written on its own connection, whose answer is read later (or never, when the
/// daemon is killed in between).
pub struct RawRequest {
    stream: UnixStream,
}

impl RawRequest {
    /// Connects and writes `method path` with the operator token and `body` (JSON).
    pub async fn send(daemon: &Daemon, method: &str, path: &str, body: &[u8]) -> RawRequest {
        let mut stream = UnixStream::connect(&daemon.socket)
            .await
            .expect("connect to the daemon socket");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            daemon.token,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.expect("write request");
        RawRequest { stream }
    }

    /// Whatever bytes arrived before the connection ended (at most `limit` of waiting).
    pub async fn answer(mut self, limit: Duration) -> Vec<u8> {
        let mut bytes = Vec::new();
        let read = async {
            let mut buffer = [0u8; 8192];
            loop {
                match self.stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&buffer[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(limit, read).await;
        bytes
    }
}

/// The status of a (possibly truncated) raw HTTP/1.1 answer, if its status line arrived.
pub fn status_line(bytes: &[u8]) -> Option<u16> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}
