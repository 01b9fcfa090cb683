//! Damaged backup files and crashes during a backup (DESIGN.md "Backup", `src/backup/format.rs`).
//!
//! The daemon reads a backup file at restore time, so each case edits the registered file in
//! place, asks for a restore, and puts the original bytes back. Every damaged file must be
//! refused with an API error and leave nothing behind; the one tolerated damage is the inactive
//! key slot, which the valid slot outranks by design.

use crate::backup_support;
use crate::common;
use crate::common::Rng;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backup_support::{
    assert_failed, assert_json_error, assert_no_database, assert_same_records, backup_dir,
    backup_dir_files, backup_file, call, create_backup, database_count, dump, expect, id_of,
    list_backups, records_key, restore, restore_raw, shred, Layout, HEADER_LEN_AT, PREAMBLE_LEN,
    SEALED_CHUNK, SLOT_A, SLOT_B, SLOT_LEN,
};
use common::{unique, Daemon};
use envault::client::{Client, Method};
use serde_json::Value;

/// A daemon with one database of ~150 KiB (three STREAM chunks) and two backups of it.
struct Fixture {
    /// Keeps the daemon running.
    _daemon: Daemon,
    client: Client,
    key: String,
    db: String,
    records: BTreeMap<String, Vec<u8>>,
    /// The backup being damaged.
    id: String,
    path: PathBuf,
    original: Vec<u8>,
    layout: Layout,
    /// Another backup of the same database (for splicing).
    other: Vec<u8>,
    other_layout: Layout,
}

async fn fixture() -> Fixture {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = records_key(&client, &unique("key")).await;
    let db = unique("tamper");
    client
        .create_database(&db, Some(&key.name), None)
        .await
        .unwrap();
    let mut rng = Rng::new(11);
    let mut records = BTreeMap::new();
    for i in 0..150 {
        records.insert(format!("r/{i:04}"), rng.bytes(1000 + (i % 7) * 3));
    }
    for (k, v) in &records {
        client.put_record(&db, k, v).await.unwrap();
    }
    let info = create_backup(&client, &db).await;
    let id = id_of(&info);
    let path = backup_file(&daemon, &id);
    let original = std::fs::read(&path).unwrap();
    let layout = Layout::of(&original);
    assert_eq!(layout.chunks.len(), 3, "three chunks: {layout:?}");
    assert_eq!(layout.header(&original)["database"]["name"], db.as_str());
    let other_id = id_of(&create_backup(&client, &db).await);
    let other = std::fs::read(backup_file(&daemon, &other_id)).unwrap();
    let other_layout = Layout::of(&other);
    assert_eq!(other_layout.chunks.len(), 3);
    Fixture {
        _daemon: daemon,
        client,
        key: key.id,
        db,
        records,
        id,
        path,
        original,
        layout,
        other,
        other_layout,
    }
}

impl Fixture {
    /// Writes `bytes` over the backup file (or removes it for `None`), asks for a restore that
    /// must fail, then puts the original back. Returns the error answer.
    async fn rejected(&self, bytes: Option<&[u8]>, what: &str) -> (u16, Value) {
        match bytes {
            Some(bytes) => std::fs::write(&self.path, bytes).unwrap(),
            None => std::fs::remove_file(&self.path).unwrap(),
        }
        let count = database_count(&self.client).await;
        let into = unique("into");
        let answer = restore_raw(&self.client, &self.id, &into, None).await;
        std::fs::write(&self.path, &self.original).unwrap();
        let message = assert_failed(&answer, what);
        if bytes.is_some() {
            // The request was fine; the stored file is damaged: the records' integrity code.
            assert_eq!(
                (answer.0, answer.1["error"]["code"].as_str()),
                (500, Some("integrity_error")),
                "{what}: {}",
                answer.1
            );
        }
        eprintln!(
            "{what}: {} {}: {message}",
            answer.0, answer.1["error"]["code"]
        );
        assert_no_database(&self.client, &into).await;
        assert_eq!(
            database_count(&self.client).await,
            count,
            "{what}: a database was created"
        );
        answer
    }

    /// A copy of the original with one bit flipped at `at`.
    fn flipped(&self, at: usize, bit: u8) -> Vec<u8> {
        let mut bytes = self.original.clone();
        bytes[at] ^= 1 << bit;
        bytes
    }

    /// Restores the (current) file and checks every record.
    async fn restores(&self, what: &str) {
        let into = unique("ok");
        restore(&self.client, &self.id, &into, None).await;
        assert_same_records(&dump(&self.client, &into).await, &self.records, what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backup_files_are_refused_and_create_nothing() {
    let f = fixture().await;
    f.restores("untouched backup").await;
    let l = &f.layout;
    let len = f.original.len();
    let (c0, c1, c2) = (l.chunks[0], l.chunks[1], l.chunks[2]);
    assert_eq!(c0.1 - c0.0, SEALED_CHUNK);
    assert_eq!(c1.1 - c1.0, SEALED_CHUNK);
    assert_eq!(c2.1, len);

    // Truncation: at every chunk boundary, inside chunks, inside the front.
    let mut cuts = vec![
        (0, "empty file"),
        (5, "inside the preamble"),
        (SLOT_A + 50, "inside slot A"),
        (SLOT_B + 10, "inside slot B"),
        (HEADER_LEN_AT + 2, "inside the header length"),
        (l.header_at + l.header_len / 2, "inside the header"),
        (l.payload_at, "no payload"),
        (c0.0 + 1, "one byte into chunk 0"),
        (c0.0 + 1000, "inside chunk 0"),
        (c0.1 - 1, "chunk 0 without its last tag byte"),
        (c1.0, "after chunk 0"),
        (c1.0 + 30_000, "inside chunk 1"),
        (c2.0, "after chunk 1 (drops the last chunk)"),
        (c2.0 + 17, "inside the last chunk"),
        (len - 16, "last chunk without its tag"),
        (len - 1, "last byte missing"),
    ];
    cuts.sort();
    for (at, what) in cuts {
        f.rejected(
            Some(&f.original[..at]),
            &format!("truncated at {at}: {what}"),
        )
        .await;
    }
    // Appending a chunk-sized tail or a single byte is also refused.
    let mut longer = f.original.clone();
    longer.push(0);
    f.rejected(Some(&longer), "one byte appended").await;
    let mut doubled = f.original.clone();
    doubled.extend_from_slice(&f.original[c2.0..]);
    f.rejected(Some(&doubled), "last chunk repeated").await;

    // Reordering.
    let swap = |a: (usize, usize), b: (usize, usize)| {
        let mut bytes = f.original[..a.0].to_vec();
        bytes.extend_from_slice(&f.original[b.0..b.1]);
        bytes.extend_from_slice(&f.original[a.1..b.0]);
        bytes.extend_from_slice(&f.original[a.0..a.1]);
        bytes.extend_from_slice(&f.original[b.1..]);
        assert_eq!(bytes.len(), len);
        bytes
    };
    f.rejected(Some(&swap(c0, c1)), "chunks 0 and 1 swapped")
        .await;
    // The last chunk is shorter: swap chunk 1 with the first bytes of chunk 2's size.
    let mut moved = f.original[..c1.0].to_vec();
    moved.extend_from_slice(&f.original[c2.0..]);
    moved.extend_from_slice(&f.original[c1.0..c1.1]);
    f.rejected(Some(&moved), "last chunk moved before chunk 1")
        .await;
    let mut dropped_middle = f.original[..c1.0].to_vec();
    dropped_middle.extend_from_slice(&f.original[c2.0..]);
    f.rejected(Some(&dropped_middle), "chunk 1 dropped").await;

    // Splicing chunks of another backup of the same database (same records, other DEK).
    let o = &f.other_layout;
    for (i, what) in [(0, "chunk 0"), (1, "chunk 1"), (2, "last chunk")] {
        let (start, end) = l.chunks[i];
        let (ostart, oend) = o.chunks[i];
        let mut bytes = f.original[..start].to_vec();
        bytes.extend_from_slice(&f.other[ostart..oend]);
        bytes.extend_from_slice(&f.original[end..]);
        f.rejected(Some(&bytes), &format!("{what} from another backup"))
            .await;
    }
    // The other backup's whole payload behind this backup's front.
    let mut front_swap = f.original[..l.payload_at].to_vec();
    front_swap.extend_from_slice(&f.other[o.payload_at..]);
    f.rejected(Some(&front_swap), "payload of another backup")
        .await;

    // The header's database name altered, same length.
    let needle = format!("\"name\":\"{}\"", f.db);
    let header = &f.original[l.header_at..l.payload_at];
    let at = header
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("database name in the header")
        + l.header_at
        + "\"name\":\"".len();
    let mut renamed = f.original.clone();
    assert_eq!(renamed[at], b't');
    renamed[at] = b'u';
    let answer = f.rejected(Some(&renamed), "database name altered").await;
    assert_eq!(answer.0, 500, "{}", answer.1);
    // The record count altered (same length).
    let needle = format!("\"record_count\":{}", f.records.len());
    let at = header
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("record count in the header")
        + l.header_at
        + needle.len()
        - 1;
    let mut recount = f.original.clone();
    recount[at] = b'1';
    f.rejected(Some(&recount), "record count altered").await;

    // One flipped bit.
    let mut flips: Vec<(usize, String)> = vec![
        (0, "magic".into()),
        (3, "magic".into()),
        (4, "version".into()),
        (PREAMBLE_LEN - 1, "reserved preamble byte".into()),
        (SLOT_A, "slot A seq".into()),
        (SLOT_A + 4, "slot A key version".into()),
        (SLOT_A + 7, "slot A key version".into()),
        (SLOT_A + 9, "slot A wrapped length".into()),
        (SLOT_A + 10, "slot A wrapped DEK".into()),
        (SLOT_A + 45, "slot A wrapped DEK".into()),
        (SLOT_A + 82, "slot A checksum".into()),
        (SLOT_A + 89, "slot A checksum".into()),
        (HEADER_LEN_AT, "header length".into()),
        (HEADER_LEN_AT + 3, "header length".into()),
        (l.header_at, "header first byte".into()),
        (l.header_at + l.header_len / 2, "header middle".into()),
        (l.payload_at - 2, "header end".into()),
    ];
    for (i, &(start, end)) in l.chunks.iter().enumerate() {
        flips.push((start, format!("chunk {i} first byte")));
        flips.push(((start + end) / 2, format!("chunk {i} middle")));
        flips.push((end - 16, format!("chunk {i} first tag byte")));
        flips.push((end - 1, format!("chunk {i} last tag byte")));
    }
    for (at, what) in &flips {
        for bit in [0u8, 7] {
            f.rejected(
                Some(&f.flipped(*at, bit)),
                &format!("bit {bit} flipped at {at} ({what})"),
            )
            .await;
        }
    }

    // The file gone.
    f.rejected(None, "file deleted").await;

    // The inactive slot B (empty before any rotation) is not read when slot A is valid: a
    // flipped bit there is tolerated by design.
    for at in [
        SLOT_B,
        SLOT_B + 4,
        SLOT_B + 50,
        SLOT_B + 82,
        SLOT_B + SLOT_LEN - 1,
    ] {
        std::fs::write(&f.path, f.flipped(at, 3)).unwrap();
        f.restores(&format!("bit flipped in the inactive slot at {at}"))
            .await;
    }
    std::fs::write(&f.path, &f.original).unwrap();
    f.restores("original bytes back").await;

    // Under a shredded key, even the intact file is refused.
    let count = database_count(&f.client).await;
    shred(&f.client, &f.key).await;
    let into = unique("shredded");
    assert_json_error(
        &restore_raw(&f.client, &f.id, &into, None).await,
        423,
        "key_destroyed",
    );
    assert_no_database(&f.client, &into).await;
    assert_eq!(database_count(&f.client).await, count);
}

/// The six bytes after each slot's checksum are specified as zero (`src/backup/format.rs`), but
/// `KeySlot::decode` does not check them: a flipped bit there in the active slot goes unnoticed.
/// The wrapped DEK and the payload stay authenticated, so no data can be altered this way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_in_the_active_slot_padding_is_refused() {
    let f = fixture().await;
    for at in SLOT_A + 90..SLOT_A + SLOT_LEN {
        f.rejected(
            Some(&f.flipped(at, 0)),
            &format!("bit flipped in slot A padding at {at}"),
        )
        .await;
    }
}

/// A registered backup whose file is gone cannot be restored; the answer should say so. It is
/// a 500 `storage_error` with the generic sentence "storage failure", which does not tell the
/// operator that the backup file is missing (the cause is only in the daemon's log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_backup_file_is_reported_clearly() {
    let f = fixture().await;
    let answer = f.rejected(None, "file deleted").await;
    let message = answer.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("file"),
        "the error names the missing backup file: {} {}",
        answer.0,
        answer.1
    );
}

/// Files of `dir` by kind: (finished `*.evb`, temp `.*.evb.tmp`, others).
fn classify(names: &[String]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut finished = Vec::new();
    let mut temp = Vec::new();
    let mut other = Vec::new();
    for name in names {
        if name.starts_with('.') && name.ends_with(".evb.tmp") {
            temp.push(name.clone());
        } else if name.ends_with(".evb") {
            finished.push(name.clone());
        } else {
            other.push(name.clone());
        }
    }
    (finished, temp, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_a_backup_leaves_no_half_backup() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let db = unique("big");
    client.create_database(&db, None, None).await.unwrap();
    // 40 MiB in 160 records of 256 KiB, written by two clients.
    let mut rng = Rng::new(12);
    let value_len = 256 * 1024;
    let total = 160;
    let mut writers = Vec::new();
    for part in 0..2 {
        let client = daemon.client();
        let db = db.clone();
        let values: Vec<(String, Vec<u8>)> = (0..total / 2)
            .map(|i| {
                let n = part * total / 2 + i;
                (format!("big/{n:04}"), rng.bytes(value_len))
            })
            .collect();
        writers.push(tokio::spawn(async move {
            for (k, v) in values {
                client.put_record(&db, &k, &v).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let sample = client.get_record(&db, "big/0042").await.unwrap();
    assert_eq!(sample.len(), value_len);

    // A complete backup, timed, to aim the kills.
    let started = Instant::now();
    let first = create_backup(&client, &db).await;
    let took = started.elapsed();
    assert_eq!(first["record_count"], total as u64);
    assert!(
        first["size"].as_u64().unwrap() > (total * value_len) as u64,
        "{first}"
    );

    let fractions = [0.05, 0.25, 0.5, 0.75, 0.95];
    let mut caught_mid_write = 0;
    for fraction in fractions {
        let delay = took.mul_f64(fraction).max(Duration::from_millis(2));
        let request = {
            let client = daemon.client();
            let db = db.clone();
            tokio::spawn(async move {
                client
                    .request(Method::POST, &format!("/v1/databases/{db}/backups"), None)
                    .await
            })
        };
        tokio::time::sleep(delay).await;
        daemon.kill9().await;
        // The request may have finished (201) or lost its connection.
        let _ = request.await.expect("request task");
        let names_before = backup_dir_files(&daemon);
        let (_, temp, _) = classify(&names_before);
        eprintln!("killed {delay:?} into a {took:?} backup: left {names_before:?}");
        if !temp.is_empty() {
            caught_mid_write += 1;
        }
        daemon.restart().await;
        let client = daemon.client();

        let names = backup_dir_files(&daemon);
        let (finished, temp, other) = classify(&names);
        assert!(
            temp.is_empty(),
            "after kill at {delay:?}: temp files left in {}: {temp:?}",
            backup_dir(&daemon).display()
        );
        assert!(other.is_empty(), "unexpected files: {other:?}");
        let listed = list_backups(&client).await;
        let registered: Vec<String> = {
            let mut names: Vec<String> =
                listed.iter().map(|b| format!("{}.evb", id_of(b))).collect();
            names.sort();
            names
        };
        assert_eq!(
            finished, registered,
            "after kill at {delay:?}: files and registrations differ"
        );
        for backup in &listed {
            assert_eq!(backup["state"], "available");
            assert_eq!(backup["record_count"], total as u64);
            let size = std::fs::metadata(backup_file(&daemon, &id_of(backup)))
                .unwrap()
                .len();
            assert_eq!(backup["size"], size, "registered size matches the file");
        }
    }
    assert!(
        caught_mid_write > 0,
        "no kill landed while a backup file was being written (backup took {took:?})"
    );

    // Every registered backup restores; the next backup succeeds.
    let client = daemon.client();
    let listed = list_backups(&client).await;
    assert!(listed.iter().any(|b| id_of(b) == id_of(&first)));
    for backup in &listed {
        let into = unique("after-crash");
        restore(&client, &id_of(backup), &into, None).await;
        let keys = backup_support::all_keys(&client, &into).await;
        assert_eq!(keys.len(), total);
        assert_eq!(client.get_record(&into, "big/0042").await.unwrap(), sample);
    }
    let next = expect(
        call(
            &client,
            Method::POST,
            &format!("/v1/databases/{db}/backups"),
            None,
        )
        .await,
        201,
        "backup after the crashes",
    );
    assert_eq!(next["record_count"], total as u64);
}
