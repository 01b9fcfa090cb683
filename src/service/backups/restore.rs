//! Restoring a backup into a new database: the whole object is verified before anything is
//! created.

use crate::service::Action;
use uuid::Uuid;

use crate::api::{CreateDatabaseRequest, DatabaseInfo};
use crate::backup::format::BackupFormatError;
use crate::backup::stream_io::read_payload;
use crate::crypto::bindings::{backup_dek_context, record_context};
use crate::crypto::{Cipher, Envelope, EnvelopeKind, SecretKey};
use crate::service::{Principal, ServiceError, Vault};
use crate::store::KeyOrigin;

impl Vault {
    /// Restores a backup into a new database (under the original database's key, or `key`).
    pub async fn restore_backup(
        &self,
        who: &Principal,
        reference: &str,
        into: &str,
        key: Option<String>,
    ) -> Result<DatabaseInfo, ServiceError> {
        let result: Result<DatabaseInfo, ServiceError> = async {
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
                .keys
                .call(|ks| {
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
                        .record_put_bulk(db_id.as_bytes(), k, sealed)
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
        .await;
        let target = self
            .find_backup(reference)
            .map(|b| self.crn("backup", &b.id))
            .unwrap_or_else(|_| reference.to_string());
        let details = result
            .as_ref()
            .ok()
            .map(|db| serde_json::json!({"into": db.crn}));
        self.audited(who, Action::BackupsRestore, &target, result, details)
    }
}
