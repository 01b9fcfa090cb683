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
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

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

/// Binds the TCP listener and serves the transit routes (only those) on it until the daemon
/// exits. Connections are bounded and slow headers cut off as on the socket.
pub async fn listen(config: &Config, state: Arc<AppState>) -> Result<(), ServerError> {
    let addr = listen_addr(&config.compat.transit_listen)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Socket {
            path: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, "transit API listening on TCP");
    let app = router().with_state(state);
    let permits = Arc::new(Semaphore::new(config.limits.max_connections.max(1)));
    let header_timeout = config.limits.request_timeout;
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "transit accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        app.clone().oneshot(request)
                    },
                );
                let mut builder = hyper::server::conn::http1::Builder::new();
                // A client may send its request and then shut its write side (`nc -N`, Go's
                // `CloseWrite`, some proxies): the EOF then only means no further request, so the
                // answer must still be written.
                builder
                    .half_close(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(64 * 1024);
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(permit);
            });
        }
    });
    Ok(())
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
