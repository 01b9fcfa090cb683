//! The AES-256-GCM primitive: the only code in envault that names the `aes-gcm` crate.
//!
//! Nonces are 96 bits drawn at random from the OS RNG for every seal. NIST SP 800-38D bounds a
//! key to 2^32 random-nonce invocations; callers enforce a far lower bound (2^31 seals per DEK
//! generation, see `service::records`), so collision probability stays below 2^-33.

use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm::Aes256Gcm;

use super::{os_random, CryptoError, SecretKey};

/// Length of a GCM nonce. Any other length is refused before reaching the cipher.
pub const NONCE_LEN: usize = 12;
/// Length of a GCM authentication tag.
pub const TAG_LEN: usize = 16;

/// An expanded AES-256-GCM key, ready to seal and open. Holding the key schedule (rather than
/// the 32 raw bytes) keeps key expansion off the per-record hot path. The schedule zeroizes on
/// drop (the crate's `zeroize` feature); there is deliberately no `Debug` or `Clone`.
pub struct Cipher(Aes256Gcm);

impl Cipher {
    /// Expands `key`. The raw bytes are not retained.
    pub fn new(key: &SecretKey) -> Self {
        // A 32-byte slice is always a valid AES-256 key length, so this cannot fail; the
        // fallback keeps the function total without an `expect`.
        match Aes256Gcm::new_from_slice(key.expose_secret()) {
            Ok(cipher) => Self(cipher),
            Err(_) => unreachable!("SecretKey is always 32 bytes"),
        }
    }

    /// Encrypts `buffer` in place and returns the tag. `nonce` must be unique for this key.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let nonce = Nonce::<Aes256Gcm>::from(*nonce);
        let tag = self
            .0
            .encrypt_inout_detached(&nonce, aad, buffer.into())
            .map_err(|_| CryptoError::TooLong)?;
        Ok(tag.into())
    }

    /// Decrypts `buffer` in place if `tag` authenticates it with `aad`. Nonces and tags of the
    /// wrong length (fully attacker controlled) are refused before the cipher sees them. On
    /// failure `buffer` holds garbage and must be discarded by the caller.
    pub fn open_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::NonceLength)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::Open)?;
        self.0
            .decrypt_inout_detached(
                &Nonce::<Aes256Gcm>::from(nonce),
                aad,
                buffer.into(),
                &Tag::<Aes256Gcm>::from(tag),
            )
            .map_err(|_| CryptoError::Open)
    }
}

/// A fresh 96-bit nonce from the OS RNG.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    os_random(&mut nonce)?;
    Ok(nonce)
}
