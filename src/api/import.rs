//! Secure import of root keys: import tokens (`/v1/import_token`) and the fields of a key
//! creation that imports material wrapped under one (`import_token`, `encrypted_payload`,
//! `encrypted_nonce`, `iv` in [`super::CreateKeyRequest`]).

use serde::{Deserialize, Serialize};

/// `POST /v1/import_token` body; every field is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateImportTokenRequest {
    /// How long the token is valid ("10m"); absent = `[keys] import_token_ttl`, at most
    /// `[keys] import_token_max_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// How many imports may use it; absent = `[keys] import_token_uses`, at most
    /// `[keys] import_token_max_uses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
}

/// An import token as the API shows it: the public half only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportTokenInfo {
    /// Token id, given back as `import_token` when creating the key.
    pub id: String,
    /// `crn:…:import-token:<id>`.
    pub crn: String,
    /// `RSAES_OAEP_SHA_256`: how `encrypted_payload` is wrapped (MGF1 with SHA-256, no label).
    pub encryption_algorithm: String,
    /// Base64 of the RSA-4096 public key, DER SubjectPublicKeyInfo.
    pub public_key: String,
    /// The same key as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// Base64 of the nonce to seal under the key material (AES-256-GCM).
    pub nonce: String,
    /// RFC 3339 time of creation.
    pub created_at: String,
    /// RFC 3339 time after which the token is destroyed.
    pub expires_at: String,
    /// Imports the token allowed when created.
    pub max_uses: u32,
    /// Imports it still allows.
    pub remaining_uses: u32,
}

/// The secure-import fields of `POST /v1/keys`, all base64 but the token id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecureImportFields {
    /// Import token id.
    pub import_token: String,
    /// The 32 bytes of key material, RSA-OAEP-SHA-256 under the token's public key.
    pub encrypted_payload: String,
    /// The token's nonce sealed under the key material with AES-256-GCM (ciphertext || tag).
    pub encrypted_nonce: String,
    /// The 12-byte GCM IV of that seal.
    pub iv: String,
}
