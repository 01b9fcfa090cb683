//! `POST /v1/databases/{db}/records:batch`: many record operations in one request.
//! The service runs them (`service::record_batch`); this file only converts the wire shapes.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::error::{bad_request, status_of, ApiError};
use super::extract::{declared_length, read_limited, ApiPath, MAX_JSON_BODY};
use super::AppState;
use crate::api::{
    ErrorDetail, RecordBatchOp, RecordBatchRequest, RecordBatchResponse, RecordBatchResult,
    SecretString,
};
use crate::service::{BatchOp, BatchOutcome, Principal};

type State = axum::extract::State<Arc<AppState>>;

/// The batch route, merged into the main router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/databases/{db}/records:batch", post(record_batch))
}

async fn record_batch(
    s: State,
    who: Principal,
    ApiPath(db): ApiPath<String>,
    BatchBody(request): BatchBody,
) -> Result<Json<RecordBatchResponse>, ApiError> {
    let ops = request
        .ops
        .into_iter()
        .enumerate()
        .map(|(index, op)| decode_op(index, op))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes = s.vault.record_batch(&who, &db, ops).await?;
    Ok(Json(RecordBatchResponse {
        results: outcomes.into_iter().map(encode_outcome).collect(),
    }))
}

fn decode_op(index: usize, op: RecordBatchOp) -> Result<BatchOp, ApiError> {
    Ok(match op {
        RecordBatchOp::Put { key, value } => {
            let value = B64
                .decode(value.expose_secret())
                .map_err(|e| bad_request(format!("operation {index}: value is not base64: {e}")))?;
            BatchOp::Put { key, value }
        }
        RecordBatchOp::Get { key } => BatchOp::Get { key },
        RecordBatchOp::Delete { key } => BatchOp::Delete { key },
    })
}

fn encode_outcome(outcome: BatchOutcome) -> RecordBatchResult {
    let (status, value, error) = match outcome {
        BatchOutcome::Written | BatchOutcome::Deleted => (204, None, None),
        BatchOutcome::Value(value) => (200, Some(SecretString::base64_of(&value)), None),
        BatchOutcome::Failed(err) => {
            let status = status_of(&err);
            if status.is_server_error() {
                // As for a single request: the cause goes to the log, the client gets the code.
                tracing::error!(error = ?err, "batch operation failed");
            }
            let detail = ErrorDetail {
                code: err.code().to_string(),
                message: err.to_string(),
            };
            (status.as_u16(), None, Some(detail))
        }
    };
    RecordBatchResult {
        status,
        value,
        error,
    }
}

/// A batch's JSON body. It may carry one value of `max_record_size` in base64 plus the JSON
/// around it: about 4/3 of that size, plus [`MAX_JSON_BODY`] for keys and framing.
struct BatchBody(RecordBatchRequest);

impl FromRequest<Arc<AppState>> for BatchBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let declared = declared_length(&req);
        let max_record = state.vault.limits().max_record_size;
        let limit = max_record
            .saturating_add(max_record / 3 + 4)
            .saturating_add(MAX_JSON_BODY);
        let bytes = read_limited(req.into_body(), declared, limit).await?;
        super::extract::parse_object(&bytes).map(BatchBody)
    }
}
