//! Routes of backups.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use super::AppState;
use crate::api::{BackupList, RestoreBackupRequest};
use crate::service::Principal;

type State = axum::extract::State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// Backup routes, merged into the main router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/databases/{db}/backups", post(create))
        .route("/v1/backups", get(list))
        .route("/v1/backups/{id}", get(show).delete(remove))
        .route("/v1/backups/{id}/restore", post(restore))
}

async fn create(
    s: State,
    who: Principal,
    ApiPath(db): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(s.vault.create_backup(&who, &db).await?),
    ))
}

async fn list(s: State, who: Principal) -> ApiResult<impl IntoResponse> {
    Ok(Json(BackupList {
        backups: s.vault.list_backups(&who).await?,
    }))
}

async fn show(
    s: State,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.show_backup(&who, &id).await?))
}

async fn remove(s: State, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    s.vault.delete_backup(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restore(
    s: State,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<RestoreBackupRequest>,
) -> ApiResult<impl IntoResponse> {
    let db = s
        .vault
        .restore_backup(&who, &id, &request.into, request.key)
        .await?;
    Ok((StatusCode::CREATED, Json(db)))
}
