//! A shred is all or nothing under SIGKILL.

use super::*;

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
