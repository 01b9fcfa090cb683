//! TLS between envault and PostgreSQL (`[store] ssl_mode`, `ssl_root_cert`), against servers
//! the tests start: one with a certificate from a CA made here with `openssl` (accepting TLS
//! connections only), one without TLS. The daemon's own sessions are checked in the server's
//! `pg_stat_ssl`.

#![cfg(feature = "external-suites")]

use crate::backend_support;
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::pg_support::{Postgres, PASSWORD};
use common::Daemon;
use envault::config::PgSslMode;
use envault::store::postgres::PostgresStore;
use envault::store::Store;

const TIMEOUT: Duration = Duration::from_secs(3);

/// A CA and a server certificate it signed for `localhost` only (not for 127.0.0.1), plus a
/// second CA that signed nothing here.
struct Pki {
    dir: tempfile::TempDir,
}

/// Runs `openssl` with `args` (split on spaces) in `dir`.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .expect("run openssl (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An EC P-256 key, unencrypted.
const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                path,
                &format!(
                    "req -x509 {NEW_KEY} -days 2 -subj /CN=envault-test-{ca} \
                     -addext basicConstraints=critical,CA:TRUE \
                     -addext keyUsage=critical,keyCertSign,cRLSign \
                     -keyout {ca}.key -out {ca}.pem"
                ),
            );
        }
        openssl(
            path,
            &format!("req {NEW_KEY} -subj /CN=localhost -keyout server.key -out server.csr"),
        );
        std::fs::write(
            path.join("server.ext"),
            "subjectAltName = DNS:localhost\nbasicConstraints = CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .expect("write server.ext");
        openssl(
            path,
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -extfile server.ext -out server.crt",
        );
        Pki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A server accepting only TLS connections, with this PKI's server certificate.
    fn tls_server(&self) -> Postgres {
        let mut pg = Postgres::start();
        let read = |name: &str| std::fs::read(self.file(name)).expect("read PKI file");
        pg.enable_tls(&read("server.crt"), &read("server.key"));
        pg
    }
}

/// The URL of database `name` on `pg` through the host name `host` (TCP, with the password).
fn url_via(pg: &Postgres, host: &str, name: &str) -> String {
    format!("postgres://postgres:{PASSWORD}@{host}:{}/{name}", pg.port())
}

/// `pg_stat_ssl.ssl` ("t" or "f") of each session named `envault` on `pg`.
fn envault_sessions(pg: &Postgres) -> Vec<String> {
    pg.psql(
        "postgres",
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'envault'",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn store_env(url: &str, mode: &str, root_cert: Option<&Path>) -> Vec<(String, String)> {
    let mut env = vec![
        ("ENVAULT_STORE_BACKEND".to_string(), "postgres".to_string()),
        ("ENVAULT_STORE_URL".to_string(), url.to_string()),
        ("ENVAULT_STORE_POOL_SIZE".to_string(), "4".to_string()),
        ("ENVAULT_STORE_TIMEOUT".to_string(), "3s".to_string()),
        ("ENVAULT_STORE_SSL_MODE".to_string(), mode.to_string()),
    ];
    if let Some(path) = root_cert {
        env.push((
            "ENVAULT_STORE_SSL_ROOT_CERT".to_string(),
            path.display().to_string(),
        ));
    }
    env
}

async fn start_daemon(env: &[(String, String)]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Daemon::start_with_env(&env).await
}

/// A database with a provider-managed key, records written and read back through the daemon.
async fn round_trip(daemon: &Daemon) {
    let client = daemon.client();
    client
        .create_database("orders", None, None)
        .await
        .expect("create database");
    for i in 0..5 {
        client
            .put_record("orders", &format!("r{i}"), format!("value {i}").as_bytes())
            .await
            .expect("put record");
    }
    for i in 0..5 {
        let value = client
            .get_record("orders", &format!("r{i}"))
            .await
            .expect("get record");
        assert_eq!(value, format!("value {i}").as_bytes());
    }
}

/// Runs `serve` with `env`, expects it to fail, and returns its stderr, checked free of the
/// password.
fn serve_refused(env: &[(String, String)]) -> String {
    let output = backend_support::serve_fails(env);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    stderr
}

#[tokio::test]
async fn verify_full_with_the_right_ca_carries_every_session_over_tls() {
    let pki = Pki::new();
    let pg = pki.tls_server();
    pg.psql("postgres", "CREATE DATABASE envault");
    let url = url_via(&pg, "localhost", "envault");
    let env = store_env(&url, "verify-full", Some(&pki.file("ca.pem")));
    let daemon = start_daemon(&env).await;
    round_trip(&daemon).await;
    assert!(
        daemon.log().contains("ssl_mode=verify-full"),
        "{}",
        daemon.log()
    );

    let sessions = envault_sessions(&pg);
    assert!(!sessions.is_empty(), "no envault session on the server");
    assert!(sessions.iter().all(|ssl| ssl == "t"), "{sessions:?}");
    // The server accepts TLS only (hostssl), so the round trip itself proves encryption too.
    let plain = PostgresStore::connect_with_tls(&url, 2, TIMEOUT, Some(PgSslMode::Disable), None);
    match plain {
        Err(err) => assert!(err.to_string().contains("no pg_hba.conf entry"), "{err}"),
        Ok(_) => panic!("the TLS-only server accepted a plain connection"),
    }
}

#[tokio::test]
async fn a_wrong_ca_or_a_wrong_name_is_refused_naming_tls() {
    let pki = Pki::new();
    let pg = pki.tls_server();
    pg.psql("postgres", "CREATE DATABASE envault");
    let by_name = url_via(&pg, "localhost", "envault");

    // The daemon does not start on a server its CA did not sign.
    let env = store_env(&by_name, "verify-full", Some(&pki.file("other-ca.pem")));
    let stderr = serve_refused(&env);
    assert!(stderr.contains("TLS"), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(envault_sessions(&pg).is_empty());

    // The certificate names localhost, not 127.0.0.1: verify-full refuses the address,
    // verify-ca (chain only) accepts it.
    let by_address = url_via(&pg, "127.0.0.1", "envault");
    let ca = pki.file("ca.pem");
    let err = PostgresStore::connect_with_tls(
        &by_address,
        2,
        TIMEOUT,
        Some(PgSslMode::VerifyFull),
        Some(&ca),
    )
    .err()
    .expect("verify-full accepted a certificate for another name");
    let err = err.to_string();
    assert!(err.contains("TLS"), "{err}");
    assert!(
        err.contains("NotValidForName") || err.contains("not valid for name"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
    for mode in [PgSslMode::VerifyCa, PgSslMode::Require, PgSslMode::Prefer] {
        let root = mode.verifies().then_some(ca.as_path());
        let store = PostgresStore::connect_with_tls(&by_address, 2, TIMEOUT, Some(mode), root)
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert!(store.is_shared());
        assert_eq!(store.ssl_mode(), mode);
        store.record_put(&[7; 16], b"k", b"v".to_vec()).unwrap();
        assert_eq!(
            store.record_get(&[7; 16], b"k").unwrap(),
            Some(b"v".to_vec())
        );
        let sessions = envault_sessions(&pg);
        assert!(
            !sessions.is_empty() && sessions.iter().all(|s| s == "t"),
            "{sessions:?}"
        );
    }
}

#[tokio::test]
async fn require_and_the_remote_default_refuse_a_server_without_tls() {
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE envault");
    let url = pg.url("envault");

    let stderr = serve_refused(&store_env(&url, "require", None));
    assert!(stderr.contains("server does not support TLS"), "{stderr}");

    // No ssl_mode and a host that is not local: verify-full, so the password is not sent to
    // a server that does not offer TLS (hostaddr points the name at this test's server).
    let remote = format!(
        "host=envault-db.invalid hostaddr=127.0.0.1 port={} user=postgres password={PASSWORD} \
         dbname=envault",
        pg.port()
    );
    let stderr = serve_refused(&store_env(&remote, "", None));
    assert!(
        stderr.contains("server does not support TLS")
            || stderr.contains("no trusted CA in the system's store"),
        "{stderr}"
    );
    assert!(envault_sessions(&pg).is_empty());

    // sslmode in the URL is refused, naming the setting to use instead.
    let stderr = serve_refused(&store_env(&format!("{url}?sslmode=require"), "", None));
    assert!(stderr.contains("[store] ssl_mode"), "{stderr}");
}

#[tokio::test]
async fn disable_keeps_plain_connections_as_before() {
    let pg = Postgres::start();
    let url = pg.create_database("envault");
    let daemon = start_daemon(&store_env(&url, "disable", None)).await;
    round_trip(&daemon).await;
    let sessions = envault_sessions(&pg);
    assert!(!sessions.is_empty(), "no envault session on the server");
    assert!(sessions.iter().all(|ssl| ssl == "f"), "{sessions:?}");
}
