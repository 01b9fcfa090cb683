//! Secure import: import tokens, and the client's half of the exchange (wrap the material
//! under the token's RSA key, seal the token's nonce under the material).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::paths::encode_segment;
use super::{Client, ClientError, Method, NO_BODY};
use crate::api::{
    CreateImportTokenRequest, CreateKeyRequest, ImportTokenInfo, KeyInfo, SecureImportFields,
};
use crate::crypto::aead::random_nonce;
use crate::crypto::{Cipher, SecretKey};

impl Client {
    /// `POST /v1/import_token`: a new import token; `None` takes the daemon's defaults.
    pub async fn create_import_token(
        &self,
        ttl: Option<&str>,
        max_uses: Option<u32>,
    ) -> Result<ImportTokenInfo, ClientError> {
        let body = CreateImportTokenRequest {
            ttl: ttl.map(str::to_string),
            max_uses,
        };
        self.call_json(Method::POST, "/v1/import_token", Some(&body))
            .await
    }

    /// `GET /v1/import_token/{id}`: a live token and its remaining uses.
    pub async fn import_token(&self, id: &str) -> Result<ImportTokenInfo, ClientError> {
        let path = format!("/v1/import_token/{}", encode_segment(id));
        self.call_json(Method::GET, &path, NO_BODY).await
    }

    /// `POST /v1/keys` with secure-import fields already sealed ([`seal_for_import`]).
    pub async fn create_key_sealed(
        &self,
        name: &str,
        sealed: SecureImportFields,
        description: Option<&str>,
    ) -> Result<KeyInfo, ClientError> {
        let body = CreateKeyRequest {
            name: name.to_string(),
            description: description.map(str::to_string),
            import_token: Some(sealed.import_token),
            encrypted_payload: Some(sealed.encrypted_payload),
            encrypted_nonce: Some(sealed.encrypted_nonce),
            iv: Some(sealed.iv),
            ..Default::default()
        };
        self.call_json(Method::POST, "/v1/keys", Some(&body)).await
    }

    /// The whole secure import: gets a single-use import token, wraps the 32 bytes of
    /// `material` under its public key, seals its nonce under the material, and creates the
    /// key. The material never crosses the socket in the clear.
    pub async fn create_key_secure(
        &self,
        name: &str,
        material: &[u8],
        description: Option<&str>,
    ) -> Result<KeyInfo, ClientError> {
        check_material(material)?; // before a token is made for nothing
        let token = self.create_import_token(None, Some(1)).await?;
        let sealed = seal_for_import(&token, material)?;
        self.create_key_sealed(name, sealed, description).await
    }
}

fn check_material(material: &[u8]) -> Result<SecretKey, ClientError> {
    SecretKey::from_slice(material).map_err(|_| {
        ClientError::InvalidInput(format!(
            "key material to import must be exactly 32 bytes (got {})",
            material.len()
        ))
    })
}

/// The client's half of a secure import: `material` (exactly 32 bytes) wrapped with
/// RSA-OAEP-SHA-256 under the token's public key, and the token's nonce sealed under the
/// material with AES-256-GCM (no associated data) and a random 12-byte IV.
pub fn seal_for_import(
    token: &ImportTokenInfo,
    material: &[u8],
) -> Result<SecureImportFields, ClientError> {
    use rsa::pkcs8::DecodePublicKey as _;
    let key = check_material(material)?;
    let der = BASE64
        .decode(&token.public_key)
        .map_err(|_| ClientError::Protocol("the import token's public key is not base64".into()))?;
    let public = rsa::PublicKey::from_public_key_der(&der).map_err(|e| {
        ClientError::Protocol(format!(
            "the import token's public key does not decode: {e}"
        ))
    })?;
    let encrypted_payload = public
        .oaep_encrypt::<rsa::sha2::Sha256>(key.expose_secret())
        .map_err(|e| ClientError::Protocol(format!("RSA-OAEP wrap failed: {e}")))?;
    let mut nonce = Zeroizing::new(
        BASE64
            .decode(&token.nonce)
            .map_err(|_| ClientError::Protocol("the import token's nonce is not base64".into()))?,
    );
    let iv =
        random_nonce().map_err(|_| ClientError::Protocol("the random generator failed".into()))?;
    let tag = Cipher::new(&key)
        .seal_in_place(&iv, &[], &mut nonce)
        .map_err(|_| ClientError::Protocol("AES-GCM seal failed".into()))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&tag);
    Ok(SecureImportFields {
        import_token: token.id.clone(),
        encrypted_payload: BASE64.encode(encrypted_payload),
        encrypted_nonce: BASE64.encode(sealed),
        iv: BASE64.encode(iv),
    })
}
