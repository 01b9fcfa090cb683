//! Routes for operators and their tools, none of which needs a token: readiness
//! (`/v1/health`), liveness (`/v1/health/live`) and Prometheus metrics (`/metrics`, also on
//! the optional loopback address `[metrics] listen`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{AppState, ServerError};
use crate::api::Health;
use crate::config::Config;

type State = axum::extract::State<Arc<AppState>>;

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/health/live", get(live))
        .route("/metrics", get(metrics))
}

/// Readiness: 200 when the store, the root-key backend and the activity log all answer their
/// probes, else 503 with `status` "unavailable" and the failing component named.
async fn health(s: State) -> Response {
    let protection = crate::hardening::status();
    let components = s.vault.readiness().await;
    let ready = components.iter().all(|c| c.ok);
    for failing in components.iter().filter(|c| !c.ok) {
        tracing::warn!(
            component = %failing.component,
            reason = failing.reason.as_deref().unwrap_or(""),
            "not ready"
        );
    }
    let body = Health {
        status: if ready { "ok" } else { "unavailable" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        memory_locked: Some(protection.memory_locked),
        dumpable: Some(protection.dumpable),
        dek_cache: Some(s.vault.dek_cache_stats()),
        audit: Some(s.vault.audit_log().sync_stats()),
        value_log: s.vault.value_log_stats(),
        components: Some(components),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Liveness: the process answers requests. Never probes anything, so a dead backend does
/// not get a healthy daemon restarted.
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn metrics(s: State) -> Response {
    let components = s.vault.readiness().await;
    let text = crate::telemetry::metrics::render(&s.vault, &components);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

/// Parses `[metrics] listen`: loopback only, since the port has no TLS and no peer check.
pub fn metrics_addr(text: &str) -> Result<SocketAddr, ServerError> {
    let invalid = |why: &str| ServerError::Socket {
        path: text.to_string(),
        source: std::io::Error::other(format!("[metrics] listen: {why}")),
    };
    let addr: SocketAddr = text
        .trim()
        .parse()
        .map_err(|_| invalid("expected an address such as 127.0.0.1:9464"))?;
    if !addr.ip().is_loopback() {
        return Err(invalid("must be a loopback address (127.0.0.1 or [::1])"));
    }
    Ok(addr)
}

/// Serves `GET /metrics` (only) on `[metrics] listen` when set.
pub async fn listen_metrics(config: &Config, state: Arc<AppState>) -> Result<(), ServerError> {
    if config.metrics.listen.trim().is_empty() {
        return Ok(());
    }
    let addr = metrics_addr(&config.metrics.listen)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Socket {
            path: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, "metrics listening on TCP");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "metrics listener stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::metrics_addr;

    #[test]
    fn only_loopback_addresses_serve_metrics() {
        assert!(metrics_addr("127.0.0.1:9464").is_ok());
        assert!(metrics_addr("[::1]:9464").is_ok());
        assert!(metrics_addr("0.0.0.0:9464").is_err());
        assert!(metrics_addr("10.0.0.1:9464").is_err());
    }
}
