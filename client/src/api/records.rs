//! Records of a database: key listing pages and batches (`…/records`, `…/records:batch`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ErrorDetail;
use crate::secret::{redacted, Redacted, SecretString};

/// `GET /v1/databases/{db}/records?prefix=&after=&limit=` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordListQuery {
    /// Only keys starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only keys strictly after this (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Page size (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `POST /v1/databases/{db}/records:batch` body: operations run in order.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordBatchRequest {
    /// 1 to 1,000 operations.
    pub ops: Vec<RecordBatchOp>,
}

/// One operation of a batch.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum RecordBatchOp {
    /// Write a record.
    Put {
        /// Record key.
        key: String,
        /// Value, base64.
        value: SecretString,
    },
    /// Read a record.
    Get {
        /// Record key.
        key: String,
    },
    /// Remove a record.
    Delete {
        /// Record key.
        key: String,
    },
}

impl RecordBatchOp {
    /// A put of raw bytes (base64-encoded here).
    pub fn put(key: impl Into<String>, value: &[u8]) -> Self {
        RecordBatchOp::Put {
            key: key.into(),
            value: SecretString::base64_of(value),
        }
    }
}

impl RecordBatchResult {
    /// The value of a successful get, decoded; `None` when there is none or it is not base64.
    pub fn value_bytes(&self) -> Option<Vec<u8>> {
        let value = self.value.as_ref()?;
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(value.expose_secret())
            .ok()
    }
}

/// `POST …/records:batch` answer: one result per operation, in order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RecordBatchResponse {
    /// Results, in the order of the operations.
    pub results: Vec<RecordBatchResult>,
}

/// What one operation of a batch did.
#[derive(Serialize, Deserialize)]
pub struct RecordBatchResult {
    /// The status the single-record route would have answered: 204 for a put or delete, 200
    /// for a get, else the error's status.
    pub status: u16,
    /// The value of a successful get, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<SecretString>,
    /// Why this operation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// A page of record keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordPage {
    /// Keys in byte order.
    pub keys: Vec<String>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl fmt::Debug for RecordBatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordBatchOp::Put { key, .. } => f
                .debug_struct("Put")
                .field("key", key)
                .field("value", &Redacted)
                .finish(),
            RecordBatchOp::Get { key } => f.debug_struct("Get").field("key", key).finish(),
            RecordBatchOp::Delete { key } => f.debug_struct("Delete").field("key", key).finish(),
        }
    }
}

impl fmt::Debug for RecordBatchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatchResult")
            .field("status", &self.status)
            .field("value", &redacted(&self.value))
            .field("error", &self.error)
            .finish()
    }
}
