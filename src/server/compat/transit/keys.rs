//! `transit/keys/...`: create, read, list, config, rotate and delete. Transit keys are envault
//! root keys, so each call goes to the service's key methods.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};

use super::wire::TransitResult;
use super::wire::{boolean, respond, string, uint, TransitAuth, TransitBody, TransitError};
use crate::server::AppState;
use crate::service::TransitKey;

/// The only key type: AES-256-GCM with a 96-bit nonce, which is what envault root keys are.
pub const KEY_TYPE: &str = "aes256-gcm96";

/// A key as Vault's `GET transit/keys/<name>` shows it. Features envault does not have
/// (derivation, export, plaintext backup, auto-rotation, signing) are reported as off.
pub fn key_data(key: &TransitKey) -> Value {
    let versions: Map<String, Value> = key
        .versions
        .iter()
        .map(|(v, t)| (v.to_string(), json!(t)))
        .collect();
    json!({
        "allow_plaintext_backup": false,
        "auto_rotate_period": 0,
        "deletion_allowed": key.deletion_allowed,
        "derived": false,
        "exportable": false,
        "imported_key": key.imported,
        "keys": versions,
        "latest_version": key.latest_version,
        "min_available_version": 0,
        "min_decryption_version": key.min_decryption_version,
        "min_encryption_version": 0,
        "name": key.name,
        "soft_deleted": false,
        "supports_decryption": true,
        "supports_derivation": false,
        "supports_encryption": true,
        "supports_signing": false,
        "type": KEY_TYPE,
    })
}

/// Refuses options asking for features envault keys do not have, instead of ignoring them.
pub fn refuse_unsupported(body: &Map<String, Value>) -> Result<(), TransitError> {
    if let Some(kind) = string(body, "type")? {
        if kind != KEY_TYPE {
            return Err(TransitError::bad(format!(
                "key type {kind:?} is not supported: envault transit keys are {KEY_TYPE}"
            )));
        }
    }
    for option in [
        "derived",
        "convergent_encryption",
        "exportable",
        "allow_plaintext_backup",
    ] {
        if boolean(body, option)? == Some(true) {
            return Err(TransitError::bad(format!(
                "{option} is not supported by envault transit keys"
            )));
        }
    }
    Ok(())
}

type S = State<Arc<AppState>>;

/// `POST|PUT transit/keys/<name>`.
pub async fn create(
    s: S,
    TransitAuth(who): TransitAuth,
    Path(name): Path<String>,
    TransitBody(body): TransitBody,
) -> TransitResult {
    refuse_unsupported(&body)?;
    if uint(&body, "auto_rotate_period")?.is_some_and(|p| p != 0) {
        return Err(TransitError::bad(
            "auto_rotate_period is not supported: rotate with transit/keys/<name>/rotate or envault key rotate",
        ));
    }
    let key = s.vault.transit_create(&who, &name).await?;
    Ok(respond(StatusCode::OK, &key_data(&key)))
}

/// `GET transit/keys/<name>`.
pub async fn read(s: S, TransitAuth(who): TransitAuth, Path(name): Path<String>) -> TransitResult {
    match s.vault.transit_key(&who, &name) {
        Ok(key) => Ok(respond(StatusCode::OK, &key_data(&key))),
        Err(crate::service::ServiceError::NotFound(_)) => Err(TransitError {
            status: StatusCode::NOT_FOUND,
            message: String::new(),
        }),
        Err(err) => Err(err.into()),
    }
}

/// `GET transit/keys?list=true` (what `LIST transit/keys` becomes over HTTP).
pub async fn list(
    s: S,
    TransitAuth(who): TransitAuth,
    Query(query): Query<Map<String, Value>>,
) -> TransitResult {
    if boolean(&query, "list")? != Some(true) {
        return Err(TransitError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "use LIST, or GET with ?list=true".into(),
        });
    }
    let names: Vec<String> = s
        .vault
        .list_keys(&who)?
        .into_iter()
        .map(|k| k.name)
        .collect();
    Ok(respond(StatusCode::OK, &json!({ "keys": names })))
}

/// `POST|PUT transit/keys/<name>/config`.
pub async fn config(
    s: S,
    TransitAuth(who): TransitAuth,
    Path(name): Path<String>,
    TransitBody(body): TransitBody,
) -> TransitResult {
    refuse_unsupported(&body)?;
    if uint(&body, "min_encryption_version")?.is_some_and(|v| v != 0) {
        return Err(TransitError::bad(
            "min_encryption_version is not supported: envault encrypts with the latest version",
        ));
    }
    let min = uint(&body, "min_decryption_version")?;
    let deletion = boolean(&body, "deletion_allowed")?;
    let key = s
        .vault
        .transit_configure(&who, &name, min, deletion)
        .await?;
    Ok(respond(StatusCode::OK, &key_data(&key)))
}

/// `POST|PUT transit/keys/<name>/rotate`.
pub async fn rotate(
    s: S,
    TransitAuth(who): TransitAuth,
    Path(name): Path<String>,
    TransitBody(_): TransitBody,
) -> TransitResult {
    let key = s.vault.transit_rotate(&who, &name).await?;
    Ok(respond(StatusCode::OK, &key_data(&key)))
}

/// `DELETE transit/keys/<name>`: 204, like Vault.
pub async fn delete(
    s: S,
    TransitAuth(who): TransitAuth,
    Path(name): Path<String>,
) -> TransitResult {
    s.vault.transit_delete(&who, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
