//! Hostile and malformed input through the real socket. Every case asserts the exact status and
//! error code, and that nothing changed: a snapshot of every listing (keys, databases,
//! authorizations, tokens, backups) and of every record of two databases is taken before and
//! after each case. Malformed HTTP must get a 400 (or a closed connection) and the daemon keeps
//! serving. At the end the activity log's hash chain still verifies.

mod authentication;
mod conflicts_and_states;
mod http_and_bodies;
mod key_material_and_ciphertexts;
mod names_keys_and_values;
mod other_refusals;
mod queries_and_routing;

use crate::common;
use crate::hostile_support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::{error_code, parse_response, Daemon};
use hostile_support::{
    all_records, assert_same, bearer, enc, expect, json_call, send, send_bytes, snapshot, Snapshot,
};
use serde_json::{json, Value};

/// The record size limit of the daemon under test (`ENVAULT_MAX_RECORD_SIZE`).
const LIMIT: usize = 64 * 1024;
/// Databases whose records every snapshot holds.
const SNAPSHOT_DBS: &[&str] = &["ref", "other"];

/// Who a request claims to be.
#[derive(Clone)]
enum Auth {
    /// The operator token.
    Operator,
    /// An app token scoped to `ref`.
    App,
    /// A token that was revoked.
    Revoked,
    /// No `Authorization` header.
    Missing,
    /// This exact `Authorization` header value.
    Header(String),
}

/// What a case sends.
enum Req {
    /// A well-formed HTTP request.
    Http {
        method: &'static str,
        path: String,
        auth: Auth,
        body: Vec<u8>,
        chunked: bool,
    },
    /// These bytes, as they are.
    Bytes(Vec<u8>),
}

/// What a case must get.
enum Expect {
    /// An API error with this status and code.
    Error(u16, &'static str),
    /// A success status with no body (the state changes are the case's [`Effect`]).
    Status(u16),
    /// Broken HTTP: one of these statuses, or the connection closed without an answer.
    BadHttp(&'static [u16]),
}

/// The one state change a case may make.
enum Effect {
    None,
    /// A record `(db, key, value)` is added.
    PutsRecord(&'static str, String, Vec<u8>),
}

struct Case {
    name: String,
    req: Req,
    expect: Expect,
    effect: Effect,
}

fn case(name: impl Into<String>, req: Req, expect: Expect) -> Case {
    Case {
        name: name.into(),
        req,
        expect,
        effect: Effect::None,
    }
}

fn http(
    method: &'static str,
    path: impl Into<String>,
    auth: Auth,
    body: impl Into<Vec<u8>>,
) -> Req {
    Req::Http {
        method,
        path: path.into(),
        auth,
        body: body.into(),
        chunked: false,
    }
}

/// An operator request.
fn op(method: &'static str, path: impl Into<String>, body: impl Into<Vec<u8>>) -> Req {
    http(method, path, Auth::Operator, body)
}

/// An operator request with a JSON body.
fn op_json(method: &'static str, path: impl Into<String>, body: Value) -> Req {
    op(method, path, body.to_string())
}

fn bad(status: u16, code: &'static str) -> Expect {
    Expect::Error(status, code)
}

/// What the fixture set up, for building cases.
struct Fixture {
    app_token: String,
    revoked_token: String,
    /// Ciphertext of `k-main` over `wrapped_plain` with AAD `["ctx-a"]`.
    wrapped: String,
    /// Ciphertext of `k-free` (no AAD).
    other_key_wrapped: String,
    /// Id of `other`'s provider-managed key.
    provider_key: String,
    backup_id: String,
    authorization_id: String,
}

async fn setup(daemon: &Daemon) -> Fixture {
    let s = &daemon.socket;
    let t = &daemon.token;
    for name in ["k-main", "k-free", "k-dead", "k-susp"] {
        expect(
            json_call(s, t, "POST", "/v1/keys", Some(&json!({ "name": name }))).await,
            201,
            name,
        );
    }
    let grant = json!({"source": "databases", "target": "k-main", "roles": ["Reader"]});
    let authorization = expect(
        json_call(s, t, "POST", "/v1/authorizations", Some(&grant)).await,
        201,
        "grant",
    );
    for body in [
        json!({"name": "ref", "key": "k-main"}),
        json!({"name": "other"}),
        json!({"name": "gone"}),
    ] {
        expect(
            json_call(s, t, "POST", "/v1/databases", Some(&body)).await,
            201,
            "create database",
        );
    }
    let records: [(&str, &[u8]); 7] = [
        ("plain", b"a value"),
        ("dir/sub/file", b"slashes"),
        ("sp ace", b"space"),
        ("..", b"dot dot"),
        ("%2F", b"a literal percent"),
        ("ünï/☃", b"unicode"),
        ("bin", &[0, 1, 2, 255, 254, 0]),
    ];
    for (key, value) in records {
        let path = format!("/v1/databases/ref/records/{}", enc(key));
        assert_eq!(daemon.raw_auth("PUT", &path, value).await.0, 204, "{key}");
    }
    for (key, value) in [("o1", &b"other one"[..]), ("o2", b"other two")] {
        let path = format!("/v1/databases/other/records/{key}");
        assert_eq!(daemon.raw_auth("PUT", &path, value).await.0, 204, "{key}");
    }
    expect(
        json_call(s, t, "DELETE", "/v1/databases/gone", None).await,
        200,
        "soft-delete gone",
    );
    expect(
        json_call(s, t, "DELETE", "/v1/keys/k-dead", None).await,
        200,
        "destroy k-dead",
    );
    expect(
        json_call(s, t, "POST", "/v1/keys/k-susp/disable", None).await,
        200,
        "disable k-susp",
    );
    let backup = expect(
        json_call(s, t, "POST", "/v1/databases/ref/backups", None).await,
        201,
        "backup ref",
    );
    let app = expect(
        json_call(
            s,
            t,
            "POST",
            "/v1/tokens",
            Some(&json!({"role": "app", "databases": ["ref"]})),
        )
        .await,
        201,
        "app token",
    );
    let revoked = expect(
        json_call(
            s,
            t,
            "POST",
            "/v1/tokens",
            Some(&json!({"role": "app", "databases": ["ref"]})),
        )
        .await,
        201,
        "token to revoke",
    );
    let path = format!("/v1/tokens/{}", revoked["id"].as_str().unwrap());
    expect(json_call(s, t, "DELETE", &path, None).await, 204, "revoke");
    let wrapped = expect(
        json_call(
            s,
            t,
            "POST",
            "/v1/keys/k-main/wrap",
            Some(&json!({"plaintext": B64.encode(b"sixteen byte key"), "aad": ["ctx-a"]})),
        )
        .await,
        200,
        "wrap",
    );
    let other_key_wrapped = expect(
        json_call(
            s,
            t,
            "POST",
            "/v1/keys/k-free/wrap",
            Some(&json!({"plaintext": B64.encode(b"sixteen byte key")})),
        )
        .await,
        200,
        "wrap under k-free",
    );
    let other = expect(
        json_call(s, t, "GET", "/v1/databases/other", None).await,
        200,
        "show other",
    );
    Fixture {
        app_token: app["token"].as_str().unwrap().to_string(),
        revoked_token: revoked["token"].as_str().unwrap().to_string(),
        wrapped: wrapped["ciphertext"].as_str().unwrap().to_string(),
        other_key_wrapped: other_key_wrapped["ciphertext"]
            .as_str()
            .unwrap()
            .to_string(),
        provider_key: other["key"].as_str().unwrap().to_string(),
        backup_id: backup["id"].as_str().unwrap().to_string(),
        authorization_id: authorization["id"].as_str().unwrap().to_string(),
    }
}

/// Base64 of the wrapped ciphertext after `change` on its bytes.
fn mangle(ciphertext: &str, change: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = B64.decode(ciphertext).expect("the daemon sends base64");
    change(&mut bytes);
    B64.encode(bytes)
}

fn names_that_are_invalid() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("129 chars", "n".repeat(129)),
        ("with /", "a/b".into()),
        ("..", "..".into()),
        ("../escape", "../escape".into()),
        ("NUL", "a\0b".into()),
        ("control char", "a\u{7}b".into()),
        ("newline", "a\nb".into()),
        ("space", "a b".into()),
        ("UUID", "0b8f6a3e-5d0c-4c8e-9f4a-1f2e3d4c5b6a".into()),
        ("leading dot", ".hidden".into()),
        ("leading dash", "-rf".into()),
        ("non-ASCII", "ünï".into()),
    ]
}

fn cases(f: &Fixture) -> Vec<Case> {
    let mut c = Vec::new();
    http_and_bodies::cases(f, &mut c);
    key_material_and_ciphertexts::cases(f, &mut c);
    names_keys_and_values::cases(f, &mut c);
    authentication::cases(f, &mut c);
    conflicts_and_states::cases(f, &mut c);
    queries_and_routing::cases(&mut c);
    c
}

/// Sends a case's request; the raw answer bytes.
async fn run_request(daemon: &Daemon, f: &Fixture, req: &Req) -> Vec<u8> {
    let resolve = |text: &str| {
        // `{op}` / `{op-1}` placeholders: the operator token (whole / minus its last char).
        let short = &daemon.token[..daemon.token.len() - 1];
        text.replace("{op}", &daemon.token).replace("{op-1}", short)
    };
    match req {
        Req::Bytes(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            let bytes = if text.contains("{op}") {
                // Only ASCII requests carry the placeholder.
                resolve(&text).into_bytes()
            } else {
                bytes.clone()
            };
            send_bytes(&daemon.socket, &bytes).await
        }
        Req::Http {
            method,
            path,
            auth,
            body,
            chunked,
        } => {
            let headers = match auth {
                Auth::Operator => vec![bearer(&daemon.token)],
                Auth::App => vec![bearer(&f.app_token)],
                Auth::Revoked => vec![bearer(&f.revoked_token)],
                Auth::Missing => Vec::new(),
                Auth::Header(value) => vec![("Authorization".into(), resolve(value))],
            };
            let request = hostile_support::build_request(method, path, &headers, body, *chunked);
            send_bytes(&daemon.socket, &request).await
        }
    }
}

fn check_answer(case: &Case, answer: &[u8]) {
    let name = &case.name;
    let parsed = parse_response(answer);
    match &case.expect {
        Expect::BadHttp(statuses) => {
            if let Some((status, body)) = parsed {
                assert!(
                    statuses.contains(&status),
                    "{name}: got {status} {:?}, expected one of {statuses:?} or a close",
                    String::from_utf8_lossy(&body)
                );
            } else {
                assert!(
                    answer.is_empty(),
                    "{name}: neither an HTTP answer nor a close: {:?}",
                    String::from_utf8_lossy(answer)
                );
            }
        }
        Expect::Error(status, code) => {
            let (got, body) = parsed.unwrap_or_else(|| {
                panic!(
                    "{name}: no HTTP answer: {:?}",
                    String::from_utf8_lossy(answer)
                )
            });
            assert_eq!(
                got,
                *status,
                "{name}: status (body {:?})",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(error_code(&body), *code, "{name}: error code");
        }
        Expect::Status(status) => {
            let (got, body) = parsed.unwrap_or_else(|| panic!("{name}: no HTTP answer"));
            assert_eq!(
                got,
                *status,
                "{name}: status (body {:?})",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_exactly_and_change_nothing() {
    let limit = LIMIT.to_string();
    let daemon = Daemon::start_with_env(&[("ENVAULT_MAX_RECORD_SIZE", limit.as_str())]).await;
    let fixture = setup(&daemon).await;
    let cases = cases(&fixture);
    assert!(cases.len() >= 45, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        eprintln!("case: {}", case.name);
        let before = snapshot(&daemon, SNAPSHOT_DBS).await;
        let answer = run_request(&daemon, &fixture, &case.req).await;
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_answer(case, &answer);
        }));
        if let Err(panic) = checked {
            failures.push(panic_text(&panic));
        }
        // The daemon keeps serving, and the state is exactly as before (plus the effect).
        assert!(
            hostile_support::health_ok(&daemon.socket).await,
            "{}: the daemon stopped serving",
            case.name
        );
        let after = snapshot(&daemon, SNAPSHOT_DBS).await;
        let mut expected: Snapshot = before.clone();
        if let Effect::PutsRecord(db, key, value) = &case.effect {
            expected
                .records
                .get_mut(*db)
                .expect("snapshot database")
                .insert(key.clone(), value.clone());
        }
        let same = std::panic::catch_unwind(|| assert_same(&expected, &after, &case.name));
        if let Err(panic) = same {
            failures.push(panic_text(&panic));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let report = expect(
        json_call(
            &daemon.socket,
            &daemon.token,
            "GET",
            "/v1/audit/verify",
            None,
        )
        .await,
        200,
        "audit verify",
    );
    assert_eq!(report["ok"], true, "activity log chain: {report}");
    eprintln!("{} hostile cases passed", cases.len());
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}
