//! Hardening of the daemon against a hostile or careless local environment, through the real
//! daemon: what is at the socket path, the data dir's permissions, a client that half-closes
//! its connection, a missing keystore or master key, weak imported keys.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

/// Runs `envault serve` on the (stopped) daemon's dir and data dir and expects it to refuse:
/// exits non-zero within the start-up timeout. Returns its stderr.
fn refused(daemon: &Daemon, what: &str) -> String {
    let output: Output = run_with_input(daemon.serve_command(), &[], STARTUP_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "{what}: the daemon started (or exited 0); stderr:\n{stderr}"
    );
    stderr
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Every directory and file under `root` (symlinks not followed).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                pending.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// A key, a database on it with a few records, and a backup.
async fn populate(daemon: &Daemon) -> (String, String) {
    let client = daemon.client();
    let key = unique("k");
    client.create_key(&key, None, None).await.unwrap();
    allow_databases(&client, &key).await;
    let db = unique("db");
    client.create_database(&db, Some(&key), None).await.unwrap();
    for i in 0..5 {
        client
            .put_record(&db, &format!("r{i}"), format!("value {i}").as_bytes())
            .await
            .unwrap();
    }
    client.create_backup(&db).await.unwrap();
    (key, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_stale_socket_is_replaced() {
    let mut daemon = Daemon::start().await;
    // A stale socket (the daemon was killed) is replaced.
    daemon.kill9().await;
    assert!(daemon.socket.exists(), "kill -9 leaves the socket behind");
    daemon.restart().await;
    daemon.stop_graceful().await;

    let precious = b"someone's notes, not a socket\n";
    std::fs::write(&daemon.socket, precious).unwrap();
    let stderr = refused(&daemon, "regular file at the socket path");
    assert!(
        stderr.contains(&daemon.socket.display().to_string()) && stderr.contains("not a socket"),
        "the refusal names the path: {stderr}"
    );
    assert_eq!(std::fs::read(&daemon.socket).unwrap(), precious);

    std::fs::remove_file(&daemon.socket).unwrap();
    std::fs::create_dir(&daemon.socket).unwrap();
    let stderr = refused(&daemon, "directory at the socket path");
    assert!(stderr.contains("a directory"), "{stderr}");
    assert!(daemon.socket.is_dir());
    std::fs::remove_dir(&daemon.socket).unwrap();

    let target = daemon.dir().join("target-file");
    std::fs::write(&target, precious).unwrap();
    std::os::unix::fs::symlink(&target, &daemon.socket).unwrap();
    let stderr = refused(&daemon, "symlink at the socket path");
    assert!(stderr.contains("a symbolic link"), "{stderr}");
    assert_eq!(std::fs::read(&target).unwrap(), precious);
    std::fs::remove_file(&daemon.socket).unwrap();

    daemon.restart().await;
    daemon.client().list_keys().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_private_and_open_directories_are_refused() {
    let mut daemon = Daemon::start().await;
    populate(&daemon).await;
    daemon.stop_graceful().await;
    // Everything the daemon created: directories 0700, files 0600.
    for path in walk(&daemon.data_dir) {
        let mode = mode(&path);
        let is_dir = std::fs::symlink_metadata(&path).unwrap().is_dir();
        let expected = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, expected, "{} has mode {mode:04o}", path.display());
    }

    // The data dir itself, then a subdirectory, open to others: refused, naming the path and
    // the chmod that fixes it; nothing else changed.
    let store = daemon.data_dir.join("fjall");
    let mut open_dirs = vec![
        (daemon.data_dir.clone(), 0o777),
        (daemon.data_dir.clone(), 0o750),
    ];
    if store.is_dir() {
        open_dirs.push((store.clone(), 0o755));
    }
    let backups = daemon.data_dir.join("backups");
    open_dirs.push((backups, 0o701));
    for (dir, open) in open_dirs {
        chmod(&dir, open);
        let stderr = refused(&daemon, &format!("{} at {open:04o}", dir.display()));
        let fix = format!("chmod 700 {}", dir.display());
        assert!(stderr.contains(&fix), "the refusal names `{fix}`: {stderr}");
        assert_eq!(mode(&dir), open, "the daemon changed the mode itself");
        chmod(&dir, 0o700);
    }

    // A file left readable by an earlier version is tightened, with the daemon running.
    let log = daemon.data_dir.join("audit.log");
    chmod(&log, 0o644);
    daemon.restart().await;
    assert_eq!(mode(&log), 0o600);
    daemon.client().list_keys().await.unwrap();
    daemon.stop_graceful().await;

    // A master key anyone can read is refused.
    let master = daemon.data_dir.join("master.key");
    chmod(&master, 0o640);
    let stderr = refused(&daemon, "master key 0640");
    assert!(
        stderr.contains(&format!("chmod 600 {}", master.display())),
        "{stderr}"
    );
    chmod(&master, 0o600);
    daemon.restart().await;
}

/// One request, then `shutdown(Write)`: the answer must still come.
async fn half_closed(socket: &Path, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(STARTUP_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the daemon answers a half-closed connection")
        .unwrap();
    parse_response(&answer).unwrap_or_else(|| {
        panic!(
            "no answer to a half-closed request: {:?}",
            String::from_utf8_lossy(&answer)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_connections_get_their_answer() {
    let daemon = Daemon::start().await;
    let (_, db) = populate(&daemon).await;
    let auth = format!("Authorization: Bearer {}\r\n", daemon.token);
    for i in 0..50 {
        let value = format!("half-closed value {i}");
        // Keep-alive (no `Connection: close`): the EOF alone tells the daemon no more comes.
        let put = format!(
            "PUT /v1/databases/{db}/records/h{i} HTTP/1.1\r\nHost: x\r\n{auth}\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n{value}",
            value.len()
        );
        let (status, body) = half_closed(&daemon.socket, put.as_bytes()).await;
        assert!(
            (200..300).contains(&status),
            "PUT {i}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let get = format!("GET /v1/databases/{db}/records/h{i} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
        let (status, body) = half_closed(&daemon.socket, get.as_bytes()).await;
        assert_eq!((status, body), (200, value.into_bytes()), "GET {i}");
    }
    let health = half_closed(
        &daemon.socket,
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(health.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_keystore_or_master_key_is_refused_before_anything_is_created() {
    let mut daemon = Daemon::start().await;
    let (key, db) = populate(&daemon).await;
    daemon.stop_graceful().await;
    let keystore = daemon.data_dir.join("keystore.bin");
    let master = daemon.data_dir.join("master.key");
    let aside = daemon.dir().join("aside");
    std::fs::create_dir(&aside).unwrap();

    // The keystore moved away: refused, naming it; no new keystore appears.
    std::fs::rename(&keystore, aside.join("keystore.bin")).unwrap();
    let stderr = refused(&daemon, "keystore moved away");
    assert!(
        stderr.contains(&keystore.display().to_string()) && stderr.contains("missing"),
        "{stderr}"
    );
    assert!(!keystore.exists(), "a new keystore was created");

    // Both moved away: refused on the keystore, and no new master key is written.
    std::fs::rename(&master, aside.join("master.key")).unwrap();
    let stderr = refused(&daemon, "keystore and master key moved away");
    assert!(stderr.contains(&keystore.display().to_string()), "{stderr}");
    assert!(!master.exists(), "a new master key was created");

    // The keystore back, its master key still away: refused, naming the master key file.
    std::fs::rename(aside.join("keystore.bin"), &keystore).unwrap();
    let before = walk(&daemon.data_dir);
    let stderr = refused(&daemon, "master key moved away");
    assert!(
        stderr.contains(&master.display().to_string()) && stderr.contains("missing"),
        "{stderr}"
    );
    assert!(!master.exists(), "a new master key was created");
    assert_eq!(walk(&daemon.data_dir), before, "the refusal created files");

    // An older keystore that lacks a key the catalog names: refused, naming the key.
    std::fs::rename(aside.join("master.key"), &master).unwrap();
    let old_keystore = std::fs::read(&keystore).unwrap();
    daemon.restart().await;
    let newer = unique("newer");
    daemon
        .client()
        .create_key(&newer, None, None)
        .await
        .unwrap();
    daemon.stop_graceful().await;
    let current = std::fs::read(&keystore).unwrap();
    std::fs::write(&keystore, &old_keystore).unwrap();
    let stderr = refused(&daemon, "older keystore");
    assert!(
        stderr.contains(&newer) && stderr.contains("lacks"),
        "{stderr}"
    );

    // Everything back: the daemon starts and reads the records.
    std::fs::write(&keystore, current).unwrap();
    daemon.restart().await;
    let client = daemon.client();
    assert_eq!(client.get_record(&db, "r3").await.unwrap(), b"value 3");
    assert_eq!(client.get_key(&key).await.unwrap().state, "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_imported_keys_are_refused() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    for byte in [0x00u8, 0xff, 0x41] {
        let name = unique("weak");
        let result = client.create_key(&name, Some(&[byte; 32]), None).await;
        assert_api_error(result, 400, "bad_request");
        assert_api_error(client.get_key(&name).await, 404, "not_found");
    }
    // Two distinct byte values are not refused by this rule.
    let mut material = [0x5au8; 32];
    material[31] = 0x5b;
    client
        .create_key(&unique("ok"), Some(&material), None)
        .await
        .unwrap();
}
