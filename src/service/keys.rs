//! Root keys: create (generate or import), list, show with registrations, and the wrap API
//! (wrap / unwrap / rewrap of application-held material).

use super::catalog::CatalogChange;
use crate::service::Action;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{now_rfc3339, validate_name, Principal, ServiceError, Vault};
use crate::api::{
    CreateKeyRequest, KeyInfo, Registration, RewrapResponse, UnwrapRequest, UnwrapResponse,
    WrapRequest, WrapResponse,
};
use crate::crypto::bindings::app_wrap_context;
use crate::crypto::{EnvelopeKind, SecretKey};
use crate::keystore::{KeystoreError, NewKey, RootKeyRef};
use crate::store::{KeyOrigin, KeyRecord, KeyState};

/// Largest plaintext the wrap API accepts (it wraps keys and small secrets, not data).
pub const MAX_WRAP_PLAINTEXT: usize = 64 * 1024;

impl Vault {
    /// Decodes base64 from the API, naming the field in the error.
    pub(super) fn decode_base64(
        field: &str,
        text: &str,
    ) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        B64.decode(text.trim())
            .map(Zeroizing::new)
            .map_err(|_| ServiceError::BadRequest(format!("{field} is not valid base64")))
    }

    /// Creates a root key, generated or imported (plaintext or secure import, see
    /// `secure_import`); version 1 is durable in the keystore first.
    pub async fn create_key(
        &self,
        who: &Principal,
        request: CreateKeyRequest,
    ) -> Result<KeyInfo, ServiceError> {
        let name = request.name.clone();
        let details = super::secure_import::create_key_details(&request);
        let result: Result<KeyInfo, ServiceError> = async {
            who.require_operator()?;
            validate_name("key", &request.name)?;
            if request.description.as_ref().is_some_and(|d| d.len() > 1024) {
                return Err(ServiceError::BadRequest(
                    "description is longer than 1024 bytes".into(),
                ));
            }
            let (material, origin) = self.new_key_material(&request).await?;
            let _admin = self.admin().await?;
            if self.read_catalog().key_names.contains_key(&request.name) {
                return Err(ServiceError::Conflict(format!(
                    "a key named {:?} already exists",
                    request.name
                )));
            }
            let record = KeyRecord {
                id: Uuid::new_v4(),
                name: request.name,
                description: request.description,
                origin,
                state: KeyState::Active,
                version: 1,
                created_at: now_rfc3339(),
                owner_database: None,
                last_rotated_at: None,
                destroy_at: None,
            };
            self.install_key(record, material).await
        }
        .await;
        let target = result.as_ref().map(|k| k.crn.clone()).unwrap_or(name);
        self.audited(who, Action::SecretsCreate, &target, result, details)
    }

    /// Stores material then metadata. A crash between the two leaves orphan material that the
    /// next start destroys (`reconcile_keystore`); the reverse order could leave metadata for a
    /// key whose material never became durable.
    pub(super) async fn install_key(
        &self,
        record: KeyRecord,
        material: NewKey,
    ) -> Result<KeyInfo, ServiceError> {
        let key_id = record.id;
        let keystore = std::sync::Arc::clone(self.keys.backend());
        tokio::task::spawn_blocking(move || keystore.create(key_id, material))
            .await
            .map_err(|e| ServiceError::TaskFailed(e.to_string()))??;
        if let Err(err) = self
            .commit(vec![CatalogChange::PutKey(record.clone())])
            .await
        {
            let _ = self.keys.call(|ks| ks.destroy(record.id, None));
            return Err(err);
        }
        Ok(self.key_info(&self.read_catalog(), &record, false))
    }

    /// Destroys keystore material that no catalog key names (left by a crash in `install_key`).
    /// Under the admin lock: on a shared store, another node may be between creating material
    /// and committing its key.
    pub async fn reconcile_keystore(&self) -> Result<(), ServiceError> {
        let _admin = self.admin().await?;
        // (key, versions to destroy; None = all)
        let mut doomed: Vec<(Uuid, Option<Vec<u32>>)> = Vec::new();
        let key_ids = self.keys.call(|ks| ks.key_ids())?;
        {
            let catalog = self.read_catalog();
            for id in key_ids {
                match catalog.keys.get(&id) {
                    // Material with no catalog entry: a create that crashed before commit.
                    None => doomed.push((id, None)),
                    // A shred committed to the catalog whose material outlived a crash.
                    Some(key) if key.state == KeyState::Destroyed => doomed.push((id, None)),
                    // A version added by a rotation that crashed before its commit.
                    Some(key) => {
                        let extra: Vec<u32> = self
                            .keys
                            .call(|ks| ks.versions(id))?
                            .into_iter()
                            .filter(|v| *v > key.version)
                            .collect();
                        if !extra.is_empty() {
                            doomed.push((id, Some(extra)));
                        }
                    }
                }
            }
        }
        for (id, versions) in doomed {
            tracing::warn!(key_id = %id, ?versions, "destroying keystore material the catalog does not keep");
            match self.keys.call(|ks| ks.destroy(id, versions.as_deref())) {
                // A backend that cannot drop a newer unused version (transit) keeps it; the
                // next rotation of this key adopts it. Not a reason to refuse to start.
                Err(KeystoreError::Unsupported(why)) => tracing::warn!(key_id = %id, "{why}"),
                other => other?,
            }
        }
        Ok(())
    }

    /// Customer keys.
    pub fn list_keys(&self, who: &Principal) -> Result<Vec<KeyInfo>, ServiceError> {
        who.require_operator()?;
        let catalog = self.read_catalog();
        Ok(catalog
            .customer_keys()
            .into_iter()
            .map(|k| self.key_info(&catalog, k, false))
            .collect())
    }

    /// One key with its registrations.
    pub fn show_key(&self, who: &Principal, reference: &str) -> Result<KeyInfo, ServiceError> {
        who.require_operator()?;
        let catalog = self.read_catalog();
        let key = find_key(&catalog, reference)?;
        Ok(self.key_info(&catalog, key, true))
    }

    pub(super) fn key_info(
        &self,
        catalog: &super::Catalog,
        key: &KeyRecord,
        with_registrations: bool,
    ) -> KeyInfo {
        let registrations = with_registrations.then(|| {
            catalog
                .databases_under(&key.id)
                .into_iter()
                .map(|db| Registration {
                    kind: "database".into(),
                    id: db.id.to_string(),
                    crn: self.crn("database", &db.id),
                    name: db.name.clone(),
                    state: db.state.as_str().into(),
                    role: if db.key_id == key.id {
                        "key"
                    } else {
                        "backup_key"
                    }
                    .into(),
                    purge_at: db.purge_at.map(super::unix_to_rfc3339),
                })
                .chain(
                    catalog
                        .backups_under(&key.id)
                        .into_iter()
                        .map(|b| Registration {
                            kind: "backup".into(),
                            id: b.id.to_string(),
                            crn: self.crn("backup", &b.id),
                            name: format!("backup of {} at {}", b.database_name, b.created_at),
                            state: b.state.clone(),
                            role: "backup_key".into(),
                            purge_at: b.expires_at.map(super::unix_to_rfc3339),
                        }),
                )
                .collect()
        });
        KeyInfo {
            id: key.id.to_string(),
            crn: self.crn("key", &key.id),
            name: key.name.clone(),
            origin: key.origin.as_str().into(),
            state: key.state.as_str().into(),
            version: key.version,
            created_at: key.created_at.clone(),
            description: key.description.clone(),
            policy: with_registrations.then(|| self.policy_info(catalog, key)),
            destroy_at: key.destroy_at.map(super::token_lifecycle::rfc3339_of),
            registrations,
        }
    }

    /// Resolves a key usable by the wrap API: a customer key that is active.
    fn wrap_key(&self, reference: &str) -> Result<KeyRecord, ServiceError> {
        let catalog = self.read_catalog();
        let key = find_key(&catalog, reference)?;
        if key.origin == KeyOrigin::Provider {
            return Err(ServiceError::Forbidden(
                "provider-managed keys are used only by their own database".into(),
            ));
        }
        require_usable(key)?;
        Ok(key.clone())
    }

    /// Wraps caller material (or a fresh 32-byte DEK) under the key's newest version.
    pub fn wrap(
        &self,
        who: &Principal,
        reference: &str,
        request: WrapRequest,
    ) -> Result<WrapResponse, ServiceError> {
        let result: Result<WrapResponse, ServiceError> = (|| {
            who.require_operator()?;
            let key = self.wrap_key(reference)?;
            let aad = request.aad.unwrap_or_default();
            let (plaintext, generated) = match &request.plaintext {
                Some(text) => {
                    let bytes = Self::decode_base64("plaintext", text)?;
                    if bytes.is_empty() || bytes.len() > MAX_WRAP_PLAINTEXT {
                        return Err(ServiceError::BadRequest(format!(
                            "plaintext must be 1 to {MAX_WRAP_PLAINTEXT} bytes"
                        )));
                    }
                    (bytes, false)
                }
                None => {
                    let dek = SecretKey::generate().map_err(|_| ServiceError::Random)?;
                    (Zeroizing::new(dek.expose_secret().to_vec()), true)
                }
            };
            let key_ref = RootKeyRef {
                key_id: key.id,
                version: key.version,
            };
            let sealed = self.keys.call(|ks| {
                ks.seal(
                    key_ref,
                    EnvelopeKind::AppWrap,
                    &app_wrap_context(key.id.as_bytes(), &aad),
                    &plaintext,
                )
            })?;
            Ok(WrapResponse {
                ciphertext: B64.encode(sealed),
                key_version: key.version,
                plaintext: generated.then(|| B64.encode(plaintext.as_slice())),
            })
        })();
        let target = self.reference_crn(reference);
        self.audited(who, Action::SecretsWrap, &target, result, None)
    }

    fn unwrap_material(
        &self,
        key: &KeyRecord,
        request: &UnwrapRequest,
    ) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        let sealed = Self::decode_base64("ciphertext", &request.ciphertext)?;
        let aad = request.aad.clone().unwrap_or_default();
        Ok(self.keys.call(|ks| {
            ks.open(
                key.id,
                EnvelopeKind::AppWrap,
                &app_wrap_context(key.id.as_bytes(), &aad),
                sealed.to_vec(),
            )
        })?)
    }

    /// Unwraps app-held material; the AAD must match the wrap's.
    pub fn unwrap(
        &self,
        who: &Principal,
        reference: &str,
        request: UnwrapRequest,
    ) -> Result<UnwrapResponse, ServiceError> {
        let result: Result<UnwrapResponse, ServiceError> = (|| {
            who.require_operator()?;
            let key = self.wrap_key(reference)?;
            let plain = self.unwrap_material(&key, &request)?;
            Ok(UnwrapResponse {
                plaintext: B64.encode(plain.as_slice()),
            })
        })();
        let target = self.reference_crn(reference);
        self.audited(who, Action::SecretsUnwrap, &target, result, None)
    }

    /// Re-wraps app-held material under the key's newest version.
    pub fn rewrap(
        &self,
        who: &Principal,
        reference: &str,
        request: UnwrapRequest,
    ) -> Result<RewrapResponse, ServiceError> {
        let result: Result<RewrapResponse, ServiceError> = (|| {
            who.require_operator()?;
            let key = self.wrap_key(reference)?;
            let plain = self.unwrap_material(&key, &request)?;
            let aad = request.aad.unwrap_or_default();
            let key_ref = RootKeyRef {
                key_id: key.id,
                version: key.version,
            };
            let sealed = self.keys.call(|ks| {
                ks.seal(
                    key_ref,
                    EnvelopeKind::AppWrap,
                    &app_wrap_context(key.id.as_bytes(), &aad),
                    &plain,
                )
            })?;
            Ok(RewrapResponse {
                ciphertext: B64.encode(sealed),
                key_version: key.version,
            })
        })();
        let target = self.reference_crn(reference);
        self.audited(who, Action::SecretsRewrap, &target, result, None)
    }
}

/// Looks a key up by name, id or CRN, or fails with `not_found`.
pub(super) fn find_key<'a>(
    catalog: &'a super::Catalog,
    reference: &str,
) -> Result<&'a KeyRecord, ServiceError> {
    catalog
        .find_key(reference)
        .ok_or_else(|| ServiceError::NotFound(format!("no key named {reference:?}")))
}

/// Fails with `key_suspended` or `key_destroyed` unless the key is active.
pub(super) fn require_usable(key: &KeyRecord) -> Result<(), ServiceError> {
    match key.state {
        KeyState::Active => Ok(()),
        KeyState::Suspended => Err(ServiceError::KeySuspended(format!(
            "key {:?} is suspended",
            key.name
        ))),
        KeyState::Destroyed => Err(ServiceError::KeyDestroyed(format!(
            "key {:?} was destroyed",
            key.name
        ))),
        KeyState::PendingDestruction => Err(ServiceError::KeyPendingDestruction(format!(
            "key {:?} is scheduled for destruction",
            key.name
        ))),
    }
}
