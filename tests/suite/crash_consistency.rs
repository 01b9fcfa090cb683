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

// ---------------------------------------------------------------------------------------------
// Record load with kills
// ---------------------------------------------------------------------------------------------

/// Names the daemon acknowledged creating, and names whose creation got no answer.
#[derive(Debug, Default)]
struct Names {
    acked: BTreeSet<String>,
    pending: BTreeSet<String>,
}

impl Names {
    /// Checks `listed` against the model (acked ⊆ listed ⊆ acked ∪ pending) and resolves the
    /// pending names by what is listed.
    fn reconcile(&mut self, what: &str, listed: &BTreeSet<String>, violations: &mut Vec<String>) {
        for name in self.acked.difference(listed) {
            violations.push(format!(
                "{what} {name:?} was acknowledged (201) but is not listed"
            ));
        }
        for name in listed {
            if !self.acked.contains(name) && !self.pending.contains(name) {
                violations.push(format!("{what} {name:?} is listed but was never created"));
            }
        }
        for name in std::mem::take(&mut self.pending) {
            if listed.contains(&name) {
                self.acked.insert(name);
            }
        }
    }
}

/// Record models of one worker: (database, record key) → model.
type Records = BTreeMap<(String, String), RecordModel>;

#[derive(Debug, Default)]
struct WorkerReport {
    acked: u64,
    unknown: u64,
    violations: Vec<String>,
}

/// A value tagged with its origin (for failure messages), of a random size.
fn make_value(worker: u64, round: usize, n: u64, rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(100) {
        0..=69 => rng.below(256),
        70..=94 => rng.range(256, 4096),
        _ => rng.range(16 * 1024, 64 * 1024),
    } as usize;
    let mut value = format!("w{worker}.r{round}.n{n}|").into_bytes();
    value.extend(rng.bytes(len));
    value
}

/// One connection's load: PUTs and DELETEs on its own keys until `stop` or the first request
/// without an answer (the daemon was killed).
async fn worker(
    id: u64,
    round: usize,
    client: Client,
    mut model: Records,
    dbs: Vec<String>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> (Records, WorkerReport) {
    let mut report = WorkerReport::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let db = dbs[rng.below(dbs.len() as u64) as usize].clone();
        let key = format!("w{id}/k{:02}", rng.below(KEYS_PER_WORKER));
        let entry = model.entry((db.clone(), key.clone())).or_default();
        if rng.percent(22) {
            let result = bounded("DELETE record", client.delete_record(&db, &key)).await;
            match outcome(result) {
                Outcome::Acked(()) => {
                    if entry.certain() && entry.acked.is_none() {
                        report.violations.push(format!(
                            "DELETE {db}/{key} answered 204 but the record was absent"
                        ));
                    }
                    entry.ack(None);
                    report.acked += 1;
                }
                Outcome::Refused(404, code, _) if code == "not_found" => {
                    if !entry.allows(&None) {
                        report.violations.push(format!(
                            "DELETE {db}/{key} answered 404 but the acknowledged state is {} \
                             (an acknowledged write was lost)",
                            describe(&entry.acked)
                        ));
                    }
                    entry.ack(None);
                    report.acked += 1;
                }
                Outcome::Refused(status, code, message) => report.violations.push(format!(
                    "DELETE {db}/{key} refused: {status} {code}: {message}"
                )),
                Outcome::Unknown(_) => {
                    entry.unknown(None);
                    report.unknown += 1;
                    break;
                }
            }
        } else {
            let value = make_value(id, round, n, &mut rng);
            let result = bounded("PUT record", client.put_record(&db, &key, &value)).await;
            match outcome(result) {
                Outcome::Acked(()) => {
                    entry.ack(Some(value));
                    report.acked += 1;
                }
                Outcome::Refused(status, code, message) => report.violations.push(format!(
                    "PUT {db}/{key} refused: {status} {code}: {message}"
                )),
                Outcome::Unknown(_) => {
                    entry.unknown(Some(value));
                    report.unknown += 1;
                    break;
                }
            }
        }
    }
    (model, report)
}

/// What the creator task tried: (is a key, name, outcome).
type Creation = Option<(bool, String, Outcome<()>)>;

/// Now and then creates a key or a database (under `key`, or provider-managed), at a random
/// moment of the round, so that some creations are cut by the kill.
async fn creator(
    client: Client,
    round: usize,
    mut rng: Rng,
    key: String,
    may_create_db: bool,
    stop: Arc<AtomicBool>,
) -> Creation {
    tokio::time::sleep(ms(rng.range(0, 250))).await;
    if stop.load(Ordering::SeqCst) || rng.percent(30) {
        return None;
    }
    if may_create_db && rng.percent(40) {
        let name = format!("load-db-r{round}");
        let under = rng.percent(50).then_some(key.as_str());
        let result = bounded(
            "create database",
            client.create_database(&name, under, None),
        )
        .await;
        Some((false, name, outcome(result.map(drop))))
    } else {
        let name = format!("load-key-r{round}");
        let result = bounded("create key", client.create_key(&name, None, None)).await;
        Some((true, name, outcome(result.map(drop))))
    }
}

/// After a restart: keys, databases, every modelled record, the listings and the activity log.
async fn verify_world(
    daemon: &Daemon,
    keys: &mut Names,
    dbs: &mut Names,
    records: &mut [Records],
    context: &str,
) -> Vec<String> {
    let client = daemon.client();
    let mut violations = Vec::new();
    keys.reconcile("key", &key_names(&client).await, &mut violations);
    let states = database_states(&client).await;
    let listed: BTreeSet<String> = states.keys().cloned().collect();
    dbs.reconcile("database", &listed, &mut violations);
    for (name, state) in &states {
        if state != "active" {
            violations.push(format!("database {name:?} is {state}, not active"));
        }
    }
    // Every record a worker touched, one connection per worker.
    let mut checks = Vec::new();
    for (w, model) in records.iter_mut().enumerate() {
        let model = std::mem::take(model);
        let client = daemon.client();
        checks.push(tokio::spawn(async move {
            let mut model = model;
            let mut violations = Vec::new();
            for ((db, key), entry) in model.iter_mut() {
                match read_state(&client, db, key).await {
                    Ok(state) => {
                        if !entry.allows(&state) {
                            let maybe: Vec<String> = entry.maybe.iter().map(describe).collect();
                            violations.push(format!(
                                "{db}/{key} (worker {w}) reads {} but the last acknowledged \
                                 state is {} (unanswered: {maybe:?})",
                                describe(&state),
                                describe(&entry.acked),
                            ));
                        }
                        entry.observed(state);
                    }
                    Err(e) => violations.push(format!("GET {db}/{key}: {e}")),
                }
            }
            (model, violations)
        }));
    }
    for (w, check) in checks.into_iter().enumerate() {
        let (model, found) = check.await.expect("record check task");
        records[w] = model;
        violations.extend(found);
    }
    // The listings hold exactly the present records (nothing resurrected, nothing extra).
    for db in dbs.acked.clone() {
        let expected: BTreeSet<String> = records
            .iter()
            .flat_map(|m| m.iter())
            .filter(|((d, _), e)| d == &db && e.acked.is_some())
            .map(|((_, k), _)| k.clone())
            .collect();
        let listed = record_keys(&client, &db).await;
        if listed != expected {
            let extra: Vec<&String> = listed.difference(&expected).collect();
            let missing: Vec<&String> = expected.difference(&listed).collect();
            violations.push(format!(
                "records of {db}: listing differs from the reads: extra {extra:?}, missing {missing:?}"
            ));
        }
    }
    let report = expect_json(&client, Method::GET, "/v1/audit/verify", None, 200).await;
    if report["ok"] != true {
        violations.push(format!("{context}: activity log broken: {report}"));
    }
    violations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_under_load() {
    let seed = seed_from_env();
    let _report = SeedReport::new(
        "crash_consistency",
        "acknowledged_writes_survive_sigkill_under_load",
        seed,
    );
    let mut rng = Rng::new(seed).fork(1);
    let started = Instant::now();
    let mut daemon = Daemon::start().await;
    let admin = daemon.client();
    let (key, _) = customer_key(&admin, "load-key").await;
    let mut keys = Names::default();
    keys.acked.insert(key.clone());
    let mut dbs = Names::default();
    database(&admin, "load-db-a", Some(&key)).await;
    database(&admin, "load-db-b", None).await;
    dbs.acked
        .extend(["load-db-a".to_string(), "load-db-b".to_string()]);
    let mut records: Vec<Records> = (0..WORKERS).map(|_| Records::new()).collect();
    let (mut acked, mut unknown, mut load_ms) = (0u64, 0u64, 0u64);
    let kills = kills();
    for round in 0..kills {
        let context = format!("seed {seed}, kill {}/{kills}", round + 1);
        let stop = Arc::new(AtomicBool::new(false));
        let db_list: Vec<String> = dbs.acked.iter().cloned().collect();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            workers.push(tokio::spawn(worker(
                w,
                round,
                daemon.client(),
                std::mem::take(&mut records[w as usize]),
                db_list.clone(),
                rng.fork(round as u64 * 100 + w),
                Arc::clone(&stop),
            )));
        }
        let created = tokio::spawn(creator(
            daemon.client(),
            round,
            rng.fork(round as u64 * 100 + 99),
            key.clone(),
            dbs.acked.len() + dbs.pending.len() < 2 + MAX_EXTRA_DATABASES,
            Arc::clone(&stop),
        ));
        let load = rng.range(20, 300);
        load_ms += load;
        tokio::time::sleep(ms(load)).await;
        stop.store(true, Ordering::SeqCst);
        daemon.kill9().await;
        let mut violations = Vec::new();
        for (w, handle) in workers.into_iter().enumerate() {
            let (model, report) = handle.await.expect("load worker panicked");
            records[w] = model;
            acked += report.acked;
            unknown += report.unknown;
            violations.extend(report.violations);
        }
        if let Some((is_key, name, result)) = created.await.expect("creator panicked") {
            let names = if is_key { &mut keys } else { &mut dbs };
            match result {
                Outcome::Acked(()) => {
                    names.acked.insert(name);
                }
                Outcome::Unknown(_) => {
                    names.pending.insert(name);
                }
                Outcome::Refused(status, code, message) => {
                    violations.push(format!("creating {name}: {status} {code}: {message}"))
                }
            }
        }
        assert_no_violations(&violations, &format!("{context}: during the load"));
        daemon.restart().await;
        let violations = verify_world(&daemon, &mut keys, &mut dbs, &mut records, &context).await;
        assert_no_violations(&violations, &format!("{context}: after the restart"));
    }
    // At the end: a graceful restart changes nothing either.
    daemon.stop_graceful().await;
    daemon.restart().await;
    let context = format!("seed {seed}, after the final graceful restart");
    let violations = verify_world(&daemon, &mut keys, &mut dbs, &mut records, &context).await;
    assert_no_violations(&violations, &context);
    let present = records
        .iter()
        .flat_map(|m| m.values())
        .filter(|e| e.acked.is_some())
        .count();
    eprintln!(
        "[load] seed {seed}: {kills} kills after {load_ms} ms of load in all; {acked} acknowledged \
         operations, {unknown} cut by a kill; {present} records, {} keys, {} databases at the end; \
         {:.1} s",
        keys.acked.len(),
        dbs.acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(acked > 0, "the load acknowledged nothing");
}

// ---------------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------------

/// Databases under the rotated key: five rewrap batches of 64 (one atomic commit each).
const ROTATION_DBS: usize = 300;
/// Rotations interrupted by a kill.
const ROTATION_KILLS: usize = 8;

async fn key_version(client: &Client, key: &str) -> u64 {
    let info = expect_json(client, Method::GET, &key_path(key, ""), None, 200).await;
    assert_eq!(info["state"], "active", "key {key}: {info}");
    info["version"].as_u64().expect("key version")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_completes_after_sigkill() {
    let seed = seed_from_env();
    let _report = SeedReport::new(
        "crash_consistency",
        "rotation_completes_after_sigkill",
        seed,
    );
    let mut rng = Rng::new(seed).fork(2);
    let started = Instant::now();
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let (key, key_id) = customer_key(&client, "rot-key").await;
    // Many databases under the key, created over a few connections, two records each.
    let names: Vec<String> = (0..ROTATION_DBS)
        .map(|i| format!("rot-db-{i:03}"))
        .collect();
    let mut creators = Vec::new();
    for part in 0..4 {
        let client = daemon.client();
        let mine: Vec<String> = names.iter().skip(part).step_by(4).cloned().collect();
        let key = key.clone();
        creators.push(tokio::spawn(async move {
            for name in mine {
                database(&client, &name, Some(&key)).await;
            }
        }));
    }
    for task in creators {
        task.await.expect("database creator");
    }
    let mut expected = BTreeMap::new();
    for name in &names {
        for r in 0..2 {
            let len = rng.range(1, 600) as usize;
            expected.insert((name.clone(), format!("rec-{r}")), rng.bytes(len));
        }
    }
    write_records(&daemon, &expected, 4).await;
    // Calibrate: how long an uninterrupted rotation of all these DEKs takes.
    let t0 = Instant::now();
    let done = expect_json(
        &client,
        Method::POST,
        &key_path(&key, "/rotate"),
        Some(json!({"wait": true})),
        200,
    )
    .await;
    let rotation_ms = (t0.elapsed().as_millis() as u64).max(5);
    assert_eq!(done["job"]["state"], "completed", "{done}");
    let mut version = key_version(&client, &key).await;
    assert_eq!(version, 2);
    let mut outcomes = Vec::new();
    for cycle in 0..ROTATION_KILLS {
        let context = format!("seed {seed}, rotation kill {}/{ROTATION_KILLS}", cycle + 1);
        let retire = rng.percent(50);
        // Mostly: kill after the 202 (the job is acknowledged and must finish). Sometimes: kill
        // while the rotate request itself is in flight (either outcome, never a broken key).
        let before_answer = rng.percent(30);
        let delay = rng.range(0, rotation_ms + rotation_ms / 2);
        let body = json!({"wait": false, "retire_old": retire}).to_string();
        let acknowledged_target = if before_answer {
            let raw = RawRequest::send(
                &daemon,
                "POST",
                &key_path(&key_id, "/rotate"),
                body.as_bytes(),
            )
            .await;
            tokio::time::sleep(ms(delay / 4)).await;
            daemon.kill9().await;
            let answer = raw.answer(ms(500)).await;
            (status_line(&answer) == Some(202)).then_some(version + 1)
        } else {
            let answer = expect_json(
                &client,
                Method::POST,
                &key_path(&key, "/rotate"),
                Some(json!({"wait": false, "retire_old": retire})),
                202,
            )
            .await;
            assert_eq!(answer["version"].as_u64(), Some(version + 1), "{answer}");
            tokio::time::sleep(ms(delay)).await;
            daemon.kill9().await;
            Some(version + 1)
        };
        daemon.restart().await;
        let client = daemon.client();
        let now_version = key_version(&client, &key).await;
        match acknowledged_target {
            Some(target) => assert_eq!(
                now_version, target,
                "{context}: the rotation to version {target} was acknowledged"
            ),
            None => assert!(
                now_version == version || now_version == version + 1,
                "{context}: version {now_version} after an unanswered rotate from {version}"
            ),
        }
        let rotated = now_version > version;
        version = now_version;
        // The job finishes on its own: its status is `completed`, or gone when it had finished
        // before the kill.
        let key_for_poll = key.clone();
        let final_state = wait_for(Duration::from_secs(20), "the rotation to complete", || {
            let client = daemon.client();
            let key = key_for_poll.clone();
            async move {
                let (status, body) =
                    json(&client, Method::GET, &key_path(&key, "/rotation"), None).await;
                match status {
                    200 if body["state"] == "completed" => {
                        assert_eq!(body["target_version"].as_u64(), Some(version), "{body}");
                        Some("completed (resumed)".to_string())
                    }
                    200 => None,
                    404 => Some("none pending".to_string()),
                    other => panic!("rotation status: {other} {body}"),
                }
            }
        })
        .await;
        // A finished job is gone from the catalog: a new rotation is accepted.
        let bad = check_records(&daemon, &expected, 4).await;
        assert_no_violations(
            &bad,
            &format!("{context}: records after the resumed rotation"),
        );
        assert_audit_ok(&client, &context).await;
        outcomes.push(format!(
            "{}{}ms:{}{}",
            if before_answer { "in-request " } else { "" },
            delay,
            if rotated { "rotated" } else { "not rotated" },
            if final_state.starts_with("completed") {
                "+resumed"
            } else {
                ""
            }
        ));
    }
    // Still fully usable: one more rotation runs to the end and every record reads.
    let done = expect_json(
        &daemon.client(),
        Method::POST,
        &key_path(&key, "/rotate"),
        Some(json!({"wait": true, "retire_old": true})),
        200,
    )
    .await;
    assert_eq!(done["job"]["state"], "completed", "{done}");
    let bad = check_records(&daemon, &expected, 4).await;
    assert_no_violations(&bad, "records after the last rotation");
    eprintln!(
        "[rotation] seed {seed}: {ROTATION_DBS} DEKs, uninterrupted rotation {rotation_ms} ms, \
         kills: {outcomes:?}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Soft-delete purge
// ---------------------------------------------------------------------------------------------

const PURGE_CYCLES: usize = 3;
const PURGE_RECORDS: usize = 2500;
/// The purge task's period with a 1 s soft-deletion period (a quarter of it, at least 250 ms).
const PURGE_TICK: Duration = Duration::from_millis(250);

fn parse_unix(rfc3339: &str) -> Duration {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("purge_at {rfc3339:?}: {e}"));
    Duration::from_secs(at.unix_timestamp() as u64)
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
}

/// Signed milliseconds `a - b`.
fn signed_ms(a: Duration, b: Duration) -> i64 {
    a.as_millis() as i64 - b.as_millis() as i64
}

/// Creates `db` (under `key`, or provider-managed) with [`PURGE_RECORDS`] small records and
/// soft-deletes it; returns its key id, CRN and `purge_at` (Unix time).
async fn doomed_database(
    daemon: &Daemon,
    db: &str,
    key: Option<&str>,
    rng: &mut Rng,
) -> (String, String, Duration) {
    let client = daemon.client();
    database(&client, db, key).await;
    let info = expect_json(&client, Method::GET, &db_path(db, ""), None, 200).await;
    let key_id = info["key"].as_str().expect("key id").to_string();
    let mut records = BTreeMap::new();
    for i in 0..PURGE_RECORDS {
        records.insert((db.to_string(), format!("r{i:05}")), rng.bytes(48));
    }
    write_records(daemon, &records, 8).await;
    let deleted = expect_json(&client, Method::DELETE, &db_path(db, ""), None, 200).await;
    assert_eq!(deleted["state"], "deleted", "{deleted}");
    (
        key_id,
        deleted["crn"].as_str().expect("crn").to_string(),
        parse_unix(deleted["purge_at"].as_str().expect("purge_at")),
    )
}

/// When the activity log recorded the successful purge of `crn` (Unix time), if it did.
async fn purge_logged_at(client: &Client, crn: &str) -> Option<Duration> {
    let events = expect_json(
        client,
        Method::GET,
        "/v1/audit?action=databases.purge",
        None,
        200,
    )
    .await;
    let event = events["events"]
        .as_array()?
        .iter()
        .find(|e| e["target"] == crn && e["outcome"] == "success")?;
    let at = time::OffsetDateTime::parse(
        event["time"].as_str()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    Some(Duration::from_nanos(at.unix_timestamp_nanos() as u64))
}

/// Polls `db` every millisecond until it is gone; returns the Unix time it was first seen gone.
async fn purged_at(client: &Client, db: &str) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = json(client, Method::GET, &db_path(db, ""), None).await;
        match status {
            404 => return unix_now(),
            200 => assert_eq!(body["state"], "deleted", "{body}"),
            other => panic!("GET database {db}: {other} {body}"),
        }
        assert!(Instant::now() < deadline, "{db} was not purged within 15 s");
        tokio::time::sleep(ms(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_purge_completes_after_sigkill() {
    let seed = seed_from_env();
    let _report = SeedReport::new(
        "crash_consistency",
        "soft_delete_purge_completes_after_sigkill",
        seed,
    );
    let mut rng = Rng::new(seed).fork(3);
    let started = Instant::now();
    let mut daemon = Daemon::start_with_env(&[("ENVAULT_SOFT_DELETE_PERIOD", "1s")]).await;
    let client = daemon.client();
    let (key, _) = customer_key(&client, "purge-key").await;
    database(&client, "purge-control", Some(&key)).await;
    let mut control = BTreeMap::new();
    for i in 0..40 {
        let len = rng.range(1, 300) as usize;
        control.insert(
            ("purge-control".to_string(), format!("c{i:02}")),
            rng.bytes(len),
        );
    }
    write_records(&daemon, &control, 4).await;
    let mut offsets = Vec::new();
    for cycle in 0..PURGE_CYCLES {
        let context = format!("seed {seed}, purge kill {}/{PURGE_CYCLES}", cycle + 1);
        // A first database of the same size is purged uncut: the moment it vanishes gives the
        // phase of the purge task's ticks in this run (start of its purge + its duration).
        let probe = format!("purge-probe-{cycle}");
        let _ = doomed_database(&daemon, &probe, Some(&key), &mut rng).await;
        let probe_gone = purged_at(&client, &probe).await;
        let db = format!("purge-db-{cycle}");
        // The last cycle's database has a provider-managed key, purged with it.
        let under = (cycle + 1 < PURGE_CYCLES).then_some(key.as_str());
        let (provider_key, crn, purge_at) = doomed_database(&daemon, &db, under, &mut rng).await;
        // Mostly aim inside the purge: the first tick at or after `purge_at`, plus up to the
        // probe's purge time (estimated by its end), minus a random 0–30 ms. Otherwise anywhere
        // from just before the purge is due to well after.
        let (kill_at, aim) = if rng.percent(70) {
            let mut tick_end = probe_gone;
            while tick_end < purge_at {
                tick_end += PURGE_TICK;
            }
            (tick_end.saturating_sub(ms(rng.range(0, 30))), "aimed")
        } else {
            let offset = rng.range(0, 700);
            (purge_at.saturating_sub(ms(200)) + ms(offset), "spread")
        };
        if let Some(wait) = kill_at.checked_sub(unix_now()) {
            tokio::time::sleep(wait).await;
        }
        let killed_at = unix_now();
        let offset_ms = signed_ms(killed_at, purge_at);
        daemon.kill9().await;
        daemon.restart().await;
        let client = daemon.client();
        let db_name = db.clone();
        wait_for(
            Duration::from_secs(15),
            "the purge to finish after the restart",
            || {
                let client = daemon.client();
                let db = db_name.clone();
                async move {
                    let (status, body) = json(&client, Method::GET, &db_path(&db, ""), None).await;
                    match status {
                        404 => Some(()),
                        200 => {
                            assert_eq!(body["state"], "deleted", "{body}");
                            None
                        }
                        other => panic!("GET database {db}: {other} {body}"),
                    }
                }
            },
        )
        .await;
        assert!(
            !database_states(&client).await.contains_key(&db),
            "{context}: the purged database is still listed"
        );
        let (status, body) =
            json(&client, Method::GET, &db_path(&db, "/records/r00000"), None).await;
        assert_eq!(status, 404, "{context}: a purged database's record: {body}");
        let key_info = expect_json(&client, Method::GET, &key_path(&key, ""), None, 200).await;
        let registered: Vec<&str> = key_info["registrations"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            !registered.contains(&db.as_str()),
            "{context}: the key still registers the purged database: {key_info}"
        );
        if under.is_none() {
            let (status, body) =
                json(&client, Method::GET, &key_path(&provider_key, ""), None).await;
            assert_eq!(
                status, 404,
                "{context}: the provider-managed key outlived its purged database: {body}"
            );
        }
        // The name is free again, and a new database of that name starts empty.
        database(&client, &db, Some(&key)).await;
        assert!(
            record_keys(&client, &db).await.is_empty(),
            "{context}: a new database under a purged one's name has records"
        );
        let bad = check_records(&daemon, &control, 2).await;
        assert_no_violations(&bad, &format!("{context}: control database"));
        assert_audit_ok(&client, &context).await;
        // For the report: did the purge finish before the kill, or (re)run after the restart?
        let when = match purge_logged_at(&client, &crn).await {
            Some(at) if at < killed_at => "purged before the kill",
            Some(_) => "purged after the restart",
            None => "purge committed, event lost with the kill",
        };
        offsets.push(format!("{aim} {offset_ms:+}: {when}"));
    }
    eprintln!(
        "[purge] seed {seed}: {PURGE_CYCLES} kills at {offsets:?} ms from the purge due time, \
         {PURGE_RECORDS} records each; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Backup creation
// ---------------------------------------------------------------------------------------------

const BACKUP_RECORDS: usize = 80;
const BACKUP_RECORD_SIZE: usize = 256 * 1024;
const BACKUP_KILLS: usize = 3;

/// `(id, file name)` of every listed backup.
async fn listed_backups(client: &Client) -> BTreeMap<String, String> {
    let list = expect_json(client, Method::GET, "/v1/backups", None, 200).await;
    list["backups"]
        .as_array()
        .expect("backups array")
        .iter()
        .map(|b| {
            let id = b["id"].as_str().expect("backup id").to_string();
            let file = std::path::Path::new(b["path"].as_str().expect("backup path"))
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (id, file)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_cut_by_sigkill_leaves_no_debris() {
    let seed = seed_from_env();
    let _report = SeedReport::new(
        "crash_consistency",
        "backup_cut_by_sigkill_leaves_no_debris",
        seed,
    );
    let mut rng = Rng::new(seed).fork(4);
    let started = Instant::now();
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let (key, _) = customer_key(&client, "bk-key").await;
    database(&client, "bk-db", Some(&key)).await;
    let mut source = BTreeMap::new();
    for i in 0..BACKUP_RECORDS {
        let len = BACKUP_RECORD_SIZE - rng.below(1024) as usize;
        source.insert(("bk-db".to_string(), format!("big-{i:03}")), rng.bytes(len));
    }
    write_records(&daemon, &source, 4).await;
    let backup_dir = daemon.data_dir.join("backups");
    // Calibrate with one complete backup.
    let t0 = Instant::now();
    let first = bounded("create backup", client.create_backup("bk-db"))
        .await
        .expect("first backup");
    let backup_ms = (t0.elapsed().as_millis() as u64).max(5);
    let mut acknowledged = BTreeSet::from([first["id"].as_str().expect("id").to_string()]);
    let mut restored = BTreeSet::new();
    let mut outcomes = Vec::new();
    for cycle in 0..=BACKUP_KILLS {
        let context = format!("seed {seed}, backup kill {cycle}/{BACKUP_KILLS}");
        if cycle > 0 {
            let client = daemon.client();
            let task = tokio::spawn(async move {
                outcome(bounded("create backup", client.create_backup("bk-db")).await)
            });
            let delay = rng.range(0, backup_ms + backup_ms / 3);
            tokio::time::sleep(ms(delay)).await;
            daemon.kill9().await;
            let answered = match task.await.expect("backup task") {
                Outcome::Acked(info) => {
                    acknowledged.insert(info["id"].as_str().expect("id").to_string());
                    "acknowledged"
                }
                Outcome::Unknown(_) => "cut",
                Outcome::Refused(status, code, message) => {
                    panic!("{context}: backup refused: {status} {code}: {message}")
                }
            };
            outcomes.push(format!("{delay}ms:{answered}"));
            daemon.restart().await;
        }
        let client = daemon.client();
        let listed = listed_backups(&client).await;
        for id in &acknowledged {
            assert!(
                listed.contains_key(id),
                "{context}: acknowledged backup {id} is not listed"
            );
        }
        let files = dir_files(&backup_dir);
        let registered: BTreeSet<String> = listed.values().cloned().collect();
        for file in &files {
            assert!(
                !file.ends_with(".tmp"),
                "{context}: a temp file survived the restart: {file}"
            );
            assert!(
                registered.contains(file),
                "{context}: unregistered file in the backup dir: {file} (registered: {registered:?})"
            );
        }
        for file in &registered {
            assert!(
                files.contains(file),
                "{context}: listed backup file {file} does not exist"
            );
        }
        // Every listed backup restores, with exactly the source records.
        for id in listed.keys() {
            if !restored.insert(id.clone()) {
                continue;
            }
            let into = format!("bk-restored-{}", restored.len());
            bounded("restore backup", client.restore_backup(id, &into, None))
                .await
                .unwrap_or_else(|e| panic!("{context}: restore of listed backup {id}: {e}"));
            let keys = record_keys(&client, &into).await;
            assert_eq!(keys.len(), BACKUP_RECORDS, "{context}: restored {into}");
            let expected: BTreeMap<(String, String), Vec<u8>> = source
                .iter()
                .map(|((_, k), v)| ((into.clone(), k.clone()), v.clone()))
                .collect();
            let bad = check_records(&daemon, &expected, 2).await;
            assert_no_violations(&bad, &format!("{context}: restore of {id}"));
        }
        let bad = check_records(&daemon, &source, 2).await;
        assert_no_violations(&bad, &format!("{context}: source database"));
        assert_audit_ok(&client, &context).await;
    }
    eprintln!(
        "[backup] seed {seed}: {} MiB database, uninterrupted backup {backup_ms} ms, kills: \
         {outcomes:?}, {} backups restored; {:.1} s",
        (BACKUP_RECORDS * BACKUP_RECORD_SIZE) >> 20,
        restored.len(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Cryptoshred
// ---------------------------------------------------------------------------------------------

const SHRED_KILLS: usize = 10;

/// A key `shred-key-{tag}` protecting two databases of six records each; returns the records
/// and the key id.
async fn shred_target(
    daemon: &Daemon,
    tag: &str,
    rng: &mut Rng,
) -> (BTreeMap<(String, String), Vec<u8>>, String) {
    let client = daemon.client();
    let (key, key_id) = customer_key(&client, &format!("shred-key-{tag}")).await;
    let mut records = BTreeMap::new();
    for db in [format!("shred-{tag}-a"), format!("shred-{tag}-b")] {
        database(&client, &db, Some(&key)).await;
        for i in 0..6 {
            let len = rng.range(1, 2000) as usize;
            records.insert((db.clone(), format!("s{i}")), rng.bytes(len));
        }
    }
    write_records(daemon, &records, 2).await;
    (records, key_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shred_is_all_or_nothing_under_sigkill() {
    let seed = seed_from_env();
    let _report = SeedReport::new(
        "crash_consistency",
        "shred_is_all_or_nothing_under_sigkill",
        seed,
    );
    let mut rng = Rng::new(seed).fork(5);
    let started = Instant::now();
    let mut daemon = Daemon::start().await;
    // Calibrate: how long an uncut shred of the same shape takes, answer included.
    let (_, calibration) = shred_target(&daemon, "calibrate", &mut rng).await;
    let t0 = Instant::now();
    expect_json(
        &daemon.client(),
        Method::DELETE,
        &key_path(&calibration, "?force=true"),
        None,
        200,
    )
    .await;
    let shred_ms = (t0.elapsed().as_millis() as u64).max(2);
    let mut outcomes = Vec::new();
    for cycle in 0..SHRED_KILLS {
        let context = format!("seed {seed}, shred kill {}/{SHRED_KILLS}", cycle + 1);
        let (records, key_id) = shred_target(&daemon, &cycle.to_string(), &mut rng).await;
        let dbs: BTreeSet<String> = records.keys().map(|(db, _)| db.clone()).collect();
        // Send the shred and kill at once, or up to its uncut duration later (inside the
        // catalog commit, the keystore rewrite or the audit append).
        let delay = if rng.percent(25) {
            0
        } else {
            rng.range(1, shred_ms)
        };
        let raw = RawRequest::send(&daemon, "DELETE", &key_path(&key_id, "?force=true"), b"").await;
        if delay > 0 {
            tokio::time::sleep(ms(delay)).await;
        }
        daemon.kill9().await;
        let answer = raw.answer(ms(500)).await;
        let acknowledged = match status_line(&answer) {
            Some(200) => true,
            None => false,
            Some(other) => panic!(
                "{context}: the shred answered {other}: {:?}",
                String::from_utf8_lossy(&answer)
            ),
        };
        daemon.restart().await;
        let client = daemon.client();
        let info = expect_json(&client, Method::GET, &key_path(&key_id, ""), None, 200).await;
        let state = info["state"].as_str().expect("key state").to_string();
        let mut event_note = "";
        match state.as_str() {
            "active" => {
                assert!(
                    !acknowledged,
                    "{context}: the shred was acknowledged (200) but the key is active after \
                     the restart"
                );
                for db in &dbs {
                    let db_info =
                        expect_json(&client, Method::GET, &db_path(db, ""), None, 200).await;
                    assert_eq!(
                        db_info["state"], "active",
                        "{context}: key active but database {db} is not: {db_info}"
                    );
                }
                let bad = check_records(&daemon, &records, 2).await;
                assert_no_violations(
                    &bad,
                    &format!("{context}: key still active, so every record must read"),
                );
            }
            "destroyed" => {
                for db in &dbs {
                    let db_info =
                        expect_json(&client, Method::GET, &db_path(db, ""), None, 200).await;
                    assert_eq!(
                        db_info["state"], "disabled",
                        "{context}: key destroyed but database {db} is not disabled: {db_info}"
                    );
                    assert_eq!(db_info["state_reason"], "key_destroyed", "{db_info}");
                }
                for (db, rec) in records.keys() {
                    let (status, body) = json(
                        &client,
                        Method::GET,
                        &db_path(db, &format!("/records/{rec}")),
                        None,
                    )
                    .await;
                    assert_eq!(
                        (status, body["error"]["code"].as_str()),
                        (423, Some("key_destroyed")),
                        "{context}: key destroyed but {db}/{rec} answers {status} {body}"
                    );
                }
                let (status, body) = json(
                    &client,
                    Method::POST,
                    &key_path(&key_id, "/wrap"),
                    Some(json!({})),
                )
                .await;
                assert_eq!(
                    status, 423,
                    "{context}: a destroyed key still wraps: {body}"
                );
                let events = expect_json(
                    &client,
                    Method::GET,
                    "/v1/audit?action=kms.secrets.delete",
                    None,
                    200,
                )
                .await;
                let crn = info["crn"].as_str().expect("crn");
                let logged = events["events"].as_array().is_some_and(|list| {
                    list.iter()
                        .any(|e| e["target"] == crn && e["outcome"] == "success")
                });
                assert!(
                    logged || !acknowledged,
                    "{context}: acknowledged shred of {crn} is not in the activity log"
                );
                if !logged {
                    event_note = " (no audit event)";
                }
            }
            other => panic!("{context}: key state {other:?} after an interrupted shred: {info}"),
        }
        assert_audit_ok(&client, &context).await;
        outcomes.push(format!(
            "{delay}ms:{state}{}{event_note}",
            if acknowledged { "(acked)" } else { "" }
        ));
    }
    eprintln!(
        "[shred] seed {seed}: uncut shred {shred_ms} ms, kills {outcomes:?}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
