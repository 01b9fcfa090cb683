//! Secure import through the service: creating and showing import tokens, and turning the
//! key material of a `POST /v1/keys` (plaintext `payload`, or a secure import under a token)
//! into what the keystore installs. The tokens themselves: [`super::import_tokens`].

use serde_json::json;

use super::import_tokens::{ImportError, ImportSettings, ImportTokens, NewImportKey, SealedImport};
use super::{Action, Principal, ServiceError, Vault};
use crate::api::{CreateImportTokenRequest, CreateKeyRequest, ImportTokenInfo, SecureImportFields};
use crate::crypto::SecretKey;
use crate::keystore::NewKey;
use crate::store::KeyOrigin;

/// Activity-log action of creating an import token.
pub const IMPORT_TOKEN_CREATE: &str = Action::ImportTokenCreate.as_str();
/// Activity-log action of reading one.
pub const IMPORT_TOKEN_READ: &str = Action::ImportTokenRead.as_str();

impl From<ImportError> for ServiceError {
    fn from(err: ImportError) -> Self {
        ServiceError::Import(err)
    }
}

/// The import settings of `[keys]`.
pub fn import_settings(keys: &crate::config::KeysConfig) -> ImportSettings {
    ImportSettings {
        default_ttl: keys.import_token_ttl,
        max_ttl: keys.import_token_max_ttl,
        default_uses: keys.import_token_uses,
        max_uses: keys.import_token_max_uses,
        plaintext_import: keys.plaintext_import,
    }
}

/// What a key creation imports: nothing (generate), plaintext, or a secure import.
enum ImportKind {
    Generate,
    Plaintext,
    Secure(SecureImportFields),
}

fn import_kind(request: &CreateKeyRequest) -> Result<ImportKind, ServiceError> {
    let secure = [
        &request.import_token,
        &request.encrypted_payload,
        &request.encrypted_nonce,
        &request.iv,
    ];
    let given = secure.iter().filter(|f| f.is_some()).count();
    match (&request.payload, given) {
        (None, 0) => Ok(ImportKind::Generate),
        (Some(_), 0) => Ok(ImportKind::Plaintext),
        (Some(_), _) => Err(ServiceError::BadRequest(
            "payload (plaintext import) and the secure-import fields cannot be combined".into(),
        )),
        (None, 4) => Ok(ImportKind::Secure(SecureImportFields {
            import_token: request.import_token.clone().unwrap_or_default(),
            encrypted_payload: request.encrypted_payload.clone().unwrap_or_default(),
            encrypted_nonce: request.encrypted_nonce.clone().unwrap_or_default(),
            iv: request.iv.clone().unwrap_or_default(),
        })),
        (None, _) => Err(ServiceError::BadRequest(
            "a secure import needs all of import_token, encrypted_payload, encrypted_nonce and iv"
                .into(),
        )),
    }
}

/// The details of a key creation's activity-log event: whether and how it imported. Never
/// any material, wrapped or not.
pub(super) fn create_key_details(request: &CreateKeyRequest) -> Option<serde_json::Value> {
    match import_kind(request) {
        Ok(ImportKind::Secure(fields)) => Some(json!({
            "import": "secure",
            "import_token": fields.import_token,
        })),
        Ok(ImportKind::Plaintext) => Some(json!({ "import": "plaintext" })),
        _ => None,
    }
}

impl Vault {
    /// The node's import tokens.
    pub fn import_tokens(&self) -> &ImportTokens {
        self.keys.import_tokens()
    }

    /// `POST /v1/import_token`: a new RSA-4096 key pair and nonce, valid for the asked (or
    /// default) time and number of uses.
    pub async fn create_import_token(
        &self,
        who: &Principal,
        request: CreateImportTokenRequest,
    ) -> Result<ImportTokenInfo, ServiceError> {
        let result: Result<ImportTokenInfo, ServiceError> = async {
            who.require_operator()?;
            let (ttl, uses) = self
                .keys
                .import_tokens()
                .resolve(request.ttl.as_deref(), request.max_uses)?;
            let key = tokio::task::spawn_blocking(NewImportKey::generate)
                .await
                .map_err(|e| ServiceError::TaskFailed(e.to_string()))??;
            self.keys
                .import_tokens()
                .insert(key, ttl, uses, |id| self.crn_named("import-token", id))
        }
        .await;
        let (target, details) = match &result {
            Ok(token) => (
                token.crn.clone(),
                Some(json!({
                    "expires_at": token.expires_at,
                    "max_uses": token.max_uses,
                    "encryption_algorithm": token.encryption_algorithm,
                })),
            ),
            Err(_) => ("import_token".to_string(), None),
        };
        self.audited(who, Action::ImportTokenCreate, &target, result, details)
    }

    /// `GET /v1/import_token/{id}`: a live token's public half and remaining uses.
    pub fn show_import_token(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<ImportTokenInfo, ServiceError> {
        let result = who.require_operator().and_then(|()| {
            self.keys
                .import_tokens()
                .show(id)
                .map_err(ServiceError::from)
        });
        let target = match &result {
            Ok(token) => token.crn.clone(),
            Err(_) => id.to_string(),
        };
        self.audited(who, Action::ImportTokenRead, &target, result, None)
    }

    /// The material of a key creation: generated by the backend, the plaintext `payload`
    /// (unless `[keys] plaintext_import = false`), or unwrapped from a secure import.
    pub(super) async fn new_key_material(
        &self,
        request: &CreateKeyRequest,
    ) -> Result<(NewKey, KeyOrigin), ServiceError> {
        match import_kind(request)? {
            // Generated inside the backend: with an HSM or transit server it never exists here.
            ImportKind::Generate => Ok((NewKey::Generate, KeyOrigin::Generated)),
            ImportKind::Plaintext => {
                if !self.keys.import_tokens().settings().plaintext_import {
                    return Err(ImportError::PlaintextDisabled.into());
                }
                let payload = request.payload.as_deref().unwrap_or_default();
                let key = plaintext_material(&Self::decode_base64("payload", payload)?)?;
                Ok((NewKey::Import(key), KeyOrigin::Imported))
            }
            ImportKind::Secure(fields) => {
                let sealed = SealedImport::decode(&fields)?;
                // Refused before a use is taken; a name taken between now and the commit is
                // still refused there (under the admin lock).
                if self.read_catalog().key_names.contains_key(&request.name) {
                    return Err(ServiceError::Conflict(format!(
                        "a key named {:?} already exists",
                        request.name
                    )));
                }
                let taken = self.keys.import_tokens().take_use(&sealed.token)?;
                let key = tokio::task::spawn_blocking(move || sealed.open(&taken))
                    .await
                    .map_err(|e| ServiceError::TaskFailed(e.to_string()))??;
                Ok((NewKey::Import(key), KeyOrigin::Imported))
            }
        }
    }
}

/// Plaintext material: exactly 32 bytes, not one byte value repeated.
fn plaintext_material(bytes: &[u8]) -> Result<SecretKey, ServiceError> {
    // All one byte value (all-zero included): a placeholder or a bug upstream, never a key.
    // The value itself is not repeated in the answer.
    if bytes.len() == crate::crypto::secret::KEY_LEN && bytes.iter().all(|b| *b == bytes[0]) {
        return Err(ServiceError::BadRequest(
            "payload is one byte value repeated 32 times, not key material; import a key from \
             a cryptographic random source"
                .into(),
        ));
    }
    SecretKey::from_slice(bytes).map_err(|_| {
        ServiceError::BadRequest(format!(
            "payload must decode to exactly 32 bytes (got {})",
            bytes.len()
        ))
    })
}
