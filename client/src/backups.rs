//! Backups: create, list, show, delete and restore.

use super::paths::{backup_path, db_path};
use super::{Client, ClientError, Method, NO_BODY};
use crate::api::{BackupInfo, BackupList, DatabaseInfo, RestoreBackupRequest};

impl Client {
    /// `POST /v1/databases/{db}/backups`.
    pub async fn create_backup(&self, db: &str) -> Result<BackupInfo, ClientError> {
        self.call_json(Method::POST, &db_path(db, "/backups"), NO_BODY)
            .await
    }

    /// `GET /v1/backups`.
    pub async fn list_backups(&self) -> Result<Vec<BackupInfo>, ClientError> {
        let list: BackupList = self.call_json(Method::GET, "/v1/backups", NO_BODY).await?;
        Ok(list.backups)
    }

    /// `GET /v1/backups/{id}`.
    pub async fn get_backup(&self, id: &str) -> Result<BackupInfo, ClientError> {
        self.call_json(Method::GET, &backup_path(id, ""), NO_BODY)
            .await
    }

    /// `DELETE /v1/backups/{id}`.
    pub async fn delete_backup(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &backup_path(id, ""), None, None)
            .await
            .map(drop)
    }

    /// `POST /v1/backups/{id}/restore`: restores into a new database named `into`, protected
    /// by `key` when given (else as the daemon decides). Returns the new database.
    pub async fn restore_backup(
        &self,
        id: &str,
        into: &str,
        key: Option<&str>,
    ) -> Result<DatabaseInfo, ClientError> {
        let body = RestoreBackupRequest {
            into: into.to_string(),
            key: key.map(str::to_string),
        };
        self.call_json(Method::POST, &backup_path(id, "/restore"), Some(&body))
            .await
    }
}
