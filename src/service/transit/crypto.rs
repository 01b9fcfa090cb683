//! The data plane of transit: encrypt, decrypt and rewrap of item batches, each item sealed or
//! opened under a chosen root-key version and written to the activity log.

use crate::service::Action;
use zeroize::Zeroizing;

use super::{bad, ItemResults, OpenItem, SealItem, TransitSealed, TransitUse};
use crate::crypto::aead::{NONCE_LEN, TAG_LEN};
use crate::crypto::bindings::transit_context;
use crate::crypto::envelope::{header, HEADER_LEN};
use crate::crypto::EnvelopeKind;
use crate::keystore::RootKeyRef;
use crate::service::keys::{find_key, require_usable};
use crate::service::{Principal, ServiceError, Vault};
use crate::store::KeyOrigin;

impl Vault {
    /// A key usable for transit crypto, and the activity-log target of the call: the key's
    /// CRN when the name resolves (as [`Self::transit_target`] would give, without a second
    /// lookup), else whatever `transit_target` makes of the name. Checks as
    /// [`Self::transit_record`] then `require_usable`.
    fn transit_usable(&self, name: &str) -> (String, Result<TransitUse, ServiceError>) {
        let catalog = self.read_catalog();
        let key = match find_key(&catalog, name) {
            Ok(key) => key,
            Err(err) => {
                drop(catalog);
                return (self.transit_target(name), Err(err));
            }
        };
        let target = self.crn("key", &key.id);
        if key.origin == KeyOrigin::Provider {
            let err = ServiceError::Forbidden(
                "provider-managed keys are used only by their own database".into(),
            );
            return (target, Err(err));
        }
        let usable = require_usable(key).map(|_| TransitUse {
            id: key.id,
            version: key.version,
            min_decryption_version: catalog
                .transit
                .get(&key.id)
                .map_or(0, |s| s.min_decryption_version),
        });
        (target, usable)
    }

    fn transit_seal_one(
        &self,
        key: &TransitUse,
        item: &SealItem,
    ) -> Result<TransitSealed, ServiceError> {
        let version = match item.key_version {
            None | Some(0) => key.version,
            Some(v) if v > key.version => {
                return Err(bad(format!(
                    "requested version {v} for encryption is higher than the latest key version {}",
                    key.version
                )))
            }
            Some(v) => v,
        };
        let mut sealed = self.keys.call(|keystore| {
            keystore.seal(
                RootKeyRef {
                    key_id: key.id,
                    version,
                },
                EnvelopeKind::Transit,
                &transit_context(key.id.as_bytes(), &item.associated_data),
                &item.plaintext,
            )
        })?;
        // The header left off below is rebuilt on decrypt from N and the backend's envelope
        // version; a backend writing anything else could not decrypt its own ciphertexts.
        let expected = header(EnvelopeKind::Transit, version);
        if sealed.len() < HEADER_LEN
            || sealed[..4] != expected[..4]
            || sealed[4] != self.keys.backend().envelope_version()
            || sealed[5..HEADER_LEN] != expected[5..]
        {
            return Err(ServiceError::Internal(
                "the key backend sealed with an unexpected envelope header",
            ));
        }
        // Dropping the header in place keeps the allocation (no second buffer and copy).
        sealed.drain(..HEADER_LEN);
        Ok(TransitSealed {
            version,
            body: sealed,
        })
    }

    fn transit_open_one(
        &self,
        key: &TransitUse,
        item: &OpenItem,
    ) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        let v = item.version;
        if v == 0 {
            return Err(bad("invalid ciphertext: version 0 does not exist"));
        }
        if v > key.version {
            return Err(bad(format!(
                "invalid ciphertext: version {v} is too new (latest is {})",
                key.version
            )));
        }
        if v < key.min_decryption_version {
            return Err(bad(format!(
                "invalid ciphertext: version {v} is disallowed by policy (min_decryption_version is {})",
                key.min_decryption_version
            )));
        }
        if item.body.len() < NONCE_LEN + TAG_LEN {
            return Err(bad(format!(
                "invalid ciphertext length: {} bytes, shorter than nonce and tag ({})",
                item.body.len(),
                NONCE_LEN + TAG_LEN
            )));
        }
        let mut sealed = Vec::with_capacity(HEADER_LEN + item.body.len());
        sealed.extend_from_slice(&header(EnvelopeKind::Transit, v));
        sealed[4] = self.keys.backend().envelope_version();
        sealed.extend_from_slice(&item.body);
        Ok(self.keys.call(|keystore| {
            keystore.open(
                key.id,
                EnvelopeKind::Transit,
                &transit_context(key.id.as_bytes(), &item.associated_data),
                sealed,
            )
        })?)
    }

    /// Logs a batch call: one event per call, with the item counts. A call whose every item
    /// failed (a single bad ciphertext, say) is logged as a failure with the first item's code.
    fn transit_audited<T>(
        &self,
        who: &Principal,
        action: Action,
        target: &str,
        result: Result<ItemResults<T>, ServiceError>,
    ) -> Result<ItemResults<T>, ServiceError> {
        let items = match result {
            Ok(items) => items,
            Err(err) => return self.audited(who, action, target, Err(err), None),
        };
        let failed: Vec<&ServiceError> = items.iter().filter_map(|r| r.as_ref().err()).collect();
        let details = Some(serde_json::json!({ "items": items.len(), "failed": failed.len() }));
        let (outcome, reason) = match failed.first() {
            Some(first) if failed.len() == items.len() => {
                let outcome = if first.is_denial() {
                    "denied"
                } else {
                    "failure"
                };
                (outcome, Some(first.code().to_string()))
            }
            _ => ("success", None),
        };
        self.audit_append(who, action, target, outcome, reason, details)
            .map_err(|e| ServiceError::AuditLog(format!("activity log: {e}")))?;
        Ok(items)
    }

    /// `encrypt/<name>` (and `datakey`, with `action` naming which): seals each item.
    pub fn transit_encrypt(
        &self,
        who: &Principal,
        action: Action,
        name: &str,
        items: &[SealItem],
    ) -> Result<ItemResults<TransitSealed>, ServiceError> {
        let (target, key) = self.transit_usable(name);
        let result = who.require_operator().and_then(|_| {
            let key = key?;
            Ok(items
                .iter()
                .map(|item| self.transit_seal_one(&key, item))
                .collect())
        });
        self.transit_audited(who, action, &target, result)
    }

    /// `decrypt/<name>`: opens each item.
    pub fn transit_decrypt(
        &self,
        who: &Principal,
        name: &str,
        items: &[OpenItem],
    ) -> Result<ItemResults<Zeroizing<Vec<u8>>>, ServiceError> {
        let (target, key) = self.transit_usable(name);
        let result = who.require_operator().and_then(|_| {
            let key = key?;
            Ok(items
                .iter()
                .map(|item| self.transit_open_one(&key, item))
                .collect())
        });
        self.transit_audited(who, Action::TransitDecrypt, &target, result)
    }

    /// `rewrap/<name>`: opens each item and seals it again under `key_version` (or the latest).
    pub fn transit_rewrap(
        &self,
        who: &Principal,
        name: &str,
        items: &[(OpenItem, Option<u32>)],
    ) -> Result<ItemResults<TransitSealed>, ServiceError> {
        let (target, key) = self.transit_usable(name);
        let result = who.require_operator().and_then(|_| {
            let key = key?;
            Ok(items
                .iter()
                .map(|(item, key_version)| {
                    let plaintext = self.transit_open_one(&key, item)?;
                    let again = SealItem {
                        plaintext,
                        associated_data: item.associated_data.clone(),
                        key_version: *key_version,
                    };
                    self.transit_seal_one(&key, &again)
                })
                .collect())
        });
        self.transit_audited(who, Action::TransitRewrap, &target, result)
    }
}
