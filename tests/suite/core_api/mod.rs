//! The socket API of the real daemon, route by route: statuses, error codes and JSON fields
//! (`docs/api.md`), persistence across restarts, socket ownership and concurrent writers.

mod daemon;
mod databases;
mod keys_and_wrap;
mod records;

use crate::common;

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::{allow_databases, assert_api_error, assert_error_answer, error_code, unique, Daemon};
use envault::api::{DatabaseInfo, KeyInfo, RecordListQuery};
use envault::client::{encode_segment, Client, Method};
use serde_json::{json, Value};
use uuid::Uuid;

/// Splits `crn:v1:envault:local:a/<instance>:<instance-id>:<kind>:<id>` and checks its fixed
/// parts; returns the instance id.
#[track_caller]
fn check_crn(crn: &str, kind: &str, id: &str) -> Uuid {
    let parts: Vec<&str> = crn.split(':').collect();
    assert_eq!(parts.len(), 8, "CRN {crn}");
    assert_eq!(&parts[..4], &["crn", "v1", "envault", "local"], "CRN {crn}");
    assert_eq!(parts[4], "a/envault", "CRN {crn}: default instance name");
    let instance = Uuid::parse_str(parts[5]).unwrap_or_else(|_| panic!("CRN {crn}: instance id"));
    assert_eq!(parts[6], kind, "CRN {crn}");
    assert_eq!(parts[7], id, "CRN {crn}");
    instance
}

#[track_caller]
fn check_time(text: &str) {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
}

fn query(prefix: Option<&str>, after: Option<&str>, limit: Option<usize>) -> RecordListQuery {
    RecordListQuery {
        prefix: prefix.map(str::to_string),
        after: after.map(str::to_string),
        limit,
    }
}

/// Creates a customer key and lets databases use it.
async fn usable_key(client: &Client, name: &str) -> KeyInfo {
    let key = client.create_key(name, None, None).await.unwrap();
    allow_databases(client, &key.name).await;
    key
}

async fn json_request(client: &Client, method: Method, path: &str, body: &Value) -> (u16, Value) {
    let (status, bytes) = client
        .request(method, path, Some(body.to_string().as_bytes()))
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, value)
}

/// 32 bytes of key material that are not all one value (which imports refuse).
fn patterned(seed: u8) -> [u8; 32] {
    std::array::from_fn(|i| seed.wrapping_add(i as u8))
}
