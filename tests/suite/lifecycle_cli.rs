//! The lifecycle verbs of the `envault` command line against the real daemon: authorizations,
//! rotation jobs followed to completion, disable / enable, dry-run previews, deletion with
//! cryptoshred receipts, soft deletion and restore of databases, and the activity log (query,
//! follow, verify, tamper detection across a restart).

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::cli_output::{fails_with, ok, ok_json};
use common::{unique, Daemon};
use serde_json::Value;

/// The value of a `name:  value` line of human output.
#[track_caller]
fn field(text: &str, name: &str) -> String {
    let prefix = format!("{name}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name:?} field in:\n{text}"))
}

/// The table row (split on whitespace) whose cells include `cell`.
#[track_caller]
fn row(text: &str, cell: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.iter().any(|c| c == cell))
        .unwrap_or_else(|| panic!("no row with {cell:?} in:\n{text}"))
}

/// `key create NAME --json`: the key's CRN.
fn create_key(daemon: &Daemon, name: &str) -> String {
    let key = ok_json(&daemon.cli(&["--json", "key", "create", name]));
    key["crn"].as_str().expect("key crn").to_string()
}

/// `authz grant --source databases --target KEY --role Reader`.
fn grant_databases(daemon: &Daemon, key: &str) -> Value {
    ok_json(&daemon.cli(&[
        "--json",
        "authz",
        "grant",
        "--source",
        "databases",
        "--target",
        key,
        "--role",
        "Reader",
    ]))
}

fn put(daemon: &Daemon, db: &str, rec: &str, value: &[u8]) {
    ok(&daemon.cli_with_stdin(&["put", db, rec], value));
}

#[track_caller]
fn get(daemon: &Daemon, db: &str, rec: &str) -> Vec<u8> {
    let output = daemon.cli(&["get", db, rec]);
    ok(&output);
    output.stdout
}

fn key_version(daemon: &Daemon, key: &str) -> u64 {
    ok_json(&daemon.cli(&["--json", "key", "show", key]))["version"]
        .as_u64()
        .expect("key version")
}

#[tokio::test]
async fn authorizations_grant_list_revoke() {
    let daemon = Daemon::start().await;
    let crn = create_key(&daemon, "authz-key");

    let out = ok(&daemon.cli(&[
        "authz",
        "grant",
        "--source",
        "databases",
        "--target",
        "authz-key",
        "--role",
        "Reader",
    ]));
    assert!(
        out.starts_with(&format!("granted Reader on {crn} to databases (")),
        "{out}"
    );
    let id = out
        .trim_end()
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .expect("id in parentheses")
        .to_string();

    // The same policy again, the key named by CRN this time: refused.
    let stderr = fails_with(
        &daemon.cli(&[
            "authz",
            "grant",
            "--source",
            "databases",
            "--target",
            &crn,
            "--role",
            "Reader",
        ]),
        "duplicate_policy",
    );
    assert!(
        stderr.contains("an access policy with identical attributes and roles already exists"),
        "{stderr}"
    );

    // Different roles are a different policy; `--role` defaults to Reader.
    let delegator = ok_json(&daemon.cli(&[
        "--json",
        "authz",
        "grant",
        "--source",
        "databases",
        "--target",
        "authz-key",
        "--role",
        "Reader",
        "--role",
        "AuthorizationDelegator",
    ]));
    assert_eq!(delegator["target"], crn.as_str());
    let mut roles: Vec<&str> = delegator["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|r| r.as_str().expect("role"))
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["AuthorizationDelegator", "Reader"], "{delegator}");
    let all = ok_json(&daemon.cli(&[
        "--json", "authz", "grant", "--source", "backups", "--target", "*",
    ]));
    assert_eq!(all["target"], "*");
    assert_eq!(all["roles"], serde_json::json!(["Reader"]));

    let listed = ok_json(&daemon.cli(&["--json", "authz", "list"]));
    let ids: Vec<&str> = listed["authorizations"]
        .as_array()
        .expect("authorizations array")
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    for wanted in [
        id.as_str(),
        delegator["id"].as_str().unwrap(),
        all["id"].as_str().unwrap(),
    ] {
        assert!(ids.contains(&wanted), "{wanted} not in {listed}");
    }
    let table = ok(&daemon.cli(&["authz", "list"]));
    assert!(table.starts_with("ID "), "{table}");
    let cells = row(&table, &id);
    assert_eq!(
        cells[1..4],
        ["databases", crn.as_str(), "Reader"],
        "{table}"
    );

    let out = ok(&daemon.cli(&["authz", "revoke", &id]));
    assert_eq!(out.trim_end(), format!("revoked authorization {id}"));
    let table = ok(&daemon.cli(&["authz", "list"]));
    assert!(!table.contains(&id), "{table}");
    fails_with(&daemon.cli(&["authz", "revoke", &id]), "not_found");
    // Revoked, the identical policy can be granted again.
    grant_databases(&daemon, "authz-key");
}

#[tokio::test]
async fn database_under_a_key_needs_an_authorization() {
    let daemon = Daemon::start().await;
    create_key(&daemon, "unauthorized-key");
    fails_with(
        &daemon.cli(&["db", "create", "orphan", "--key", "unauthorized-key"]),
        "not_authorized_for_key",
    );
    // Nothing was created.
    fails_with(&daemon.cli(&["db", "show", "orphan"]), "not_found");
    grant_databases(&daemon, "unauthorized-key");
    ok(&daemon.cli(&["db", "create", "orphan", "--key", "unauthorized-key"]));
}

#[tokio::test]
async fn key_lifecycle_from_rotation_to_cryptoshred() {
    let daemon = Daemon::start().await;
    let key = "life-key";
    let crn = create_key(&daemon, key);
    grant_databases(&daemon, key);
    ok(&daemon.cli(&["db", "create", "life-db", "--key", key]));
    ok(&daemon.cli(&["db", "create", "life-db2", "--key", key]));
    for i in 0..3 {
        put(
            &daemon,
            "life-db",
            &format!("r{i}"),
            format!("value {i}").as_bytes(),
        );
    }
    put(&daemon, "life-db2", "only", b"other");

    // Dry run: the daemon's preview; nothing changes.
    let preview = ok(&daemon.cli(&["key", "rotate", key, "--dry-run"]));
    assert!(
        preview.starts_with(&format!("dry run, nothing changed: would rotate key {crn}")),
        "{preview}"
    );
    assert_eq!(row(&preview, "life-db")[4], "3", "{preview}");
    assert_eq!(row(&preview, "life-db2")[4], "1", "{preview}");
    assert!(
        preview.contains("total: 2 database(s), 0 backup(s), 4 record(s), 2 wrapped DEK(s)"),
        "{preview}"
    );
    let impact = ok_json(&daemon.cli(&["--json", "key", "rotate", key, "--dry-run"]));
    assert_eq!(impact["dry_run"], true);
    assert_eq!(impact["action"], "rotate");
    assert_eq!(impact["total_records"], 4);
    assert_eq!(key_version(&daemon, key), 1);

    // Rotation: job started in the background and followed to completion.
    let output = daemon.cli(&["key", "rotate", key]);
    let out = ok(&output);
    assert!(
        out.contains(&format!("rotated key {key} to version 2")),
        "{out}"
    );
    assert!(
        out.contains("2 DEK(s) and 0 backup header(s) rewrapped"),
        "{out}"
    );
    assert!(out.contains("retired versions: none"), "{out}");
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(
        progress.contains("rotating key life-key to version 2: completed (2/2 DEKs rewrapped"),
        "progress on stderr: {progress}"
    );
    assert_eq!(key_version(&daemon, key), 2);
    assert_eq!(get(&daemon, "life-db", "r1"), b"value 1");

    // Rotation that retires the old versions, JSON answer.
    let rotated = ok_json(&daemon.cli(&["--json", "key", "rotate", key, "--retire-old"]));
    assert_eq!(rotated["version"], 3);
    assert_eq!(rotated["job"]["state"], "completed");
    assert_eq!(rotated["job"]["done"], 2);
    assert_eq!(
        rotated["job"]["retired_versions"],
        serde_json::json!([1, 2])
    );
    assert_eq!(get(&daemon, "life-db", "r2"), b"value 2");
    assert_eq!(get(&daemon, "life-db2", "only"), b"other");
    let out = ok(&daemon.cli(&["key", "rotate", key, "--retire-old"]));
    assert!(out.contains("to version 4"), "{out}");
    assert!(out.contains("retired versions: 3"), "{out}");

    // Disable: preview, then locked, then enabled again.
    let preview = ok(&daemon.cli(&["key", "disable", key, "--dry-run"]));
    assert!(preview.contains("would suspend key"), "{preview}");
    assert_eq!(row(&preview, "life-db")[4], "3", "{preview}");
    assert_eq!(get(&daemon, "life-db", "r0"), b"value 0");
    let out = ok(&daemon.cli(&["key", "disable", key]));
    assert!(out.contains("state suspended"), "{out}");
    fails_with(&daemon.cli(&["get", "life-db", "r0"]), "key_suspended");
    let status = daemon.cli_with_stdin(&["put", "life-db", "r9", "-"], b"x");
    fails_with(&status, "key_suspended");
    let enabled = ok_json(&daemon.cli(&["--json", "key", "enable", key]));
    assert_eq!(enabled["state"], "active");
    assert_eq!(get(&daemon, "life-db", "r0"), b"value 0");

    // Delete without force: refused, naming what the key protects.
    let stderr = fails_with(&daemon.cli(&["key", "delete", key]), "key_in_use");
    assert!(stderr.contains("life-db"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");

    // Dry run of the delete: lists the databases and their records, changes nothing.
    let preview = ok(&daemon.cli(&["key", "delete", key, "--dry-run"]));
    assert!(
        preview.contains(&format!("would cryptoshred key {crn}")),
        "{preview}"
    );
    let cells = row(&preview, "life-db");
    assert_eq!(
        cells[..5],
        ["database", "life-db", "active", "key", "3"],
        "{preview}"
    );
    assert!(preview.contains("4 record(s)"), "{preview}");
    let impact = ok_json(&daemon.cli(&["--json", "key", "delete", key, "--dry-run", "--force"]));
    assert_eq!(impact["action"], "delete");
    assert_eq!(impact["databases"].as_array().unwrap().len(), 2);
    assert_eq!(
        ok_json(&daemon.cli(&["--json", "key", "show", key]))["state"],
        "active"
    );
    assert_eq!(get(&daemon, "life-db", "r1"), b"value 1");

    // Forced: cryptoshred, with a receipt.
    let receipt = ok(&daemon.cli(&["key", "delete", key, "--force"]));
    assert!(
        receipt.starts_with(&format!(
            "destroyed key {crn} (cryptoshred): 2 resource(s) are now unreadable"
        )),
        "{receipt}"
    );
    assert_eq!(field(&receipt, "key"), crn);
    assert_eq!(field(&receipt, "destroyed versions"), "4");
    assert!(field(&receipt, "time").starts_with("20"), "{receipt}");
    let head = field(&receipt, "audit chain head");
    assert_eq!(head.len(), 64, "{receipt}");
    let cells = row(&receipt, "life-db");
    assert_eq!(
        cells[..4],
        ["database", "life-db", "disabled", "key"],
        "{receipt}"
    );
    assert!(receipt.contains("life-db2"), "{receipt}");

    // The receipt's chain head is the hash of the logged event itself.
    let events = ok_json(&daemon.cli(&["--json", "audit", "--action", "kms.secrets.delete"]));
    let deletes: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "success")
        .collect();
    assert_eq!(deletes.len(), 1, "{events}");
    assert_eq!(deletes[0]["target"], crn.as_str());
    assert_eq!(deletes[0]["hash"], head.as_str());
    assert!(deletes[0]["details"].get("audit_chain_head").is_none());
    let lines = ok(&daemon.cli(&["audit", "--action", "kms.secrets.delete"]));
    let shred_line = lines
        .lines()
        .find(|l| l.contains("success"))
        .unwrap_or_else(|| panic!("{lines}"));
    assert!(shred_line.contains("kms.secrets.delete"), "{lines}");
    assert!(shred_line.contains(&crn), "{lines}");
    let refused = lines
        .lines()
        .find(|l| l.contains("failure") || l.contains("denied"))
        .unwrap_or_else(|| panic!("the refused delete is logged too: {lines}"));
    assert!(refused.contains("reason=key_in_use"), "{lines}");

    // Everything under the key is unreadable; metadata stays.
    fails_with(&daemon.cli(&["get", "life-db", "r1"]), "key_destroyed");
    fails_with(&daemon.cli(&["get", "life-db2", "only"]), "key_destroyed");
    let show = ok(&daemon.cli(&["db", "show", "life-db"]));
    assert_eq!(field(&show, "state"), "disabled (key_destroyed)", "{show}");
    let db = ok_json(&daemon.cli(&["--json", "db", "show", "life-db"]));
    assert_eq!(db["state"], "disabled");
    fails_with(
        &daemon.cli(&["key", "delete", key, "--force"]),
        "key_destroyed",
    );
    fails_with(&daemon.cli(&["key", "rotate", key]), "key_destroyed");
}

#[tokio::test]
async fn key_without_data_deletes_without_force() {
    let daemon = Daemon::start().await;
    let crn = create_key(&daemon, "idle-key");
    let preview = ok(&daemon.cli(&["key", "delete", "idle-key", "--dry-run"]));
    assert!(
        preview.contains(&format!("would delete key {crn}: it protects nothing")),
        "{preview}"
    );
    // A key without DEKs rotates at once.
    let out = ok(&daemon.cli(&["key", "rotate", "idle-key"]));
    assert!(out.contains("to version 2"), "{out}");
    let receipt = ok_json(&daemon.cli(&["--json", "key", "delete", "idle-key"]));
    assert_eq!(receipt["key"], crn.as_str());
    assert_eq!(receipt["destroyed_versions"], serde_json::json!([1, 2]));
    assert_eq!(receipt["affected"], serde_json::json!([]));
}

#[tokio::test]
async fn database_soft_delete_and_restore() {
    let daemon = Daemon::start().await;
    let name = unique("soft");
    ok(&daemon.cli(&["db", "create", &name]));
    put(&daemon, &name, "k", b"kept");

    let out = ok(&daemon.cli(&["db", "delete", &name]));
    assert!(
        out.starts_with(&format!(
            "deleted database {name}: state deleted, purge at 20"
        )),
        "{out}"
    );
    fails_with(&daemon.cli(&["get", &name, "k"]), "database_deleted");
    let show = ok(&daemon.cli(&["db", "show", &name]));
    assert_eq!(field(&show, "state"), "deleted", "{show}");
    assert!(field(&show, "purge at").starts_with("20"), "{show}");
    fails_with(&daemon.cli(&["db", "delete", &name]), "database_deleted");

    let out = ok(&daemon.cli(&["db", "restore", &name]));
    assert_eq!(
        out.trim_end(),
        format!("restored database {name}: state active")
    );
    assert_eq!(get(&daemon, &name, "k"), b"kept");
    fails_with(&daemon.cli(&["db", "restore", &name]), "conflict");

    let deleted = ok_json(&daemon.cli(&["--json", "db", "delete", &name]));
    assert_eq!(deleted["state"], "deleted");
    assert!(deleted["purge_at"].is_string(), "{deleted}");
    let restored = ok_json(&daemon.cli(&["--json", "db", "restore", &name]));
    assert_eq!(restored["state"], "active");
    assert!(restored.get("purge_at").is_none(), "{restored}");

    let events = ok(&daemon.cli(&["audit", "--action", "databases.*"]));
    for action in ["databases.create", "databases.delete", "databases.restore"] {
        assert!(events.contains(action), "{action} missing:\n{events}");
    }
}

#[tokio::test]
async fn audit_follow_prints_each_new_event_once() {
    let daemon = Daemon::start().await;
    create_key(&daemon, "follow-1");
    let mut command = daemon.cli_command();
    command
        .args(["audit", "--follow", "--action", "kms.secrets.create"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("spawn audit --follow");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("audit --follow printed no line for {what}"))
    };
    assert!(next("the first key").contains("kms.secrets.create"));
    create_key(&daemon, "follow-2");
    create_key(&daemon, "follow-3");
    let second = next("the second key");
    let third = next("the third key");
    // Three polls at least: nothing printed twice.
    std::thread::sleep(Duration::from_millis(2500));
    let extra: Vec<String> = lines.try_iter().collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(second.contains("kms.secrets.create") && third.contains("success"));
    assert_ne!(second, third);
    assert!(extra.is_empty(), "printed again: {extra:?}");
}

#[tokio::test]
async fn audit_verify_detects_a_tampered_line() {
    let mut daemon = Daemon::start().await;
    let crn = create_key(&daemon, "audited-key");
    grant_databases(&daemon, "audited-key");
    ok(&daemon.cli(&["db", "create", "audited-db", "--key", "audited-key"]));

    let report = ok(&daemon.cli(&["audit", "verify"]));
    assert_eq!(field(&report, "ok"), "true", "{report}");
    assert_eq!(field(&report, "first broken line"), "-", "{report}");
    let json = ok_json(&daemon.cli(&["--json", "audit", "verify"]));
    assert_eq!(json["ok"], true);
    let events = json["events"].as_u64().expect("events checked");
    assert!(events >= 3, "{json}");

    // Change one event in place while the daemon is stopped.
    daemon.stop_graceful().await;
    let path = daemon.data_dir.join("audit.log");
    let text = std::fs::read_to_string(&path).expect("read data/audit.log");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let index = lines
        .iter()
        .position(|l| l.contains("\"kms.secrets.create\"") && l.contains(&crn))
        .unwrap_or_else(|| panic!("no create event for {crn} in:\n{text}"));
    lines[index] = lines[index].replace("\"success\"", "\"failure\"");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write data/audit.log");
    let broken_line = index + 1;

    daemon.restart().await;
    let output = daemon.cli(&["audit", "verify"]);
    assert_eq!(output.status.code(), Some(7), "integrity: {output:?}");
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(field(&report, "ok"), "false", "{report}");
    assert_eq!(
        field(&report, "first broken line"),
        broken_line.to_string(),
        "{report}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: the activity log does not verify: line {broken_line} is broken"
        )),
        "{stderr}"
    );
    let output = daemon.cli(&["--json", "audit", "verify"]);
    assert_eq!(output.status.code(), Some(7));
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(json["ok"], false);
    assert_eq!(json["first_broken_line"], broken_line as u64);
    assert!(json["problem"].is_string(), "{json}");
}
