use super::*;
use crate::store::CatalogKey;
use std::path::{Path, PathBuf};

const CACHE: u64 = 8 << 20;

fn sealed(tag: u8, len: usize) -> Vec<u8> {
    let mut value = b"EVRC".to_vec();
    value.resize(len, tag);
    value
}

#[test]
fn records_and_catalog_survive_reopen_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let db = [3u8; 16];
    {
        let store = FjallStore::open(dir.path(), CACHE).unwrap();
        store.record_put(&db, b"small", sealed(1, 100)).unwrap();
        store.record_put(&db, b"large", sealed(2, 300_000)).unwrap();
        store
            .catalog_apply(vec![
                CatalogOp::Put(CatalogKey(b"db/1".to_vec()), b"one".to_vec()),
                CatalogOp::Put(CatalogKey(b"db/2".to_vec()), b"two".to_vec()),
                CatalogOp::Put(CatalogKey(b"key/1".to_vec()), b"k".to_vec()),
            ])
            .unwrap();
        store
            .catalog_apply(vec![CatalogOp::Delete(CatalogKey(b"db/2".to_vec()))])
            .unwrap();
        store.flush().unwrap();
    }
    let store = FjallStore::open(dir.path(), CACHE).unwrap();
    assert_eq!(
        store.record_get(&db, b"large").unwrap(),
        Some(sealed(2, 300_000))
    );
    assert_eq!(
        store.record_get(&db, b"small").unwrap(),
        Some(sealed(1, 100))
    );
    assert_eq!(
        store.catalog_scan(b"db/").unwrap(),
        vec![(b"db/1".to_vec(), b"one".to_vec())]
    );
    assert_eq!(store.record_count(&db).unwrap(), 2);
    assert!(store.record_delete(&db, b"large").unwrap());
    assert!(!store.record_delete(&db, b"large").unwrap());
    assert_eq!(store.record_get(&db, b"large").unwrap(), None);
}

#[test]
fn pages_and_key_listings_stay_within_their_database_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), CACHE).unwrap();
    let (a, b) = ([1u8; 16], [2u8; 16]);
    for i in 0..10u8 {
        store
            .record_put(&a, format!("r{i}").as_bytes(), sealed(i, 1000))
            .unwrap();
    }
    store.record_put(&b, b"r0", sealed(9, 10)).unwrap();
    let page = store.record_page(&a, None, 100, 2500).unwrap();
    assert_eq!(page.len(), 3, "stops once 2500 bytes are reached");
    let next = store.record_page(&a, Some(b"r2"), 100, usize::MAX).unwrap();
    assert_eq!(next.len(), 7);
    assert_eq!(next[0].0, b"r3".to_vec());
    let one = store.record_page(&a, None, 1, 10).unwrap();
    assert_eq!(one.len(), 1, "at least one record, however large");
    let keys = store.record_keys(&a, b"r", Some(b"r7"), 10).unwrap();
    assert_eq!(keys, vec![b"r8".to_vec(), b"r9".to_vec()]);
    assert_eq!(store.records_purge(&a).unwrap(), 10);
    assert_eq!(store.record_count(&a).unwrap(), 0);
    assert_eq!(store.record_get(&b, b"r0").unwrap(), Some(sealed(9, 10)));
}

#[test]
fn a_store_held_by_another_process_names_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _first = FjallStore::open(dir.path(), CACHE).unwrap();
    let err = FjallStore::open(dir.path(), CACHE).err().unwrap();
    assert!(err.to_string().contains("locked"), "{err}");
}

/// The largest file under `dir` but the journal (a blob file once large values are flushed).
fn largest_file(dir: &Path) -> PathBuf {
    let mut best = (0, PathBuf::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "jnl") {
                continue;
            } else {
                let len = e.metadata().unwrap().len();
                if len > best.0 {
                    best = (len, p);
                }
            }
        }
    }
    best.1
}

#[test]
fn a_damaged_large_record_is_an_integrity_error_for_that_record_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = [5u8; 16];
    {
        let store = FjallStore::open(dir.path(), CACHE).unwrap();
        for i in 0..20u8 {
            store
                .record_put(&db, format!("r{i:02}").as_bytes(), sealed(i, 10_000))
                .unwrap();
        }
        store.flush().unwrap();
        store.records.rotate_memtable_and_wait().unwrap();
    }
    let file = largest_file(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let store = FjallStore::open(dir.path(), CACHE).unwrap();
    let mut damaged = 0;
    for i in 0..20u8 {
        match store.record_get(&db, format!("r{i:02}").as_bytes()) {
            Ok(Some(v)) => assert_eq!(v, sealed(i, 10_000)),
            Err(StoreError::Damaged(_)) => damaged += 1,
            other => panic!("r{i:02}: {other:?}"),
        }
    }
    assert_eq!(damaged, 1, "{}", file.display());
}

#[test]
fn a_damaged_store_file_at_open_names_the_store_and_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = [6u8; 16];
    {
        let store = FjallStore::open(dir.path(), CACHE).unwrap();
        for i in 0..200u16 {
            store
                .record_put(&db, format!("r{i:03}").as_bytes(), sealed(1, 100))
                .unwrap();
        }
        store.flush().unwrap();
        store.records.rotate_memtable_and_wait().unwrap();
    }
    // Overwrite every table and metadata file (not the journal) with garbage of its length.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_none_or(|x| x != "jnl") && p.file_name().unwrap() != "lock" {
                let len = e.metadata().unwrap().len() as usize;
                std::fs::write(&p, vec![0xa5u8; len]).unwrap();
            }
        }
    }
    match FjallStore::open(dir.path(), CACHE) {
        Err(err) => {
            let text = err.to_string();
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
            assert!(text.contains("restore"), "{text}");
            assert!(!text.contains("another"), "{text}");
        }
        Ok(store) => {
            // Opened: then the damage shows when the records are read.
            let err = store.record_page(&db, None, 1000, usize::MAX).err();
            panic!("opened a damaged store; reading it gives {err:?}");
        }
    }
}

/// The first file under `dir` whose path has a component `folder` and which holds `needle`:
/// (file, offset of the needle).
fn find_bytes(dir: &Path, folder: &str, needle: &[u8]) -> Option<(PathBuf, usize)> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.components().any(|c| c.as_os_str() == folder) {
                let bytes = std::fs::read(&p).unwrap();
                if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                    return Some((p, at));
                }
            }
        }
    }
    None
}

#[test]
fn a_damaged_small_record_is_an_integrity_error_for_that_record_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = [8u8; 16];
    // Incompressible, like ciphertext (blob files compress what compresses).
    let value = |i: u16| {
        let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v = b"EVRC".to_vec();
        while v.len() < 100 + usize::from(i % 7) * 40 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as u8);
        }
        v
    };
    {
        let store = FjallStore::open(dir.path(), CACHE).unwrap();
        for i in 0..500u16 {
            store
                .record_put(&db, format!("s{i:04}").as_bytes(), value(i))
                .unwrap();
        }
        store.flush().unwrap();
        store.records.rotate_memtable_and_wait().unwrap();
    }
    // The blob of s0250 holds its full key, then its value: flip a byte of the value.
    let (file, at) = find_bytes(dir.path(), "blobs", &record_key(&db, b"s0250"))
        .expect("small values are kept in blob files");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[at + 16 + 5 + 20] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let store = FjallStore::open(dir.path(), CACHE).unwrap();
    for i in 0..500u16 {
        let key = format!("s{i:04}");
        match store.record_get(&db, key.as_bytes()) {
            Ok(Some(v)) if i != 250 => assert_eq!(v, value(i), "{key}"),
            Err(StoreError::Damaged(_)) if i == 250 => {}
            other => panic!("{key}: {other:?}"),
        }
    }
    // A page over the damaged record fails; pages that skip it read.
    assert!(matches!(
        store.record_page(&db, Some(b"s0249"), 1, usize::MAX),
        Err(StoreError::Damaged(_))
    ));
    let after = store
        .record_page(&db, Some(b"s0250"), 10, usize::MAX)
        .unwrap();
    assert_eq!(after[0], (b"s0251".to_vec(), value(251)));
    // The keys are intact, so listing and counting still work.
    assert_eq!(store.record_count(&db).unwrap(), 500);
}

#[test]
fn a_store_created_with_the_earlier_inline_threshold_keeps_reading_and_writing() {
    let dir = tempfile::tempdir().unwrap();
    let db = [9u8; 16];
    {
        // The records keyspace as the store created it before every value went to blob files:
        // values under 4 KiB inline in the tables.
        let old = Database::builder(dir.path())
            .cache_size(CACHE)
            .manual_journal_persist(true)
            .open()
            .unwrap();
        let records = old
            .keyspace("records", || {
                KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(MEMTABLE)
                    .with_kv_separation(Some(
                        KvSeparationOptions::default().separation_threshold(4096),
                    ))
            })
            .unwrap();
        for i in 0..100u8 {
            records
                .insert(
                    record_key(&db, format!("old{i:03}").as_bytes()),
                    sealed(i, 300),
                )
                .unwrap();
        }
        records
            .insert(record_key(&db, b"old-large"), sealed(1, 50_000))
            .unwrap();
        old.persist(PersistMode::SyncAll).unwrap();
        records.rotate_memtable_and_wait().unwrap();
        assert!(
            find_bytes(dir.path(), "blobs", &record_key(&db, b"old007")).is_none(),
            "the earlier layout keeps small values inline"
        );
    }
    {
        let store = FjallStore::open(dir.path(), CACHE).unwrap();
        for i in 0..100u8 {
            let key = format!("old{i:03}");
            assert_eq!(
                store.record_get(&db, key.as_bytes()).unwrap(),
                Some(sealed(i, 300))
            );
        }
        assert_eq!(
            store.record_get(&db, b"old-large").unwrap(),
            Some(sealed(1, 50_000))
        );
        store.record_put(&db, b"new", sealed(7, 300)).unwrap();
        store.flush().unwrap();
    }
    let store = FjallStore::open(dir.path(), CACHE).unwrap();
    assert_eq!(store.record_get(&db, b"new").unwrap(), Some(sealed(7, 300)));
    assert_eq!(store.record_count(&db).unwrap(), 102);
}
