//! Dual authorization of key deletion through the real daemon: a key's policy (`key policy
//! --dual-auth on`) or the instance's `[lifecycle] dual_auth_delete`; the first operator's
//! delete only authorizes (202, everything keeps working), the same token twice is refused, a
//! different operator token carries out the deletion it asks for (now or scheduled), either
//! can cancel, an approval lapses after 7 days, and the activity log names both initiators.

use crate::common;
use crate::lifecycle_support;

use std::process::Output;

use common::cli_output::{fails_with, ok_json};
use common::{unique, Daemon, STARTUP_TIMEOUT};
use envault::client::Method;
use lifecycle_support::{call, events, expect_status, usable_key};
use serde_json::{json, Value};
use uuid::Uuid;

/// Runs the CLI with `token` (or the daemon's first operator token).
fn cli_as(daemon: &Daemon, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = daemon.cli_command();
    if let Some(token) = token {
        command.arg("--token").arg(token);
    }
    command.args(args);
    common::run_with_input(command, b"", STARTUP_TIMEOUT)
}

/// A second operator token: (id, secret).
async fn second_operator(daemon: &Daemon) -> (String, String) {
    let created = expect_status(
        call(
            &daemon.client(),
            Method::POST,
            "/v1/tokens",
            Some(json!({ "role": "operator", "name": unique("second") })),
        )
        .await,
        201,
        "create operator token",
    );
    (
        created["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    )
}

async fn first_operator_id(daemon: &Daemon) -> String {
    let list = expect_status(
        call(&daemon.client(), Method::GET, "/v1/tokens", None).await,
        200,
        "tokens",
    );
    list["tokens"][0]["id"].as_str().unwrap().to_string()
}

fn policy(daemon: &Daemon, key: &str) -> Value {
    ok_json(&cli_as(daemon, None, &["--json", "key", "policy", key]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_operators_are_needed_and_either_can_cancel() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "guarded").await;
    let db = unique("vault");
    client
        .create_database(&db, Some("guarded"), None)
        .await
        .unwrap();
    client.put_record(&db, "r", b"kept").await.unwrap();
    let a = first_operator_id(&daemon).await;
    let (b, b_secret) = second_operator(&daemon).await;

    let set = ok_json(&cli_as(
        &daemon,
        None,
        &["--json", "key", "policy", "guarded", "--dual-auth", "on"],
    ));
    assert_eq!(set["dual_auth_delete"], true);
    assert_eq!(set["dual_auth_source"], "key");

    // First approval: nothing deleted, everything keeps working.
    let first = ok_json(&cli_as(
        &daemon,
        None,
        &["--json", "key", "delete", "guarded", "--force"],
    ));
    assert_eq!(first["state"], "deletion_authorized");
    assert_eq!(first["authorized_by"], a.as_str());
    assert_eq!(client.get_record(&db, "r").await.unwrap(), b"kept");
    client
        .put_record(&db, "r2", b"still writable")
        .await
        .unwrap();
    assert_eq!(
        policy(&daemon, "guarded")["deletion_authorized_by"],
        a.as_str()
    );
    // The same token twice: refused clearly.
    let stderr = fails_with(
        &cli_as(&daemon, None, &["key", "delete", "guarded", "--force"]),
        "conflict",
    );
    assert!(stderr.contains("different operator token"), "{stderr}");

    // The other operator cancels it.
    ok_json(&cli_as(
        &daemon,
        Some(&b_secret),
        &["--json", "key", "cancel-deletion", "guarded"],
    ));
    assert!(policy(&daemon, "guarded")["deletion_authorized_by"].is_null());
    // Now B's delete is only a first approval again, and A carries it out.
    let again = ok_json(&cli_as(
        &daemon,
        Some(&b_secret),
        &["--json", "key", "delete", "guarded", "--force"],
    ));
    assert_eq!(again["authorized_by"], b.as_str());
    let receipt = ok_json(&cli_as(
        &daemon,
        None,
        &["--json", "key", "delete", "guarded", "--force"],
    ));
    assert_eq!(receipt["destroyed_versions"], json!([1]));
    lifecycle_support::expect_status(
        call(
            &client,
            Method::GET,
            &format!("/v1/databases/{db}/records/r"),
            None,
        )
        .await,
        423,
        "record after the shred",
    );

    let approvals = events(&client, Some("kms.secrets.setkeyfordeletion")).await;
    let ok: Vec<&Value> = approvals
        .iter()
        .filter(|e| e["outcome"] == "success")
        .collect();
    assert!(ok
        .iter()
        .any(|e| e["initiator"]["token_id"] == a.as_str()
            && e["details"]["authorized_by"] == json!([a])));
    assert!(
        ok.iter().any(|e| e["initiator"]["token_id"] == a.as_str()
            && e["details"]["authorized_by"] == json!([b, a])),
        "{approvals:?}"
    );
    assert!(approvals
        .iter()
        .any(|e| e["outcome"] == "failure" && e["reason"] == "conflict"));
    let cancels = events(&client, Some("kms.secrets.unsetkeyfordeletion")).await;
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0]["initiator"]["token_id"], b.as_str());
    assert_eq!(cancels[0]["details"]["authorized_by"], json!([a]));
    let deletes = events(&client, Some("kms.secrets.delete")).await;
    assert!(deletes
        .iter()
        .any(|e| e["outcome"] == "success" && e["initiator"]["token_id"] == a.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_wide_dual_auth_with_scheduled_deletion_and_lapsed_approvals() {
    let mut daemon = Daemon::start_with_env(&[("ENVAULT_DUAL_AUTH_DELETE", "true")]).await;
    let client = daemon.client();
    usable_key(&client, "later").await;
    let lapsing = usable_key(&client, "lapsing").await;
    let (b, b_secret) = second_operator(&daemon).await;
    assert_eq!(policy(&daemon, "later")["dual_auth_source"], "instance");

    // Scheduled deletion: A approves, B schedules.
    let first = ok_json(&cli_as(
        &daemon,
        None,
        &["--json", "key", "delete", "later", "--after", "7d"],
    ));
    assert_eq!(first["state"], "deletion_authorized");
    let scheduled = ok_json(&cli_as(
        &daemon,
        Some(&b_secret),
        &["--json", "key", "delete", "later", "--after", "7d"],
    ));
    assert_eq!(scheduled["state"], "pending_destruction");
    // The approval was used up.
    assert!(policy(&daemon, "later")["deletion_authorized_by"].is_null());
    // Cancelling the scheduled deletion needs no second operator.
    let cancelled = ok_json(&cli_as(
        &daemon,
        None,
        &["--json", "key", "cancel-deletion", "later"],
    ));
    assert_eq!(cancelled["state"], "active");

    // An approval lapses after 7 days: then the next delete is a first approval again.
    ok_json(&cli_as(
        &daemon,
        None,
        &["--json", "key", "delete", "lapsing"],
    ));
    daemon.stop_graceful().await;
    let id = Uuid::parse_str(&lapsing.id).unwrap();
    common::edit_catalog_entry(&daemon, "policy", id.as_bytes(), |value| {
        let now = envault::service::unix_now();
        value["delete_approval"]["expires_at"] = json!(now - 1);
    })
    .await;
    daemon.restart().await;
    assert!(policy(&daemon, "lapsing")["deletion_authorized_by"].is_null());
    let renewed = ok_json(&cli_as(
        &daemon,
        Some(&b_secret),
        &["--json", "key", "delete", "lapsing"],
    ));
    assert_eq!(renewed["state"], "deletion_authorized");
    assert_eq!(renewed["authorized_by"], b.as_str());
    let shown = ok_json(&cli_as(
        &daemon,
        None,
        &["--json", "key", "show", "lapsing"],
    ));
    assert_eq!(shown["state"], "active");
}
