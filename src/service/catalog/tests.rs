//! The in-memory catalog is a fold over the changes committed: after any sequence of commits,
//! memory equals a fresh load from the store, entry for entry and index for index.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use uuid::Uuid;

use super::{Catalog, CatalogChange, TransitSettings, KINDS};
use crate::config::Config;
use crate::service::Vault;
use crate::store::{
    codec, AuthorizationRecord, BackupRecord, CatalogOp, DatabaseRecord, DatabaseState, DekRecord,
    InstanceRecord, KeyOrigin, KeyRecord, KeyState, RotationJob, Store, TokenRecord, TokenRole,
};

const WHEN: &str = "2026-01-01T00:00:00Z";

/// Three ids per kind, so that puts replace and deletes hit entries that exist.
fn id(i: usize) -> Uuid {
    Uuid::from_u128(0x1000 + i as u128)
}

/// One random change: (kind, which entry, which variant of its value, put or delete).
fn change((kind, i, v, put): (u8, usize, u32, bool)) -> CatalogChange {
    use CatalogChange as C;
    let key_state = [
        KeyState::Active,
        KeyState::Suspended,
        KeyState::Destroyed,
        KeyState::PendingDestruction,
    ][v as usize % 4];
    let db_state = [
        DatabaseState::Active,
        DatabaseState::Deleted,
        DatabaseState::Disabled,
    ][v as usize % 3];
    match (kind, put) {
        (0, true) => C::PutKey(KeyRecord {
            id: id(i),
            // Names are unique per id (a renamed entry keeps its id), as the service keeps them.
            name: format!("key-{i}-{v}"),
            description: None,
            origin: KeyOrigin::Generated,
            state: key_state,
            version: v + 1,
            created_at: WHEN.into(),
            owner_database: None,
            last_rotated_at: (v % 2 == 0).then_some(u64::from(v)),
            destroy_at: (key_state == KeyState::PendingDestruction).then_some(u64::from(v)),
        }),
        (0, false) => C::DeleteKey(id(i)),
        (1, true) => C::PutDatabase(DatabaseRecord {
            id: id(i),
            name: format!("db-{i}-{v}"),
            key_id: id(v as usize % 3),
            backup_key_id: None,
            state: db_state,
            state_reason: None,
            created_at: WHEN.into(),
            deleted_at: None,
            purge_at: None,
            generation: v + 1,
        }),
        (1, false) => C::DeleteDatabase(id(i)),
        (2, true) => C::PutDek(DekRecord {
            database_id: id(i),
            generation: v % 2 + 1,
            key_id: id(0),
            key_version: v + 1,
            wrapped: format!("dek-{v}"),
            seals_reserved: u64::from(v) * 1000,
        }),
        (2, false) => C::DeleteDek {
            database: id(i),
            generation: v % 2 + 1,
        },
        (3, true) => C::PutToken(TokenRecord {
            id: format!("tok_{i}"),
            role: if v % 2 == 0 {
                TokenRole::App
            } else {
                TokenRole::Operator
            },
            databases: vec![id(v as usize % 3)],
            hash: format!("hash-{i}-{v}"),
            created_at: WHEN.into(),
            name: (v % 2 == 0).then(|| format!("name-{i}")),
            expires_at: (v % 3 == 0).then_some(u64::from(v)),
            last_used_at: (v % 2 == 1).then_some(u64::from(v)),
        }),
        (3, false) => C::DeleteToken(format!("tok_{i}")),
        (4, true) => C::PutAuthorization(AuthorizationRecord {
            id: format!("authz-{i}"),
            source: "databases".into(),
            target: (v % 2 == 0).then(|| id(v as usize % 3)),
            roles: vec!["Reader".into()],
            created_by: None,
            created_at: WHEN.into(),
        }),
        (4, false) => C::DeleteAuthorization(format!("authz-{i}")),
        (5, true) => C::PutJob(RotationJob {
            id: format!("job-{v}"),
            key_id: id(i),
            target_version: v + 2,
            retire_old: v % 2 == 0,
            started_at: WHEN.into(),
        }),
        (5, false) => C::DeleteJob(id(i)),
        (6, true) => C::PutBackup(BackupRecord {
            id: id(i),
            database_id: id(v as usize % 3),
            database_name: format!("db-{v}"),
            key_id: id(0),
            key_version: v + 1,
            file: format!("{}.evbk", id(i)),
            size: u64::from(v) + 10,
            record_count: u64::from(v),
            created_at: WHEN.into(),
            state: "available".into(),
            expires_at: (v % 2 == 0).then_some(u64::from(v) + 1000),
        }),
        (6, false) => C::DeleteBackup(id(i)),
        (7, true) => C::PutTransit(
            id(i),
            TransitSettings {
                min_decryption_version: v,
                deletion_allowed: v % 2 == 1,
                version_times: BTreeMap::from([(v + 1, i64::from(v))]),
            },
        ),
        (7, false) => C::DeleteTransit(id(i)),
        (8, true) => C::PutPolicy(
            id(i),
            crate::store::KeyPolicyRecord {
                rotate_every_days: (v % 2 == 0).then_some(v + 1),
                dual_auth_delete: v % 3 == 0,
                delete_approval: (v % 2 == 1).then(|| crate::store::DeleteApproval {
                    token_id: format!("tok_{v}"),
                    expires_at: u64::from(v),
                }),
                updated_at: WHEN.into(),
            },
        ),
        (8, false) => C::DeletePolicy(id(i)),
        (_, true) => C::PutInstance(InstanceRecord {
            id: id(i),
            created_at: WHEN.into(),
        }),
        (_, false) => C::DeleteInstance,
    }
}

/// The catalog as the store entries it stands for, plus its two name indexes.
type Canonical = (
    BTreeMap<Vec<u8>, Vec<u8>>,
    HashMap<String, Uuid>,
    HashMap<String, Uuid>,
);

fn canonical(catalog: &Catalog) -> Canonical {
    use CatalogChange as C;
    let mut puts: Vec<CatalogChange> = Vec::new();
    puts.extend(catalog.keys.values().cloned().map(C::PutKey));
    puts.extend(catalog.databases.values().cloned().map(C::PutDatabase));
    puts.extend(
        catalog
            .deks
            .values()
            .flat_map(|g| g.values().cloned().map(C::PutDek)),
    );
    puts.extend(catalog.tokens_by_hash.values().cloned().map(C::PutToken));
    puts.extend(catalog.instance.clone().map(C::PutInstance));
    puts.extend(
        catalog
            .authorizations
            .values()
            .cloned()
            .map(C::PutAuthorization),
    );
    puts.extend(catalog.jobs.values().cloned().map(C::PutJob));
    puts.extend(catalog.backups.values().cloned().map(C::PutBackup));
    puts.extend(
        catalog
            .transit
            .iter()
            .map(|(k, s)| C::PutTransit(*k, s.clone())),
    );
    puts.extend(
        catalog
            .policies
            .iter()
            .map(|(k, p)| C::PutPolicy(*k, p.clone())),
    );
    let entries = puts
        .iter()
        .map(|change| match change.to_op() {
            CatalogOp::Put(key, value) => (key.0, value),
            CatalogOp::Delete(key) => (key.0, Vec::new()),
        })
        .collect();
    (
        entries,
        catalog.key_names.clone(),
        catalog.database_names.clone(),
    )
}

/// Every entry the store holds, as stored.
fn stored(store: &dyn Store) -> BTreeMap<Vec<u8>, Vec<u8>> {
    KINDS
        .iter()
        .flat_map(|kind| store.catalog_scan(&codec::key(kind, &[]).0).unwrap())
        .collect()
}

fn commits() -> impl Strategy<Value = Vec<Vec<CatalogChange>>> {
    let one = (0u8..10, 0usize..3, 0u32..6, any::<bool>()).prop_map(change);
    prop::collection::vec(prop::collection::vec(one, 1..5), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn memory_equals_a_reload_after_any_commits(commits in commits()) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None).unwrap();
        config.data_dir = dir.path().join("data");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let vault = Vault::open(&config).unwrap();
            for changes in commits {
                vault.commit(changes).await.unwrap();
                let memory = canonical(&vault.read_catalog());
                let reloaded = Catalog::load(vault.store.as_ref()).unwrap();
                prop_assert_eq!(&memory, &canonical(&reloaded));
                prop_assert_eq!(&memory.0, &stored(vault.store.as_ref()));
            }
            Ok(())
        })?;
    }
}
