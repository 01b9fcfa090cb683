//! Hostile and malformed input through the real socket. Every case asserts the exact status and
//! error code, and that nothing changed: a snapshot of every listing (keys, databases,
//! authorizations, tokens, backups) and of every record of two databases is taken before and
//! after each case. Malformed HTTP must get a 400 (or a closed connection) and the daemon keeps
//! serving. At the end the activity log's hash chain still verifies.

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
    let rec = |key: &str| format!("/v1/databases/ref/records/{key}");

    // ----- malformed HTTP (raw bytes): 400 or a closed connection
    for (name, bytes) in [
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
        ("binary request line", b"\x00\x01\x02\x03\r\n\r\n".to_vec()),
        (
            "header without colon",
            b"GET /v1/keys HTTP/1.1\r\nHost: x\r\nNot A Header\r\n\r\n".to_vec(),
        ),
        (
            "space before colon",
            b"GET /v1/keys HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(),
        ),
        (
            "Content-Length not a number",
            b"PUT /v1/databases/ref/records/cl HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nxyz"
                .to_vec(),
        ),
        (
            "negative Content-Length",
            b"PUT /v1/databases/ref/records/cl HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nxyz"
                .to_vec(),
        ),
        (
            "conflicting Content-Lengths",
            b"PUT /v1/databases/ref/records/cl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nxyzab"
                .to_vec(),
        ),
        (
            "unsupported Transfer-Encoding",
            b"PUT /v1/databases/ref/records/te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxyz"
                .to_vec(),
        ),
        (
            "bad chunk size",
            b"PUT /v1/databases/ref/records/te HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {op}\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxyz\r\n0\r\n\r\n"
                .to_vec(),
        ),
    ] {
        c.push(case(name, Req::Bytes(bytes), Expect::BadHttp(&[400])));
    }
    let mut huge_header =
        b"GET /v1/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ".to_vec();
    huge_header.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge_header.extend_from_slice(b"\r\n\r\n");
    c.push(case(
        "1 MiB header",
        Req::Bytes(huge_header),
        Expect::BadHttp(&[400, 431]),
    ));
    let mut many_headers = b"GET /v1/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    for i in 0..500 {
        many_headers.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many_headers.extend_from_slice(b"\r\n");
    c.push(case(
        "500 headers",
        Req::Bytes(many_headers),
        Expect::BadHttp(&[400, 431]),
    ));

    // ----- bodies that are not the expected JSON
    let bodies: [(&str, &str, &[u8]); 5] = [
        ("truncated JSON", "/v1/keys", br#"{"name":"#),
        ("not JSON", "/v1/keys", b"name=k"),
        ("JSON array", "/v1/keys", b"[]"),
        ("empty body", "/v1/keys", b""),
        ("trailing garbage", "/v1/keys", br#"{"name":"k-x"} x"#),
    ];
    for (name, path, body) in bodies {
        c.push(case(
            name,
            op("POST", path, body.to_vec()),
            bad(400, "bad_request"),
        ));
    }
    let restore_path = format!("/v1/backups/{}/restore", f.backup_id);
    let typed: Vec<(&str, &str, Value)> = vec![
        ("name is a number", "/v1/keys", json!({"name": 5})),
        (
            "payload is a number",
            "/v1/keys",
            json!({"name": "k-x", "payload": 123}),
        ),
        (
            "aad is a string",
            "/v1/keys/k-main/wrap",
            json!({"aad": "ctx-a"}),
        ),
        (
            "aad has a number",
            "/v1/keys/k-main/wrap",
            json!({"aad": [1]}),
        ),
        (
            "roles is a string",
            "/v1/authorizations",
            json!({"source": "databases", "target": "k-free", "roles": "Reader"}),
        ),
        (
            "unknown role enum",
            "/v1/tokens",
            json!({"role": "superuser"}),
        ),
        ("database name null", "/v1/databases", json!({"name": null})),
        (
            "retire_old is a string",
            "/v1/keys/k-free/rotate",
            json!({"retire_old": "yes"}),
        ),
        (
            "unknown field on key",
            "/v1/keys",
            json!({"name": "k-x", "extra": 1}),
        ),
        (
            "unknown field on database",
            "/v1/databases",
            json!({"name": "db-x", "colour": "red"}),
        ),
        (
            "unknown field on grant",
            "/v1/authorizations",
            json!({"source": "databases", "target": "k-free", "roles": ["Reader"], "ttl": 5}),
        ),
        (
            "unknown field on token",
            "/v1/tokens",
            json!({"role": "app", "databases": ["ref"], "admin": true}),
        ),
        (
            "unknown field on unwrap",
            "/v1/keys/k-main/unwrap",
            json!({"ciphertext": f.wrapped, "aad": ["ctx-a"], "key_version": 1}),
        ),
        (
            "unknown field on backup restore",
            &restore_path,
            json!({"into": "restored", "force": true}),
        ),
        (
            "unknown field on rotate",
            "/v1/keys/k-free/rotate",
            json!({"now": true}),
        ),
    ];
    for (name, path, body) in typed {
        c.push(case(
            name,
            op_json("POST", path, body),
            bad(400, "bad_request"),
        ));
    }

    // ----- base64 and key material
    let import = |name: &str, payload: String| json!({"name": name, "payload": payload});
    c.push(case(
        "payload not base64",
        op_json(
            "POST",
            "/v1/keys",
            import("k-imp", "%%%not base64%%%".into()),
        ),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "import of 31 bytes",
        op_json("POST", "/v1/keys", import("k-imp", B64.encode([7u8; 31]))),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "import of 33 bytes",
        op_json("POST", "/v1/keys", import("k-imp", B64.encode([7u8; 33]))),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "import of 0 bytes",
        op_json("POST", "/v1/keys", import("k-imp", String::new())),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "plaintext not base64",
        op_json("POST", "/v1/keys/k-main/wrap", json!({"plaintext": "!!!"})),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "empty plaintext",
        op_json("POST", "/v1/keys/k-main/wrap", json!({"plaintext": ""})),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "ciphertext not base64",
        op_json(
            "POST",
            "/v1/keys/k-main/unwrap",
            json!({"ciphertext": "@@@@"}),
        ),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "wrap plaintext over 64 KiB",
        op_json(
            "POST",
            "/v1/keys/k-main/wrap",
            json!({"plaintext": B64.encode(vec![1u8; 64 * 1024 + 1])}),
        ),
        bad(400, "bad_request"),
    ));

    // ----- unwrap / rewrap of ciphertexts that must not open
    let unwrap = |ciphertext: String, aad: Value| json!({"ciphertext": ciphertext, "aad": aad});
    for (name, route, body) in [
        (
            "unwrap with wrong AAD",
            "unwrap",
            unwrap(f.wrapped.clone(), json!(["ctx-b"])),
        ),
        (
            "unwrap without the AAD",
            "unwrap",
            json!({"ciphertext": f.wrapped}),
        ),
        (
            "unwrap with extra AAD",
            "unwrap",
            unwrap(f.wrapped.clone(), json!(["ctx-a", "ctx-b"])),
        ),
        (
            "unwrap truncated ciphertext",
            "unwrap",
            unwrap(
                mangle(&f.wrapped, |b| b.truncate(b.len() - 5)),
                json!(["ctx-a"]),
            ),
        ),
        (
            "unwrap ciphertext cut to 3 bytes",
            "unwrap",
            unwrap(mangle(&f.wrapped, |b| b.truncate(3)), json!(["ctx-a"])),
        ),
        (
            "unwrap bit-flipped ciphertext",
            "unwrap",
            unwrap(
                mangle(&f.wrapped, |b| {
                    let at = b.len() / 2;
                    b[at] ^= 0x01;
                }),
                json!(["ctx-a"]),
            ),
        ),
        (
            "unwrap with a flipped last tag bit",
            "unwrap",
            unwrap(
                mangle(&f.wrapped, |b| {
                    let at = b.len() - 1;
                    b[at] ^= 0x80;
                }),
                json!(["ctx-a"]),
            ),
        ),
        (
            "unwrap another key's ciphertext",
            "unwrap",
            json!({"ciphertext": f.other_key_wrapped}),
        ),
        (
            "unwrap empty ciphertext",
            "unwrap",
            json!({"ciphertext": ""}),
        ),
        (
            "rewrap with wrong AAD",
            "rewrap",
            unwrap(f.wrapped.clone(), json!(["ctx-b"])),
        ),
        (
            "rewrap another key's ciphertext",
            "rewrap",
            json!({"ciphertext": f.other_key_wrapped}),
        ),
    ] {
        c.push(case(
            name,
            op_json("POST", format!("/v1/keys/k-main/{route}"), body),
            bad(400, "bad_request"),
        ));
    }

    // ----- key and database names
    for (what, name) in names_that_are_invalid() {
        c.push(case(
            format!("key name {what}"),
            op_json("POST", "/v1/keys", json!({ "name": name })),
            bad(400, "bad_request"),
        ));
        c.push(case(
            format!("database name {what}"),
            op_json("POST", "/v1/databases", json!({ "name": name })),
            bad(400, "bad_request"),
        ));
    }
    c.push(case(
        "backup restored into an invalid name",
        op_json(
            "POST",
            format!("/v1/backups/{}/restore", f.backup_id),
            json!({"into": "../ref"}),
        ),
        bad(400, "bad_request"),
    ));

    // ----- record keys in the path
    c.push(case(
        "%2F traversal names a record, not a route",
        op("GET", rec("..%2F..%2Fkeys"), ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "%2E%2E record key is just a missing record",
        op("GET", "/v1/databases/ref/records/%2E%2E%2Fplain", ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "raw ../ in the path is no route",
        op("GET", "/v1/databases/ref/records/../../keys", ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "raw .. as a database",
        op("GET", "/v1/databases/../records/plain", ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "%2F in a database name",
        op("GET", "/v1/databases/ref%2F..%2Fother/records/o1", ""),
        bad(404, "not_found"),
    ));
    for (name, key) in [
        ("%00 in a record key", "a%00b"),
        ("%0A in a record key", "a%0Ab"),
        ("%7F in a record key", "a%7F"),
        ("%1B escape in a record key", "%1B%5B2J"),
        ("overlong UTF-8 %C0%AF", "a%C0%AFb"),
        ("invalid UTF-8 %FF", "%FF"),
        ("lone continuation byte %80", "x%80"),
        ("1025-byte key", &"k".repeat(1025)),
    ] {
        c.push(case(
            format!("PUT {name}"),
            op("PUT", rec(key), "v"),
            bad(400, "bad_request"),
        ));
        c.push(case(
            format!("GET {name}"),
            op("GET", rec(key), ""),
            bad(400, "bad_request"),
        ));
    }
    c.push(case(
        "DELETE 1025-byte key",
        op("DELETE", rec(&"k".repeat(1025)), ""),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "empty record key",
        op("PUT", "/v1/databases/ref/records/", "v"),
        bad(404, "not_found"),
    ));

    // ----- record values
    c.push(case(
        "value over the limit (Content-Length)",
        op("PUT", rec("big"), vec![b'v'; LIMIT + 1]),
        bad(413, "too_large"),
    ));
    c.push(case(
        "value over the limit (chunked)",
        Req::Http {
            method: "PUT",
            path: rec("big"),
            auth: Auth::Operator,
            body: vec![b'v'; LIMIT + 1],
            chunked: true,
        },
        bad(413, "too_large"),
    ));
    c.push(case(
        "4 MiB value (Content-Length)",
        op("PUT", rec("big"), vec![b'v'; 4 << 20]),
        bad(413, "too_large"),
    ));
    c.push(case(
        "JSON body over 1 MiB",
        op(
            "POST",
            "/v1/keys",
            format!(
                r#"{{"name":"k-x","description":"{}"}}"#,
                "d".repeat(1 << 20)
            ),
        ),
        bad(413, "too_large"),
    ));
    let mut declared_only = format!(
        "PUT /v1/databases/ref/records/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {{op}}\r\nContent-Length: {}\r\n\r\n",
        1u64 << 40
    )
    .into_bytes();
    declared_only.extend_from_slice(b"only a few bytes");
    c.push(case(
        "1 TiB declared, few bytes sent",
        Req::Bytes(declared_only),
        bad(413, "too_large"),
    ));
    c.push(Case {
        name: "zero-length value is stored".into(),
        req: op("PUT", rec("empty"), ""),
        expect: Expect::Status(204),
        effect: Effect::PutsRecord("ref", "empty".into(), Vec::new()),
    });
    c.push(Case {
        name: "value of exactly the limit is stored".into(),
        req: Req::Http {
            method: "PUT",
            path: rec("at-limit"),
            auth: Auth::Operator,
            body: vec![b'L'; LIMIT],
            chunked: true,
        },
        expect: Expect::Status(204),
        effect: Effect::PutsRecord("ref", "at-limit".into(), vec![b'L'; LIMIT]),
    });

    // ----- authentication
    for (name, auth) in [
        ("missing token", Auth::Missing),
        ("Bearer with an empty token", Auth::Header("Bearer ".into())),
        ("Bearer and spaces only", Auth::Header("Bearer    ".into())),
        ("Bearer without a space", Auth::Header("Bearer".into())),
        (
            "wrong token",
            Auth::Header(format!("Bearer evt_{}", "A".repeat(43))),
        ),
        (
            "Basic scheme",
            Auth::Header("Basic b3BlcmF0b3I6cGFzcw==".into()),
        ),
        ("revoked token", Auth::Revoked),
    ] {
        c.push(case(
            format!("{name}: list keys"),
            http("GET", "/v1/keys", auth.clone(), ""),
            bad(401, "unauthenticated"),
        ));
        c.push(case(
            format!("{name}: put record"),
            http("PUT", rec("intruder"), auth, "x"),
            bad(401, "unauthenticated"),
        ));
    }
    c.push(case(
        "operator token with a suffix",
        http("GET", "/v1/keys", Auth::Header("Bearer {op}x".into()), ""),
        bad(401, "unauthenticated"),
    ));
    c.push(case(
        "operator token truncated",
        http("GET", "/v1/keys", Auth::Header("Bearer {op-1}".into()), ""),
        bad(401, "unauthenticated"),
    ));
    c.push(case(
        "token in a non-UTF-8 header",
        Req::Bytes(
            b"GET /v1/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
                .to_vec(),
        ),
        bad(401, "unauthenticated"),
    ));

    // ----- app token (scoped to `ref`) outside its scope
    let app = |method: &'static str, path: &str, body: &str| {
        http(method, path.to_string(), Auth::App, body.to_string())
    };
    for (method, path, body) in [
        ("GET", "/v1/databases/other/records/o1", ""),
        ("PUT", "/v1/databases/other/records/o1", "overwritten"),
        ("DELETE", "/v1/databases/other/records/o1", ""),
        ("GET", "/v1/databases/other/records", ""),
        ("GET", "/v1/keys", ""),
        ("POST", "/v1/keys", r#"{"name":"k-app"}"#),
        ("GET", "/v1/keys/k-main", ""),
        ("POST", "/v1/keys/k-main/wrap", "{}"),
        ("POST", "/v1/keys/k-free/rotate", ""),
        ("DELETE", "/v1/keys/k-free", ""),
        ("GET", "/v1/authorizations", ""),
        (
            "POST",
            "/v1/authorizations",
            r#"{"source":"databases","target":"*","roles":["Reader"]}"#,
        ),
        ("GET", "/v1/databases", ""),
        ("POST", "/v1/databases", r#"{"name":"db-app"}"#),
        ("GET", "/v1/databases/ref", ""),
        ("DELETE", "/v1/databases/ref", ""),
        ("POST", "/v1/databases/ref/backups", ""),
        ("GET", "/v1/backups", ""),
        ("GET", "/v1/tokens", ""),
        ("POST", "/v1/tokens", r#"{"role":"operator"}"#),
        ("GET", "/v1/audit", ""),
        ("GET", "/v1/audit/verify", ""),
    ] {
        c.push(case(
            format!("app token: {method} {path}"),
            app(method, path, body),
            bad(403, "forbidden"),
        ));
    }
    c.push(case(
        "app token: delete the backup",
        http(
            "DELETE",
            format!("/v1/backups/{}", f.backup_id),
            Auth::App,
            "",
        ),
        bad(403, "forbidden"),
    ));
    c.push(case(
        "app token: revoke the authorization",
        http(
            "DELETE",
            format!("/v1/authorizations/{}", f.authorization_id),
            Auth::App,
            "",
        ),
        bad(403, "forbidden"),
    ));

    // ----- conflicts and states
    c.push(case(
        "duplicate key name",
        op_json("POST", "/v1/keys", json!({"name": "k-main"})),
        bad(409, "conflict"),
    ));
    c.push(case(
        "duplicate key name of a destroyed key",
        op_json("POST", "/v1/keys", json!({"name": "k-dead"})),
        bad(409, "conflict"),
    ));
    c.push(case(
        "duplicate database name",
        op_json("POST", "/v1/databases", json!({"name": "ref"})),
        bad(409, "conflict"),
    ));
    c.push(case(
        "duplicate name of a soft-deleted database",
        op_json("POST", "/v1/databases", json!({"name": "gone"})),
        bad(409, "conflict"),
    ));
    c.push(case(
        "duplicate authorization",
        op_json(
            "POST",
            "/v1/authorizations",
            json!({"source": "databases", "target": "k-main", "roles": ["Reader"]}),
        ),
        bad(409, "duplicate_policy"),
    ));
    c.push(case(
        "duplicate authorization with a repeated role",
        op_json(
            "POST",
            "/v1/authorizations",
            json!({"source": "databases", "target": "k-main", "roles": ["Reader", "Reader"]}),
        ),
        bad(409, "duplicate_policy"),
    ));
    c.push(case(
        "deleting a database twice",
        op("DELETE", "/v1/databases/gone", ""),
        bad(409, "database_deleted"),
    ));
    c.push(case(
        "reading a soft-deleted database",
        op("GET", "/v1/databases/gone/records/x", ""),
        bad(409, "database_deleted"),
    ));
    c.push(case(
        "writing a soft-deleted database",
        op("PUT", "/v1/databases/gone/records/x", "v"),
        bad(409, "database_deleted"),
    ));
    c.push(case(
        "restoring an active database",
        op("POST", "/v1/databases/ref/restore", ""),
        bad(409, "conflict"),
    ));
    c.push(case(
        "restoring an unknown database",
        op("POST", "/v1/databases/nope/restore", ""),
        bad(404, "not_found"),
    ));
    for (name, method, path) in [
        ("rotate", "POST", "/v1/keys/k-dead/rotate"),
        ("disable", "POST", "/v1/keys/k-dead/disable"),
        ("enable", "POST", "/v1/keys/k-dead/enable"),
        ("delete", "DELETE", "/v1/keys/k-dead"),
        ("force-delete", "DELETE", "/v1/keys/k-dead?force=true"),
        ("wrap with", "POST", "/v1/keys/k-dead/wrap"),
    ] {
        let body = if path.ends_with("/wrap") { "{}" } else { "" };
        c.push(case(
            format!("{name} a destroyed key"),
            op(method, path, body),
            bad(423, "key_destroyed"),
        ));
    }
    c.push(case(
        "wrap with a suspended key",
        op("POST", "/v1/keys/k-susp/wrap", "{}"),
        bad(423, "key_suspended"),
    ));
    c.push(case(
        "database on a suspended key",
        op_json(
            "POST",
            "/v1/databases",
            json!({"name": "db-x", "key": "k-susp"}),
        ),
        bad(423, "key_suspended"),
    ));
    c.push(case(
        "database on a destroyed key",
        op_json(
            "POST",
            "/v1/databases",
            json!({"name": "db-x", "key": "k-dead"}),
        ),
        bad(423, "key_destroyed"),
    ));
    c.push(case(
        "database on a key without authorization",
        op_json(
            "POST",
            "/v1/databases",
            json!({"name": "db-x", "key": "k-free"}),
        ),
        bad(403, "not_authorized_for_key"),
    ));
    c.push(case(
        "database on an unknown key",
        op_json(
            "POST",
            "/v1/databases",
            json!({"name": "db-x", "key": "k-nope"}),
        ),
        bad(404, "not_found"),
    ));
    c.push(case(
        "delete a key in use without force",
        op("DELETE", "/v1/keys/k-main", ""),
        bad(409, "key_in_use"),
    ));
    c.push(case(
        "delete a key with force=yes",
        op("DELETE", "/v1/keys/k-main?force=yes", ""),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "delete a key with a misspelt flag",
        op("DELETE", "/v1/keys/k-main?forse=true", ""),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "database with a provider key's id",
        op_json(
            "POST",
            "/v1/databases",
            json!({"name": "db-x", "key": f.provider_key}),
        ),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "authorization for a provider key",
        op_json(
            "POST",
            "/v1/authorizations",
            json!({"source": "databases", "target": f.provider_key, "roles": ["Reader"]}),
        ),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "disable a provider key",
        op("POST", format!("/v1/keys/{}/disable", f.provider_key), ""),
        bad(403, "forbidden"),
    ));
    c.push(case(
        "authorization with an unknown source",
        op_json(
            "POST",
            "/v1/authorizations",
            json!({"source": "tables", "target": "k-free", "roles": ["Reader"]}),
        ),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "authorization with an unknown role",
        op_json(
            "POST",
            "/v1/authorizations",
            json!({"source": "databases", "target": "k-free", "roles": ["Writer"]}),
        ),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "authorization with no roles",
        op_json(
            "POST",
            "/v1/authorizations",
            json!({"source": "databases", "target": "k-free", "roles": []}),
        ),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "restore a backup into an existing name",
        op_json(
            "POST",
            format!("/v1/backups/{}/restore", f.backup_id),
            json!({"into": "ref"}),
        ),
        bad(409, "conflict"),
    ));
    c.push(case(
        "restore a backup into a soft-deleted name",
        op_json(
            "POST",
            format!("/v1/backups/{}/restore", f.backup_id),
            json!({"into": "gone"}),
        ),
        bad(409, "conflict"),
    ));
    for (method, path) in [
        ("GET", "/v1/backups/not-a-uuid"),
        ("DELETE", "/v1/backups/not-a-uuid"),
        ("GET", "/v1/backups/..%2F..%2Fmaster.key"),
        ("GET", "/v1/backups/0b8f6a3e-5d0c-4c8e-9f4a-1f2e3d4c5b6a"),
    ] {
        c.push(case(
            format!("{method} {path}"),
            op(method, path, ""),
            bad(404, "not_found"),
        ));
    }
    c.push(case(
        "restore a backup id that is not a UUID",
        op_json(
            "POST",
            "/v1/backups/not-a-uuid/restore",
            json!({"into": "fresh"}),
        ),
        bad(404, "not_found"),
    ));
    c.push(case(
        "revoke an unknown authorization",
        op("DELETE", "/v1/authorizations/authz-nope", ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "revoke an unknown token",
        op("DELETE", "/v1/tokens/tok_000000000000", ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "app token for an unknown database",
        op_json(
            "POST",
            "/v1/tokens",
            json!({"role": "app", "databases": ["nope"]}),
        ),
        bad(404, "not_found"),
    ));
    c.push(case(
        "app token for no database",
        op_json("POST", "/v1/tokens", json!({"role": "app"})),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "operator token scoped to a database",
        op_json(
            "POST",
            "/v1/tokens",
            json!({"role": "operator", "databases": ["ref"]}),
        ),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "unknown key",
        op("GET", "/v1/keys/k-nope", ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "key named ..",
        op("GET", "/v1/keys/..", ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "wrap with an unknown key",
        op("POST", "/v1/keys/k-nope/wrap", "{}"),
        bad(404, "not_found"),
    ));
    c.push(case(
        "records of an unknown database",
        op("GET", "/v1/databases/nope/records/x", ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "a missing record",
        op("GET", rec("nope"), ""),
        bad(404, "not_found"),
    ));
    c.push(case(
        "deleting a missing record",
        op("DELETE", rec("nope"), ""),
        bad(404, "not_found"),
    ));

    // ----- query strings
    for query in [
        "limit=0",
        "limit=5000",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=",
        "bogus=1",
        "prefix=a&prefix=b&limit=0",
    ] {
        c.push(case(
            format!("record listing ?{query}"),
            op("GET", format!("/v1/databases/ref/records?{query}"), ""),
            bad(400, "bad_request"),
        ));
    }
    c.push(case(
        "audit with an unknown parameter",
        op("GET", "/v1/audit?bogus=1", ""),
        bad(400, "bad_request"),
    ));
    c.push(case(
        "disable with dry_run=maybe",
        op("POST", "/v1/keys/k-free/disable?dry_run=maybe", ""),
        bad(400, "bad_request"),
    ));

    // ----- routing
    for (method, path) in [
        ("PUT", "/v1/keys"),
        ("DELETE", "/v1/databases"),
        ("PATCH", "/v1/databases/ref/records/plain"),
        ("POST", "/v1/databases/ref/records/plain"),
        ("GET", "/v1/keys/k-main/wrap"),
        ("POST", "/v1/health"),
        ("PUT", "/v1/tokens"),
        ("GET", "/v1/databases/ref/restore"),
        ("DELETE", "/v1/audit"),
    ] {
        c.push(case(
            format!("{method} {path}"),
            op(method, path, ""),
            bad(405, "method_not_allowed"),
        ));
    }
    for path in [
        "/v1/nope",
        "/v2/keys",
        "/",
        "/v1",
        "/v1/keys/k-main/explode",
        "/v1/databases/ref/records/a/b",
        "/V1/keys",
    ] {
        c.push(case(
            format!("GET {path}"),
            op("GET", path, ""),
            bad(404, "not_found"),
        ));
    }
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

/// Restoring a soft-deleted database whose period has ended: purge may have won the race (404)
/// or not yet (409 conflict); nothing else, and the database never comes back.
#[tokio::test]
async fn restoring_an_expired_soft_delete_is_refused() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_SOFT_DELETE_PERIOD", "1s")]).await;
    let s = &daemon.socket;
    let t = &daemon.token;
    for name in ["keep", "doomed"] {
        expect(
            json_call(
                s,
                t,
                "POST",
                "/v1/databases",
                Some(&json!({ "name": name })),
            )
            .await,
            201,
            name,
        );
    }
    let put = daemon
        .raw_auth("PUT", "/v1/databases/keep/records/r", b"kept")
        .await;
    assert_eq!(put.0, 204);
    let put = daemon
        .raw_auth("PUT", "/v1/databases/doomed/records/r", b"doomed")
        .await;
    assert_eq!(put.0, 204);
    expect(
        json_call(s, t, "DELETE", "/v1/databases/doomed", None).await,
        200,
        "soft delete",
    );
    // The period is whole seconds: after 2.1 s it has certainly ended.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let keep_before = all_records(&daemon, "keep").await;
    let (status, body) = json_call(s, t, "POST", "/v1/databases/doomed/restore", None).await;
    match (status, body["error"]["code"].as_str()) {
        (409, Some("conflict")) | (404, Some("not_found")) => {}
        other => panic!("restore after expiry: {other:?} {body}"),
    }
    let (status, body) = json_call(s, t, "GET", "/v1/databases/doomed", None).await;
    assert!(
        status == 404 || body["state"] == "deleted",
        "the expired database is back: {status} {body}"
    );
    let records = daemon
        .raw_auth("GET", "/v1/databases/doomed/records/r", b"")
        .await;
    assert_ne!(records.0, 200, "an expired database's record is readable");
    assert_eq!(all_records(&daemon, "keep").await, keep_before);
    let mut expected = BTreeMap::new();
    expected.insert("r".to_string(), b"kept".to_vec());
    assert_eq!(keep_before, expected);
    let report = expect(
        json_call(s, t, "GET", "/v1/audit/verify", None).await,
        200,
        "verify",
    );
    assert_eq!(report["ok"], true, "{report}");
}

/// The daemon still answers after a burst of every malformed request at once.
#[tokio::test]
async fn concurrent_garbage_does_not_stop_the_daemon() {
    let daemon = Daemon::start().await;
    let garbage: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET /v1/keys HTTP/1.1\r\nContent-Length: zz\r\n\r\n".to_vec(),
        b"\xff\xfe\xfd\r\n\r\n".to_vec(),
        b"GET /v1/keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnothex\r\n"
            .to_vec(),
        vec![b'A'; 70 * 1024],
    ];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let socket = daemon.socket.clone();
        let bytes = garbage[i % garbage.len()].clone();
        tasks.push(tokio::spawn(async move {
            send_bytes(&socket, &bytes).await;
        }));
    }
    for task in tasks {
        task.await.expect("garbage sender");
    }
    let (status, body) = send(
        &daemon.socket,
        "GET",
        "/v1/keys",
        &[bearer(&daemon.token)],
        b"",
        false,
    )
    .await;
    assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(&body));
    assert!(hostile_support::health_ok(&daemon.socket).await);
}

/// An invalid percent escape in a record key is malformed input, like invalid UTF-8 after
/// decoding: it must be refused, not stored under the literal text (which a second spelling,
/// `%25ZZ`, also names).
#[tokio::test]
async fn invalid_percent_escapes_in_record_keys_are_refused() {
    let daemon = Daemon::start().await;
    expect(
        json_call(
            &daemon.socket,
            &daemon.token,
            "POST",
            "/v1/databases",
            Some(&json!({"name": "db"})),
        )
        .await,
        201,
        "create db",
    );
    for key in ["a%ZZb", "a%", "%2", "%%", "a%G0"] {
        let path = format!("/v1/databases/db/records/{key}");
        let answer = daemon.raw_auth("PUT", &path, b"v").await;
        common::assert_error_answer(&answer, 400, "bad_request");
    }
    assert!(all_records(&daemon, "db").await.is_empty());
}
