use super::*;
use crate::store::CatalogKey;

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
