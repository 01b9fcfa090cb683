//! Daemon and CLI configuration: embedded defaults (`config/envault.toml`), then an optional
//! file, then `ENVAULT_*` environment variables; the CLI applies its flags last.
//!
//! Text is parsed once, at load: [`Config`] holds typed values (durations, sizes in bytes,
//! modes, paths), so no user of a setting parses it again or can meet a malformed one.
//! - `raw`: the file's shape as written (strings with units), merged and checked into a
//!   [`Config`];
//! - `env`: the one table of `ENVAULT_*` variables and the settings they set;
//! - `units`: durations, sizes, modes and `s3://` targets.
//!
//! This module imports nothing else from envault, so every layer may read its settings.

mod env;
mod raw;
mod units;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use env::ENV_VARS;
pub use units::{
    parse_duration, parse_rotate_every, parse_s3_url, parse_size, MAX_ROTATE_DAYS, MIN_ROTATE_DAYS,
};

/// The defaults, compiled in so that `envault serve` works with no file at all.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/envault.toml");

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// Which source (file path or "defaults").
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A value (duration, size, mode) is malformed.
    #[error("invalid value for {key}: {value:?} ({expected})")]
    Value {
        /// The setting.
        key: &'static str,
        /// The offending value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// The whole configuration, parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Unix socket path.
    pub socket: PathBuf,
    /// Socket file mode bits (at most 0o777).
    pub socket_mode: u32,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Instance name for CRNs.
    pub instance: String,
    /// Peer uids allowed on the socket; empty = any uid the socket mode admits.
    pub allowed_uids: Vec<u32>,
    /// Keystore settings.
    pub keystore: KeystoreConfig,
    /// Lifecycle settings.
    pub lifecycle: LifecycleConfig,
    /// Limits.
    pub limits: LimitsConfig,
    /// Backup settings.
    pub backup: BackupConfig,
    /// DEK cache settings.
    pub cache: CacheConfig,
    /// Drop-in front ends.
    pub compat: CompatConfig,
    /// Kubernetes KMS v2 plugin.
    pub kms_v2: KmsV2Config,
    /// The Redis-protocol front end.
    pub resp: RespConfig,
    /// Where the catalog and records live.
    pub store: StoreConfig,
    /// When activity-log lines are fsynced.
    pub audit: AuditConfig,
    /// The Prometheus metrics page.
    pub metrics: MetricsConfig,
    /// Root-key defaults.
    pub keys: KeysConfig,
}

/// `[metrics]`: `GET /metrics` is always on the socket; `listen` adds a loopback TCP port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Loopback address serving `GET /metrics`, e.g. "127.0.0.1:9464"; empty = off.
    pub listen: String,
}

/// `[keys]`.
#[derive(Debug, Clone, Copy)]
pub struct KeysConfig {
    /// `rotate_every`: rotation period of provider-managed keys in days; `None`: off.
    pub rotate_every_days: Option<u32>,
    /// `import_token_ttl`: validity of an import token whose request names none.
    pub import_token_ttl: Duration,
    /// `import_token_max_ttl`: the longest validity a request may ask for.
    pub import_token_max_ttl: Duration,
    /// `import_token_uses`: uses of an import token whose request names none.
    pub import_token_uses: u32,
    /// `import_token_max_uses`: the most uses a request may ask for.
    pub import_token_max_uses: u32,
    /// `plaintext_import`: whether `POST /v1/keys` still accepts plaintext `payload`.
    pub plaintext_import: bool,
}

impl Default for KeysConfig {
    /// The compiled-in defaults of `config/envault.toml`.
    fn default() -> Self {
        KeysConfig {
            rotate_every_days: None,
            import_token_ttl: Duration::from_secs(600),
            import_token_max_ttl: Duration::from_secs(24 * 3600),
            import_token_uses: 1,
            import_token_max_uses: 10,
            plaintext_import: true,
        }
    }
}

/// Most uses `[keys] import_token_max_uses` may allow: each use is one RSA private-key
/// decryption an importer (or an attacker holding an operator token) can ask for.
pub const MAX_IMPORT_TOKEN_USES: u32 = 1000;

/// `[audit]`: when the activity log's lines are fsynced (`service::audit_sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// `data_plane_sync` with `sync_interval`.
    pub data_plane_sync: DataPlaneSync,
}

/// Longest `[audit] sync_interval`: past it, "interval" would leave a power-loss window that no
/// longer resembles a group commit.
pub const MAX_AUDIT_SYNC_INTERVAL: Duration = Duration::from_secs(10);

/// `[audit] data_plane_sync`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlaneSync {
    /// Every event is on disk before its request is answered.
    Always,
    /// Successful data-plane events (wrap, unwrap, transit and KMS v2 crypto calls) are written
    /// before the answer and fsynced at most this long after; every other event as in
    /// `Always`. A power loss can lose that last interval of them.
    Interval(Duration),
}

/// Smallest `[store] pool_size` for the postgres backend.
pub const MIN_STORE_POOL: usize = 4;

/// `[store]`. The URL may hold a password: it is never logged nor put in errors.
#[derive(Clone)]
pub struct StoreConfig {
    /// "embedded" (fjall in `<data_dir>/fjall`, one node; "sled" is accepted as its old name)
    /// or "postgres" (shared by several nodes).
    pub backend: String,
    /// Most memory the embedded store's block cache holds, in bytes (scans included).
    pub cache_size: u64,
    /// PostgreSQL connection URL (`postgres://user@host/db` or `host=... dbname=...`).
    pub url: String,
    /// Most connections open to the server.
    pub pool_size: usize,
    /// How long a store call may wait for a connection or a statement; past it the request
    /// fails with 503 `store_unavailable`.
    pub timeout: Duration,
    /// TLS to PostgreSQL; `None` = by host (see [`PgSslMode::for_hosts`]).
    pub ssl_mode: Option<PgSslMode>,
    /// PEM file of the CA certificates `verify-ca` and `verify-full` trust; `None` = the
    /// system's trust store.
    pub ssl_root_cert: Option<PathBuf>,
}

/// `[store] ssl_mode`: libpq's `sslmode` values, with libpq's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// Plain TCP (or a Unix socket): nothing is encrypted.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is not checked (encryption only).
    Require,
    /// TLS, and the server's certificate chains to a trusted CA.
    VerifyCa,
    /// TLS, the certificate chains to a trusted CA and names the host connected to.
    VerifyFull,
}

impl PgSslMode {
    /// The names `[store] ssl_mode` accepts, as the error message lists them.
    pub const EXPECTED: &'static str =
        "\"disable\", \"prefer\", \"require\", \"verify-ca\" or \"verify-full\" (or empty)";

    /// Parses a libpq `sslmode` name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// The default when `ssl_mode` is empty: `disable` when every host is a Unix socket or a
    /// loopback address (the traffic never leaves the machine), else `verify-full`, so that a
    /// password never crosses a network in the clear nor goes to an impostor.
    pub fn for_hosts(all_local: bool) -> Self {
        if all_local {
            Self::Disable
        } else {
            Self::VerifyFull
        }
    }

    /// The libpq name, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked against trusted CAs.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

// By hand, so the URL (and its password) never reaches a log through `{:?}` of the config.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = if self.url.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("cache_size", &self.cache_size)
            .field("url", &url)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .finish()
    }
}

/// `[cache]`.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Most DEKs kept unwrapped in memory; the least recently used are evicted past it.
    pub max_deks: usize,
    /// How long an unwrapped DEK may serve before it must be unwrapped again; `None` = no
    /// limit ("0").
    pub dek_ttl: Option<Duration>,
}

/// `[compat]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatConfig {
    /// Loopback address of the transit TCP listener, e.g. "127.0.0.1:8200"; empty = off.
    pub transit_listen: String,
}

/// `[kms_v2]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsV2Config {
    /// Unix socket of the KMS v2 gRPC service; empty = off.
    pub socket: PathBuf,
    /// Name (or id, or CRN) of the root key it encrypts with.
    pub key: String,
}

/// `[resp]`: the Redis-protocol front end (`crate::server::resp`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespConfig {
    /// Unix socket of the RESP listener; empty = off.
    pub socket: PathBuf,
}

/// `[keystore]`.
#[derive(Debug, Clone)]
pub struct KeystoreConfig {
    /// Backend name: "file", "pkcs11" or "transit".
    pub backend: String,
    /// Master key file; empty = `<data_dir>/master.key`.
    pub master_key_file: PathBuf,
    /// `[keystore.pkcs11]`, read when `backend = "pkcs11"`.
    pub pkcs11: Pkcs11Config,
    /// `[keystore.transit]`, read when `backend = "transit"`.
    pub transit: TransitConfig,
}

/// `[keystore.pkcs11]`. The PIN is never in this file: `pin_file` or `ENVAULT_PKCS11_PIN`.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token holding envault's root keys.
    pub token_label: String,
    /// File holding the user PIN; empty = the `ENVAULT_PKCS11_PIN` variable.
    pub pin_file: PathBuf,
    /// How long a token call may take before requests fail with `key_backend_unavailable`.
    pub timeout: Duration,
}

/// `[keystore.transit]`. The token is never in this file: `token_file` or
/// `ENVAULT_TRANSIT_TOKEN`.
#[derive(Debug, Clone)]
pub struct TransitConfig {
    /// Server address, e.g. "https://vault.example:8200".
    pub address: String,
    /// File holding the token; empty = the `ENVAULT_TRANSIT_TOKEN` variable.
    pub token_file: PathBuf,
    /// Mount path of the transit engine.
    pub mount: String,
    /// Prefix of envault's transit key names (`<prefix><key id>`).
    pub key_prefix: String,
    /// Per-request time limit; requests needing the server then fail with 503.
    pub timeout: Duration,
    /// PEM file of CA certificates to trust for an https address; empty = the Mozilla roots.
    pub ca_file: PathBuf,
}

/// `[lifecycle]`.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleConfig {
    /// Soft-deletion period.
    pub soft_delete_period: Duration,
    /// Deleting any customer key needs two different operator tokens.
    pub dual_auth_delete: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// Largest record value, in bytes.
    pub max_record_size: usize,
    /// Largest record key, in bytes.
    pub max_record_key: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Time for a request's headers to arrive (and idle limit of a kept-alive connection).
    /// Bodies have the fixed `server::extract::BODY_TIMEOUT`.
    pub request_timeout: Duration,
    /// Free space the data dir's filesystem keeps, in bytes: writes that would eat into it
    /// are refused with 507 `storage_full`.
    pub min_free_space: u64,
}

/// `[backup]`.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// Backup directory; empty = `<data_dir>/backups`.
    pub dir: PathBuf,
    /// Interval of scheduled backups; `None` = off.
    pub schedule: Option<Duration>,
    /// Scheduled backups kept per database.
    pub retention: usize,
    /// How long backups of a purged database are kept (zero: the purge destroys them).
    pub keep_after_purge: Duration,
    /// `s3://BUCKET/PREFIX` (checked at load); empty = the local directory `dir`.
    pub target: String,
    /// S3 endpoint URL (S3-compatible services); empty = AWS.
    pub endpoint: String,
    /// S3 region; empty = `us-east-1`.
    pub region: String,
    /// AWS shared-credentials file used when no credentials are in the environment.
    pub credentials_file: PathBuf,
}

impl Config {
    /// Defaults, overlaid by `file` when given, then by `ENVAULT_*` variables; parsed and
    /// checked.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, |name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the environment given by `get`.
    fn load_with(
        file: Option<&Path>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table = raw::parse_table(DEFAULT_CONFIG, "defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let origin = path.display().to_string();
            let overlay = raw::parse_table(&text, &origin)?;
            raw::check_overlay(&overlay, &origin)?;
            raw::merge(&mut table, overlay);
        }
        env::apply(&mut table, get);
        raw::RawConfig::from_table(table)?.check()
    }

    /// Master key file path.
    pub fn master_key_path(&self) -> PathBuf {
        if self.keystore.master_key_file.as_os_str().is_empty() {
            // Under systemd, `LoadCredential=master.key:...` hands the key over outside the
            // data dir; it wins over the default path when present.
            if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
                let credential = PathBuf::from(dir).join("master.key");
                if credential.is_file() {
                    return credential;
                }
            }
            self.data_dir.join("master.key")
        } else {
            self.keystore.master_key_file.clone()
        }
    }

    /// Backup directory path.
    pub fn backup_dir(&self) -> PathBuf {
        if self.backup.dir.as_os_str().is_empty() {
            self.data_dir.join("backups")
        } else {
            self.backup.dir.clone()
        }
    }

    /// The operator token file the daemon writes at first start and the CLI reads by default.
    pub fn operator_token_path(&self) -> PathBuf {
        self.data_dir.join("operator.token")
    }
}

#[cfg(test)]
mod tests;
