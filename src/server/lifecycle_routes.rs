//! Routes of the key and database lifecycle, authorizations and the activity log.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use super::AppState;
use crate::api::{
    AuditEvents, AuthorizationList, CreateTokenRequest, GrantRequest, RotateRequest,
    RotateResponse, TokenList,
};
use crate::service::Principal;

type State = axum::extract::State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// Lifecycle routes, merged into the main router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/keys/{key}/rotate", post(rotate))
        .route("/v1/keys/{key}/rotation", get(rotation_status))
        .route("/v1/keys/{key}/disable", post(disable))
        .route("/v1/keys/{key}/enable", post(enable))
        .route("/v1/authorizations", post(grant).get(list_authorizations))
        .route("/v1/authorizations/{id}", delete(revoke))
        .route("/v1/databases/{db}/restore", post(restore_database))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(audit_verify))
}

/// `?dry_run=true&force=true&wait=false`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    wait: Option<bool>,
    /// Key deletion only: schedule the shred after this waiting period ("7d").
    #[serde(default)]
    after: Option<String>,
}

async fn rotate(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<ActionQuery>,
    OptionalJson(request): OptionalJson<RotateRequest>,
) -> ApiResult<Response> {
    if query.dry_run {
        return Ok(Json(s.vault.preview(&who, "rotate", &key)?).into_response());
    }
    let job = s
        .vault
        .start_rotation(&who, &key, request.retire_old)
        .await?;
    let version = job.target_version;
    if request.wait.or(query.wait).unwrap_or(true) {
        let status = s.vault.run_rotation(&who, job).await?;
        return Ok(Json(RotateResponse {
            version,
            job: status,
        })
        .into_response());
    }
    let state = Arc::clone(&s.0);
    let runner = who.clone();
    tokio::spawn(async move {
        if let Err(err) = state.vault.run_rotation(&runner, job).await {
            tracing::error!(error = %err, "rotation job failed; it resumes at next start");
        }
    });
    let status = s.vault.rotation_status(&who, &key)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RotateResponse {
            version,
            job: status,
        }),
    )
        .into_response())
}

async fn rotation_status(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.rotation_status(&who, &key)?))
}

async fn disable(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<ActionQuery>,
) -> ApiResult<Response> {
    if query.dry_run {
        return Ok(Json(s.vault.preview(&who, "disable", &key)?).into_response());
    }
    Ok(Json(s.vault.set_key_enabled(&who, &key, false).await?).into_response())
}

async fn enable(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.set_key_enabled(&who, &key, true).await?))
}

/// `DELETE /v1/keys/{key}`: 200 with the shred receipt (or the preview with `dry_run`).
pub async fn delete_key(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<ActionQuery>,
) -> ApiResult<Response> {
    let query = super::kms_routes::DeleteQuery {
        force: query.force,
        dry_run: query.dry_run,
        after: query.after,
    };
    super::kms_routes::delete_key(&s, &who, &key, query).await
}

async fn grant(
    s: State,
    who: Principal,
    ApiJson(request): ApiJson<GrantRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(s.vault.grant(&who, request).await?),
    ))
}

async fn list_authorizations(s: State, who: Principal) -> ApiResult<impl IntoResponse> {
    Ok(Json(AuthorizationList {
        authorizations: s.vault.list_authorizations(&who)?,
    }))
}

async fn revoke(s: State, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    s.vault.revoke(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/databases/{db}`: soft delete.
pub async fn delete_database(
    s: State,
    who: Principal,
    ApiPath(db): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.delete_database(&who, &db).await?))
}

async fn restore_database(
    s: State,
    who: Principal,
    ApiPath(db): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.restore_database(&who, &db).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    since: Option<String>,
}

async fn audit(
    s: State,
    who: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    who.require_operator()?;
    let events = s
        .vault
        .audit_log()
        .query(query.action.as_deref(), query.since.as_deref())
        .map_err(|e| {
            crate::service::ServiceError::BadRequest(format!("cannot read the activity log: {e}"))
        })?;
    Ok(Json(AuditEvents { events }))
}

async fn audit_verify(s: State, who: Principal) -> ApiResult<impl IntoResponse> {
    who.require_operator()?;
    let report = s.vault.audit_log().verify().map_err(|e| {
        crate::service::ServiceError::BadRequest(format!("cannot read the activity log: {e}"))
    })?;
    Ok(Json(report))
}

async fn create_token(
    s: State,
    who: Principal,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(s.vault.create_token(&who, request).await?),
    ))
}

async fn list_tokens(s: State, who: Principal) -> ApiResult<impl IntoResponse> {
    Ok(Json(TokenList {
        tokens: s.vault.list_tokens(&who)?,
    }))
}

async fn revoke_token(
    s: State,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.vault.revoke_token(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
