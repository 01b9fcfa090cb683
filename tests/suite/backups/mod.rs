//! Backups of the real daemon (DESIGN.md rule 7, API.md "Backups"): round trip under a separate
//! backup key, restore with a key override, registrations, snapshot consistency under
//! concurrent writers, the delegation rules, cryptoshred of the database key and of the backup
//! key, deletion, rotation rewrapping only the header slots, and scheduled backups with retention.

mod consistency_and_delegation;
mod round_trip_and_delete;
mod shred_rotate_and_schedule;

use crate::backup_support;
use crate::common;
use crate::common::{wait_for, Rng};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backup_support::{
    assert_failed, assert_json_error, assert_no_database, assert_same_records, audit_events,
    authorizations, backup_dir, backup_dir_files, backup_file, backup_key, call, create_backup,
    create_backup_raw, database_count, delete_backup_raw, dump, expect, get_backup_raw, get_key,
    grant, id_of, list_backups, records_key, restore, restore_raw, rotate, shred, HEADER_LEN_AT,
    SLOT_A,
};
use common::{unique, Daemon};
use envault::client::{Client, Method};
use serde_json::Value;

/// ~300 records: small binary ones, a few of 200–260 KiB, a few empty ones, some keys with
/// characters that need encoding.
fn sample_records(seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut records = BTreeMap::new();
    for i in 0..296u64 {
        let value = match i {
            7 | 107 | 207 => Vec::new(),
            10 | 150 | 295 => {
                let extra = rng.below(60 * 1024) as usize;
                rng.bytes(200 * 1024 + extra)
            }
            _ => {
                let len = 1 + rng.below(3000) as usize;
                rng.bytes(len)
            }
        };
        records.insert(format!("rec/{i:04}"), value);
    }
    records.insert("with space".into(), b"spaced".to_vec());
    records.insert("ünïcödé/ключ".into(), rng.bytes(77));
    records.insert("percent%2Fslash".into(), Vec::new());
    records.insert("z".repeat(1024), rng.bytes(10));
    records
}

async fn write_records(client: &Client, db: &str, records: &BTreeMap<String, Vec<u8>>) {
    for (key, value) in records {
        client
            .put_record(db, key, value)
            .await
            .unwrap_or_else(|e| panic!("put {db}/{key}: {e}"));
    }
}

/// Keys A (records) and B (backup), a database under A with backup key B, filled.
struct Setup {
    a: envault::api::KeyInfo,
    b: envault::api::KeyInfo,
    db: envault::api::DatabaseInfo,
    records: BTreeMap<String, Vec<u8>>,
}

async fn setup(client: &Client, records: BTreeMap<String, Vec<u8>>) -> Setup {
    let a = records_key(client, &unique("key-a")).await;
    let (b, _) = backup_key(client, &unique("key-b")).await;
    let db = client
        .create_database(&unique("db"), Some(&a.name), Some(&b.name))
        .await
        .expect("create a database with a backup key");
    assert_eq!(db.key, a.id);
    assert_eq!(db.backup_key.as_deref(), Some(b.id.as_str()));
    write_records(client, &db.name, &records).await;
    Setup { a, b, db, records }
}

/// The `registrations` of a key.
async fn registrations_of(client: &Client, key: &str) -> Vec<Value> {
    let info = get_key(client, key).await;
    info["registrations"]
        .as_array()
        .unwrap_or_else(|| panic!("no registrations in {info}"))
        .clone()
}

/// `DELETE /v1/authorizations/{id}`.
async fn revoke(client: &Client, id: &str) {
    let answer = call(
        client,
        Method::DELETE,
        &format!("/v1/authorizations/{id}"),
        None,
    )
    .await;
    assert_eq!(answer.0, 204, "revoke {id}: {}", answer.1);
}

#[track_caller]
fn check_time(text: &str) {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
}
