//! Nothing secret reaches the disk in the clear: after writing marked records, importing a root
//! key with known bytes and wrapping known material, every byte of every file under the data dir
//! is searched for those values (raw, base64 and hex). A restart then reads everything back, which
//! proves the data was on disk, only sealed.

use crate::common;
use crate::common::files_under;
use crate::lifecycle_support::{encodings, hex_upper, Needle};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{allow_databases, Daemon};
use uuid::Uuid;

/// Offset of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut start = 0;
    while start + needle.len() <= haystack.len() {
        let offset = haystack[start..=haystack.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        let at = start + offset;
        if &haystack[at..at + needle.len()] == needle {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

/// Searches every file under `dir`; returns the bytes scanned and one line per finding.
fn scan(dir: &Path, needles: &[Needle]) -> (usize, Vec<String>) {
    let mut scanned = 0;
    let mut findings = Vec::new();
    for file in files_under(dir) {
        let bytes = common::read_file(&file);
        scanned += bytes.len();
        for needle in needles {
            if let Some(at) = find(&bytes, &needle.bytes) {
                findings.push(format!(
                    "{} at offset {at} of {}",
                    needle.what,
                    file.display()
                ));
            }
        }
    }
    (scanned, findings)
}

#[test]
fn the_scanner_finds_what_it_looks_for() {
    let needles = encodings("probe", b"\x01probe\xff");
    let mut haystack = vec![0u8; 1000];
    haystack.extend_from_slice(STANDARD.encode(b"\x01probe\xff").as_bytes());
    haystack.extend_from_slice(b"xx");
    haystack.extend_from_slice(hex_upper(b"\x01probe\xff").as_bytes());
    haystack.extend_from_slice(b"\x01probe\xff");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub").join("f"), &haystack).unwrap();
    let (scanned, findings) = scan(dir.path(), &needles);
    assert_eq!(scanned, haystack.len());
    let found: Vec<&str> = findings
        .iter()
        .map(|f| f.split(" at offset ").next().unwrap())
        .collect();
    // Unpadded base64 is a prefix of the padded form, so both are found.
    assert_eq!(
        found,
        [
            "probe (raw)",
            "probe (base64)",
            "probe (base64 unpadded)",
            "probe (HEX)"
        ],
        "{findings:#?}"
    );
    assert_eq!(find(b"aab", b"ab"), Some(1));
    assert_eq!(find(b"ab", b"abc"), None);
    assert_eq!(find(b"", b"a"), None);
}

#[tokio::test]
async fn no_secret_reaches_the_disk_in_the_clear() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let run = Uuid::new_v4().simple().to_string();

    // A root key with known material, and two databases: one under it, one provider-managed.
    let mut material = Vec::new();
    material.extend_from_slice(Uuid::new_v4().as_bytes());
    material.extend_from_slice(Uuid::new_v4().as_bytes());
    let key = client
        .create_key("byok", Some(&material), None)
        .await
        .unwrap();
    assert_eq!(key.origin, "imported");
    allow_databases(&client, "byok").await;
    let databases = ["under-byok", "under-provider"];
    client
        .create_database(databases[0], Some("byok"), None)
        .await
        .unwrap();
    client
        .create_database(databases[1], None, None)
        .await
        .unwrap();

    // Marked records: small ones, a 1 MiB one of repeated markers, one overwritten and one
    // deleted (their old values must not linger in the clear either).
    let mut markers = Vec::new();
    let mut records: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for db in databases {
        for i in 0..8 {
            let marker = format!("MARKER-{run}-{db}-{i}");
            let value = format!("{{\"secret\": \"{marker}\"}}").into_bytes();
            client
                .put_record(db, &format!("rec/{i}"), &value)
                .await
                .unwrap();
            records.push((db, format!("rec/{i}"), value));
            markers.push(marker);
        }
        let big_marker = format!("MARKER-{run}-{db}-big|");
        let big: Vec<u8> = big_marker.bytes().cycle().take(1 << 20).collect();
        client.put_record(db, "big", &big).await.unwrap();
        records.push((db, "big".into(), big));
        markers.push(big_marker);

        let old = format!("MARKER-{run}-{db}-overwritten");
        client
            .put_record(db, "changed", old.as_bytes())
            .await
            .unwrap();
        markers.push(old);
        let new = format!("MARKER-{run}-{db}-current");
        client
            .put_record(db, "changed", new.as_bytes())
            .await
            .unwrap();
        records.push((db, "changed".into(), new.clone().into_bytes()));
        markers.push(new);

        let deleted = format!("MARKER-{run}-{db}-deleted");
        client
            .put_record(db, "deleted", deleted.as_bytes())
            .await
            .unwrap();
        client.delete_record(db, "deleted").await.unwrap();
        markers.push(deleted);
    }

    // Wrap API: a known plaintext, and a DEK the daemon generates.
    let wrapped_plaintext = format!("WRAPPED-{run}-app-secret").into_bytes();
    let aad = vec![format!("aad-{run}")];
    let wrapped = client
        .wrap("byok", Some(&wrapped_plaintext), &aad)
        .await
        .unwrap();
    let generated = client.wrap("byok", None, &[]).await.unwrap();
    let dek = generated.dek.clone().expect("a generated DEK").to_vec();
    assert_eq!(dek.len(), 32);

    drop(client);
    daemon.stop_graceful().await;

    let mut needles = Vec::new();
    for marker in &markers {
        needles.extend(encodings(
            &format!("record marker {marker:?}"),
            marker.as_bytes(),
        ));
    }
    needles.extend(encodings("imported key material", &material));
    needles.extend(encodings("first half of the imported key", &material[..16]));
    needles.extend(encodings(
        "second half of the imported key",
        &material[16..],
    ));
    needles.extend(encodings("wrapped plaintext", &wrapped_plaintext));
    needles.extend(encodings("generated DEK", &dek));

    // The data dir, and the PostgreSQL server's files when the suite runs on PostgreSQL
    // (`EVT_TEST_STORE=postgres`), checkpointed first so that every write is in them.
    let mut scanned = 0;
    let mut findings = Vec::new();
    for dir in daemon.store_dirs() {
        let (bytes, found) = scan(&dir, &needles);
        scanned += bytes;
        findings.extend(found);
    }
    assert!(
        findings.is_empty(),
        "secrets found in the clear under the data dir:\n{}",
        findings.join("\n")
    );
    // Two 1 MiB records were stored (sealed): the scan read at least that much.
    assert!(
        scanned >= 2 << 20,
        "only {scanned} bytes under the data dir (and store): was the scan looking at the right place?"
    );
    // Logs must not carry them either.
    let log = daemon.log();
    let leaked: Vec<&str> = needles
        .iter()
        .filter(|n| find(log.as_bytes(), &n.bytes).is_some())
        .map(|n| n.what.as_str())
        .collect();
    assert!(leaked.is_empty(), "secrets in the daemon log: {leaked:?}");

    // The data dir is private; the token and master key files are the owner's only.
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&daemon.data_dir), 0o700, "data dir mode");
    for file in ["operator.token", "master.key"] {
        let path = daemon.data_dir.join(file);
        assert_eq!(mode(&path) & 0o077, 0, "{file} is readable by others");
    }

    // Restart: everything reads back, so the scan above looked at the real (sealed) data.
    daemon.restart().await;
    let client = daemon.client();
    for (db, rec, value) in &records {
        assert_eq!(
            &client.get_record(db, rec).await.unwrap(),
            value,
            "{db}/{rec} after restart"
        );
    }
    for db in databases {
        common::assert_api_error(client.get_record(db, "deleted").await, 404, "not_found");
    }
    assert_eq!(
        *client
            .unwrap("byok", &wrapped.ciphertext, &aad)
            .await
            .unwrap(),
        wrapped_plaintext
    );
    assert_eq!(
        *client
            .unwrap("byok", &generated.ciphertext, &[])
            .await
            .unwrap(),
        dek
    );
    daemon.stop_graceful().await;
}
