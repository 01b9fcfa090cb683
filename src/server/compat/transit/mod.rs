//! The Vault-transit-compatible API: `/v1/transit/...` routes over the service layer, served
//! on the envault socket (merged into its router) and, when `[compat] transit_listen` is set,
//! on a loopback TCP port for clients that cannot use a Unix socket.
//!
//! Keys are envault root keys, tokens are envault tokens (operator only, like the other key
//! routes), and every call is in the activity log. The ciphertext format is explained in
//! `service::transit`.

mod crypto;
mod keys;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::server::{AppState, ServerError};

/// The transit routes (POST and PUT on every write: the `bao`/`vault` CLI sends PUT).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/transit/keys", get(keys::list))
        .route(
            "/v1/transit/keys/{name}",
            post(keys::create)
                .put(keys::create)
                .get(keys::read)
                .delete(keys::delete),
        )
        .route(
            "/v1/transit/keys/{name}/config",
            post(keys::config).put(keys::config),
        )
        .route(
            "/v1/transit/keys/{name}/rotate",
            post(keys::rotate).put(keys::rotate),
        )
        .route(
            "/v1/transit/encrypt/{name}",
            post(crypto::encrypt).put(crypto::encrypt),
        )
        .route(
            "/v1/transit/decrypt/{name}",
            post(crypto::decrypt).put(crypto::decrypt),
        )
        .route(
            "/v1/transit/rewrap/{name}",
            post(crypto::rewrap).put(crypto::rewrap),
        )
        .route(
            "/v1/transit/datakey/{kind}/{name}",
            post(crypto::datakey).put(crypto::datakey),
        )
}

/// Parses `transit_listen`; only loopback addresses are accepted, since the TCP port has no
/// TLS and no peer credentials (tokens are the only check there).
pub fn listen_addr(text: &str) -> Result<SocketAddr, ServerError> {
    let invalid = |why: &str| ServerError::Socket {
        path: text.to_string(),
        source: std::io::Error::other(format!("[compat] transit_listen: {why}")),
    };
    let addr: SocketAddr = text
        .trim()
        .parse()
        .map_err(|_| invalid("expected an address such as 127.0.0.1:8200"))?;
    if !addr.ip().is_loopback() {
        return Err(invalid("must be a loopback address (127.0.0.1 or [::1])"));
    }
    Ok(addr)
}

/// Binds the TCP listener and serves the transit routes (only those) on it through the shared
/// accept loop (connection permits, slow headers cut off, graceful shutdown) until the daemon
/// is signalled to stop; the returned task ends when the last connection has finished.
pub async fn listen(
    config: &Config,
    state: Arc<AppState>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let addr = listen_addr(&config.compat.transit_listen)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Socket {
            path: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, "transit API listening on TCP");
    let app = router().with_state(state);
    let max_connections = config.limits.max_connections;
    let header_timeout = config.limits.request_timeout;
    Ok(tokio::spawn(async move {
        let served = crate::server::accept_until_signal(
            listener,
            &addr.to_string(),
            max_connections,
            move |accepted| crate::server::serve_http(accepted, app.clone(), header_timeout),
        )
        .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "the transit TCP listener failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::listen_addr;

    #[test]
    fn only_loopback_addresses_listen() {
        assert!(listen_addr("127.0.0.1:8200").is_ok());
        assert!(listen_addr("[::1]:8200").is_ok());
        assert!(listen_addr("0.0.0.0:8200").is_err());
        assert!(listen_addr("192.168.1.2:8200").is_err());
        assert!(listen_addr("localhost").is_err());
    }
}
