//! The daemon's own key-management work: persisting token last uses.

use std::sync::Arc;
use std::time::Duration;

use super::AppState;

/// How often noted token last uses are written to the store.
const TOKEN_USE_PERSIST: Duration = Duration::from_secs(10);

/// Starts the background tasks.
pub(super) fn spawn(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TOKEN_USE_PERSIST);
        loop {
            tick.tick().await;
            if let Err(err) = state.vault.persist_token_use().await {
                tracing::warn!(error = %err, "cannot persist token last uses; retrying");
            }
        }
    });
}
