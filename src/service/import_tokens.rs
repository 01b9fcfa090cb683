//! Import tokens: short-lived RSA-4096 key pairs through which root-key material enters the
//! daemon without ever crossing the socket in the clear (Key Protect's import tokens, AWS KMS
//! `GetParametersForImport`).
//!
//! A token is per node and lives only in this process's memory: its private key is never
//! written anywhere, and a restart forgets every token. The private key is destroyed (its
//! big integers zeroized by `rsa`'s `Drop`) when the token expires, found by the periodic
//! sweep or by the next access, and when its last use is taken.
//!
//! An import takes a use **before** the RSA decryption is attempted, and every failure from
//! then on (a ciphertext that does not decrypt, material that is not 32 bytes, a nonce sealed
//! under other material or not this token's, material that is one repeated byte) is the same
//! [`ImportError::Rejected`], answered with one code and one sentence. So the caller learns
//! nothing about which check failed (no padding or decryption oracle), and each token answers
//! at most its `max_uses` decryption attempts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::ServiceError;
use crate::api::ImportTokenInfo;
use crate::crypto::aead::{NONCE_LEN as IV_LEN, TAG_LEN};
use crate::crypto::{Cipher, SecretKey};

/// Size of every import token's RSA modulus.
pub const RSA_BITS: usize = 4096;
/// Length of an RSA-4096 ciphertext: `encrypted_payload` must be exactly this long.
pub const RSA_CIPHERTEXT_LEN: usize = RSA_BITS / 8;
/// Length of a token's nonce.
pub const IMPORT_NONCE_LEN: usize = 32;
/// Length of `encrypted_nonce`: the sealed nonce and its GCM tag.
pub const SEALED_NONCE_LEN: usize = IMPORT_NONCE_LEN + TAG_LEN;
/// The one wrapping algorithm, as the API names it.
pub const ENCRYPTION_ALGORITHM: &str = "RSAES_OAEP_SHA_256";
/// Live tokens a node holds at most (each is an RSA-4096 private key in memory).
const MAX_LIVE_TOKENS: usize = 64;
/// How long an expired or used-up token is still answered as such rather than as unknown.
const REMEMBER_GONE: Duration = Duration::from_secs(24 * 3600);
/// Gone tokens remembered at most (oldest forgotten first).
const MAX_GONE_TOKENS: usize = 4096;

/// `[keys]` settings of import tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSettings {
    /// Validity of a token whose request names none.
    pub default_ttl: Duration,
    /// Longest validity a request may ask for.
    pub max_ttl: Duration,
    /// Uses of a token whose request names none.
    pub default_uses: u32,
    /// Most uses a request may ask for.
    pub max_uses: u32,
    /// Whether `payload` (plaintext material) is still accepted.
    pub plaintext_import: bool,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            default_ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(24 * 3600),
            default_uses: 1,
            max_uses: 10,
            plaintext_import: true,
        }
    }
}

/// Why a secure import failed. The variants of [`RejectCause`] are deliberately answered alike.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// No token with this id on this node (never created, forgotten, or the node restarted).
    #[error(
        "no import token {0:?} on this node (import tokens live in one daemon's memory and do \
         not survive its restart); create one with POST /v1/import_token"
    )]
    UnknownToken(String),
    /// The token's validity ended; its private key is destroyed.
    #[error("import token {0:?} has expired; create a new one")]
    Expired(String),
    /// Every use of the token was taken; its private key is destroyed.
    #[error("import token {0:?} has no uses left; create a new one")]
    UsedUp(String),
    /// The RSA decryption was attempted and something after it failed; a use was taken.
    #[error(
        "the secure import was rejected: encrypted_payload must be 32 bytes of key material \
         (not one repeated byte) wrapped with RSA-OAEP-SHA-256 under this token's public key, \
         and encrypted_nonce the token's nonce sealed under that material with AES-256-GCM and \
         iv; one use of the token was taken"
    )]
    Rejected(RejectCause),
    /// `[keys] plaintext_import = false` and the request sent `payload`.
    #[error(
        "plaintext import is disabled on this instance ([keys] plaintext_import = false); \
         import through an import token (envault key create NAME --import FILE --secure)"
    )]
    PlaintextDisabled,
}

/// Which check rejected a secure import (for tests and reasoning; never told to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCause {
    /// RSA-OAEP decryption failed.
    Ciphertext,
    /// The decrypted material is not 32 bytes.
    MaterialLength,
    /// The sealed nonce did not open under the material, or is not the token's nonce.
    NonceMismatch,
    /// The material is one byte value repeated (a placeholder, not a key).
    WeakMaterial,
}

impl ImportError {
    /// The stable API code.
    pub fn code(&self) -> &'static str {
        match self {
            ImportError::UnknownToken(_) => "import_token_not_found",
            ImportError::Expired(_) => "import_token_expired",
            ImportError::UsedUp(_) => "import_token_used_up",
            ImportError::Rejected(_) => "secure_import_failed",
            ImportError::PlaintextDisabled => "plaintext_import_disabled",
        }
    }
}

/// A token's private key. No `Debug`, no `Clone`: it is shared only by `Arc` for the length
/// of one decryption, and `rsa::PrivateKey` zeroizes its components when the last `Arc` drops.
struct ImportKey(rsa::PrivateKey);

/// A freshly generated key pair, before it is registered.
pub(super) struct NewImportKey {
    key: ImportKey,
    public_der: Vec<u8>,
    public_pem: String,
}

impl NewImportKey {
    /// Generates an RSA-4096 key pair from the OS RNG. Slow (hundreds of milliseconds to
    /// seconds): run it on a blocking thread.
    pub(super) fn generate() -> Result<Self, ServiceError> {
        use rsa::pkcs8::EncodePublicKey as _;
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS)
            .map_err(|_| ServiceError::Random)?;
        let public = key.to_public_key();
        let public_der = public
            .to_public_key_der()
            .map_err(|_| ServiceError::Internal("an RSA public key does not encode"))?
            .into_vec();
        let public_pem = public
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|_| ServiceError::Internal("an RSA public key does not encode"))?;
        Ok(NewImportKey {
            key: ImportKey(key),
            public_der,
            public_pem,
        })
    }
}

struct LiveToken {
    key: Arc<ImportKey>,
    info: ImportTokenInfo,
    nonce: [u8; IMPORT_NONCE_LEN],
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Expired,
    UsedUp,
}

#[derive(Default)]
struct Registry {
    live: HashMap<String, LiveToken>,
    gone: HashMap<String, (Gone, Instant)>,
}

impl Registry {
    /// Destroys the private keys of expired tokens; forgets old gone ones. Returns how many
    /// keys it destroyed.
    fn sweep(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .live
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.live.remove(id);
            self.gone.insert(id.clone(), (Gone::Expired, now));
        }
        self.gone
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < REMEMBER_GONE);
        while self.gone.len() > MAX_GONE_TOKENS {
            let oldest = self
                .gone
                .iter()
                .min_by_key(|(_, (_, since))| *since)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.gone.remove(&id),
                None => break,
            };
        }
        expired.len()
    }

    fn gone_error(&self, id: &str) -> ImportError {
        match self.gone.get(id) {
            Some((Gone::Expired, _)) => ImportError::Expired(id.to_string()),
            Some((Gone::UsedUp, _)) => ImportError::UsedUp(id.to_string()),
            None => ImportError::UnknownToken(id.to_string()),
        }
    }
}

/// One taken use: what the decryption needs, held only for its length.
pub(super) struct TokenUse {
    key: Arc<ImportKey>,
    nonce: [u8; IMPORT_NONCE_LEN],
}

/// The secure-import inputs, decoded and checked for shape (before any use is taken).
pub(super) struct SealedImport {
    pub(super) token: String,
    encrypted_payload: Vec<u8>,
    encrypted_nonce: Vec<u8>,
    iv: [u8; IV_LEN],
}

impl SealedImport {
    /// Decodes the base64 fields and checks their lengths; a bad shape is `bad_request`.
    pub(super) fn decode(fields: &crate::api::SecureImportFields) -> Result<Self, ServiceError> {
        let decode = |field: &str, text: &str, len: usize| -> Result<Vec<u8>, ServiceError> {
            let bytes = B64
                .decode(text.trim())
                .map_err(|_| ServiceError::BadRequest(format!("{field} is not valid base64")))?;
            if bytes.len() != len {
                return Err(ServiceError::BadRequest(format!(
                    "{field} must decode to {len} bytes (got {})",
                    bytes.len()
                )));
            }
            Ok(bytes)
        };
        let iv = decode("iv", &fields.iv, IV_LEN)?;
        Ok(SealedImport {
            token: fields.import_token.clone(),
            encrypted_payload: decode(
                "encrypted_payload",
                &fields.encrypted_payload,
                RSA_CIPHERTEXT_LEN,
            )?,
            encrypted_nonce: decode("encrypted_nonce", &fields.encrypted_nonce, SEALED_NONCE_LEN)?,
            iv: iv
                .try_into()
                .map_err(|_| ServiceError::Internal("an iv of checked length"))?,
        })
    }

    /// Unwraps the material and checks the nonce: blocking (an RSA-4096 private-key
    /// operation). Every path runs the same steps, a random key standing in for material that
    /// did not decrypt, and all failures are one [`ImportError::Rejected`].
    pub(super) fn open(&self, taken: &TokenUse) -> Result<SecretKey, ImportError> {
        let decrypted = taken
            .key
            .0
            .oaep_decrypt::<rsa::sha2::Sha256>(&self.encrypted_payload)
            .map(Zeroizing::new);
        let rsa_ok = decrypted.is_ok();
        let material = decrypted
            .ok()
            .and_then(|bytes| SecretKey::from_slice(&bytes).ok());
        let length_ok = material.is_some();
        let check_key = match material {
            Some(key) => key,
            None => {
                SecretKey::generate().map_err(|_| ImportError::Rejected(RejectCause::Ciphertext))?
            }
        };
        let (sealed, tag) = self.encrypted_nonce.split_at(IMPORT_NONCE_LEN);
        let mut opened = Zeroizing::new(sealed.to_vec());
        let nonce_ok = Cipher::new(&check_key)
            .open_in_place(&self.iv, &[], &mut opened, tag)
            .is_ok()
            & bool::from(opened.as_slice().ct_eq(&taken.nonce));
        let bytes = check_key.expose_secret();
        let weak = bytes.iter().all(|b| *b == bytes[0]);
        let cause = if !rsa_ok {
            Some(RejectCause::Ciphertext)
        } else if !length_ok {
            Some(RejectCause::MaterialLength)
        } else if !nonce_ok {
            Some(RejectCause::NonceMismatch)
        } else if weak {
            Some(RejectCause::WeakMaterial)
        } else {
            None
        };
        match cause {
            Some(cause) => Err(ImportError::Rejected(cause)),
            None => Ok(check_key),
        }
    }
}

/// The node's import tokens.
pub struct ImportTokens {
    settings: ImportSettings,
    registry: Mutex<Registry>,
}

impl Default for ImportTokens {
    fn default() -> Self {
        ImportTokens::new(ImportSettings::default())
    }
}

impl ImportTokens {
    /// No tokens yet.
    pub fn new(settings: ImportSettings) -> Self {
        ImportTokens {
            settings,
            registry: Mutex::new(Registry::default()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> ImportSettings {
        self.settings
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Every change is a map insert or remove: a panic elsewhere leaves it consistent.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The validity and uses a request asks for, defaulted and checked against the maxima.
    pub(super) fn resolve(
        &self,
        ttl: Option<&str>,
        uses: Option<u32>,
    ) -> Result<(Duration, u32), ServiceError> {
        let s = self.settings;
        let ttl = match ttl {
            None => s.default_ttl,
            Some(text) => crate::config::parse_duration(text)
                .filter(|d| !d.is_zero() && *d <= s.max_ttl)
                .ok_or_else(|| {
                    ServiceError::BadRequest(format!(
                        "ttl {text:?} must be a duration above 0 and at most {}s \
                         ([keys] import_token_max_ttl), such as \"10m\"",
                        s.max_ttl.as_secs()
                    ))
                })?,
        };
        let uses = uses.unwrap_or(s.default_uses);
        if uses == 0 || uses > s.max_uses {
            return Err(ServiceError::BadRequest(format!(
                "max_uses must be 1 to {} ([keys] import_token_max_uses)",
                s.max_uses
            )));
        }
        Ok((ttl, uses))
    }

    /// Registers a generated key pair as a new token with a fresh id and nonce.
    pub(super) fn insert(
        &self,
        key: NewImportKey,
        ttl: Duration,
        uses: u32,
        crn_of: impl FnOnce(&str) -> String,
    ) -> Result<ImportTokenInfo, ServiceError> {
        let mut nonce = [0u8; IMPORT_NONCE_LEN];
        crate::crypto::os_random(&mut nonce).map_err(|_| ServiceError::Random)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = time::OffsetDateTime::now_utc();
        let rfc3339 = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .map_err(|_| ServiceError::Internal("a time does not format"))
        };
        let info = ImportTokenInfo {
            crn: crn_of(&id),
            id: id.clone(),
            encryption_algorithm: ENCRYPTION_ALGORITHM.into(),
            public_key: B64.encode(&key.public_der),
            public_key_pem: key.public_pem,
            nonce: B64.encode(nonce),
            created_at: rfc3339(now)?,
            expires_at: rfc3339(now + ttl)?,
            max_uses: uses,
            remaining_uses: uses,
        };
        let mut registry = self.registry();
        registry.sweep(Instant::now());
        if registry.live.len() >= MAX_LIVE_TOKENS {
            return Err(ServiceError::Conflict(format!(
                "this node already holds {MAX_LIVE_TOKENS} live import tokens; use or let \
                 expire some first"
            )));
        }
        registry.live.insert(
            id,
            LiveToken {
                key: Arc::new(key.key),
                info: info.clone(),
                nonce,
                deadline: Instant::now() + ttl,
            },
        );
        Ok(info)
    }

    /// A live token's public view.
    pub(super) fn show(&self, id: &str) -> Result<ImportTokenInfo, ImportError> {
        let mut registry = self.registry();
        registry.sweep(Instant::now());
        match registry.live.get(id) {
            Some(token) => Ok(token.info.clone()),
            None => Err(registry.gone_error(id)),
        }
    }

    /// Takes one use of a live token. The last use removes the token, so its private key is
    /// destroyed as soon as the caller's decryption drops the [`TokenUse`].
    pub(super) fn take_use(&self, id: &str) -> Result<TokenUse, ImportError> {
        let mut registry = self.registry();
        let now = Instant::now();
        registry.sweep(now);
        let Some(token) = registry.live.get_mut(id) else {
            return Err(registry.gone_error(id));
        };
        token.info.remaining_uses = token.info.remaining_uses.saturating_sub(1);
        let taken = TokenUse {
            key: Arc::clone(&token.key),
            nonce: token.nonce,
        };
        if token.info.remaining_uses == 0 {
            registry.live.remove(id);
            registry.gone.insert(id.to_string(), (Gone::UsedUp, now));
        }
        Ok(taken)
    }

    /// Destroys the private keys of expired tokens; returns how many.
    pub fn sweep(&self) -> usize {
        self.registry().sweep(Instant::now())
    }

    /// Live tokens on this node.
    pub fn live_count(&self) -> usize {
        self.registry().live.len()
    }
}

#[cfg(test)]
#[path = "import_tokens_tests.rs"]
mod tests;
