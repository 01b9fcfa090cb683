//! The front ends: the Unix-socket API (HTTP/1.1 with hyper and axum) and the drop-in
//! protocols of [`compat`] (Vault transit, Kubernetes KMS v2), all over the one `service::Vault`.
//!
//! Shaped like mini-redis's server: a listener that takes a connection permit from a
//! semaphore before `accept`, one task per connection, and a shutdown that stops accepting,
//! lets in-flight requests finish, flushes and removes the socket file.

mod backup_routes;
mod batch_routes;
pub mod compat;
mod connection;
mod error;
mod extract;
mod import_routes;
mod jobs;
mod kms_routes;
mod lifecycle_routes;
mod listener;
mod ops_routes;
pub mod resp;
mod routes;

use std::sync::Arc;

pub use error::ApiError; // the compat front ends map its errors
pub use extract::PeerCred;
pub use jobs::Jobs;
// The Redis-protocol front end ([`resp`]) shares the accept loop and its safety.
pub(crate) use listener::{accept_until_signal, bind, Accepted};

use crate::config::{Config, ConfigError};
use crate::service::{ServiceError, Vault};

/// Shared by every handler.
pub struct AppState {
    /// The service.
    pub vault: Vault,
    /// Peer uids allowed to talk to the socket; empty = any uid the socket mode lets in.
    pub allowed_uids: Vec<u32>,
    /// The background tasks, stopped at shutdown before the final flush.
    pub jobs: Jobs,
}

impl AppState {
    /// Whether a peer uid may use the daemon (`allowed_uids`; unknown peers only when empty).
    pub fn peer_allowed(&self, uid: Option<u32>) -> bool {
        self.allowed_uids.is_empty() || uid.is_some_and(|uid| self.allowed_uids.contains(&uid))
    }
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
    Open(String),
    /// Start-up work on the vault failed.
    #[error("start-up failed: {0}")]
    Startup(#[from] ServiceError),
    /// Another daemon is serving this socket.
    #[error("another envault daemon is already listening on {0}")]
    SocketInUse(String),
    /// Something other than a socket is at the socket path; it is left alone.
    #[error(
        "socket path {path} is {kind}, not a socket; refusing to replace it (move it away or \
         configure another socket path)"
    )]
    NotASocket {
        /// Socket path.
        path: String,
        /// What is there.
        kind: &'static str,
    },
    /// The socket could not be created or configured.
    #[error("socket {path}: {source}")]
    Socket {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The router over a vault, without a listener: for in-process tests and fuzzing.
pub fn app(vault: Vault) -> (axum::Router, Arc<AppState>) {
    let state = Arc::new(AppState {
        vault,
        allowed_uids: Vec::new(),
        jobs: Jobs::default(),
    });
    (routes::router(Arc::clone(&state)), state)
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), ServerError> {
    crate::hardening::private_umask();
    let protection = crate::hardening::protect_process();
    tracing::info!(
        memory_locked = protection.memory_locked,
        dumpable = protection.dumpable,
        "process hardening"
    );
    // Bind first: a second daemon must fail on the live socket with a clear message, before
    // it touches the data dir (whose store lock would give a vaguer one).
    let listener = listener::bind(&config.socket, config.socket_mode).await?;
    let vault = match Vault::open(&config) {
        Ok(vault) => vault,
        Err(err) => {
            let _ = std::fs::remove_file(&config.socket);
            return Err(ServerError::Open(describe(&err)));
        }
    };
    let keystore = vault.keystore_info();
    tracing::info!(backend = keystore.kind, location = %keystore.location, "root-key backend");
    vault.reconcile_keystore().await?;
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
    vault.clean_backup_dir()?;
    let state = Arc::new(AppState {
        vault,
        allowed_uids: config.allowed_uids.clone(),
        jobs: Jobs::default(),
    });
    Jobs::start(&state, &config);
    crate::telemetry::metrics::install();
    if let Err(err) = ops_routes::listen_metrics(&config, Arc::clone(&state)).await {
        let _ = std::fs::remove_file(&config.socket);
        return Err(err);
    }
    // The transit TCP listener and the KMS v2 socket, when configured.
    if let Err(err) = compat::start(&config, Arc::clone(&state)).await {
        let _ = std::fs::remove_file(&config.socket);
        return Err(err);
    }
    let resp = match resp::start(&config, Arc::clone(&state)).await {
        Ok(resp) => resp,
        Err(err) => {
            let _ = std::fs::remove_file(&config.socket);
            return Err(err);
        }
    };
    let app = routes::router(Arc::clone(&state));
    let served = listener::serve(&config, listener, app, state).await;
    // The Redis-protocol listener stops on the same signal; wait until its connections drain.
    if let Some(resp) = resp {
        let _ = resp.await;
    }
    served
}

/// A service error with its cause, for start-up failures shown to the operator (these never
/// carry key material: keystore and store errors name files and OS errors only).
fn describe(err: &ServiceError) -> String {
    match err {
        // The store's own errors name the file and the next step (a held lock included).
        ServiceError::Store(inner) => inner.to_string(),
        ServiceError::Keystore(inner) => inner.to_string(),
        // Their display is generic (it is what a client would be told); the operator needs
        // the detail.
        ServiceError::AuditLog(detail)
        | ServiceError::DataDir(detail)
        | ServiceError::TokenFile(detail) => detail.clone(),
        other => other.to_string(),
    }
}
