//! The daemon's own key-management work: scheduled key destructions, rotations due by policy,
//! and persisting token last uses.

use std::sync::Arc;
use std::time::Duration;

use super::AppState;

/// How often noted token last uses are written to the store.
const TOKEN_USE_PERSIST: Duration = Duration::from_secs(10);
/// Longest sleep of the policy scheduler: policies set or changed elsewhere (another node,
/// the instance default) are noticed within this time.
const POLICY_PASS: Duration = Duration::from_secs(60);

/// Starts the background tasks. The first policy pass runs at once, so a rotation that fell
/// due while the daemon was down runs at start.
pub(super) fn spawn(state: Arc<AppState>) {
    let persist = Arc::clone(&state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TOKEN_USE_PERSIST);
        loop {
            tick.tick().await;
            if let Err(err) = persist.vault.persist_token_use().await {
                tracing::warn!(error = %err, "cannot persist token last uses; retrying");
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let next = policy_pass(&state).await;
            let now = crate::service::unix_now();
            let wait = next
                .map(|at| Duration::from_secs(at.saturating_sub(now)))
                .unwrap_or(POLICY_PASS)
                .clamp(Duration::from_secs(1), POLICY_PASS);
            tokio::time::sleep(wait).await;
        }
    });
}

/// One pass now, off the schedule (after a policy change).
pub(super) fn kick(state: Arc<AppState>) {
    tokio::spawn(async move {
        policy_pass(&state).await;
    });
}

/// Runs what is due; returns the Unix time of the next thing due.
async fn policy_pass(state: &AppState) -> Option<u64> {
    let (shredded, next_shred) = state.vault.run_due_destructions().await;
    if shredded > 0 {
        tracing::info!(keys = shredded, "shredded keys scheduled for deletion");
    }
    let (ran, next_rotation) = state.vault.run_due_rotations().await;
    if ran > 0 {
        tracing::info!(keys = ran, "rotated keys due by policy");
    }
    match (next_shred, next_rotation) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
