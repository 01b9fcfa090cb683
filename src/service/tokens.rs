//! Bearer tokens: 256-bit random secrets, stored only as SHA-256 hashes. At first start the
//! daemon writes an operator token to `<data_dir>/operator.token` (0600) for the CLI.

use super::catalog::CatalogChange;
use crate::service::Action;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::token_lifecycle::{parse_ttl, rfc3339_of, unix_now};
use super::{now_rfc3339, ServiceError, Vault};
use crate::crypto::os_random;
use crate::store::{TokenRecord, TokenRole};

/// Who is making a request: the token's id and role, and the peer's credentials.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Public token id (never the secret).
    pub token_id: String,
    /// Role.
    pub role: TokenRole,
    /// Databases an app token may use.
    pub databases: Vec<Uuid>,
    /// Peer uid from SO_PEERCRED, when known.
    pub peer_uid: Option<u32>,
}

impl Principal {
    /// A principal for work the daemon does by itself (purges, scheduled jobs).
    pub fn system() -> Self {
        Self {
            token_id: "system".into(),
            role: TokenRole::Operator,
            databases: Vec::new(),
            peer_uid: None,
        }
    }

    /// Fails with `forbidden` unless this is an operator.
    pub fn require_operator(&self) -> Result<(), ServiceError> {
        match self.role {
            TokenRole::Operator => Ok(()),
            TokenRole::App => Err(ServiceError::Forbidden(
                "this route needs an operator token".into(),
            )),
        }
    }
}

/// A bearer token's hash, as the catalog looks tokens up (never the secret itself).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl TokenHash {
    /// Hashes a bearer token.
    pub fn of(secret: &str) -> Self {
        Self(hash_hex(secret))
    }
}

fn hash_hex(secret: &str) -> String {
    hex_encode(&Sha256::digest(secret.as_bytes()))
}

fn hex_encode(bytes: &[u8]) -> String {
    // Runs on every request (token hash): one allocation, no formatting machinery.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    text
}

impl Vault {
    /// Creates an unnamed token that never expires and returns (record, secret).
    pub async fn issue_token(
        &self,
        role: TokenRole,
        databases: Vec<Uuid>,
    ) -> Result<(TokenRecord, Zeroizing<String>), ServiceError> {
        self.issue_named_token(role, databases, None, None).await
    }

    /// Creates a token and returns (record, secret). The secret is shown once and never stored.
    pub async fn issue_named_token(
        &self,
        role: TokenRole,
        databases: Vec<Uuid>,
        name: Option<String>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(TokenRecord, Zeroizing<String>), ServiceError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        os_random(raw.as_mut_slice()).map_err(|_| ServiceError::Random)?;
        let secret = Zeroizing::new(format!(
            "evt_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_slice())
        ));
        let mut id_bytes = [0u8; 6];
        os_random(&mut id_bytes).map_err(|_| ServiceError::Random)?;
        let record = TokenRecord {
            id: format!("tok_{}", hex_encode(&id_bytes)),
            role,
            databases,
            hash: hash_hex(&secret),
            created_at: now_rfc3339(),
            name,
            expires_at: ttl.map(|ttl| unix_now().saturating_add(ttl.as_secs())),
            last_used_at: None,
        };
        let _admin = self.admin().await?;
        if let Some(name) = &record.name {
            if self
                .read_catalog()
                .tokens_by_hash
                .values()
                .any(|t| t.name.as_ref() == Some(name))
            {
                return Err(ServiceError::Conflict(format!(
                    "a token named {name:?} already exists"
                )));
            }
        }
        self.commit(vec![CatalogChange::PutToken(record.clone())])
            .await?;
        Ok((record, secret))
    }

    /// Writes a fresh operator token to `path` (0600) if the file does not exist.
    /// Returns the new token's id when one was created.
    pub async fn ensure_operator_token_file(
        &self,
        path: &Path,
    ) -> Result<Option<String>, ServiceError> {
        if path.exists() {
            return Ok(None);
        }
        // The first operator token never expires: it is how the operator gets in at all.
        let (record, secret) = self.issue_token(TokenRole::Operator, Vec::new()).await?;
        let io = |e: std::io::Error| {
            ServiceError::TokenFile(format!("cannot write {}: {e}", path.display()))
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(secret.as_bytes()).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Some(record.id))
    }

    /// Resolves a bearer token to its principal.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        peer_uid: Option<u32>,
    ) -> Result<Principal, ServiceError> {
        let secret = bearer.ok_or(ServiceError::Unauthenticated)?;
        self.authenticate_hashed(&TokenHash(hash_hex(secret)), peer_uid)
    }

    /// [`Vault::authenticate`] with the token's hash computed earlier: a connection that keeps
    /// its token (the Redis protocol's) checks it again before every round of commands, and
    /// need not hash it each time to see whether it was revoked or expired meanwhile.
    pub fn authenticate_hashed(
        &self,
        hash: &TokenHash,
        peer_uid: Option<u32>,
    ) -> Result<Principal, ServiceError> {
        let hash = &hash.0;
        let catalog = self.read_catalog();
        let record = catalog
            .tokens_by_hash
            .get(hash.as_str())
            .ok_or(ServiceError::Unauthenticated)?;
        // The map lookup compares hashes, which leak nothing useful about the secret; the
        // explicit constant-time check keeps the final comparison timing-independent anyway.
        if !bool::from(record.hash.as_bytes().ct_eq(hash.as_bytes())) {
            return Err(ServiceError::Unauthenticated);
        }
        self.check_token_alive(record, unix_now())?;
        Ok(Principal {
            token_id: record.id.clone(),
            role: record.role,
            databases: record.databases.clone(),
            peer_uid,
        })
    }
}

/// `POST /v1/tokens` body.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// `operator` | `app`.
    pub role: TokenRole,
    /// For app tokens: the databases (name, id or CRN) it may use.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Unique name (same rules as key names).
    #[serde(default)]
    pub name: Option<String>,
    /// Time to live, e.g. "30d" (1s to 3650d); none: the token never expires.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
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

/// A new token: the only time its secret is shown.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewToken {
    /// Id.
    pub id: String,
    /// The bearer secret.
    pub token: String,
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

fn token_info(record: &TokenRecord, now: u64) -> TokenInfo {
    TokenInfo {
        id: record.id.clone(),
        role: record.role,
        databases: record.databases.iter().map(Uuid::to_string).collect(),
        created_at: record.created_at.clone(),
        name: record.name.clone(),
        last_used_at: record.last_used_at.map(rfc3339_of),
        expires_at: record.expires_at.map(rfc3339_of),
        expired: record.expires_at.is_some_and(|at| now >= at),
    }
}

impl Vault {
    /// Creates a token (operator only). App tokens must name at least one existing database.
    pub async fn create_token(
        &self,
        who: &Principal,
        request: CreateTokenRequest,
    ) -> Result<NewToken, ServiceError> {
        let result: Result<NewToken, ServiceError> = async {
            who.require_operator()?;
            if let Some(name) = &request.name {
                super::validate_name("token", name)?;
            }
            let ttl = request.ttl.as_deref().map(parse_ttl).transpose()?;
            let databases: Vec<Uuid> = {
                let catalog = self.read_catalog();
                request
                    .databases
                    .iter()
                    .map(|r| {
                        catalog.find_database(r).map(|db| db.id).ok_or_else(|| {
                            ServiceError::NotFound(format!("no database named {r:?}"))
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            match request.role {
                TokenRole::App if databases.is_empty() => {
                    return Err(ServiceError::BadRequest(
                        "an app token must name at least one database".into(),
                    ))
                }
                TokenRole::Operator if !databases.is_empty() => {
                    return Err(ServiceError::BadRequest(
                        "operator tokens cover every database; do not name any".into(),
                    ))
                }
                _ => {}
            }
            let (record, secret) = self
                .issue_named_token(request.role, databases, request.name, ttl)
                .await?;
            Ok(NewToken {
                id: record.id.clone(),
                token: secret.to_string(),
                role: record.role,
                databases: record.databases.iter().map(Uuid::to_string).collect(),
                name: record.name.clone(),
                expires_at: record.expires_at.map(rfc3339_of),
            })
        }
        .await;
        let target = result
            .as_ref()
            .map(|t| self.crn_named("token", &t.id))
            .unwrap_or_else(|_| "token".into());
        // Name, role and expiry only: never the secret.
        let details = result.as_ref().ok().map(
            |t| serde_json::json!({ "name": t.name, "role": t.role, "expires_at": t.expires_at }),
        );
        self.audited(who, Action::TokensCreate, &target, result, details)
    }

    /// Every token (operator only).
    pub fn list_tokens(&self, who: &Principal) -> Result<Vec<TokenInfo>, ServiceError> {
        who.require_operator()?;
        let catalog = self.read_catalog();
        let now = unix_now();
        let mut list: Vec<TokenInfo> = catalog
            .tokens_by_hash
            .values()
            .map(|t| token_info(t, now))
            .collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    /// Revokes a token (by id or name); effective on the next request, also on open
    /// connections.
    pub async fn revoke_token(&self, who: &Principal, id: &str) -> Result<(), ServiceError> {
        let result: Result<(), ServiceError> = async {
            who.require_operator()?;
            let _admin = self.admin().await?;
            let found = self
                .read_catalog()
                .tokens_by_hash
                .values()
                .find(|t| t.id == id || t.name.as_deref() == Some(id))
                .map(|t| t.id.clone());
            let id = found.ok_or_else(|| ServiceError::NotFound(format!("no token {id:?}")))?;
            self.commit(vec![CatalogChange::DeleteToken(id)]).await?;
            Ok(())
        }
        .await;
        let target = match &result {
            Ok(()) => self.crn_named("token", id),
            Err(_) => id.to_string(),
        };
        self.audited(who, Action::TokensDelete, &target, result, None)
    }
}
