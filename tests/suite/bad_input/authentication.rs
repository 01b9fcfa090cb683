//! Missing, malformed and revoked tokens; an app token outside its scope.

use super::*;

pub(super) fn cases(f: &Fixture, c: &mut Vec<Case>) {
    let rec = |key: &str| format!("/v1/databases/ref/records/{key}");
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
}
