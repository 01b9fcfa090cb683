//! Damage to each kind of file in the data dir, done while the daemon is stopped, through the
//! real daemon: the activity log (lines removed, a chain recomputed without the key, a line
//! edited), the keystore, the master key, the store's files, a backup and the operator token
//! file. Each must end in a clear refusal naming the file, or an error on the damaged object
//! only: never garbage, never a daemon that starts and then dies.

use crate::common;
use crate::common::files_under;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use envault::api::AuditEvent;
use serde_json::Value;

fn refused(daemon: &Daemon, what: &str) -> String {
    let output: Output = run_with_input(daemon.serve_command(), &[], STARTUP_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "{what}: the daemon started; stderr:\n{stderr}"
    );
    stderr
}

/// `envault audit verify --data-dir` on the stopped daemon's data dir: (exit 0?, JSON report).
fn verify_offline(daemon: &Daemon) -> (bool, Value) {
    let mut command = daemon.cli_command();
    let data_dir = daemon.data_dir.display().to_string();
    command.args(["--json", "audit", "verify", "--data-dir", &data_dir]);
    let output = run_with_input(command, &[], STARTUP_TIMEOUT);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "audit verify printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}

async fn key_and_db(daemon: &Daemon) -> (String, String) {
    let client = daemon.client();
    let key = unique("k");
    client.create_key(&key, None, None).await.unwrap();
    allow_databases(&client, &key).await;
    let db = unique("db");
    client.create_database(&db, Some(&key), None).await.unwrap();
    (key, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_log_truncation_and_rewrites_are_detected_with_the_daemon_stopped() {
    let mut daemon = Daemon::start().await;
    let (_, _) = key_and_db(&daemon).await;
    let doomed = unique("doomed");
    let client = daemon.client();
    client.create_key(&doomed, None, None).await.unwrap();
    client
        .request(
            envault::client::Method::DELETE,
            &format!("/v1/keys/{doomed}"),
            None,
        )
        .await
        .unwrap();
    daemon.stop_graceful().await;
    let (ok, report) = verify_offline(&daemon);
    assert!(ok, "{report}");
    let events = report["events"].as_u64().unwrap();

    let log = daemon.data_dir.join("audit.log");
    let whole = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = whole.lines().collect();
    assert!(
        lines.last().unwrap().contains("kms.secrets.delete"),
        "the last event is the delete: {}",
        lines.last().unwrap()
    );

    // Cut the last two lines (the delete among them): the chain alone is still valid.
    std::fs::write(&log, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    let (ok, report) = verify_offline(&daemon);
    assert!(!ok, "{report}");
    assert!(
        report["problem"]
            .as_str()
            .unwrap()
            .contains(&format!("audit.head records {events}")),
        "{report}"
    );
    let stderr = refused(&daemon, "truncated activity log");
    assert!(
        stderr.contains(&log.display().to_string()) && stderr.contains("lines were removed"),
        "{stderr}"
    );

    // Edit one line and recompute the whole chain the unkeyed way (what a script can do),
    // serializing events as the daemon does.
    let mut prev = "0".repeat(64);
    let mut forged = vec![r#"{"magic":"envault-audit","version":1}"#.to_string()];
    for line in &lines[1..] {
        let mut event: AuditEvent = serde_json::from_str(line).unwrap();
        event.chain = None;
        if event.action == "kms.secrets.delete" {
            event.outcome = "failure".into();
        }
        event.prev = prev.clone();
        event.hash = String::new();
        let unhashed = serde_json::to_string(&event).unwrap();
        event.hash = sha256_hex(&[prev.as_bytes(), unhashed.as_bytes()].concat());
        prev = event.hash.clone();
        forged.push(serde_json::to_string(&event).unwrap());
    }
    std::fs::write(&log, forged.join("\n") + "\n").unwrap();
    let (ok, report) = verify_offline(&daemon);
    assert!(!ok, "a recomputed unkeyed chain verifies: {report}");
    assert!(
        report["problem"].as_str().unwrap().contains("audit.head"),
        "{report}"
    );
    let stderr = refused(&daemon, "activity log rewritten without the key");
    assert!(stderr.contains("the log was replaced"), "{stderr}");
    // The same rewrite keeping the version-2 header fails at its first line.
    forged[0] = lines[0].to_string();
    std::fs::write(&log, forged.join("\n") + "\n").unwrap();
    let (ok, report) = verify_offline(&daemon);
    assert!(!ok);
    assert_eq!(report["first_broken_line"], 2, "{report}");

    // The original back: verifies, starts, and new events are keyed.
    std::fs::write(&log, &whole).unwrap();
    assert!(verify_offline(&daemon).0);
    daemon.restart().await;
    daemon
        .client()
        .create_key(&unique("after"), None, None)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text
        .lines()
        .last()
        .unwrap()
        .contains(r#""chain":"hmac-sha256""#));
}

/// Hex SHA-256, as a script would compute it (sha2 is a dependency of the crate under test).
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_activity_log_line_is_reported_and_the_head_file_is_checked() {
    let mut daemon = Daemon::start().await;
    key_and_db(&daemon).await;
    daemon.stop_graceful().await;
    let log = daemon.data_dir.join("audit.log");
    let whole = std::fs::read_to_string(&log).unwrap();
    // One event edited in place: the daemon starts (appending after the last good event) and
    // every verify names the line.
    let edited = whole.replacen("\"success\"", "\"failure\"", 1);
    let line = edited
        .lines()
        .position(|l| l.contains("\"failure\""))
        .unwrap()
        + 1;
    std::fs::write(&log, &edited).unwrap();
    let (ok, report) = verify_offline(&daemon);
    assert!(!ok);
    assert_eq!(report["first_broken_line"], line as u64, "{report}");
    daemon.restart().await;
    let (status, body) = daemon.raw_auth("GET", "/v1/audit/verify", b"").await;
    assert_eq!(status, 200);
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["first_broken_line"], line as u64, "{report}");
    daemon.stop_graceful().await;
    std::fs::write(&log, &whole).unwrap();

    // The head file damaged, forged, or removed: refused, naming it.
    let head = daemon.data_dir.join("audit.head");
    let original = std::fs::read(&head).unwrap();
    let mut damaged = original.clone();
    damaged[12] ^= 0x01;
    std::fs::write(&head, &damaged).unwrap();
    let stderr = refused(&daemon, "damaged audit.head");
    assert!(stderr.contains(&head.display().to_string()), "{stderr}");
    std::fs::remove_file(&head).unwrap();
    let stderr = refused(&daemon, "audit.head removed");
    assert!(stderr.contains("audit.head is missing"), "{stderr}");
    // The log removed while its head file stays: refused as well.
    std::fs::write(&head, &original).unwrap();
    std::fs::remove_file(&log).unwrap();
    let stderr = refused(&daemon, "audit.log removed");
    assert!(stderr.contains("the log is missing"), "{stderr}");
    std::fs::write(&log, &whole).unwrap();
    daemon.restart().await;
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_keystore_or_master_key_is_refused_naming_the_files() {
    let mut daemon = Daemon::start().await;
    key_and_db(&daemon).await;
    daemon.stop_graceful().await;
    let keystore = daemon.data_dir.join("keystore.bin");
    let master = daemon.data_dir.join("master.key");
    for (file, at) in [(&keystore, 40), (&master, 5)] {
        let original = std::fs::read(file).unwrap();
        flip(file, at);
        let stderr = refused(&daemon, &format!("{} damaged", file.display()));
        assert!(
            stderr.contains(&keystore.display().to_string())
                && stderr.contains(&master.display().to_string()),
            "the refusal names both files: {stderr}"
        );
        std::fs::write(file, original).unwrap();
    }
    // A master key of the wrong length names the master key file.
    let original = std::fs::read(&master).unwrap();
    std::fs::write(&master, &original[..20]).unwrap();
    let stderr = refused(&daemon, "short master key");
    assert!(stderr.contains(&master.display().to_string()), "{stderr}");
    std::fs::write(&master, original).unwrap();

    // The store deleted beside a keystore: refused (starting would destroy the keys as
    // unknown to the catalog), and the keystore is untouched.
    let store = daemon.data_dir.join("fjall");
    if store.is_dir() {
        let keystore_bytes = std::fs::read(&keystore).unwrap();
        let aside = daemon.dir().join("fjall-aside");
        std::fs::rename(&store, &aside).unwrap();
        let stderr = refused(&daemon, "store removed");
        assert!(
            stderr.contains(&keystore.display().to_string()) && stderr.contains("store"),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&keystore).unwrap(), keystore_bytes);
        std::fs::remove_dir_all(&store).unwrap();
        std::fs::rename(&aside, &store).unwrap();
    }
    daemon.restart().await;
}

/// Makes `dir` hold exactly `files` (path, bytes) again, with private modes.
fn restore_dir(dir: &Path, files: &[(PathBuf, Vec<u8>)]) {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::remove_dir_all(dir).unwrap();
    for (path, bytes) in files {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path.parent().unwrap())
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_store_files_fail_only_the_damaged_records_or_are_refused() {
    let mut daemon = Daemon::start().await;
    let (_, db) = key_and_db(&daemon).await;
    let client = daemon.client();
    let values: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let size = if i % 4 == 0 { 64 * 1024 } else { 100 };
            (format!("r{i}"), vec![b'a' + (i % 26) as u8; size])
        })
        .collect();
    for (key, value) in &values {
        client.put_record(&db, key, value).await.unwrap();
    }
    daemon.stop_graceful().await;
    let files = files_under(&daemon.data_dir.join("fjall"));
    if files.is_empty() {
        eprintln!("the store keeps no files in the data dir (shared store); nothing to damage");
        return;
    }
    let originals: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).unwrap()))
        .collect();
    // Each file, one at a time, damaged in its second half (where data rather than headers
    // tends to be).
    for (file, original) in &originals {
        if original.is_empty() {
            continue;
        }
        flip(file, original.len() * 3 / 4);
        let what = file.display().to_string();
        match try_start(&daemon).await {
            Err(stderr) => assert!(
                stderr.contains(&daemon.data_dir.display().to_string()),
                "{what}: the refusal names no file of the data dir: {stderr}"
            ),
            Ok(mut child) => {
                let client = daemon.client();
                let mut intact = 0;
                for (key, value) in &values {
                    match client.get_record(&db, key).await {
                        Ok(got) => {
                            assert!(&got == value, "{what}: {key} read back altered");
                            intact += 1;
                        }
                        Err(envault::client::ClientError::Api { status, code, .. }) => {
                            assert_eq!(
                                (status, code.as_str()),
                                (500, "integrity_error"),
                                "{what}: {key}"
                            )
                        }
                        Err(other) => panic!("{what}: {key}: {other}"),
                    }
                }
                // One flipped byte damages one object, not the database.
                assert!(
                    intact >= values.len() / 2,
                    "{what}: only {intact} records read"
                );
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "{what}: the daemon died"
                );
                stop(&mut child);
            }
        }
        // The engine may have rotated or compacted files while it ran: put the whole store
        // back as it was, so that no file it replaced comes back beside its successor.
        restore_dir(&daemon.data_dir.join("fjall"), &originals);
    }
    daemon.restart().await;
    for (key, value) in &values {
        assert_eq!(&daemon.client().get_record(&db, key).await.unwrap(), value);
    }
}

/// Starts `envault serve` for this (stopped) daemon: `Ok(child)` once it answers
/// `/v1/health`, `Err(stderr)` if it exits first.
async fn try_start(daemon: &Daemon) -> Result<std::process::Child, String> {
    let stderr_path = daemon.dir().join("try-start.stderr");
    let mut child = daemon
        .serve_command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let probe = envault::client::Client::new(&daemon.socket, None);
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return Err(std::fs::read_to_string(&stderr_path).unwrap_or_default());
        }
        if probe.health().await.is_ok() {
            return Ok(child);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither started nor refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn stop(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the daemon exited with {status} after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_fails_alone_and_a_damaged_token_file_only_loses_its_token() {
    let mut daemon = Daemon::start().await;
    let (_, db) = key_and_db(&daemon).await;
    let client = daemon.client();
    client.put_record(&db, "r", b"value").await.unwrap();
    let first = client.create_backup(&db).await.unwrap();
    let second = client.create_backup(&db).await.unwrap();
    let file = |backup: &Value| PathBuf::from(backup["path"].as_str().expect("backup path"));
    flip(&file(&first), 300);
    let restore = |backup: &Value, into: &str| {
        let body = serde_json::json!({ "into": into }).to_string();
        let path = format!("/v1/backups/{}/restore", backup["id"].as_str().unwrap());
        (path, body)
    };
    let (path, body) = restore(&first, &unique("into"));
    let answer = daemon.raw_auth("POST", &path, body.as_bytes()).await;
    assert_error_answer(&answer, 500, "integrity_error");
    let (path, body) = restore(&second, &unique("into"));
    let (status, answer) = daemon.raw_auth("POST", &path, body.as_bytes()).await;
    assert!(
        (200..300).contains(&status),
        "the intact backup restores: {status} {}",
        String::from_utf8_lossy(&answer)
    );

    // The operator token file altered: the daemon starts as before, the altered secret is
    // refused, the real one still works.
    daemon.stop_graceful().await;
    let token_file = daemon.data_dir.join("operator.token");
    let real = daemon.token.clone();
    let mut altered: Vec<u8> = real.clone().into_bytes();
    altered[10] = if altered[10] == b'x' { b'y' } else { b'x' };
    std::fs::write(&token_file, [&altered[..], b"\n"].concat()).unwrap();
    daemon.restart().await;
    assert_ne!(daemon.token, real);
    let altered = daemon.client().list_keys().await;
    assert_api_error(altered, 401, "unauthenticated");
    daemon
        .client_with_token(Some(&real))
        .list_keys()
        .await
        .unwrap();
}
