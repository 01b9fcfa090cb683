//! The peer side of `envault bench transit-encrypt|transit-decrypt`: one HTTP/1.1 keep-alive
//! connection to an OpenBao (or Vault) server's transit engine, driven by the same loop,
//! histogram and report as envault's own operations, so both sides are measured alike.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Where the transit engine is and how to authenticate.
#[derive(Clone)]
pub(super) struct TransitTarget {
    /// `host:port` to connect to.
    authority: String,
    /// `X-Vault-Token` value.
    token: String,
    /// Transit key name.
    key: String,
}

impl TransitTarget {
    /// Parses `http://host:port[/]`; https is not supported (the peer runs locally in dev mode).
    pub(super) fn new(url: &str, token: String, key: String) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("transit address {url:?} must start with http://"))?;
        let authority = rest.trim_end_matches('/').to_string();
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("transit address {url:?} must be http://host:port"));
        }
        Ok(Self {
            authority,
            token,
            key,
        })
    }

    /// A connection of its own (opened on first use).
    pub(super) fn connect(&self) -> TransitConnection {
        TransitConnection {
            target: self.clone(),
            sender: None,
        }
    }
}

/// One keep-alive connection to the transit engine.
pub(super) struct TransitConnection {
    target: TransitTarget,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl TransitConnection {
    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.target.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.target.authority))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(sender)
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
            .header(hyper::header::HOST, &self.target.authority)
            .header("X-Vault-Token", &self.target.token)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
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
    pub(super) async fn ensure_key(&mut self) -> Result<(), String> {
        let path = format!("/v1/transit/keys/{}", self.target.key);
        self.post(&path, &json!({ "type": "aes256-gcm96" })).await?;
        Ok(())
    }

    /// `transit/encrypt`: the `vault:v1:…` ciphertext.
    pub(super) async fn encrypt(&mut self, plaintext: &[u8]) -> Result<String, String> {
        let path = format!("/v1/transit/encrypt/{}", self.target.key);
        let answer = self
            .post(&path, &json!({ "plaintext": BASE64.encode(plaintext) }))
            .await?;
        answer["data"]["ciphertext"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "encrypt answer has no data.ciphertext".to_string())
    }

    /// `transit/decrypt`: the plaintext, decoded (as envault's client decodes unwrap).
    pub(super) async fn decrypt(&mut self, ciphertext: &str) -> Result<Vec<u8>, String> {
        let path = format!("/v1/transit/decrypt/{}", self.target.key);
        let answer = self
            .post(&path, &json!({ "ciphertext": ciphertext }))
            .await?;
        let b64 = answer["data"]["plaintext"]
            .as_str()
            .ok_or("decrypt answer has no data.plaintext")?;
        BASE64.decode(b64).map_err(|e| e.to_string())
    }
}
