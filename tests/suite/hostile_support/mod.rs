//! Helpers of the hostile-input and access-control tests (`bad_input`, `access_control`): raw
//! HTTP/1.1 over the socket (tolerating a daemon that answers early and closes), a keep-alive
//! connection, state snapshots to prove "nothing changed", a daemon started with extra `serve`
//! arguments, and small process / file-system probes.

use crate::common::files_under;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::common::{self, Daemon};

/// Percent-encodes one path segment: everything but `A-Z a-z 0-9 - . _ ~`.
pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Builds one HTTP/1.1 request (`Connection: close`). The body goes with `Content-Length`, or
/// chunked (in 4 KiB chunks) when `chunked`.
pub fn build_request(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    chunked: bool,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    if chunked {
        for chunk in body.chunks(4096) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
    } else {
        request.extend_from_slice(body);
    }
    request
}

/// Writes `request` on a fresh connection while reading the answer until the daemon closes
/// (at most 10 s). Unlike `Daemon::raw_bytes`, a daemon that answers early (413) and closes
/// before the whole request is written is fine: write errors are ignored.
pub async fn send_bytes(socket: &Path, request: &[u8]) -> Vec<u8> {
    let stream = UnixStream::connect(socket)
        .await
        .expect("connect to the daemon socket");
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        // Keep the write half open: shutting it down could read as an early end of request.
        writer
    });
    let mut answer = Vec::new();
    let read = async {
        let mut buffer = [0u8; 8192];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the daemon answers and closes a Connection: close request within 10 s");
    write.abort();
    answer
}

/// One request on a fresh connection; status and (de-chunked) body. Panics on a non-HTTP answer.
pub async fn send(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    chunked: bool,
) -> (u16, Vec<u8>) {
    let request = build_request(method, path, headers, body, chunked);
    let answer = send_bytes(socket, &request).await;
    common::parse_response(&answer).unwrap_or_else(|| {
        panic!(
            "unparseable answer to {method} {path}: {:?}",
            String::from_utf8_lossy(&answer)
        )
    })
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> (String, String) {
    ("Authorization".into(), format!("Bearer {token}"))
}

/// A JSON request with `token`; returns the status and the JSON answer (`null` if empty).
pub async fn json_call(
    socket: &Path,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, bytes) = send(socket, method, path, &[bearer(token)], &body, false).await;
    (status, to_json(&bytes, method, path))
}

/// A body as JSON (`null` when empty); panics with the text when it is not JSON.
pub fn to_json(bytes: &[u8], method: &str, path: &str) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: answer is not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// [`json_call`] that must answer `status`.
#[track_caller]
pub fn expect(answer: (u16, Value), status: u16, what: &str) -> Value {
    assert_eq!(answer.0, status, "{what}: answer {}", answer.1);
    answer.1
}

/// Everything observable an API caller could change: the catalog listings and every record
/// (key and value) of some databases.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `GET` path → JSON body.
    pub listings: BTreeMap<String, Value>,
    /// Database → record key → value.
    pub records: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// The listings a snapshot takes.
pub const LISTINGS: &[&str] = &[
    "/v1/keys",
    "/v1/databases",
    "/v1/authorizations",
    "/v1/tokens",
    "/v1/backups",
];

/// Takes a [`Snapshot`] with the operator token; `databases` must be active.
pub async fn snapshot(daemon: &Daemon, databases: &[&str]) -> Snapshot {
    let mut listings = BTreeMap::new();
    for path in LISTINGS {
        let mut value = expect(
            json_call(&daemon.socket, &daemon.token, "GET", path, None).await,
            200,
            path,
        );
        // A token's last use is bookkeeping the snapshot itself moves (it calls with the
        // operator token, and the daemon saves last uses in the background), not state a
        // refused request could have changed.
        drop_field(&mut value, "last_used_at");
        listings.insert(path.to_string(), value);
    }
    let mut records = BTreeMap::new();
    for db in databases {
        records.insert(db.to_string(), all_records(daemon, db).await);
    }
    Snapshot { listings, records }
}

/// Removes `field` from every object inside `value`.
fn drop_field(value: &mut Value, field: &str) {
    match value {
        Value::Object(map) => {
            map.remove(field);
            map.values_mut().for_each(|v| drop_field(v, field));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| drop_field(v, field)),
        _ => {}
    }
}

/// Every record of `db`, following pages.
pub async fn all_records(daemon: &Daemon, db: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/databases/{}/records?limit=1000", enc(db));
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", enc(after)));
        }
        let page = expect(
            json_call(&daemon.socket, &daemon.token, "GET", &path, None).await,
            200,
            &path,
        );
        let keys: Vec<String> = page["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("no keys in {page}"))
            .iter()
            .map(|k| k.as_str().expect("record keys are strings").to_string())
            .collect();
        for key in &keys {
            let path = format!("/v1/databases/{}/records/{}", enc(db), enc(key));
            let (status, value) = daemon.raw_auth("GET", &path, b"").await;
            assert_eq!(
                status,
                200,
                "GET {path}: {:?}",
                String::from_utf8_lossy(&value)
            );
            out.insert(key.clone(), value);
        }
        match page.get("next").and_then(Value::as_str) {
            Some(next) => after = Some(next.to_string()),
            None => return out,
        }
    }
}

/// Asserts two snapshots are equal, naming the first part that differs.
#[track_caller]
pub fn assert_same(before: &Snapshot, after: &Snapshot, what: &str) {
    for (path, value) in &before.listings {
        let now = &after.listings[path];
        assert_eq!(
            value, now,
            "{what}: GET {path} changed\nbefore: {value}\nafter:  {now}"
        );
    }
    for (db, records) in &before.records {
        let now = &after.records[db];
        let keys_before: Vec<&String> = records.keys().collect();
        let keys_now: Vec<&String> = now.keys().collect();
        assert_eq!(keys_before, keys_now, "{what}: record keys of {db} changed");
        for (key, value) in records {
            assert!(
                &now[key] == value,
                "{what}: value of {db}/{key:?} changed ({} -> {} bytes)",
                value.len(),
                now[key].len()
            );
        }
    }
}

/// One HTTP/1.1 connection kept open across requests. Unlike the harness's one-shot requests
/// it reports a close by the daemon as an error, so a test can tell "same connection".
pub struct KeepAlive {
    stream: UnixStream,
    buffer: Vec<u8>,
}

impl KeepAlive {
    /// Connects to `socket`.
    pub async fn open(socket: &Path) -> KeepAlive {
        KeepAlive {
            stream: UnixStream::connect(socket)
                .await
                .expect("connect to the daemon socket"),
            buffer: Vec::new(),
        }
    }

    /// Sends one request (with `token` as bearer when given) and reads one answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).await?;
        tokio::time::timeout(Duration::from_secs(10), self.read_answer())
            .await
            .map_err(|_| std::io::Error::other("no answer within 10 s"))?
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the daemon closed the kept-alive connection",
            ));
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_answer(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        self.buffer.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
        let mut length = 0;
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(std::io::Error::other(
                    "chunked answers are not expected here",
                ));
            }
        }
        while self.buffer.len() < length {
            self.fill().await?;
        }
        Ok((status, self.buffer.drain(..length).collect()))
    }
}

/// A `serve` process started by a test with its own arguments (the harness's `Daemon` starts
/// `serve` without any); killed on drop.
pub struct Spawned {
    /// The process.
    pub child: Child,
}

impl Spawned {
    /// Starts `command` (stdout and stderr appended to `log`) and waits until `socket` answers
    /// `/v1/health`.
    pub async fn start(mut command: Command, socket: &Path, log: &Path) -> Spawned {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .expect("spawn envault serve");
        let mut spawned = Spawned { child };
        let deadline = Instant::now() + common::STARTUP_TIMEOUT;
        loop {
            if let Some(status) = spawned.child.try_wait().expect("poll daemon") {
                panic!(
                    "serve exited during startup with {status}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if health_ok(socket).await {
                return spawned;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not answer /v1/health in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited 0.
    pub async fn stop(&mut self) -> bool {
        sigterm(self.child.id());
        wait_exit(&mut self.child, common::STARTUP_TIMEOUT)
            .await
            .success()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `GET /v1/health` answers 200 on `socket` right now.
pub async fn health_ok(socket: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(socket).await else {
        return false;
    };
    let (mut reader, mut writer) = stream.into_split();
    let request = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if writer.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer));
    matches!(read.await, Ok(Ok(_)))
        && common::parse_response(&answer).is_some_and(|(status, _)| status == 200)
}

/// Waits for `child` to exit (panics after `timeout`).
pub async fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// Our uid.
pub fn my_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .expect("stat /proc/self")
        .uid()
}

/// `VmLck` of a process in kB, from `/proc/<pid>/status`.
pub fn vm_lck_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmLck:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The files under `dir` that contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| common::contains(&common::read_file(f), needle))
        .collect()
}

/// The activity log file's events (`<data_dir>/audit.log`, header line skipped).
pub fn audit_file_events(data_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir.join("audit.log")).expect("read audit.log");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

/// `envault serve` with a clean `ENVAULT_*` environment, cwd `dir`, and this socket and data
/// dir (not started). For daemons the harness cannot describe (bad socket directories).
pub fn serve_command(dir: &Path, socket: &Path, data_dir: &Path) -> Command {
    let mut command = Command::new(common::binary());
    command.current_dir(dir).arg("serve");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ENVAULT_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
        .env("ENVAULT_SOCKET", socket)
        .env("ENVAULT_DATA_DIR", data_dir);
    command
}
