//! Malformed HTTP (400 or a closed connection) and bodies that are not the expected JSON.

use super::*;

pub(super) fn cases(f: &Fixture, c: &mut Vec<Case>) {
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
}
