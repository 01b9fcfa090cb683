//! The Redis-protocol front end: records through any Redis client (RESP2 and RESP3) on a Unix
//! socket, `[resp] socket` in the configuration.
//!
//! The socket gets the main socket's safety from the same code: [`crate::server::bind`] (mode,
//! stale-socket replacement, refusal of a world-writable directory) and
//! [`crate::server::accept_until_signal`] (connection permits, idle shedding, peer credentials,
//! graceful shutdown). A connection authenticates with an app token and then reads and writes
//! the records of the databases that token names, through the same service calls as the socket
//! API, so every rule (durability, key state, denials in the activity log) is the same.
//!
//! - [`codec`]: the incremental parser and the reply encoder;
//! - [`connection`]: one connection's read–execute–write loop;
//! - [`session`]: a connection's state, authentication and database selection;
//! - [`commands`]: handshake commands, and the conditional SET;
//! - [`introspection`]: COMMAND, INFO, CONFIG GET;
//! - [`keyspace`]: SCAN, DBSIZE and key counts;
//! - [`records`]: record commands, with pipelined ones run as one batch.

pub mod codec;
mod commands;
mod connection;
mod introspection;
mod keyspace;
mod records;
mod session;

use std::sync::Arc;

use crate::config::Config;
use crate::server::{AppState, ServerError};

/// Starts the RESP listener when configured; the returned task ends once the daemon has been
/// signalled to stop and every RESP connection has finished.
pub async fn start(
    config: &Config,
    state: Arc<AppState>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServerError> {
    let path = config.resp.socket.clone();
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let listener = crate::server::bind(&path, config.socket_mode).await?;
    let settings = Arc::new(connection::Settings::new(config, &state)?);
    let max_connections = config.limits.max_connections;
    tracing::info!(socket = %path.display(), "Redis protocol listening");
    Ok(Some(tokio::spawn(async move {
        let endpoint = path.display().to_string();
        let served =
            crate::server::accept_until_signal(listener, &endpoint, max_connections, |accepted| {
                connection::serve(accepted, Arc::clone(&state), Arc::clone(&settings))
            })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "the Redis protocol listener failed");
        }
        let _ = std::fs::remove_file(&path);
    })))
}
