//! Service hooks of the Kubernetes KMS v2 plugin (`server::compat::kms_v2`): seal and open DEK seeds
//! of the API server under one root key, and the health check behind `Status`.
//!
//! The ciphertext is a whole envelope of kind [`EnvelopeKind::Transit`] (header with the root
//! key version as label, nonce, ciphertext, tag: 37 bytes + plaintext), bound by
//! [`kms_v2_context`] to the root key and to this API, so it opens neither through the transit
//! routes nor as any other kind. `key_id` is `<key CRN>/v<version>`: a rotation changes it,
//! which is how the API server learns to rewrite its data.

use crate::service::Action;
use zeroize::Zeroizing;

use super::keys::{find_key, require_usable};
use super::{Principal, ServiceError, Vault};
use crate::crypto::bindings::kms_v2_context;
use crate::crypto::{Envelope, EnvelopeKind};
use crate::keystore::RootKeyRef;
use crate::store::{KeyOrigin, KeyRecord};

impl Vault {
    fn kms_v2_record(&self, reference: &str) -> Result<KeyRecord, ServiceError> {
        let catalog = self.read_catalog();
        let key = find_key(&catalog, reference)?;
        if key.origin == KeyOrigin::Provider {
            return Err(ServiceError::Forbidden(
                "provider-managed keys are used only by their own database".into(),
            ));
        }
        Ok(key.clone())
    }

    fn kms_v2_key_id(&self, key: &KeyRecord, version: u32) -> String {
        format!("{}/v{version}", self.crn("key", &key.id))
    }

    /// The current `key_id` and whether the key really seals and opens now (a random 32-byte
    /// value round-trips under its current version). Not logged: the API server polls it.
    pub fn kms_v2_status(&self, reference: &str) -> (Option<String>, Result<(), ServiceError>) {
        let key = match self.kms_v2_record(reference) {
            Ok(key) => key,
            Err(err) => return (None, Err(err)),
        };
        let key_id = self.kms_v2_key_id(&key, key.version);
        let check = require_usable(&key).and_then(|_| {
            let mut probe = Zeroizing::new([0u8; 32]);
            crate::crypto::os_random(probe.as_mut()).map_err(|_| ServiceError::Random)?;
            let sealed = self.kms_v2_seal(&key, probe.as_ref())?;
            let opened = self.keys.backend().open(
                key.id,
                EnvelopeKind::Transit,
                &kms_v2_context(key.id.as_bytes()),
                sealed,
            )?;
            if opened.as_slice() == probe.as_ref() {
                Ok(())
            } else {
                Err(ServiceError::Internal(
                    "the key backend opened the probe to other bytes",
                ))
            }
        });
        (Some(key_id), check)
    }

    fn kms_v2_seal(&self, key: &KeyRecord, plaintext: &[u8]) -> Result<Vec<u8>, ServiceError> {
        Ok(self.keys.backend().seal(
            RootKeyRef {
                key_id: key.id,
                version: key.version,
            },
            EnvelopeKind::Transit,
            &kms_v2_context(key.id.as_bytes()),
            plaintext,
        )?)
    }

    /// `Encrypt`: seals under the key's current version; answers (ciphertext, key_id).
    pub fn kms_v2_encrypt(
        &self,
        who: &Principal,
        reference: &str,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, String), ServiceError> {
        let result = (|| {
            let key = self.kms_v2_record(reference)?;
            require_usable(&key)?;
            let sealed = self.kms_v2_seal(&key, plaintext)?;
            Ok((sealed, self.kms_v2_key_id(&key, key.version)))
        })();
        let target = self.reference_crn(reference);
        self.audited(who, Action::KmsV2Encrypt, &target, result, None)
    }

    /// `Decrypt`: opens a ciphertext of [`Vault::kms_v2_encrypt`]. `key_id` must be the one
    /// returned with it (same key, same version as the envelope's label).
    pub fn kms_v2_decrypt(
        &self,
        who: &Principal,
        reference: &str,
        ciphertext: Vec<u8>,
        key_id: &str,
    ) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        let result = (|| {
            let key = self.kms_v2_record(reference)?;
            require_usable(&key)?;
            let version = Envelope(EnvelopeKind::Transit)
                .label(&ciphertext)
                .map_err(|_| ServiceError::BadRequest("malformed ciphertext".into()))?;
            if key_id != self.kms_v2_key_id(&key, version) {
                return Err(ServiceError::BadRequest(format!(
                    "key_id {key_id:?} does not name the key and version this ciphertext was sealed with"
                )));
            }
            Ok(self.keys.backend().open(
                key.id,
                EnvelopeKind::Transit,
                &kms_v2_context(key.id.as_bytes()),
                ciphertext,
            )?)
        })();
        let target = self.reference_crn(reference);
        self.audited(who, Action::KmsV2Decrypt, &target, result, None)
    }
}
