//! Bad base64 and key material; ciphertexts that must not open.

use super::*;

pub(super) fn cases(f: &Fixture, c: &mut Vec<Case>) {
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
}
