//! Routes of key policies and scheduled deletion.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use super::AppState;
use crate::service::{Principal, SetPolicyRequest};

type State = axum::extract::State<Arc<AppState>>;

/// Policy routes, merged into the main router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/keys/{key}/policy", get(show_policy).put(set_policy))
        .route("/v1/keys/{key}/cancel_deletion", post(cancel_deletion))
}

/// `DELETE /v1/keys/{key}?after=7d[&force=true][&dry_run=true]`: a scheduled deletion.
pub(super) async fn delete_later(
    s: &State,
    who: &Principal,
    key: &str,
    force: bool,
    dry_run: bool,
    after: &str,
) -> Result<Response, ApiError> {
    if dry_run {
        return Ok(Json(s.vault.preview_scheduled_deletion(who, key, after)?).into_response());
    }
    let info = s
        .vault
        .schedule_key_deletion(who, key, force, after)
        .await?;
    super::kms_tasks::kick(Arc::clone(&s.0));
    Ok(Json(info).into_response())
}

async fn cancel_deletion(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.vault.cancel_key_deletion(&who, &key).await?))
}

async fn show_policy(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.vault.key_policy(&who, &key)?))
}

async fn set_policy(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
    ApiJson(request): ApiJson<SetPolicyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let policy = s.vault.set_key_policy(&who, &key, request).await?;
    // A period shorter than the time since the last rotation makes it due now.
    super::kms_tasks::kick(Arc::clone(&s.0));
    Ok(Json(policy))
}
