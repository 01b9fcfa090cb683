//! Routes of the socket API. Each handler parses, calls one service method and maps the result.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery, RecordBody};
use super::AppState;
use crate::api::{
    CreateDatabaseRequest, CreateKeyRequest, DatabaseList, DatabaseListQuery, KeyList,
    RecordListQuery, UnwrapRequest, WrapRequest,
};
use crate::service::{Principal, ServiceError};

type State = axum::extract::State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// The `/v1` router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/keys", post(create_key).get(list_keys))
        .route(
            "/v1/keys/{key}",
            get(show_key).delete(super::lifecycle_routes::delete_key),
        )
        .route("/v1/keys/{key}/wrap", post(wrap))
        .route("/v1/keys/{key}/unwrap", post(unwrap))
        .route("/v1/keys/{key}/rewrap", post(rewrap))
        .route("/v1/databases", post(create_database).get(list_databases))
        .route(
            "/v1/databases/{db}",
            get(show_database).delete(super::lifecycle_routes::delete_database),
        )
        .route("/v1/databases/{db}/records", get(list_records))
        .route(
            "/v1/databases/{db}/records/{rec}",
            put(put_record).get(get_record).delete(delete_record),
        )
        .merge(super::lifecycle_routes::router())
        .merge(super::kms_routes::router())
        .merge(super::import_routes::router())
        .merge(super::backup_routes::router())
        .merge(super::batch_routes::router())
        .merge(super::ops_routes::router())
        .merge(super::compat::transit::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::telemetry::metrics::track))
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError(ServiceError::NotFound("no such route".into()))
}

async fn method_not_allowed() -> Response {
    let body = crate::api::ErrorBody {
        error: crate::api::ErrorDetail {
            code: "method_not_allowed".into(),
            message: "this route does not accept that method".into(),
        },
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

async fn create_key(
    s: State,
    who: Principal,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> ApiResult<impl IntoResponse> {
    let key = s.vault.create_key(&who, request).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

async fn list_keys(s: State, who: Principal) -> ApiResult<Json<KeyList>> {
    Ok(Json(KeyList {
        keys: s.vault.list_keys(&who)?,
    }))
}

async fn show_key(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.show_key(&who, &key)?))
}

async fn wrap(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
    ApiJson(request): ApiJson<WrapRequest>,
) -> ApiResult<Response> {
    Ok(wrap_json(s.vault.wrap(&who, &key, request)?))
}

/// The wrap answer's JSON, written directly. Its strings are base64, which JSON never escapes,
/// yet serde_json checks every byte of them for escaping: for a 1 KiB plaintext that was
/// about 15,000 instructions of a wrap's 150,000 (callgrind). Anything that is not plain
/// base64 still goes through serde_json.
fn wrap_json(answer: crate::api::WrapResponse) -> Response {
    // Without an early exit the check vectorizes: a byte-at-a-time `all` cost as much as the
    // escaping it replaces.
    let plain = |text: &str| {
        text.bytes().fold(true, |ok, b| {
            ok & (b.is_ascii_alphanumeric() | (b == b'+') | (b == b'/') | (b == b'='))
        })
    };
    if !plain(&answer.ciphertext) || !answer.plaintext.as_deref().is_none_or(plain) {
        return Json(answer).into_response();
    }
    let mut body = String::with_capacity(
        64 + answer.ciphertext.len() + answer.plaintext.as_ref().map_or(0, String::len),
    );
    body.push_str(r#"{"ciphertext":""#);
    body.push_str(&answer.ciphertext);
    body.push_str(r#"","key_version":"#);
    body.push_str(&answer.key_version.to_string());
    if let Some(plaintext) = &answer.plaintext {
        body.push_str(r#","plaintext":""#);
        body.push_str(plaintext);
        body.push('"');
    }
    body.push('}');
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn unwrap(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
    ApiJson(request): ApiJson<UnwrapRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.unwrap(&who, &key, request)?))
}

async fn rewrap(
    s: State,
    who: Principal,
    ApiPath(key): ApiPath<String>,
    ApiJson(request): ApiJson<UnwrapRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.rewrap(&who, &key, request)?))
}

async fn create_database(
    s: State,
    who: Principal,
    ApiJson(request): ApiJson<CreateDatabaseRequest>,
) -> ApiResult<impl IntoResponse> {
    let db = s.vault.create_database(&who, request).await?;
    Ok((StatusCode::CREATED, Json(db)))
}

async fn list_databases(
    s: State,
    who: Principal,
    ApiQuery(query): ApiQuery<DatabaseListQuery>,
) -> ApiResult<Json<DatabaseList>> {
    Ok(Json(DatabaseList {
        databases: s.vault.list_databases_in(&who, query.state.as_deref())?,
    }))
}

async fn show_database(
    s: State,
    who: Principal,
    ApiPath(db): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.show_database(&who, &db)?))
}

async fn list_records(
    s: State,
    who: Principal,
    ApiPath(db): ApiPath<String>,
    ApiQuery(query): ApiQuery<RecordListQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.vault.list_records(&who, &db, query).await?))
}

async fn put_record(
    s: State,
    who: Principal,
    ApiPath((db, rec)): ApiPath<(String, String)>,
    RecordBody(value): RecordBody,
) -> ApiResult<StatusCode> {
    s.vault.put_record(&who, &db, &rec, &value).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_record(
    s: State,
    who: Principal,
    ApiPath((db, rec)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let value = s.vault.get_record(&who, &db, &rec).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        value,
    )
        .into_response())
}

async fn delete_record(
    s: State,
    who: Principal,
    ApiPath((db, rec)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    s.vault.delete_record(&who, &db, &rec).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;
    use crate::api::WrapResponse;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The hand-written answer is the JSON serde writes, with and without a generated DEK,
    /// and anything that is not plain base64 still goes through serde (and is escaped).
    #[tokio::test]
    async fn wrap_answer_is_the_json_serde_writes() {
        for answer in [
            WrapResponse {
                ciphertext: "QUJD+/9=".into(),
                key_version: 7,
                plaintext: None,
            },
            WrapResponse {
                ciphertext: "QUJD".into(),
                key_version: 1,
                plaintext: Some("a2V5".into()),
            },
            WrapResponse {
                ciphertext: "not \"base64\"\n".into(),
                key_version: 2,
                plaintext: None,
            },
        ] {
            let expected = serde_json::to_value(&answer).unwrap();
            let response = wrap_json(answer);
            assert_eq!(
                response.headers()[axum::http::header::CONTENT_TYPE],
                "application/json"
            );
            assert_eq!(body_of(response).await, expected);
        }
    }
}
