//! Lifecycle verbs of the client: rotation jobs and previews, disable / enable, deletion and
//! cryptoshred receipts, authorizations, soft deletion of databases and the activity log.

use super::paths::{db_path, encode_segment, key_path, query_string};
use super::{Client, ClientError, Method, NO_BODY};
use crate::api::{
    AuditEvent, AuditEvents, AuditVerifyReport, AuthorizationInfo, AuthorizationList, DatabaseInfo,
    GrantRequest, Impact, KeyInfo, RotateRequest, RotateResponse, RotationStatus, ShredReceipt,
};

/// A key action the daemon can preview ([`Client::preview_key_action`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// `POST /v1/keys/{key}/rotate?dry_run=true`.
    Rotate,
    /// `POST /v1/keys/{key}/disable?dry_run=true`.
    Disable,
    /// `DELETE /v1/keys/{key}?dry_run=true`.
    Delete,
}

impl Client {
    /// `POST /v1/keys/{key}/rotate`: adds a version and rewraps every DEK under the key.
    /// With `wait` the answer comes when the job is done; without, it comes at once (202) and
    /// [`Client::rotation_status`] follows the job.
    pub async fn rotate_key(
        &self,
        key: &str,
        retire_old: bool,
        wait: bool,
    ) -> Result<RotateResponse, ClientError> {
        let body = RotateRequest {
            retire_old,
            wait: Some(wait),
        };
        self.call_json(Method::POST, &key_path(key, "/rotate"), Some(&body))
            .await
    }

    /// `GET /v1/keys/{key}/rotation`: progress of the key's current or last rotation
    /// (`not_found` when it never rotated).
    pub async fn rotation_status(&self, key: &str) -> Result<RotationStatus, ClientError> {
        self.call_json(Method::GET, &key_path(key, "/rotation"), NO_BODY)
            .await
    }

    /// What `action` on the key would affect, computed by the daemon (`?dry_run=true`);
    /// nothing changes.
    pub async fn preview_key_action(
        &self,
        key: &str,
        action: KeyAction,
    ) -> Result<Impact, ClientError> {
        let (method, suffix) = match action {
            KeyAction::Rotate => (Method::POST, "/rotate"),
            KeyAction::Disable => (Method::POST, "/disable"),
            KeyAction::Delete => (Method::DELETE, ""),
        };
        let path = format!("{}?dry_run=true", key_path(key, suffix));
        self.call_json(method, &path, NO_BODY).await
    }

    /// `POST /v1/keys/{key}/disable`: suspends the key, locking what it protects.
    pub async fn disable_key(&self, key: &str) -> Result<KeyInfo, ClientError> {
        self.call_json(Method::POST, &key_path(key, "/disable"), NO_BODY)
            .await
    }

    /// `POST /v1/keys/{key}/enable`.
    pub async fn enable_key(&self, key: &str) -> Result<KeyInfo, ClientError> {
        self.call_json(Method::POST, &key_path(key, "/enable"), NO_BODY)
            .await
    }

    /// `DELETE /v1/keys/{key}`: the receipt. A key that still protects data is refused with
    /// `key_in_use` unless `force`, which cryptoshreds it (irreversible).
    pub async fn delete_key(&self, key: &str, force: bool) -> Result<ShredReceipt, ClientError> {
        let path = format!(
            "{}{}",
            key_path(key, ""),
            if force { "?force=true" } else { "" }
        );
        self.call_json(Method::DELETE, &path, NO_BODY).await
    }

    // ----- authorizations

    /// `POST /v1/authorizations`: lets `source` (`databases` | `backups`) use `target` (a key or
    /// `*`) with `roles` (`Reader`, `AuthorizationDelegator`). An identical authorization fails
    /// with `duplicate_policy`.
    pub async fn grant(
        &self,
        source: &str,
        target: &str,
        roles: &[String],
    ) -> Result<AuthorizationInfo, ClientError> {
        let body = GrantRequest {
            source: source.to_string(),
            target: target.to_string(),
            roles: roles.to_vec(),
        };
        self.call_json(Method::POST, "/v1/authorizations", Some(&body))
            .await
    }

    /// `GET /v1/authorizations`, delegated ones included.
    pub async fn list_authorizations(&self) -> Result<Vec<AuthorizationInfo>, ClientError> {
        let list: AuthorizationList = self
            .call_json(Method::GET, "/v1/authorizations", NO_BODY)
            .await?;
        Ok(list.authorizations)
    }

    /// `DELETE /v1/authorizations/{id}`.
    pub async fn revoke_authorization(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/authorizations/{}", encode_segment(id));
        self.call(Method::DELETE, &path, None, None).await.map(drop)
    }

    // ----- databases (lifecycle)

    /// `DELETE /v1/databases/{db}`: soft delete; the database in state `deleted`, with the
    /// time it will be purged.
    pub async fn delete_database(&self, db: &str) -> Result<DatabaseInfo, ClientError> {
        self.call_json(Method::DELETE, &db_path(db, ""), NO_BODY)
            .await
    }

    /// `POST /v1/databases/{db}/restore`: undoes a soft delete within the period.
    pub async fn restore_database(&self, db: &str) -> Result<DatabaseInfo, ClientError> {
        self.call_json(Method::POST, &db_path(db, "/restore"), NO_BODY)
            .await
    }

    // ----- audit

    /// `GET /v1/audit?action=&since=`: events with this action (a trailing `*` matches a
    /// prefix) at or after this RFC 3339 time, oldest first.
    pub async fn audit(
        &self,
        action: Option<&str>,
        since: Option<&str>,
    ) -> Result<Vec<AuditEvent>, ClientError> {
        let path = format!(
            "/v1/audit{}",
            query_string(&[("action", action), ("since", since)])
        );
        let answer: AuditEvents = self.call_json(Method::GET, &path, NO_BODY).await?;
        Ok(answer.events)
    }

    /// `GET /v1/audit/verify`: checks the activity log's hash chain. A broken chain is a
    /// successful answer with `ok: false`, not an error.
    pub async fn audit_verify(&self) -> Result<AuditVerifyReport, ClientError> {
        self.call_json(Method::GET, "/v1/audit/verify", NO_BODY)
            .await
    }
}
