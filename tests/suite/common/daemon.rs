//! The real `envault serve` on a socket in a temp dir: start, restart, stop, kill, and the
//! clients, CLI runs and raw requests that reach it.

use super::*;

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
        self.send_sigterm();
        self.wait_graceful_exit().await;
    }

    /// Sends SIGTERM and returns at once (the daemon drains its connections, then exits).
    pub fn send_sigterm(&self) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the exit after a SIGTERM; asserts exit status 0 and that the socket file is
    /// gone.
    pub async fn wait_graceful_exit(&mut self) {
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
