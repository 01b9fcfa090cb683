//! Backups (DESIGN.md rule 7): a consistent snapshot of a database re-sealed under a fresh
//! backup DEK, wrapped by the database's backup key (or its own key), in one object of the
//! backup target (`backup::target`: a directory or an S3 bucket) that becomes visible only
//! once complete. Restore verifies the whole object before creating anything.

use super::catalog::CatalogChange;
use std::io::Read;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::authz::{BACKUPS, DATABASES, DELEGATOR, READER};
use super::keys::require_usable;
use super::{now_rfc3339, Principal, ServiceError, Vault};
use crate::api::{CreateDatabaseRequest, DatabaseInfo};
use crate::backup::format::{self, BackedUpDatabase, BackupFormatError, BackupHeader, KeySlot};
use crate::backup::stream_io::{read_payload, PayloadWriter};
use crate::backup::target::{object_name, BackupObjectMeta, ObjectWriter, TargetError};
use crate::crypto::bindings::{backup_dek_context, record_context};
use crate::crypto::stream::{random_prefix, CHUNK_SIZE};
use crate::crypto::{Cipher, Envelope, EnvelopeKind, SecretKey};
use crate::keystore::RootKeyRef;
use crate::store::{BackupRecord, KeyOrigin, KeyRecord};

/// Records read from the store per page while writing a backup, and the sealed bytes a page
/// stops at: the page is what a backup holds in memory besides one STREAM chunk.
const PAGE: usize = 512;
const PAGE_BYTES: usize = 4 << 20;

/// A backup as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupInfo {
    /// Id.
    pub id: String,
    /// CRN.
    pub crn: String,
    /// Database name at backup time.
    pub database: String,
    /// Database id.
    pub database_id: String,
    /// Backup key id.
    pub key: String,
    /// Backup key CRN.
    pub key_crn: String,
    /// Backup key version wrapping the DEK.
    pub key_version: u32,
    /// File size.
    pub size: u64,
    /// Records.
    pub record_count: u64,
    /// RFC 3339.
    pub created_at: String,
    /// `available` | `key_destroyed`.
    pub state: String,
    /// File path, or `s3://BUCKET/KEY` of the object.
    pub path: String,
    /// When a backup kept after its database's purge is destroyed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl From<TargetError> for ServiceError {
    fn from(err: TargetError) -> Self {
        match err {
            TargetError::NotFound(m) => ServiceError::NotFound(m),
            TargetError::Config(m) => ServiceError::BadRequest(m),
            TargetError::Failed(m) => ServiceError::BackupTarget(m),
        }
    }
}

impl From<BackupFormatError> for ServiceError {
    fn from(err: BackupFormatError) -> Self {
        match err {
            BackupFormatError::Io(e) => ServiceError::BackupTarget(e.to_string()),
            // Every backup read comes from a stored object, never from the request: a file
            // that does not parse or authenticate is damaged data, answered like a damaged
            // record (the detail goes to the daemon's log).
            other => {
                tracing::error!(error = %other, "a stored backup failed its integrity check");
                ServiceError::Integrity
            }
        }
    }
}

impl Vault {
    pub(super) fn backup_info(&self, b: &BackupRecord) -> BackupInfo {
        BackupInfo {
            id: b.id.to_string(),
            crn: self.crn("backup", &b.id),
            database: b.database_name.clone(),
            database_id: b.database_id.to_string(),
            key: b.key_id.to_string(),
            key_crn: self.crn("key", &b.key_id),
            key_version: b.key_version,
            size: b.size,
            record_count: b.record_count,
            created_at: b.created_at.clone(),
            state: b.state.clone(),
            path: self.backup_target.location(&b.file),
            expires_at: b.expires_at.map(super::databases::unix_to_rfc3339),
        }
    }

    /// Checks rule 7 for using `backup_key` on behalf of a database that names it, and keeps
    /// the delegated `backups` authorization in place.
    async fn check_backup_key(
        &self,
        backup_key: &KeyRecord,
        database_key: Uuid,
        database_crn: &str,
    ) -> Result<(), ServiceError> {
        require_usable(backup_key)?;
        if backup_key.origin == KeyOrigin::Provider {
            return Ok(());
        }
        let roles: &[&str] = if backup_key.id == database_key {
            &[READER]
        } else {
            &[READER, DELEGATOR]
        };
        if !self
            .read_catalog()
            .is_authorized(DATABASES, &backup_key.id, roles)
        {
            return Err(ServiceError::NotAuthorizedForKey(format!(
                "no {DATABASES:?} authorization with roles {} for backup key {:?}",
                roles.join("+"),
                backup_key.name
            )));
        }
        if backup_key.id != database_key {
            self.ensure_delegation(backup_key.id, database_crn).await?;
            if !self
                .read_catalog()
                .is_authorized(BACKUPS, &backup_key.id, &[READER])
            {
                return Err(ServiceError::NotAuthorizedForKey(format!(
                    "no delegated {BACKUPS:?} authorization for backup key {:?}",
                    backup_key.name
                )));
            }
        }
        Ok(())
    }

    /// Backs a database up; returns once the file and its registration are durable.
    pub async fn create_backup(
        &self,
        who: &Principal,
        database: &str,
    ) -> Result<BackupInfo, ServiceError> {
        let result = self.create_backup_inner(who, database).await;
        let target = self.target_crn(database, &result.as_ref().map(|b| b.crn.clone()));
        self.audited(who, "backups.create", &target, result, None)
    }

    async fn create_backup_inner(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<BackupInfo, ServiceError> {
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
        let wrapped = self.keystore_call(|ks| {
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
            let mut out = self.backup_target.create(
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
            let _ = tokio::task::block_in_place(|| self.backup_target.delete(&file_name));
            return Err(err);
        }
        Ok(info)
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
    pub(super) fn open_stored_record(
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

    /// Every backup, newest last. A shared target (S3) is listed first, and objects this
    /// node has no registration for are adopted when they verify (`backup_adoption`).
    pub async fn list_backups(&self, who: &Principal) -> Result<Vec<BackupInfo>, ServiceError> {
        who.require_operator()?;
        self.adopt_backup_objects().await?;
        let catalog = self.read_catalog();
        let mut list: Vec<&BackupRecord> = catalog.backups.values().collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(list.into_iter().map(|b| self.backup_info(b)).collect())
    }

    /// [`Vault::find_backup`], adopting the target's unregistered objects first when the
    /// backup is not registered (a shared target may hold it).
    async fn find_backup_adopting(&self, reference: &str) -> Result<BackupRecord, ServiceError> {
        match self.find_backup(reference) {
            Err(ServiceError::NotFound(_)) if self.backup_target.is_shared() => {
                self.adopt_backup_objects().await?;
                self.find_backup(reference)
            }
            other => other,
        }
    }

    fn find_backup(&self, reference: &str) -> Result<BackupRecord, ServiceError> {
        let missing = || ServiceError::NotFound(format!("no backup {reference:?}"));
        let catalog = self.read_catalog();
        let id = match catalog.crn_id(reference, "backup") {
            Some(id) => id,
            None => Uuid::parse_str(reference).ok(),
        }
        .ok_or_else(missing)?;
        catalog.backups.get(&id).cloned().ok_or_else(missing)
    }

    /// One backup.
    pub async fn show_backup(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<BackupInfo, ServiceError> {
        who.require_operator()?;
        Ok(self.backup_info(&self.find_backup_adopting(reference).await?))
    }

    /// Deletes a backup's registration and file.
    pub async fn delete_backup(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<(), ServiceError> {
        let target = self
            .find_backup(reference)
            .map(|b| self.crn("backup", &b.id))
            .unwrap_or_else(|_| reference.to_string());
        let result = self.delete_backup_inner(who, reference).await;
        self.audited(who, "backups.delete", &target, result, None)
    }

    pub(super) async fn delete_backup_inner(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<(), ServiceError> {
        who.require_operator()?;
        let record = self.find_backup_adopting(reference).await?;
        // Adoption takes `admin` too: it cannot re-register the object being deleted.
        let _admin = self.admin().await?;
        // The object first: if the target refuses, the backup stays registered and listed.
        tokio::task::block_in_place(|| self.backup_target.delete(&record.file))?;
        self.commit(vec![CatalogChange::DeleteBackup(record.id)])
            .await?;
        Ok(())
    }

    /// Restores a backup into a new database (under the original database's key, or `key`).
    pub async fn restore_backup(
        &self,
        who: &Principal,
        reference: &str,
        into: &str,
        key: Option<String>,
    ) -> Result<DatabaseInfo, ServiceError> {
        let result = self.restore_backup_inner(who, reference, into, key).await;
        let target = self
            .find_backup(reference)
            .map(|b| self.crn("backup", &b.id))
            .unwrap_or_else(|_| reference.to_string());
        let details = result
            .as_ref()
            .ok()
            .map(|db| serde_json::json!({"into": db.crn}));
        self.audited(who, "backups.restore", &target, result, details)
    }

    async fn restore_backup_inner(
        &self,
        who: &Principal,
        reference: &str,
        into: &str,
        key: Option<String>,
    ) -> Result<DatabaseInfo, ServiceError> {
        who.require_operator()?;
        let record = self.find_backup_adopting(reference).await?;
        let (front, _) = tokio::task::block_in_place(|| self.open_backup_payload(&record))?;
        let backup_key = self
            .read_catalog()
            .keys
            .get(&record.key_id)
            .cloned()
            .ok_or_else(|| ServiceError::KeyDestroyed("the backup key no longer exists".into()))?;
        self.check_backup_key(
            &backup_key,
            front.header.database.key_id,
            &front.header.database.crn,
        )
        .await?;
        let plain = self
            .keystore_call(|ks| {
                ks.open(
                    record.key_id,
                    EnvelopeKind::BackupDek,
                    &backup_dek_context(record.id.as_bytes(), record.key_id.as_bytes()),
                    front.slot.wrapped.clone(),
                )
            })
            .map_err(ServiceError::from_stored_open)?;
        let cipher =
            Cipher::new(&SecretKey::from_slice(&plain).map_err(|_| ServiceError::Integrity)?);
        drop(plain);
        // Pass 1: authenticate the whole payload before creating anything. The object is
        // streamed (twice: a backup can be far larger than memory).
        tokio::task::block_in_place(|| -> Result<u64, ServiceError> {
            let (_, payload) = self.open_backup_payload(&record)?;
            Ok(read_payload(payload, &cipher, &front, |_, _| Ok(()))?)
        })?;
        let original_key = {
            let catalog = self.read_catalog();
            catalog.keys.get(&front.header.database.key_id).cloned()
        };
        let key = match key {
            Some(k) => Some(k),
            None => match original_key {
                Some(k) if k.origin == KeyOrigin::Provider => None,
                Some(k) => Some(k.id.to_string()),
                None => {
                    return Err(ServiceError::KeyDestroyed(
                        "the original database's key no longer exists; restore with --key".into(),
                    ))
                }
            },
        };
        let created = self
            .create_database(
                who,
                CreateDatabaseRequest {
                    name: into.to_string(),
                    key,
                    backup_key: None,
                    ..Default::default()
                },
            )
            .await?;
        let db_id = Uuid::parse_str(&created.id)
            .map_err(|_| ServiceError::Internal("a created database id is not a UUID"))?;
        let generation = self
            .reserve_bulk_seals(db_id, front.header.record_count)
            .await?;
        let dek = self.dek(db_id, generation)?;
        // Pass 2: re-seal every record under the new database's DEK.
        let restored = tokio::task::block_in_place(|| -> Result<u64, ServiceError> {
            let (again, payload) = self.open_backup_payload(&record)?;
            if again.header_bytes != front.header_bytes {
                tracing::error!(backup = %record.id, "the backup object changed during the restore");
                return Err(ServiceError::Integrity);
            }
            let envelope = Envelope(EnvelopeKind::Record);
            Ok(read_payload(payload, &cipher, &front, |k, v| {
                let sealed = envelope
                    .seal(&dek, generation, &record_context(db_id.as_bytes(), k), v)
                    .map_err(|_| BackupFormatError::Invalid("cannot seal"))?;
                self.store
                    .record_put(db_id.as_bytes(), k, sealed)
                    .map_err(|e| BackupFormatError::Io(std::io::Error::other(e.to_string())))
            })?)
        });
        if let Err(err) = restored {
            // The file changed between passes: remove what was created.
            let _ = self.store.records_purge(db_id.as_bytes());
            return Err(err);
        }
        self.flush().await?;
        Ok(created)
    }

    /// Rewraps every backup header under `key_id` to `version` (rotation). Flat in backup
    /// size: only the inactive key slot is written.
    pub(super) fn rewrap_backups(
        &self,
        key_id: Uuid,
        version: u32,
    ) -> Result<Vec<BackupRecord>, ServiceError> {
        let pending: Vec<BackupRecord> = self
            .read_catalog()
            .backups_under(&key_id)
            .into_iter()
            .filter(|b| b.key_version < version && b.state == "available")
            .cloned()
            .collect();
        let mut done = Vec::with_capacity(pending.len());
        for mut record in pending {
            let (front, payload) = self.open_backup_payload(&record)?;
            drop(payload);
            let context = backup_dek_context(record.id.as_bytes(), key_id.as_bytes());
            if front.slot.key_version < version {
                let plain = self.keystore_call(|ks| {
                    ks.open(
                        key_id,
                        EnvelopeKind::BackupDek,
                        &context,
                        front.slot.wrapped.clone(),
                    )
                })?;
                let wrapped = self.keystore_call(|ks| {
                    ks.seal(
                        RootKeyRef { key_id, version },
                        EnvelopeKind::BackupDek,
                        &context,
                        &plain,
                    )
                })?;
                let slot = KeySlot {
                    seq: front
                        .slot
                        .seq
                        .checked_add(1)
                        .ok_or(ServiceError::BadRequest(
                            "backup key slot sequence exhausted".into(),
                        ))?,
                    key_version: version,
                    wrapped,
                };
                self.backup_target
                    .write_slot(&record.file, 1 - front.slot_index, &slot)?;
            }
            record.key_version = version;
            done.push(record);
        }
        Ok(done)
    }

    /// Deletes temp files of interrupted backups and files no registration names (local
    /// directory only: a shared target's unregistered objects are adopted instead).
    pub fn clean_backup_dir(&self) -> Result<usize, ServiceError> {
        let known: std::collections::HashSet<String> = self
            .read_catalog()
            .backups
            .values()
            .map(|b| b.file.clone())
            .collect();
        Ok(self.backup_target.clean(&known)?)
    }

    /// Opens a registered backup's object and reads its front, checking it against the
    /// registration (and against the object's metadata, where the target keeps some); the
    /// returned reader is positioned at the payload.
    fn open_backup_payload(
        &self,
        record: &BackupRecord,
    ) -> Result<(format::BackupFront, Box<dyn Read + Send>), ServiceError> {
        let opened = self.backup_target.open(&record.file)?;
        let mut reader = opened.reader;
        let front = format::read_front(&mut reader)?;
        let meta_matches = opened.meta.as_ref().is_none_or(|m| {
            m.backup_id == front.header.backup_id
                && m.backup_key_id == front.header.backup_key_id
                && m.database_id == front.header.database.id
        });
        if front.header.backup_id != record.id
            || front.header.backup_key_id != record.key_id
            || !meta_matches
        {
            tracing::error!(backup = %record.id, "backup file does not match its registration");
            return Err(ServiceError::Integrity);
        }
        Ok((front, reader))
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

fn header_prefix(header: &BackupHeader) -> Result<[u8; 7], ServiceError> {
    let front = format::BackupFront {
        header: header.clone(),
        header_bytes: Vec::new(),
        slot: KeySlot {
            seq: 0,
            key_version: 0,
            wrapped: Vec::new(),
        },
        slot_index: 0,
        payload_offset: 0,
    };
    Ok(front.prefix()?)
}
