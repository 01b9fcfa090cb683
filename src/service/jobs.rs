//! The jobs part's own state: what the background work (run by the server's `Jobs` handle)
//! keeps between passes. Rotation progress is what `GET /v1/keys/{key}/rotation` shows while a
//! job runs; token last uses are noted per request and persisted every few seconds; the
//! instance-wide key policies decide what the policy scheduler runs.

use super::policies::PolicyDefaults;
use super::rotation::RotationProgress;
use super::token_lifecycle::TokenUse;

/// Rotation progress, unpersisted token last uses, instance-wide key policies.
#[derive(Default)]
pub(crate) struct JobState {
    rotations: RotationProgress,
    token_use: TokenUse,
    policy_defaults: PolicyDefaults,
}

impl JobState {
    /// With the instance-wide policies of the configuration (`[keys] rotate_every`,
    /// `[lifecycle] dual_auth_delete`).
    pub(crate) fn set_policy_defaults(&mut self, defaults: PolicyDefaults) {
        self.policy_defaults = defaults;
    }

    /// The progress of the rotations this node runs.
    pub(crate) fn rotations(&self) -> &RotationProgress {
        &self.rotations
    }

    /// Token last uses not yet persisted.
    pub(crate) fn token_use(&self) -> &TokenUse {
        &self.token_use
    }

    /// Instance-wide key policies.
    pub(crate) fn policy_defaults(&self) -> &PolicyDefaults {
        &self.policy_defaults
    }
}
