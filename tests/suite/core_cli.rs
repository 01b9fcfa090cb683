//! The `envault` command line end to end against the real daemon: keys, databases and records,
//! human and `--json` output, exit statuses and `error: … (code)` messages.

use crate::common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::cli_output::{fails_with, ok, ok_json};
use common::{allow_databases, run_with_input, Daemon, STARTUP_TIMEOUT};
use serde_json::Value;

/// The lines of a table, header first, split into trimmed cells.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test]
async fn key_commands() {
    let daemon = Daemon::start().await;

    // Generated.
    let out = ok(&daemon.cli(&["key", "create", "gen-key"]));
    assert!(out.starts_with("created key gen-key ("), "{out}");
    assert!(out.trim_end().ends_with(", generated)"), "{out}");

    // Imported from a file of 32 raw bytes (bytes that are neither text base64 nor hex).
    let material: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(200))
        .collect();
    let file = daemon.dir().join("key.bin");
    std::fs::write(&file, &material).unwrap();
    let imported = ok_json(&daemon.cli(&[
        "--json",
        "key",
        "create",
        "file-key",
        "--import",
        file.to_str().unwrap(),
    ]));
    assert_eq!(imported["name"], "file-key");
    assert_eq!(imported["origin"], "imported");
    assert_eq!(imported["state"], "active");
    assert_eq!(imported["version"], 1);
    let imported_id = imported["id"].as_str().unwrap().to_string();
    let imported_crn = imported["crn"].as_str().unwrap().to_string();
    assert!(imported_crn.ends_with(&format!(":key:{imported_id}")));

    // Imported from stdin, raw, then as base64 and hex text.
    let out =
        ok(&daemon.cli_with_stdin(&["key", "create", "stdin-key", "--import", "-"], &material));
    assert!(out.trim_end().ends_with(", imported)"), "{out}");
    let b64 = format!("{}\n", BASE64.encode(&material));
    let out = ok(&daemon.cli_with_stdin(
        &["key", "create", "b64-key", "--import", "-"],
        b64.as_bytes(),
    ));
    assert!(out.trim_end().ends_with(", imported)"), "{out}");
    let hex: String = material.iter().map(|b| format!("{b:02X}")).collect();
    let out = ok(&daemon.cli_with_stdin(
        &["key", "create", "hex-key", "--import", "-"],
        hex.as_bytes(),
    ));
    assert!(out.trim_end().ends_with(", imported)"), "{out}");

    // Wrong sizes and names are refused by the daemon; a missing file by the CLI.
    fails_with(
        &daemon.cli_with_stdin(&["key", "create", "short", "--import", "-"], &[1u8; 31]),
        "bad_request",
    );
    fails_with(
        &daemon.cli_with_stdin(&["key", "create", "long", "--import", "-"], &[1u8; 33]),
        "bad_request",
    );
    fails_with(&daemon.cli(&["key", "create", "gen-key"]), "conflict");
    fails_with(&daemon.cli(&["key", "create", "bad/name"]), "bad_request");
    let missing = daemon.cli(&[
        "key",
        "create",
        "nofile",
        "--import",
        "/nonexistent/key.bin",
    ]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.starts_with("error: cannot read /nonexistent/key.bin"),
        "{stderr}"
    );

    // List: a table with every customer key, and the same as JSON.
    let listed = table(&ok(&daemon.cli(&["key", "list"])));
    assert_eq!(listed[0], ["ID", "NAME", "STATE", "VERSION", "ORIGIN"]);
    let mut rows: Vec<(String, String)> = listed[1..]
        .iter()
        .map(|row| {
            assert_eq!(row.len(), 5, "{row:?}");
            assert_eq!((row[2].as_str(), row[3].as_str()), ("active", "1"));
            (row[1].clone(), row[4].clone())
        })
        .collect();
    rows.sort();
    let expected: Vec<(String, String)> = [
        ("b64-key", "imported"),
        ("file-key", "imported"),
        ("gen-key", "generated"),
        ("hex-key", "imported"),
        ("stdin-key", "imported"),
    ]
    .iter()
    .map(|(n, o)| (n.to_string(), o.to_string()))
    .collect();
    assert_eq!(rows, expected);
    let json = ok_json(&daemon.cli(&["--json", "key", "list"]));
    let names: Vec<&str> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["b64-key", "file-key", "gen-key", "hex-key", "stdin-key"]
    );

    // Show by name (human), by id and CRN (JSON).
    let shown = ok(&daemon.cli(&["key", "show", "file-key"]));
    assert!(shown.contains(&imported_id), "{shown}");
    assert!(shown.contains(&imported_crn), "{shown}");
    assert!(shown
        .lines()
        .any(|l| l.starts_with("origin:") && l.ends_with("imported")));
    assert!(shown
        .lines()
        .any(|l| l.starts_with("state:") && l.ends_with("active")));
    assert!(shown.contains("registrations: none"), "{shown}");
    for reference in [&imported_id, &imported_crn] {
        let json = ok_json(&daemon.cli(&["--json", "key", "show", reference]));
        assert_eq!(json["id"], imported_id.as_str());
        assert_eq!(json["name"], "file-key");
        assert_eq!(json["registrations"], Value::Array(vec![]));
    }
    fails_with(&daemon.cli(&["key", "show", "nope"]), "not_found");

    // The imported material is usable: wrap and unwrap through the API.
    let client = daemon.client();
    let wrapped = client.wrap("stdin-key", Some(b"hello"), &[]).await.unwrap();
    assert_eq!(
        *client
            .unwrap("stdin-key", &wrapped.ciphertext, &[])
            .await
            .unwrap(),
        b"hello"
    );
}

#[tokio::test]
async fn database_commands() {
    let daemon = Daemon::start().await;
    ok(&daemon.cli(&["key", "create", "k1"]));
    allow_databases(&daemon.client(), "k1").await;
    let key = ok_json(&daemon.cli(&["--json", "key", "show", "k1"]));
    let key_id = key["id"].as_str().unwrap();

    let out = ok(&daemon.cli(&["db", "create", "orders", "--key", "k1"]));
    assert!(out.starts_with("created database orders ("), "{out}");
    assert!(
        out.trim_end()
            .ends_with(&format!("under key {key_id}; backups under key k1")),
        "{out}"
    );
    let provider = ok_json(&daemon.cli(&["--json", "db", "create", "scratch"]));
    assert_eq!(provider["name"], "scratch");
    assert_eq!(provider["key_origin"], "provider");
    assert_eq!(provider["state"], "active");
    assert_ne!(provider["key"], key_id);
    let scratch_id = provider["id"].as_str().unwrap().to_string();

    fails_with(&daemon.cli(&["db", "create", "orders"]), "conflict");
    fails_with(
        &daemon.cli(&["db", "create", "x", "--key", "no-such-key"]),
        "not_found",
    );
    fails_with(&daemon.cli(&["db", "show", "no-such-db"]), "not_found");

    // List: table and JSON.
    let listed = table(&ok(&daemon.cli(&["db", "list"])));
    assert_eq!(listed[0], ["NAME", "STATE", "KEY", "ID"]);
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1][0], "orders");
    assert_eq!(listed[1][1], "active");
    assert_eq!(listed[1][2], key_id);
    assert_eq!(listed[2][0], "scratch");
    assert_eq!(listed[2][3], scratch_id);
    let json = ok_json(&daemon.cli(&["db", "list", "--json"]));
    let dbs = json["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 2);
    assert_eq!(dbs[0]["name"], "orders");
    assert_eq!(dbs[0]["key"], key_id);
    assert_eq!(dbs[0]["key_origin"], "generated");
    assert_eq!(dbs[1], provider);

    // Show by name (human) and by id (JSON).
    let shown = ok(&daemon.cli(&["db", "show", "orders"]));
    assert!(shown
        .lines()
        .any(|l| l.starts_with("name:") && l.ends_with("orders")));
    assert!(shown
        .lines()
        .any(|l| l.starts_with("key:") && l.ends_with(key_id)));
    assert!(shown
        .lines()
        .any(|l| l.starts_with("key origin:") && l.ends_with("generated")));
    assert!(shown
        .lines()
        .any(|l| l.starts_with("state:") && l.ends_with("active")));
    assert_eq!(
        ok_json(&daemon.cli(&["--json", "db", "show", &scratch_id])),
        provider
    );

    // The key now shows its registration.
    let shown = ok(&daemon.cli(&["key", "show", "k1"]));
    assert!(shown.contains("registrations:\n"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("database") && l.contains("orders") && l.contains(" key ")),
        "{shown}"
    );
}

#[tokio::test]
async fn record_commands() {
    let daemon = Daemon::start().await;
    ok(&daemon.cli(&["db", "create", "db"]));

    // From a file, from stdin with `-` and with no argument.
    let file = daemon.dir().join("value.txt");
    std::fs::write(&file, b"from a file\n").unwrap();
    assert_eq!(
        ok(&daemon.cli(&["put", "db", "a/file", file.to_str().unwrap()])),
        ""
    );
    assert_eq!(
        ok(&daemon.cli_with_stdin(&["put", "db", "a/dash", "-"], b"dash")),
        ""
    );
    assert_eq!(
        ok(&daemon.cli_with_stdin(&["put", "db", "b/none"], b"none")),
        ""
    );
    // Binary (not UTF-8), empty, and a key with spaces and unicode.
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    ok(&daemon.cli_with_stdin(&["put", "db", "bin ärY", "-"], &binary));
    ok(&daemon.cli_with_stdin(&["put", "db", "empty"], b""));

    let get = |rec: &str| {
        let output = daemon.cli(&["get", "db", rec]);
        assert!(output.status.success(), "get {rec}: {:?}", output);
        output.stdout
    };
    assert_eq!(get("a/file"), b"from a file\n");
    assert_eq!(get("a/dash"), b"dash");
    assert_eq!(get("b/none"), b"none");
    assert_eq!(get("bin ärY"), binary);
    assert_eq!(get("empty"), b"");
    // `--json` does not change a value: it is raw bytes.
    let output = daemon.cli(&["--json", "get", "db", "bin ärY"]);
    assert_eq!(output.stdout, binary);
    // The CLI and the API see the same records.
    assert_eq!(
        daemon.client().get_record("db", "bin ärY").await.unwrap(),
        binary
    );

    // ls: all keys, by prefix, JSON.
    assert_eq!(
        ok(&daemon.cli(&["ls", "db"])),
        "a/dash\na/file\nb/none\nbin ärY\nempty\n"
    );
    assert_eq!(
        ok(&daemon.cli(&["ls", "db", "--prefix", "a/"])),
        "a/dash\na/file\n"
    );
    assert_eq!(ok(&daemon.cli(&["ls", "db", "--prefix", "zzz"])), "");
    let json = ok_json(&daemon.cli(&["--json", "ls", "db", "--prefix", "b"]));
    assert_eq!(json, serde_json::json!({ "keys": ["b/none", "bin ärY"] }));

    // del, then the record is gone for get, del and ls.
    assert_eq!(ok(&daemon.cli(&["del", "db", "a/dash"])), "");
    fails_with(&daemon.cli(&["get", "db", "a/dash"]), "not_found");
    fails_with(&daemon.cli(&["del", "db", "a/dash"]), "not_found");
    assert_eq!(ok(&daemon.cli(&["ls", "db", "--prefix", "a/"])), "a/file\n");

    // Unknown database and missing input file.
    fails_with(&daemon.cli(&["get", "nodb", "r"]), "not_found");
    fails_with(
        &daemon.cli_with_stdin(&["put", "nodb", "r"], b"v"),
        "not_found",
    );
    fails_with(&daemon.cli(&["ls", "nodb"]), "not_found");
    fails_with(&daemon.cli(&["del", "nodb", "r"]), "not_found");
    let missing = daemon.cli(&["put", "db", "r", "/nonexistent/value"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("error: cannot read"));
    fails_with(&daemon.cli(&["get", "db", "r"]), "not_found");
}

#[tokio::test]
async fn ls_follows_pages() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_database("many", None, None).await.unwrap();
    // More than the daemon's default page (100), written by a few clients in parallel.
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..5 {
        let client = daemon.client();
        tasks.spawn(async move {
            for i in 0..50 {
                let key = format!("k{:04}", part * 50 + i);
                client.put_record("many", &key, b"v").await.unwrap();
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let expected: Vec<String> = (0..250).map(|i| format!("k{i:04}")).collect();
    let out = ok(&daemon.cli(&["ls", "many"]));
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    let json = ok_json(&daemon.cli(&["--json", "ls", "many"]));
    let keys: Vec<&str> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys, expected);
    assert!(json.get("next").is_none(), "{json}");
    let out = ok(&daemon.cli(&["ls", "many", "--prefix", "k01"]));
    assert_eq!(out.lines().count(), 100);
    let out = ok(&daemon.cli(&["ls", "many", "--limit", "3"]));
    assert_eq!(out, "k0000\nk0001\nk0002\n");
}

#[tokio::test]
async fn errors_exit_non_zero_with_the_code() {
    let daemon = Daemon::start().await;
    ok(&daemon.cli(&["db", "create", "db"]));

    // A wrong token, from the flag and from ENVAULT_TOKEN.
    fails_with(
        &daemon.cli(&["--token", "evt_wrong", "db", "list"]),
        "unauthenticated",
    );
    let mut command = daemon.cli_command();
    command
        .env("ENVAULT_TOKEN", "evt_wrong")
        .args(["key", "list"]);
    fails_with(
        &run_with_input(command, b"", STARTUP_TIMEOUT),
        "unauthenticated",
    );
    // The right token given explicitly, with no token file to fall back on.
    let mut command = daemon.cli_command();
    command
        .env("ENVAULT_DATA_DIR", daemon.dir().join("elsewhere"))
        .args(["--token", &daemon.token, "db", "list"]);
    let out = ok(&run_with_input(command, b"", STARTUP_TIMEOUT));
    assert!(out.contains("db"), "{out}");
    // No token at all.
    let mut command = daemon.cli_command();
    command
        .env("ENVAULT_DATA_DIR", daemon.dir().join("elsewhere"))
        .args(["db", "list"]);
    fails_with(
        &run_with_input(command, b"", STARTUP_TIMEOUT),
        "unauthenticated",
    );

    // No daemon on the socket: a clear message, no code.
    let mut command = daemon.cli_command_on(&daemon.dir().join("absent.sock"));
    command.args(["db", "list"]);
    let output = run_with_input(command, b"", STARTUP_TIMEOUT);
    assert_eq!(output.status.code(), Some(6), "unavailable");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: cannot connect to envault at ")
            && stderr.contains("absent.sock")
            && stderr.contains("envault serve"),
        "{stderr}"
    );

    // Usage errors are clap's (exit 2), not the daemon's.
    let output = daemon.cli(&["db", "create"]);
    assert_eq!(output.status.code(), Some(2));
    let output = daemon.cli(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}
