//! The Kubernetes KMS v2 plugin: gRPC `v2.KeyManagementService` (Status, Encrypt, Decrypt)
//! on its own Unix socket (`[kms_v2] socket`), encrypting with one root key (`[kms_v2] key`).
//!
//! `v2.rs` is generated from `proto/k8s.io/kms/apis/v2/api.proto` (the official file, with its
//! license header) and checked in, so a build needs no `protoc`. To regenerate after changing
//! the proto: a one-off binary depending on `tonic-prost-build = "0.14"` that runs
//! `tonic_prost_build::configure().build_client(false).out_dir(OUT)
//!  .compile_protos(&["proto/k8s.io/kms/apis/v2/api.proto"], &["proto"])` (protoc on PATH).
//!
//! Access is the socket's file mode (`socket_mode`), as for every KMS plugin: the API server
//! has no token to present. Calls are logged with the `kms-v2` initiator and the peer uid.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod v2;

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use v2::key_management_service_server::{KeyManagementService, KeyManagementServiceServer};
use v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};

use crate::config::Config;
use crate::server::{AppState, ServerError};
use crate::service::{Principal, ServiceError};
use crate::store::TokenRole;

/// The API server's limit on `key_id` and on ciphertexts.
pub const MAX_KEY_ID: usize = 1024;
/// The API server's limit on ciphertexts.
pub const MAX_CIPHERTEXT: usize = 1024;
/// Annotations (keys + values) must stay below this.
pub const MAX_ANNOTATIONS: usize = 32 * 1024;
/// Largest plaintext that still fits a ciphertext of [`MAX_CIPHERTEXT`] (envelope overhead).
pub const MAX_PLAINTEXT: usize = MAX_CIPHERTEXT - crate::crypto::envelope::OVERHEAD;

/// The gRPC service over the vault.
pub struct Plugin {
    state: Arc<AppState>,
    key: String,
}

fn principal<T>(request: &Request<T>) -> Principal {
    let peer_uid = request
        .extensions()
        .get::<crate::server::PeerCred>()
        .map(|cred| cred.uid);
    Principal {
        token_id: "kms-v2".into(),
        role: TokenRole::Operator,
        databases: Vec::new(),
        peer_uid,
    }
}

/// gRPC status of a service error; the message says what is wrong with the key.
fn status_of(err: ServiceError) -> Status {
    match err {
        ServiceError::BadRequest(m) => Status::invalid_argument(m),
        ServiceError::NotFound(m) => Status::not_found(m),
        ServiceError::KeySuspended(m) => {
            Status::failed_precondition(format!("{m} (disabled in envault)"))
        }
        ServiceError::KeyDestroyed(m) => {
            Status::failed_precondition(format!("{m} (cryptoshredded in envault)"))
        }
        ServiceError::Forbidden(m) => Status::permission_denied(m),
        other => {
            tracing::error!(error = ?other, "kms v2 request failed");
            Status::internal(other.to_string())
        }
    }
}

/// An annotation key must be a fully qualified domain name (RFC 1123 labels, at least two).
fn is_fqdn(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Checks annotations against the API server's rules.
pub fn check_annotations(annotations: &HashMap<String, Vec<u8>>) -> Result<(), Status> {
    let mut total = 0;
    for (name, value) in annotations {
        if !is_fqdn(name) {
            return Err(Status::invalid_argument(format!(
                "annotation key {name:?} is not a fully qualified domain name"
            )));
        }
        total += name.len() + value.len();
    }
    if total >= MAX_ANNOTATIONS {
        return Err(Status::invalid_argument(format!(
            "annotations total {total} bytes; they must stay below {MAX_ANNOTATIONS}"
        )));
    }
    Ok(())
}

impl Plugin {
    /// Other nodes' catalog changes first, as for every socket API request.
    async fn refresh(&self) -> Result<(), Status> {
        self.state.vault.refresh_catalog().await.map_err(status_of)
    }
}

#[tonic::async_trait]
impl KeyManagementService for Plugin {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.refresh().await?;
        let (key_id, check) = self.state.vault.kms_v2_status(&self.key);
        let healthz = match (&key_id, check) {
            (Some(id), Ok(())) if id.len() <= MAX_KEY_ID => "ok".to_string(),
            (Some(id), Ok(())) => format!("key_id is {} bytes, over {MAX_KEY_ID}", id.len()),
            (_, Err(err)) => format!("envault key {:?}: {err}", self.key),
            (None, Ok(())) => format!("envault key {:?} not found", self.key),
        };
        Ok(Response::new(StatusResponse {
            version: "v2".into(),
            healthz,
            key_id: key_id.unwrap_or_default(),
        }))
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        self.refresh().await?;
        let who = principal(&request);
        let plaintext = zeroize::Zeroizing::new(request.into_inner().plaintext);
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(Status::invalid_argument(format!(
                "plaintext must be 1 to {MAX_PLAINTEXT} bytes (ciphertexts are at most {MAX_CIPHERTEXT})"
            )));
        }
        // On the blocking pool: the call ends with the activity log's fsync.
        let (state, key) = (Arc::clone(&self.state), self.key.clone());
        let (ciphertext, key_id) =
            tokio::task::spawn_blocking(move || state.vault.kms_v2_encrypt(&who, &key, &plaintext))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(status_of)?;
        Ok(Response::new(EncryptResponse {
            ciphertext,
            key_id,
            annotations: HashMap::new(),
        }))
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        self.refresh().await?;
        let who = principal(&request);
        let request = request.into_inner();
        if request.ciphertext.is_empty() || request.ciphertext.len() > MAX_CIPHERTEXT {
            return Err(Status::invalid_argument(format!(
                "ciphertext must be 1 to {MAX_CIPHERTEXT} bytes"
            )));
        }
        if request.key_id.is_empty() || request.key_id.len() > MAX_KEY_ID {
            return Err(Status::invalid_argument(format!(
                "key_id must be 1 to {MAX_KEY_ID} bytes"
            )));
        }
        check_annotations(&request.annotations)?;
        let (state, key) = (Arc::clone(&self.state), self.key.clone());
        let plaintext = tokio::task::spawn_blocking(move || {
            state
                .vault
                .kms_v2_decrypt(&who, &key, request.ciphertext, &request.key_id)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status_of)?;
        Ok(Response::new(DecryptResponse {
            plaintext: plaintext.to_vec(),
        }))
    }
}

/// Serves the plugin on `[kms_v2] socket` through the shared listener layer (the main
/// socket's checks on bind, connection permits, peer credentials, idle shedding, and graceful
/// shutdown: calls in flight finish before the daemon exits), one HTTP/2 connection per client.
pub async fn listen(
    config: &Config,
    state: Arc<AppState>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let path = config.kms_v2.socket.clone();
    if config.kms_v2.key.trim().is_empty() {
        return Err(ServerError::Socket {
            path: path.display().to_string(),
            source: std::io::Error::other("[kms_v2] socket is set but [kms_v2] key is empty"),
        });
    }
    let listener = crate::server::bind(&path, config.socket_mode).await?;
    let plugin = Plugin {
        state,
        key: config.kms_v2.key.clone(),
    };
    tracing::info!(socket = %path.display(), key = %plugin.key, "KMS v2 plugin listening");
    let app =
        tonic::service::Routes::new(KeyManagementServiceServer::new(plugin)).into_axum_router();
    let max_connections = config.limits.max_connections;
    Ok(tokio::spawn(async move {
        let endpoint = path.display().to_string();
        let served =
            crate::server::accept_until_signal(listener, &endpoint, max_connections, |accepted| {
                crate::server::serve_http2(accepted, app.clone())
            })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "the KMS v2 plugin listener failed");
        }
        let _ = std::fs::remove_file(&path);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_rules() {
        assert!(is_fqdn("version.encryption.example.com"));
        assert!(!is_fqdn("nodots"));
        assert!(!is_fqdn("bad_char.example.com"));
        assert!(!is_fqdn("-lead.example.com"));
        let mut big = HashMap::new();
        big.insert("a.example.com".to_string(), vec![0u8; MAX_ANNOTATIONS]);
        assert!(check_annotations(&big).is_err());
        let mut ok = HashMap::new();
        ok.insert("a.example.com".to_string(), vec![1u8; 10]);
        assert!(check_annotations(&ok).is_ok());
    }
}
