//! A full disk under the real daemon: its data dir on a 24 MiB filesystem (a tmpfs; without
//! mount rights a loop-mounted ext4, and as a last resort a filler file on the host filesystem),
//! records written until writes fail.
//!
//! - `full_disk_loses_nothing_acknowledged`, with the free-space floor off
//!   (`limits.min_free_space = 0`), so the store itself meets ENOSPC, as it would when another
//!   process fills the disk faster than the floor: writes that fail answer 5xx JSON `storage_error`,
//!   the daemon stays up and answers `/v1/health`; once space is freed and the daemon restarted
//!   (SIGKILL), every acknowledged record is there exactly, the listing matches, acknowledged
//!   keys exist, writes work, and the activity log's chain is intact.
//! - `full_disk_fails_fast_keeps_serving_and_recovers`, with a 4 MiB floor: writes are refused
//!   507 `storage_full` before they reach the store, no write hangs, every acknowledged record
//!   reads back while the disk is full, and writes succeed again once space is freed, without a
//!   restart. (Without the floor sled 0.34 does not recover from ENOSPC in place: its flush can
//!   block forever, and the store stays failed until a restart.)
//!
//! Seeded like the crash tests (`ENVAULT_CRASH_SEED`). The small filesystem is unmounted in a
//! drop guard.

mod scenarios;

use crate::common;
use crate::common::Rng;
use crate::crash_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Daemon;
use crash_support::{
    customer_key, database, describe, json, read_state, seed_from_env, RecordModel, SeedReport,
    SmallFs, SmallFsKind,
};
use envault::client::{encode_segment, Client, Method};

/// Size of the small filesystem, and what it grows to.
const SMALL_MIB: u64 = 24;
const GROWN_MIB: u64 = 64;
/// Concurrent writers while filling.
const WRITERS: usize = 4;
/// Failed writes to see before stopping the fill.
const FAILURES_WANTED: usize = 12;
/// If this much was acknowledged without a single failure, the filesystem is not small.
const NEVER_FULL: usize = (4 * SMALL_MIB as usize) << 20;
/// How long one write may take before the daemon counts as hung.
const WRITE_LIMIT: Duration = Duration::from_secs(15);
/// The same, where a hang is tolerated (sled meeting ENOSPC without the floor; see the module doc).
const TOLERATED_WRITE_LIMIT: Duration = Duration::from_secs(4);
const DB: &str = "full-db";

fn record_path(db: &str, key: &str) -> String {
    format!(
        "/v1/databases/{}/records/{}",
        encode_segment(db),
        encode_segment(key)
    )
}

/// What one write came to.
#[derive(Debug)]
enum Put {
    Acked,
    /// 5xx with this JSON error code.
    Failed(u16, String),
    /// No answer within the limit (only when hangs are tolerated).
    Hung,
}

/// Whether a write without an answer fails the test at once (with a report) or is noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hangs {
    Fail,
    Tolerate,
}

/// Enough to describe a hang from any task: the daemon's socket, token, pid and log.
#[derive(Clone)]
struct HangProbe {
    socket: PathBuf,
    token: String,
    pid: u32,
    log: PathBuf,
}

impl HangProbe {
    fn new(daemon: &Daemon) -> Self {
        HangProbe {
            socket: daemon.socket.clone(),
            token: daemon.token.clone(),
            pid: daemon.pid(),
            log: daemon.dir().join("daemon.log"),
        }
    }

    /// Which other requests still answer, the log's end and the daemon's thread stacks.
    async fn report(&self, what: &str) -> String {
        let fresh = Client::new(&self.socket, Some(self.token.clone()));
        let mut seen = Vec::new();
        for (name, method, path) in [
            ("GET /v1/health", Method::GET, "/v1/health".to_string()),
            ("GET a record", Method::GET, record_path(DB, "fill-00000")),
            ("PUT another record", Method::PUT, record_path(DB, "probe")),
        ] {
            let body: Option<&[u8]> = (method == Method::PUT).then_some(b"\xffprobe".as_slice());
            let answer =
                tokio::time::timeout(Duration::from_secs(3), fresh.request(method, &path, body))
                    .await;
            seen.push(match answer {
                Ok(Ok((status, _))) => format!("{name}: {status}"),
                Ok(Err(e)) => format!("{name}: error {e}"),
                Err(_) => format!("{name}: no answer within 3 s"),
            });
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "{what}: no answer within {WRITE_LIMIT:?}: the daemon hangs. Meanwhile {}.\n\
             Daemon log (end):\n{}\nDaemon threads:\n{}",
            seen.join("; "),
            lines[lines.len().saturating_sub(6)..].join("\n"),
            crash_support::stacks_of(self.pid)
        )
    }
}

/// Sends `method path` (with `value`, never valid JSON, as octet stream); panics on anything
/// but 204, a 5xx JSON error or (when tolerated) a hang; on a lost connection (the daemon died);
/// and, unless tolerated, on a hang, with what still answers and the daemon's thread stacks.
async fn write(
    probe: &HangProbe,
    client: &Client,
    method: Method,
    path: &str,
    value: Option<&[u8]>,
    hangs: Hangs,
) -> Put {
    let limit = match hangs {
        Hangs::Fail => WRITE_LIMIT,
        Hangs::Tolerate => TOLERATED_WRITE_LIMIT,
    };
    let answer = tokio::time::timeout(limit, client.request(method.clone(), path, value)).await;
    let (status, body) = match answer {
        Ok(result) => result.unwrap_or_else(|e| {
            panic!("{method} {path}: no answer, the daemon died or hung up: {e}")
        }),
        Err(_) if hangs == Hangs::Tolerate => return Put::Hung,
        Err(_) => panic!("{}", probe.report(&format!("{method} {path}")).await),
    };
    match status {
        204 => Put::Acked,
        500..=599 => Put::Failed(status, common::error_code(&body)),
        other => panic!(
            "{method} {path}: unexpected {other} {:?}",
            String::from_utf8_lossy(&body)
        ),
    }
}

async fn put(probe: &HangProbe, client: &Client, key: &str, value: &[u8], hangs: Hangs) -> Put {
    let path = record_path(DB, key);
    write(probe, client, Method::PUT, &path, Some(value), hangs).await
}

/// The last lines of the daemon's log.
fn log_tail(daemon: &Daemon) -> String {
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

/// A value that is not JSON (leading 0xFF), of 1–64 KiB, tagged with its key.
fn value_for(key: &str, rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0..=5 => rng.range(1024, 16 * 1024),
        _ => rng.range(16 * 1024, 64 * 1024),
    } as usize;
    let mut value = vec![0xFF];
    value.extend_from_slice(key.as_bytes());
    value.push(b'|');
    value.extend(rng.bytes(len));
    value
}

/// Checks every modelled record; returns the violations. With `settle`, what is read becomes
/// the model's state (right after a restart, when what is read is what is on disk); without,
/// the model is left alone (a live daemon may show an unacknowledged write that is not durable).
async fn check(
    client: &Client,
    model: &mut BTreeMap<String, RecordModel>,
    settle: bool,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (key, entry) in model.iter_mut() {
        match read_state(client, DB, key).await {
            Ok(state) if entry.allows(&state) => {
                if settle {
                    entry.observed(state);
                }
            }
            Ok(state) => bad.push(format!(
                "{DB}/{key} reads {} but the last acknowledged state is {}",
                describe(&state),
                describe(&entry.acked)
            )),
            Err(e) => bad.push(format!(
                "GET {DB}/{key} (acknowledged: {}{}): {e}",
                describe(&entry.acked),
                if entry.certain() {
                    ""
                } else {
                    ", a later write unanswered"
                }
            )),
        }
    }
    bad
}

/// At most `n` of `items`, with the total.
fn summary(items: &[String], n: usize) -> String {
    let shown: Vec<&str> = items.iter().take(n).map(String::as_str).collect();
    format!("{} in all:\n    {}", items.len(), shown.join("\n    "))
}

/// A daemon whose data dir is on a small filesystem that writes have filled.
struct Filled {
    // Field order is drop order: the daemon stops before the filesystem is unmounted.
    daemon: Daemon,
    small: SmallFs,
    model: BTreeMap<String, RecordModel>,
    /// (status, code) of every failed write.
    failures: Vec<(u16, String)>,
    /// Writes that got no answer (only when tolerated).
    hung: usize,
    acked_bytes: usize,
    key_while_full: bool,
}

impl Filled {
    fn acked(&self) -> usize {
        self.model.values().filter(|e| e.acked.is_some()).count()
    }

    fn kind(&self) -> &'static str {
        match &self.small.kind {
            SmallFsKind::Tmpfs => "tmpfs",
            SmallFsKind::Loop { .. } => "loop-mounted ext4",
            SmallFsKind::Filler { .. } => "filler file",
        }
    }

    /// Stops the daemon and unmounts (asserting the unmount works).
    async fn finish(mut self) {
        self.daemon.kill9().await;
        self.small
            .unmount()
            .unwrap_or_else(|e| panic!("unmount the small filesystem: {e}"));
    }
}

/// The free-space floor of a run, and the error code a write refused for want of space gets.
#[derive(Debug, Clone, Copy)]
enum Floor {
    /// `min_free_space = 0`: the store meets ENOSPC itself (`storage_error`).
    Off,
    /// `min_free_space = 4MiB`: writes are refused before the store (`storage_full`).
    FourMiB,
}

impl Floor {
    fn setting(self) -> &'static str {
        match self {
            Floor::Off => "0",
            Floor::FourMiB => "4MiB",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Floor::Off => "storage_error",
            Floor::FourMiB => "storage_full",
        }
    }
}

/// Starts a daemon on a small filesystem and writes records (4 at a time) until a dozen writes
/// have failed (or, when tolerated, one hung). Asserts on the way: no lost connection, every
/// answered failure a 5xx JSON error with the floor's code, the disk does fill, the daemon
/// stays up.
async fn fill_until_full(rng: &mut Rng, hangs: Hangs, floor: Floor) -> Filled {
    // Start once to get the harness's directories, then put the data dir on the small
    // filesystem: the daemon starts afresh there (the first start's files are hidden under the
    // mount, or kept as they are with a filler file).
    let mut daemon = Daemon::start_with_env(&[("ENVAULT_MIN_FREE_SPACE", floor.setting())]).await;
    daemon.stop_graceful().await;
    let small = SmallFs::mount(&daemon.data_dir, SMALL_MIB, daemon.dir());
    daemon.restart().await;
    let client = daemon.client();
    let (key, _) = customer_key(&client, "full-key").await;
    database(&client, DB, Some(&key)).await;
    let probe = HangProbe::new(&daemon);
    let mut model: BTreeMap<String, RecordModel> = BTreeMap::new();
    let mut n = 0usize;
    let mut acked_bytes = 0usize;
    let mut failures: Vec<(u16, String)> = Vec::new();
    let mut hung = 0;
    while failures.len() < FAILURES_WANTED && hung == 0 {
        assert!(
            acked_bytes < NEVER_FULL,
            "{acked_bytes} bytes acknowledged on a {SMALL_MIB} MiB filesystem and no write failed"
        );
        let batch: Vec<(String, Vec<u8>)> = (0..WRITERS)
            .map(|_| {
                let key = format!("fill-{n:05}");
                n += 1;
                let value = value_for(&key, rng);
                (key, value)
            })
            .collect();
        let tasks: Vec<_> = batch
            .iter()
            .cloned()
            .map(|(key, value)| {
                let client = daemon.client();
                let probe = probe.clone();
                tokio::spawn(async move { put(&probe, &client, &key, &value, hangs).await })
            })
            .collect();
        for ((key, value), task) in batch.into_iter().zip(tasks) {
            let entry = model.entry(key).or_default();
            match task.await.expect("writer task") {
                Put::Acked => {
                    acked_bytes += value.len();
                    entry.ack(Some(value));
                }
                Put::Failed(status, code) => {
                    entry.unknown(Some(value));
                    failures.push((status, code));
                }
                Put::Hung => {
                    entry.unknown(Some(value));
                    hung += 1;
                }
            }
        }
    }
    for (status, code) in &failures {
        assert_eq!(
            code,
            floor.code(),
            "a write on a full disk failed with {status} {code}, not {}",
            floor.code()
        );
    }
    // A key creation on the full disk: done, or refused with a 5xx JSON error.
    let creation = client.request(
        Method::POST,
        "/v1/keys",
        Some(br#"{"name":"while-full"}"#.as_slice()),
    );
    let limit = match hangs {
        Hangs::Fail => WRITE_LIMIT,
        Hangs::Tolerate => TOLERATED_WRITE_LIMIT,
    };
    let key_while_full = match tokio::time::timeout(limit, creation).await {
        Ok(Ok((201, _))) => true,
        Ok(Ok((status, body))) if status >= 500 => {
            let code = common::error_code(&body);
            assert!(
                code == "storage_error" || code == "keystore_error",
                "creating a key on a full disk: {status} {code}"
            );
            false
        }
        Ok(Ok((status, body))) => panic!(
            "creating a key on a full disk: {status} {}",
            String::from_utf8_lossy(&body)
        ),
        Ok(Err(e)) => panic!("creating a key on a full disk: no answer, the daemon died: {e}"),
        Err(_) if hangs == Hangs::Tolerate => false,
        Err(_) => panic!("{}", probe.report("POST /v1/keys on a full disk").await),
    };
    // The daemon is up.
    assert!(
        daemon.is_running(),
        "the daemon exited on a full disk:\n{}",
        log_tail(&daemon)
    );
    let health = tokio::time::timeout(Duration::from_secs(5), client.health())
        .await
        .expect("/v1/health answers on a full disk")
        .expect("/v1/health on a full disk");
    assert_eq!(health.status, "ok");
    Filled {
        daemon,
        small,
        model,
        failures,
        hung,
        acked_bytes,
        key_while_full,
    }
}

/// Kills and restarts the daemon (acknowledged means durable, so SIGKILL is fair) and returns
/// the violations: acknowledged records missing or wrong, listing, keys, new writes, audit.
async fn restart_and_check(filled: &mut Filled, rng: &mut Rng) -> Vec<String> {
    let mut violations = Vec::new();
    filled.daemon.kill9().await;
    filled.daemon.restart().await;
    let client = filled.daemon.client();
    let bad = check(&client, &mut filled.model, true).await;
    if !bad.is_empty() {
        violations.push(format!(
            "after the restart, acknowledged records are missing or wrong: {}",
            summary(&bad, 10)
        ));
    }
    let listed = crash_support::record_keys(&client, DB).await;
    let present: BTreeSet<String> = filled
        .model
        .iter()
        .filter(|(_, e)| e.acked.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    if listed != present {
        violations.push(format!(
            "after the restart the listing has {} records, the reads {}",
            listed.len(),
            present.len()
        ));
    }
    let keys = crash_support::key_names(&client).await;
    if !keys.contains("full-key") || (filled.key_while_full && !keys.contains("while-full")) {
        violations.push(format!(
            "acknowledged keys missing after the restart: {keys:?}"
        ));
    }
    let probe = HangProbe::new(&filled.daemon);
    for i in 0..20 {
        let key = format!("restarted-{i:03}");
        let value = value_for(&key, rng);
        match put(&probe, &client, &key, &value, Hangs::Fail).await {
            Put::Acked => filled.model.entry(key).or_default().ack(Some(value)),
            other => {
                violations.push(format!(
                    "write {key} after the restart (space freed): {other:?}"
                ));
                break;
            }
        }
    }
    let (status, report) = json(&client, Method::GET, "/v1/audit/verify", None).await;
    if status != 200 || report["ok"] != true {
        violations.push(format!("activity log after the restart: {status} {report}"));
    }
    violations
}
