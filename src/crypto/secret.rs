//! Secret key material. [`SecretKey`] is the only type that holds raw root-key or DEK bytes.
//!
//! It never derives `Debug` or `Clone`, zeroizes on drop and lives in a `Box` so that moving the
//! handle never leaves copies of the bytes behind on the stack.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{os_random, CryptoError};

/// Length of every root key and DEK: AES-256.
pub const KEY_LEN: usize = 32;

/// 256 bits of key material, zeroized on drop. Read only through [`SecretKey::expose_secret`],
/// whose callers are the cipher constructor and the keystore's sealed serialization.
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    /// A fresh key from the operating system's RNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Box::new([0u8; KEY_LEN]);
        os_random(key.as_mut_slice())?;
        Ok(Self(key))
    }

    /// Copies imported material; anything but exactly 32 bytes is refused.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::KeyLength);
        }
        let mut key = Box::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    /// The raw bytes. Callers must not copy them anywhere that outlives this value unzeroized.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(REDACTED)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_material() {
        let key = SecretKey::from_slice(&[0xAB; 32]).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "SecretKey(REDACTED)");
        assert!(!shown.to_lowercase().contains("ab"));
    }

    #[test]
    fn rejects_wrong_lengths() {
        assert_eq!(
            SecretKey::from_slice(&[0; 31]).err(),
            Some(CryptoError::KeyLength)
        );
        assert_eq!(
            SecretKey::from_slice(&[0; 33]).err(),
            Some(CryptoError::KeyLength)
        );
        assert!(SecretKey::from_slice(&[0; 32]).is_ok());
    }

    #[test]
    fn generated_keys_differ() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
