//! Wire types of the socket API (`shared/API.md`), shared by the server and the [`crate::client`],
//! so the two cannot drift apart. Binary values travel as standard base64 strings.
//!
//! One file per topic; every type is re-exported here, so `crate::api::X` is the path to use:
//! - `keys`: root keys and wrap / unwrap / rewrap;
//! - `import`: import tokens and the fields of a secure import;
//! - `kms`: key policies;
//! - `databases`, `records`: databases and their records;
//! - `health`: `GET /v1/health`;
//! - `lifecycle`: rotation, dry-run impacts, shred receipts;
//! - `authorizations`, `audit`: authorizations and the activity log.
//!
//! Error bodies, shared by every route, are here.

mod audit;
mod authorizations;
mod databases;
mod health;
mod import;
mod keys;
mod kms;
mod lifecycle;
mod records;

pub use audit::{AuditEvent, AuditEvents, AuditInitiator, AuditVerifyReport};
pub use authorizations::{AuthorizationInfo, AuthorizationList, GrantRequest};
pub use databases::{CreateDatabaseRequest, DatabaseInfo, DatabaseList, DatabaseListQuery};
pub use health::{AuditSyncStats, ComponentHealth, DekCacheStats, Health};
pub use import::{CreateImportTokenRequest, ImportTokenInfo, SecureImportFields};
pub use keys::{
    CreateKeyRequest, KeyInfo, KeyList, Registration, RewrapResponse, UnwrapRequest,
    UnwrapResponse, WrapRequest, WrapResponse,
};
pub use kms::{KeyPolicyInfo, SetPolicyRequest};
pub use lifecycle::{
    AffectedResource, Impact, RotateRequest, RotateResponse, RotationStatus, ShredReceipt,
};
pub use records::{
    RecordBatchOp, RecordBatchRequest, RecordBatchResponse, RecordBatchResult, RecordListQuery,
    RecordPage,
};

use serde::{Deserialize, Serialize};

pub use crate::store::ValueLogStats;

/// Error body: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable snake_case code and a human sentence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable code, e.g. `key_destroyed`.
    pub code: String,
    /// Human sentence.
    pub message: String,
}
