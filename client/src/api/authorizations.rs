//! Authorizations letting a source service (`databases`, `backups`) use a key.

use serde::{Deserialize, Serialize};

/// `POST /v1/authorizations` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// `databases` | `backups`.
    pub source: String,
    /// A key (name, id or CRN) or `*`.
    pub target: String,
    /// `Reader`, optionally `AuthorizationDelegator`.
    pub roles: Vec<String>,
}

/// An authorization letting a source service use a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthorizationInfo {
    /// Id.
    pub id: String,
    /// Source service.
    pub source: String,
    /// Target key CRN, or `*`.
    pub target: String,
    /// Roles.
    pub roles: Vec<String>,
    /// CRN of the database that caused a delegated authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// `GET /v1/authorizations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationList {
    /// Every authorization, delegated ones included.
    pub authorizations: Vec<AuthorizationInfo>,
}
