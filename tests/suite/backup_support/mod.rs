//! Helpers shared by the backup tests (`backups`, `backup_tamper`): JSON calls, grants, record
//! dumps, restores, the backup file's layout (`src/backup/format.rs`) and a seeded generator.

use std::collections::BTreeMap;
use std::path::PathBuf;

use envault::api::{DatabaseInfo, KeyInfo, RecordListQuery};
use envault::client::{encode_segment, Client, Method};
use serde_json::{json, Value};

use super::common::Daemon;

/// Preamble length (magic, version, reserved).
pub const PREAMBLE_LEN: usize = 8;
/// Start of key slot A.
pub const SLOT_A: usize = 8;
/// Start of key slot B.
pub const SLOT_B: usize = 104;
/// Length of one key slot.
pub const SLOT_LEN: usize = 96;
/// Offset of the header length (u32 BE); the header JSON follows.
pub const HEADER_LEN_AT: usize = 200;
/// Plaintext bytes per STREAM chunk.
pub const CHUNK: usize = 64 * 1024;
/// Bytes per sealed chunk on disk (plaintext + 16-byte tag); the last one may be shorter.
pub const SEALED_CHUNK: usize = CHUNK + 16;

/// Sends `body` as JSON (or nothing); returns the status and the JSON answer (`null` when the
/// body is empty).
pub async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let (status, bytes) = client
        .request(method.clone(), path, text.as_deref().map(str::as_bytes))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: answer is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, value)
}

/// Asserts a JSON answer has `status`; returns the JSON.
#[track_caller]
pub fn expect(answer: (u16, Value), status: u16, what: &str) -> Value {
    assert_eq!(answer.0, status, "{what}: answer {}", answer.1);
    answer.1
}

/// Asserts a JSON answer is the API error `status` / `code` with a message.
#[track_caller]
pub fn assert_json_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "answer {}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "answer {}", answer.1);
    assert_message(&answer.1);
}

/// Asserts a JSON answer is an API error (any 4xx/5xx) with a code and a non-empty message;
/// returns the message.
#[track_caller]
pub fn assert_failed(answer: &(u16, Value), what: &str) -> String {
    assert!(
        (400..600).contains(&answer.0),
        "{what}: expected an error, got {} {}",
        answer.0,
        answer.1
    );
    assert!(
        answer.1["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{what}: error without code: {}",
        answer.1
    );
    assert_message(&answer.1)
}

#[track_caller]
fn assert_message(body: &Value) -> String {
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error without message: {body}");
    message.to_string()
}

/// `POST /v1/authorizations`; returns the raw answer.
pub async fn grant_raw(
    client: &Client,
    source: &str,
    target: &str,
    roles: &[&str],
) -> (u16, Value) {
    call(
        client,
        Method::POST,
        "/v1/authorizations",
        Some(json!({ "source": source, "target": target, "roles": roles })),
    )
    .await
}

/// Grants an authorization that must be new; returns its id.
pub async fn grant(client: &Client, source: &str, target: &str, roles: &[&str]) -> String {
    let answer = expect(grant_raw(client, source, target, roles).await, 201, "grant");
    answer["id"].as_str().expect("authorization id").to_string()
}

/// `GET /v1/authorizations` as a list.
pub async fn authorizations(client: &Client) -> Vec<Value> {
    let answer = expect(
        call(client, Method::GET, "/v1/authorizations", None).await,
        200,
        "list authorizations",
    );
    answer["authorizations"]
        .as_array()
        .unwrap_or_else(|| panic!("authorization list: {answer}"))
        .clone()
}

/// A new key that databases may use as their records key (`databases` → `Reader`).
pub async fn records_key(client: &Client, name: &str) -> KeyInfo {
    let key = client
        .create_key(name, None, None)
        .await
        .expect("create key");
    grant(client, "databases", &key.id, &["Reader"]).await;
    key
}

/// A new key that databases may use as a backup key (`databases` → `Reader` +
/// `AuthorizationDelegator`); returns the key and the delegator authorization's id.
pub async fn backup_key(client: &Client, name: &str) -> (KeyInfo, String) {
    let key = client
        .create_key(name, None, None)
        .await
        .expect("create key");
    let id = grant(
        client,
        "databases",
        &key.id,
        &["Reader", "AuthorizationDelegator"],
    )
    .await;
    (key, id)
}

/// Every record key of `db`, paging through the listing.
pub async fn all_keys(client: &Client, db: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .list_records(
                db,
                &RecordListQuery {
                    prefix: None,
                    after: after.clone(),
                    limit: Some(1000),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("list records of {db}: {e}"));
        let Some(last) = page.keys.last().cloned() else {
            break;
        };
        keys.extend(page.keys);
        if page.next.is_none() {
            break;
        }
        after = Some(last);
    }
    keys
}

/// Every record of `db`: key → value.
pub async fn dump(client: &Client, db: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for key in all_keys(client, db).await {
        let value = client
            .get_record(db, &key)
            .await
            .unwrap_or_else(|e| panic!("get {db}/{key}: {e}"));
        out.insert(key, value);
    }
    out
}

/// Asserts two dumps are equal, naming the first difference.
#[track_caller]
pub fn assert_same_records(
    got: &BTreeMap<String, Vec<u8>>,
    want: &BTreeMap<String, Vec<u8>>,
    what: &str,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>().len(),
        want.len(),
        "{what}: record count"
    );
    for (key, value) in want {
        let other = got
            .get(key)
            .unwrap_or_else(|| panic!("{what}: record {key:?} missing"));
        assert!(
            other == value,
            "{what}: record {key:?} differs ({} bytes vs {} bytes expected)",
            other.len(),
            value.len()
        );
    }
    assert!(
        got.keys().all(|k| want.contains_key(k)),
        "{what}: extra records"
    );
}

/// `POST /v1/databases/{db}/backups` that must succeed; returns the BackupInfo.
pub async fn create_backup(client: &Client, db: &str) -> Value {
    expect(create_backup_raw(client, db).await, 201, "create backup")
}

/// `POST /v1/databases/{db}/backups`, raw.
pub async fn create_backup_raw(client: &Client, db: &str) -> (u16, Value) {
    call(
        client,
        Method::POST,
        &format!("/v1/databases/{}/backups", encode_segment(db)),
        None,
    )
    .await
}

/// `POST /v1/backups/{id}/restore`, raw.
pub async fn restore_raw(client: &Client, id: &str, into: &str, key: Option<&str>) -> (u16, Value) {
    let mut body = json!({ "into": into });
    if let Some(key) = key {
        body["key"] = json!(key);
    }
    call(
        client,
        Method::POST,
        &format!("/v1/backups/{}/restore", encode_segment(id)),
        Some(body),
    )
    .await
}

/// Restores a backup that must restore; returns the new database.
pub async fn restore(client: &Client, id: &str, into: &str, key: Option<&str>) -> DatabaseInfo {
    let answer = expect(restore_raw(client, id, into, key).await, 201, "restore");
    serde_json::from_value(answer).expect("restore answers a DatabaseInfo")
}

/// `GET /v1/backups` as a list.
pub async fn list_backups(client: &Client) -> Vec<Value> {
    let answer = expect(
        call(client, Method::GET, "/v1/backups", None).await,
        200,
        "list backups",
    );
    answer["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("backup list: {answer}"))
        .clone()
}

/// `GET /v1/backups/{id}`, raw.
pub async fn get_backup_raw(client: &Client, id: &str) -> (u16, Value) {
    call(
        client,
        Method::GET,
        &format!("/v1/backups/{}", encode_segment(id)),
        None,
    )
    .await
}

/// `DELETE /v1/backups/{id}`, raw.
pub async fn delete_backup_raw(client: &Client, id: &str) -> (u16, Value) {
    call(
        client,
        Method::DELETE,
        &format!("/v1/backups/{}", encode_segment(id)),
        None,
    )
    .await
}

/// `GET /v1/keys/{key}` as JSON.
pub async fn get_key(client: &Client, key: &str) -> Value {
    expect(
        call(
            client,
            Method::GET,
            &format!("/v1/keys/{}", encode_segment(key)),
            None,
        )
        .await,
        200,
        "get key",
    )
}

/// `POST /v1/keys/{key}/rotate` (waiting for the job); returns the answer.
pub async fn rotate(client: &Client, key: &str, retire_old: bool) -> Value {
    expect(
        call(
            client,
            Method::POST,
            &format!("/v1/keys/{}/rotate", encode_segment(key)),
            Some(json!({ "retire_old": retire_old })),
        )
        .await,
        200,
        "rotate",
    )
}

/// `DELETE /v1/keys/{key}?force=true`: cryptoshred.
pub async fn shred(client: &Client, key: &str) {
    let answer = call(
        client,
        Method::DELETE,
        &format!("/v1/keys/{}?force=true", encode_segment(key)),
        None,
    )
    .await;
    assert!(
        (200..300).contains(&answer.0),
        "force delete {key}: {} {}",
        answer.0,
        answer.1
    );
}

/// The `id` of a BackupInfo.
pub fn id_of(info: &Value) -> String {
    info["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {info}"))
        .to_string()
}

/// `<data_dir>/backups`.
pub fn backup_dir(daemon: &Daemon) -> PathBuf {
    daemon.data_dir.join("backups")
}

/// `<data_dir>/backups/<id>.evb`.
pub fn backup_file(daemon: &Daemon, id: &str) -> PathBuf {
    backup_dir(daemon).join(format!("{id}.evb"))
}

/// Names of the files in the backup dir (none when it does not exist).
pub fn backup_dir_files(daemon: &Daemon) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(backup_dir(daemon)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `GET /v1/audit?action=…` events.
pub async fn audit_events(client: &Client, action: &str) -> Vec<Value> {
    let answer = expect(
        call(
            client,
            Method::GET,
            &format!("/v1/audit?action={}", encode_segment(action)),
            None,
        )
        .await,
        200,
        "audit",
    );
    let events = answer["events"]
        .as_array()
        .unwrap_or_else(|| panic!("audit answer: {answer}"))
        .clone();
    for event in &events {
        assert_eq!(event["action"], action, "audit filter: {event}");
    }
    events
}

/// Number of databases (`GET /v1/databases`).
pub async fn database_count(client: &Client) -> usize {
    client.list_databases().await.expect("list databases").len()
}

/// Asserts that no database named `name` exists.
pub async fn assert_no_database(client: &Client, name: &str) {
    let answer = call(
        client,
        Method::GET,
        &format!("/v1/databases/{}", encode_segment(name)),
        None,
    )
    .await;
    assert_json_error(&answer, 404, "not_found");
}

/// The parsed layout of a backup file.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Header JSON start.
    pub header_at: usize,
    /// Header JSON length.
    pub header_len: usize,
    /// Payload start.
    pub payload_at: usize,
    /// Sealed chunks: (start, end).
    pub chunks: Vec<(usize, usize)>,
}

impl Layout {
    /// Parses preamble, header length and chunk boundaries of a backup file's bytes.
    pub fn of(bytes: &[u8]) -> Layout {
        assert_eq!(&bytes[..4], b"EVBK", "backup magic");
        assert_eq!(bytes[4], 1, "backup format version");
        let header_len = u32::from_be_bytes(
            bytes[HEADER_LEN_AT..HEADER_LEN_AT + 4]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let header_at = HEADER_LEN_AT + 4;
        let payload_at = header_at + header_len;
        assert!(payload_at < bytes.len(), "backup without payload");
        let mut chunks = Vec::new();
        let mut at = payload_at;
        while at < bytes.len() {
            let end = (at + SEALED_CHUNK).min(bytes.len());
            chunks.push((at, end));
            at = end;
        }
        Layout {
            header_at,
            header_len,
            payload_at,
            chunks,
        }
    }

    /// The header JSON.
    pub fn header(&self, bytes: &[u8]) -> Value {
        serde_json::from_slice(&bytes[self.header_at..self.payload_at]).expect("header JSON")
    }
}
