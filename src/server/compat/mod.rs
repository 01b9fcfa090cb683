//! Drop-in front ends: protocols other software already speaks, served over the
//! same service layer as envault's own API.
//!
//! - [`transit`]: the Vault/OpenBao transit secrets engine's HTTP API, under `/v1/transit/` on
//!   the envault socket and optionally on a loopback TCP port (`[compat] transit_listen`).
//! - [`kms_v2`]: the Kubernetes KMS v2 plugin gRPC service on its own Unix socket
//!   (`[kms_v2] socket`).

pub mod kms_v2;
pub mod transit;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::Config;
use crate::server::{AppState, ServerError};

/// Starts the optional listeners the configuration turns on; each returned task ends once
/// the daemon has been signalled to stop and that listener's connections have finished.
pub async fn start(
    config: &Config,
    state: Arc<AppState>,
) -> Result<Vec<JoinHandle<()>>, ServerError> {
    let mut tasks = Vec::new();
    if !config.compat.transit_listen.trim().is_empty() {
        tasks.push(transit::listen(config, Arc::clone(&state)).await?);
    }
    if !config.kms_v2.socket.as_os_str().is_empty() {
        tasks.push(kms_v2::listen(config, Arc::clone(&state)).await?);
    }
    Ok(tasks)
}
