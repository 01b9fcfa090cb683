//! Where root-key material lives, behind [`RootKeyBackend`]. Three backends, chosen by
//! `[keystore] backend`:
//! - [`file::FileKeystore`]: root keys sealed by the master key in `<data_dir>/keystore.bin`;
//! - [`pkcs11::Pkcs11Keystore`]: non-extractable AES-256 objects in a PKCS#11 token (an HSM,
//!   SoftHSM2 in tests);
//! - [`transit::TransitKeystore`]: `aes256-gcm96` keys of a Vault-compatible transit engine.
//!
//! The trait speaks in create/rotate/seal/open/destroy: a generated root key is created inside
//! the backend and never leaves it, and the service only ever hands a DEK (or app material) in
//! to be sealed and gets it back when opened. Which backend is in use is invisible to the
//! service, except for [`BackendInfo::remote`], which tells it that a call may wait on the
//! network (so it leaves the async worker first).
//!
//! Root keys are never stored in the store: its journal and tables keep overwritten values until
//! compaction, and a shred must erase material for good.

pub mod file;
mod master;
pub use master::audit_key_from_file;
pub mod pkcs11;
mod secrets;
pub mod transit;
mod worker_pool;

use std::sync::Arc;

use uuid::Uuid;

use crate::config::Config;
use crate::crypto::{CryptoError, EnvelopeKind, SecretKey};

/// Identifies one version of one root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootKeyRef {
    /// The root key's id.
    pub key_id: Uuid,
    /// Its version (1..n).
    pub version: u32,
}

/// Where the material of a new root key comes from.
pub enum NewKey {
    /// Generated inside the backend (in the HSM or transit server for the remote backends).
    Generate,
    /// Imported: caller-supplied material, which the backend takes in and the caller drops.
    Import(SecretKey),
}

/// What a backend is, for logs and for the service's blocking decision. Never secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// `"file"`, `"pkcs11"` or `"transit"`.
    pub kind: &'static str,
    /// Where the keys live (file path, module + token label, server address + mount).
    pub location: String,
    /// Whether calls may wait on a device or the network (up to the configured timeout).
    pub remote: bool,
}

/// Errors of the keystore layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// No live material for this key version (never created, retired or shredded).
    #[error("no material for root key {0} version {1}")]
    NoSuchVersion(Uuid, u32),
    /// Material for this key version already exists; versions are never replaced.
    #[error("root key {0} version {1} already exists")]
    VersionExists(Uuid, u32),
    /// Sealing or opening failed (a ciphertext that does not authenticate under this key).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The keystore file or master key could not be read or written.
    #[error("keystore I/O on {path}: {source}")]
    Io {
        /// File involved.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The keystore file exists but does not open with the master key, or is malformed.
    #[error("keystore file {0} is corrupt or sealed by another master key")]
    Corrupt(std::path::PathBuf),
    /// The keystore file does not authenticate under the master key: one of the two files
    /// is damaged, or they come from different vaults.
    #[error(
        "keystore file {keystore} does not open with the master key {master}: one of the two \
         files is damaged, or they are not from the same vault. Restore both from the same copy"
    )]
    DoesNotOpen {
        /// The keystore file.
        keystore: std::path::PathBuf,
        /// The master key file.
        master: std::path::PathBuf,
    },
    /// The backend (HSM, transit server) did not answer in time or could not be reached; the
    /// operation did not take effect as far as envault knows, and may be retried.
    #[error("the root-key backend is unavailable: {0}")]
    Unavailable(String),
    /// The backend answered but refused or failed the operation.
    #[error("the root-key backend failed: {0}")]
    Backend(String),
    /// This backend cannot do this operation.
    #[error("{0}")]
    Unsupported(String),
    /// The backend settings are wrong (one sentence, shown when `envault serve` stops).
    #[error("{0}")]
    Config(String),
}

/// A store of root-key material that seals and opens on the caller's behalf.
///
/// Every mutating call is durable when it returns: a created version survives a crash, and a
/// destroyed one is gone from persistent storage (the token, the transit server's storage).
pub trait RootKeyBackend: Send + Sync {
    /// What this backend is.
    fn describe(&self) -> BackendInfo;

    /// The version byte of the envelopes `seal` writes (byte 4, after the kind's magic). Wire
    /// formats that leave the envelope header implicit (transit's `vault:v<N>:`) rebuild it
    /// with this byte before `open`.
    fn envelope_version(&self) -> u8 {
        crate::crypto::envelope::ENVELOPE_VERSION
    }

    /// The key of the activity log's HMAC chain, when this backend derives one from material
    /// it keeps (the file backend: from the master key, so whoever can rewrite the log without
    /// the master key cannot forge it). `None` for backends whose keys never leave them; the
    /// service then keeps a random chain key in the data dir.
    fn audit_chain_key(&self) -> Result<Option<SecretKey>, KeystoreError> {
        Ok(None)
    }

    /// Creates version 1 of `key_id`, generated inside the backend or imported. Fails with
    /// [`KeystoreError::VersionExists`] if the key exists.
    fn create(&self, key_id: Uuid, material: NewKey) -> Result<(), KeystoreError>;

    /// Adds version `key.version` (generated inside the backend), the version after the newest
    /// one the caller's catalog names. A backend that cannot remove a version left by a
    /// rotation that crashed before its catalog commit (transit) adopts that unused version.
    fn rotate(&self, key: RootKeyRef) -> Result<(), KeystoreError>;

    /// Seals `plaintext` as an envelope of `kind` under `key`, bound to `context`.
    fn seal(
        &self,
        key: RootKeyRef,
        kind: EnvelopeKind,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeystoreError>;

    /// Opens an envelope of `kind`; the version is taken from the envelope's label.
    /// The plaintext is secret (a DEK or app material) and zeroizes on drop.
    fn open(
        &self,
        key_id: Uuid,
        kind: EnvelopeKind,
        context: &[u8],
        sealed: Vec<u8>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, KeystoreError>;

    /// Destroys the given versions of `key_id` (all of them when `versions` is `None`).
    /// Material is gone from persistent storage before this returns. Destroying a key that
    /// does not exist succeeds (a shred retried after a crash).
    fn destroy(&self, key_id: Uuid, versions: Option<&[u32]>) -> Result<(), KeystoreError>;

    /// Live versions of `key_id`, ascending (empty if the key does not exist).
    fn versions(&self, key_id: Uuid) -> Result<Vec<u32>, KeystoreError>;

    /// Every key id with live material.
    fn key_ids(&self) -> Result<Vec<Uuid>, KeystoreError>;
}

/// Opens the backend `[keystore] backend` names, checking its settings and reachability: a
/// wrong PIN, token, module, label or address fails here with one sentence.
pub fn open_backend(config: &Config) -> Result<Arc<dyn RootKeyBackend>, KeystoreError> {
    match config.keystore.backend.as_str() {
        "file" => Ok(Arc::new(file::FileKeystore::open(
            &config.data_dir,
            &config.master_key_path(),
        )?)),
        "pkcs11" => Ok(Arc::new(pkcs11::Pkcs11Keystore::open(
            &config.keystore.pkcs11,
        )?)),
        "transit" => Ok(Arc::new(transit::TransitKeystore::open(
            &config.keystore.transit,
        )?)),
        other => Err(KeystoreError::Config(format!(
            "unknown keystore backend {other:?} (expected \"file\", \"pkcs11\" or \"transit\")"
        ))),
    }
}
