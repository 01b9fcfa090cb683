//! Group commit: a write is acknowledged only after a store flush that began after it, and
//! concurrent writers share flushes instead of queueing one fsync each.
//!
//! Writers send a reply channel to one flusher task. The task takes the first request, drains
//! every request already queued, runs one flush, and answers them all; requests that arrive
//! during a flush wait for the next one (their writes may have missed this flush).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::ServiceError;
use crate::store::{Store, StoreError};

type Reply = oneshot::Sender<Result<(), String>>;

/// Handle to the flusher task.
#[derive(Clone)]
pub struct GroupFlusher {
    requests: mpsc::UnboundedSender<Reply>,
}

impl GroupFlusher {
    /// Starts the flusher task on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (requests, mut queue) = mpsc::unbounded_channel::<Reply>();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut waiters = vec![first];
                while let Ok(more) = queue.try_recv() {
                    waiters.push(more);
                }
                let store = Arc::clone(&store);
                let started = std::time::Instant::now();
                let result = tokio::task::spawn_blocking(move || store.flush())
                    .await
                    .unwrap_or_else(|join| Err(StoreError::Backend(join.to_string())))
                    .map_err(|err| err.to_string());
                // Recorded through the `metrics` facade; the daemon's recorder renders them.
                metrics::histogram!("envault_group_commit_size").record(waiters.len() as f64);
                metrics::histogram!("envault_group_commit_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                for waiter in waiters {
                    // A writer that gave up (connection closed) no longer listens; fine.
                    let _ = waiter.send(result.clone());
                }
            }
        });
        Self { requests }
    }

    /// Waits until everything written before this call is durable.
    pub async fn durable(&self) -> Result<(), ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(reply)
            .map_err(|_| ServiceError::TaskFailed("the flusher stopped".into()))?;
        answer
            .await
            .map_err(|_| ServiceError::TaskFailed("the flusher stopped".into()))?
            .map_err(|message| ServiceError::Store(StoreError::Backend(message)))
    }
}
