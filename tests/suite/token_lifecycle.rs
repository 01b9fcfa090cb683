//! Named, expiring tokens through the real daemon: `token create --name --ttl`, 401
//! `token_expired` once past the expiry (logged), `token list` with name, role, databases,
//! creation, last use and expiry (never a secret), revocation by name, and the first operator
//! token of a data dir, which never expires.

use crate::common;
use crate::lifecycle_support;

use std::time::Duration;

use common::cli_output::{fails_with, ok};
use common::{assert_error_answer, unique, Daemon};
use envault::client::Method;
use lifecycle_support::{call, events, expect_status, poll, usable_key};
use serde_json::{json, Value};

async fn token_list(daemon: &Daemon) -> Vec<Value> {
    let list = expect_status(
        call(&daemon.client(), Method::GET, "/v1/tokens", None).await,
        200,
        "list tokens",
    );
    list["tokens"].as_array().expect("tokens array").clone()
}

fn find<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("token {id} not in {list:?}"))
}

fn rfc3339(text: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        text.as_str()
            .unwrap_or_else(|| panic!("not a time: {text}")),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_token_with_ttl_through_the_cli_is_listed_without_its_secret() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    usable_key(&client, "k").await;
    let db = unique("payments");
    client.create_database(&db, Some("k"), None).await.unwrap();

    let created: Value = serde_json::from_str(&ok(&daemon.cli(&[
        "--json",
        "token",
        "create",
        "--role",
        "app",
        "--db",
        &db,
        "--name",
        "payments-api",
        "--ttl",
        "30d",
    ])))
    .unwrap();
    let secret = created["token"].as_str().expect("secret shown at creation");
    let id = created["id"].as_str().unwrap();
    let expires = rfc3339(&created["expires_at"]);
    let in_30_days = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    assert!(
        (expires - in_30_days).whole_seconds().abs() < 120,
        "{expires}"
    );

    // The token works on its database.
    let app = daemon.client_with_token(Some(secret));
    app.put_record(&db, "card", b"4111").await.unwrap();

    // Listed with name, role, scope, creation and expiry; the secret appears nowhere.
    let listing = ok(&daemon.cli(&["--json", "token", "list"]));
    assert!(!listing.contains(secret), "secret in token list");
    let list: Value = serde_json::from_str(&listing).unwrap();
    let entry = find(list["tokens"].as_array().unwrap(), id);
    assert_eq!(entry["name"], "payments-api");
    assert_eq!(entry["role"], "app");
    assert_eq!(entry["databases"].as_array().unwrap().len(), 1);
    assert_eq!(rfc3339(&entry["expires_at"]), expires);
    assert_eq!(entry["expired"], false);
    rfc3339(&entry["created_at"]);
    let human = ok(&daemon.cli(&["token", "list"]));
    assert!(human.contains("payments-api"), "{human}");
    assert!(
        human.contains("LAST USED") && human.contains("EXPIRES"),
        "{human}"
    );
    assert!(!human.contains(secret));

    // Names are unique; bad lifetimes and names are refused and create nothing.
    let before = token_list(&daemon).await.len();
    fails_with(
        &daemon.cli(&[
            "token",
            "create",
            "--role",
            "operator",
            "--name",
            "payments-api",
        ]),
        "conflict",
    );
    for ttl in ["0s", "3651d", "soon"] {
        fails_with(
            &daemon.cli(&["token", "create", "--role", "operator", "--ttl", ttl]),
            "bad_request",
        );
    }
    fails_with(
        &daemon.cli(&["token", "create", "--role", "operator", "--name", "../x"]),
        "bad_request",
    );
    assert_eq!(token_list(&daemon).await.len(), before);

    // The creation is logged with name, role and expiry, never the secret.
    let created_events = events(&client, Some("iam.tokens.create")).await;
    let event = created_events
        .iter()
        // Audit targets are CRNs: the token's ends in `:token:<id>`.
        .find(|e| {
            e["target"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!(":token:{id}")))
        })
        .unwrap_or_else(|| panic!("{created_events:?}"));
    assert_eq!(event["details"]["name"], "payments-api");
    assert_eq!(event["details"]["role"], "app");
    assert_eq!(rfc3339(&event["details"]["expires_at"]), expires);
    assert!(!event.to_string().contains(secret));

    // Revocation by name.
    ok(&daemon.cli(&["token", "revoke", "payments-api"]));
    assert!(token_list(&daemon).await.iter().all(|t| t["id"] != id));
    let answer = daemon
        .raw(
            "GET",
            &format!("/v1/databases/{db}/records/card"),
            &[("Authorization".into(), format!("Bearer {secret}"))],
            b"",
        )
        .await;
    assert_error_answer(&answer, 401, "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_gets_token_expired_and_the_refusal_is_logged() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    // An operator token may expire too.
    let created = expect_status(
        call(
            &client,
            Method::POST,
            "/v1/tokens",
            Some(json!({ "role": "operator", "name": "short-lived", "ttl": "2s" })),
        )
        .await,
        201,
        "create token",
    );
    let secret = created["token"].as_str().unwrap().to_string();
    let auth = [("Authorization".to_string(), format!("Bearer {secret}"))];
    let (status, _) = daemon.raw("GET", "/v1/keys", &auth, b"").await;
    assert_eq!(status, 200, "the token works before its expiry");

    poll(Duration::from_secs(10), "the token to expire", || async {
        let answer = daemon.raw("GET", "/v1/keys", &auth, b"").await;
        (answer.0 == 401).then_some(answer)
    })
    .await;
    let answer = daemon.raw("GET", "/v1/keys", &auth, b"").await;
    assert_error_answer(&answer, 401, "token_expired");
    // Creating tokens with it is refused as well (no way to extend itself).
    let answer = daemon
        .raw(
            "POST",
            "/v1/tokens",
            &auth,
            br#"{"role":"operator","ttl":"30d"}"#,
        )
        .await;
    assert_error_answer(&answer, 401, "token_expired");

    let denied = events(&client, Some("auth.denied")).await;
    assert!(
        denied
            .iter()
            .any(|e| e["outcome"] == "denied" && e["reason"] == "token_expired"),
        "{denied:?}"
    );
    let list = token_list(&daemon).await;
    let entry = find(&list, created["id"].as_str().unwrap());
    assert_eq!(entry["expired"], true);
    let human = ok(&daemon.cli(&["token", "list"]));
    assert!(human.contains("(expired)"), "{human}");
    // Still listed until revoked; revoking works.
    ok(&daemon.cli(&["token", "revoke", "short-lived"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_use_is_persisted_and_the_first_operator_token_never_expires() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    // The token the daemon wrote at first start: no expiry, and (used by the harness) a last use.
    let list = token_list(&daemon).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let first = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["role"], "operator");
    assert!(list[0]["expires_at"].is_null(), "{list:?}");

    let created = expect_status(
        call(
            &client,
            Method::POST,
            "/v1/tokens",
            Some(json!({ "role": "operator", "name": "ci" })),
        )
        .await,
        201,
        "create token",
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert!(find(&token_list(&daemon).await, &id)["last_used_at"].is_null());
    let ci = daemon.client_with_token(created["token"].as_str());
    ci.list_keys().await.unwrap();
    let used = poll(
        Duration::from_secs(30),
        "last use to be persisted",
        || async {
            let list = token_list(&daemon).await;
            let entry = find(&list, &id).clone();
            (!entry["last_used_at"].is_null()).then_some(entry)
        },
    )
    .await;
    let at = rfc3339(&used["last_used_at"]);
    assert!((time::OffsetDateTime::now_utc() - at).whole_seconds() < 60);

    // Persisted: it survives even a kill -9, like the tokens themselves.
    daemon.kill9().await;
    daemon.restart().await;
    let list = token_list(&daemon).await;
    assert_eq!(rfc3339(&find(&list, &id)["last_used_at"]), at);
    assert!(find(&list, &first)["expires_at"].is_null());
}
