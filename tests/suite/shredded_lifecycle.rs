//! Shredded keys and databases through the real daemon (DESIGN.md rules 3 and 4): shred
//! receipts show the state after the shred and the hash of their own event, shredded databases
//! are soft-deleted, restored and purged like any other and listed by state, and `key show`
//! gives each registration's purge date.

use crate::common;
use crate::lifecycle_support;

use std::time::Duration;

use common::{assert_api_error, Daemon};
use lifecycle_support::{
    assert_audit_chain_ok, audit_file_events, delete_database, delete_key, grant, poll,
    restore_database, usable_key,
};

#[tokio::test]
async fn a_shred_receipt_shows_the_state_after_the_shred_and_the_hash_of_its_own_event() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "doomed").await;
    client
        .create_database("live", Some("doomed"), None)
        .await
        .unwrap();
    client.put_record("live", "r", b"v").await.unwrap();
    let backup = client.create_backup("live").await.unwrap();
    client
        .create_database("binned", Some("doomed"), None)
        .await
        .unwrap();
    delete_database(&client, "binned").await.unwrap();

    let receipt = delete_key(&client, "doomed", true).await.unwrap();
    let mut affected: Vec<(String, String, String, String)> = receipt["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let text = |f: &str| a[f].as_str().unwrap_or("").to_string();
            (
                text("kind"),
                text("name"),
                text("state"),
                text("state_reason"),
            )
        })
        .collect();
    affected.sort();
    let reason = || "key_destroyed".to_string();
    assert_eq!(
        affected,
        vec![
            (
                "backup".into(),
                backup["id"].as_str().unwrap().into(),
                "disabled".into(),
                reason()
            ),
            (
                "database".into(),
                "binned".into(),
                "deleted".into(),
                reason()
            ),
            (
                "database".into(),
                "live".into(),
                "disabled".into(),
                reason()
            ),
        ],
        "{receipt}"
    );
    // Those are the states the API shows now.
    assert_eq!(client.get_database("live").await.unwrap().state, "disabled");

    // The receipt's hash is that of the kms.secrets.delete event itself; the event holds the
    // receipt without it.
    assert_audit_chain_ok(&client).await;
    let log = audit_file_events(&daemon);
    let event = log
        .iter()
        .find(|e| e["action"] == "kms.secrets.delete" && e["outcome"] == "success")
        .expect("the shred event");
    assert_eq!(event["hash"], receipt["audit_chain_head"], "{event}");
    let mut logged = receipt.clone();
    logged.as_object_mut().unwrap().remove("audit_chain_head");
    assert_eq!(event["details"], logged);
}

#[tokio::test]
async fn shredded_databases_are_deleted_purged_and_listed_by_state() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_SOFT_DELETE_PERIOD", "3s")]).await;
    let client = daemon.client();
    usable_key(&client, "gone").await;
    for db in ["s1", "s2"] {
        client
            .create_database(db, Some("gone"), None)
            .await
            .unwrap();
        client.put_record(db, "r", b"v").await.unwrap();
    }
    client.create_database("other", None, None).await.unwrap();
    delete_key(&client, "gone", true).await.unwrap();

    let names = |list: Vec<envault::api::DatabaseInfo>| -> Vec<String> {
        list.into_iter().map(|d| d.name).collect()
    };
    let disabled = client.list_databases_in(Some("disabled")).await.unwrap();
    assert_eq!(names(disabled), ["s1", "s2"]);
    assert_eq!(
        names(client.list_databases_in(Some("active")).await.unwrap()),
        ["other"]
    );
    assert_api_error(
        client.list_databases_in(Some("gone")).await,
        400,
        "bad_request",
    );

    // A shredded database is soft-deleted like any other; its metadata stays readable.
    let deleted = delete_database(&client, "s1").await.unwrap();
    assert_eq!(deleted["state"], "deleted", "{deleted}");
    let purge_at = deleted["purge_at"].as_str().unwrap().to_string();
    assert_eq!(
        names(client.list_databases_in(Some("deleted")).await.unwrap()),
        ["s1"]
    );
    let shown = client.get_database("s1").await.unwrap();
    assert_eq!(shown.state_reason.as_deref(), Some("key_destroyed"));
    // Restored, it comes back disabled and keeps its purge date.
    let restored = restore_database(&client, "s1").await.unwrap();
    assert_eq!(restored["state"], "disabled", "{restored}");
    assert_eq!(restored["state_reason"], "key_destroyed", "{restored}");
    assert_eq!(restored["purge_at"], purge_at.as_str(), "{restored}");
    assert_api_error(client.get_record("s1", "r").await, 423, "key_destroyed");

    // The CLI filters the same way.
    let out = daemon.cli(&["db", "list", "--state", "disabled"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("s1") && text.contains("s2") && !text.contains("other"),
        "{text}"
    );

    // The purge date holds: s1 is purged, s2 (never deleted) stays as metadata.
    poll(Duration::from_secs(15), "the purge of s1", || async {
        match client.get_database("s1").await {
            Err(e) if e.code() == Some("not_found") => Some(()),
            _ => None,
        }
    })
    .await;
    assert_eq!(client.get_database("s2").await.unwrap().state, "disabled");
    let key = client.get_key("gone").await.unwrap();
    let registered: Vec<&str> = key
        .registrations
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(registered, ["s2"]);
    // s2 goes the same way, deleted directly from its disabled state.
    delete_database(&client, "s2").await.unwrap();
    assert_eq!(
        names(client.list_databases_in(Some("disabled")).await.unwrap()),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn key_show_gives_purge_dates_and_db_create_names_the_backup_key() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "shown").await;
    let backup = client
        .create_key("shown-backups", None, None)
        .await
        .unwrap();
    grant(
        &client,
        "databases",
        "shown-backups",
        &["Reader", "AuthorizationDelegator"],
    )
    .await;
    client
        .create_database("stays", Some("shown"), None)
        .await
        .unwrap();
    client
        .create_database("leaves", Some("shown"), None)
        .await
        .unwrap();
    let deleted = delete_database(&client, "leaves").await.unwrap();
    let key = client.get_key("shown").await.unwrap();
    let regs = key.registrations.unwrap();
    let by_name = |name: &str| regs.iter().find(|r| r.name == name).unwrap().clone();
    assert_eq!(by_name("stays").purge_at, None);
    assert_eq!(
        by_name("leaves").purge_at.as_deref(),
        deleted["purge_at"].as_str()
    );
    let out = daemon.cli(&["key", "show", "shown"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PURGE_AT"), "{text}");
    assert!(
        text.contains(deleted["purge_at"].as_str().unwrap()),
        "{text}"
    );

    // db create names the key backups are made under.
    let out = daemon.cli(&["db", "create", "provided"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("under key provider-managed; backups under key provider-managed"),
        "{text}"
    );
    let out = daemon.cli(&[
        "db",
        "create",
        "split",
        "--key",
        "shown",
        "--backup-key",
        &backup.crn,
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backups under key shown-backups"), "{text}");
    let provided = client.get_database("provided").await.unwrap();
    assert_eq!(
        provided.backup_key_name.as_deref(),
        Some("provider-managed")
    );
}
