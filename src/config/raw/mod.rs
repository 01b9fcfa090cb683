//! The configuration as written: the TOML shape, with units still in strings. Merged from the
//! defaults, a file and the environment, then checked and parsed once into a [`Config`].

use std::path::PathBuf;

use serde::Deserialize;

use super::units::{parse_duration, parse_mode, parse_s3_url, parse_size};
use super::{
    AuditConfig, BackupConfig, CacheConfig, CompatConfig, Config, ConfigError, DataPlaneSync,
    KeystoreConfig, KmsV2Config, LifecycleConfig, LimitsConfig, MetricsConfig, Pkcs11Config,
    RespConfig, StoreConfig, TransitConfig, MAX_AUDIT_SYNC_INTERVAL, MIN_STORE_POOL,
};

/// Every setting, as text where units apply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    socket: PathBuf,
    socket_mode: String,
    data_dir: PathBuf,
    instance: String,
    allowed_uids: Vec<u32>,
    keystore: RawKeystore,
    lifecycle: RawLifecycle,
    limits: RawLimits,
    backup: RawBackup,
    cache: RawCache,
    compat: CompatConfig,
    kms_v2: KmsV2Config,
    resp: RespConfig,
    store: RawStore,
    audit: RawAudit,
    metrics: MetricsConfig,
    #[serde(default)]
    keys: RawKeys,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default)]
    rotate_every: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    data_plane_sync: String,
    sync_interval: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: String,
    cache_size: String,
    url: String,
    pool_size: usize,
    timeout: String,
}

// By hand: the URL may hold a password.
impl std::fmt::Debug for RawStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_deks: usize,
    dek_ttl: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeystore {
    backend: String,
    master_key_file: PathBuf,
    pkcs11: RawPkcs11,
    transit: RawTransit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    module: PathBuf,
    token_label: String,
    pin_file: PathBuf,
    timeout: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransit {
    address: String,
    token_file: PathBuf,
    mount: String,
    key_prefix: String,
    timeout: String,
    ca_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
    soft_delete_period: String,
    #[serde(default)]
    dual_auth_delete: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_record_size: String,
    max_record_key: usize,
    max_connections: usize,
    request_timeout: String,
    min_free_space: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    dir: PathBuf,
    schedule: String,
    retention: usize,
    #[serde(default = "no_keep_after_purge")]
    keep_after_purge: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    credentials_file: PathBuf,
}

fn no_keep_after_purge() -> String {
    "0".into()
}

/// A partial file: every key optional, merged over the defaults. Deserialized only to
/// validate a file's shape (unknown keys are errors), so its fields are never read.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overlay {
    socket: Option<PathBuf>,
    socket_mode: Option<String>,
    data_dir: Option<PathBuf>,
    instance: Option<String>,
    allowed_uids: Option<Vec<u32>>,
    keystore: Option<toml::Table>,
    lifecycle: Option<toml::Table>,
    limits: Option<toml::Table>,
    backup: Option<toml::Table>,
    cache: Option<toml::Table>,
    compat: Option<toml::Table>,
    kms_v2: Option<toml::Table>,
    resp: Option<toml::Table>,
    store: Option<toml::Table>,
    audit: Option<toml::Table>,
    metrics: Option<toml::Table>,
    keys: Option<toml::Table>,
}

pub(super) fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.to_string(),
        message: e.to_string(),
    })
}

/// Checks a file's shape early, so that a misspelt key is reported with its file.
pub(super) fn check_overlay(overlay: &toml::Table, origin: &str) -> Result<(), ConfigError> {
    overlay
        .clone()
        .try_into::<Overlay>()
        .map(|_| ())
        .map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })
}

pub(super) fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_sub)), toml::Value::Table(sub)) => merge(base_sub, sub),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn value(key: &'static str, text: &str, expected: &'static str) -> ConfigError {
    ConfigError::Value {
        key,
        value: text.to_string(),
        expected,
    }
}

/// A duration above zero.
fn positive(
    key: &'static str,
    text: &str,
    expected: &'static str,
) -> Result<std::time::Duration, ConfigError> {
    parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| value(key, text, expected))
}

impl RawConfig {
    pub(super) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: "merged configuration".into(),
                message: e.to_string(),
            })
    }

    /// Parses every setting with units and checks every rule; the first violation is the
    /// error.
    pub(super) fn check(self) -> Result<Config, ConfigError> {
        let socket_mode = parse_mode(&self.socket_mode).ok_or_else(|| {
            value(
                "socket_mode",
                &self.socket_mode,
                "an octal mode such as \"0660\"",
            )
        })?;
        let lifecycle = LifecycleConfig {
            soft_delete_period: parse_duration(&self.lifecycle.soft_delete_period).ok_or_else(
                || {
                    value(
                        "lifecycle.soft_delete_period",
                        &self.lifecycle.soft_delete_period,
                        "a duration such as \"9d\", \"12h\", \"30s\"",
                    )
                },
            )?,
            dual_auth_delete: self.lifecycle.dual_auth_delete,
        };
        let keys = super::KeysConfig {
            rotate_every_days: super::units::parse_rotate_every(&self.keys.rotate_every).map_err(
                |_| {
                    value(
                        "keys.rotate_every",
                        &self.keys.rotate_every,
                        "\"off\" or whole days from 1d to 2560d, such as \"90d\"",
                    )
                },
            )?,
        };
        let limits = self.limits.check()?;
        let backup = self.backup.check()?;
        let cache = self.cache.check()?;
        let keystore = self.keystore.check()?;
        let store = self.store.check()?;
        let audit = self.audit.check()?;
        Ok(Config {
            socket: self.socket,
            socket_mode,
            data_dir: self.data_dir,
            instance: self.instance,
            allowed_uids: self.allowed_uids,
            keystore,
            lifecycle,
            limits,
            backup,
            cache,
            compat: self.compat,
            kms_v2: self.kms_v2,
            resp: self.resp,
            store,
            audit,
            metrics: self.metrics,
            keys,
        })
    }
}

impl RawLimits {
    fn check(self) -> Result<LimitsConfig, ConfigError> {
        let max_record_size = parse_size(&self.max_record_size).ok_or_else(|| {
            value(
                "limits.max_record_size",
                &self.max_record_size,
                "a size such as \"16MiB\", \"512KiB\", \"1048576\"",
            )
        })?;
        let min_free_space = parse_size(&self.min_free_space)
            .map(|n| n as u64)
            .ok_or_else(|| {
                value(
                    "limits.min_free_space",
                    &self.min_free_space,
                    "a size such as \"64MiB\"",
                )
            })?;
        let request_timeout = parse_duration(&self.request_timeout).ok_or_else(|| {
            value(
                "limits.request_timeout",
                &self.request_timeout,
                "a duration such as \"30s\"",
            )
        })?;
        Ok(LimitsConfig {
            max_record_size,
            max_record_key: self.max_record_key,
            max_connections: self.max_connections,
            request_timeout,
            min_free_space,
        })
    }
}

impl RawBackup {
    fn check(self) -> Result<BackupConfig, ConfigError> {
        let schedule = if self.schedule.trim().is_empty() {
            None
        } else {
            Some(positive(
                "backup.schedule",
                &self.schedule,
                "a duration such as \"24h\", or empty for no schedule",
            )?)
        };
        let keep_after_purge = parse_duration(&self.keep_after_purge).ok_or_else(|| {
            value(
                "backup.keep_after_purge",
                &self.keep_after_purge,
                "a duration such as \"30d\", or \"0\" to destroy them with the database",
            )
        })?;
        let target = self.target.trim();
        if !target.is_empty() {
            parse_s3_url(target).map_err(|_| {
                value(
                    "backup.target",
                    &self.target,
                    "\"s3://BUCKET/PREFIX\", or empty for the directory backup.dir",
                )
            })?;
        }
        Ok(BackupConfig {
            dir: self.dir,
            schedule,
            retention: self.retention,
            keep_after_purge,
            target: self.target,
            endpoint: self.endpoint,
            region: self.region,
            credentials_file: self.credentials_file,
        })
    }
}

impl RawCache {
    fn check(self) -> Result<CacheConfig, ConfigError> {
        let dek_ttl = parse_duration(&self.dek_ttl)
            .map(|d| Some(d).filter(|d| !d.is_zero()))
            .ok_or_else(|| {
                value(
                    "cache.dek_ttl",
                    &self.dek_ttl,
                    "a duration such as \"5m\", \"1h\", or \"0\" for no expiry",
                )
            })?;
        if self.max_deks == 0 {
            return Err(value("cache.max_deks", "0", "at least 1"));
        }
        Ok(CacheConfig {
            max_deks: self.max_deks,
            dek_ttl,
        })
    }
}

impl RawKeystore {
    fn check(self) -> Result<KeystoreConfig, ConfigError> {
        if !["file", "pkcs11", "transit"].contains(&self.backend.as_str()) {
            return Err(value(
                "keystore.backend",
                &self.backend,
                "\"file\", \"pkcs11\" or \"transit\"",
            ));
        }
        let pkcs11 = Pkcs11Config {
            timeout: positive(
                "keystore.pkcs11.timeout",
                &self.pkcs11.timeout,
                "a duration such as \"5s\"",
            )?,
            module: self.pkcs11.module,
            token_label: self.pkcs11.token_label,
            pin_file: self.pkcs11.pin_file,
        };
        let transit = TransitConfig {
            timeout: positive(
                "keystore.transit.timeout",
                &self.transit.timeout,
                "a duration such as \"5s\"",
            )?,
            address: self.transit.address,
            token_file: self.transit.token_file,
            mount: self.transit.mount,
            key_prefix: self.transit.key_prefix,
            ca_file: self.transit.ca_file,
        };
        Ok(KeystoreConfig {
            backend: self.backend,
            master_key_file: self.master_key_file,
            pkcs11,
            transit,
        })
    }
}

impl RawStore {
    fn check(self) -> Result<StoreConfig, ConfigError> {
        match self.backend.as_str() {
            "embedded" | "sled" => {}
            "postgres" if self.url.trim().is_empty() => {
                return Err(value(
                    "store.url",
                    "",
                    "a PostgreSQL URL (ENVAULT_STORE_URL) when store.backend = \"postgres\"",
                ));
            }
            "postgres" => {}
            other => {
                return Err(value(
                    "store.backend",
                    other,
                    "\"embedded\" or \"postgres\"",
                ))
            }
        }
        // Each cluster lock held (admin, one per running rotation) pins a connection for its
        // life, and its holder still needs connections to work: fewer would deadlock.
        if self.backend == "postgres" && self.pool_size < MIN_STORE_POOL {
            return Err(value(
                "store.pool_size",
                &self.pool_size.to_string(),
                "at least 4 (cluster locks each hold a connection)",
            ));
        }
        let timeout = positive("store.timeout", &self.timeout, "a duration such as \"5s\"")?;
        let cache_size = parse_size(&self.cache_size)
            .filter(|n| *n >= 1 << 20)
            .ok_or_else(|| {
                value(
                    "store.cache_size",
                    &self.cache_size,
                    "a size of at least 1MiB such as \"32MiB\"",
                )
            })? as u64;
        Ok(StoreConfig {
            backend: self.backend,
            cache_size,
            url: self.url,
            pool_size: self.pool_size,
            timeout,
        })
    }
}

impl RawAudit {
    /// `data_plane_sync` with `sync_interval`. The interval is checked in both modes, so that
    /// a bad value is reported before someone switches to "interval".
    fn check(self) -> Result<AuditConfig, ConfigError> {
        let interval = parse_duration(&self.sync_interval)
            .filter(|d| !d.is_zero() && *d <= MAX_AUDIT_SYNC_INTERVAL)
            .ok_or_else(|| {
                value(
                    "audit.sync_interval",
                    &self.sync_interval,
                    "a duration above 0 and at most 10s, such as \"100ms\" or \"1s\"",
                )
            })?;
        let data_plane_sync = match self.data_plane_sync.as_str() {
            "always" => DataPlaneSync::Always,
            "interval" => DataPlaneSync::Interval(interval),
            _ => {
                return Err(value(
                    "audit.data_plane_sync",
                    &self.data_plane_sync,
                    "\"always\" (fsync every event before answering) or \"interval\"",
                ))
            }
        };
        Ok(AuditConfig { data_plane_sync })
    }
}
