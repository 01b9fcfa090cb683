//! A transit outage fails fast and recovers; bad transit and PKCS#11 settings stop serve.

use super::*;

/// The transit server dies, then is paused, mid-run: requests that need an unwrap fail fast
/// with 503 `key_backend_unavailable`, cached DEKs keep serving, nothing is half-written, and
/// the daemon recovers by itself when the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_outage_fails_fast_and_recovers() {
    let mut fixture = Fixture::transit_persistent();
    let mut daemon = fixture.daemon().await;
    let client = daemon.client();
    client
        .create_key("root", None, None)
        .await
        .expect("create key");
    allow_databases(&client, "root").await;
    for db in ["hot", "cold"] {
        client
            .create_database(db, Some("root"), None)
            .await
            .expect("create db");
        client
            .put_record(db, "r", db.as_bytes())
            .await
            .expect("put");
    }
    // A fresh daemon has no DEK cached; reading `hot` caches its DEK, `cold` stays cold.
    daemon.stop_graceful().await;
    daemon.restart().await;
    let client = daemon.client();
    assert_eq!(read(&daemon, "hot", "r").await, b"hot");

    for outage in ["killed", "paused"] {
        let bao = fixture.bao.as_mut().expect("bao");
        if outage == "killed" {
            bao.kill();
        } else {
            bao.pause(true);
        }
        // Served from the DEK cache: reads and writes go on.
        assert_eq!(read(&daemon, "hot", "r").await, b"hot", "{outage}");
        client
            .put_record("hot", outage, b"during outage")
            .await
            .expect("cached write");
        // Needs the server: 503 within the timeout (plus scheduling slack), not a hang.
        let started = Instant::now();
        assert_api_error(
            client.get_record("cold", "r").await,
            503,
            "key_backend_unavailable",
        );
        assert_api_error(
            client.wrap("root", Some(b"x"), &[]).await,
            503,
            "key_backend_unavailable",
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed < 2 * BACKEND_TIMEOUT + Duration::from_secs(3),
            "{outage}: two failing calls took {elapsed:?}"
        );
        // Nothing half-written: a key or database that needs the server is not created.
        assert_api_error(
            client.create_key(&format!("k-{outage}"), None, None).await,
            503,
            "key_backend_unavailable",
        );
        assert_api_error(
            client
                .create_database(&format!("db-{outage}"), Some("root"), None)
                .await,
            503,
            "key_backend_unavailable",
        );
        let keys = client.list_keys().await.expect("list");
        assert!(
            keys.iter().all(|k| k.name != format!("k-{outage}")),
            "{keys:?}"
        );
        let dbs = client.list_databases().await.expect("list dbs");
        assert_eq!(dbs.len(), 2, "{dbs:?}");

        let bao = fixture.bao.as_mut().expect("bao");
        if outage == "killed" {
            bao.restart();
        } else {
            bao.pause(false);
        }
        // Back: the daemon recovers by itself, no restart.
        assert_eq!(read(&daemon, "cold", "r").await, b"cold", "{outage}");
        assert_eq!(read(&daemon, "hot", outage).await, b"during outage");
        client
            .create_key(&format!("k-{outage}"), None, None)
            .await
            .expect("create after outage");
        // `cold` is cached now; the next outage round needs a fresh daemon to be cold again.
        daemon.stop_graceful().await;
        daemon.restart().await;
        assert_eq!(read(&daemon, "hot", "r").await, b"hot");
    }
}

/// Bad transit settings stop `envault serve` at start with one sentence that never shows the
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transit_settings_stop_serve() {
    let fixture = Fixture::start(Kind::Transit);
    let good = fixture.env();
    let with = |name: &str, value: &str| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            good.iter().filter(|(k, _)| k != name).cloned().collect();
        env.push((name.into(), value.into()));
        env
    };
    let unreachable = format!("http://127.0.0.1:{}", backend_support::free_port());
    let cases = [
        (
            with("ENVAULT_TRANSIT_TOKEN", "s.wrong-token-123"),
            "refused the token",
        ),
        (
            with("ENVAULT_TRANSIT_ADDRESS", &unreachable),
            "cannot reach the transit server",
        ),
        (
            with("ENVAULT_TRANSIT_MOUNT", "no-such-mount"),
            "no transit engine is mounted",
        ),
        (
            with("ENVAULT_TRANSIT_ADDRESS", "ftp://127.0.0.1:1"),
            "must start with http",
        ),
        (
            good.iter()
                .filter(|(k, _)| k != "ENVAULT_TRANSIT_TOKEN")
                .cloned()
                .collect(),
            "no transit token",
        ),
    ];
    for (env, expected) in cases {
        let output = serve_fails(&env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(expected),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("wrong-token-123"),
            "the token leaked: {stderr}"
        );
        assert!(
            !stderr.contains(&fixture.bao.as_ref().expect("bao").token),
            "{stderr}"
        );
    }
}

/// Bad PKCS#11 settings stop `envault serve` at start with one sentence that never shows the
/// PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pkcs11_settings_stop_serve() {
    let fixture = Fixture::start(Kind::Pkcs11);
    let good = fixture.env();
    let with = |name: &str, value: &str| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            good.iter().filter(|(k, _)| k != name).cloned().collect();
        env.push((name.into(), value.into()));
        env
    };
    let cases = [
        (
            with("ENVAULT_PKCS11_PIN", "wrong-pin-9876"),
            "refused the PIN",
        ),
        (
            with("ENVAULT_PKCS11_MODULE", "/nonexistent/libpkcs11.so"),
            "does not exist",
        ),
        (
            with("ENVAULT_PKCS11_TOKEN_LABEL", "no-such-token"),
            "no PKCS#11 token labelled",
        ),
        (
            good.iter()
                .filter(|(k, _)| k != "ENVAULT_PKCS11_PIN")
                .cloned()
                .collect(),
            "no PKCS#11 PIN",
        ),
    ];
    for (env, expected) in cases {
        let output = serve_fails(&env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(expected),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("wrong-pin-9876"),
            "the PIN leaked: {stderr}"
        );
        assert!(
            !stderr.contains(&fixture.hsm.as_ref().expect("hsm").pin),
            "{stderr}"
        );
    }
}
