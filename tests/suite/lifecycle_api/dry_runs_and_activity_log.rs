//! Dry runs preview the impact and change nothing; the activity log records every action and denial, no secret.

use super::*;

#[tokio::test]
async fn dry_runs_preview_the_impact_and_change_nothing() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = usable_key(&client, "previewed").await;
    let mut data = BTreeMap::new();
    for (db, count) in [("p-small", 2usize), ("p-large", 5)] {
        client
            .create_database(db, Some("previewed"), None)
            .await
            .unwrap();
        data.insert(db, fill(&client, db, count).await);
    }
    client
        .create_database("p-gone", Some("previewed"), None)
        .await
        .unwrap();
    delete_database(&client, "p-gone").await.unwrap();
    let events_before = events(&client, None).await.len();

    for (method, path, action) in [
        (
            Method::POST,
            key_path("previewed", "/rotate?dry_run=true"),
            "rotate",
        ),
        (
            Method::POST,
            key_path("previewed", "/disable?dry_run=true"),
            "disable",
        ),
        (
            Method::DELETE,
            key_path("previewed", "?dry_run=true"),
            "delete",
        ),
        (
            Method::DELETE,
            key_path(&key.crn, "?dry_run=true&force=true"),
            "delete",
        ),
    ] {
        let preview = expect_status(call(&client, method, &path, None).await, 200, &path);
        assert_eq!(preview["dry_run"], true, "{preview}");
        assert_eq!(preview["action"], action, "{preview}");
        assert_eq!(preview["key"], key.crn.as_str());
        let mut listed: Vec<(String, u64, String)> = preview["databases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_string(),
                    d["records"].as_u64().unwrap(),
                    d["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            vec![
                ("p-gone".to_string(), 0, "deleted".to_string()),
                ("p-large".to_string(), 5, "active".to_string()),
                ("p-small".to_string(), 2, "active".to_string()),
            ],
            "{preview}"
        );
        assert_eq!(preview["total_records"], 7, "{preview}");
        assert_eq!(preview["wrapped_deks"], 3, "{preview}");
    }

    // Nothing changed: version, state, data, rotation, audit.
    let after = client.get_key("previewed").await.unwrap();
    assert_eq!((after.version, after.state.as_str()), (1, "active"));
    for (db, records) in &data {
        assert_records(&client, db, records).await;
    }
    let rotation = call(
        &client,
        Method::GET,
        &key_path("previewed", "/rotation"),
        None,
    )
    .await;
    assert_json_error(&rotation, 404, "not_found");
    let new_events: Vec<Value> = events(&client, None).await.split_off(events_before);
    assert!(
        new_events
            .iter()
            .all(|e| !e["action"].as_str().unwrap().starts_with("kms.secrets.")),
        "a dry run logged a key action: {new_events:?}"
    );
    // An unknown query parameter is refused rather than ignored (a typo must not shred).
    let answer = call(
        &client,
        Method::DELETE,
        &key_path("previewed", "?dryrun=true"),
        None,
    )
    .await;
    assert_json_error(&answer, 400, "bad_request");
    assert_eq!(client.get_key("previewed").await.unwrap().state, "active");
}

#[tokio::test]
async fn the_activity_log_records_every_action_and_denial_but_no_secret() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let mut rng = Rng::new(0xa0d1_7000);
    let imported = rng.bytes(32);
    let marker = format!("AUDIT-MARKER-{}", unique("m"));
    let wrap_secret = format!("WRAP-SECRET-{}", unique("w")).into_bytes();

    let key = client
        .create_key("audited", Some(&imported), None)
        .await
        .unwrap();
    assert_eq!(key.origin, "imported");
    let granted = expect_status(
        grant(&client, "databases", "audited", &["Reader"]).await,
        201,
        "grant",
    );
    let db = client
        .create_database("audited-db", Some("audited"), None)
        .await
        .unwrap();
    client
        .put_record("audited-db", "rec", marker.as_bytes())
        .await
        .unwrap();
    let wrapped = client
        .wrap("audited", Some(&wrap_secret), &[])
        .await
        .unwrap();
    client
        .unwrap("audited", &wrapped.ciphertext, &[])
        .await
        .unwrap();
    rotate(&client, "audited", json!({})).await.unwrap();
    disable_key(&client, "audited").await.unwrap();
    assert_api_error(
        client.get_record("audited-db", "rec").await,
        423,
        "key_suspended",
    );
    enable_key(&client, "audited").await.unwrap();
    delete_database(&client, "audited-db").await.unwrap();
    restore_database(&client, "audited-db").await.unwrap();
    assert_api_error(
        daemon
            .client_with_token(Some("evt_wrong"))
            .list_keys()
            .await,
        401,
        "unauthenticated",
    );
    assert_json_error(
        &grant(&client, "databases", "audited", &["Reader"]).await,
        409,
        "duplicate_policy",
    );
    revoke(&client, granted["id"].as_str().unwrap())
        .await
        .unwrap();
    let temp = client.create_key("short-lived", None, None).await.unwrap();
    delete_key(&client, "short-lived", false).await.unwrap();

    let all = events(&client, None).await;
    let expected: Vec<(&str, &str, &str)> = vec![
        ("kms.secrets.create", "success", key.crn.as_str()),
        ("iam.authorizations.create", "success", key.crn.as_str()),
        ("databases.create", "success", db.crn.as_str()),
        ("kms.secrets.wrap", "success", key.crn.as_str()),
        ("kms.secrets.unwrap", "success", key.crn.as_str()),
        ("kms.secrets.rotate", "success", key.crn.as_str()),
        ("kms.secrets.disable", "success", key.crn.as_str()),
        ("databases.records.read", "denied", ""),
        ("kms.secrets.enable", "success", key.crn.as_str()),
        ("databases.delete", "success", db.crn.as_str()),
        ("databases.restore", "success", db.crn.as_str()),
        ("auth.denied", "denied", ""),
        ("iam.authorizations.create", "failure", ""),
        ("iam.authorizations.delete", "success", ""),
        ("kms.secrets.create", "success", temp.crn.as_str()),
        ("kms.secrets.delete", "success", temp.crn.as_str()),
    ];
    // In this order, and no key or database action beyond these.
    let mut at = 0;
    for (action, outcome, target) in &expected {
        let found = all[at..]
            .iter()
            .position(|e| e["action"] == *action && e["outcome"] == *outcome)
            .unwrap_or_else(|| panic!("no {action} {outcome} after event {at} in {all:#?}"));
        let event = &all[at + found];
        if !target.is_empty() {
            assert_eq!(event["target"], *target, "{event}");
        }
        at += found + 1;
    }
    let counted = |action: &str| all.iter().filter(|e| e["action"] == action).count();
    for (action, count) in [
        ("kms.secrets.create", 2),
        ("kms.secrets.rotate", 1),
        ("kms.secrets.disable", 1),
        ("kms.secrets.enable", 1),
        ("kms.secrets.delete", 1),
        ("kms.secrets.wrap", 1),
        ("kms.secrets.unwrap", 1),
        ("databases.create", 1),
        ("databases.delete", 1),
        ("databases.restore", 1),
        ("iam.authorizations.create", 2),
        ("iam.authorizations.delete", 1),
        ("auth.denied", 1),
    ] {
        assert_eq!(counted(action), count, "{action} events in {all:#?}");
    }
    let denied_read = all
        .iter()
        .find(|e| e["action"] == "databases.records.read")
        .unwrap();
    assert_eq!(denied_read["reason"], "key_suspended", "{denied_read}");
    // The initiator names the token by id and the peer by its uid (SO_PEERCRED).
    let uid = std::os::unix::fs::MetadataExt::uid(&daemon.dir().metadata().unwrap());
    let created = all
        .iter()
        .find(|e| e["action"] == "kms.secrets.create")
        .unwrap();
    assert_eq!(created["initiator"]["peer_uid"], uid, "{created}");
    let auth_denied = all.iter().find(|e| e["action"] == "auth.denied").unwrap();
    assert_eq!(
        auth_denied["initiator"]["token_id"], "anonymous",
        "{auth_denied}"
    );
    assert_eq!(auth_denied["reason"], "unauthenticated");
    for event in &all {
        for field in ["time", "action", "target", "outcome"] {
            assert!(event[field].is_string(), "{field} missing in {event}");
        }
        time::OffsetDateTime::parse(
            event["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("time of {event}: {e}"));
        let token_id = event["initiator"]["token_id"].as_str().unwrap();
        assert!(!token_id.is_empty() && token_id != daemon.token, "{event}");
    }

    // Filters: exact action, a prefix, and since.
    let rotates = events(&client, Some("kms.secrets.rotate")).await;
    assert_eq!(rotates.len(), 1);
    let kms = events(&client, Some("kms.secrets.*")).await;
    assert_eq!(kms.len(), 8, "{kms:#?}");
    assert!(kms
        .iter()
        .all(|e| e["action"].as_str().unwrap().starts_with("kms.secrets.")));
    let since = all.last().unwrap()["time"].as_str().unwrap();
    let path = format!("/v1/audit?since={}", envault::client::encode_segment(since));
    let recent = expect_status(call(&client, Method::GET, &path, None).await, 200, &path);
    let recent = recent["events"].as_array().unwrap();
    assert!(!recent.is_empty() && recent.len() < all.len());
    assert!(recent.iter().all(|e| e["time"].as_str().unwrap() >= since));

    // The chain verifies and matches the file line for line.
    let report = assert_audit_chain_ok(&client).await;
    let lines = audit_file_events(&daemon);
    assert_eq!(report["events"].as_u64().unwrap() as usize, lines.len());
    assert_eq!(report["head"], lines.last().unwrap()["hash"]);
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
    }
    // The log is not readable without a token.
    let answer = daemon
        .client_with_token(None)
        .request(Method::GET, "/v1/audit", None)
        .await
        .unwrap();
    assert_eq!(answer.0, 401);

    // No key material, wrapped secret, record value or token secret in the log.
    let mut needles: Vec<Needle> = encodings("imported key", &imported);
    needles.extend(encodings("record marker", marker.as_bytes()));
    needles.extend(encodings("wrapped plaintext", &wrap_secret));
    needles.extend(encodings("operator token", daemon.token.as_bytes()));
    let log_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        daemon.data_dir.join("audit.log"),
        log_dir.path().join("audit.log"),
    )
    .unwrap();
    assert_absent_under(log_dir.path(), &needles);
    // Nor anywhere else in the data dir, apart from the operator token file itself.
    needles.retain(|n| !n.what.starts_with("operator token"));
    assert_absent_under(&daemon.data_dir, &needles);
}
