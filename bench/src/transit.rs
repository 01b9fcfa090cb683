//! The peer side of `envault-bench transit-encrypt|transit-decrypt`: one HTTP/1.1 keep-alive
//! connection to a transit engine (OpenBao or Vault, or envault's own transit routes), over
//! loopback TCP (`http://host:port`) or a Unix socket (`unix:///path`), driven by the same
//! loop, histogram and report as envault's own operations, so both sides are measured alike.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::path::PathBuf;

/// HTTP/1.1 handshake on an open stream; the connection task runs on its own.
async fn handshake<T>(stream: T) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// How to reach the transit engine.
#[derive(Clone)]
enum Transport {
    /// `host:port` over TCP.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// Where the transit engine is and how to authenticate.
#[derive(Clone)]
pub(crate) struct TransitTarget {
    transport: Transport,
    /// `Host` header: the TCP authority, `localhost` on a Unix socket.
    host: HeaderValue,
    /// `X-Vault-Token` value.
    token: HeaderValue,
    /// Transit key name.
    key: String,
    /// The request paths, built once rather than per request.
    encrypt_path: String,
    decrypt_path: String,
}

impl TransitTarget {
    /// Parses `http://host:port[/]` or `unix:///path/to/socket`; https is not supported (the
    /// peer runs locally in dev mode).
    pub(crate) fn new(url: &str, token: String, key: String) -> Result<Self, String> {
        let (transport, host) = if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "transit address {url:?} must be unix:///absolute/path"
                ));
            }
            (
                Transport::Unix(PathBuf::from(path)),
                "localhost".to_string(),
            )
        } else {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                format!("transit address {url:?} must start with http:// or unix://")
            })?;
            let authority = rest.trim_end_matches('/').to_string();
            if authority.is_empty() || authority.contains('/') {
                return Err(format!("transit address {url:?} must be http://host:port"));
            }
            (Transport::Tcp(authority.clone()), authority)
        };
        let host = HeaderValue::from_str(&host)
            .map_err(|_| format!("transit address {url:?} is not a valid host"))?;
        // The token is a secret: the error does not echo it.
        let mut token = HeaderValue::from_str(&token)
            .map_err(|_| "the transit token is not a valid header value".to_string())?;
        // A secret: kept out of `Debug` output.
        token.set_sensitive(true);
        Ok(Self {
            transport,
            host,
            token,
            encrypt_path: format!("/v1/transit/encrypt/{key}"),
            decrypt_path: format!("/v1/transit/decrypt/{key}"),
            key,
        })
    }

    /// A connection of its own (opened on first use).
    pub(crate) fn connect(&self) -> TransitConnection {
        TransitConnection {
            target: self.clone(),
            sender: None,
        }
    }
}

/// One keep-alive connection to the transit engine.
pub(crate) struct TransitConnection {
    target: TransitTarget,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl TransitConnection {
    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        match &self.target.transport {
            Transport::Tcp(authority) => {
                let stream = tokio::net::TcpStream::connect(authority)
                    .await
                    .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                handshake(stream).await
            }
            Transport::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
                handshake(stream).await
            }
        }
    }

    /// POSTs a JSON body and returns the JSON answer of a 2xx, or the status and body as error.
    async fn post(&mut self, path: &str, body: &Value) -> Result<Value, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(self.open().await?);
        }
        let sender = self.sender.as_mut().ok_or("no connection")?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, self.target.host.clone())
            .header("X-Vault-Token", self.target.token.clone())
            .header(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Full::new(Bytes::from(
                serde_json::to_vec(body).map_err(|e| e.to_string())?,
            )))
            .map_err(|e| e.to_string())?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                self.sender = None;
                return Err(e.to_string());
            }
        };
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{path}: {status} {}",
                String::from_utf8_lossy(&bytes).trim()
            ));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{path}: bad JSON answer: {e}"))
    }

    /// Creates the transit key (an existing key is kept as it is).
    pub(crate) async fn ensure_key(&mut self) -> Result<(), String> {
        let path = format!("/v1/transit/keys/{}", self.target.key);
        self.post(&path, &json!({ "type": "aes256-gcm96" })).await?;
        Ok(())
    }

    /// `transit/encrypt`: the `vault:v1:…` ciphertext.
    pub(crate) async fn encrypt(&mut self, plaintext: &[u8]) -> Result<String, String> {
        let path = self.target.encrypt_path.clone();
        let answer = self
            .post(&path, &json!({ "plaintext": BASE64.encode(plaintext) }))
            .await?;
        answer["data"]["ciphertext"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "encrypt answer has no data.ciphertext".to_string())
    }

    /// `transit/decrypt`: the plaintext, decoded (as envault's client decodes unwrap).
    pub(crate) async fn decrypt(&mut self, ciphertext: &str) -> Result<Vec<u8>, String> {
        let path = self.target.decrypt_path.clone();
        let answer = self
            .post(&path, &json!({ "ciphertext": ciphertext }))
            .await?;
        let b64 = answer["data"]["plaintext"]
            .as_str()
            .ok_or("decrypt answer has no data.plaintext")?;
        BASE64.decode(b64).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<TransitTarget, String> {
        TransitTarget::new(url, "s.secret-token".into(), "k".into())
    }

    #[test]
    fn tcp_and_unix_addresses_are_understood() {
        let tcp = target("http://127.0.0.1:8200/").unwrap();
        assert!(matches!(&tcp.transport, Transport::Tcp(a) if a == "127.0.0.1:8200"));
        assert_eq!(tcp.host, "127.0.0.1:8200");
        assert_eq!(tcp.encrypt_path, "/v1/transit/encrypt/k");
        assert_eq!(tcp.decrypt_path, "/v1/transit/decrypt/k");
        let unix = target("unix:///run/envault/transit.sock").unwrap();
        assert!(
            matches!(&unix.transport, Transport::Unix(p) if p.as_path() == std::path::Path::new("/run/envault/transit.sock"))
        );
        assert_eq!(unix.host, "localhost");
    }

    #[test]
    fn other_addresses_are_refused_and_the_token_is_not_echoed() {
        for url in [
            "https://127.0.0.1:8200",
            "127.0.0.1:8200",
            "http://",
            "http://host:1/v1",
            "unix://relative.sock",
        ] {
            assert!(target(url).is_err(), "{url} was accepted");
        }
        let error = TransitTarget::new("http://h:1", "bad\ntoken".into(), "k".into())
            .err()
            .unwrap();
        assert!(!error.contains("bad"), "{error}");
    }
}
