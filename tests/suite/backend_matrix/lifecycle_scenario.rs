//! One lifecycle scenario on every root-key backend.

use super::*;

/// Create (generated and imported), wrap/unwrap/rewrap, records, rotate (keep and retire),
/// restart, disable/enable, shred, restart: the same calls and the same answers on every
/// backend, plus a look at the backend itself after the shred.
pub(super) async fn lifecycle(kind: Kind) {
    let fixture = Fixture::start(kind);
    let mut daemon = fixture.daemon().await;
    let name = format!("{kind:?}").to_lowercase();
    assert!(
        daemon
            .log()
            .lines()
            .any(|l| l.contains("root-key backend") && l.contains(&format!("\"{name}\""))),
        "the daemon does not run the {name} backend: {}",
        daemon.log()
    );
    let client = daemon.client();

    let root = client
        .create_key("root", None, None)
        .await
        .expect("create key");
    assert_eq!((root.origin.as_str(), root.version), ("generated", 1));
    allow_databases(&client, "root").await;

    // Import (transit: BYOK through the server's wrapping key).
    let material: Vec<u8> = [Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes()].concat();
    let imported = client
        .create_key("imported", Some(&material), None)
        .await
        .expect("import a key");
    assert_eq!(imported.origin, "imported");
    // Bad input changes nothing.
    assert_api_error(
        client
            .create_key("short", Some(&material[..31]), None)
            .await,
        400,
        "bad_request",
    );
    assert!(client
        .list_keys()
        .await
        .expect("list")
        .iter()
        .all(|k| k.name != "short"));

    // The wrap API.
    let aad = vec!["tenant-7".to_string()];
    let wrapped = client
        .wrap("root", Some(b"app secret"), &aad)
        .await
        .expect("wrap");
    assert_eq!(wrapped.key_version, 1);
    let plain = client
        .unwrap("root", &wrapped.ciphertext, &aad)
        .await
        .expect("unwrap");
    assert_eq!(plain.as_slice(), b"app secret");
    assert_api_error(
        client
            .unwrap("root", &wrapped.ciphertext, &["tenant-8".into()])
            .await,
        400,
        "bad_request",
    );
    let fresh = client
        .wrap("root", None, &[])
        .await
        .expect("wrap a new DEK");
    let dek = fresh.dek.expect("a generated DEK is returned");
    assert_eq!(dek.len(), 32);
    let again = client
        .unwrap("root", &fresh.ciphertext, &[])
        .await
        .expect("unwrap DEK");
    assert_eq!(again.as_slice(), dek.as_slice());

    // Databases under a customer key, a provider key and (where supported) an imported key.
    client
        .create_database("orders", Some("root"), None)
        .await
        .expect("create db");
    client
        .create_database("scratch", None, None)
        .await
        .expect("create provider db");
    for n in 0..3 {
        client
            .put_record("orders", &format!("r{n}"), format!("order {n}").as_bytes())
            .await
            .expect("put");
    }
    client
        .put_record("scratch", "s", b"scratch value")
        .await
        .expect("put");
    {
        allow_databases(&client, "imported").await;
        client
            .create_database("legacy", Some("imported"), None)
            .await
            .expect("db under import");
        client
            .put_record("legacy", "l", b"legacy value")
            .await
            .expect("put");
    }

    // A database with a backup key, and one backup (its DEK sealed by the backend).
    client
        .create_key("backups", None, None)
        .await
        .expect("backup key");
    let roles = ["Reader".to_string(), "AuthorizationDelegator".to_string()];
    client
        .grant("databases", "backups", &roles)
        .await
        .expect("grant the backup key");
    client
        .create_database("archive", Some("root"), Some("backups"))
        .await
        .expect("db with backup key");
    client
        .put_record("archive", "a", b"archived")
        .await
        .expect("put");
    let backup = client.create_backup("archive").await.expect("backup");
    let backup_id = backup.id;

    // Rotation keeping old versions, then retiring them.
    let rotated = client
        .rotate_key("root", false, true)
        .await
        .expect("rotate");
    assert_eq!(
        (rotated.version, rotated.job.state.as_str()),
        (2, "completed")
    );
    assert_eq!(
        client
            .unwrap("root", &wrapped.ciphertext, &aad)
            .await
            .expect("v1 still opens")
            .as_slice(),
        b"app secret"
    );
    let rewrapped = client
        .rewrap("root", &wrapped.ciphertext, &aad)
        .await
        .expect("rewrap");
    assert_eq!(rewrapped.key_version, 2);
    let rotated = client
        .rotate_key("root", true, true)
        .await
        .expect("rotate, retire");
    assert_eq!(rotated.version, 3);
    assert_eq!(rotated.job.retired_versions, vec![1, 2]);
    assert_api_error(
        client.unwrap("root", &wrapped.ciphertext, &aad).await,
        400,
        "bad_request",
    );
    assert_eq!(read(&daemon, "orders", "r1").await, b"order 1");
    let wrapped3 = client
        .wrap("root", Some(b"after rotation"), &aad)
        .await
        .expect("wrap v3");
    assert_eq!(wrapped3.key_version, 3);

    // Restart: every DEK is unwrapped anew by the backend.
    daemon.stop_graceful().await;
    fixture.with_backend(&daemon, |backend| {
        assert_eq!(backend.versions(id(&root)).expect("versions"), vec![3]);
        assert!(backend.key_ids().expect("key ids").contains(&id(&root)));
    });
    daemon.restart().await;
    let client = daemon.client();
    for n in 0..3 {
        assert_eq!(
            read(&daemon, "orders", &format!("r{n}")).await,
            format!("order {n}").as_bytes()
        );
    }
    assert_eq!(read(&daemon, "scratch", "s").await, b"scratch value");
    let restored = client
        .restore_backup(&backup_id, "archive-restored", None)
        .await
        .expect("restore after restart");
    assert_eq!(restored.name, "archive-restored");
    assert_eq!(read(&daemon, "archive-restored", "a").await, b"archived");
    client
        .put_record("orders", "after-restart", b"written")
        .await
        .expect("put");
    assert_eq!(
        client
            .unwrap("root", &wrapped3.ciphertext, &aad)
            .await
            .expect("unwrap")
            .as_slice(),
        b"after rotation"
    );

    // Disable and enable.
    assert_eq!(
        client.disable_key("root").await.expect("disable").state,
        "suspended"
    );
    assert_api_error(
        client.get_record("orders", "r0").await,
        423,
        "key_suspended",
    );
    assert_api_error(
        client.wrap("root", Some(b"x"), &[]).await,
        423,
        "key_suspended",
    );
    client.enable_key("root").await.expect("enable");
    assert_eq!(read(&daemon, "orders", "after-restart").await, b"written");

    // Shred.
    let receipt = client.delete_key("root", true).await.expect("shred");
    assert_eq!(receipt.destroyed_versions, vec![3]);
    assert!(
        receipt.affected.iter().any(|a| a.name == "orders"),
        "{receipt:?}"
    );
    assert_api_error(
        client.get_record("orders", "r0").await,
        423,
        "key_destroyed",
    );
    assert_api_error(
        client.unwrap("root", &wrapped3.ciphertext, &aad).await,
        423,
        "key_destroyed",
    );
    assert_eq!(read(&daemon, "scratch", "s").await, b"scratch value");
    let objects_before = fixture.token_objects();
    assert_eq!(read(&daemon, "legacy", "l").await, b"legacy value");
    let receipt = client
        .delete_key("imported", true)
        .await
        .expect("shred import");
    assert_eq!(receipt.destroyed_versions, vec![1]);
    assert_api_error(client.get_record("legacy", "l").await, 423, "key_destroyed");
    if kind == Kind::Pkcs11 {
        // One token object file per destroyed version is gone from the token directory.
        assert_eq!(fixture.token_objects(), objects_before - 1);
    }

    // What must remain in the backend: the keys of the databases still readable, and the
    // backup key.
    let mut expected =
        vec![Uuid::parse_str(&client.get_key("backups").await.expect("key").id).expect("uuid")];
    for db in ["scratch", "archive-restored"] {
        let info = client.get_database(db).await.expect("db");
        let key = Uuid::parse_str(&info.key).expect("uuid");
        if key != id(&root) && !expected.contains(&key) {
            expected.push(key);
        }
    }
    expected.sort_unstable();
    daemon.stop_graceful().await;
    fixture.with_backend(&daemon, |backend| {
        assert!(backend.versions(id(&root)).expect("versions").is_empty());
        let ids = backend.key_ids().expect("key ids");
        assert!(
            !ids.contains(&id(&root)),
            "the shredded key is still in the backend"
        );
        assert!(backend
            .versions(id(&imported))
            .expect("versions")
            .is_empty());
        assert!(!ids.contains(&id(&imported)));
        let mut ids = ids;
        ids.sort_unstable();
        assert_eq!(ids, expected, "keys left in the backend");
    });
    fixture.assert_bytes_absent(&daemon, &material);

    daemon.restart().await;
    let client = daemon.client();
    assert_eq!(read(&daemon, "scratch", "s").await, b"scratch value");
    assert_api_error(
        client.get_record("orders", "r1").await,
        423,
        "key_destroyed",
    );
    assert_eq!(
        client.get_key("root").await.expect("key").state,
        "destroyed"
    );
}
