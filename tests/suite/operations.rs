//! What operators run the daemon with, through the real `envault serve`: the Prometheus page
//! (scraped and parsed, on the socket and on the loopback port), readiness turning 503 with
//! the failing component named while liveness stays 200, JSON log lines and no colour codes
//! in a log file, systemd's READY/STOPPING datagrams on a socket the test binds, the master
//! key from a systemd credential, shell completions and man pages.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{allow_databases, Daemon};
use serde_json::Value;

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format strictly enough to catch a malformed page: every line
/// is a `# HELP`/`# TYPE` comment or `name{label="value",...} number`.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in split_labels(body) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label in {line:?}"));
                    labels.insert(k.to_string(), v.to_string());
                }
                (name.to_string(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// Splits `a="x",b="y,z"` on the commas outside quotes.
fn split_labels(body: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in body.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// The value of the sample named `name` whose labels include every pair of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(daemon: &Daemon) -> Vec<Sample> {
    let (status, body) = daemon.raw("GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    parse_prometheus(&String::from_utf8(body).expect("metrics are UTF-8"))
}

#[tokio::test]
async fn metrics_page_parses_and_counts_what_happened() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    client.create_key("metered", None, None).await.unwrap();
    allow_databases(&client, "metered").await;
    client
        .create_database("metered-db", Some("metered"), None)
        .await
        .unwrap();
    for i in 0..5 {
        client
            .put_record("metered-db", &format!("r{i}"), b"value")
            .await
            .unwrap();
    }
    for i in 0..5 {
        client
            .get_record("metered-db", &format!("r{i}"))
            .await
            .unwrap();
    }
    assert!(client.get_record("metered-db", "absent").await.is_err());

    let samples = scrape(&daemon).await;
    let record_route = "/v1/databases/{db}/records/{rec}";
    let puts = value(
        &samples,
        "envault_http_requests_total",
        &[
            ("route", record_route),
            ("method", "PUT"),
            ("status", "204"),
        ],
    );
    assert_eq!(puts, Some(5.0), "PUTs by route and status");
    let misses = value(
        &samples,
        "envault_http_requests_total",
        &[
            ("route", record_route),
            ("method", "GET"),
            ("status", "404"),
        ],
    );
    assert_eq!(misses, Some(1.0));
    // The raw path (database and record names) never becomes a label.
    assert!(
        samples
            .iter()
            .all(|s| s.labels.values().all(|v| !v.contains("metered-db"))),
        "a label holds a resource name"
    );
    let latency_count = value(
        &samples,
        "envault_http_request_duration_seconds_count",
        &[("route", record_route), ("method", "GET")],
    )
    .expect("a latency histogram per route");
    assert_eq!(latency_count, 6.0);
    assert!(
        samples
            .iter()
            .any(|s| s.name == "envault_http_request_duration_seconds_bucket"
                && s.labels.get("le").map(String::as_str) == Some("+Inf")),
        "histogram buckets"
    );
    let commits = value(&samples, "envault_group_commit_size_count", &[]).unwrap();
    let acknowledged = value(&samples, "envault_group_commit_size_sum", &[]).unwrap();
    assert!(
        commits >= 1.0 && acknowledged >= 5.0,
        "{commits} {acknowledged}"
    );
    assert!(value(&samples, "envault_group_commit_duration_seconds_count", &[]).unwrap() >= 1.0);
    assert!(value(&samples, "envault_dek_cache_hits_total", &[]).unwrap() >= 9.0);
    assert!(value(&samples, "envault_dek_cache_misses_total", &[]).is_some());
    assert!(value(&samples, "envault_audit_fsyncs_total", &[]).unwrap() >= 1.0);
    assert_eq!(
        value(&samples, "envault_keys", &[("state", "active")]),
        Some(1.0),
        "one active key"
    );
    assert_eq!(
        value(&samples, "envault_keys", &[("state", "destroyed")]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "envault_rotation_jobs", &[("state", "running")]),
        Some(0.0)
    );
    for component in ["store", "key_backend", "activity_log"] {
        assert_eq!(
            value(
                &samples,
                "envault_component_up",
                &[("component", component)]
            ),
            Some(1.0),
            "{component}"
        );
    }

    // A rotation shows up as a finished job with its progress.
    let (status, body) = daemon
        .raw_auth("POST", "/v1/keys/metered/rotate", b"{}")
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let samples = scrape(&daemon).await;
    assert_eq!(
        value(&samples, "envault_rotation_jobs", &[("state", "completed")]),
        Some(1.0)
    );
    let key_id = client.get_key("metered").await.unwrap().id;
    assert_eq!(
        value(
            &samples,
            "envault_rotation_deks_done",
            &[("key_id", &key_id)]
        ),
        value(
            &samples,
            "envault_rotation_deks_total",
            &[("key_id", &key_id)]
        ),
    );
}

#[tokio::test]
async fn metrics_listen_serves_the_page_on_loopback_only() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut daemon = Daemon::start_with_env(&[("ENVAULT_METRICS_LISTEN", &addr)]).await;
    let mut stream = std::net::TcpStream::connect(&addr).expect("metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let (status, body) = common::parse_response(&answer).expect("an HTTP answer");
    assert_eq!(status, 200);
    let samples = parse_prometheus(&String::from_utf8(body).unwrap());
    assert!(value(&samples, "envault_keys", &[("state", "active")]).is_some());
    daemon.stop_graceful().await;

    // Anything but loopback stops serve at start, saying why.
    let mut command = daemon.serve_command();
    command.env("ENVAULT_METRICS_LISTEN", "0.0.0.0:9464");
    let output = common::run_with_input(command, b"", common::STARTUP_TIMEOUT);
    assert!(
        !output.status.success(),
        "serve accepted a public metrics address"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[tokio::test]
async fn readiness_names_the_failing_component_while_liveness_stays_up() {
    let daemon = Daemon::start().await;
    let (status, body) = daemon.raw("GET", "/v1/health", &[], b"").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");
    let components = health["components"].as_array().unwrap();
    assert_eq!(components.len(), 3);
    assert!(components.iter().all(|c| c["ok"] == true), "{health}");

    // The activity log moved away underneath the daemon: events would go to a file no
    // reader sees, so the daemon is not ready.
    let log = daemon.dir().join("data/audit.log");
    let moved = daemon.dir().join("audit.log.moved");
    std::fs::rename(&log, &moved).unwrap();
    let (status, body) = daemon.raw("GET", "/v1/health", &[], b"").await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "unavailable");
    let failing: Vec<&Value> = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{health}");
    assert_eq!(failing[0]["component"], "activity_log");
    assert!(
        failing[0]["reason"].as_str().unwrap().contains("audit.log"),
        "{health}"
    );
    let (status, body) = daemon.raw("GET", "/v1/health/live", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["status"],
        "ok"
    );
    let samples = scrape(&daemon).await;
    assert_eq!(
        value(
            &samples,
            "envault_component_up",
            &[("component", "activity_log")]
        ),
        Some(0.0)
    );
    assert!(daemon.log().contains("not ready"), "{}", daemon.log());

    // Put back, ready again.
    std::fs::rename(&moved, &log).unwrap();
    let (status, _) = daemon.raw("GET", "/v1/health", &[], b"").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_text_logs_have_no_colour_codes() {
    let mut daemon = Daemon::start_with_env(&[("ENVAULT_LOG_FORMAT", "json")]).await;
    daemon
        .client()
        .create_key("logged", None, None)
        .await
        .unwrap();
    daemon.stop_graceful().await;
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(object["timestamp"].is_string(), "{line}");
        assert!(object["level"].is_string(), "{line}");
        assert!(object["fields"].is_object(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"message\":\"envault listening\"")),
        "{log}"
    );

    // Text to a file (not a terminal): no escape sequences.
    let mut daemon = Daemon::start().await;
    daemon.stop_graceful().await;
    let log = daemon.log();
    assert!(log.contains("envault listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
}

#[tokio::test]
async fn systemd_hears_ready_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut daemon = Daemon::start_with_env(&[("NOTIFY_SOCKET", path.to_str().unwrap())]).await;
    let mut buffer = [0u8; 512];
    let n = listener.recv(&mut buffer).expect("READY datagram");
    let ready = String::from_utf8_lossy(&buffer[..n]).into_owned();
    let fields: Vec<&str> = ready.lines().collect();
    assert!(fields.contains(&"READY=1"), "{ready}");
    assert!(
        fields.contains(&format!("MAINPID={}", daemon.pid()).as_str()),
        "{ready}"
    );
    // Ready means serving: a request made right after the datagram is answered.
    let (status, _) = daemon.raw("GET", "/v1/health/live", &[], b"").await;
    assert_eq!(status, 200);

    daemon.stop_graceful().await;
    let n = listener.recv(&mut buffer).expect("STOPPING datagram");
    let stopping = String::from_utf8_lossy(&buffer[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
}

#[tokio::test]
async fn master_key_comes_from_a_systemd_credential() {
    let credentials = tempfile::tempdir().unwrap();
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(3))
        .collect();
    let credential = credentials.path().join("master.key");
    std::fs::write(&credential, &key).unwrap();
    // systemd hands credentials over read-only to the service user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o400)).unwrap();
    let credentials_dir = credentials.path().to_str().unwrap().to_string();
    let mut daemon =
        Daemon::start_with_env(&[("CREDENTIALS_DIRECTORY", credentials_dir.as_str())]).await;
    let client = daemon.client();
    client.create_key("credentialed", None, None).await.unwrap();
    daemon.stop_graceful().await;
    assert!(
        !daemon.dir().join("data/master.key").exists(),
        "a master key was created in the data dir despite the credential"
    );

    // Without the credential the keystore cannot be opened: it is sealed by that key.
    let mut command = daemon.serve_command();
    command.env_remove("CREDENTIALS_DIRECTORY");
    command.env("CREDENTIALS_DIRECTORY", daemon.dir().join("no-credentials"));
    let output = common::run_with_input(command, b"", common::STARTUP_TIMEOUT);
    assert!(!output.status.success(), "serve started with the wrong key");
}

#[test]
fn completions_and_man_pages_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let output = std::process::Command::new(common::binary())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.contains("envault"), "{shell}");
        assert!(
            script.contains("rotate"),
            "{shell}: subcommands are completed"
        );
    }
    let output = std::process::Command::new(common::binary())
        .arg("man")
        .output()
        .unwrap();
    assert!(output.status.success());
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.contains(".TH envault 1"), "{page}");
    assert!(page.contains("serve"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(common::binary())
        .args(["man", "--dir"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    for page in ["envault.1", "envault-key.1", "envault-key-rotate.1"] {
        assert!(dir.path().join(page).is_file(), "{page} missing");
    }
    // A usage error is exit status 2.
    let status = std::process::Command::new(common::binary())
        .args(["completions", "tcsh"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}
