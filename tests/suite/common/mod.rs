//! Test harness: runs the real `envault serve` binary on a socket in a temp dir and talks to it
//! through the typed client, raw HTTP/1.1 bytes, or the `envault` CLI.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use envault::client::{Client, ClientError, Method};

pub mod cli_output;
mod files;
mod rng;
mod wait;

pub use {files::files_under, rng::Rng, wait::wait_for};
// Only the suites under `external-suites` start PostgreSQL servers of their own.
#[cfg_attr(not(feature = "external-suites"), allow(dead_code))]
#[path = "../pg_support/mod.rs"]
pub mod pg_support;

/// Set to `postgres` to run a suite's daemons on PostgreSQL instead of the embedded store (the
/// store test matrix): each daemon gets its own server, started and stopped with it.
/// Tests that choose their store themselves (`ENVAULT_STORE_BACKEND` in their env) keep it.
pub const STORE_MATRIX_VAR: &str = "EVT_TEST_STORE";
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

/// How long the daemon may take to answer `/v1/health` after being started, or to exit after a
/// signal.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for the daemon.
const POLL: Duration = Duration::from_millis(20);

/// The `envault` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_envault")
}

/// The load generator `envault-bench`, a package of its own in the workspace (bench/), built
/// with the profile and into the target dir of the `envault` binary under test. Cargo builds
/// only the binaries of the package under test, so the first call runs
/// `cargo build -p envault-bench` (nothing to do when it is up to date, as after
/// `cargo build --workspace`); a failed build fails the test with cargo's output.
pub fn bench_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = Path::new(binary())
            .parent()
            .expect("the envault binary is in a profile directory");
        let target_dir = profile_dir
            .parent()
            .expect("the profile directory is in a target directory");
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => "dev",
            Some(name) => name,
            None => panic!("no profile in {}", profile_dir.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--quiet",
                "-p",
                "envault-bench",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .output()
            .expect("run cargo build -p envault-bench");
        assert!(
            output.status.success(),
            "cargo build -p envault-bench failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        profile_dir.join("envault-bench")
    })
}

/// A running (or stopped) daemon owning a temp dir: `<dir>/envault.sock`, `<dir>/data/`,
/// `<dir>/daemon.log` (the daemon's stdout and stderr, appended across restarts).
pub struct Daemon {
    dir: tempfile::TempDir,
    /// The Unix socket path.
    pub socket: PathBuf,
    /// The data dir (`ENVAULT_DATA_DIR`).
    pub data_dir: PathBuf,
    /// The operator token read from `<data_dir>/operator.token`.
    pub token: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// The PostgreSQL server of this daemon under `EVT_TEST_STORE=postgres`.
    postgres: Option<pg_support::Postgres>,
}

impl Daemon {
    /// Starts a daemon with the default configuration.
    pub async fn start() -> Daemon {
        Self::start_with_env(&[]).await
    }

    /// Starts a daemon with extra `ENVAULT_*` variables (e.g. `ENVAULT_MAX_RECORD_SIZE`).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("create temp dir");
        let socket = dir.path().join("envault.sock");
        let data_dir = dir.path().join("data");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let chooses_store = env.iter().any(|(k, _)| k == "ENVAULT_STORE_BACKEND");
        let postgres = match std::env::var(STORE_MATRIX_VAR).as_deref() {
            Ok("postgres") if !chooses_store => {
                let server = pg_support::Postgres::start();
                let url = server.create_database("envault");
                env.push(("ENVAULT_STORE_BACKEND".into(), "postgres".into()));
                env.push(("ENVAULT_STORE_URL".into(), url));
                Some(server)
            }
            Ok("postgres") | Ok("sled") | Ok("") | Err(_) => None,
            Ok(other) => panic!("{STORE_MATRIX_VAR}={other:?}: expected sled or postgres"),
        };
        let mut daemon = Daemon {
            socket,
            data_dir,
            token: String::new(),
            env,
            child: None,
            postgres,
            dir,
        };
        daemon.launch().await;
        daemon
    }

    /// Where the daemon's data is on disk: the data dir, plus the PostgreSQL server's data
    /// directory (after a checkpoint) when it runs on one under `EVT_TEST_STORE=postgres`.
    pub fn store_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.data_dir.clone()];
        if let Some(server) = &self.postgres {
            server.psql("envault", "CHECKPOINT");
            dirs.push(server.data_dir());
        }
        dirs
    }

    /// The value of an `ENVAULT_*` variable this daemon runs with (its own or the store
    /// matrix's), if set.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The temp dir holding socket, data dir and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log so far (stdout and stderr of every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// A `serve` command with this daemon's directory and environment (not started).
    pub fn serve_command(&self) -> Command {
        let mut command = self.base_command();
        command.arg("serve");
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// The binary with cwd = temp dir, a clean `ENVAULT_*` environment, and socket and data
    /// dir pointing into the temp dir.
    fn base_command(&self) -> Command {
        self.command_of(Path::new(binary()))
    }

    /// `program` run in the daemon's directory, with its socket and data dir in the
    /// environment and the test's own `ENVAULT_*` variables removed.
    fn command_of(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(self.dir.path());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ENVAULT_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command
            .env("ENVAULT_SOCKET", &self.socket)
            .env("ENVAULT_DATA_DIR", &self.data_dir);
        command
    }

    /// Spawns `serve` and waits until `/v1/health` answers; then reads the operator token.
    async fn launch(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log");
        let child = self
            .serve_command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn envault serve");
        self.child = Some(child);
        let probe = Client::new(&self.socket, None);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("poll daemon") {
                self.child = None;
                panic!(
                    "envault serve exited during startup with {status}; log:\n{}",
                    self.log()
                );
            }
            if let Ok(health) = probe.health().await {
                assert_eq!(health.status, "ok");
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "envault serve did not answer /v1/health within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        if self.postgres.is_some() {
            assert!(
                self.log().contains("store: PostgreSQL"),
                "{STORE_MATRIX_VAR}=postgres but the daemon does not run on PostgreSQL:\n{}",
                self.log()
            );
        }
        let token = std::fs::read_to_string(self.data_dir.join("operator.token"))
            .expect("the daemon writes data/operator.token before it listens");
        self.token = token.trim().to_string();
        assert!(!self.token.is_empty(), "operator.token is empty");
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the daemon is running")
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("poll daemon").is_none(),
            None => false,
        }
    }

    /// A typed client with the operator token (its own connection).
    pub fn client(&self) -> Client {
        Client::new(&self.socket, Some(self.token.clone()))
    }

    /// A typed client with the given token, or none.
    pub fn client_with_token(&self, token: Option<&str>) -> Client {
        Client::new(&self.socket, token.map(str::to_string))
    }

    /// `("Authorization", "Bearer <operator token>")` for [`Daemon::raw`].
    pub fn auth(&self) -> (String, String) {
        ("Authorization".into(), format!("Bearer {}", self.token))
    }

    /// One raw HTTP/1.1 request on a fresh connection (`Connection: close`, `Content-Length`
    /// set from `body`); returns the status and the (de-chunked) body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let response = self.raw_bytes(&request).await;
        parse_response(&response).unwrap_or_else(|| {
            panic!(
                "unparseable answer to {method} {path}: {:?}",
                String::from_utf8_lossy(&response)
            )
        })
    }

    /// Raw request with the operator token.
    pub async fn raw_auth(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.raw(method, path, &[self.auth()], body).await
    }

    /// Writes `request` as is on a fresh connection and reads until the daemon closes it (at most
    /// 10 s). For malformed requests; the answer may be empty.
    pub async fn raw_bytes(&self, request: &[u8]) -> Vec<u8> {
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .expect("connect to the daemon socket");
        stream.write_all(request).await.expect("write request");
        let mut answer = Vec::new();
        let read = async {
            let mut buffer = [0u8; 8192];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the daemon closes a Connection: close request within 10 s");
        answer
    }

    /// Runs the CLI against this daemon (`--socket`, token from `<data_dir>/operator.token`).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, &[])
    }

    /// Runs the load generator `envault-bench` (see [`bench_binary`]) against this daemon.
    pub fn bench(&self, args: &[&str]) -> Output {
        let mut command = self.command_of(bench_binary());
        command.arg("--socket").arg(&self.socket).args(args);
        run_with_input(command, &[], STARTUP_TIMEOUT)
    }

    /// Runs the CLI with `stdin` as standard input.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut command = self.cli_command();
        command.args(args);
        run_with_input(command, stdin, STARTUP_TIMEOUT)
    }

    /// The CLI command (`envault --socket <socket>`, `ENVAULT_DATA_DIR` set so that the token
    /// file is found) for callers that change its environment; run it with [`run_with_input`].
    pub fn cli_command(&self) -> Command {
        self.cli_command_on(&self.socket)
    }

    /// [`Daemon::cli_command`] aimed at another socket path.
    pub fn cli_command_on(&self, socket: &Path) -> Command {
        let mut command = self.base_command();
        command.arg("--socket").arg(socket);
        command
    }

    /// Sends SIGTERM, waits for the exit, asserts exit status 0 and that the socket file is gone.
    pub async fn stop_graceful(&mut self) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
        let status = self.wait_exit().await;
        assert!(
            status.success(),
            "envault serve exited with {status} after SIGTERM; log:\n{}",
            self.log()
        );
        assert!(
            !self.socket.exists(),
            "the socket file is still there after a graceful stop"
        );
    }

    /// SIGKILL: no shutdown work runs, the socket file stays behind.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        child.kill().expect("SIGKILL the daemon");
        child.wait().expect("reap the daemon");
    }

    /// Starts the daemon again on the same socket and data dir (after a stop or a kill).
    pub async fn restart(&mut self) {
        self.launch().await;
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("poll daemon") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "envault serve did not exit within {STARTUP_TIMEOUT:?} after SIGTERM"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `command` with `stdin`, kills it after `timeout`; stdout and stderr are captured.
pub fn run_with_input(mut command: Command, stdin: &[u8], timeout: Duration) -> Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn envault");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    // Drain both pipes on threads so a large output cannot block the child.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = out.read_to_end(&mut buffer);
        buffer
    });
    let err_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = err.read_to_end(&mut buffer);
        buffer
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll envault") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("envault {command:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Status and body of a raw HTTP/1.1 answer (chunked bodies decoded).
pub fn parse_response(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..split]).ok()?;
    let body = &bytes[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
            chunked = true;
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        body.get(..length)?.to_vec()
    } else {
        body.to_vec()
    };
    Some((status, body))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// The `{"error": {"code", "message"}}` body of an error answer: asserts its shape and returns
/// the code.
pub fn error_code(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let error = value
        .get("error")
        .and_then(|e| e.as_object())
        .unwrap_or_else(|| panic!("no error object in {value}"));
    let message = error
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_else(|| panic!("no error.message in {value}"));
    assert!(!message.is_empty(), "empty error.message in {value}");
    error
        .get("code")
        .and_then(|c| c.as_str())
        .unwrap_or_else(|| panic!("no error.code in {value}"))
        .to_string()
}

/// Asserts a raw answer is an API error with this status and code.
#[track_caller]
pub fn assert_error_answer(answer: &(u16, Vec<u8>), status: u16, code: &str) {
    assert_eq!(
        answer.0,
        status,
        "status of answer {:?}",
        String::from_utf8_lossy(&answer.1)
    );
    assert_eq!(error_code(&answer.1), code, "error code");
}

/// Asserts a typed call failed with this API status and code.
#[track_caller]
pub fn assert_api_error<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    status: u16,
    code: &str,
) {
    match result {
        Ok(value) => panic!("expected {status} {code}, got success: {value:?}"),
        Err(ClientError::Api {
            status: got_status,
            code: got_code,
            message,
        }) => {
            assert_eq!(
                (got_status, got_code.as_str()),
                (status, code),
                "error: {message}"
            );
            assert!(!message.is_empty(), "empty error message");
        }
        Err(other) => panic!("expected {status} {code}, got {other:?}"),
    }
}

/// Lets databases use `key`: grants `databases` → key `Reader` where the daemon has the
/// authorization route (DESIGN.md rule 1). A daemon without that route needs no grant.
pub async fn allow_databases(client: &Client, key: &str) {
    let body = serde_json::json!({ "source": "databases", "target": key, "roles": ["Reader"] });
    let (status, answer) = client
        .request(
            Method::POST,
            "/v1/authorizations",
            Some(body.to_string().as_bytes()),
        )
        .await
        .expect("POST /v1/authorizations");
    let fine = status == 201
        || (status == 409 && error_code(&answer) == "duplicate_policy")
        || (status == 404 && String::from_utf8_lossy(&answer).contains("no such route"));
    assert!(
        fine,
        "granting databases -> {key} failed: {status} {}",
        String::from_utf8_lossy(&answer)
    );
}

/// A name unique to this run, e.g. `db-1a2b3c4d`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads a whole file (test helper).
pub fn read_file(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    bytes
}

/// The CLI's exit status for an API error code (the table in docs/operations.md).
pub fn cli_exit_status(code: &str) -> i32 {
    match code {
        "bad_request" | "too_large" | "secure_import_failed" => 2,
        "not_found" | "import_token_not_found" => 3,
        "unauthenticated"
        | "token_expired"
        | "forbidden"
        | "not_authorized_for_key"
        | "plaintext_import_disabled" => 4,
        "import_token_expired"
        | "import_token_used_up"
        | "conflict"
        | "duplicate_policy"
        | "key_in_use"
        | "database_deleted"
        | "key_suspended"
        | "key_destroyed"
        | "key_pending_destruction" => 5,
        "store_unavailable" | "key_backend_unavailable" | "storage_full" => 6,
        "integrity_error" => 7,
        _ => 1,
    }
}

/// Rewrites one catalog entry (`kind/` + `id`) of a stopped daemon's store (fjall, or its
/// PostgreSQL server under the store matrix) as JSON, the way time passing or another version
/// would have left it. Panics if the entry does not exist.
pub async fn edit_catalog_entry(
    daemon: &Daemon,
    kind: &str,
    id: &[u8],
    edit: impl FnOnce(&mut serde_json::Value) + Send + 'static,
) {
    use envault::store::{codec, CatalogKey, CatalogOp};
    let mut config = envault::config::Config::load(None).expect("default config");
    config.data_dir = daemon.data_dir.clone();
    if let Some(backend) = daemon.env_value("ENVAULT_STORE_BACKEND") {
        config.store.backend = backend.to_string();
    }
    if let Some(url) = daemon.env_value("ENVAULT_STORE_URL") {
        config.store.url = url.to_string();
    }
    let key = codec::key(kind, &[id]).0;
    // The store opens from the data dir, as the daemon opens it (the embedded one in `fjall/`).
    let data_dir = daemon.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        let store = envault::store::open(&config, &data_dir).expect("open the store");
        let (k, v) = store
            .catalog_scan(&key)
            .expect("scan the catalog")
            .into_iter()
            .find(|(k, _)| *k == key)
            .expect("the catalog entry exists");
        let mut value: serde_json::Value = codec::decode(&k, &v).expect("decode the entry");
        edit(&mut value);
        store
            .catalog_apply(vec![CatalogOp::Put(CatalogKey(k), codec::encode(&value))])
            .expect("apply");
        store.flush().expect("flush");
    })
    .await
    .expect("edit the catalog");
}
