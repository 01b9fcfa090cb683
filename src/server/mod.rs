//! The daemon: a Unix-socket listener serving HTTP/1.1 (hyper) with the axum router.
//!
//! Shaped like mini-redis's server: a listener that takes a connection permit from a
//! semaphore before `accept`, one task per connection, and a shutdown that stops accepting,
//! lets in-flight requests finish, flushes and removes the socket file.

mod error;
mod extract;
mod listener;
mod routes;

use std::sync::Arc;

pub use extract::PeerCred;

use crate::config::{Config, ConfigError};
use crate::service::{ServiceError, Vault};

/// Shared by every handler.
pub struct AppState {
    /// The service.
    pub vault: Vault,
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data dir, keystore or store could not be opened.
    #[error("cannot open the vault: {0}")]
    Open(#[from] ServiceError),
    /// Another daemon is serving this socket.
    #[error("another envault daemon is already listening on {0}")]
    SocketInUse(String),
    /// The socket could not be created or configured.
    #[error("socket {path}: {source}")]
    Socket {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let vault = Vault::open(&config)?;
    vault.reconcile_keystore()?;
    if let Some(token_id) = vault
        .ensure_operator_token_file(&config.operator_token_path())
        .await?
    {
        tracing::info!(
            token_id,
            path = %config.operator_token_path().display(),
            "wrote a new operator token"
        );
    }
    let state = Arc::new(AppState { vault });
    let app = routes::router(Arc::clone(&state));
    listener::serve(&config, app, state).await
}
