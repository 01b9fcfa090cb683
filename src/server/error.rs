//! Service errors to HTTP: the one place where a code gets its status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{ErrorBody, ErrorDetail};
use crate::service::ServiceError;

/// An error answered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        ApiError(err)
    }
}

/// The HTTP status of each service error.
pub fn status_of(err: &ServiceError) -> StatusCode {
    use ServiceError::*;
    match err {
        BadRequest(_) => StatusCode::BAD_REQUEST,
        Unauthenticated | TokenExpired => StatusCode::UNAUTHORIZED,
        Forbidden(_) | NotAuthorizedForKey(_) => StatusCode::FORBIDDEN,
        NotFound(_) => StatusCode::NOT_FOUND,
        Conflict(_) | DuplicatePolicy | KeyInUse(_) | DatabaseDeleted(_) => StatusCode::CONFLICT,
        TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        KeySuspended(_) | KeyPendingDestruction(_) | KeyDestroyed(_) => StatusCode::LOCKED,
        Store(crate::store::StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        Store(_) | Keystore(_) | Integrity | RecordDamaged(_) | BackupTarget(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Random | TaskFailed(_) | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        AuditLog(_) | DataDir(_) | TokenFile(_) | UnsafeDataDir(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        KeyBackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        KeyBackendRefused(_) => StatusCode::BAD_GATEWAY,
        Import(err) => import_status(err),
    }
}

/// The statuses of secure import: an unknown token is not found, an expired or used-up one
/// conflicts with its state, plaintext import is refused by policy, and every rejection after
/// the RSA decryption is one 400.
fn import_status(err: &crate::service::ImportError) -> StatusCode {
    use crate::service::ImportError::*;
    match err {
        UnknownToken(_) => StatusCode::NOT_FOUND,
        Expired(_) | UsedUp(_) => StatusCode::CONFLICT,
        PlaintextDisabled => StatusCode::FORBIDDEN,
        Rejected(_) => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status.is_server_error() {
            // Internal causes go to the log (they never carry key material); the client gets
            // the stable code and a generic sentence.
            tracing::error!(error = ?self.0, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.0.code().to_string(),
                message: self.0.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

/// A 4xx answer built directly (routing and extraction failures).
pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(ServiceError::BadRequest(message.into()))
}
