//! Making backups: one on request, the scheduled ones with their retention, and the page-wise
//! writer that re-seals every record under the backup DEK.

use crate::service::Action;
use uuid::Uuid;

use super::{header_prefix, BackupInfo};
use crate::backup::format::{self, BackedUpDatabase, BackupHeader, KeySlot};
use crate::backup::stream_io::PayloadWriter;
use crate::backup::target::{object_name, BackupObjectMeta, ObjectWriter};
use crate::crypto::bindings::{backup_dek_context, record_context};
use crate::crypto::stream::{random_prefix, CHUNK_SIZE};
use crate::crypto::{Cipher, Envelope, EnvelopeKind, SecretKey};
use crate::keystore::RootKeyRef;
use crate::service::catalog::CatalogChange;
use crate::service::{now_rfc3339, Principal, ServiceError, Vault};
use crate::store::BackupRecord;

/// Records read from the store per page while writing a backup, and the sealed bytes a page
/// stops at: the page is what a backup holds in memory besides one STREAM chunk.
const PAGE: usize = 512;
const PAGE_BYTES: usize = 4 << 20;

impl Vault {
    /// Backs a database up; returns once the file and its registration are durable.
    pub async fn create_backup(
        &self,
        who: &Principal,
        database: &str,
    ) -> Result<BackupInfo, ServiceError> {
        let result: Result<BackupInfo, ServiceError> = async {
            let reference = database;
            who.require_operator()?;
            let db_id = self.usable_database(who, reference)?;
            let (db, key) = {
                let catalog = self.read_catalog();
                let db = catalog
                    .databases
                    .get(&db_id)
                    .cloned()
                    .ok_or(ServiceError::Internal(
                        "a backed-up database is not in the catalog",
                    ))?;
                let key_id = db.backup_key_id.unwrap_or(db.key_id);
                let key = catalog
                    .keys
                    .get(&key_id)
                    .cloned()
                    .ok_or(ServiceError::Internal("a backup key is not in the catalog"))?;
                (db, key)
            };
            let db_crn = self.crn("database", &db.id);
            self.check_backup_key(&key, db.key_id, &db_crn).await?;
            let backup_id = Uuid::new_v4();
            let dek = SecretKey::generate().map_err(|_| ServiceError::Random)?;
            let wrapped = self.keys.call(|ks| {
                ks.seal(
                    RootKeyRef {
                        key_id: key.id,
                        version: key.version,
                    },
                    EnvelopeKind::BackupDek,
                    &backup_dek_context(backup_id.as_bytes(), key.id.as_bytes()),
                    dek.expose_secret(),
                )
            })?;
            let cipher = Cipher::new(&dek);
            drop(dek);
            let file_name = object_name(&backup_id);
            // Writers to this database wait while the snapshot is taken: the backup is of one
            // point in time, and every write is wholly in it or wholly not.
            let lock = self.database_lock(db.id);
            let _writers_paused = lock.write().await;
            let written = tokio::task::block_in_place(|| {
                let record_count = self.store.record_count(db.id.as_bytes())?;
                let header = BackupHeader {
                    backup_id,
                    created_at: now_rfc3339(),
                    database: BackedUpDatabase {
                        id: db.id,
                        name: db.name.clone(),
                        crn: db_crn.clone(),
                        key_id: db.key_id,
                    },
                    backup_key_id: key.id,
                    chunk_size: CHUNK_SIZE as u32,
                    record_count,
                    nonce_prefix: random_prefix()
                        .map_err(|_| ServiceError::Random)?
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                };
                let mut out = self.backups.target().create(
                    &file_name,
                    &BackupObjectMeta {
                        backup_id,
                        database_id: db.id,
                        backup_key_id: key.id,
                        created_at: header.created_at.clone(),
                    },
                )?;
                // Nothing lists as a backup unless `finish` completes: a failure aborts the object.
                match self.write_backup(&mut out, &header, &wrapped, key.version, &cipher, db.id) {
                    Ok(()) => Ok((header, out.finish()?)),
                    Err(err) => {
                        out.abort();
                        Err(err)
                    }
                }
            });
            drop(_writers_paused);
            let (header, size) = written?;
            let record = BackupRecord {
                id: backup_id,
                database_id: db.id,
                database_name: db.name.clone(),
                key_id: key.id,
                key_version: key.version,
                file: file_name.clone(),
                size,
                record_count: header.record_count,
                created_at: header.created_at.clone(),
                state: "available".into(),
                expires_at: None,
            };
            let info = self.backup_info(&record);
            if let Err(err) = self.commit(vec![CatalogChange::PutBackup(record)]).await {
                let _ = tokio::task::block_in_place(|| self.backups.target().delete(&file_name));
                return Err(err);
            }
            Ok(info)
        }
        .await;
        let target = self.target_crn(database, &result.as_ref().map(|b| b.crn.clone()));
        self.audited(who, Action::BackupsCreate, &target, result, None)
    }

    /// Writes a complete backup to `out` (the caller finishes or aborts it).
    fn write_backup(
        &self,
        out: &mut Box<dyn ObjectWriter>,
        header: &BackupHeader,
        wrapped: &[u8],
        key_version: u32,
        cipher: &Cipher,
        database: Uuid,
    ) -> Result<(), ServiceError> {
        let mut out: &mut dyn ObjectWriter = out.as_mut();
        let slot = KeySlot {
            seq: 1,
            key_version,
            wrapped: wrapped.to_vec(),
        };
        let header_bytes = format::write_front(&mut out, header, &slot)?;
        let prefix = header_prefix(header)?;
        let mut payload =
            PayloadWriter::new(out, cipher, prefix, &format::stream_aad(&header_bytes));
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page =
                self.store
                    .record_page(database.as_bytes(), after.as_deref(), PAGE, PAGE_BYTES)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, sealed) in page {
                let value = self.open_stored_record(database, &key, sealed)?;
                payload.add(&key, &value)?;
            }
        }
        let (_, written) = payload.finish()?;
        if written != header.record_count {
            return Err(ServiceError::Internal(
                "the backup holds another number of records than its header",
            ));
        }
        Ok(())
    }

    /// Opens a record as stored (the DEK generation is in its header).
    pub(in crate::service) fn open_stored_record(
        &self,
        database: Uuid,
        key: &[u8],
        sealed: Vec<u8>,
    ) -> Result<Vec<u8>, ServiceError> {
        let envelope = Envelope(EnvelopeKind::Record);
        let generation = envelope
            .label(&sealed)
            .map_err(|_| ServiceError::Integrity)?;
        let cipher = self.dek(database, generation)?;
        envelope
            .open(&cipher, &record_context(database.as_bytes(), key), sealed)
            .map(|(_, plain)| plain)
            .map_err(|_| ServiceError::Integrity)
    }

    /// Creates a backup of every active database and keeps the newest `retention` of each.
    /// Returns how many backups failed (each failure is in the activity log).
    pub async fn run_scheduled_backups(&self, retention: usize) -> usize {
        let system = Principal::system();
        let databases: Vec<(Uuid, String)> = self
            .read_catalog()
            .databases
            .values()
            .filter(|db| db.state == crate::store::DatabaseState::Active)
            .map(|db| (db.id, db.name.clone()))
            .collect();
        let mut failures = 0;
        for (id, name) in databases {
            if let Err(err) = self.create_backup(&system, &id.to_string()).await {
                tracing::error!(database = %name, error = %err, "scheduled backup failed; will retry");
                failures += 1;
                continue;
            }
            let mut own: Vec<BackupRecord> = self
                .read_catalog()
                .backups
                .values()
                .filter(|b| b.database_id == id)
                .cloned()
                .collect();
            own.sort_by(|a, b| a.created_at.cmp(&b.created_at));
            let excess = own.len().saturating_sub(retention.max(1));
            for old in own.into_iter().take(excess) {
                if let Err(err) = self.delete_backup(&system, &old.id.to_string()).await {
                    tracing::error!(backup = %old.id, error = %err, "retention delete failed");
                }
            }
        }
        failures
    }
}
