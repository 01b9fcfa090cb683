//! [`RootKeyBackend`] for [`TransitKeystore`]: create and import, rotate, seal and open
//! through `encrypt` / `decrypt`, retire versions and shred.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::envelope::{associated_data, header, parse_envelope, MIN_BODY};
use super::http::Verb;
use super::{TransitKeystore, TRANSIT_ENVELOPE_VERSION};
use crate::crypto::envelope::HEADER_LEN;
use crate::crypto::{CryptoError, EnvelopeKind};
use crate::keystore::{BackendInfo, KeystoreError, NewKey, RootKeyBackend, RootKeyRef};

impl RootKeyBackend for TransitKeystore {
    fn envelope_version(&self) -> u8 {
        TRANSIT_ENVELOPE_VERSION
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo {
            kind: "transit",
            location: format!("{} mount {:?}", self.http.address, self.mount),
            remote: true,
        }
    }

    fn create(&self, key_id: Uuid, material: NewKey) -> Result<(), KeystoreError> {
        if self.read_key(key_id)?.is_some() {
            return Err(KeystoreError::VersionExists(key_id, 1));
        }
        match material {
            NewKey::Generate => {
                let body = serde_json::json!({
                    "type": "aes256-gcm96",
                    "exportable": false,
                    "allow_plaintext_backup": false,
                });
                self.post_ok(&self.path("keys", key_id), &body, "create", key_id)
            }
            NewKey::Import(material) => {
                let ciphertext = self.wrap_for_import(&material)?;
                let body = serde_json::json!({
                    "ciphertext": ciphertext,
                    "type": "aes256-gcm96",
                    "hash_function": "SHA256",
                    "exportable": false,
                    "allow_plaintext_backup": false,
                    // Without it the server refuses to rotate an imported key, and envault's
                    // rotation of imported keys works on every backend.
                    "allow_rotation": true,
                });
                let path = format!("{}/import", self.path("keys", key_id));
                let body = body.to_string();
                let answer = self.http.call_with(
                    &self.http.slow_agent,
                    Verb::Post,
                    &path,
                    Some(body.as_bytes()),
                    false,
                )?;
                if (200..300).contains(&answer.status) {
                    Ok(())
                } else {
                    Err(self.refused("import", key_id, &answer))
                }
            }
        }
    }

    fn rotate(&self, key: RootKeyRef) -> Result<(), KeystoreError> {
        let Some(data) = self.read_key(key.key_id)? else {
            return Err(KeystoreError::NoSuchVersion(key.key_id, key.version - 1));
        };
        if data.latest_version == key.version {
            // Left by a rotation that crashed before its catalog commit: never used, adopt it.
            tracing::info!(key_id = %key.key_id, version = key.version, "adopting an unused transit key version");
            return Ok(());
        }
        if data.latest_version + 1 != key.version {
            return Err(KeystoreError::Backend(format!(
                "transit key {} is at version {}, cannot create version {}",
                self.name(key.key_id),
                data.latest_version,
                key.version
            )));
        }
        self.post_ok(
            &format!("{}/rotate", self.path("keys", key.key_id)),
            &serde_json::json!({}),
            "rotate",
            key.key_id,
        )?;
        match self.read_key(key.key_id)? {
            Some(data) if data.latest_version == key.version => Ok(()),
            _ => Err(KeystoreError::Backend(format!(
                "transit key {} did not reach version {} after rotate",
                self.name(key.key_id),
                key.version
            ))),
        }
    }

    fn seal(
        &self,
        key: RootKeyRef,
        kind: EnvelopeKind,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeystoreError> {
        let header = header(kind, key.version);
        let request = Zeroizing::new(
            serde_json::json!({
                "plaintext": B64.encode(plaintext),
                "associated_data": associated_data(&header, context),
                "key_version": key.version,
            })
            .to_string(),
        );
        let answer = self.http.call(
            Verb::Post,
            &self.path("encrypt", key.key_id),
            Some(request.as_bytes()),
            true,
        )?;
        match answer.status {
            200 => {}
            400 if answer.errors().contains("not found") || answer.errors().contains("version") => {
                return Err(KeystoreError::NoSuchVersion(key.key_id, key.version))
            }
            _ => return Err(self.refused("encrypt with", key.key_id, &answer)),
        }
        #[derive(Deserialize)]
        struct Encrypted {
            ciphertext: String,
        }
        let encrypted: Encrypted = answer.data("encrypt")?;
        let prefix = format!("vault:v{}:", key.version);
        let Some(body) = encrypted.ciphertext.strip_prefix(&prefix) else {
            return Err(KeystoreError::Backend(format!(
                "transit did not encrypt with version {}",
                key.version
            )));
        };
        let mut sealed = header.to_vec();
        B64.decode_vec(body, &mut sealed)
            .map_err(|_| KeystoreError::Backend("transit ciphertext is not base64".into()))?;
        if sealed.len() < HEADER_LEN + MIN_BODY {
            return Err(KeystoreError::Backend(
                "transit ciphertext is too short".into(),
            ));
        }
        Ok(sealed)
    }

    fn open(
        &self,
        key_id: Uuid,
        kind: EnvelopeKind,
        context: &[u8],
        sealed: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let (version, header, ciphertext) = parse_envelope(kind, &sealed)?;
        let request = serde_json::json!({
            "ciphertext": ciphertext,
            "associated_data": associated_data(header, context),
        })
        .to_string();
        let answer = self.http.call(
            Verb::Post,
            &self.path("decrypt", key_id),
            Some(request.as_bytes()),
            true,
        )?;
        match answer.status {
            200 => {}
            400 => {
                let errors = answer.errors();
                if errors.contains("authentication failed") || errors.contains("invalid ciphertext")
                {
                    return Err(CryptoError::Open.into());
                }
                if errors.contains("not found") || errors.contains("version") {
                    return Err(KeystoreError::NoSuchVersion(key_id, version));
                }
                return Err(self.refused("decrypt with", key_id, &answer));
            }
            _ => return Err(self.refused("decrypt with", key_id, &answer)),
        }
        // Borrowed from the zeroizing body, decoded into a zeroizing buffer: no other copy.
        #[derive(Deserialize)]
        struct Decrypted<'a> {
            #[serde(borrow)]
            data: DecryptedData<'a>,
        }
        #[derive(Deserialize)]
        struct DecryptedData<'a> {
            plaintext: &'a str,
        }
        let decrypted: Decrypted<'_> = serde_json::from_slice(&answer.body)
            .map_err(|e| KeystoreError::Backend(format!("unexpected decrypt answer: {e}")))?;
        let mut plain = Zeroizing::new(Vec::with_capacity(decrypted.data.plaintext.len()));
        B64.decode_vec(decrypted.data.plaintext, &mut plain)
            .map_err(|_| KeystoreError::Backend("decrypt answer is not base64".into()))?;
        Ok(plain)
    }

    fn destroy(&self, key_id: Uuid, versions: Option<&[u32]>) -> Result<(), KeystoreError> {
        let Some(data) = self.read_key(key_id)? else {
            return Ok(());
        };
        let Some(doomed) = versions else {
            // The shred: allow deletion, delete, and check that the key is gone.
            let config = format!("{}/config", self.path("keys", key_id));
            self.post_ok(
                &config,
                &serde_json::json!({ "deletion_allowed": true }),
                "allow deletion of",
                key_id,
            )?;
            let answer = self
                .http
                .call(Verb::Delete, &self.path("keys", key_id), None, false)?;
            if !(200..300).contains(&answer.status) && answer.status != 404 {
                return Err(self.refused("delete", key_id, &answer));
            }
            return match self.read_key(key_id)? {
                None => Ok(()),
                Some(_) => Err(KeystoreError::Backend(format!(
                    "transit key {} still exists after delete",
                    self.name(key_id)
                ))),
            };
        };
        let live: Vec<u32> = data.keys.keys().filter_map(|v| v.parse().ok()).collect();
        let Some(oldest_kept) = live.iter().copied().filter(|v| !doomed.contains(v)).min() else {
            return Err(KeystoreError::Unsupported(
                "retiring every version of a transit key is a shred; destroy the whole key".into(),
            ));
        };
        if let Some(newer) = doomed
            .iter()
            .find(|v| **v > oldest_kept && live.contains(v))
        {
            return Err(KeystoreError::Unsupported(format!(
                "transit can only retire the oldest versions of a key; version {newer} of key {key_id} stays on the server unused and the next rotation adopts it"
            )));
        }
        if !doomed.iter().any(|v| live.contains(v)) {
            return Ok(());
        }
        // Old versions stop decrypting, then their material is removed from the key policy.
        let config = format!("{}/config", self.path("keys", key_id));
        self.post_ok(
            &config,
            &serde_json::json!({
                "min_decryption_version": oldest_kept,
                "min_encryption_version": oldest_kept,
            }),
            "retire versions of",
            key_id,
        )?;
        self.post_ok(
            &format!("{}/trim", self.path("keys", key_id)),
            &serde_json::json!({ "min_available_version": oldest_kept }),
            "trim",
            key_id,
        )
    }

    fn versions(&self, key_id: Uuid) -> Result<Vec<u32>, KeystoreError> {
        let Some(data) = self.read_key(key_id)? else {
            return Ok(Vec::new());
        };
        let mut versions: Vec<u32> = data.keys.keys().filter_map(|v| v.parse().ok()).collect();
        versions.sort_unstable();
        Ok(versions)
    }

    fn key_ids(&self) -> Result<Vec<Uuid>, KeystoreError> {
        let answer = self
            .http
            .call(Verb::List, &format!("{}/keys", self.mount), None, true)?;
        #[derive(Deserialize)]
        struct Listed {
            keys: Vec<String>,
        }
        let names = match answer.status {
            200 => answer.data::<Listed>("list")?.keys,
            404 => Vec::new(),
            _ => {
                return Err(KeystoreError::Backend(format!(
                    "the transit server refused to list keys (HTTP {}): {}",
                    answer.status,
                    answer.errors()
                )))
            }
        };
        Ok(names
            .iter()
            .filter_map(|n| n.strip_prefix(&self.prefix))
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect())
    }
}
