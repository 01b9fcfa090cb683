//! The configuration as written: the TOML shape, with units still in strings. Merged from the
//! defaults, a file and the environment, then checked and parsed once into a [`Config`].
//!
//! Parts: `sections` (the checks of each section); here, the TOML shape, merging and the
//! top-level check.

mod keys;
mod sections;

use std::path::PathBuf;

use serde::Deserialize;

use super::units::{parse_duration, parse_mode};
use super::{
    CompatConfig, Config, ConfigError, KmsV2Config, LifecycleConfig, MetricsConfig, RespConfig,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default)]
    rotate_every: String,
    #[serde(default = "default_import_token_ttl")]
    import_token_ttl: String,
    #[serde(default = "default_import_token_max_ttl")]
    import_token_max_ttl: String,
    #[serde(default = "one")]
    import_token_uses: u32,
    #[serde(default = "ten")]
    import_token_max_uses: u32,
    #[serde(default = "yes")]
    plaintext_import: bool,
}

impl Default for RawKeys {
    fn default() -> Self {
        RawKeys {
            rotate_every: String::new(),
            import_token_ttl: default_import_token_ttl(),
            import_token_max_ttl: default_import_token_max_ttl(),
            import_token_uses: one(),
            import_token_max_uses: ten(),
            plaintext_import: yes(),
        }
    }
}

fn default_import_token_ttl() -> String {
    "10m".into()
}

fn default_import_token_max_ttl() -> String {
    "1d".into()
}

fn one() -> u32 {
    1
}

fn ten() -> u32 {
    10
}

fn yes() -> bool {
    true
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
    ssl_mode: String,
    ssl_root_cert: PathBuf,
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
        let keys = self.keys.check()?;
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
