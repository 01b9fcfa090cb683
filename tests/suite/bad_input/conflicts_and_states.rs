//! Requests that conflict with the state of a key, database, backup or token.

use super::*;

pub(super) fn cases(f: &Fixture, c: &mut Vec<Case>) {
    let rec = |key: &str| format!("/v1/databases/ref/records/{key}");
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
}
