//! Where root-key material lives, behind [`RootKeyBackend`]. The default backend is
//! [`file::FileKeystore`]; PKCS#11 and transit backends slot in behind the same trait, which is
//! why it speaks in seal/open operations and never hands key material out.
//!
//! Root keys are never stored in sled: sled keeps overwritten values in its log, and a shred must
//! erase material for good.

pub mod file;
mod master;

use uuid::Uuid;

use crate::crypto::{CryptoError, EnvelopeKind, SecretKey};

/// Identifies one version of one root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootKeyRef {
    /// The root key's id.
    pub key_id: Uuid,
    /// Its version (1..n).
    pub version: u32,
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
}

/// A store of root-key material that seals and opens on the caller's behalf.
///
/// Every mutating call is durable when it returns: a created version survives a crash, and a
/// destroyed one is gone from persistent storage.
pub trait RootKeyBackend: Send + Sync {
    /// Stores `material` as `key`. Fails if that version exists.
    fn insert(&self, key: RootKeyRef, material: SecretKey) -> Result<(), KeystoreError>;

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
    /// Material is overwritten in persistent storage before this returns.
    fn destroy(&self, key_id: Uuid, versions: Option<&[u32]>) -> Result<(), KeystoreError>;

    /// Live versions of `key_id`, ascending.
    fn versions(&self, key_id: Uuid) -> Vec<u32>;

    /// Every key id with live material.
    fn key_ids(&self) -> Vec<Uuid>;
}
