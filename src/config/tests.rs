//! Loading, units, the environment table and every refusal.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

#[test]
fn defaults_load() {
    let config = Config::load(None).unwrap();
    assert_eq!(config.socket, PathBuf::from("envault.sock"));
    assert_eq!(
        config.lifecycle.soft_delete_period,
        Duration::from_secs(9 * 86_400)
    );
    assert_eq!(config.limits.max_record_size, 16 << 20);
    assert_eq!(config.socket_mode, 0o660);
}

#[test]
fn units() {
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("1mss"), None);
    assert_eq!(parse_duration("x"), None);
    assert_eq!(parse_size("1KiB"), Some(1024));
    assert_eq!(parse_size("3"), Some(3));
    assert_eq!(parse_size("1TB"), None);
}

#[test]
fn env_overrides() {
    let config = Config::load_with(None, |name| match name {
        "ENVAULT_SOFT_DELETE_PERIOD" => Some("5s".into()),
        "ENVAULT_MAX_RECORD_KEY" => Some("64".into()),
        "ENVAULT_SOCKET_MODE" => Some("0600".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.lifecycle.soft_delete_period, Duration::from_secs(5));
    assert_eq!(config.limits.max_record_key, 64);
    assert_eq!(config.socket_mode, 0o600);
}

#[test]
fn backend_sections_from_env() {
    let config = Config::load_with(None, |name| match name {
        "ENVAULT_KEYSTORE_BACKEND" => Some("transit".into()),
        "ENVAULT_TRANSIT_ADDRESS" => Some("http://10.0.0.1:8200".into()),
        "ENVAULT_PKCS11_TOKEN_LABEL" => Some("hsm-a".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.keystore.backend, "transit");
    assert_eq!(config.keystore.transit.address, "http://10.0.0.1:8200");
    assert_eq!(config.keystore.transit.mount, "transit");
    assert_eq!(config.keystore.pkcs11.token_label, "hsm-a");
    assert_eq!(config.keystore.transit.timeout, Duration::from_secs(5));
}

#[test]
fn unknown_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[keystore]\nbackend = \"hsm\"\n").unwrap();
    assert!(matches!(
        Config::load(Some(&path)),
        Err(ConfigError::Value {
            key: "keystore.backend",
            ..
        })
    ));
}

#[test]
fn backup_target_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[backup]\ntarget = \"s3://envault-backups/node-a\"\nendpoint = \"http://127.0.0.1:8333\"\n",
    )
    .unwrap();
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.backup.target, "s3://envault-backups/node-a");
    assert_eq!(config.backup.endpoint, "http://127.0.0.1:8333");
    assert_eq!(config.backup.region, "");
    for bad in ["/var/backups", "s3://No_Such/x", "s3://bucket/../x"] {
        std::fs::write(&path, format!("[backup]\ntarget = \"{bad}\"\n")).unwrap();
        assert!(
            matches!(
                Config::load(Some(&path)),
                Err(ConfigError::Value {
                    key: "backup.target",
                    ..
                })
            ),
            "{bad}"
        );
    }
}

#[test]
fn store_settings() {
    let config = Config::load(None).unwrap();
    assert_eq!(config.store.backend, "embedded");
    assert_eq!(config.store.cache_size, 32 << 20);
    assert_eq!(config.store.pool_size, 16);
    assert_eq!(config.store.timeout, Duration::from_secs(5));

    let config = Config::load_with(None, |name| match name {
        "ENVAULT_STORE_BACKEND" => Some("postgres".into()),
        "ENVAULT_STORE_URL" => Some("postgres://envault:s3cret-pw@127.0.0.1/envault".into()),
        "ENVAULT_STORE_POOL_SIZE" => Some("4".into()),
        "ENVAULT_STORE_TIMEOUT" => Some("2s".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.store.backend, "postgres");
    assert_eq!(config.store.pool_size, 4);
    assert_eq!(config.store.timeout, Duration::from_secs(2));
    // The password never shows through Debug.
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret-pw"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let refused = |text: &str| match Config::load(Some(&path)) {
        Err(ConfigError::Value { key, expected, .. }) => (key, expected),
        other => panic!("{text}: {other:?}"),
    };
    std::fs::write(&path, "[store]\nbackend = \"postgres\"\n").unwrap();
    assert_eq!(refused("no url").0, "store.url");
    std::fs::write(&path, "[store]\nbackend = \"mysql\"\n").unwrap();
    let (key, expected) = refused("unknown backend");
    assert_eq!(key, "store.backend");
    assert!(expected.contains("\"embedded\" or \"postgres\""));
    std::fs::write(&path, "[store]\ntimeout = \"soon\"\n").unwrap();
    assert_eq!(refused("bad timeout").0, "store.timeout");
    std::fs::write(&path, "[store]\ncache_size = \"512KiB\"\n").unwrap();
    assert_eq!(refused("cache below 1 MiB").0, "store.cache_size");
    std::fs::write(
        &path,
        "[store]\nbackend = \"postgres\"\nurl = \"postgres://u@h/db\"\npool_size = 2\n",
    )
    .unwrap();
    assert_eq!(refused("small pool").0, "store.pool_size");
}

#[test]
fn store_tls_settings() {
    let config = Config::load(None).unwrap();
    assert_eq!(config.store.ssl_mode, None);
    assert_eq!(config.store.ssl_root_cert, None);
    let config = Config::load_with(None, |name| match name {
        "ENVAULT_STORE_SSL_MODE" => Some("verify-full".into()),
        "ENVAULT_STORE_SSL_ROOT_CERT" => Some("/etc/envault/pg-ca.pem".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.store.ssl_mode, Some(PgSslMode::VerifyFull));
    assert_eq!(
        config.store.ssl_root_cert.as_deref(),
        Some(std::path::Path::new("/etc/envault/pg-ca.pem"))
    );
    for (text, mode) in [
        ("disable", PgSslMode::Disable),
        ("prefer", PgSslMode::Prefer),
        ("require", PgSslMode::Require),
        ("verify-ca", PgSslMode::VerifyCa),
    ] {
        let config = Config::load_with(None, |name| {
            (name == "ENVAULT_STORE_SSL_MODE").then(|| text.to_string())
        })
        .unwrap();
        assert_eq!(config.store.ssl_mode, Some(mode));
        assert_eq!(mode.as_str(), text);
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let refused = |text: &str| {
        std::fs::write(&path, text).unwrap();
        match Config::load(Some(&path)) {
            Err(ConfigError::Value { key, .. }) => key,
            other => panic!("{text}: {other:?}"),
        }
    };
    assert_eq!(
        refused("[store]\nssl_mode = \"verify\"\n"),
        "store.ssl_mode"
    );
    // A CA file with a mode that never reads it would be a check that does not happen.
    assert_eq!(
        refused("[store]\nssl_mode = \"require\"\nssl_root_cert = \"/ca.pem\"\n"),
        "store.ssl_root_cert"
    );
}

#[test]
fn audit_sync_settings() {
    let config = Config::load(None).unwrap();
    assert_eq!(config.audit.data_plane_sync, DataPlaneSync::Always);

    let config = Config::load_with(None, |name| match name {
        "ENVAULT_AUDIT_DATA_PLANE_SYNC" => Some("interval".into()),
        "ENVAULT_AUDIT_SYNC_INTERVAL" => Some("250ms".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        config.audit.data_plane_sync,
        DataPlaneSync::Interval(Duration::from_millis(250))
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[audit]\ndata_plane_sync = \"interval\"\n").unwrap();
    assert_eq!(
        Config::load(Some(&path)).unwrap().audit.data_plane_sync,
        DataPlaneSync::Interval(Duration::from_millis(100))
    );
    std::fs::write(&path, "[audit]\nsync_interval = \"10s\"\n").unwrap();
    Config::load(Some(&path)).unwrap();

    for (text, key) in [
        ("data_plane_sync = \"never\"", "audit.data_plane_sync"),
        ("data_plane_sync = \"Interval\"", "audit.data_plane_sync"),
        ("sync_interval = \"0ms\"", "audit.sync_interval"),
        ("sync_interval = \"0\"", "audit.sync_interval"),
        ("sync_interval = \"11s\"", "audit.sync_interval"),
        ("sync_interval = \"1m\"", "audit.sync_interval"),
        ("sync_interval = \"soon\"", "audit.sync_interval"),
    ] {
        std::fs::write(&path, format!("[audit]\n{text}\n")).unwrap();
        match Config::load(Some(&path)) {
            Err(err @ ConfigError::Value { key: k, .. }) if k == key => {
                let message = err.to_string();
                assert!(message.contains(key), "{text}: {message}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    std::fs::write(&path, "[audit]\nsync_interval = \"0s\"\n").unwrap();
    let message = Config::load(Some(&path)).unwrap_err().to_string();
    assert_eq!(
        message,
        "invalid value for audit.sync_interval: \"0s\" (a duration above 0 and at most 10s, such as \"100ms\" or \"1s\")"
    );
    std::fs::write(&path, "[audit]\nfsync = \"never\"\n").unwrap();
    assert!(matches!(
        Config::load(Some(&path)),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn file_overlay_rejects_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "sockt = \"x\"\n").unwrap();
    assert!(matches!(
        Config::load(Some(&path)),
        Err(ConfigError::Parse { .. })
    ));
    std::fs::write(&path, "[lifecycle]\nsoft_delete_period = \"3s\"\n").unwrap();
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.lifecycle.soft_delete_period, Duration::from_secs(3));
}

#[test]
fn every_variable_names_a_default_setting() {
    let defaults = toml::Value::Table(raw::parse_table(DEFAULT_CONFIG, "defaults").unwrap());
    for (var, path, integer) in ENV_VARS {
        let setting = path
            .split('.')
            .try_fold(&defaults, |node, part| node.get(part))
            .unwrap_or_else(|| panic!("{var} sets {path}, which the defaults do not have"));
        assert_eq!(setting.is_integer(), *integer, "{var}: {path}");
    }
}

#[test]
fn a_non_integer_for_an_integer_setting_is_refused() {
    let loaded = Config::load_with(None, |name| {
        (name == "ENVAULT_CACHE_MAX_DEKS").then(|| "many".to_string())
    });
    assert!(
        matches!(loaded, Err(ConfigError::Parse { .. })),
        "{loaded:?}"
    );
}

#[test]
fn import_token_settings() {
    let config = Config::load(None).unwrap();
    assert_eq!(config.keys.import_token_ttl, Duration::from_secs(600));
    assert_eq!(
        config.keys.import_token_max_ttl,
        Duration::from_secs(86_400)
    );
    assert_eq!(
        (
            config.keys.import_token_uses,
            config.keys.import_token_max_uses
        ),
        (1, 10)
    );
    assert!(config.keys.plaintext_import);
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let config = Config::load_with(
        None,
        env(&[
            ("ENVAULT_KEYS_IMPORT_TOKEN_TTL", "2s"),
            ("ENVAULT_KEYS_IMPORT_TOKEN_MAX_USES", "3"),
            ("ENVAULT_KEYS_IMPORT_TOKEN_USES", "2"),
            ("ENVAULT_KEYS_PLAINTEXT_IMPORT", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(config.keys.import_token_ttl, Duration::from_secs(2));
    assert_eq!(config.keys.import_token_uses, 2);
    assert!(!config.keys.plaintext_import);
    for bad in [
        &[("ENVAULT_KEYS_IMPORT_TOKEN_TTL", "2d")][..],
        &[("ENVAULT_KEYS_IMPORT_TOKEN_TTL", "0s")],
        &[("ENVAULT_KEYS_IMPORT_TOKEN_MAX_USES", "0")],
        &[("ENVAULT_KEYS_IMPORT_TOKEN_USES", "11")],
    ] {
        let loaded = Config::load_with(None, env(bad));
        assert!(
            matches!(loaded, Err(ConfigError::Value { .. })),
            "{bad:?}: {loaded:?}"
        );
    }
}
