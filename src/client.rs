//! Typed client of the socket API (`shared/API.md`): HTTP/1.1 over the daemon's Unix socket.
//!
//! Used by the CLI, the integration tests and applications. One [`Client`] keeps one connection
//! and reconnects when the daemon closed it; requests on one client are serialized (HTTP/1.1
//! cannot interleave them on one connection), so open several clients for parallel load.
//!
//! ```no_run
//! # async fn demo() -> Result<(), envault::client::ClientError> {
//! use envault::client::Client;
//! let client = Client::new("envault.sock", Some("token".to_string()));
//! client.put_record("orders", "2024/0001", b"{\"total\": 12}").await?;
//! let value = client.get_record("orders", "2024/0001").await?;
//! # Ok(()) }
//! ```

mod connection;
mod data;
mod error;
mod import;
mod kms;
mod lifecycle;
mod paths;

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::api::{
    CreateKeyRequest, DatabaseInfo, Health, KeyInfo, KeyList, RewrapResponse, UnwrapRequest,
    UnwrapResponse, WrapRequest, WrapResponse,
};
use connection::Connection;
pub use error::ClientError;
pub use import::seal_for_import;
pub use lifecycle::KeyAction;
pub use paths::encode_segment;
use paths::{backup_path, db_path, key_path};

/// HTTP method of [`Client::request`], re-exported so callers need not depend on `hyper`.
pub use hyper::Method;

/// Answer of [`Client::wrap`], with the generated DEK (if any) decoded into zeroizing memory.
pub struct Wrapped {
    /// Base64 envelope, to be given back to unwrap / rewrap.
    pub ciphertext: String,
    /// Root key version that wrapped it.
    pub key_version: u32,
    /// The new 32-byte DEK, only when no plaintext was sent.
    pub dek: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wrapped")
            .field("ciphertext", &self.ciphertext)
            .field("key_version", &self.key_version)
            .field("dek", &self.dek.as_ref().map(|_| "REDACTED"))
            .finish()
    }
}

/// A client of one envault socket. Cheap to create; connects on the first request.
pub struct Client {
    connection: Connection,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.connection.socket())
            .field("token", &self.connection.has_token().then_some("REDACTED"))
            .finish()
    }
}

impl Client {
    /// A client of the daemon at `socket`, sending `token` as bearer token when given.
    pub fn new(socket: impl Into<PathBuf>, token: Option<String>) -> Self {
        Client {
            connection: Connection::new(socket.into(), token),
        }
    }

    /// Another client of the same socket with a different token (and its own connection).
    pub fn with_token(&self, token: Option<String>) -> Self {
        Client::new(self.socket(), token)
    }

    /// Another client of the same socket with the same token, on its own connection (load
    /// generators open one per concurrent caller).
    pub fn duplicate(&self) -> Self {
        Client::new(self.socket(), self.connection.token().map(str::to_string))
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        self.connection.socket()
    }

    /// Raw escape hatch: sends `body` (as JSON when it parses as JSON, else as octet stream) to
    /// `path` (with query, already encoded) and returns the status and body, whatever they are.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Bytes), ClientError> {
        let (body, content_type) = match body {
            None => (Bytes::new(), None),
            Some(bytes) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() => {
                (Bytes::copy_from_slice(bytes), Some("application/json"))
            }
            Some(bytes) => (
                Bytes::copy_from_slice(bytes),
                Some("application/octet-stream"),
            ),
        };
        let (status, bytes) = self
            .connection
            .send(method, path, body, content_type)
            .await?;
        Ok((status.as_u16(), bytes))
    }

    /// Sends a request and returns the body of a success answer, or the API error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        content_type: Option<&str>,
    ) -> Result<Bytes, ClientError> {
        let (status, bytes) = self
            .connection
            .send(method, path, body.unwrap_or_default(), content_type)
            .await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(ClientError::from_response(status.as_u16(), &bytes))
        }
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = self.call_value_bytes(method, path, body).await?;
        parse_json(&bytes)
    }

    async fn call_value_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Bytes, ClientError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(Bytes::from))
            .transpose()
            .map_err(|e| ClientError::Protocol(format!("cannot encode request: {e}")))?;
        let content_type = body.as_ref().map(|_| "application/json");
        self.call(method, path, body, content_type).await
    }

    /// For answers without a fixed shape: the JSON value, or `null` for an empty (204) body.
    async fn call_value(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Value, ClientError> {
        let bytes = self.call_value_bytes(method, path, body).await?;
        if bytes.is_empty() {
            Ok(Value::Null)
        } else {
            parse_json(&bytes)
        }
    }

    // ----- health

    /// `GET /v1/health` (no token needed).
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call_json(Method::GET, "/v1/health", NO_BODY).await
    }

    // ----- keys

    /// `POST /v1/keys`: generates a root key, or imports the given 32 bytes.
    pub async fn create_key(
        &self,
        name: &str,
        import: Option<&[u8]>,
        description: Option<&str>,
    ) -> Result<KeyInfo, ClientError> {
        let body = CreateKeyRequest {
            name: name.to_string(),
            payload: import.map(|bytes| BASE64.encode(bytes)),
            description: description.map(str::to_string),
            ..Default::default()
        };
        let result = self.call_json(Method::POST, "/v1/keys", Some(&body)).await;
        if let Some(mut payload) = body.payload {
            zeroize::Zeroize::zeroize(&mut payload);
        }
        result
    }

    /// `GET /v1/keys`: customer keys.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        let list: KeyList = self.call_json(Method::GET, "/v1/keys", NO_BODY).await?;
        Ok(list.keys)
    }

    /// `GET /v1/keys/{key}`: the key with its registrations.
    pub async fn get_key(&self, key: &str) -> Result<KeyInfo, ClientError> {
        self.call_json(Method::GET, &key_path(key, ""), NO_BODY)
            .await
    }

    /// `POST /v1/keys/{key}/wrap`: wraps `plaintext`, or a new DEK when none is given.
    pub async fn wrap(
        &self,
        key: &str,
        plaintext: Option<&[u8]>,
        aad: &[String],
    ) -> Result<Wrapped, ClientError> {
        let body = WrapRequest {
            plaintext: plaintext.map(|p| BASE64.encode(p)),
            aad: aad_field(aad),
        };
        let result = self
            .call_value_bytes(Method::POST, &key_path(key, "/wrap"), Some(&body))
            .await;
        if let Some(mut sent) = body.plaintext {
            zeroize::Zeroize::zeroize(&mut sent);
        }
        let bytes = Zeroizing::new(Vec::from(result?));
        let answer: WrapResponse = parse_json(&bytes)?;
        let dek = answer
            .plaintext
            .map(|b64| decode_secret(&Zeroizing::new(b64)))
            .transpose()?;
        Ok(Wrapped {
            ciphertext: answer.ciphertext,
            key_version: answer.key_version,
            dek,
        })
    }

    /// `POST /v1/keys/{key}/unwrap`: the plaintext, in memory that zeroizes on drop.
    pub async fn unwrap(
        &self,
        key: &str,
        ciphertext: &str,
        aad: &[String],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let body = UnwrapRequest {
            ciphertext: ciphertext.to_string(),
            aad: aad_field(aad),
        };
        let bytes = Zeroizing::new(Vec::from(
            self.call_value_bytes(Method::POST, &key_path(key, "/unwrap"), Some(&body))
                .await?,
        ));
        let answer: UnwrapResponse = parse_json(&bytes)?;
        decode_secret(&Zeroizing::new(answer.plaintext))
    }

    /// `POST /v1/keys/{key}/rewrap`: the envelope under the key's newest version.
    pub async fn rewrap(
        &self,
        key: &str,
        ciphertext: &str,
        aad: &[String],
    ) -> Result<RewrapResponse, ClientError> {
        let body = UnwrapRequest {
            ciphertext: ciphertext.to_string(),
            aad: aad_field(aad),
        };
        self.call_json(Method::POST, &key_path(key, "/rewrap"), Some(&body))
            .await
    }

    // ----- backups

    /// `POST /v1/databases/{db}/backups`.
    pub async fn create_backup(&self, db: &str) -> Result<Value, ClientError> {
        self.call_value(Method::POST, &db_path(db, "/backups"), NO_BODY)
            .await
    }

    /// `GET /v1/backups`.
    pub async fn list_backups(&self) -> Result<Value, ClientError> {
        self.call_value(Method::GET, "/v1/backups", NO_BODY).await
    }

    /// `GET /v1/backups/{id}`.
    pub async fn get_backup(&self, id: &str) -> Result<Value, ClientError> {
        self.call_value(Method::GET, &backup_path(id, ""), NO_BODY)
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
        let mut body = json!({ "into": into });
        if let Some(key) = key {
            body["key"] = json!(key);
        }
        self.call_json(Method::POST, &backup_path(id, "/restore"), Some(&body))
            .await
    }

    // ----- tokens

    /// `POST /v1/tokens`: `{"id", "token"}`; `databases` scopes an `app` token.
    pub async fn create_token(
        &self,
        role: &str,
        databases: &[String],
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "role": role });
        if !databases.is_empty() {
            body["databases"] = json!(databases);
        }
        self.call_value(Method::POST, "/v1/tokens", Some(&body))
            .await
    }

    /// `GET /v1/tokens` (never the secrets).
    pub async fn list_tokens(&self) -> Result<Value, ClientError> {
        self.call_value(Method::GET, "/v1/tokens", NO_BODY).await
    }

    /// `DELETE /v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/tokens/{}", encode_segment(id));
        self.call(Method::DELETE, &path, None, None).await.map(drop)
    }
}

/// `None` typed for the JSON-body helpers.
const NO_BODY: Option<&()> = None;

fn aad_field(aad: &[String]) -> Option<Vec<String>> {
    (!aad.is_empty()).then(|| aad.to_vec())
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ClientError::Protocol(format!("unexpected answer from envault: {e}")))
}

fn decode_secret(b64: &str) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    BASE64
        .decode(b64)
        .map(Zeroizing::new)
        .map_err(|_| ClientError::Protocol("the daemon sent invalid base64".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_debug_redacts_the_dek() {
        let wrapped = Wrapped {
            ciphertext: "c".into(),
            key_version: 1,
            dek: Some(Zeroizing::new(vec![7; 32])),
        };
        assert!(format!("{wrapped:?}").contains("REDACTED"));
        let client = Client::new("s", Some("secret-token".into()));
        assert!(!format!("{client:?}").contains("secret-token"));
    }
}
