//! A rotation killed with SIGKILL completes after the restart, and no record is lost or unreadable.

use super::*;

/// Databases under the rotated key: five rewrap batches of 64 (one atomic commit each).
const ROTATION_DBS: usize = 300;
/// Rotations interrupted by a kill.
const ROTATION_KILLS: usize = 8;

async fn key_version(client: &Client, key: &str) -> u64 {
    let info = expect_json(client, Method::GET, &key_path(key, ""), None, 200).await;
    assert_eq!(info["state"], "active", "key {key}: {info}");
    info["version"].as_u64().expect("key version")
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
