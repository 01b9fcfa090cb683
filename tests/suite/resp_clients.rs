//! The Redis-protocol front end with real clients, started by the test: `redis-cli` (Debian
//! `redis-tools`) and redis-py (PyPI `redis`, tests/compat_scripts/redis_session.py).
#![cfg(feature = "external-suites")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{allow_databases, Daemon};
use serde_json::Value;

/// A daemon with the RESP socket, `db1` (key `k1`) and `db2` (key `k2`), and an app token on
/// both.
async fn setup() -> (Daemon, PathBuf, String) {
    let daemon = Daemon::start_with_env(&[("ENVAULT_RESP_SOCKET", "resp.sock")]).await;
    let admin = daemon.client();
    for (key, db) in [("k1", "db1"), ("k2", "db2")] {
        admin.create_key(key, None, None).await.expect("create key");
        allow_databases(&admin, key).await;
        admin
            .create_database(db, Some(key), None)
            .await
            .expect("create database");
    }
    let token: Value = admin
        .create_token("app", &["db1".to_string(), "db2".to_string()])
        .await
        .expect("create app token");
    let resp = daemon.dir().join("resp.sock");
    (
        daemon,
        resp,
        token["token"].as_str().expect("token").to_string(),
    )
}

fn redis_cli(socket: &Path, token: &str, args: &[&str]) -> String {
    let out: Output = Command::new("redis-cli")
        .arg("-s")
        .arg(socket)
        .args(["-a", token, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli must be installed (Debian package redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn python(socket: &Path, token: &str, args: &[&str]) -> Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat_scripts/redis_session.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(socket)
        .arg(token)
        .args(args)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "redis-py session failed (the PyPI package `redis` is required):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[tokio::test]
async fn redis_cli_reads_and_writes_records() {
    let (daemon, resp, token) = setup().await;
    assert_eq!(redis_cli(&resp, &token, &["PING"]), "PONG");
    assert_eq!(
        redis_cli(&resp, &token, &["SET", "greeting", "hello world"]),
        "OK"
    );
    assert_eq!(
        redis_cli(&resp, &token, &["GET", "greeting"]),
        "hello world"
    );
    assert_eq!(
        daemon.client().get_record("db1", "greeting").await.unwrap(),
        b"hello world"
    );
    assert_eq!(
        redis_cli(&resp, &token, &["-n", "1", "GET", "greeting"]),
        ""
    );
    assert_eq!(
        redis_cli(&resp, &token, &["MSET", "a", "1", "b", "2"]),
        "OK"
    );
    assert_eq!(redis_cli(&resp, &token, &["MGET", "a", "b", "c"]), "1\n2");
    assert_eq!(redis_cli(&resp, &token, &["DBSIZE"]), "3");
    assert_eq!(redis_cli(&resp, &token, &["DEL", "a", "b"]), "2");
    assert!(redis_cli(&resp, &token, &["SET", "x", "y", "EX", "5"]).contains("no expiry"));
    assert!(
        redis_cli(&resp, &token, &["COMMAND", "COUNT"])
            .parse::<u32>()
            .unwrap()
            > 20
    );
    // Pipe mode: many commands in one stream.
    let mut pipe = Command::new("redis-cli")
        .arg("-s")
        .arg(&resp)
        .args(["-a", &token, "--no-auth-warning", "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli --pipe");
    {
        use std::io::Write as _;
        let mut stdin = pipe.stdin.take().unwrap();
        for i in 0..500 {
            let (key, value) = (format!("bulk:{i}"), format!("v{i}"));
            write!(
                stdin,
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                key.len(),
                value.len()
            )
            .unwrap();
        }
    }
    let out = pipe.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 500"), "{text}");
    assert_eq!(redis_cli(&resp, &token, &["GET", "bulk:499"]), "v499");
    // The operator token is refused.
    let refused = redis_cli(&resp, &daemon.token, &["GET", "greeting"]);
    assert!(
        refused.contains("NOPERM") || refused.contains("NOAUTH"),
        "{refused}"
    );
}

#[tokio::test]
async fn redis_py_covers_every_command_and_the_key_lifecycle() {
    let (daemon, resp, token) = setup().await;
    let summary = python(&resp, &token, &["session"]);
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(summary["set_ex"].as_str().unwrap().contains("no expiry"));
    assert!(summary["unknown"]
        .as_str()
        .unwrap()
        .contains("unknown command"));
    assert_eq!(summary["hello_proto"], 3);
    assert_eq!(summary["config_appendonly"]["appendonly"], "yes");

    let admin = daemon.client();
    admin.disable_key("k1").await.expect("disable k1");
    let err = python(&resp, &token, &["error", "0", "bin"]);
    assert!(
        err["error"].as_str().unwrap().starts_with("KEYSUSPENDED"),
        "{err}"
    );
    admin.enable_key("k1").await.expect("enable k1");
    let fine = python(&resp, &token, &["error", "0", "bin"]);
    assert_eq!(fine["error"], Value::Null, "{fine}");

    admin.delete_key("k2", true).await.expect("shred k2");
    let err = python(&resp, &token, &["error", "1", "other"]);
    assert!(
        err["error"].as_str().unwrap().starts_with("KEYDESTROYED"),
        "{err}"
    );
    assert!(!daemon.log().contains("in db2"));
}
