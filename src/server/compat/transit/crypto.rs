//! `transit/encrypt`, `decrypt`, `rewrap` and `datakey`: parse the (batch) request, call one
//! service method, shape the answer. A batch answers per item (`error` instead of a result),
//! with 400 only when every item failed, as Vault does.

use crate::service::Action;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::keys::refuse_unsupported;
use super::wire::{
    base64_data, base64_field, encode, format_ciphertext, parse_ciphertext, respond, string, text,
    uint, TransitAuth, TransitBody, TransitError, TransitResult,
};
use crate::server::AppState;
use crate::service::{ItemResults, OpenItem, Principal, SealItem, ServiceError};

type S = State<Arc<AppState>>;
/// JSON object of one request item.
type Item = Map<String, Value>;
/// (batch mode?, the raw items, the parsed items).
type Parsed<T> = (bool, Vec<Item>, Vec<Result<T, TransitError>>);

/// The request's items: `batch_input` (a list, or a JSON string holding one), else the body.
/// The list is taken out of the body, not copied.
fn items(body: &mut Map<String, Value>) -> Result<Option<Vec<Map<String, Value>>>, TransitError> {
    let list = match body.remove("batch_input") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => serde_json::from_str::<Value>(&text)
            .map_err(|e| TransitError::bad(format!("batch_input is not valid JSON: {e}")))?,
        Some(other) => other,
    };
    let Value::Array(list) = list else {
        return Err(TransitError::bad("batch_input must be a list"));
    };
    if list.is_empty() {
        return Err(TransitError::bad("missing batch input to process"));
    }
    list.into_iter()
        .map(|item| match item {
            Value::Object(map) => Ok(map),
            _ => Err(TransitError::bad("each batch_input item must be an object")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Derived keys and caller nonces are Vault features envault keys do not have: a `context`
/// or `nonce` is refused rather than silently ignored.
fn refuse_context(item: &Map<String, Value>) -> Result<(), TransitError> {
    for field in ["context", "nonce"] {
        if text(item, field)?.is_some_and(|v| !v.is_empty()) {
            return Err(TransitError::bad(format!(
                "{field} is not supported: envault transit keys are not derived or convergent"
            )));
        }
    }
    Ok(())
}

fn reference(item: &Map<String, Value>) -> Value {
    json!(string(item, "reference").ok().flatten().unwrap_or_default())
}

/// Single mode answers the one item (its error as the response); batch mode lists results.
/// `shape` gives an item's answer as a struct whose fields are in alphabetical order: single
/// mode serializes it directly, batch mode turns it into a map to add `reference`.
fn answer<T, D: Serialize>(
    batch: bool,
    inputs: &[Item],
    results: Vec<Result<T, TransitError>>,
    shape: impl Fn(T) -> D,
) -> TransitResult {
    if !batch {
        let one = results
            .into_iter()
            .next()
            .ok_or_else(|| TransitError::bad("nothing to process"))?;
        return Ok(respond(StatusCode::OK, &shape(one?)));
    }
    let mut any_ok = false;
    let listed: Vec<Value> = results
        .into_iter()
        .zip(inputs)
        .map(|(result, input)| {
            let mut out = match result.map(|value| serde_json::to_value(shape(value))) {
                Ok(Ok(Value::Object(map))) => {
                    any_ok = true;
                    map
                }
                Ok(_) => {
                    // The shapes are structs: they always serialize to an object.
                    let mut map = Map::new();
                    map.insert("error".into(), json!("internal error shaping the result"));
                    map
                }
                Err(err) => {
                    let mut map = Map::new();
                    map.insert("error".into(), json!(err.message));
                    map
                }
            };
            out.insert("reference".into(), reference(input));
            Value::Object(out)
        })
        .collect();
    let status = if any_ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(respond(status, &json!({ "batch_results": listed })))
}

/// Parses each item; in single mode a bad item is the answer, in batch mode it is that
/// item's result (as in Vault) and the others are still processed. Single mode parses the body
/// itself and returns no raw items (only batch answers echo an item's `reference`).
fn parse_all<T>(
    mut body: Item,
    parse: impl Fn(&Item) -> Result<T, TransitError>,
) -> Result<Parsed<T>, TransitError> {
    refuse_unsupported(&body)?;
    let Some(inputs) = items(&mut body)? else {
        refuse_context(&body)?;
        return Ok((false, Vec::new(), vec![Ok(parse(&body)?)]));
    };
    let parsed = inputs
        .iter()
        .map(|item| refuse_context(item).and_then(|_| parse(item)))
        .collect::<Vec<_>>();
    Ok((true, inputs, parsed))
}

/// Which items parsed: `None` marks a slot whose result comes from the service.
type Slots = Vec<Option<TransitError>>;

/// Separates parse errors (kept in their slots) from the items to send to the service.
fn split<T>(parsed: Vec<Result<T, TransitError>>) -> (Slots, Vec<T>) {
    let mut slots = Vec::with_capacity(parsed.len());
    let mut valid = Vec::new();
    for item in parsed {
        match item {
            Ok(v) => {
                slots.push(None);
                valid.push(v);
            }
            Err(err) => slots.push(Some(err)),
        }
    }
    (slots, valid)
}

/// Puts the service's results back between the parse errors, in request order.
fn merge<R>(slots: Slots, results: ItemResults<R>) -> Vec<Result<R, TransitError>> {
    let mut results = results.into_iter();
    slots
        .into_iter()
        .map(|slot| match slot {
            Some(err) => Err(err),
            None => results
                .next()
                .unwrap_or(Err(ServiceError::Internal(
                    "fewer batch results than items",
                )))
                .map_err(TransitError::from),
        })
        .collect()
}

/// An encrypt, rewrap or datakey item's answer (fields in alphabetical order, see `answer`).
#[derive(Serialize)]
struct SealedShape {
    ciphertext: String,
    key_version: u32,
    /// Only `datakey/plaintext` returns the key (base64, wiped when the answer is built).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret_text_opt"
    )]
    plaintext: Option<Zeroizing<String>>,
}

fn sealed_shape(sealed: crate::service::TransitSealed) -> SealedShape {
    SealedShape {
        ciphertext: format_ciphertext(&sealed),
        key_version: sealed.version,
        plaintext: None,
    }
}

/// A decrypt item's answer.
#[derive(Serialize)]
struct OpenedShape {
    #[serde(serialize_with = "secret_text")]
    plaintext: Zeroizing<String>,
}

/// Serializes a base64 secret held in a [`Zeroizing`] string, so the copy this layer keeps is
/// wiped once the answer's bytes exist.
fn secret_text<S: serde::Serializer>(text: &Zeroizing<String>, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(text)
}

fn secret_text_opt<S: serde::Serializer>(
    text: &Option<Zeroizing<String>>,
    out: S,
) -> Result<S::Ok, S::Error> {
    match text {
        Some(text) => out.serialize_str(text),
        None => out.serialize_none(),
    }
}

fn open_item(item: &Map<String, Value>) -> Result<OpenItem, TransitError> {
    let ciphertext = text(item, "ciphertext")?
        .ok_or_else(|| TransitError::bad("missing ciphertext to decrypt"))?;
    let (version, body) = parse_ciphertext(&ciphertext)?;
    Ok(OpenItem {
        version,
        body,
        associated_data: base64_data(item, "associated_data")?,
    })
}

// Service calls run on this worker, as the native wrap/unwrap routes do. Their waits (the
// activity log's fsync, a remote root-key backend) already leave the worker through
// `block_in_place`, so concurrent calls still share fsyncs. Handing every call to the blocking
// pool instead cost two thread wake-ups per request: 41 % of the daemon's samples were in the
// scheduler, and transit ran at half the native wrap rate.

type Sealed = ItemResults<crate::service::TransitSealed>;

/// Seals, creating the key first when it does not exist (Vault's encrypt upserts).
async fn seal(
    state: &AppState,
    who: &Principal,
    action: Action,
    name: &str,
    items: &[SealItem],
) -> Result<Sealed, TransitError> {
    match state.vault.transit_encrypt(who, action, name, items) {
        Err(ServiceError::NotFound(_)) => {
            state.vault.transit_create(who, name).await?;
            Ok(state.vault.transit_encrypt(who, action, name, items)?)
        }
        other => Ok(other?),
    }
}

/// `POST|PUT transit/encrypt/<name>`.
pub async fn encrypt(
    s: S,
    TransitAuth(who): TransitAuth,
    Path(name): Path<String>,
    TransitBody(body): TransitBody,
) -> TransitResult {
    let default_version = uint(&body, "key_version")?;
    let (batch, inputs, items) = parse_all(body, |item| {
        if item.get("plaintext").is_none_or(Value::is_null) {
            return Err(TransitError::bad("missing plaintext to encrypt"));
        }
        Ok(SealItem {
            plaintext: base64_field(item, "plaintext")?,
            associated_data: base64_data(item, "associated_data")?,
            key_version: uint(item, "key_version")?.or(default_version),
        })
    })?;
    let (slots, items) = split(items);
    let results = seal(&s.0, &who, Action::TransitEncrypt, &name, &items).await?;
    answer(batch, &inputs, merge(slots, results), sealed_shape)
}

/// `POST|PUT transit/decrypt/<name>`.
pub async fn decrypt(
    s: S,
    TransitAuth(who): TransitAuth,
    Path(name): Path<String>,
    TransitBody(body): TransitBody,
) -> TransitResult {
    let (batch, inputs, items) = parse_all(body, open_item)?;
    let (slots, items) = split(items);
    let results = s.vault.transit_decrypt(&who, &name, &items)?;
    answer(
        batch,
        &inputs,
        merge(slots, results),
        |plain: Zeroizing<Vec<u8>>| OpenedShape {
            plaintext: Zeroizing::new(encode(&plain)),
        },
    )
}

/// `POST|PUT transit/rewrap/<name>`.
pub async fn rewrap(
    s: S,
    TransitAuth(who): TransitAuth,
    Path(name): Path<String>,
    TransitBody(body): TransitBody,
) -> TransitResult {
    let default_version = uint(&body, "key_version")?;
    let (batch, inputs, items) = parse_all(body, |item| {
        Ok((
            open_item(item)?,
            uint(item, "key_version")?.or(default_version),
        ))
    })?;
    let (slots, items) = split(items);
    let results = s.vault.transit_rewrap(&who, &name, &items)?;
    answer(batch, &inputs, merge(slots, results), sealed_shape)
}

/// `POST|PUT transit/datakey/{plaintext|wrapped}/<name>`: a fresh random key of `bits`
/// (128, 256 or 512) sealed under the key; `plaintext` also returns it.
pub async fn datakey(
    s: S,
    TransitAuth(who): TransitAuth,
    Path((kind, name)): Path<(String, String)>,
    TransitBody(body): TransitBody,
) -> TransitResult {
    let with_plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        other => {
            return Err(TransitError::bad(format!(
                "invalid datakey type {other:?}: use plaintext or wrapped"
            )))
        }
    };
    refuse_unsupported(&body)?;
    refuse_context(&body)?;
    let bits = uint(&body, "bits")?.unwrap_or(256);
    if !matches!(bits, 128 | 256 | 512) {
        return Err(TransitError::bad("invalid bits: use 128, 256 or 512"));
    }
    let mut key = Zeroizing::new(vec![0u8; bits as usize / 8]);
    crate::crypto::os_random(&mut key).map_err(|_| TransitError::from(ServiceError::Random))?;
    let item = SealItem {
        plaintext: key.clone(),
        associated_data: base64_data(&body, "associated_data")?,
        key_version: uint(&body, "key_version")?,
    };
    let action = Action::TransitDatakey;
    let results = s.vault.transit_encrypt(&who, action, &name, &[item])?;
    answer(false, &[], merge(vec![None], results), |sealed| {
        let mut shape = sealed_shape(sealed);
        if with_plaintext {
            shape.plaintext = Some(Zeroizing::new(encode(&key)));
        }
        shape
    })
}
