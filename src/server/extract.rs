//! Request extractors that answer in the API's error format: the bearer token, path
//! parameters, query strings and bounded bodies (JSON or raw bytes).

use crate::service::Action;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use super::error::{bad_request, ApiError};
use super::AppState;
use crate::service::{Principal, ServiceError, TokenHash};

/// A body must arrive within this time, so a client trickling bytes cannot hold a
/// connection (and its permit) for long. Headers have their own limit (`request_timeout`).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest JSON body any route accepts.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// Peer credentials of the connection (SO_PEERCRED), set by the listener.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    /// Peer uid.
    pub uid: u32,
    /// Peer gid.
    pub gid: u32,
    /// Peer pid, when the kernel reports it.
    pub pid: Option<i32>,
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme name is case-insensitive (RFC 7235).
            .and_then(|v| {
                v.get(..7)
                    .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                    .map(|_| &v[7..])
            })
            .map(str::trim);
        let peer = parts.extensions.get::<PeerCred>().map(|p| p.uid);
        let uid_allowed = state.peer_allowed(peer);
        // Other nodes' changes (a revoked token, a shredded key) apply before this
        // request is checked; a no-op on the embedded store.
        state.vault.refresh_catalog().await?;
        let result = if uid_allowed {
            match (bearer, parts.extensions.get::<Arc<TokenMemo>>()) {
                (Some(bearer), Some(memo)) => {
                    state.vault.authenticate_hashed(&memo.hash(bearer), peer)
                }
                _ => state.vault.authenticate(bearer, peer),
            }
        } else {
            Err(ServiceError::Forbidden(format!(
                "peer uid {} is not in allowed_uids",
                peer.map_or_else(|| "unknown".to_string(), |u| u.to_string())
            )))
        };
        if result.is_err() {
            let anonymous = Principal {
                token_id: "anonymous".into(),
                role: crate::store::TokenRole::App,
                databases: Vec::new(),
                peer_uid: peer,
            };
            let target = format!("{} {}", parts.method, parts.uri.path());
            return Err(state
                .vault
                .audited(&anonymous, Action::AuthDenied, &target, result, None)
                .map_or_else(ApiError::from, |_| ApiError(ServiceError::Unauthenticated)));
        }
        Ok(result?)
    }
}

/// The last bearer token of one connection and its hash. A client sends the same token with
/// every request of a connection; hashing it (SHA-256, then hex) each time was a tenth of a
/// GET's instructions. The token is still looked up in the catalog by its hash on every
/// request, so a revoked or expired token is refused at once.
#[derive(Default)]
pub struct TokenMemo(std::sync::Mutex<Option<(zeroize::Zeroizing<String>, TokenHash)>>);

impl TokenMemo {
    /// The hash of `bearer`: the remembered one when it is the same token, compared in
    /// constant time.
    fn hash(&self, bearer: &str) -> TokenHash {
        use subtle::ConstantTimeEq as _;
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, hash)) = last.as_ref() {
            if bool::from(token.as_bytes().ct_eq(bearer.as_bytes())) {
                return hash.clone();
            }
        }
        let hash = TokenHash::of(bearer);
        *last = Some((zeroize::Zeroizing::new(bearer.to_owned()), hash.clone()));
        hash
    }
}

/// Path parameters; a malformed one (e.g. invalid percent-encoding) is a 400.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_invalid_escape(parts.uri.path()) {
            return Err(bad_request(
                "invalid path: '%' must be followed by two hex digits",
            ));
        }
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| bad_request(format!("invalid path: {}", e.body_text())))
    }
}

/// Whether a raw path has a `%` not followed by two hex digits (the router's decoder would
/// pass it through literally, letting `a%ZZ` and `a%25ZZ` name the same record).
fn has_invalid_escape(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().any(|(i, b)| {
        *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// Query string; unknown or malformed parameters are a 400.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| bad_request(format!("invalid query: {}", e.body_text())))
    }
}

/// Reads a body of at most `limit` bytes; refuses a larger declared length before reading.
pub async fn read_limited(
    body: Body,
    declared: Option<u64>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError(ServiceError::TooLarge(format!(
            "body exceeds {limit} bytes"
        )))
    };
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect());
    let Ok(collected) = read.await else {
        return Err(bad_request(format!(
            "request body did not arrive within {} s",
            BODY_TIMEOUT.as_secs()
        )));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(err) => Err(bad_request(format!("cannot read body: {err}"))),
    }
}

/// The request's declared `Content-Length`, if any.
pub fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A JSON body (at most [`MAX_JSON_BODY`]); bad JSON or wrong types are a 400.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let declared = declared_length(&req);
        let bytes = read_limited(req.into_body(), declared, MAX_JSON_BODY).await?;
        parse_object(&bytes).map(ApiJson)
    }
}

/// A raw record value, bounded by the configured `max_record_size`.
pub struct RecordBody(pub Bytes);

impl FromRequest<Arc<AppState>> for RecordBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let declared = declared_length(&req);
        let limit = state.vault.limits().max_record_size;
        read_limited(req.into_body(), declared, limit)
            .await
            .map(RecordBody)
    }
}

/// A JSON body that may be absent: an empty body is `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let declared = declared_length(&req);
        let bytes = read_limited(req.into_body(), declared, MAX_JSON_BODY).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_object(&bytes).map(OptionalJson)
    }
}

/// Parses a request body that must be one JSON object. serde accepts a sequence for a struct
/// (`["x"]` would fill its first field), which no route means to take, so the body's own
/// shape is checked first: JSON text is an object exactly when it starts with `{`.
pub(super) fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b" \t\r\n".contains(b));
    if first != Some(&b'{') {
        return Err(bad_request("invalid JSON body: expected a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo answers each token's own hash, whether it was the last one or not.
    #[test]
    fn token_memo_gives_each_token_its_own_hash() {
        let memo = TokenMemo::default();
        assert!(memo.hash("first") == TokenHash::of("first"));
        assert!(memo.hash("first") == TokenHash::of("first"));
        assert!(memo.hash("second") == TokenHash::of("second"));
        assert!(memo.hash("second") != TokenHash::of("first"));
        assert!(memo.hash("first") == TokenHash::of("first"));
    }
}
