//! Routes of secure import: `POST /v1/import_token` and `GET /v1/import_token/{id}`. The sweep
//! that destroys expired tokens' private keys runs among the background jobs (`super::jobs`).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::error::ApiError;
use super::extract::{ApiPath, OptionalJson};
use super::AppState;
use crate::api::CreateImportTokenRequest;
use crate::service::Principal;

type State = axum::extract::State<Arc<AppState>>;

/// Import-token routes, merged into the main router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/import_token", post(create_import_token))
        .route("/v1/import_token/{id}", get(show_import_token))
}

/// The body is optional: no body means the configured defaults.
async fn create_import_token(
    s: State,
    who: Principal,
    OptionalJson(request): OptionalJson<CreateImportTokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let token = s.vault.create_import_token(&who, request).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

async fn show_import_token(
    s: State,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.vault.show_import_token(&who, &id)?))
}
