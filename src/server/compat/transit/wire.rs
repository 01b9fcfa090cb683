//! What Vault clients expect on the wire: the token header, lenient JSON bodies (the CLI sends
//! every value as a string, and `null` or nothing for no parameters), the response envelope,
//! `{"errors": [...]}`, and the `vault:v<N>:<base64>` ciphertext string.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

use crate::server::AppState;
use crate::service::{Principal, ServiceError, TransitSealed};

/// Largest request body (a batch of small plaintexts; data goes through envault's records).
pub const MAX_BODY: usize = 1 << 20;
/// A body must arrive within this time (as on the envault routes).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// An error answered as `{"errors": ["..."]}`.
#[derive(Debug)]
pub struct TransitError {
    /// HTTP status.
    pub status: StatusCode,
    /// The one message.
    pub message: String,
}

impl TransitError {
    /// A 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for TransitError {
    /// Vault answers 400 for nearly every refusal of a request; its clients branch on 400,
    /// 403, 404 and 5xx only, so envault's finer statuses (409, 423) fold into 400 here.
    fn from(err: ServiceError) -> Self {
        use ServiceError::*;
        let status = match &err {
            Unauthenticated | Forbidden(_) | NotAuthorizedForKey(_) => StatusCode::FORBIDDEN,
            NotFound(_) => StatusCode::NOT_FOUND,
            TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Store(_) | Keystore(_) | Integrity | Random | TaskFailed(_) | Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            AuditLog(_) | DataDir(_) | TokenFile(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        if status.is_server_error() {
            tracing::error!(error = ?err, "transit request failed");
        }
        let message = match err {
            Unauthenticated => "permission denied: missing or invalid token".to_string(),
            other => other.to_string(),
        };
        Self { status, message }
    }
}

impl IntoResponse for TransitError {
    fn into_response(self) -> Response {
        // Vault answers a read of a missing path with 404 and no message; clients (the CLI's
        // "No value found") rely on that.
        let errors: Vec<String> = Some(self.message)
            .filter(|m| !m.is_empty())
            .into_iter()
            .collect();
        (self.status, Json(json!({ "errors": errors }))).into_response()
    }
}

/// Result of a transit handler.
pub type TransitResult = Result<Response, TransitError>;

/// The success envelope every Vault response has. Fields are declared in alphabetical order:
/// that is the order the answers had when they were built as a `serde_json::Map` (sorted, no
/// `preserve_order`), so the bytes on the wire are unchanged.
#[derive(Serialize)]
struct Envelope<'a, D: Serialize> {
    auth: Option<()>,
    data: &'a D,
    lease_duration: u32,
    lease_id: &'static str,
    renewable: bool,
    request_id: uuid::Uuid,
    warnings: Option<()>,
    wrap_info: Option<()>,
}

/// A random version-4 request id. It identifies an answer, it protects nothing, so it comes
/// from the thread-local CSPRNG rather than a `getrandom` system call per request.
fn request_id() -> uuid::Uuid {
    use rand::RngExt as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes[..]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The success envelope every Vault response has, with `data` (any serializable shape, so the
/// hot routes write their answer straight to bytes without building a `Value` first).
pub fn respond<D: Serialize>(status: StatusCode, data: &D) -> Response {
    let envelope = Envelope {
        auth: None,
        data,
        lease_duration: 0,
        lease_id: "",
        renewable: false,
        request_id: request_id(),
        warnings: None,
        wrap_info: None,
    };
    let mut bytes = Vec::with_capacity(256);
    if let Err(err) = serde_json::to_writer(&mut bytes, &envelope) {
        tracing::error!(error = %err, "cannot serialize a transit answer");
        return TransitError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "cannot serialize the answer".into(),
        }
        .into_response();
    }
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The caller, from `Authorization: Bearer` or else `X-Vault-Token` (what Vault clients send).
pub struct TransitAuth(pub Principal);

impl FromRequestParts<Arc<AppState>> for TransitAuth {
    type Rejection = TransitError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            if let Some(token) = parts.headers.get("x-vault-token") {
                let mut bearer = b"Bearer ".to_vec();
                bearer.extend_from_slice(token.as_bytes());
                if let Ok(value) = HeaderValue::from_bytes(&bearer) {
                    parts.headers.insert(header::AUTHORIZATION, value);
                }
            }
        }
        // The envault extractor: allowed_uids, token lookup, denials in the activity log.
        Principal::from_request_parts(parts, state)
            .await
            .map(TransitAuth)
            .map_err(|crate::server::ApiError(err)| TransitError::from(err))
    }
}

/// A JSON object body; empty, whitespace or `null` is `{}`.
pub struct TransitBody(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for TransitBody {
    type Rejection = TransitError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let body: Body = req.into_body();
        let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY));
        let bytes = match read.await {
            Err(_) => return Err(TransitError::bad("request body did not arrive in time")),
            Ok(Err(_)) => {
                return Err(TransitError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("request body is unreadable or exceeds {MAX_BODY} bytes"),
                })
            }
            Ok(Ok(bytes)) => bytes,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(TransitBody(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Null) => Ok(TransitBody(Map::new())),
            Ok(Value::Object(map)) => Ok(TransitBody(map)),
            Ok(_) => Err(TransitError::bad("request body must be a JSON object")),
            Err(e) => Err(TransitError::bad(format!(
                "failed to parse JSON input: {e}"
            ))),
        }
    }
}

/// Reads a string field; numbers and booleans are accepted as their text.
pub fn string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, TransitError> {
    Ok(text(map, name)?.map(Cow::into_owned))
}

/// Like [`string`], borrowing a string value instead of copying it (the per-request fields).
pub fn text<'a>(
    map: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<Cow<'a, str>>, TransitError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(Cow::Borrowed(s))),
        Some(Value::Number(n)) => Ok(Some(Cow::Owned(n.to_string()))),
        Some(Value::Bool(b)) => Ok(Some(Cow::Owned(b.to_string()))),
        Some(_) => Err(TransitError::bad(format!("{name} must be a string"))),
    }
}

/// Reads a non-negative integer field given as a number or a numeric string.
pub fn uint(map: &Map<String, Value>, name: &str) -> Result<Option<u32>, TransitError> {
    let invalid = || TransitError::bad(format!("{name} must be a non-negative integer"));
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(invalid),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

/// Reads a boolean field given as a boolean, `"true"`/`"false"`, or 0/1.
pub fn boolean(map: &Map<String, Value>, name: &str) -> Result<Option<bool>, TransitError> {
    let invalid = || TransitError::bad(format!("{name} must be a boolean"));
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => Ok(Some(true)),
            "false" | "f" | "0" | "" => Ok(Some(false)),
            _ => Err(invalid()),
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(invalid()),
        },
        Some(_) => Err(invalid()),
    }
}

/// Decodes a standard-base64 field (absent = empty) holding a secret (a plaintext).
pub fn base64_field(
    map: &Map<String, Value>,
    name: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, TransitError> {
    base64_data(map, name).map(zeroize::Zeroizing::new)
}

/// Decodes a standard-base64 field (absent = empty) that is not secret (associated data).
pub fn base64_data(map: &Map<String, Value>, name: &str) -> Result<Vec<u8>, TransitError> {
    let Some(text) = text(map, name)? else {
        return Ok(Vec::new());
    };
    B64.decode(text.trim())
        .map_err(|_| TransitError::bad(format!("failed to base64-decode {name}")))
}

/// Base64 for responses.
pub fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Formats `vault:v<N>:` + base64(nonce ‖ ciphertext ‖ tag), in one allocation.
pub fn format_ciphertext(sealed: &TransitSealed) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(20 + sealed.body.len().div_ceil(3) * 4);
    text.push_str("vault:v");
    // Writing to a String cannot fail.
    let _ = write!(text, "{}:", sealed.version);
    B64.encode_string(&sealed.body, &mut text);
    text
}

/// Parses `vault:v<N>:<base64>` into (N, nonce ‖ ciphertext ‖ tag). Version and length checks
/// against the key happen in the service.
pub fn parse_ciphertext(text: &str) -> Result<(u32, Vec<u8>), TransitError> {
    let rest = text
        .strip_prefix("vault:v")
        .ok_or_else(|| TransitError::bad("invalid ciphertext: no prefix (expected vault:v<N>:)"))?;
    let (version, data) = rest
        .split_once(':')
        .ok_or_else(|| TransitError::bad("invalid ciphertext: wrong number of fields"))?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TransitError::bad(
            "invalid ciphertext: could not parse the version",
        ));
    }
    let version: u32 = version
        .parse()
        .map_err(|_| TransitError::bad("invalid ciphertext: version is too new"))?;
    let body = B64
        .decode(data)
        .map_err(|_| TransitError::bad("invalid ciphertext: could not decode base64"))?;
    Ok((version, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_round_trip_and_rejects() {
        let sealed = TransitSealed {
            version: 3,
            body: vec![7; 30],
        };
        let text = format_ciphertext(&sealed);
        assert!(text.starts_with("vault:v3:"));
        assert_eq!(parse_ciphertext(&text).unwrap(), (3, vec![7; 30]));
        for bad in [
            "v3:AAAA",
            "vault:3:AAAA",
            "vault:v:AAAA",
            "vault:v-1:AAAA",
            "vault:v3",
            "vault:v3:!!",
            "vault:v99999999999:AAAA",
        ] {
            assert!(parse_ciphertext(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn lenient_fields() {
        let map: Map<String, Value> =
            serde_json::from_str(r#"{"a":"2","b":3,"c":"true","d":false,"e":"","f":[1]}"#).unwrap();
        assert_eq!(uint(&map, "a").unwrap(), Some(2));
        assert_eq!(uint(&map, "b").unwrap(), Some(3));
        assert_eq!(boolean(&map, "c").unwrap(), Some(true));
        assert_eq!(boolean(&map, "d").unwrap(), Some(false));
        assert_eq!(uint(&map, "e").unwrap(), None);
        assert!(uint(&map, "f").is_err());
        assert!(string(&map, "f").is_err());
        assert_eq!(string(&map, "zz").unwrap(), None);
    }
}
