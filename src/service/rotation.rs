//! Key rotation (DESIGN.md rule 6): a new version wraps from now on, and a resumable job
//! rewraps every DEK under the key to it. Records are never re-encrypted (their DEKs do not
//! change), so the cost is flat in data size.
//!
//! Crash safety: the new version is durable in the keystore before the catalog names it; the
//! catalog commit that bumps the key's version also records the job. Each batch of rewrapped
//! DEKs is one atomic commit, and both versions unwrap until the job ends, so every record
//! stays readable at any kill point. At start, unfinished jobs resume (`resume_rotations`).

use super::catalog::CatalogChange;
use crate::service::Action;
use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use uuid::Uuid;

use super::keys::require_usable;
use super::{now_rfc3339, Principal, ServiceError, Vault};
pub use crate::api::RotationStatus;
use crate::crypto::bindings::dek_context;
use crate::crypto::EnvelopeKind;
use crate::keystore::RootKeyRef;
use crate::store::{DekRecord, RotationJob};

/// DEKs rewrapped per atomic commit.
const BATCH: usize = 64;

/// In-memory progress of running and recently finished jobs, by key.
#[derive(Default)]
pub(super) struct RotationProgress(Mutex<HashMap<Uuid, RotationStatus>>);

impl RotationProgress {
    fn update(&self, key: Uuid, f: impl FnOnce(&mut RotationStatus)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(status) = map.get_mut(&key) {
            f(status);
        }
    }

    fn set(&self, key: Uuid, status: RotationStatus) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, status);
    }

    /// Every rotation this node ran or runs, by key (for the metrics page).
    pub(super) fn snapshot(&self) -> Vec<(Uuid, RotationStatus)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, s)| (*k, s.clone())).collect()
    }

    fn get(&self, key: Uuid) -> Option<RotationStatus> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}

impl Vault {
    /// Adds a version to the key and records the rewrap job; returns the job to run.
    pub async fn start_rotation(
        &self,
        who: &Principal,
        reference: &str,
        retire_old: bool,
    ) -> Result<RotationJob, ServiceError> {
        let result: Result<RotationJob, ServiceError> = async {
            who.require_operator()?;
            let _admin = self.admin().await?;
            let key = self.lifecycle_key(reference)?;
            require_usable(&key)?;
            if self.read_catalog().jobs.contains_key(&key.id) {
                return Err(ServiceError::Conflict(format!(
                    "a rotation of key {:?} is already running",
                    key.name
                )));
            }
            let key_id = key.id;
            // The job is this node's to run until it ends (or this node dies: then another node
            // claims it, see `claim_orphan_rotations`).
            if !self.claim_rotation(key_id)? {
                return Err(ServiceError::Conflict(format!(
                    "a rotation of key {:?} is already running",
                    key.name
                )));
            }
            let started = self.start_claimed_rotation(key, retire_old).await;
            if started.is_err() {
                self.release_rotation(key_id);
            }
            started
        }
        .await;
        if result.is_err() {
            let target = self.reference_crn(reference);
            return self.audited(who, Action::SecretsRotate, &target, result, None);
        }
        result
    }

    /// Adds the version and records the job; the caller holds the admin lock and the claim.
    pub(super) async fn start_claimed_rotation(
        &self,
        mut key: crate::store::KeyRecord,
        retire_old: bool,
    ) -> Result<RotationJob, ServiceError> {
        let version = key.version + 1;
        let keystore = std::sync::Arc::clone(self.keys.backend());
        let key_ref = RootKeyRef {
            key_id: key.id,
            version,
        };
        tokio::task::spawn_blocking(move || keystore.rotate(key_ref))
            .await
            .map_err(|e| ServiceError::TaskFailed(e.to_string()))??;
        key.version = version;
        // Rotation policies count their period from here.
        key.last_rotated_at = Some(super::token_lifecycle::unix_now());
        let mut id = [0u8; 6];
        crate::crypto::os_random(&mut id).map_err(|_| ServiceError::Random)?;
        let job = RotationJob {
            id: format!(
                "job_{}",
                id.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            key_id: key.id,
            target_version: version,
            retire_old,
            started_at: now_rfc3339(),
        };
        self.commit(vec![
            CatalogChange::PutKey(key),
            CatalogChange::PutJob(job.clone()),
        ])
        .await?;
        // Progress of this job from the moment it exists, so a caller that does not wait sees
        // it (and not the previous job's final status).
        self.jobs.rotations().set(
            job.key_id,
            RotationStatus::pending(job.id.clone(), job.target_version),
        );
        Ok(job)
    }

    /// Runs (or resumes) a rotation job to completion and logs `kms.secrets.rotate`.
    pub async fn run_rotation(
        &self,
        who: &Principal,
        job: RotationJob,
    ) -> Result<RotationStatus, ServiceError> {
        // The caller claimed the job (start_rotation or claim_orphan_rotations); the claim
        // ends with this run, whatever its outcome.
        let result: Result<RotationStatus, ServiceError> = async {
            let job = job.clone();
            let pending = |catalog: &super::Catalog| -> Vec<DekRecord> {
                catalog
                    .deks
                    .values()
                    .flat_map(|g| g.values())
                    .filter(|d| d.key_id == job.key_id && d.key_version < job.target_version)
                    .cloned()
                    .collect()
            };
            let total = pending(&self.read_catalog()).len() as u64;
            self.jobs.rotations().set(
                job.key_id,
                RotationStatus {
                    job: job.id.clone(),
                    state: "running".into(),
                    target_version: job.target_version,
                    total,
                    done: 0,
                    retired_versions: Vec::new(),
                    backups_rewrapped: 0,
                    error: None,
                },
            );
            loop {
                let _admin = self.admin().await?;
                if !self.read_catalog().jobs.contains_key(&job.key_id) {
                    // The key was shredded meanwhile: nothing left to rewrap.
                    return Err(ServiceError::KeyDestroyed(
                        "the key was destroyed during rotation".into(),
                    ));
                }
                let batch: Vec<DekRecord> = pending(&self.read_catalog())
                    .into_iter()
                    .take(BATCH)
                    .collect();
                if batch.is_empty() {
                    break;
                }
                let mut rewrapped = Vec::with_capacity(batch.len());
                for dek in batch {
                    rewrapped.push(self.rewrap_dek(dek, job.target_version)?);
                }
                let n = rewrapped.len() as u64;
                self.commit(rewrapped.into_iter().map(CatalogChange::PutDek).collect())
                    .await?;
                self.jobs.rotations().update(job.key_id, |s| s.done += n);
            }
            let _admin = self.admin().await?;
            let backups = tokio::task::block_in_place(|| {
                self.rewrap_backups(job.key_id, job.target_version)
            })?;
            let backups_rewrapped = backups.len() as u64;
            if !backups.is_empty() {
                self.commit(backups.into_iter().map(CatalogChange::PutBackup).collect())
                    .await?;
            }
            let mut retired = Vec::new();
            if job.retire_old {
                retired = self
                    .keys
                    .call(|ks| ks.versions(job.key_id))?
                    .into_iter()
                    .filter(|v| *v < job.target_version)
                    .collect();
                if !retired.is_empty() {
                    self.keys
                        .call(|ks| ks.destroy(job.key_id, Some(&retired)))?;
                }
            }
            self.commit(vec![CatalogChange::DeleteJob(job.key_id)])
                .await?;
            self.jobs.rotations().update(job.key_id, |s| {
                s.state = "completed".into();
                s.retired_versions = retired.clone();
                s.backups_rewrapped = backups_rewrapped;
            });
            self.jobs
                .rotations()
                .get(job.key_id)
                .ok_or(ServiceError::Internal(
                    "a finished rotation has no progress entry",
                ))
        }
        .await;
        self.release_rotation(job.key_id);
        if let Err(err) = &result {
            // Visible in `GET …/rotation`; the job stays in the catalog and resumes at start.
            let reason = format!("{} ({})", err, err.code());
            self.jobs.rotations().update(job.key_id, |s| {
                s.state = "failed".into();
                s.error = Some(reason);
            });
        }
        let target = self.crn("key", &job.key_id);
        let details = result
            .as_ref()
            .ok()
            .and_then(|s| serde_json::to_value(s).ok());
        self.audited(who, Action::SecretsRotate, &target, result, details)
    }

    /// Unwraps a DEK with its current version and wraps it with `version` (same DEK bytes).
    fn rewrap_dek(&self, dek: DekRecord, version: u32) -> Result<DekRecord, ServiceError> {
        let context = dek_context(
            dek.database_id.as_bytes(),
            dek.generation,
            dek.key_id.as_bytes(),
        );
        let wrapped = B64
            .decode(&dek.wrapped)
            .map_err(|_| ServiceError::Integrity)?;
        let plain = self
            .keys
            .call(|ks| ks.open(dek.key_id, EnvelopeKind::WrappedDek, &context, wrapped))
            .map_err(ServiceError::from_stored_open)?;
        let rewrapped = self.keys.call(|ks| {
            ks.seal(
                RootKeyRef {
                    key_id: dek.key_id,
                    version,
                },
                EnvelopeKind::WrappedDek,
                &context,
                &plain,
            )
        })?;
        Ok(DekRecord {
            key_version: version,
            wrapped: B64.encode(rewrapped),
            ..dek
        })
    }

    /// Progress of the key's current or last rotation.
    pub fn rotation_status(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<RotationStatus, ServiceError> {
        who.require_operator()?;
        let key = self.lifecycle_key(reference)?;
        if let Some(status) = self.jobs.rotations().get(key.id) {
            return Ok(status);
        }
        match self.read_catalog().jobs.get(&key.id) {
            Some(job) => Ok(RotationStatus::pending(job.id.clone(), job.target_version)),
            None => Err(ServiceError::NotFound(format!(
                "key {:?} has no rotation",
                key.name
            ))),
        }
    }
}
