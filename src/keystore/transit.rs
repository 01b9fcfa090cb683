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

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::secrets::read_credential;
use super::{BackendInfo, KeystoreError, NewKey, RootKeyBackend, RootKeyRef};
use crate::config::TransitConfig;
use crate::crypto::envelope::HEADER_LEN;
use crate::crypto::{CryptoError, EnvelopeKind, SecretKey};

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

/// A small blocking client for the server: one agent (pooled connections) and the token.
struct Http {
    agent: ureq::Agent,
    /// For the rare calls the server may take long to answer the first time (the import
    /// wrapping key is a 4096-bit RSA key generated on first use).
    slow_agent: ureq::Agent,
    address: String,
    token: Zeroizing<String>,
    timeout: Duration,
}

/// A response: status and body (zeroized on drop: decrypt answers carry DEKs).
struct Answer {
    status: u16,
    body: Zeroizing<Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    List,
    Post,
    Delete,
}

impl Http {
    fn call(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
        retry_stale: bool,
    ) -> Result<Answer, KeystoreError> {
        self.call_with(&self.agent, verb, path, body, retry_stale)
    }

    fn call_with(
        &self,
        agent: &ureq::Agent,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
        retry_stale: bool,
    ) -> Result<Answer, KeystoreError> {
        match self.call_once(agent, verb, path, body) {
            // A pooled connection the server closed (e.g. after a restart) fails with an I/O
            // error; calls that are safe to repeat get one fresh attempt.
            Err(ureq::Error::Io(_)) if retry_stale => self.call_once(agent, verb, path, body),
            other => other,
        }
        .map_err(|e| self.transport_error(e))
    }

    fn call_once(
        &self,
        agent: &ureq::Agent,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, ureq::Error> {
        let url = format!("{}/v1/{path}", self.address);
        let token = self.token.as_str();
        let mut response = match verb {
            Verb::Get => agent
                .get(&url)
                .header("X-Vault-Token", token)
                .header("X-Vault-Request", "true")
                .call()?,
            Verb::List => agent
                .get(&format!("{url}?list=true"))
                .header("X-Vault-Token", token)
                .header("X-Vault-Request", "true")
                .call()?,
            Verb::Delete => agent
                .delete(&url)
                .header("X-Vault-Token", token)
                .header("X-Vault-Request", "true")
                .call()?,
            Verb::Post => agent
                .post(&url)
                .header("X-Vault-Token", token)
                .header("X-Vault-Request", "true")
                .content_type("application/json")
                .send(body.unwrap_or(b"{}"))?,
        };
        let status = response.status().as_u16();
        let body = Zeroizing::new(response.body_mut().read_to_vec()?);
        Ok(Answer { status, body })
    }

    fn transport_error(&self, err: ureq::Error) -> KeystoreError {
        let address = &self.address;
        match err {
            ureq::Error::Timeout(_) => KeystoreError::Unavailable(format!(
                "the transit server at {address} did not answer within {:?}",
                self.timeout
            )),
            other => KeystoreError::Unavailable(format!(
                "cannot reach the transit server at {address}: {other}"
            )),
        }
    }
}

impl Answer {
    /// The server's `errors` list, joined (never contains key material or the token).
    fn errors(&self) -> String {
        #[derive(Deserialize)]
        struct Errors {
            #[serde(default)]
            errors: Vec<String>,
        }
        serde_json::from_slice::<Errors>(&self.body)
            .map(|e| e.errors.join("; "))
            .unwrap_or_default()
    }

    fn data<T: for<'de> Deserialize<'de>>(&self, what: &str) -> Result<T, KeystoreError> {
        #[derive(Deserialize)]
        struct Envelope<T> {
            data: T,
        }
        serde_json::from_slice::<Envelope<T>>(&self.body)
            .map(|e| e.data)
            .map_err(|e| KeystoreError::Backend(format!("unexpected {what} answer: {e}")))
    }
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

    /// BYOK: the material wrapped for `keys/<name>/import`, readable only by the server:
    /// `RSA-OAEP-SHA256(wrapping key, ephemeral AES key) || AES-KWP(ephemeral key, material)`.
    fn wrap_for_import(&self, material: &SecretKey) -> Result<String, KeystoreError> {
        use rsa::pkcs8::DecodePublicKey as _;
        let answer = self.http.call_with(
            &self.http.slow_agent,
            Verb::Get,
            &format!("{}/wrapping_key", self.mount),
            None,
            true,
        )?;
        if answer.status != 200 {
            return Err(KeystoreError::Backend(format!(
                "the transit server has no wrapping key for imports (HTTP {}): {}",
                answer.status,
                answer.errors()
            )));
        }
        #[derive(Deserialize)]
        struct WrappingKey {
            public_key: String,
        }
        let pem = answer.data::<WrappingKey>("wrapping key")?.public_key;
        let public = rsa::RsaPublicKey::from_public_key_pem(&pem)
            .map_err(|e| KeystoreError::Backend(format!("unusable transit wrapping key: {e}")))?;
        let ephemeral = SecretKey::generate()?;
        let kek = aes_kw::KekAes256::try_from(&ephemeral.expose_secret()[..])
            .map_err(|_| KeystoreError::Backend("AES-KWP key setup failed".into()))?;
        let wrapped_material = kek
            .wrap_with_padding_vec(material.expose_secret())
            .map_err(|_| KeystoreError::Backend("AES-KWP wrap failed".into()))?;
        let wrapped_key = public
            .encrypt(
                &mut rsa::rand_core::OsRng,
                rsa::Oaep::new::<sha2::Sha256>(),
                ephemeral.expose_secret(),
            )
            .map_err(|e| KeystoreError::Backend(format!("RSA-OAEP wrap failed: {e}")))?;
        let mut blob = wrapped_key;
        blob.extend_from_slice(&wrapped_material);
        Ok(B64.encode(blob))
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

/// Shortest transit body: a 12-byte nonce and a 16-byte tag.
const MIN_BODY: usize = 12 + 16;

/// Parses `[magic 4 | 0x10 | label u32 | body]`: (label, header, transit ciphertext text).
fn parse_envelope(kind: EnvelopeKind, sealed: &[u8]) -> Result<(u32, &[u8], String), CryptoError> {
    if sealed.len() < HEADER_LEN + MIN_BODY {
        return Err(CryptoError::Malformed("too short"));
    }
    if &sealed[..4] != kind.magic() {
        return Err(CryptoError::Malformed("wrong magic"));
    }
    if sealed[4] != TRANSIT_ENVELOPE_VERSION {
        return Err(CryptoError::Malformed(
            "not sealed by the transit backend (unknown version)",
        ));
    }
    let label = u32::from_be_bytes([sealed[5], sealed[6], sealed[7], sealed[8]]);
    let text = format!("vault:v{label}:{}", B64.encode(&sealed[HEADER_LEN..]));
    Ok((label, &sealed[..HEADER_LEN], text))
}

fn header(kind: EnvelopeKind, version: u32) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(kind.magic());
    header[4] = TRANSIT_ENVELOPE_VERSION;
    header[5..].copy_from_slice(&version.to_be_bytes());
    header
}

fn associated_data(header: &[u8], context: &[u8]) -> String {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    B64.encode(aad)
}

fn tls_with_ca(path: &std::path::Path) -> Result<ureq::tls::TlsConfig, KeystoreError> {
    let pem = std::fs::read(path).map_err(|e| {
        KeystoreError::Config(format!(
            "cannot read keystore.transit.ca_file {}: {e}",
            path.display()
        ))
    })?;
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(KeystoreError::Config(format!(
            "keystore.transit.ca_file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
        .build())
}

impl RootKeyBackend for TransitKeystore {
    fn envelope_version(&self) -> u8 {
        TRANSIT_ENVELOPE_VERSION
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo {
            kind: "transit",
            location: format!("{} mount {:?}", self.http.address, self.mount),
            remote: true,
        }
    }

    fn create(&self, key_id: Uuid, material: NewKey) -> Result<(), KeystoreError> {
        if self.read_key(key_id)?.is_some() {
            return Err(KeystoreError::VersionExists(key_id, 1));
        }
        match material {
            NewKey::Generate => {
                let body = serde_json::json!({
                    "type": "aes256-gcm96",
                    "exportable": false,
                    "allow_plaintext_backup": false,
                });
                self.post_ok(&self.path("keys", key_id), &body, "create", key_id)
            }
            NewKey::Import(material) => {
                let ciphertext = self.wrap_for_import(&material)?;
                let body = serde_json::json!({
                    "ciphertext": ciphertext,
                    "type": "aes256-gcm96",
                    "hash_function": "SHA256",
                    "exportable": false,
                    "allow_plaintext_backup": false,
                    // Without it the server refuses to rotate an imported key, and envault's
                    // rotation of imported keys works on every backend.
                    "allow_rotation": true,
                });
                let path = format!("{}/import", self.path("keys", key_id));
                let body = body.to_string();
                let answer = self.http.call_with(
                    &self.http.slow_agent,
                    Verb::Post,
                    &path,
                    Some(body.as_bytes()),
                    false,
                )?;
                if (200..300).contains(&answer.status) {
                    Ok(())
                } else {
                    Err(self.refused("import", key_id, &answer))
                }
            }
        }
    }

    fn rotate(&self, key: RootKeyRef) -> Result<(), KeystoreError> {
        let Some(data) = self.read_key(key.key_id)? else {
            return Err(KeystoreError::NoSuchVersion(key.key_id, key.version - 1));
        };
        if data.latest_version == key.version {
            // Left by a rotation that crashed before its catalog commit: never used, adopt it.
            tracing::info!(key_id = %key.key_id, version = key.version, "adopting an unused transit key version");
            return Ok(());
        }
        if data.latest_version + 1 != key.version {
            return Err(KeystoreError::Backend(format!(
                "transit key {} is at version {}, cannot create version {}",
                self.name(key.key_id),
                data.latest_version,
                key.version
            )));
        }
        self.post_ok(
            &format!("{}/rotate", self.path("keys", key.key_id)),
            &serde_json::json!({}),
            "rotate",
            key.key_id,
        )?;
        match self.read_key(key.key_id)? {
            Some(data) if data.latest_version == key.version => Ok(()),
            _ => Err(KeystoreError::Backend(format!(
                "transit key {} did not reach version {} after rotate",
                self.name(key.key_id),
                key.version
            ))),
        }
    }

    fn seal(
        &self,
        key: RootKeyRef,
        kind: EnvelopeKind,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeystoreError> {
        let header = header(kind, key.version);
        let request = Zeroizing::new(
            serde_json::json!({
                "plaintext": B64.encode(plaintext),
                "associated_data": associated_data(&header, context),
                "key_version": key.version,
            })
            .to_string(),
        );
        let answer = self.http.call(
            Verb::Post,
            &self.path("encrypt", key.key_id),
            Some(request.as_bytes()),
            true,
        )?;
        match answer.status {
            200 => {}
            400 if answer.errors().contains("not found") || answer.errors().contains("version") => {
                return Err(KeystoreError::NoSuchVersion(key.key_id, key.version))
            }
            _ => return Err(self.refused("encrypt with", key.key_id, &answer)),
        }
        #[derive(Deserialize)]
        struct Encrypted {
            ciphertext: String,
        }
        let encrypted: Encrypted = answer.data("encrypt")?;
        let prefix = format!("vault:v{}:", key.version);
        let Some(body) = encrypted.ciphertext.strip_prefix(&prefix) else {
            return Err(KeystoreError::Backend(format!(
                "transit did not encrypt with version {}",
                key.version
            )));
        };
        let mut sealed = header.to_vec();
        B64.decode_vec(body, &mut sealed)
            .map_err(|_| KeystoreError::Backend("transit ciphertext is not base64".into()))?;
        if sealed.len() < HEADER_LEN + MIN_BODY {
            return Err(KeystoreError::Backend(
                "transit ciphertext is too short".into(),
            ));
        }
        Ok(sealed)
    }

    fn open(
        &self,
        key_id: Uuid,
        kind: EnvelopeKind,
        context: &[u8],
        sealed: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let (version, header, ciphertext) = parse_envelope(kind, &sealed)?;
        let request = serde_json::json!({
            "ciphertext": ciphertext,
            "associated_data": associated_data(header, context),
        })
        .to_string();
        let answer = self.http.call(
            Verb::Post,
            &self.path("decrypt", key_id),
            Some(request.as_bytes()),
            true,
        )?;
        match answer.status {
            200 => {}
            400 => {
                let errors = answer.errors();
                if errors.contains("authentication failed") || errors.contains("invalid ciphertext")
                {
                    return Err(CryptoError::Open.into());
                }
                if errors.contains("not found") || errors.contains("version") {
                    return Err(KeystoreError::NoSuchVersion(key_id, version));
                }
                return Err(self.refused("decrypt with", key_id, &answer));
            }
            _ => return Err(self.refused("decrypt with", key_id, &answer)),
        }
        // Borrowed from the zeroizing body, decoded into a zeroizing buffer: no other copy.
        #[derive(Deserialize)]
        struct Decrypted<'a> {
            #[serde(borrow)]
            data: DecryptedData<'a>,
        }
        #[derive(Deserialize)]
        struct DecryptedData<'a> {
            plaintext: &'a str,
        }
        let decrypted: Decrypted<'_> = serde_json::from_slice(&answer.body)
            .map_err(|e| KeystoreError::Backend(format!("unexpected decrypt answer: {e}")))?;
        let mut plain = Zeroizing::new(Vec::with_capacity(decrypted.data.plaintext.len()));
        B64.decode_vec(decrypted.data.plaintext, &mut plain)
            .map_err(|_| KeystoreError::Backend("decrypt answer is not base64".into()))?;
        Ok(plain)
    }

    fn destroy(&self, key_id: Uuid, versions: Option<&[u32]>) -> Result<(), KeystoreError> {
        let Some(data) = self.read_key(key_id)? else {
            return Ok(());
        };
        let Some(doomed) = versions else {
            // The shred: allow deletion, delete, and check that the key is gone.
            let config = format!("{}/config", self.path("keys", key_id));
            self.post_ok(
                &config,
                &serde_json::json!({ "deletion_allowed": true }),
                "allow deletion of",
                key_id,
            )?;
            let answer = self
                .http
                .call(Verb::Delete, &self.path("keys", key_id), None, false)?;
            if !(200..300).contains(&answer.status) && answer.status != 404 {
                return Err(self.refused("delete", key_id, &answer));
            }
            return match self.read_key(key_id)? {
                None => Ok(()),
                Some(_) => Err(KeystoreError::Backend(format!(
                    "transit key {} still exists after delete",
                    self.name(key_id)
                ))),
            };
        };
        let live: Vec<u32> = data.keys.keys().filter_map(|v| v.parse().ok()).collect();
        let Some(oldest_kept) = live.iter().copied().filter(|v| !doomed.contains(v)).min() else {
            return Err(KeystoreError::Unsupported(
                "retiring every version of a transit key is a shred; destroy the whole key".into(),
            ));
        };
        if let Some(newer) = doomed
            .iter()
            .find(|v| **v > oldest_kept && live.contains(v))
        {
            return Err(KeystoreError::Unsupported(format!(
                "transit can only retire the oldest versions of a key; version {newer} of key {key_id} stays on the server unused and the next rotation adopts it"
            )));
        }
        if !doomed.iter().any(|v| live.contains(v)) {
            return Ok(());
        }
        // Old versions stop decrypting, then their material is removed from the key policy.
        let config = format!("{}/config", self.path("keys", key_id));
        self.post_ok(
            &config,
            &serde_json::json!({
                "min_decryption_version": oldest_kept,
                "min_encryption_version": oldest_kept,
            }),
            "retire versions of",
            key_id,
        )?;
        self.post_ok(
            &format!("{}/trim", self.path("keys", key_id)),
            &serde_json::json!({ "min_available_version": oldest_kept }),
            "trim",
            key_id,
        )
    }

    fn versions(&self, key_id: Uuid) -> Result<Vec<u32>, KeystoreError> {
        let Some(data) = self.read_key(key_id)? else {
            return Ok(Vec::new());
        };
        let mut versions: Vec<u32> = data.keys.keys().filter_map(|v| v.parse().ok()).collect();
        versions.sort_unstable();
        Ok(versions)
    }

    fn key_ids(&self) -> Result<Vec<Uuid>, KeystoreError> {
        let answer = self
            .http
            .call(Verb::List, &format!("{}/keys", self.mount), None, true)?;
        #[derive(Deserialize)]
        struct Listed {
            keys: Vec<String>,
        }
        let names = match answer.status {
            200 => answer.data::<Listed>("list")?.keys,
            404 => Vec::new(),
            _ => {
                return Err(KeystoreError::Backend(format!(
                    "the transit server refused to list keys (HTTP {}): {}",
                    answer.status,
                    answer.errors()
                )))
            }
        };
        Ok(names
            .iter()
            .filter_map(|n| n.strip_prefix(&self.prefix))
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_header_is_checked() {
        let mut sealed = header(EnvelopeKind::WrappedDek, 3).to_vec();
        sealed.extend_from_slice(&[7u8; MIN_BODY + 32]);
        let (label, head, text) = parse_envelope(EnvelopeKind::WrappedDek, &sealed).unwrap();
        assert_eq!((label, head.len()), (3, HEADER_LEN));
        assert_eq!(
            text,
            format!("vault:v3:{}", B64.encode([7u8; MIN_BODY + 32]))
        );
        assert!(parse_envelope(EnvelopeKind::AppWrap, &sealed).is_err());
        assert!(parse_envelope(EnvelopeKind::WrappedDek, &sealed[..HEADER_LEN + 10]).is_err());
        let mut local = sealed;
        local[4] = 1;
        assert!(parse_envelope(EnvelopeKind::WrappedDek, &local).is_err());
    }
}
