//! Test harness: runs the real `envault serve` binary on a socket in a temp dir and talks to it
//! through the typed client, raw HTTP/1.1 bytes, or the `envault` CLI.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use envault::client::{Client, ClientError, Method};

mod answers;
pub mod cli_output;
mod daemon;
mod files;
mod rng;
mod wait;

pub use answers::{assert_api_error, assert_error_answer, error_code, parse_response};
pub use daemon::Daemon;
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
