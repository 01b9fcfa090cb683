//! Backups and delegations at a database's purge, through the real daemon (DESIGN.md rules 3
//! and 7): the purge destroys the database's backups (or keeps them for `[backup]
//! keep_after_purge`, each with its own expiry shown in `key show`), and the key then deletes
//! without force; each database has its own delegated `backups` authorization, removed with
//! its delegator or its database and never recreated without a delegator.

use crate::common;
use crate::lifecycle_support;

use std::path::PathBuf;
use std::time::Duration;

use common::{assert_api_error, Daemon};
use envault::client::Client;
use lifecycle_support::{
    audit_file_events, authorizations, delete_database, delete_key, events, grant, poll, revoke,
    usable_key,
};
use serde_json::Value;

fn sorted(mut list: Vec<(String, String)>) -> Vec<(String, String)> {
    list.sort();
    list
}

/// Waits until the purge removed `db`.
async fn wait_purged(client: &Client, db: &str) {
    poll(
        Duration::from_secs(20),
        &format!("the purge of {db}"),
        || async {
            match client.get_database(db).await {
                Err(e) if e.code() == Some("not_found") => Some(()),
                Ok(_) => None,
                Err(e) => panic!("GET {db}: {e}"),
            }
        },
    )
    .await;
}

/// The registrations of `key`: (kind, purge_at).
async fn registrations(client: &Client, key: &str) -> Vec<(String, Option<String>)> {
    client
        .get_key(key)
        .await
        .unwrap()
        .registrations
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.kind, r.purge_at))
        .collect()
}

/// The delegated `backups` authorizations: (target CRN, created_by).
async fn delegations(client: &Client) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = authorizations(client)
        .await
        .iter()
        .filter(|a| a["source"] == "backups")
        .map(|a| {
            (
                a["target"].as_str().unwrap().to_string(),
                a["created_by"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    list.sort();
    list
}

#[tokio::test]
async fn a_purge_destroys_the_databases_backups_and_frees_its_keys() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_SOFT_DELETE_PERIOD", "1s")]).await;
    let client = daemon.client();
    usable_key(&client, "purged-key").await;
    client
        .create_key("purged-backups", None, None)
        .await
        .unwrap();
    grant(
        &client,
        "databases",
        "purged-backups",
        &["Reader", "AuthorizationDelegator"],
    )
    .await;
    client
        .create_database("own", Some("purged-key"), None)
        .await
        .unwrap();
    let split = client
        .create_database("split", Some("purged-key"), Some("purged-backups"))
        .await
        .unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut crns: Vec<String> = Vec::new();
    for db in ["own", "own", "split"] {
        client.put_record(db, "r", b"value").await.unwrap();
        let backup = client.create_backup(db).await.unwrap();
        files.push(PathBuf::from(backup["path"].as_str().unwrap()));
        crns.push(backup["crn"].as_str().unwrap().to_string());
    }
    assert!(files.iter().all(|f| f.exists()));
    assert_eq!(delegations(&client).await.len(), 1);
    // A key with a backup registered is in use.
    assert_api_error(
        delete_key(&client, "purged-backups", false).await,
        409,
        "key_in_use",
    );

    delete_database(&client, "own").await.unwrap();
    delete_database(&client, "split").await.unwrap();
    wait_purged(&client, "own").await;
    wait_purged(&client, "split").await;

    // Backups, files and the delegation went with their databases.
    assert_eq!(
        client.list_backups().await.unwrap()["backups"],
        serde_json::json!([])
    );
    for file in &files {
        assert!(!file.exists(), "{} outlived the purge", file.display());
    }
    assert!(delegations(&client).await.is_empty());
    assert!(registrations(&client, "purged-key").await.is_empty());
    assert!(registrations(&client, "purged-backups").await.is_empty());
    let purges = events(&client, Some("databases.purge")).await;
    let destroyed: Vec<String> = purges
        .iter()
        .flat_map(|e| {
            e["details"]["backups_destroyed"]
                .as_array()
                .unwrap()
                .clone()
        })
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let (mut destroyed, mut crns) = (destroyed, crns);
    destroyed.sort();
    crns.sort();
    assert_eq!(destroyed, crns);
    let split_purge = purges
        .iter()
        .find(|e| e["target"] == split.crn.as_str())
        .unwrap();
    assert_eq!(split_purge["details"]["delegations_removed"], 1);

    // Nothing else registered: both keys delete without force.
    for key in ["purged-key", "purged-backups"] {
        let receipt = delete_key(&client, key, false).await.unwrap();
        assert_eq!(receipt["affected"], serde_json::json!([]), "{receipt}");
    }
}

#[tokio::test]
async fn kept_backups_of_a_purged_database_carry_their_own_expiry() {
    let daemon = Daemon::start_with_env(&[
        ("ENVAULT_SOFT_DELETE_PERIOD", "1s"),
        ("ENVAULT_BACKUP_KEEP_AFTER_PURGE", "5s"),
    ])
    .await;
    let client = daemon.client();
    usable_key(&client, "kept-key").await;
    client
        .create_database("kept", Some("kept-key"), None)
        .await
        .unwrap();
    client.put_record("kept", "r", b"value").await.unwrap();
    let backup = client.create_backup("kept").await.unwrap();
    let file = PathBuf::from(backup["path"].as_str().unwrap());
    // A provider-keyed database's kept backup keeps its provider key alive.
    client
        .create_database("provided", None, None)
        .await
        .unwrap();
    client.put_record("provided", "p", b"value").await.unwrap();
    let provided = client.create_backup("provided").await.unwrap();

    delete_database(&client, "kept").await.unwrap();
    delete_database(&client, "provided").await.unwrap();
    wait_purged(&client, "kept").await;
    wait_purged(&client, "provided").await;

    // The backup stays, registered with its own expiry.
    let regs = registrations(&client, "kept-key").await;
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0].0, "backup");
    let expiry = regs[0].1.clone().expect("a kept backup shows its expiry");
    let shown = client
        .get_backup(backup["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(shown["expires_at"], expiry.as_str(), "{shown}");
    assert!(file.exists());
    assert_api_error(
        delete_key(&client, "kept-key", false).await,
        409,
        "key_in_use",
    );
    // Until it expires it restores like any backup.
    let restored = client
        .restore_backup(provided["id"].as_str().unwrap(), "provided-again", None)
        .await
        .unwrap();
    assert_eq!(restored.key_origin, "provider");
    assert_eq!(
        client.get_record("provided-again", "p").await.unwrap(),
        b"value"
    );

    // Then the sweep destroys it, and the key deletes without force.
    poll(
        Duration::from_secs(20),
        "the kept backup's expiry",
        || async {
            registrations(&client, "kept-key")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert!(!file.exists());
    assert_api_error(
        client.get_backup(backup["id"].as_str().unwrap()).await,
        404,
        "not_found",
    );
    poll(
        Duration::from_secs(20),
        "the provider backup's expiry",
        || async {
            let list = client.list_backups().await.unwrap();
            list["backups"].as_array().unwrap().is_empty().then_some(())
        },
    )
    .await;
    delete_key(&client, "kept-key", false).await.unwrap();
    let purged: Vec<Value> = audit_file_events(&daemon)
        .into_iter()
        .filter(|e| e["action"] == "backups.purge")
        .collect();
    assert_eq!(purged.len(), 2, "{purged:?}");
    assert!(purged.iter().any(|e| e["target"] == backup["crn"]));
}

#[tokio::test]
async fn each_database_has_its_own_delegation_removed_with_its_delegator_or_database() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_SOFT_DELETE_PERIOD", "1s")]).await;
    let client = daemon.client();
    usable_key(&client, "main").await;
    let backup_key = client.create_key("bk", None, None).await.unwrap();
    let delegator = grant(
        &client,
        "databases",
        "bk",
        &["Reader", "AuthorizationDelegator"],
    )
    .await;
    assert_eq!(delegator.0, 201, "{}", delegator.1);
    let delegator_id = delegator.1["id"].as_str().unwrap().to_string();
    let d1 = client
        .create_database("d1", Some("main"), Some("bk"))
        .await
        .unwrap();
    let d2 = client
        .create_database("d2", Some("main"), Some("bk"))
        .await
        .unwrap();
    let bk = backup_key.crn.clone();
    let both = sorted(vec![
        (bk.clone(), d1.crn.clone()),
        (bk.clone(), d2.crn.clone()),
    ]);
    assert_eq!(delegations(&client).await, both);

    // Removed alone while the delegator exists, d1's own delegation comes back, as d1's.
    let own = authorizations(&client)
        .await
        .into_iter()
        .find(|a| a["created_by"] == d1.crn.as_str())
        .unwrap();
    revoke(&client, own["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(delegations(&client).await, both);

    // Removing the delegator removes both; nothing recreates them, backups are refused.
    revoke(&client, &delegator_id).await.unwrap();
    assert!(delegations(&client).await.is_empty());
    assert_api_error(
        client.create_backup("d1").await,
        403,
        "not_authorized_for_key",
    );
    assert!(delegations(&client).await.is_empty());
    let removed: Vec<Value> = audit_file_events(&daemon)
        .into_iter()
        .filter(|e| {
            e["action"] == "iam.authorizations.delete" && e["details"]["with_delegator"].is_string()
        })
        .collect();
    assert_eq!(removed.len(), 2, "{removed:?}");

    // With a delegator again, a backup of d1 brings back d1's delegation only.
    grant(
        &client,
        "databases",
        "bk",
        &["Reader", "AuthorizationDelegator"],
    )
    .await;
    client.create_backup("d1").await.unwrap();
    assert_eq!(
        delegations(&client).await,
        vec![(bk.clone(), d1.crn.clone())]
    );
    client.create_backup("d2").await.unwrap();
    assert_eq!(delegations(&client).await.len(), 2);

    // The purge of d2 removes d2's delegation and leaves d1's.
    delete_database(&client, "d2").await.unwrap();
    wait_purged(&client, "d2").await;
    assert_eq!(delegations(&client).await, vec![(bk, d1.crn.clone())]);
}
