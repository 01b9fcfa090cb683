//! A connection's state: protocol version, client name, and the app token it authenticated
//! with, which is checked again before every round of commands so that a revoked token stops
//! working on open connections at once.

use crate::service::Action;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use uuid::Uuid;
use zeroize::Zeroizing;

use super::codec::Reply;
use super::connection::Settings;
use crate::server::{AppState, PeerCred};
use crate::service::{Principal, ServiceError, TokenHash};
use crate::store::TokenRole;

/// Connection ids (`CLIENT ID`), unique for the daemon's life.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An authenticated connection's token and database.
pub struct Auth {
    /// The token's hash, kept to authenticate each round again (revocation takes effect at
    /// once) without hashing the token every round.
    token: TokenHash,
    pub principal: Principal,
    /// Index into `principal.databases` (`SELECT n`).
    pub db_index: usize,
    /// The selected database's id, as the service takes it.
    pub db_ref: String,
    /// The token no longer authenticates.
    pub revoked: bool,
}

/// One connection.
pub struct Session {
    pub state: Arc<AppState>,
    pub settings: Arc<Settings>,
    pub peer: Option<PeerCred>,
    pub id: u64,
    pub resp3: bool,
    pub name: Option<String>,
    pub lib_name: Option<String>,
    pub lib_ver: Option<String>,
    pub auth: Option<Auth>,
}

impl Session {
    pub fn new(state: Arc<AppState>, settings: Arc<Settings>, peer: Option<PeerCred>) -> Self {
        Self {
            state,
            settings,
            peer,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            resp3: false,
            name: None,
            lib_name: None,
            lib_ver: None,
            auth: None,
        }
    }

    /// `RESET`: back to a fresh, unauthenticated RESP2 connection (same id).
    pub fn reset(&mut self) {
        self.resp3 = false;
        self.name = None;
        self.auth = None;
    }

    /// The principal allowed to run record commands, or the error to answer instead.
    pub fn authorized(&self) -> Result<&Auth, Reply> {
        match &self.auth {
            None => Err(Reply::error("NOAUTH Authentication required.")),
            Some(auth) if auth.revoked => Err(Reply::error(
                "NOPERM the token of this connection was revoked; AUTH with another app token",
            )),
            Some(auth) => Ok(auth),
        }
    }

    /// Authenticates with an app token: `AUTH`, `HELLO … AUTH`. Refusals go to the activity
    /// log; the connection keeps its previous authentication, if any.
    pub async fn authenticate(&mut self, user: Option<&[u8]>, secret: &[u8]) -> Result<(), Reply> {
        if user.is_some_and(|u| !u.eq_ignore_ascii_case(b"default")) {
            self.deny(ServiceError::Unauthenticated);
            return Err(wrong_pass());
        }
        let secret = Zeroizing::new(String::from_utf8_lossy(secret).trim().to_string());
        let token = TokenHash::of(&secret);
        let principal = match self.resolve(&token).await {
            Ok(principal) => principal,
            Err(err) => {
                let unauthenticated = matches!(err, ServiceError::Unauthenticated);
                let reply = if unauthenticated {
                    wrong_pass()
                } else {
                    Reply::error(format!("NOPERM {err}"))
                };
                self.deny(err);
                return Err(reply);
            }
        };
        if principal.role != TokenRole::App {
            self.deny(ServiceError::Forbidden(
                "operator tokens may not use the Redis protocol".into(),
            ));
            return Err(Reply::error(
                "NOPERM operator tokens may not use the Redis protocol; use an app token",
            ));
        }
        let Some(first) = principal.databases.first().copied() else {
            return Err(Reply::error("NOPERM this token names no database"));
        };
        self.auth = Some(Auth {
            token,
            principal,
            db_index: 0,
            db_ref: first.to_string(),
            revoked: false,
        });
        Ok(())
    }

    /// Resolves a token as the socket API does: peer uid allowed, catalog fresh.
    async fn resolve(&self, token: &TokenHash) -> Result<Principal, ServiceError> {
        let uid = self.peer.map(|p| p.uid);
        if !self.state.peer_allowed(uid) {
            return Err(ServiceError::Forbidden(format!(
                "peer uid {} is not in allowed_uids",
                uid.map_or_else(|| "unknown".to_string(), |u| u.to_string())
            )));
        }
        self.state.vault.refresh_catalog().await?;
        self.state.vault.authenticate_hashed(token, uid)
    }

    /// Before each round of commands: is the token still valid?
    pub async fn recheck(&mut self) {
        let Some(auth) = &self.auth else { return };
        if auth.revoked {
            return;
        }
        match self.resolve(&auth.token).await {
            Ok(principal) => {
                if let Some(auth) = &mut self.auth {
                    auth.principal = principal;
                }
            }
            // A store that is briefly unreachable does not revoke anything.
            Err(ServiceError::Store(_)) => {}
            Err(err) => {
                self.deny(err);
                if let Some(auth) = &mut self.auth {
                    auth.revoked = true;
                }
            }
        }
    }

    /// Logs a refused authentication in the activity log.
    fn deny(&self, err: ServiceError) {
        let anonymous = Principal {
            token_id: self
                .auth
                .as_ref()
                .map_or_else(|| "anonymous".into(), |a| a.principal.token_id.clone()),
            role: TokenRole::App,
            databases: Vec::new(),
            peer_uid: self.peer.map(|p| p.uid),
        };
        let _ = self.state.vault.audited::<()>(
            &anonymous,
            Action::AuthDenied,
            "RESP AUTH",
            Err(err),
            None,
        );
    }

    /// `SELECT`: by index among the token's databases (what clients send for `db=n`), or by
    /// name or id.
    pub fn select(&mut self, which: &[u8]) -> Result<(), Reply> {
        let auth = match &self.auth {
            Some(auth) if !auth.revoked => auth,
            _ => return Err(self.authorized().err().unwrap_or_else(wrong_pass)),
        };
        let text = String::from_utf8_lossy(which);
        let index = match text.parse::<usize>() {
            Ok(n) if n < auth.principal.databases.len() => n,
            Ok(_) => return Err(Reply::error("ERR DB index is out of range")),
            Err(_) => auth
                .principal
                .databases
                .iter()
                .position(|id| {
                    self.database_name(id).as_deref() == Some(&*text) || id.to_string() == text
                })
                .ok_or_else(|| {
                    Reply::error("ERR no such database among those this token may use")
                })?,
        };
        let db_ref = auth.principal.databases[index].to_string();
        if let Some(auth) = &mut self.auth {
            auth.db_index = index;
            auth.db_ref = db_ref;
        }
        Ok(())
    }

    /// A database's name (for `SELECT name`, `INFO`, `CLIENT INFO`).
    pub fn database_name(&self, id: &Uuid) -> Option<String> {
        self.state
            .vault
            .show_database(&Principal::system(), &id.to_string())
            .ok()
            .map(|db| db.name)
    }
}

fn wrong_pass() -> Reply {
    Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
}
