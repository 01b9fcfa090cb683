//! The daemon's background work, started and stopped through one handle ([`Jobs`]):
//!
//! | loop | every | what it does |
//! |---|---|---|
//! | rotation resume | at start | runs the unfinished rotation jobs this node can claim |
//! | cluster follower | 2 s, shared store only | follows other nodes' catalog changes, then claims the rotations whose node died |
//! | purge sweep | `purge_interval` | purges soft-deleted databases past their period, and their expired backups |
//! | policy scheduler | when due, at most 60 s | runs scheduled key destructions and rotations due by policy; a policy change runs a pass at once |
//! | token last use | 10 s | persists the noted last uses of tokens |
//! | import-token sweep | 1 s | destroys expired import tokens' private keys even when nobody asks for them |
//! | backup schedule | `[backup] schedule` | backs up every active database and applies retention |
//!
//! At shutdown ([`Jobs::shutdown`]) every task is dropped at its next await, as the end of the
//! runtime dropped them before there was a handle: each step they take is durable before the
//! next (a rotation resumes from its recorded progress at the next start, a purge or shred
//! finishes at its next pass), so stopping between two awaits is what a crash would do at
//! worst. `shutdown` returns once every task has ended and runs before the final flush, so
//! the flush covers everything they wrote.
//!
//! Threads and tasks that belong to one part of the service stay with it and stop when it is
//! dropped: the store's group-commit flusher (`service::durability`) and the activity log's
//! fsync and head threads (`service::audit_sync`, `service::audit_head`).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::AppState;
use crate::config::Config;

/// How often a node looks for rotation jobs nobody runs (shared store only).
const ORPHAN_SWEEP: Duration = Duration::from_secs(2);
/// How often noted token last uses are written to the store.
const TOKEN_USE_PERSIST: Duration = Duration::from_secs(10);
/// How often expired import tokens are looked for (each access also destroys them).
const IMPORT_TOKEN_SWEEP: Duration = Duration::from_secs(1);
/// Longest sleep of the policy scheduler: policies set or changed elsewhere (another node,
/// the instance default) are noticed within this time.
const POLICY_PASS: Duration = Duration::from_secs(60);

/// The handle on every background task: loops and one-off runs alike.
pub struct Jobs {
    stop: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Mutex::new(JoinSet::new()),
        }
    }
}

impl Jobs {
    /// Starts every loop the configuration asks for. The first policy pass runs at once, so
    /// a rotation that fell due while the daemon was down runs at start.
    pub fn start(state: &Arc<AppState>, config: &Config) {
        let jobs = &state.jobs;
        resume_rotations(state);
        if state.vault.store_is_shared() {
            jobs.every(state, ORPHAN_SWEEP, |state| async move {
                if let Err(err) = state.vault.refresh_catalog().await {
                    tracing::warn!(error = %err, "cannot refresh the catalog; retrying");
                    return;
                }
                resume_rotations(&state);
            });
        }
        jobs.every(state, TOKEN_USE_PERSIST, |state| async move {
            if let Err(err) = state.vault.persist_token_use().await {
                tracing::warn!(error = %err, "cannot persist token last uses; retrying");
            }
        });
        jobs.every(state, IMPORT_TOKEN_SWEEP, |state| async move {
            let destroyed = state.vault.import_tokens().sweep();
            if destroyed > 0 {
                tracing::info!(tokens = destroyed, "destroyed expired import tokens");
            }
        });
        jobs.policy_scheduler(state);
        jobs.every(state, state.vault.purge_interval(), |state| async move {
            match state.vault.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(databases = n, "purged expired soft-deleted databases"),
                Err(err) => tracing::error!(error = %err, "purge failed; retrying"),
            }
        });
        if let Some(every) = config.backup.schedule {
            jobs.backup_schedule(state, every, config.backup.retention);
        }
    }

    /// Runs one policy pass now, off the schedule (after a policy change).
    pub fn kick(state: &Arc<AppState>) {
        let pass = Arc::clone(state);
        state.jobs.spawn(async move {
            policy_pass(&pass).await;
        });
    }

    /// Stops every loop and waits until every task has ended.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let mut tasks = std::mem::take(&mut *self.lock());
        while tasks.join_next().await.is_some() {}
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        // The set is only pushed to and taken whole: a poisoned lock is still consistent.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `work`, dropped at its next await once shutdown begins.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut stop = self.stop.subscribe();
        if *stop.borrow() {
            return;
        }
        let mut tasks = self.lock();
        tasks.spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        });
        // Reap finished tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }

    /// Spawns a loop that runs `pass` at once and then every `period`.
    fn every<F, Fut>(&self, state: &Arc<AppState>, period: Duration, pass: F)
    where
        F: Fn(Arc<AppState>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let state = Arc::clone(state);
        self.spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                pass(Arc::clone(&state)).await;
            }
        });
    }

    /// Sleeps until the next scheduled destruction or rotation is due (at most
    /// [`POLICY_PASS`]), then runs what is due.
    fn policy_scheduler(&self, state: &Arc<AppState>) {
        let state = Arc::clone(state);
        self.spawn(async move {
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

    /// Scheduled backups: every `every`, back up every active database and apply retention.
    /// A failed run is in the activity log and retried after a short pause, never skipped.
    fn backup_schedule(&self, state: &Arc<AppState>, every: Duration, retention: usize) {
        let state = Arc::clone(state);
        self.spawn(async move {
            let retry = (every / 10).clamp(Duration::from_secs(1), Duration::from_secs(300));
            loop {
                tokio::time::sleep(every).await;
                while state.vault.run_scheduled_backups(retention).await > 0 {
                    tokio::time::sleep(retry).await;
                }
            }
        });
    }
}

/// Runs every unfinished rotation job this node can claim.
fn resume_rotations(state: &Arc<AppState>) {
    for job in state.vault.claim_orphan_rotations() {
        let run = Arc::clone(state);
        state.jobs.spawn(async move {
            tracing::info!(job = %job.id, key = %job.key_id, "resuming rotation");
            let system = crate::service::Principal::system();
            if let Err(err) = run.vault.run_rotation(&system, job).await {
                tracing::error!(error = %err, "resumed rotation failed");
            }
        });
    }
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

#[cfg(test)]
mod tests {
    use super::Jobs;
    use std::sync::Arc;

    /// A task that never ends on its own is stopped by `shutdown`, which returns only once
    /// it is gone; nothing starts after that.
    #[tokio::test]
    async fn shutdown_stops_every_task_and_waits_for_it() {
        let jobs = Jobs::default();
        let held = Arc::new(());
        for _ in 0..3 {
            let held = Arc::clone(&held);
            jobs.spawn(async move {
                let _held = held;
                std::future::pending::<()>().await;
            });
        }
        assert_eq!(Arc::strong_count(&held), 4);
        jobs.shutdown().await;
        assert_eq!(Arc::strong_count(&held), 1, "a task outlived the shutdown");
        let late = Arc::clone(&held);
        jobs.spawn(async move {
            let _late = late;
        });
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "a task started after the shutdown"
        );
    }
}
