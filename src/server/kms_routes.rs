//! Routes of key policies and scheduled deletion.

use std::sync::Arc;

use axum::http::StatusCode;
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

/// The options of `DELETE /v1/keys/{key}`.
pub(super) struct DeleteQuery {
    pub force: bool,
    pub dry_run: bool,
    /// Schedule the shred after this waiting period ("7d") instead of now.
    pub after: Option<String>,
}

/// `DELETE /v1/keys/{key}[?force=true][&after=7d][&dry_run=true]`. Under dual authorization,
/// the first operator's delete only records its approval (202); a different operator's delete
/// carries out what it asks for (now or scheduled).
pub(super) async fn delete_key(
    s: &State,
    who: &Principal,
    key: &str,
    query: DeleteQuery,
) -> Result<Response, ApiError> {
    if query.dry_run {
        let impact = match &query.after {
            Some(after) => s.vault.preview_scheduled_deletion(who, key, after)?,
            None => s.vault.preview(who, "delete", key)?,
        };
        return Ok(Json(impact).into_response());
    }
    if let Some(approval) = s.vault.authorize_key_deletion(who, key).await? {
        return Ok((StatusCode::ACCEPTED, Json(approval)).into_response());
    }
    let answer = match &query.after {
        Some(after) => {
            let info = s
                .vault
                .schedule_key_deletion(who, key, query.force, after)
                .await?;
            super::Jobs::kick(&s.0);
            Json(info).into_response()
        }
        None => Json(s.vault.delete_key(who, key, query.force).await?).into_response(),
    };
    // The approval is used up by the deletion it allowed.
    s.vault.clear_delete_approval(key).await?;
    Ok(answer)
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
    super::Jobs::kick(&s.0);
    Ok(Json(policy))
}
