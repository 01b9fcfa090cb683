//! Who may talk to the daemon, and what a hostile or careless client can do to it: bearer
//! tokens (256-bit, shown once, stored only as hashes, scoped, revocable on open connections),
//! the socket (mode, private directory, live and stale sockets, `allowed_uids`), the activity
//! log's peer uid, graceful shutdown with a request in flight, connection limits against slow
//! and idle clients, and process hardening.

mod connections;
mod sockets_and_peers;
mod tokens;

use crate::common;
use crate::hostile_support;

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{assert_error_answer, error_code, run_with_input, Daemon};
use envault::client::Method;
use hostile_support::{
    audit_file_events, bearer, enc, expect, files_containing, health_ok, json_call, my_uid, send,
    serve_command, sigterm, vm_lck_kb, KeepAlive, Spawned,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

async fn create_database(daemon: &Daemon, name: &str) -> Value {
    expect(
        json_call(
            &daemon.socket,
            &daemon.token,
            "POST",
            "/v1/databases",
            Some(&json!({ "name": name })),
        )
        .await,
        201,
        name,
    )
}

/// `POST /v1/tokens` for an app token on `databases`; the answer.
async fn app_token(daemon: &Daemon, databases: &[&str]) -> Value {
    expect(
        json_call(
            &daemon.socket,
            &daemon.token,
            "POST",
            "/v1/tokens",
            Some(&json!({"role": "app", "databases": databases})),
        )
        .await,
        201,
        "create app token",
    )
}

async fn revoke_token(daemon: &Daemon, id: &str) {
    let path = format!("/v1/tokens/{}", enc(id));
    expect(
        json_call(&daemon.socket, &daemon.token, "DELETE", &path, None).await,
        204,
        "revoke token",
    );
}

/// A request with `token`; status and raw body.
async fn with_token(
    daemon: &Daemon,
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    send(&daemon.socket, method, path, &[bearer(token)], body, false).await
}
