//! The AES-256-GCM primitive: the only code in envault that names an AES-GCM crate.
//!
//! Nonces are 96 bits drawn at random from the OS RNG for every seal. NIST SP 800-38D bounds a
//! key to 2^32 random-nonce invocations; callers enforce a far lower bound (2^31 seals per DEK
//! generation, see `service::records`), so collision probability stays below 2^-33.
//!
//! Two implementations sit behind the same API, chosen at build time by cargo feature:
//!
//! * `aead-ring` (default): `ring`'s AES-GCM, BoringSSL's assembly with AES and GHASH stitched
//!   in one pass (AES-NI + PCLMULQDQ, or VAES + VPCLMULQDQ on AVX2 when the CPU has them,
//!   detected at run time). About 3x the throughput of `aes-gcm` at 4 KiB and above on the
//!   benchmark machine (5.8 against 1.95 GB/s), and 1.8x `openssl speed`; see BENCHMARKS.md.
//! * `aead-rustcrypto`: RustCrypto's `aes-gcm` (pure Rust, intrinsics detected at run time,
//!   CTR and GHASH in two passes). Takes precedence when enabled, so
//!   `--features aead-rustcrypto` is enough to select it.
//!
//! Both pass the same CAVP and Wycheproof vectors (`tests/suite/crypto_vectors.rs`).

use super::{os_random, CryptoError, SecretKey};

/// Length of a GCM nonce. Any other length is refused before reaching the cipher.
pub const NONCE_LEN: usize = 12;
/// Length of a GCM authentication tag.
pub const TAG_LEN: usize = 16;

#[cfg(not(any(feature = "aead-ring", feature = "aead-rustcrypto")))]
compile_error!(
    "envault needs an AES-GCM backend: feature `aead-ring` (default) or `aead-rustcrypto`"
);

/// RustCrypto `aes-gcm`. Its key schedule zeroizes on drop (the crate's `zeroize` feature).
#[cfg(feature = "aead-rustcrypto")]
mod backend {
    use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
    use aes_gcm::Aes256Gcm;

    use super::{NONCE_LEN, TAG_LEN};

    pub(super) struct Key(Aes256Gcm);

    impl Key {
        pub(super) fn new(key: &[u8; 32]) -> Self {
            Self(Aes256Gcm::new(key.into()))
        }

        /// Fails only when the input exceeds what GCM can seal under one nonce.
        pub(super) fn seal(
            &self,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            buffer: &mut [u8],
        ) -> Result<[u8; TAG_LEN], ()> {
            let nonce = Nonce::<Aes256Gcm>::from(*nonce);
            let tag = self
                .0
                .encrypt_inout_detached(&nonce, aad, buffer.into())
                .map_err(drop)?;
            Ok(tag.into())
        }

        pub(super) fn open(
            &self,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            buffer: &mut [u8],
            tag: &[u8; TAG_LEN],
        ) -> Result<(), ()> {
            let nonce = Nonce::<Aes256Gcm>::from(*nonce);
            let tag = Tag::<Aes256Gcm>::from(*tag);
            self.0
                .decrypt_inout_detached(&nonce, aad, buffer.into(), &tag)
                .map_err(drop)
        }
    }
}

/// `ring`. It does not zeroize its key schedules, so ours lives in a `Box` that `Drop`
/// overwrites in place before it is freed (best effort, like every zeroization).
#[cfg(all(feature = "aead-ring", not(feature = "aead-rustcrypto")))]
mod backend {
    use std::sync::OnceLock;

    use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

    use super::{NONCE_LEN, TAG_LEN};

    pub(super) struct Key(Box<LessSafeKey>);

    fn expand(key: &[u8; 32]) -> LessSafeKey {
        match UnboundKey::new(&AES_256_GCM, key) {
            Ok(key) => LessSafeKey::new(key),
            // ring refuses only keys of the wrong length, and AES-256 keys are 32 bytes.
            Err(_) => unreachable!("AES_256_GCM takes 32-byte keys"),
        }
    }

    impl Key {
        pub(super) fn new(key: &[u8; 32]) -> Self {
            Self(Box::new(expand(key)))
        }

        /// Fails only when the input exceeds what GCM can seal under one nonce.
        pub(super) fn seal(
            &self,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            buffer: &mut [u8],
        ) -> Result<[u8; TAG_LEN], ()> {
            let nonce = Nonce::assume_unique_for_key(*nonce);
            let tag = self
                .0
                .seal_in_place_separate_tag(nonce, Aad::from(aad), buffer)
                .map_err(drop)?;
            tag.as_ref().try_into().map_err(drop)
        }

        pub(super) fn open(
            &self,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            buffer: &mut [u8],
            tag: &[u8; TAG_LEN],
        ) -> Result<(), ()> {
            let nonce = Nonce::assume_unique_for_key(*nonce);
            self.0
                .open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), buffer, 0..)
                .map(drop)
                .map_err(drop)
        }
    }

    /// The schedule of the all-zero key, expanded once and copied over dropped keys.
    static WIPE: OnceLock<LessSafeKey> = OnceLock::new();

    impl Drop for Key {
        fn drop(&mut self) {
            // Assigning through the Box rewrites the same heap bytes (same variant, so every
            // field) with the all-zero key's schedule; `black_box` makes the store observable so
            // it is not elided as dead before the deallocation.
            *self.0 = WIPE.get_or_init(|| expand(&[0; 32])).clone();
            std::hint::black_box(&*self.0);
        }
    }
}

/// An expanded AES-256-GCM key, ready to seal and open. Holding the key schedule (rather than
/// the 32 raw bytes) keeps key expansion off the per-record hot path. The schedule is wiped on
/// drop (see the backends above); there is deliberately no `Debug` or `Clone`.
pub struct Cipher(backend::Key);

impl Cipher {
    /// Expands `key`. The raw bytes are not retained.
    pub fn new(key: &SecretKey) -> Self {
        Self(backend::Key::new(key.expose_secret()))
    }

    /// Encrypts `buffer` in place and returns the tag. `nonce` must be unique for this key.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        self.0
            .seal(nonce, aad, buffer)
            .map_err(|()| CryptoError::TooLong)
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
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::NonceLength)?;
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::Open)?;
        self.0
            .open(nonce, aad, buffer, tag)
            .map_err(|()| CryptoError::Open)
    }
}

/// A fresh 96-bit nonce from the OS RNG.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    os_random(&mut nonce)?;
    Ok(nonce)
}
