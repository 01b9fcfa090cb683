//! Bearer tokens (`/v1/tokens`): creation, listing, roles.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::secret::{Redacted, SecretString};

/// What a token may do. The daemon stores a token's role in this same spelling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Everything.
    Operator,
    /// Records of the named databases only.
    #[default]
    App,
}

/// `POST /v1/tokens` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// `operator` | `app`.
    pub role: TokenRole,
    /// For app tokens: the databases (name, id or CRN) it may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Unique name (same rules as key names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Time to live, e.g. "30d" (1s to 3650d); none: the token never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// Id.
    pub id: String,
    /// Role.
    pub role: TokenRole,
    /// Database ids an app token may use.
    pub databases: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Name, if given.
    #[serde(default)]
    pub name: Option<String>,
    /// RFC 3339 of the last authenticated request (to about a minute); none: never used.
    #[serde(default)]
    pub last_used_at: Option<String>,
    /// RFC 3339 expiry; none: never.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Whether the expiry has passed.
    #[serde(default)]
    pub expired: bool,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    /// Every token (never the secrets).
    pub tokens: Vec<TokenInfo>,
}

/// `POST /v1/tokens` answer: the only time the token's secret is shown.
#[derive(Serialize, Deserialize)]
pub struct NewToken {
    /// Id.
    pub id: String,
    /// The bearer secret.
    pub token: SecretString,
    /// Role.
    pub role: TokenRole,
    /// Database ids.
    pub databases: Vec<String>,
    /// Name, if given.
    #[serde(default)]
    pub name: Option<String>,
    /// RFC 3339 expiry; none: never.
    #[serde(default)]
    pub expires_at: Option<String>,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("token", &Redacted)
            .field("role", &self.role)
            .field("databases", &self.databases)
            .field("name", &self.name)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
