//! Upgrade from the sled store: `tests/fixtures/sled-data-v1/data` was written by the last
//! release on sled (see its README). Each test copies it into a daemon's data dir and checks
//! that the real daemon reads back every key, database (the soft-deleted one included),
//! record (small ones from sled, large ones from its value log) and backup registration, after
//! a migration at first start, after one cut short by a crash, and after `envault store
//! migrate`.

use crate::common;

use std::path::Path;

use common::Daemon;
use envault::store::fjall_store::FjallStore;
use envault::store::Store;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sled-data-v1/data"
);

/// Copies the fixture; directories get mode 0700 as the release made its data dir (git keeps
/// no directory modes).
fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
        }
    }
}

/// A daemon started once (so its temp dir and socket exist), stopped, and its data dir replaced
/// by a copy of the fixture. Not running.
async fn daemon_on_fixture() -> Daemon {
    let mut daemon = Daemon::start_with_env(&[("ENVAULT_STORE_BACKEND", "embedded")]).await;
    daemon.stop_graceful().await;
    std::fs::remove_dir_all(&daemon.data_dir).expect("remove fresh data dir");
    copy_dir(Path::new(FIXTURE), &daemon.data_dir);
    daemon
}

fn large_value(n: u32) -> Vec<u8> {
    let line = format!("large value {n}\n");
    line.repeat(3000 / line.len() + 1).as_bytes()[..3000].to_vec()
}

/// Everything `make.sh` wrote reads back through the API.
async fn assert_fixture_reads_back(daemon: &Daemon) {
    let client = daemon.client();
    let keys = client.list_keys().await.expect("list keys");
    let key = |name: &str| {
        keys.iter()
            .find(|k| k.name == name)
            .unwrap_or_else(|| panic!("key {name} missing: {keys:?}"))
    };
    assert_eq!(key("gen-key").state, "active");
    assert_eq!(key("byok-key").origin, "imported");

    let dbs = client.list_databases().await.expect("list databases");
    let state = |name: &str| {
        dbs.iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("database {name} missing: {dbs:?}"))
            .state
            .clone()
    };
    assert_eq!(state("small-db"), "active");
    assert_eq!(state("large-db"), "active");
    assert_eq!(state("gone-db"), "deleted", "the soft-deleted database");

    for n in 1..=5 {
        let value = client
            .get_record("small-db", &format!("s-{n}"))
            .await
            .expect("small record");
        assert_eq!(value, format!("small value {n}").into_bytes());
    }
    for n in 1..=3 {
        let value = client
            .get_record("large-db", &format!("l-{n}"))
            .await
            .expect("large record from the value log");
        assert_eq!(value, large_value(n), "l-{n}");
    }
    assert_eq!(
        client.get_record("large-db", "s-1").await.expect("small"),
        b"small value in large-db".to_vec()
    );

    let backups = client.list_backups().await.expect("list backups");
    let text = format!("{backups:?}");
    assert!(text.contains("small-db"), "backup registration: {text}");

    // The soft-deleted database comes back with its record.
    client
        .restore_database("gone-db")
        .await
        .expect("restore gone-db");
    assert_eq!(
        client.get_record("gone-db", "g-1").await.expect("g-1"),
        b"deleted with its db".to_vec()
    );
    // And the store takes new writes.
    client
        .put_record("small-db", "after-upgrade", b"new")
        .await
        .expect("write after upgrade");
    assert_eq!(
        client
            .get_record("small-db", "after-upgrade")
            .await
            .unwrap(),
        b"new".to_vec()
    );
}

#[tokio::test]
async fn a_sled_data_dir_is_migrated_at_first_start_and_reads_back() {
    let mut daemon = daemon_on_fixture().await;
    daemon.restart().await;
    let log = daemon.log();
    assert!(
        log.contains("envault: store migrated to"),
        "progress on stderr: {log}"
    );
    assert!(daemon.data_dir.join("fjall").is_dir());
    assert!(daemon.data_dir.join("store.sled-migrated").is_dir());
    assert!(!daemon.data_dir.join("store").exists());
    assert!(!daemon.data_dir.join("fjall.migrating").exists());
    assert_fixture_reads_back(&daemon).await;
    // A second start does not migrate again, and everything is still there.
    daemon.stop_graceful().await;
    daemon.restart().await;
    assert_eq!(
        daemon.log().matches("envault: store migrated to").count(),
        1
    );
    assert_eq!(
        daemon.client().get_record("large-db", "l-2").await.unwrap(),
        large_value(2)
    );
}

#[tokio::test]
async fn a_migration_killed_midway_is_completed_by_the_next_start() {
    // Enough records that copying the rest takes far longer than the test needs to see the
    // migration's first progress line (after 1,000) and kill the daemon (milliseconds; a
    // debug build copies some 10,000 records a second), in a database the catalog does not
    // name.
    const EXTRA: u32 = 20_000;
    let mut daemon = daemon_on_fixture().await;
    {
        // Written the way the sled store kept records of at most 2 KiB: inline in its
        // `records` tree under `database id | record key`.
        let sled = sled::open(daemon.data_dir.join("store")).expect("open sled");
        let records = sled.open_tree("records").expect("records tree");
        let mut batch = sled::Batch::default();
        for i in 0..EXTRA {
            let mut key = [0x42u8; 16].to_vec();
            key.extend_from_slice(format!("x-{i:05}").as_bytes());
            let mut value = b"EVRC".to_vec();
            value.resize(if i % 1000 == 10 { 2000 } else { 100 }, (i % 251) as u8);
            batch.insert(key, value);
        }
        records.apply_batch(batch).expect("put");
        sled.flush().expect("flush");
    }
    // The earlier release let sled create its directories with the umask (0755 as a rule):
    // the upgrade tightens them instead of refusing the data dir.
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(daemon.data_dir.join("store"), open).expect("chmod store");
    }
    // Start the daemon and `kill -9` it as soon as it reports the first copied batch.
    let mut child = daemon
        .serve_command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.expect("read stderr");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("migrating the store:") && line.contains("records copied") {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(
        seen.contains("records copied") && !seen.contains("store migrated to"),
        "the migration was killed midway: {seen}"
    );
    assert!(daemon.data_dir.join("fjall.migrating").is_dir());
    assert!(!daemon.data_dir.join("fjall").exists(), "not switched over");
    assert!(daemon.data_dir.join("store/db").exists(), "sled untouched");

    daemon.restart().await;
    assert!(!daemon.data_dir.join("fjall.migrating").exists());
    {
        use std::os::unix::fs::PermissionsExt;
        let kept = std::fs::metadata(daemon.data_dir.join("store.sled-migrated")).expect("kept");
        assert_eq!(kept.permissions().mode() & 0o777, 0o700, "tightened");
    }
    assert_fixture_reads_back(&daemon).await;
    daemon.stop_graceful().await;
    let store = FjallStore::open(&daemon.data_dir.join("fjall"), 8 << 20).expect("open fjall");
    let db = [0x42u8; 16];
    assert_eq!(store.record_count(&db).unwrap(), u64::from(EXTRA));
    let big = store.record_get(&db, b"x-01010").unwrap().expect("x-01010");
    assert_eq!(big.len(), 2000);
    assert!(big[4..].iter().all(|b| *b == (1010 % 251) as u8));
}

#[tokio::test]
async fn store_migrate_upgrades_a_stopped_data_dir() {
    let mut daemon = daemon_on_fixture().await;
    let run = |daemon: &Daemon| {
        let out = std::process::Command::new(common::binary())
            .args(["store", "migrate", "--data-dir"])
            .arg(&daemon.data_dir)
            .output()
            .expect("run store migrate");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = run(&daemon);
    assert!(
        first.starts_with("migrated ") && first.contains(" 10 records"),
        "{first}"
    );
    assert!(run(&daemon).contains("nothing to migrate"));
    daemon.restart().await;
    assert!(!daemon.log().contains("envault: store migrated to"));
    assert_fixture_reads_back(&daemon).await;
}
