//! A backup cut by SIGKILL leaves no debris: no partial file, no registration.

use super::*;

const BACKUP_RECORDS: usize = 80;
const BACKUP_RECORD_SIZE: usize = 256 * 1024;
const BACKUP_KILLS: usize = 3;

/// `(id, file name)` of every listed backup.
async fn listed_backups(client: &Client) -> BTreeMap<String, String> {
    let list = expect_json(client, Method::GET, "/v1/backups", None, 200).await;
    list["backups"]
        .as_array()
        .expect("backups array")
        .iter()
        .map(|b| {
            let id = b["id"].as_str().expect("backup id").to_string();
            let file = std::path::Path::new(b["path"].as_str().expect("backup path"))
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (id, file)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_cut_by_sigkill_leaves_no_debris() {
    let seed = seed_from_env();
    let _report = SeedReport::new(
        "crash_consistency",
        "backup_cut_by_sigkill_leaves_no_debris",
        seed,
    );
    let mut rng = Rng::new(seed).fork(4);
    let started = Instant::now();
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let (key, _) = customer_key(&client, "bk-key").await;
    database(&client, "bk-db", Some(&key)).await;
    let mut source = BTreeMap::new();
    for i in 0..BACKUP_RECORDS {
        let len = BACKUP_RECORD_SIZE - rng.below(1024) as usize;
        source.insert(("bk-db".to_string(), format!("big-{i:03}")), rng.bytes(len));
    }
    write_records(&daemon, &source, 4).await;
    let backup_dir = daemon.data_dir.join("backups");
    // Calibrate with one complete backup.
    let t0 = Instant::now();
    let first = bounded("create backup", client.create_backup("bk-db"))
        .await
        .expect("first backup");
    let backup_ms = (t0.elapsed().as_millis() as u64).max(5);
    let mut acknowledged = BTreeSet::from([first.id]);
    let mut restored = BTreeSet::new();
    let mut outcomes = Vec::new();
    for cycle in 0..=BACKUP_KILLS {
        let context = format!("seed {seed}, backup kill {cycle}/{BACKUP_KILLS}");
        if cycle > 0 {
            let client = daemon.client();
            let task = tokio::spawn(async move {
                outcome(bounded("create backup", client.create_backup("bk-db")).await)
            });
            let delay = rng.range(0, backup_ms + backup_ms / 3);
            tokio::time::sleep(ms(delay)).await;
            daemon.kill9().await;
            let answered = match task.await.expect("backup task") {
                Outcome::Acked(info) => {
                    acknowledged.insert(info.id);
                    "acknowledged"
                }
                Outcome::Unknown(_) => "cut",
                Outcome::Refused(status, code, message) => {
                    panic!("{context}: backup refused: {status} {code}: {message}")
                }
            };
            outcomes.push(format!("{delay}ms:{answered}"));
            daemon.restart().await;
        }
        let client = daemon.client();
        let listed = listed_backups(&client).await;
        for id in &acknowledged {
            assert!(
                listed.contains_key(id),
                "{context}: acknowledged backup {id} is not listed"
            );
        }
        let files = dir_files(&backup_dir);
        let registered: BTreeSet<String> = listed.values().cloned().collect();
        for file in &files {
            assert!(
                !file.ends_with(".tmp"),
                "{context}: a temp file survived the restart: {file}"
            );
            assert!(
                registered.contains(file),
                "{context}: unregistered file in the backup dir: {file} (registered: {registered:?})"
            );
        }
        for file in &registered {
            assert!(
                files.contains(file),
                "{context}: listed backup file {file} does not exist"
            );
        }
        // Every listed backup restores, with exactly the source records.
        for id in listed.keys() {
            if !restored.insert(id.clone()) {
                continue;
            }
            let into = format!("bk-restored-{}", restored.len());
            bounded("restore backup", client.restore_backup(id, &into, None))
                .await
                .unwrap_or_else(|e| panic!("{context}: restore of listed backup {id}: {e}"));
            let keys = record_keys(&client, &into).await;
            assert_eq!(keys.len(), BACKUP_RECORDS, "{context}: restored {into}");
            let expected: BTreeMap<(String, String), Vec<u8>> = source
                .iter()
                .map(|((_, k), v)| ((into.clone(), k.clone()), v.clone()))
                .collect();
            let bad = check_records(&daemon, &expected, 2).await;
            assert_no_violations(&bad, &format!("{context}: restore of {id}"));
        }
        let bad = check_records(&daemon, &source, 2).await;
        assert_no_violations(&bad, &format!("{context}: source database"));
        assert_audit_ok(&client, &context).await;
    }
    eprintln!(
        "[backup] seed {seed}: {} MiB database, uninterrupted backup {backup_ms} ms, kills: \
         {outcomes:?}, {} backups restored; {:.1} s",
        (BACKUP_RECORDS * BACKUP_RECORD_SIZE) >> 20,
        restored.len(),
        started.elapsed().as_secs_f64()
    );
}
