//! Cryptography with no I/O: secret key types, the AES-256-GCM primitive and the sealed
//! envelope format shared by records, wrapped DEKs, app-held ciphertexts and the keystore file.
//!
//! This is the only module that names an AES-GCM implementation (`ring` by default, or
//! `aes-gcm` with the `aead-rustcrypto` feature, both in [`aead`]), so a crate upgrade or a
//! switch to another audited implementation stays contained here.

pub mod aead;
pub mod bindings;
pub mod envelope;
pub mod secret;
pub mod stream;

pub use aead::Cipher;
pub use envelope::{Envelope, EnvelopeKind};
pub use secret::SecretKey;

/// Errors of the crypto layer. Deliberately coarse: an attacker who controls ciphertext must not
/// learn which check failed, so every authentication failure is the single [`CryptoError::Open`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The ciphertext, its header or its associated data did not authenticate.
    #[error("ciphertext failed to authenticate")]
    Open,
    /// The input is not an envelope of the expected kind (wrong magic, version or length).
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// Key material had the wrong length (root keys and DEKs are exactly 32 bytes).
    #[error("key material must be exactly 32 bytes")]
    KeyLength,
    /// A nonce was not exactly 12 bytes; rejected before it reaches the cipher.
    #[error("nonce must be exactly 12 bytes")]
    NonceLength,
    /// The plaintext or associated data exceed what AES-GCM can seal.
    #[error("input too long for AES-GCM")]
    TooLong,
    /// The operating system's random number generator failed.
    #[error("operating system RNG failed")]
    Rng,
}

/// Fills `buf` from the operating system's RNG (getrandom), never from a user-space PRNG.
pub fn os_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Rng)
}
