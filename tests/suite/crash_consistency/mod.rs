//! Crash consistency of the real daemon: SIGKILL at pseudo-random moments, restart, and check
//! that everything it acknowledged is there, exactly.
//!
//! - Record load: 8 connections PUT (new and overwritten keys) and DELETE, and now and then a
//!   key or a database is created; the daemon is killed after 20–300 ms of load, at least 20
//!   times. After every restart each acknowledged write reads back exactly (last acknowledged
//!   value; acknowledged deletes stay deleted; a key whose operation was in flight at the kill
//!   may show the old or the new state), the record listings, `GET /v1/keys` and
//!   `GET /v1/databases` match the acknowledged creations, and the activity log verifies.
//! - Kill points inside rotation, soft-delete purge, backup creation and cryptoshred.
//!
//! Seeded: `ENVAULT_CRASH_SEED` (decimal or 0x hex; default `crash_support::DEFAULT_SEED`)
//! fixes the operation schedule, the values and the kill delays (thread interleavings and so
//! the exact kill points still vary). The seed and a rerun command are printed when a test
//! fails. `ENVAULT_CRASH_KILLS` raises the number of kills of the load test;
//! `scripts/crash-soak.sh` runs many seeds.

mod backup;
mod purge;
mod records_under_load;
mod rotation;
mod shred;

use crate::common;
use crate::common::{wait_for, Rng};
use crate::crash_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Daemon;
use crash_support::{
    assert_audit_ok, bounded, customer_key, database, database_states, db_path, describe,
    dir_files, expect_json, json, key_names, key_path, outcome, read_state, record_keys,
    seed_from_env, status_line, Outcome, RawRequest, RecordModel, SeedReport,
};
use envault::client::{Client, Method};
use serde_json::json;

/// Concurrent connections of the record load.
const WORKERS: u64 = 8;
/// Record keys each worker owns (per database): few, so that keys are overwritten and deleted.
const KEYS_PER_WORKER: u64 = 12;
/// Kills of the load test unless `ENVAULT_CRASH_KILLS` asks for more.
const DEFAULT_KILLS: usize = 22;
/// The brief's floor.
const MIN_KILLS: usize = 20;
/// Databases the load test creates at most (besides its first two).
const MAX_EXTRA_DATABASES: usize = 4;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn kills() -> usize {
    std::env::var("ENVAULT_CRASH_KILLS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_KILLS)
        .max(MIN_KILLS)
}

/// Panics with every violation found, the context and the seed's rerun hint printed by the
/// [`SeedReport`] guard.
#[track_caller]
fn assert_no_violations(violations: &[String], context: &str) {
    if violations.is_empty() {
        return;
    }
    let shown: Vec<&str> = violations.iter().take(25).map(String::as_str).collect();
    panic!(
        "{context}: {} violation(s):\n  {}",
        violations.len(),
        shown.join("\n  ")
    );
}

/// Reads every record with `clients` connections; returns the mismatches.
async fn check_records(
    daemon: &Daemon,
    expected: &BTreeMap<(String, String), Vec<u8>>,
    clients: usize,
) -> Vec<String> {
    let items: Vec<((String, String), Vec<u8>)> = expected
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut tasks = Vec::new();
    for part in 0..clients {
        let client = daemon.client();
        let mine: Vec<_> = items.iter().skip(part).step_by(clients).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut bad = Vec::new();
            for ((db, key), value) in mine {
                match read_state(&client, &db, &key).await {
                    Ok(Some(got)) if got == value => {}
                    Ok(other) => bad.push(format!(
                        "{db}/{key} reads {} instead of {}",
                        describe(&other),
                        describe(&Some(value))
                    )),
                    Err(e) => bad.push(format!("GET {db}/{key}: {e}")),
                }
            }
            bad
        }));
    }
    let mut bad = Vec::new();
    for task in tasks {
        bad.extend(task.await.expect("record check task"));
    }
    bad
}

/// Writes `records` with `clients` connections (all must be acknowledged).
async fn write_records(
    daemon: &Daemon,
    records: &BTreeMap<(String, String), Vec<u8>>,
    clients: usize,
) {
    let items: Vec<((String, String), Vec<u8>)> = records
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut tasks = Vec::new();
    for part in 0..clients {
        let client = daemon.client();
        let mine: Vec<_> = items.iter().skip(part).step_by(clients).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for ((db, key), value) in mine {
                bounded("PUT record", client.put_record(&db, &key, &value))
                    .await
                    .unwrap_or_else(|e| panic!("PUT {db}/{key}: {e}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
}
