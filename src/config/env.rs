//! The `ENVAULT_*` variables: one table from variable to setting, applied over the merged file.

/// Every variable, the setting it sets (dotted path) and whether the setting is an integer.
pub const ENV_VARS: &[(&str, &str, bool)] = &[
    ("ENVAULT_SOCKET", "socket", false),
    ("ENVAULT_SOCKET_MODE", "socket_mode", false),
    ("ENVAULT_DATA_DIR", "data_dir", false),
    ("ENVAULT_INSTANCE", "instance", false),
    ("ENVAULT_KEYSTORE_BACKEND", "keystore.backend", false),
    ("ENVAULT_MASTER_KEY_FILE", "keystore.master_key_file", false),
    ("ENVAULT_PKCS11_MODULE", "keystore.pkcs11.module", false),
    (
        "ENVAULT_PKCS11_TOKEN_LABEL",
        "keystore.pkcs11.token_label",
        false,
    ),
    ("ENVAULT_PKCS11_PIN_FILE", "keystore.pkcs11.pin_file", false),
    ("ENVAULT_PKCS11_TIMEOUT", "keystore.pkcs11.timeout", false),
    ("ENVAULT_TRANSIT_ADDRESS", "keystore.transit.address", false),
    (
        "ENVAULT_TRANSIT_TOKEN_FILE",
        "keystore.transit.token_file",
        false,
    ),
    ("ENVAULT_TRANSIT_MOUNT", "keystore.transit.mount", false),
    (
        "ENVAULT_TRANSIT_KEY_PREFIX",
        "keystore.transit.key_prefix",
        false,
    ),
    ("ENVAULT_TRANSIT_TIMEOUT", "keystore.transit.timeout", false),
    ("ENVAULT_TRANSIT_CA_FILE", "keystore.transit.ca_file", false),
    (
        "ENVAULT_SOFT_DELETE_PERIOD",
        "lifecycle.soft_delete_period",
        false,
    ),
    ("ENVAULT_MAX_RECORD_SIZE", "limits.max_record_size", false),
    ("ENVAULT_MAX_RECORD_KEY", "limits.max_record_key", true),
    ("ENVAULT_MAX_CONNECTIONS", "limits.max_connections", true),
    ("ENVAULT_REQUEST_TIMEOUT", "limits.request_timeout", false),
    ("ENVAULT_MIN_FREE_SPACE", "limits.min_free_space", false),
    ("ENVAULT_BACKUP_DIR", "backup.dir", false),
    ("ENVAULT_BACKUP_SCHEDULE", "backup.schedule", false),
    ("ENVAULT_BACKUP_RETENTION", "backup.retention", true),
    (
        "ENVAULT_BACKUP_KEEP_AFTER_PURGE",
        "backup.keep_after_purge",
        false,
    ),
    ("ENVAULT_BACKUP_TARGET", "backup.target", false),
    ("ENVAULT_BACKUP_ENDPOINT", "backup.endpoint", false),
    ("ENVAULT_BACKUP_REGION", "backup.region", false),
    (
        "ENVAULT_BACKUP_CREDENTIALS_FILE",
        "backup.credentials_file",
        false,
    ),
    ("ENVAULT_CACHE_MAX_DEKS", "cache.max_deks", true),
    ("ENVAULT_CACHE_DEK_TTL", "cache.dek_ttl", false),
    ("ENVAULT_TRANSIT_LISTEN", "compat.transit_listen", false),
    ("ENVAULT_KMS_V2_SOCKET", "kms_v2.socket", false),
    ("ENVAULT_KMS_V2_KEY", "kms_v2.key", false),
    ("ENVAULT_RESP_SOCKET", "resp.socket", false),
    ("ENVAULT_STORE_BACKEND", "store.backend", false),
    ("ENVAULT_STORE_URL", "store.url", false),
    ("ENVAULT_STORE_POOL_SIZE", "store.pool_size", true),
    ("ENVAULT_STORE_TIMEOUT", "store.timeout", false),
    ("ENVAULT_STORE_CACHE_SIZE", "store.cache_size", false),
    ("ENVAULT_STORE_SSL_MODE", "store.ssl_mode", false),
    ("ENVAULT_STORE_SSL_ROOT_CERT", "store.ssl_root_cert", false),
    (
        "ENVAULT_AUDIT_DATA_PLANE_SYNC",
        "audit.data_plane_sync",
        false,
    ),
    ("ENVAULT_AUDIT_SYNC_INTERVAL", "audit.sync_interval", false),
    ("ENVAULT_METRICS_LISTEN", "metrics.listen", false),
    ("ENVAULT_KEYS_ROTATE_EVERY", "keys.rotate_every", false),
    (
        "ENVAULT_KEYS_IMPORT_TOKEN_TTL",
        "keys.import_token_ttl",
        false,
    ),
    (
        "ENVAULT_KEYS_IMPORT_TOKEN_MAX_TTL",
        "keys.import_token_max_ttl",
        false,
    ),
    (
        "ENVAULT_KEYS_IMPORT_TOKEN_USES",
        "keys.import_token_uses",
        true,
    ),
    (
        "ENVAULT_KEYS_IMPORT_TOKEN_MAX_USES",
        "keys.import_token_max_uses",
        true,
    ),
    (
        "ENVAULT_KEYS_PLAINTEXT_IMPORT",
        "keys.plaintext_import",
        false,
    ),
    (
        "ENVAULT_DUAL_AUTH_DELETE",
        "lifecycle.dual_auth_delete",
        false,
    ),
];

/// Settings that are switches: "true" / "false" are set as booleans.
const SWITCHES: &[&str] = &["lifecycle.dual_auth_delete", "keys.plaintext_import"];

/// Sets every setting whose variable `get` returns. An integer setting whose value does not
/// parse as one is set as text, so the schema check names it.
pub(super) fn apply(table: &mut toml::Table, get: impl Fn(&str) -> Option<String>) {
    for (var, path, integer) in ENV_VARS {
        let Some(raw) = get(var) else { continue };
        let value = raw
            .parse::<i64>()
            .ok()
            .filter(|_| *integer)
            .map(toml::Value::Integer)
            .or_else(|| {
                raw.parse::<bool>()
                    .ok()
                    .filter(|_| SWITCHES.contains(path))
                    .map(toml::Value::Boolean)
            })
            .unwrap_or(toml::Value::String(raw));
        let (sections, key) = path.rsplit_once('.').unwrap_or(("", path));
        let mut target = Some(&mut *table);
        for part in sections.split('.').filter(|p| !p.is_empty()) {
            target = target
                .and_then(|t| t.get_mut(part))
                .and_then(|v| v.as_table_mut());
        }
        if let Some(target) = target {
            target.insert((*key).to_string(), value);
        }
    }
}
