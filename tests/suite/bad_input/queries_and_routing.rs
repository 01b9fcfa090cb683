//! Query strings and routing.

use super::*;

pub(super) fn cases(c: &mut Vec<Case>) {
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
}
