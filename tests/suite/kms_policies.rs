//! Key policies and scheduled deletion through the real daemon: `key policy --rotate-every`,
//! shown by `key show`; rotations due by policy run by the daemon's scheduler (also at start,
//! for one that fell due while it was down) and logged with the policy as initiator; the
//! instance default `[keys] rotate_every` for provider-managed keys; `key delete --force
//! --after`, `key cancel-deletion`, and the shred at the scheduled date.
//!
//! No test waits for days: while the daemon is stopped, the stored timestamps a policy counts
//! from (a key's last rotation, a scheduled destruction date) are moved into the past through
//! the store itself, exactly as time passing would leave them.

use crate::common;
use crate::lifecycle_support;

use std::time::Duration;

use common::cli_output::{fails_with, ok, ok_json};
use common::{assert_api_error, unique, Daemon};
use envault::client::Method;
use envault::store::KeyRecord;
use lifecycle_support::{call, events, expect_status, poll, rotate, usable_key};
use serde_json::{json, Value};
use uuid::Uuid;

const DAY: u64 = 86_400;

fn now() -> u64 {
    envault::service::unix_now()
}

fn unix(text: &Value) -> u64 {
    let t = time::OffsetDateTime::parse(
        text.as_str()
            .unwrap_or_else(|| panic!("not a time: {text}")),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    u64::try_from(t.unix_timestamp()).unwrap()
}

/// Rewrites a key's catalog record in the stopped daemon's store.
async fn edit_key(
    daemon: &Daemon,
    key_id: &str,
    edit: impl FnOnce(&mut KeyRecord) + Send + 'static,
) {
    let id = Uuid::parse_str(key_id).unwrap();
    common::edit_catalog_entry(daemon, "key", id.as_bytes(), move |value| {
        let mut record: KeyRecord = serde_json::from_value(value.clone()).expect("a key record");
        edit(&mut record);
        *value = serde_json::to_value(&record).unwrap();
    })
    .await;
}

async fn show(daemon: &Daemon, key: &str) -> Value {
    ok_json(&daemon.cli(&["--json", "key", "show", key]))
}

async fn version_reaches(daemon: &Daemon, key: &str, version: u64) -> Value {
    let client = daemon.client();
    poll(
        Duration::from_secs(30),
        &format!("{key} at version {version}"),
        || async {
            let info = expect_status(
                call(&client, Method::GET, &format!("/v1/keys/{key}"), None).await,
                200,
                "show key",
            );
            (info["version"].as_u64() == Some(version)).then_some(info)
        },
    )
    .await
}

/// Waits for the `kms.secrets.rotate` event of a rotation by `initiator` on `crn` (logged
/// when the job ends, after the new version is visible); returns every rotate event.
async fn rotation_logged(daemon: &Daemon, crn: &str, initiator: &str) -> Vec<Value> {
    let client = daemon.client();
    poll(
        Duration::from_secs(30),
        &format!("{initiator} rotation of {crn}"),
        || async {
            let list = events(&client, Some("kms.secrets.rotate")).await;
            list.iter()
                .any(|e| e["initiator"]["token_id"] == initiator && e["target"] == crn)
                .then_some(list)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_policy_is_shown_and_runs_when_due_also_after_downtime() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let key = usable_key(&client, "payments").await;
    let soon = usable_key(&client, "daily").await;
    let db = unique("orders");
    client
        .create_database(&db, Some("payments"), None)
        .await
        .unwrap();
    client.put_record(&db, "r1", b"first").await.unwrap();

    // Setting and showing the policy.
    let set = ok_json(&daemon.cli(&[
        "--json",
        "key",
        "policy",
        "payments",
        "--rotate-every",
        "90d",
    ]));
    assert_eq!(set["rotate_every_days"], 90);
    assert_eq!(set["rotation_source"], "key");
    let shown = show(&daemon, "payments").await;
    assert_eq!(shown["policy"]["rotate_every_days"], 90);
    assert!(shown["policy"]["last_rotation"].is_null());
    let created = unix(&shown["created_at"]);
    assert_eq!(unix(&shown["policy"]["next_rotation"]), created + 90 * DAY);
    let human = ok(&daemon.cli(&["key", "show", "payments"]));
    assert!(human.contains("every 90d"), "{human}");
    assert!(human.contains("next rotation:"), "{human}");

    // Out of bounds or malformed: refused, nothing changed.
    for bad in ["0d", "2561d", "12h", "ninety"] {
        fails_with(
            &daemon.cli(&["key", "policy", "payments", "--rotate-every", bad]),
            "bad_request",
        );
    }
    assert_eq!(
        show(&daemon, "payments").await["policy"]["rotate_every_days"],
        90
    );

    // A manual rotation moves "last" and "next".
    rotate(&client, "payments", json!({})).await.unwrap();
    let shown = show(&daemon, "payments").await;
    let last = unix(&shown["policy"]["last_rotation"]);
    assert!(now() - last < 60);
    assert_eq!(unix(&shown["policy"]["next_rotation"]), last + 90 * DAY);

    ok(&daemon.cli(&["key", "policy", "daily", "--rotate-every", "1d"]));

    // Down for 91 days (as far as the stored timestamps tell): the rotation fell due while the
    // daemon was down, and runs at start. "daily" falls due a few seconds after the start and
    // is rotated by the running scheduler.
    daemon.stop_graceful().await;
    edit_key(&daemon, &key.id, |k| {
        k.last_rotated_at = Some(now() - 91 * DAY)
    })
    .await;
    edit_key(&daemon, &soon.id, |k| {
        k.last_rotated_at = Some(now() - DAY + 4)
    })
    .await;
    daemon.restart().await;
    let client = daemon.client();
    version_reaches(&daemon, "payments", 3).await;
    assert_eq!(client.get_record(&db, "r1").await.unwrap(), b"first");
    let rotated = version_reaches(&daemon, "daily", 2).await;
    assert_eq!(rotated["state"], "active");

    rotation_logged(&daemon, &soon.crn, "policy:rotate-every-1d").await;
    let rotations = rotation_logged(&daemon, &key.crn, "policy:rotate-every-90d").await;
    let by_policy: Vec<&Value> = rotations
        .iter()
        .filter(|e| {
            e["initiator"]["token_id"]
                .as_str()
                .is_some_and(|t| t.starts_with("policy:"))
        })
        .collect();
    assert!(
        by_policy
            .iter()
            .any(|e| e["initiator"]["token_id"] == "policy:rotate-every-90d"
                && e["target"] == key.crn
                && e["outcome"] == "success"
                && e["details"]["state"] == "completed"),
        "{rotations:?}"
    );
    assert!(
        by_policy
            .iter()
            .any(|e| e["initiator"]["token_id"] == "policy:rotate-every-1d"
                && e["target"] == soon.crn),
        "{rotations:?}"
    );
    let set_events = events(&client, Some("kms.secrets.setkeypolicies")).await;
    assert!(set_events.iter().any(|e| e["outcome"] == "success"));
    // Once rotated, the next one is a whole period away: no second rotation.
    let shown = show(&daemon, "payments").await;
    assert!(unix(&shown["policy"]["next_rotation"]) > now() + 89 * DAY);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(show(&daemon, "payments").await["version"], 3);

    // Off.
    let off = ok_json(&daemon.cli(&[
        "--json",
        "key",
        "policy",
        "payments",
        "--rotate-every",
        "off",
    ]));
    assert!(off["rotate_every_days"].is_null() && off["next_rotation"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_managed_keys_follow_the_instance_default() {
    let mut daemon = Daemon::start_with_env(&[("ENVAULT_KEYS_ROTATE_EVERY", "30d")]).await;
    let client = daemon.client();
    let db = unique("plain");
    let info = client.create_database(&db, None, None).await.unwrap();
    client.put_record(&db, "r", b"value").await.unwrap();
    let key_id = info.key.clone();
    let shown = show(&daemon, &key_id).await;
    assert_eq!(shown["origin"], "provider");
    assert_eq!(shown["policy"]["rotate_every_days"], 30);
    assert_eq!(shown["policy"]["rotation_source"], "instance");
    // Their policy is the instance's, not theirs to set.
    assert_api_error(
        client.set_key_policy(&key_id, Some("90d"), None).await,
        403,
        "forbidden",
    );

    daemon.stop_graceful().await;
    edit_key(&daemon, &key_id, |k| k.last_rotated_at = None).await;
    edit_key(&daemon, &key_id, |k| {
        k.created_at = "2020-01-01T00:00:00Z".into()
    })
    .await;
    daemon.restart().await;
    version_reaches(&daemon, &key_id, 2).await;
    assert_eq!(
        daemon.client().get_record(&db, "r").await.unwrap(),
        b"value"
    );
    let rotations = rotation_logged(&daemon, &info.key_crn, "policy:rotate-every-30d").await;
    assert!(
        rotations
            .iter()
            .any(|e| e["initiator"]["token_id"] == "policy:rotate-every-30d"),
        "{rotations:?}"
    );

    // A bad default is refused at start with the key named.
    daemon.stop_graceful().await;
    let mut serve = daemon.serve_command();
    serve.env("ENVAULT_KEYS_ROTATE_EVERY", "3000d");
    let out = common::run_with_input(serve, b"", Duration::from_secs(10));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keys.rotate_every"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_deletion_locks_at_once_can_be_cancelled_and_shreds_at_its_date() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let key = usable_key(&client, "retiring").await;
    let db = unique("ledger");
    client
        .create_database(&db, Some("retiring"), None)
        .await
        .unwrap();
    client.put_record(&db, "r", b"secret ledger").await.unwrap();

    // Preview: nothing changes.
    let preview = ok(&daemon.cli(&[
        "key",
        "delete",
        "retiring",
        "--force",
        "--after",
        "7d",
        "--dry-run",
    ]));
    assert!(preview.contains(&db), "{preview}");
    assert_eq!(client.get_record(&db, "r").await.unwrap(), b"secret ledger");
    let preview = ok_json(&daemon.cli(&[
        "--json",
        "key",
        "delete",
        "retiring",
        "--after",
        "7d",
        "--dry-run",
    ]));
    assert_eq!(preview["dry_run"], true);
    assert_eq!(preview["action"], "delete after 7d");

    // Refusals: in use without force, bad waiting periods.
    fails_with(
        &daemon.cli(&["key", "delete", "retiring", "--after", "7d"]),
        "key_in_use",
    );
    for bad in ["12h", "31d", "soon"] {
        fails_with(
            &daemon.cli(&["key", "delete", "retiring", "--force", "--after", bad]),
            "bad_request",
        );
    }
    assert_eq!(show(&daemon, "retiring").await["state"], "active");

    // Scheduled: unreadable at once, dated.
    let scheduled = ok_json(&daemon.cli(&[
        "--json", "key", "delete", "retiring", "--force", "--after", "7d",
    ]));
    assert_eq!(scheduled["state"], "pending_destruction");
    let at = unix(&scheduled["destroy_at"]);
    assert!(at.abs_diff(now() + 7 * DAY) < 60, "{scheduled}");
    assert_api_error(
        client.get_record(&db, "r").await,
        423,
        "key_pending_destruction",
    );
    assert_api_error(
        client.put_record(&db, "w", b"x").await,
        423,
        "key_pending_destruction",
    );
    assert_api_error(
        client.wrap("retiring", None, &[]).await,
        423,
        "key_pending_destruction",
    );
    assert_api_error(
        lifecycle_support::enable_key(&client, "retiring").await,
        423,
        "key_pending_destruction",
    );
    fails_with(
        &daemon.cli(&["key", "delete", "retiring", "--force", "--after", "7d"]),
        "conflict",
    );
    let human = ok(&daemon.cli(&["key", "show", "retiring"]));
    assert!(
        human.contains("pending_destruction") && human.contains("destroy at:"),
        "{human}"
    );

    // Cancelled: readable again.
    let cancelled = ok_json(&daemon.cli(&["--json", "key", "cancel-deletion", "retiring"]));
    assert_eq!(cancelled["state"], "active");
    assert!(cancelled.get("destroy_at").is_none_or(Value::is_null));
    assert_eq!(client.get_record(&db, "r").await.unwrap(), b"secret ledger");
    fails_with(
        &daemon.cli(&["key", "cancel-deletion", "retiring"]),
        "conflict",
    );

    // Scheduled again; the date passes while the daemon is down: shredded at start, with the
    // same receipt as an immediate deletion.
    ok(&daemon.cli(&["key", "delete", "retiring", "--force", "--after", "7d"]));
    daemon.stop_graceful().await;
    edit_key(&daemon, &key.id, |k| k.destroy_at = Some(now() - 1)).await;
    daemon.restart().await;
    let client = daemon.client();
    poll(Duration::from_secs(30), "the scheduled shred", || async {
        let info = show(&daemon, "retiring").await;
        (info["state"] == "destroyed").then_some(())
    })
    .await;
    assert_api_error(client.get_record(&db, "r").await, 423, "key_destroyed");
    let deletes = events(&client, Some("kms.secrets.delete")).await;
    let shred = deletes
        .iter()
        .find(|e| e["target"] == key.crn && e["outcome"] == "success")
        .unwrap_or_else(|| panic!("{deletes:?}"));
    assert_eq!(shred["initiator"]["token_id"], "policy:scheduled-deletion");
    assert_eq!(shred["details"]["destroyed_versions"], json!([1]));
    assert!(shred["details"]["affected"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == db.as_str()));
    let scheduled = events(&client, Some("kms.secrets.scheduledeletion")).await;
    let succeeded = |list: &[Value]| list.iter().filter(|e| e["outcome"] == "success").count();
    assert_eq!(succeeded(&scheduled), 2, "{scheduled:?}");
    assert!(
        scheduled.iter().any(|e| e["reason"] == "key_in_use"),
        "{scheduled:?}"
    );
    let cancels = events(&client, Some("kms.secrets.canceldeletion")).await;
    assert_eq!(succeeded(&cancels), 1, "{cancels:?}");
    // The material is gone from the keystore.
    daemon.stop_graceful().await;
    let keystore = envault::keystore::file::FileKeystore::open(
        &daemon.data_dir,
        &daemon.data_dir.join("master.key"),
    )
    .expect("open the keystore");
    use envault::keystore::RootKeyBackend as _;
    let key_id = Uuid::parse_str(&key.id).unwrap();
    assert!(!keystore.key_ids().unwrap().contains(&key_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_force_delete_still_shreds_at_once_even_when_scheduled() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "now").await;
    let db = unique("gone");
    client
        .create_database(&db, Some("now"), None)
        .await
        .unwrap();
    ok(&daemon.cli(&["key", "delete", "now", "--force", "--after", "30d"]));
    let receipt = ok_json(&daemon.cli(&["--json", "key", "delete", "now", "--force"]));
    assert_eq!(receipt["destroyed_versions"], json!([1]));
    assert_eq!(show(&daemon, "now").await["state"], "destroyed");
    fails_with(&daemon.cli(&["key", "cancel-deletion", "now"]), "conflict");
}
