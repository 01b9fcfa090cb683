//! Service hooks of the Vault-transit-compatible front end (`server::compat::transit`).
//!
//! A transit key is an ordinary root key: the same record, versions, states and lifecycle. This
//! module adds what transit needs on top: per-key transit settings (`min_decryption_version`,
//! `deletion_allowed`, version creation times), and AES-256-GCM of caller plaintext directly
//! under a chosen root-key version, through the keystore's seal/open with the dedicated
//! envelope kind [`EnvelopeKind::Transit`] and the [`transit_context`] binding.
//!
//! The wire form drops the envelope header: `vault:v<N>:` + base64(nonce ‖ ciphertext ‖ tag)
//! carries exactly the envelope minus its 9 header bytes, and the header (magic, format
//! version, label = N) is fully determined by the kind and N, so it is rebuilt before opening.
//! It is still authenticated (it is part of the AAD), so a ciphertext relabelled with another
//! version fails to open.

use super::catalog::CatalogChange;

use uuid::Uuid;
use zeroize::Zeroizing;

use super::audit_sync::data_plane;
use super::keys::{find_key, require_usable};
use super::{Principal, ServiceError, Vault};
use crate::api::CreateKeyRequest;
use crate::crypto::aead::{NONCE_LEN, TAG_LEN};
use crate::crypto::bindings::transit_context;
use crate::crypto::envelope::{header, HEADER_LEN};
use crate::crypto::EnvelopeKind;
use crate::keystore::RootKeyRef;
use crate::store::{KeyOrigin, KeyRecord, KeyState};

pub use super::catalog::TransitSettings;

/// A root key as transit shows it.
#[derive(Debug, Clone)]
pub struct TransitKey {
    /// Name.
    pub name: String,
    /// CRN.
    pub crn: String,
    /// Newest version (the one that encrypts).
    pub latest_version: u32,
    /// Oldest version that decrypts (at least 1).
    pub min_decryption_version: u32,
    /// Whether transit may delete it.
    pub deletion_allowed: bool,
    /// Whether the material was imported.
    pub imported: bool,
    /// Live versions at or above `min_decryption_version`, with their unix creation time.
    pub versions: Vec<(u32, i64)>,
}

/// One plaintext to encrypt.
pub struct SealItem {
    /// Plaintext (secret).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Caller AAD (`associated_data`).
    pub associated_data: Vec<u8>,
    /// Version to encrypt with; `None` or 0 = latest.
    pub key_version: Option<u32>,
}

/// One ciphertext to decrypt: the parsed `vault:v<N>:<base64>`.
pub struct OpenItem {
    /// N.
    pub version: u32,
    /// nonce ‖ ciphertext ‖ tag.
    pub body: Vec<u8>,
    /// Caller AAD (`associated_data`).
    pub associated_data: Vec<u8>,
}

/// A transit ciphertext before formatting.
pub struct TransitSealed {
    /// Root key version (N).
    pub version: u32,
    /// nonce ‖ ciphertext ‖ tag.
    pub body: Vec<u8>,
}

/// Per-item outcomes of a batch call.
pub type ItemResults<T> = Vec<Result<T, ServiceError>>;

/// What a crypto call needs of its key, copied out of the catalog under one read lock: the
/// lock is not held across keystore calls (a remote backend may wait), and no record or
/// settings map is cloned per request.
#[derive(Clone, Copy)]
struct TransitUse {
    id: Uuid,
    /// Latest version.
    version: u32,
    /// As stored (0 = unset).
    min_decryption_version: u32,
}

fn unix_time(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest(message.into())
}

impl Vault {
    fn transit_settings(&self, id: &Uuid) -> TransitSettings {
        self.read_catalog()
            .transit
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    fn transit_view(
        &self,
        key: &KeyRecord,
        settings: &TransitSettings,
    ) -> Result<TransitKey, ServiceError> {
        let min = settings.min_decryption_version.max(1);
        let created = unix_time(&key.created_at);
        let versions = self
            .keystore
            .versions(key.id)?
            .into_iter()
            .filter(|v| *v >= min && *v <= key.version)
            .map(|v| (v, *settings.version_times.get(&v).unwrap_or(&created)))
            .collect();
        Ok(TransitKey {
            name: key.name.clone(),
            crn: self.crn("key", &key.id),
            latest_version: key.version,
            min_decryption_version: min,
            deletion_allowed: settings.deletion_allowed,
            imported: key.origin == KeyOrigin::Imported,
            versions,
        })
    }

    /// A customer key by name (transit never reaches provider-managed keys).
    fn transit_record(&self, name: &str) -> Result<KeyRecord, ServiceError> {
        let catalog = self.read_catalog();
        let key = find_key(&catalog, name)?;
        if key.origin == KeyOrigin::Provider {
            return Err(ServiceError::Forbidden(
                "provider-managed keys are used only by their own database".into(),
            ));
        }
        Ok(key.clone())
    }

    fn transit_target(&self, name: &str) -> String {
        self.reference_crn(name)
    }

    /// `GET transit/keys/<name>`.
    pub fn transit_key(&self, who: &Principal, name: &str) -> Result<TransitKey, ServiceError> {
        let result = who.require_operator().and_then(|_| {
            let key = self.transit_record(name)?;
            self.transit_view(&key, &self.transit_settings(&key.id))
        });
        self.audited(
            who,
            "kms.transit.read",
            &self.transit_target(name),
            result,
            None,
        )
    }

    /// `POST transit/keys/<name>`: creates the root key, or answers the existing one (transit
    /// creation is idempotent). A destroyed key's name stays taken.
    pub async fn transit_create(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<TransitKey, ServiceError> {
        who.require_operator()?;
        if let Ok(key) = self.transit_record(name) {
            let result = if key.state == KeyState::Destroyed {
                Err(ServiceError::Conflict(format!(
                    "key {name:?} was destroyed; its name cannot be reused"
                )))
            } else {
                self.transit_view(&key, &self.transit_settings(&key.id))
            };
            let details = serde_json::json!({ "already_existed": true });
            let target = self.crn("key", &key.id);
            return self.audited(who, "kms.transit.create", &target, result, Some(details));
        }
        let request = CreateKeyRequest {
            name: name.to_string(),
            payload: None,
            description: Some("created through the transit API".into()),
        };
        self.create_key(who, request).await?; // logged as kms.secrets.create
        let key = self.transit_record(name)?;
        self.transit_view(&key, &TransitSettings::default())
    }

    /// `POST transit/keys/<name>/config`.
    pub async fn transit_configure(
        &self,
        who: &Principal,
        name: &str,
        min_decryption_version: Option<u32>,
        deletion_allowed: Option<bool>,
    ) -> Result<TransitKey, ServiceError> {
        let result = self
            .transit_configure_inner(who, name, min_decryption_version, deletion_allowed)
            .await;
        let details = serde_json::json!({
            "min_decryption_version": min_decryption_version,
            "deletion_allowed": deletion_allowed,
        });
        let target = self.transit_target(name);
        self.audited(who, "kms.transit.config", &target, result, Some(details))
    }

    async fn transit_configure_inner(
        &self,
        who: &Principal,
        name: &str,
        min_decryption_version: Option<u32>,
        deletion_allowed: Option<bool>,
    ) -> Result<TransitKey, ServiceError> {
        who.require_operator()?;
        let _admin = self.admin().await?;
        let key = self.transit_record(name)?;
        if key.state == KeyState::Destroyed {
            return Err(ServiceError::KeyDestroyed(format!(
                "key {name:?} was destroyed"
            )));
        }
        let mut settings = self.transit_settings(&key.id);
        if let Some(min) = min_decryption_version {
            if min > key.version {
                return Err(bad(
                    "cannot set min decryption version to be larger than the latest version",
                ));
            }
            settings.min_decryption_version = min.max(1);
        }
        if let Some(allowed) = deletion_allowed {
            settings.deletion_allowed = allowed;
        }
        self.commit(vec![CatalogChange::PutTransit(key.id, settings.clone())])
            .await?;
        self.transit_view(&key, &settings)
    }

    /// `POST transit/keys/<name>/rotate`: an envault rotation (new version, DEKs under the key
    /// rewrapped, old versions kept), waited for.
    pub async fn transit_rotate(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<TransitKey, ServiceError> {
        let job = self.start_rotation(who, name, false).await?;
        let version = job.target_version;
        self.run_rotation(who, job).await?; // logged as kms.secrets.rotate
        let _admin = self.admin().await?;
        let key = self.transit_record(name)?;
        let mut settings = self.transit_settings(&key.id);
        settings
            .version_times
            .insert(version, time::OffsetDateTime::now_utc().unix_timestamp());
        self.commit(vec![CatalogChange::PutTransit(key.id, settings.clone())])
            .await?;
        self.transit_view(&key, &settings)
    }

    /// `DELETE transit/keys/<name>`: refused unless `deletion_allowed`; then an envault key
    /// deletion (material destroyed: a cryptoshred). A key that still protects databases or
    /// backups is refused: that needs `envault key delete --force`.
    pub async fn transit_delete(&self, who: &Principal, name: &str) -> Result<(), ServiceError> {
        let allowed = who.require_operator().and_then(|_| {
            let key = self.transit_record(name)?;
            if self.transit_settings(&key.id).deletion_allowed {
                Ok(())
            } else {
                Err(bad(format!(
                    "deletion is not allowed for key {name:?}: set deletion_allowed=true in its config first"
                )))
            }
        });
        if allowed.is_err() {
            return self.audited(
                who,
                "kms.secrets.delete",
                &self.transit_target(name),
                allowed,
                None,
            );
        }
        self.delete_key(who, name, false).await.map(|_| ())
    }

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
        let mut sealed = self.keystore_call(|keystore| {
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
            || sealed[4] != self.keystore.envelope_version()
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
        sealed[4] = self.keystore.envelope_version();
        sealed.extend_from_slice(&item.body);
        Ok(self.keystore_call(|keystore| {
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
        action: &str,
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
        action: &str,
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
        self.transit_audited(who, data_plane::TRANSIT_DECRYPT, &target, result)
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
        self.transit_audited(who, data_plane::TRANSIT_REWRAP, &target, result)
    }
}
