//! The Kubernetes KMS v2 plugin driven by a Python grpcio client generated from
//! the same proto/k8s.io/kms/apis/v2/api.proto (tests/compat_scripts/kms_v2_client.py) over
//! the plugin's Unix socket, with envault's CLI rotating, disabling and shredding the key in
//! between. A missing python3, grpcio or grpcio-tools fails the test.

#![cfg(feature = "external-suites")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Daemon;
use serde_json::Value;

struct Kms {
    socket: PathBuf,
    gen: PathBuf,
}

impl Kms {
    /// One client call; the script's JSON answer (`ok`, or `code` and `details`).
    fn call(&self, args: &[&str]) -> Value {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat_scripts/kms_v2_client.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&self.gen)
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("python3 must be installed");
        assert!(
            out.status.success(),
            "the grpcio client failed to run (python modules grpcio and grpcio-tools are required):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the client prints JSON")
    }

    fn ok(&self, args: &[&str]) -> Value {
        let answer = self.call(args);
        assert_eq!(answer["ok"], true, "{args:?}: {answer}");
        answer
    }

    fn fails(&self, args: &[&str], code: &str, needle: &str) {
        let answer = self.call(args);
        assert_eq!(answer["ok"], false, "{args:?} succeeded: {answer}");
        assert_eq!(answer["code"], code, "{args:?}: {answer}");
        let details = answer["details"].as_str().unwrap_or_default();
        assert!(
            details.contains(needle),
            "{args:?}: {needle:?} not in {details:?}"
        );
    }

    fn status(&self) -> (String, String) {
        let s = self.ok(&["status"]);
        assert_eq!(s["version"], "v2");
        (
            s["healthz"].as_str().unwrap().to_string(),
            s["key_id"].as_str().unwrap().to_string(),
        )
    }

    fn encrypt(&self, plaintext: &[u8]) -> (String, String) {
        let e = self.ok(&["encrypt", &hex::encode(plaintext)]);
        (
            e["ciphertext"].as_str().unwrap().to_string(),
            e["key_id"].as_str().unwrap().to_string(),
        )
    }

    fn decrypt(&self, ciphertext: &str, key_id: &str) -> Vec<u8> {
        let d = self.ok(&["decrypt", ciphertext, key_id]);
        hex::decode(d["plaintext"].as_str().unwrap()).unwrap()
    }
}

fn cli_ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.cli(args);
    assert!(
        out.status.success(),
        "envault {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn kms_v2_plugin_with_a_grpcio_client() {
    let scratch = tempfile::tempdir().unwrap();
    let socket = scratch.path().join("kms.sock");
    let daemon = Daemon::start_with_env(&[
        ("ENVAULT_KMS_V2_SOCKET", socket.to_str().unwrap()),
        ("ENVAULT_KMS_V2_KEY", "kek"),
    ])
    .await;
    let kms = Kms {
        socket,
        gen: scratch.path().join("gen"),
    };

    // Not healthy until the key exists: the check really wraps and unwraps.
    let (healthz, _) = kms.status();
    assert!(
        healthz.contains("not found") || healthz.contains("no key"),
        "{healthz}"
    );
    cli_ok(&daemon, &["key", "create", "kek"]);
    let shown: Value =
        serde_json::from_str(&cli_ok(&daemon, &["--json", "key", "show", "kek"])).unwrap();
    let crn = shown["crn"].as_str().unwrap().to_string();
    let (healthz, key_id_1) = kms.status();
    assert_eq!(healthz, "ok");
    assert_eq!(key_id_1, format!("{crn}/v1"));

    // A 32-byte DEK round-trips; the ciphertext is small and names the current key_id.
    let dek: Vec<u8> = (0u8..32).collect();
    let (ct1, id) = kms.encrypt(&dek);
    assert_eq!(id, key_id_1);
    assert!(ct1.len() / 2 <= 1024 && ct1.len() / 2 == 32 + 37, "{ct1}");
    assert_eq!(kms.decrypt(&ct1, &key_id_1), dek);

    // Rotation changes key_id; the old ciphertext still decrypts under its own key_id.
    cli_ok(&daemon, &["key", "rotate", "kek"]);
    let (healthz, key_id_2) = kms.status();
    assert_eq!(healthz, "ok");
    assert_eq!(key_id_2, format!("{crn}/v2"));
    let (ct2, id) = kms.encrypt(&dek);
    assert_eq!(id, key_id_2);
    assert_eq!(kms.decrypt(&ct1, &key_id_1), dek);
    assert_eq!(kms.decrypt(&ct2, &key_id_2), dek);

    // Garbage and mismatches are refused as invalid arguments.
    kms.fails(
        &["decrypt", &"00".repeat(80), &key_id_2],
        "INVALID_ARGUMENT",
        "malformed",
    );
    let mut flipped = hex::decode(&ct2).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    kms.fails(
        &["decrypt", &hex::encode(&flipped), &key_id_2],
        "INVALID_ARGUMENT",
        "authenticate",
    );
    kms.fails(
        &["decrypt", &ct1, &key_id_2],
        "INVALID_ARGUMENT",
        "does not name",
    );
    kms.fails(
        &["decrypt", &"ab".repeat(1025), &key_id_2],
        "INVALID_ARGUMENT",
        "1024",
    );
    kms.fails(
        &["decrypt", &ct2, &"k".repeat(1025)],
        "INVALID_ARGUMENT",
        "key_id",
    );
    kms.fails(
        &["decrypt", &ct2, &key_id_2, "not_fqdn=00"],
        "INVALID_ARGUMENT",
        "fully qualified",
    );
    kms.fails(
        &["encrypt", &"00".repeat(1000)],
        "INVALID_ARGUMENT",
        "plaintext",
    );
    assert_eq!(
        kms.decrypt(&ct2, &key_id_2),
        dek,
        "refusals changed nothing"
    );

    // Disabled: Decrypt fails saying so and Status is unhealthy; enabled again, all is back.
    cli_ok(&daemon, &["key", "disable", "kek"]);
    kms.fails(
        &["decrypt", &ct2, &key_id_2],
        "FAILED_PRECONDITION",
        "disabled",
    );
    let (healthz, _) = kms.status();
    assert!(healthz.contains("suspended"), "{healthz}");
    cli_ok(&daemon, &["key", "enable", "kek"]);
    assert_eq!(kms.decrypt(&ct2, &key_id_2), dek);

    // Shredded: Decrypt fails saying so, for good, and Status reports it.
    cli_ok(&daemon, &["key", "delete", "kek", "--force"]);
    kms.fails(
        &["decrypt", &ct2, &key_id_2],
        "FAILED_PRECONDITION",
        "cryptoshredded",
    );
    kms.fails(
        &["encrypt", &hex::encode(&dek)],
        "FAILED_PRECONDITION",
        "destroyed",
    );
    let (healthz, _) = kms.status();
    assert!(healthz.contains("destroyed"), "{healthz}");

    // Every Encrypt and Decrypt is in the activity log, refusals included.
    let log = cli_ok(
        &daemon,
        &["--json", "audit", "--action", "kms.kmsv2.decrypt"],
    );
    assert!(log.matches("kms.kmsv2.decrypt").count() >= 10, "{log}");
    assert!(
        log.contains("\"denied\"") && log.contains("\"kms-v2\""),
        "{log}"
    );
}
