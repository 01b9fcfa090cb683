//! Readiness and the figures of the metrics page: whether the store, the root-key backend
//! and the activity log can be used right now, keys by state, rotation progress.

use std::time::Duration;

use uuid::Uuid;

use super::{ComponentHealth, RotationStatus, Vault};
use crate::store::KeyState;

/// A probe that takes longer than this counts as failed (a remote store or backend that
/// does not answer is as unusable as one that refuses).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A record id no database has (database ids are random v4 UUIDs, never all zero).
const PROBE_DATABASE: [u8; 16] = [0; 16];

fn component(name: &str, result: Result<(), String>) -> ComponentHealth {
    ComponentHealth {
        component: name.to_string(),
        ok: result.is_ok(),
        reason: result.err(),
    }
}

impl Vault {
    /// Probes every component: one store read, one backend call (listing key ids), and the
    /// activity log's file. Changes nothing. The store and backend probes run concurrently,
    /// off the request's worker thread (the backend call is blocking), and each counts as
    /// failed past [`PROBE_TIMEOUT`], so a hung server delays the answer by at most that.
    pub async fn readiness(&self) -> Vec<ComponentHealth> {
        let read = self
            .store
            .record_get_async(PROBE_DATABASE, b"envault-readiness-probe".to_vec());
        let store = async {
            match tokio::time::timeout(PROBE_TIMEOUT, read).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            }
        };
        let keystore = std::sync::Arc::clone(self.keys.backend());
        let listed = tokio::task::spawn_blocking(move || keystore.key_ids().map(|_| ()));
        let backend = async {
            match tokio::time::timeout(PROBE_TIMEOUT, listed).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(err))) => Err(err.to_string()),
                Ok(Err(join)) => Err(format!("the probe did not finish: {join}")),
                // The blocking call goes on until the backend's own timeout; its answer is
                // dropped.
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            }
        };
        let (store, backend) = tokio::join!(store, backend);
        let audit = self.activity.log().probe().map_err(|err| err.to_string());
        vec![
            component("store", store),
            component("key_backend", backend),
            component("activity_log", audit),
        ]
    }

    /// Root keys by state, provider-managed ones included; every state appears.
    pub fn key_state_counts(&self) -> Vec<(&'static str, u64)> {
        let catalog = self.read_catalog();
        [KeyState::Active, KeyState::Suspended, KeyState::Destroyed]
            .into_iter()
            .map(|state| {
                let n = catalog.keys.values().filter(|k| k.state == state).count();
                (state.as_str(), n as u64)
            })
            .collect()
    }

    /// Rotations this node ran or runs, and jobs in the catalog nobody runs here yet.
    pub fn rotation_snapshot(&self) -> Vec<(Uuid, RotationStatus)> {
        let mut known = self.jobs.rotations().snapshot();
        let catalog = self.read_catalog();
        for (key, job) in &catalog.jobs {
            if !known.iter().any(|(k, _)| k == key) {
                known.push((
                    *key,
                    RotationStatus::pending(job.id.clone(), job.target_version),
                ));
            }
        }
        known
    }
}
