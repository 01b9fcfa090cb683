//! A soft-delete purge killed with SIGKILL completes after the restart, at its time.

use super::*;

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
