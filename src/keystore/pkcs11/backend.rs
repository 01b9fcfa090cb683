//! [`RootKeyBackend`] for [`Pkcs11Keystore`]: create, rotate, seal and open with `CKM_AES_GCM`
//! inside the token, destroy, and list what the token holds.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{aad, Pkcs11Keystore, NONCE_LEN, TAG_BITS};
use crate::crypto::envelope::ENVELOPE_VERSION;
use crate::crypto::envelope::{HEADER_LEN, OVERHEAD};
use crate::crypto::{CryptoError, Envelope, EnvelopeKind};
use crate::keystore::{BackendInfo, KeystoreError, NewKey, RootKeyBackend, RootKeyRef};

impl RootKeyBackend for Pkcs11Keystore {
    fn describe(&self) -> BackendInfo {
        BackendInfo {
            kind: "pkcs11",
            location: self.location.clone(),
            remote: true,
        }
    }

    fn create(&self, key_id: Uuid, material: NewKey) -> Result<(), KeystoreError> {
        self.add_version(RootKeyRef { key_id, version: 1 }, material)
    }

    fn rotate(&self, key: RootKeyRef) -> Result<(), KeystoreError> {
        self.add_version(key, NewKey::Generate)
    }

    fn seal(
        &self,
        key: RootKeyRef,
        kind: EnvelopeKind,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeystoreError> {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(kind.magic());
        header[4] = ENVELOPE_VERSION;
        header[5..].copy_from_slice(&key.version.to_be_bytes());
        let aad = aad(&header, context);
        let plaintext = Zeroizing::new(plaintext.to_vec());
        let mut nonce = [0u8; NONCE_LEN];
        crate::crypto::os_random(&mut nonce)?;
        let body = self.run(move |w| {
            let handle = w.handle(key)?;
            let mut iv = nonce;
            let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())
                .map_err(|e| KeystoreError::Backend(format!("GCM parameters: {e}")))?;
            let result = w
                .session()?
                .encrypt(&Mechanism::AesGcm(params), handle, &plaintext);
            result.map_err(|e| w.fail("encrypt", e))
        })?;
        let mut sealed = Vec::with_capacity(OVERHEAD + body.len());
        sealed.extend_from_slice(&header);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    fn open(
        &self,
        key_id: Uuid,
        kind: EnvelopeKind,
        context: &[u8],
        sealed: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let version = Envelope(kind).label(&sealed)?;
        let key = RootKeyRef { key_id, version };
        let aad = aad(&sealed[..HEADER_LEN], context);
        self.run(move |w| {
            let handle = w.handle(key)?;
            let mut iv = [0u8; NONCE_LEN];
            iv.copy_from_slice(&sealed[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
            let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())
                .map_err(|e| KeystoreError::Backend(format!("GCM parameters: {e}")))?;
            let result = w.session()?.decrypt(
                &Mechanism::AesGcm(params),
                handle,
                &sealed[HEADER_LEN + NONCE_LEN..],
            );
            match result {
                Ok(plain) => Ok(Zeroizing::new(plain)),
                // A tag that does not verify: the same single error as a local envelope.
                Err(CkError::Pkcs11(
                    RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::FunctionFailed
                    | RvError::GeneralError,
                    _,
                )) => Err(CryptoError::Open.into()),
                Err(e) => Err(w.fail("decrypt", e)),
            }
        })
    }

    fn destroy(&self, key_id: Uuid, versions: Option<&[u32]>) -> Result<(), KeystoreError> {
        let doomed: Vec<(RootKeyRef, ObjectHandle)> = self
            .scan()?
            .into_iter()
            .filter(|(key, _)| {
                key.key_id == key_id && versions.is_none_or(|list| list.contains(&key.version))
            })
            .collect();
        self.run(move |w| {
            for (key, handle) in doomed {
                w.token.cache().remove(&key);
                let result = w.session()?.destroy_object(handle);
                result.map_err(|e| w.fail("destroy a key", e))?;
            }
            Ok(())
        })
    }

    fn versions(&self, key_id: Uuid) -> Result<Vec<u32>, KeystoreError> {
        let mut versions: Vec<u32> = self
            .scan()?
            .into_iter()
            .filter(|(key, _)| key.key_id == key_id)
            .map(|(key, _)| key.version)
            .collect();
        versions.sort_unstable();
        versions.dedup();
        Ok(versions)
    }

    fn key_ids(&self) -> Result<Vec<Uuid>, KeystoreError> {
        let mut ids: Vec<Uuid> = self
            .scan()?
            .into_iter()
            .map(|(key, _)| key.key_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}
