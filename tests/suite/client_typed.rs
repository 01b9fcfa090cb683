//! The Rust client's typed answers against the real daemon: tokens (the secret in a
//! `SecretString`, usable as a bearer token), backups, every shape of a key deletion (receipt,
//! scheduled key, dual-authorization approval) and its cancellation, and an imported key whose
//! material travels as a secret field.

use crate::common;

use common::{allow_databases, assert_api_error, Daemon};
use envault::api::{CreateTokenRequest, TokenRole};
use envault::client::KeyDeletion;

#[tokio::test]
async fn tokens_come_back_typed_and_the_secret_authenticates() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_key("tk", None, None).await.unwrap();
    allow_databases(&client, "tk").await;
    client
        .create_database("tdb", Some("tk"), None)
        .await
        .unwrap();

    let request = CreateTokenRequest {
        role: TokenRole::App,
        databases: vec!["tdb".into()],
        name: Some("reporting".into()),
        ttl: Some("30d".into()),
    };
    let token = client.create_token_with(&request).await.unwrap();
    assert_eq!(token.role, TokenRole::App);
    assert_eq!(token.name.as_deref(), Some("reporting"));
    assert!(token.expires_at.is_some());
    let shown = format!("{token:?}");
    assert!(!shown.contains(token.token.expose_secret()), "{shown}");

    let app = daemon.client_with_token(Some(token.token.expose_secret()));
    app.put_record("tdb", "r", b"v").await.unwrap();
    assert_eq!(app.get_record("tdb", "r").await.unwrap(), b"v");
    assert_api_error(app.list_keys().await, 403, "forbidden");

    let listed = client.list_tokens().await.unwrap();
    let mine = listed.iter().find(|t| t.id == token.id).expect("listed");
    assert_eq!(mine.name.as_deref(), Some("reporting"));
    assert_eq!(mine.databases.len(), 1);
    assert!(!mine.expired);

    client.revoke_token(&token.id).await.unwrap();
    assert_api_error(app.get_record("tdb", "r").await, 401, "unauthenticated");
}

#[tokio::test]
async fn backups_come_back_typed() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_key("bk", None, None).await.unwrap();
    allow_databases(&client, "bk").await;
    let db = client
        .create_database("bdb", Some("bk"), None)
        .await
        .unwrap();
    client.put_record("bdb", "a", b"one").await.unwrap();
    client.put_record("bdb", "b", b"two").await.unwrap();

    let backup = client.create_backup("bdb").await.unwrap();
    assert_eq!((backup.database.as_str(), backup.record_count), ("bdb", 2));
    assert_eq!(backup.database_id, db.id);
    assert_eq!(backup.state, "available");
    assert!(std::path::Path::new(&backup.path).exists());
    assert_eq!(client.get_backup(&backup.id).await.unwrap(), backup);
    assert_eq!(client.list_backups().await.unwrap(), vec![backup.clone()]);

    let restored = client
        .restore_backup(&backup.id, "bdb-again", None)
        .await
        .unwrap();
    assert_eq!(restored.name, "bdb-again");
    assert_eq!(client.get_record("bdb-again", "b").await.unwrap(), b"two");

    client.delete_backup(&backup.id).await.unwrap();
    assert_api_error(client.get_backup(&backup.id).await, 404, "not_found");
    assert!(client.list_backups().await.unwrap().is_empty());
}

#[tokio::test]
async fn every_shape_of_a_key_deletion_is_typed() {
    let daemon = Daemon::start().await;
    let client = daemon.client();

    // An imported key (its material sent as a secret field), shredded now: the receipt.
    let material: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(151) ^ 0x5a);
    let imported = client
        .create_key("now", Some(&material), None)
        .await
        .unwrap();
    assert_eq!(imported.origin, "imported");
    match client
        .schedule_key_deletion("now", true, None)
        .await
        .unwrap()
    {
        KeyDeletion::Deleted(receipt) => {
            assert_eq!(receipt.key, imported.crn);
            assert_eq!(receipt.destroyed_versions, vec![1]);
        }
        other => panic!("expected a receipt, got {other:?}"),
    }

    // Scheduled: a preview first (nothing changes), then the key pending destruction, then
    // cancelled.
    client.create_key("later", None, None).await.unwrap();
    let impact = client
        .preview_scheduled_deletion("later", "7d")
        .await
        .unwrap();
    assert!(impact.dry_run);
    assert_eq!(client.get_key("later").await.unwrap().state, "active");
    match client
        .schedule_key_deletion("later", false, Some("7d"))
        .await
        .unwrap()
    {
        KeyDeletion::Scheduled(key) => {
            assert_eq!(key.state, "pending_destruction");
            assert!(key.destroy_at.is_some());
        }
        other => panic!("expected a scheduled key, got {other:?}"),
    }
    let back = client.cancel_key_deletion("later").await.unwrap();
    assert_eq!(back.state, "active");
    assert!(back.destroy_at.is_none());

    // Under dual authorization the first delete is an approval, and nothing is deleted.
    client.create_key("two", None, None).await.unwrap();
    client
        .set_key_policy("two", None, Some(true))
        .await
        .unwrap();
    match client
        .schedule_key_deletion("two", false, None)
        .await
        .unwrap()
    {
        KeyDeletion::Approved(approval) => {
            assert_eq!(approval.name, "two");
            assert_eq!(approval.state, "deletion_authorized");
        }
        other => panic!("expected an approval, got {other:?}"),
    }
    assert_eq!(client.get_key("two").await.unwrap().state, "active");
}
