//! BYOK import: key material wrapped so that only the transit server can read it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

use super::http::Verb;
use super::TransitKeystore;
use crate::crypto::SecretKey;
use crate::keystore::KeystoreError;

impl TransitKeystore {
    /// BYOK: the material wrapped for `keys/<name>/import`, readable only by the server:
    /// `RSA-OAEP-SHA256(wrapping key, ephemeral AES key) || AES-KWP(ephemeral key, material)`.
    pub(super) fn wrap_for_import(&self, material: &SecretKey) -> Result<String, KeystoreError> {
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
        let public = rsa::PublicKey::from_public_key_pem(&pem)
            .map_err(|e| KeystoreError::Backend(format!("unusable transit wrapping key: {e}")))?;
        let ephemeral = SecretKey::generate()?;
        let kek = aes_kw::KekAes256::try_from(&ephemeral.expose_secret()[..])
            .map_err(|_| KeystoreError::Backend("AES-KWP key setup failed".into()))?;
        let wrapped_material = kek
            .wrap_with_padding_vec(material.expose_secret())
            .map_err(|_| KeystoreError::Backend("AES-KWP wrap failed".into()))?;
        let wrapped_key = public
            .oaep_encrypt::<rsa::sha2::Sha256>(ephemeral.expose_secret())
            .map_err(|e| KeystoreError::Backend(format!("RSA-OAEP wrap failed: {e}")))?;
        let mut blob = wrapped_key;
        blob.extend_from_slice(&wrapped_material);
        Ok(B64.encode(blob))
    }
}
