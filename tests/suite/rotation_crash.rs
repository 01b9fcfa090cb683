//! Rotation survives `kill -9` (DESIGN.md rule 6: "a resumable job"): a key protecting a few
//! hundred databases is rotated without waiting, the daemon is killed after a seeded random
//! delay, and after the restart the job resumes to completion. Every record reads back exactly
//! right after the restart (while the job runs), after it completes and after a clean restart;
//! the key's version, the wrapped DEKs in the catalog and the keystore's versions agree.
//!
//! Replay a schedule with `ROTATION_CRASH_SEED=<n>`.

use crate::common;
use crate::common::Rng;
use crate::lifecycle_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Daemon;
use envault::client::{Client, Method};
use envault::keystore::file::FileKeystore;
use envault::keystore::RootKeyBackend as _;
use envault::store::fjall_store::FjallStore;
use envault::store::{codec, DekRecord, Store as _};
use lifecycle_support::{call, key_path, poll, usable_key};
use serde_json::{json, Value};
use uuid::Uuid;

/// Databases under the rotated key: enough DEKs for several rewrap batches.
const DATABASES: usize = 200;
/// Records per database.
const RECORDS: usize = 2;
/// Parallel clients for setup and verification.
const CLIENTS: usize = 4;
/// Kill points in the plain rotation (the last one races the request itself).
const CRASHES: usize = 5;
const KEY: &str = "rotated";

/// Every record: (database, record key) → value.
type Expected = BTreeMap<(String, String), Vec<u8>>;

fn db_name(i: usize) -> String {
    format!("rot-db-{i:03}")
}

/// Creates the databases and their records, `CLIENTS` at a time.
async fn populate(daemon: &Daemon, rng: &mut Rng) -> Expected {
    let salt = rng.next_u64();
    let mut tasks = Vec::new();
    for lane in 0..CLIENTS {
        let client = daemon.client();
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in (lane..DATABASES).step_by(CLIENTS) {
                let db = db_name(i);
                client
                    .create_database(&db, Some(KEY), None)
                    .await
                    .unwrap_or_else(|e| panic!("create {db}: {e}"));
                for r in 0..RECORDS {
                    let rec = format!("rec-{r}");
                    let value = format!("{db}/{rec}/{salt:016x}/{}", "v".repeat(r * 7));
                    client
                        .put_record(&db, &rec, value.as_bytes())
                        .await
                        .unwrap_or_else(|e| panic!("put {db}/{rec}: {e}"));
                    written.push(((db.clone(), rec), value.into_bytes()));
                }
            }
            written
        }));
    }
    let mut expected = Expected::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    assert_eq!(expected.len(), DATABASES * RECORDS);
    expected
}

/// Reads every record (`CLIENTS` in parallel) and compares it exactly.
async fn verify_all(daemon: &Daemon, expected: &Arc<Expected>, stage: &str) {
    let mut tasks = Vec::new();
    for lane in 0..CLIENTS {
        let client = daemon.client();
        let expected = Arc::clone(expected);
        let stage = stage.to_string();
        tasks.push(tokio::spawn(async move {
            for ((db, rec), value) in expected.iter().skip(lane).step_by(CLIENTS) {
                let got = client
                    .get_record(db, rec)
                    .await
                    .unwrap_or_else(|e| panic!("{stage}: read {db}/{rec}: {e}"));
                assert!(
                    got == *value,
                    "{stage}: {db}/{rec} reads back different bytes"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

async fn key_version(client: &Client) -> u32 {
    client.get_key(KEY).await.unwrap().version
}

/// Polls the rotation until its job is gone: `completed` (by the resumed job) or 404 (the job
/// finished before the kill, so no status survived). Returns the completed status, if any.
async fn wait_rotation_done(client: &Client, target: u32, stage: &str) -> Option<Value> {
    poll(
        Duration::from_secs(20),
        &format!("{stage}: rotation to v{target} to complete"),
        || async {
            let (status, body) = call(client, Method::GET, &key_path(KEY, "/rotation"), None).await;
            match status {
                404 => Some(None),
                200 => {
                    assert_eq!(body["target_version"], target, "{stage}: {body}");
                    match body["state"].as_str() {
                        Some("completed") => {
                            assert_eq!(body["done"], body["total"], "{stage}: {body}");
                            Some(Some(body))
                        }
                        Some("running") | Some("pending") => None,
                        other => panic!("{stage}: unexpected rotation state {other:?}: {body}"),
                    }
                }
                _ => panic!("{stage}: GET rotation answered {status} {body}"),
            }
        },
    )
    .await
}

/// With the daemon stopped: every DEK under the key is wrapped by `version`, no rotation job is
/// left, and the keystore holds exactly `versions` of the key.
fn check_at_rest(daemon: &Daemon, key_id: Uuid, version: u32, versions: &[u32], stage: &str) {
    {
        let store =
            FjallStore::open(&daemon.data_dir.join("fjall"), 8 << 20).expect("open the store");
        let deks: Vec<DekRecord> = store
            .catalog_scan(b"dek/")
            .expect("scan DEKs")
            .iter()
            .map(|(k, v)| codec::decode(k, v).expect("decode a DEK record"))
            .collect();
        let under: Vec<&DekRecord> = deks.iter().filter(|d| d.key_id == key_id).collect();
        assert_eq!(under.len(), DATABASES, "{stage}: DEKs under the key");
        let stale: Vec<(Uuid, u32)> = under
            .iter()
            .filter(|d| d.key_version != version)
            .map(|d| (d.database_id, d.key_version))
            .collect();
        assert!(
            stale.is_empty(),
            "{stage}: {} DEKs not rewrapped to v{version}: {:?}",
            stale.len(),
            &stale[..stale.len().min(5)]
        );
        let jobs = store.catalog_scan(b"job/").expect("scan jobs");
        assert!(
            jobs.is_empty(),
            "{stage}: a rotation job is left in the catalog"
        );
    }
    let keystore = FileKeystore::open(&daemon.data_dir, &daemon.data_dir.join("master.key"))
        .expect("open the keystore");
    assert_eq!(
        keystore.versions(key_id).expect("versions"),
        versions,
        "{stage}: keystore versions"
    );
}

/// Sends `POST /v1/keys/{KEY}/rotate` with `body` and kills the daemon `delay` later. With
/// `race_request` the kill is timed from sending (the answer may never come); otherwise from
/// the 202, which says the new version and the job are durable. Returns the target version if
/// the 202 was seen.
async fn rotate_and_kill(
    daemon: &mut Daemon,
    body: Value,
    delay: Duration,
    race_request: bool,
    stage: &str,
) -> Option<u32> {
    let client = daemon.client();
    let path = key_path(KEY, "/rotate");
    if race_request {
        let request = tokio::spawn(async move {
            client
                .request(Method::POST, &path, Some(body.to_string().as_bytes()))
                .await
        });
        tokio::time::sleep(delay).await;
        daemon.kill9().await;
        return match request.await.unwrap() {
            Ok((202, bytes)) => {
                let answer: Value = serde_json::from_slice(&bytes).unwrap();
                Some(answer["version"].as_u64().unwrap() as u32)
            }
            Ok((status, bytes)) => panic!(
                "{stage}: rotate answered {status} {}",
                String::from_utf8_lossy(&bytes)
            ),
            Err(_) => None, // killed before answering
        };
    }
    let (status, answer) = call(&client, Method::POST, &path, Some(body)).await;
    assert_eq!(status, 202, "{stage}: rotate without waiting: {answer}");
    let target = answer["version"].as_u64().expect("version") as u32;
    // (`answer["job"]` is not checked here: it can describe the previous job, see
    // `lifecycle_api::a_rotation_started_without_waiting_reports_its_own_job`.)
    tokio::time::sleep(delay).await;
    daemon.kill9().await;
    Some(target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_resumes_after_kill_9_and_every_record_stays_readable() {
    let seed = std::env::var("ROTATION_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0070_7a7e_c4a5_u64);
    eprintln!("rotation_crash seed: {seed} (set ROTATION_CRASH_SEED to replay)");
    let mut rng = Rng::new(seed);

    let mut daemon = Daemon::start().await;
    let key = usable_key(&daemon.client(), KEY).await;
    let key_id = Uuid::parse_str(&key.id).unwrap();
    let setup = Instant::now();
    let mut expected = populate(&daemon, &mut rng).await;
    eprintln!("setup: {DATABASES} databases in {:?}", setup.elapsed());
    let mut shared = Arc::new(expected.clone());
    verify_all(&daemon, &shared, "before any rotation").await;

    // Calibrate the kill window on one uninterrupted rotation.
    let client = daemon.client();
    let started = Instant::now();
    let (status, answer) = call(
        &client,
        Method::POST,
        &key_path(KEY, "/rotate"),
        Some(json!({"wait": true})),
    )
    .await;
    let rotation_time = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["job"]["total"], DATABASES as u64, "{answer}");
    assert_eq!(answer["job"]["done"], DATABASES as u64, "{answer}");
    verify_all(&daemon, &shared, "after an uninterrupted rotation").await;
    let window = (rotation_time.as_micros() as u64 * 3 / 2).max(5_000);
    eprintln!("one rotation of {DATABASES} DEKs: {rotation_time:?}; kill window {window} us");

    let mut version = 2;
    let mut resumed = 0;
    let mut delays: Vec<Duration> = vec![Duration::ZERO];
    while delays.len() < CRASHES - 1 {
        delays.push(Duration::from_micros(rng.below(window)));
    }
    delays.push(Duration::from_micros(rng.below(3_000)));
    for (round, delay) in delays.into_iter().enumerate() {
        let race_request = round == CRASHES - 1;
        let stage = format!(
            "crash {round} (kill {delay:?} after the {})",
            if race_request { "request" } else { "202" }
        );
        eprintln!("{stage}");
        let seen = rotate_and_kill(
            &mut daemon,
            json!({"wait": false}),
            delay,
            race_request,
            &stage,
        )
        .await;
        daemon.restart().await;
        let client = daemon.client();
        let now = key_version(&client).await;
        match seen {
            Some(target) => {
                assert_eq!(target, version + 1, "{stage}");
                assert_eq!(now, target, "{stage}: the acknowledged version was lost");
            }
            None => assert!(
                now == version || now == version + 1,
                "{stage}: version {now} after a rotation from v{version}"
            ),
        }
        verify_all(
            &daemon,
            &shared,
            &format!("{stage}: right after the restart"),
        )
        .await;
        if now > version {
            match wait_rotation_done(&client, now, &stage).await {
                Some(status) => {
                    eprintln!(
                        "  resumed: rewrapped {} of {DATABASES} DEKs after the restart",
                        status["total"]
                    );
                    resumed += 1;
                }
                None => eprintln!("  the job had finished before the kill"),
            }
        } else {
            eprintln!("  killed before the new version was committed: nothing to resume");
        }
        version = now;
        verify_all(
            &daemon,
            &shared,
            &format!("{stage}: after the rotation completed"),
        )
        .await;
        // New writes land under the current version and stay readable.
        let db = db_name(rng.below(DATABASES as u64) as usize);
        let rec = format!("late-{round}");
        let value = format!("written after crash {round}").into_bytes();
        client.put_record(&db, &rec, &value).await.unwrap();
        expected.insert((db, rec), value);
        shared = Arc::new(expected.clone());

        daemon.stop_graceful().await;
        let all: Vec<u32> = (1..=version).collect();
        check_at_rest(&daemon, key_id, version, &all, &stage);
        daemon.restart().await;
        verify_all(&daemon, &shared, &format!("{stage}: after a clean restart")).await;
    }

    assert!(
        resumed > 0,
        "no kill landed inside a rotation job: nothing was resumed"
    );

    // App-held ciphertext from before the retiring rotation must stop working afterwards.
    let client = daemon.client();
    let old = client.wrap(KEY, Some(b"old material"), &[]).await.unwrap();
    assert_eq!(old.key_version, version);

    // Retiring rotation, killed mid-way as well.
    let delay = Duration::from_micros(rng.below(window));
    let stage = format!("retiring rotation (kill {delay:?} after the 202)");
    eprintln!("{stage}");
    let target = rotate_and_kill(
        &mut daemon,
        json!({"wait": false, "retire_old": true}),
        delay,
        false,
        &stage,
    )
    .await
    .expect("202");
    daemon.restart().await;
    let client = daemon.client();
    assert_eq!(key_version(&client).await, target, "{stage}");
    verify_all(
        &daemon,
        &shared,
        &format!("{stage}: right after the restart"),
    )
    .await;
    if let Some(status) = wait_rotation_done(&client, target, &stage).await {
        let retired: Vec<u64> = status["retired_versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(
            retired.iter().all(|v| *v < target as u64),
            "{stage}: {status}"
        );
    }
    verify_all(&daemon, &shared, &format!("{stage}: after completion")).await;
    let (status, answer) = call(
        &client,
        Method::POST,
        &key_path(KEY, "/unwrap"),
        Some(json!({"ciphertext": old.ciphertext})),
    )
    .await;
    assert_eq!(
        status, 400,
        "{stage}: a retired version still unwraps: {answer}"
    );
    daemon.stop_graceful().await;
    check_at_rest(&daemon, key_id, target, &[target], &stage);
    daemon.restart().await;
    verify_all(
        &daemon,
        &shared,
        "after the retiring rotation and a clean restart",
    )
    .await;
    assert_eq!(key_version(&daemon.client()).await, target);
}
