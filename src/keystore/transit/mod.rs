//! Root keys as `aes256-gcm96` keys of a Vault-compatible transit engine (OpenBao, Vault).
//!
//! Key `K` is the transit key `<key_prefix><K>`, created by the server (`exportable=false`), so
//! its material never exists outside it. An imported key goes in through transit's BYOK import:
//! wrapped with AES-KWP under an ephemeral key that is itself RSA-OAEP-wrapped under the
//! server's wrapping key, so only the server can read it. Envault versions are transit versions: rotation is
//! transit's `rotate`, retiring old versions raises `min_decryption_version` and trims them,
//! and a shred sets `deletion_allowed` and deletes the key.
//!
//! A sealed envelope is envault's header followed by the transit ciphertext:
//!
//! ```text
//! +-------------+---------+--------------------+------------------------------------------+
//! | kind magic 4| ver 0x10| label u32 = version| transit body: nonce 12 | ciphertext | tag 16|
//! +-------------+---------+--------------------+------------------------------------------+
//! associated_data sent to transit = header (9 bytes) || context
//! ```
//!
//! The body is transit's ciphertext `vault:v<label>:<base64 body>` decoded, so a wrapped DEK
//! is as long as a local one (69 bytes) and fits a backup's key slot; the text form is rebuilt
//! from the label to decrypt.
//!
//! Transit authenticates `associated_data` with AES-GCM, so the kind, the version label and the
//! context (database, generation, key id, app AAD) are bound exactly as in a local envelope.
//!
//! Calls are blocking HTTP with one overall time limit each; transport failures and timeouts
//! are [`KeystoreError::Unavailable`], which the API answers with 503.
//!
//! Parts: `http` (the client and the server's answers), `import` (BYOK wrapping), `envelope`
//! (the sealed format above), `backend` (the [`RootKeyBackend`](super::RootKeyBackend) impl);
//! here, the connection set-up and start-up checks.

mod backend;
mod envelope;
mod http;
mod import;

use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;
use zeroize::Zeroizing;

use self::http::{tls_with_ca, Answer, Http, Verb};
use super::secrets::read_credential;
use super::KeystoreError;
use crate::config::TransitConfig;

/// Version byte of a transit envelope (local AES-GCM envelopes are version 1).
pub const TRANSIT_ENVELOPE_VERSION: u8 = 0x10;

/// Time limit of the import calls (wrapping key, import): the server generates its 4096-bit
/// RSA wrapping key on first use, which can take seconds. Imports are rare operator actions.
const SLOW_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The transit backend.
pub struct TransitKeystore {
    http: Http,
    mount: String,
    prefix: String,
}

/// `GET <mount>/keys/<name>` data (the parts envault reads).
#[derive(Deserialize)]
struct KeyData {
    keys: std::collections::BTreeMap<String, serde_json::Value>,
    latest_version: u32,
}

impl TransitKeystore {
    /// Connects, checks the token and the mount; every failure is one sentence for the operator.
    pub fn open(config: &TransitConfig) -> Result<Self, KeystoreError> {
        Self::validate(config)?;
        let token = read_credential(
            "transit token",
            &config.token_file,
            "ENVAULT_TRANSIT_TOKEN",
            "keystore.transit.token_file",
        )?;
        Self::connect(config, token)
    }

    /// Checks the settings that need no server: address scheme, timeout, mount.
    fn validate(config: &TransitConfig) -> Result<(String, Duration, String), KeystoreError> {
        let address = config.address.trim().trim_end_matches('/').to_string();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(KeystoreError::Config(format!(
                "keystore.transit.address {address:?} must start with http:// or https://"
            )));
        }
        let timeout = config.timeout;
        if timeout.is_zero() {
            return Err(KeystoreError::Config(
                "keystore.transit.timeout must be above zero".into(),
            ));
        }
        let mount = config.mount.trim_matches('/').to_string();
        if mount.is_empty() {
            return Err(KeystoreError::Config(
                "keystore.transit.mount is empty".into(),
            ));
        }
        Ok((address, timeout, mount))
    }

    /// [`TransitKeystore::open`] with the token given (tools and tests that hold it already).
    pub fn connect(
        config: &TransitConfig,
        token: Zeroizing<String>,
    ) -> Result<Self, KeystoreError> {
        let (address, timeout, mount) = Self::validate(config)?;
        let tls = if config.ca_file.as_os_str().is_empty() {
            None
        } else {
            Some(tls_with_ca(&config.ca_file)?)
        };
        let agent_with = |limit: Duration| -> ureq::Agent {
            let mut builder = ureq::Agent::config_builder()
                .timeout_global(Some(limit))
                .http_status_as_error(false)
                .max_redirects(0)
                // Requests run on many blocking threads at once: keep their connections.
                .max_idle_connections(64)
                .max_idle_connections_per_host(64);
            if let Some(tls) = &tls {
                builder = builder.tls_config(tls.clone());
            }
            builder.build().into()
        };
        let agent = agent_with(timeout);
        let slow_agent = agent_with(timeout.max(SLOW_CALL_TIMEOUT));
        let store = Self {
            http: Http {
                agent,
                slow_agent,
                address: address.clone(),
                token,
                timeout,
            },
            mount,
            prefix: config.key_prefix.clone(),
        };
        store.check()?;
        Ok(store)
    }

    /// Start-up check: the token is accepted and a transit engine is mounted at `mount`.
    fn check(&self) -> Result<(), KeystoreError> {
        let address = &self.http.address;
        let startup = |err: KeystoreError| match err {
            KeystoreError::Unavailable(why) => KeystoreError::Config(why),
            other => other,
        };
        let answer = self
            .http
            .call(Verb::Get, "auth/token/lookup-self", None, false)
            .map_err(startup)?;
        match answer.status {
            200 => {}
            403 => {
                return Err(KeystoreError::Config(format!(
                    "the transit server at {address} refused the token (permission denied): check keystore.transit.token_file or ENVAULT_TRANSIT_TOKEN"
                )))
            }
            503 => {
                return Err(KeystoreError::Config(format!(
                    "the transit server at {address} is sealed or not ready ({})",
                    answer.errors()
                )))
            }
            status => {
                return Err(KeystoreError::Config(format!(
                    "the transit server at {address} answered the token check with HTTP {status}: {}",
                    answer.errors()
                )))
            }
        }
        let answer = self
            .http
            .call(Verb::List, &format!("{}/keys", self.mount), None, false)
            .map_err(startup)?;
        match answer.status {
            200 => Ok(()),
            // An empty LIST is a 404 with no errors; an unknown mount names the missing route.
            404 if answer.errors().is_empty() => Ok(()),
            404 => Err(KeystoreError::Config(format!(
                "no transit engine is mounted at {:?} on {address}",
                self.mount
            ))),
            403 => Err(KeystoreError::Config(format!(
                "the transit token may not list keys under {:?} on {address} (permission denied)",
                self.mount
            ))),
            status => Err(KeystoreError::Config(format!(
                "the transit server at {address} answered HTTP {status} listing {:?}: {}",
                self.mount,
                answer.errors()
            ))),
        }
    }

    fn name(&self, key_id: Uuid) -> String {
        format!("{}{key_id}", self.prefix)
    }

    fn path(&self, what: &str, key_id: Uuid) -> String {
        format!("{}/{what}/{}", self.mount, self.name(key_id))
    }

    /// An answer the server gave but envault did not expect.
    fn refused(&self, action: &str, key_id: Uuid, answer: &Answer) -> KeystoreError {
        let detail = answer.errors();
        if answer.status == 503 || answer.status == 429 {
            return KeystoreError::Unavailable(format!(
                "the transit server could not {action} key {key_id} now (HTTP {}): {detail}",
                answer.status
            ));
        }
        KeystoreError::Backend(format!(
            "the transit server refused to {action} key {key_id} (HTTP {}): {detail}",
            answer.status
        ))
    }

    fn read_key(&self, key_id: Uuid) -> Result<Option<KeyData>, KeystoreError> {
        let answer = self
            .http
            .call(Verb::Get, &self.path("keys", key_id), None, true)?;
        match answer.status {
            200 => Ok(Some(answer.data("key")?)),
            404 => Ok(None),
            _ => Err(self.refused("read", key_id, &answer)),
        }
    }

    fn post_ok(
        &self,
        path: &str,
        body: &serde_json::Value,
        action: &str,
        key_id: Uuid,
    ) -> Result<(), KeystoreError> {
        let body = body.to_string();
        let answer = self
            .http
            .call(Verb::Post, path, Some(body.as_bytes()), false)?;
        if (200..300).contains(&answer.status) {
            Ok(())
        } else {
            Err(self.refused(action, key_id, &answer))
        }
    }
}
