//! Damage inside the embedded store's files, through the real daemon: one flipped byte in
//! one small record's stored value costs that record alone a 500 `integrity_error` naming it
//! (its neighbours read back intact), and a damaged table index stops the daemon with an
//! error that names the store and says what to do.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use envault::api::RecordBatchOp;
use envault::client::ClientError;

const SMALL: usize = 300;

/// Incompressible bytes (blob files compress what compresses), different for every `seed`.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn small_key(i: usize) -> String {
    format!("small-{i:04}")
}

fn small_value(i: usize) -> Vec<u8> {
    random_bytes(i as u64 + 1, 100 + (i % 9) * 50)
}

/// (file, offset) of `needle` in a file under a `folder` directory of `dir`.
fn find_in(dir: &Path, folder: &str, needle: &[u8]) -> Option<(PathBuf, usize)> {
    let in_folder = |p: &PathBuf| p.components().any(|c| c.as_os_str() == folder);
    files_under(dir)
        .into_iter()
        .filter(in_folder)
        .find_map(|file| {
            let bytes = std::fs::read(&file).ok()?;
            let at = bytes.windows(needle.len()).position(|w| w == needle)?;
            Some((file, at))
        })
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

/// A daemon on the embedded store with `SMALL` small records in one database, written out of
/// the store's journal into its table and blob files. `None` on a shared store (no files).
async fn small_records_on_disk() -> Option<(Daemon, String)> {
    let daemon = Daemon::start().await;
    let store = daemon.data_dir.join("fjall");
    if !store.is_dir() {
        eprintln!("the store keeps no files in the data dir (shared store); nothing to damage");
        return None;
    }
    let client = daemon.client();
    let key = unique("k");
    client.create_key(&key, None, None).await.unwrap();
    allow_databases(&client, &key).await;
    let db = unique("db");
    client.create_database(&db, Some(&key), None).await.unwrap();
    let ops: Vec<RecordBatchOp> = (0..SMALL)
        .map(|i| RecordBatchOp::put(small_key(i), &small_value(i)))
        .collect();
    for result in client.record_batch(&db, ops).await.unwrap() {
        assert_eq!(result.status, 204, "{:?}", result.error);
    }
    // More than the store's 8 MiB memtable after them, so it is written to tables and blob
    // files in the background; wait until it is.
    for i in 0..10u64 {
        let filler = random_bytes(1000 + i, 1 << 20);
        client
            .put_record(&db, &format!("filler-{i}"), &filler)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !flushed(&store, small_key(SMALL - 1).as_bytes()) {
        assert!(
            Instant::now() < deadline,
            "the small records never reached the table and blob files"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some((daemon, db))
}

/// Whether `key` is in a blob file and a table file, and that table is registered: a version
/// file of its tree (`v<N>`, written after the table) is at least as recent. Until then a
/// restart would read the record from the journal again.
fn flushed(store: &Path, key: &[u8]) -> bool {
    let (Some(_), Some((table, _))) = (find_in(store, "blobs", key), find_in(store, "tables", key))
    else {
        return false;
    };
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let tree = table
        .parent()
        .and_then(Path::parent)
        .expect("the table's tree");
    let newest_version = std::fs::read_dir(tree)
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.len() > 1 && name.starts_with('v') && name[1..].bytes().all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| modified(&e.path()))
        .max();
    newest_version.is_some() && newest_version >= modified(&table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_small_record_fails_that_record_only_naming_it() {
    let Some((mut daemon, db)) = small_records_on_disk().await else {
        return;
    };
    daemon.stop_graceful().await;
    let victim = 150;
    let name = small_key(victim);
    // A blob is stored as header, full key (database id | record key), value: flip a byte
    // of the value.
    let (file, at) = find_in(&daemon.data_dir.join("fjall"), "blobs", name.as_bytes())
        .expect("the record's blob");
    flip(&file, at + name.len() + 40);

    daemon.restart().await;
    let client = daemon.client();
    match client.get_record(&db, &name).await {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => {
            assert_eq!(
                (status, code.as_str()),
                (500, "integrity_error"),
                "{message}"
            );
            assert!(
                message.contains(&name),
                "the answer names the record: {message}"
            );
        }
        other => panic!("the damaged record read as {other:?}"),
    }
    for i in (0..SMALL).filter(|i| *i != victim) {
        let got = client.get_record(&db, &small_key(i)).await;
        assert_eq!(got.unwrap(), small_value(i), "{}", small_key(i));
    }
    // The same through a batch: the damaged get fails alone.
    let ops = (victim - 1..=victim + 1)
        .map(|i| RecordBatchOp::Get { key: small_key(i) })
        .collect();
    let results = client.record_batch(&db, ops).await.unwrap();
    let codes: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert_eq!(codes, vec![200, 500, 200], "{results:?}");
    let error = results[1].error.as_ref().unwrap();
    assert_eq!(error.code, "integrity_error");
    assert!(error.message.contains(&name), "{}", error.message);
    // The record can be written again, and then reads.
    client.put_record(&db, &name, b"rewritten").await.unwrap();
    assert_eq!(
        client.get_record(&db, &name).await.unwrap(),
        b"rewritten".to_vec()
    );
    assert!(
        daemon.is_running(),
        "the daemon kept running: {}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_table_index_stops_the_daemon_naming_the_store_and_the_next_step() {
    let Some((mut daemon, _db)) = small_records_on_disk().await else {
        return;
    };
    daemon.stop_graceful().await;
    let store = daemon.data_dir.join("fjall");
    // The table holding the small records' keys and blob pointers; its index and metadata are
    // at its end, after the data blocks.
    let (table, _) = find_in(&store, "tables", small_key(0).as_bytes()).expect("the table");
    let len = std::fs::metadata(&table).unwrap().len() as usize;
    flip(&table, len - 200);
    let output = run_with_input(daemon.serve_command(), &[], STARTUP_TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started on a damaged table");
    assert!(
        stderr.contains(&store.display().to_string()),
        "names the store: {stderr}"
    );
    assert!(
        stderr.contains("restore") && !stderr.contains("another"),
        "says what to do, not that another process holds it: {stderr}"
    );
}
