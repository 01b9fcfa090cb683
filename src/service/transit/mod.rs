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
//!
//! Parts: `crypto` (encrypt, decrypt, rewrap); here, the key view and its management
//! (create, configure, rotate, delete).

mod crypto;

use super::catalog::CatalogChange;
use crate::service::Action;

use uuid::Uuid;
use zeroize::Zeroizing;

use super::keys::find_key;
use super::{Principal, ServiceError, Vault};
use crate::api::CreateKeyRequest;
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
            .keys
            .backend()
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
            Action::TransitRead,
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
            return self.audited(who, Action::TransitCreate, &target, result, Some(details));
        }
        let request = CreateKeyRequest {
            name: name.to_string(),
            payload: None,
            description: Some("created through the transit API".into()),
            ..Default::default()
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
        let result: Result<TransitKey, ServiceError> = async {
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
        .await;
        let details = serde_json::json!({
            "min_decryption_version": min_decryption_version,
            "deletion_allowed": deletion_allowed,
        });
        let target = self.transit_target(name);
        self.audited(who, Action::TransitConfig, &target, result, Some(details))
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
                Action::SecretsDelete,
                &self.transit_target(name),
                allowed,
                None,
            );
        }
        self.delete_key(who, name, false).await.map(|_| ())
    }
}
