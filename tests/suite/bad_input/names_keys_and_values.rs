//! Invalid key and database names, record keys in the path, record values.

use super::*;

pub(super) fn cases(f: &Fixture, c: &mut Vec<Case>) {
    let rec = |key: &str| format!("/v1/databases/ref/records/{key}");
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
}
