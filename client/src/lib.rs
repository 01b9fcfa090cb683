#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
mod backups;
mod connection;
mod data;
mod error;
mod import;
mod kms;
mod lifecycle;
mod paths;
mod secret;
mod tokens;

use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
pub use zeroize::Zeroizing;

use api::{
    CreateKeyRequest, Health, KeyInfo, KeyList, RewrapResponse, UnwrapRequest, UnwrapResponse,
    WrapRequest, WrapResponse,
};
use connection::Connection;
pub use error::ClientError;
#[cfg(feature = "secure-import")]
pub use import::seal_for_import;
pub use kms::KeyDeletion;
pub use lifecycle::KeyAction;
pub use paths::encode_segment;
use paths::key_path;
pub use secret::SecretString;

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

    /// Sends a request and returns the status and body of a success answer, or the API error.
    async fn call_status(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        content_type: Option<&str>,
    ) -> Result<(u16, Bytes), ClientError> {
        let (status, bytes) = self
            .connection
            .send(method, path, body.unwrap_or_default(), content_type)
            .await?;
        if status.is_success() {
            Ok((status.as_u16(), bytes))
        } else {
            Err(ClientError::from_response(status.as_u16(), &bytes))
        }
    }

    /// Sends a request and returns the body of a success answer, or the API error.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        content_type: Option<&str>,
    ) -> Result<Bytes, ClientError> {
        let (_, bytes) = self.call_status(method, path, body, content_type).await?;
        Ok(bytes)
    }

    /// Sends `body` as JSON (when given) and parses the success answer as `T`.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.call_json_status(method, path, body).await?;
        parse_json(&bytes)
    }

    /// Sends `body` as JSON (when given); the success status and the raw answer (some routes
    /// answer 200 or 202 with different shapes, told apart by the caller).
    pub(crate) async fn call_json_status(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(u16, Bytes), ClientError> {
        let body = body.map(encode_json).transpose()?.map(Bytes::from);
        let content_type = body.as_ref().map(|_| "application/json");
        self.call_status(method, path, body, content_type).await
    }

    /// For requests or answers that carry a secret: the JSON request is encoded into a buffer
    /// the connection wipes once sent, and the answer comes back in memory wiped on drop.
    pub(crate) async fn call_secret(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let body = Bytes::from(encode_json_exact(body)?);
        let bytes = self
            .call(method, path, Some(body), Some("application/json"))
            .await?;
        Ok(Zeroizing::new(Vec::from(bytes)))
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
            payload: import.map(SecretString::base64_of),
            description: description.map(str::to_string),
            ..Default::default()
        };
        let bytes = self.call_secret(Method::POST, "/v1/keys", &body).await?;
        parse_json(&bytes)
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
            plaintext: plaintext.map(SecretString::base64_of),
            aad: aad_field(aad),
        };
        let bytes = self
            .call_secret(Method::POST, &key_path(key, "/wrap"), &body)
            .await?;
        let answer: WrapResponse = parse_json(&bytes)?;
        let dek = answer.plaintext.as_ref().map(decode_secret).transpose()?;
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
        let bytes = self
            .call_secret(Method::POST, &key_path(key, "/unwrap"), &body)
            .await?;
        let answer: UnwrapResponse = parse_json(&bytes)?;
        decode_secret(&answer.plaintext)
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
}

/// `None` typed for the JSON-body helpers.
pub(crate) const NO_BODY: Option<&()> = None;

fn aad_field(aad: &[String]) -> Option<Vec<String>> {
    (!aad.is_empty()).then(|| aad.to_vec())
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ClientError::Protocol(format!("unexpected answer from envault: {e}")))
}

fn encode_json(body: &impl Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body)
        .map_err(|e| ClientError::Protocol(format!("cannot encode request: {e}")))
}

/// Encodes a body holding a secret into a buffer sized once, so that no reallocation leaves a
/// partial copy behind in freed memory (the connection wipes this buffer after sending).
fn encode_json_exact(body: &impl Serialize) -> Result<Vec<u8>, ClientError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let error = |e: serde_json::Error| ClientError::Protocol(format!("cannot encode request: {e}"));
    let mut count = Count(0);
    serde_json::to_writer(&mut count, body).map_err(error)?;
    let mut out = Vec::with_capacity(count.0);
    serde_json::to_writer(&mut out, body).map_err(error)?;
    Ok(out)
}

fn decode_secret(b64: &SecretString) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    b64.decode_base64()
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
