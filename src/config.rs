//! Daemon and CLI configuration: embedded defaults (`config/envault.toml`), then an optional
//! file, then `ENVAULT_*` environment variables; the CLI applies its flags last.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The defaults, compiled in so that `envault serve` works with no file at all.
pub const DEFAULT_CONFIG: &str = include_str!("../config/envault.toml");

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

/// The whole configuration, as read (strings still unparsed where units apply).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Unix socket path.
    pub socket: PathBuf,
    /// Socket file mode, octal string.
    pub socket_mode: String,
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
    /// DEK cache settings (issue 7).
    pub cache: CacheConfig,
    /// Drop-in front ends (issue 11).
    pub compat: CompatConfig,
    /// Kubernetes KMS v2 plugin (issue 11).
    pub kms_v2: KmsV2Config,
    /// Where the catalog and records live (issue 10).
    pub store: StoreConfig,
    /// When activity-log lines are fsynced.
    pub audit: AuditConfig,
    /// The Prometheus metrics page.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: `GET /metrics` is always on the socket; `listen` adds a loopback TCP port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Loopback address serving `GET /metrics`, e.g. "127.0.0.1:9464"; empty = off.
    pub listen: String,
}

/// `[audit]`: when the activity log's lines are fsynced (`service::audit_sync`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// "always": every event is fsynced before its answer. "interval": successful data-plane
    /// events (wrap, unwrap, transit and KMS v2 crypto calls) are written before the answer and
    /// fsynced within `sync_interval`, so a power loss can lose that last interval of them.
    pub data_plane_sync: String,
    /// Longest time a data-plane line waits for its fsync in "interval" mode, e.g. "100ms".
    pub sync_interval: String,
}

/// Longest `[audit] sync_interval`: past it, "interval" would leave a power-loss window that no
/// longer resembles a group commit.
pub const MAX_AUDIT_SYNC_INTERVAL: Duration = Duration::from_secs(10);

/// `[audit] data_plane_sync`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlaneSync {
    /// Every event is on disk before its request is answered.
    Always,
    /// Successful data-plane events are written before the answer and fsynced at most this
    /// long after; every other event as in `Always`.
    Interval(Duration),
}

/// Smallest `[store] pool_size` for the postgres backend.
pub const MIN_STORE_POOL: usize = 4;

/// `[store]` (issue 10). The URL may hold a password: it is never logged nor put in errors
/// (see `store::postgres::redact`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// "sled" (embedded, one node) or "postgres" (shared by several nodes).
    pub backend: String,
    /// PostgreSQL connection URL (`postgres://user@host/db` or `host=... dbname=...`).
    pub url: String,
    /// Most connections open to the server.
    pub pool_size: usize,
    /// How long a store call may wait for a connection or a statement, e.g. "5s"; past it the
    /// request fails with 503 `store_unavailable`.
    pub timeout: String,
}

// By hand, so the URL (and its password) never reaches a log through `{:?}` of the config.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field(
                "url",
                &if self.url.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `[cache]` (issue 7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Most DEKs kept unwrapped in memory; the least recently used are evicted past it.
    pub max_deks: usize,
    /// How long an unwrapped DEK may serve before it must be unwrapped again; "0" = no limit.
    pub dek_ttl: String,
}

/// `[compat]` (issue 11).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatConfig {
    /// Loopback address of the transit TCP listener, e.g. "127.0.0.1:8200"; empty = off.
    pub transit_listen: String,
}

/// `[kms_v2]` (issue 11).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsV2Config {
    /// Unix socket of the KMS v2 gRPC service; empty = off.
    pub socket: PathBuf,
    /// Name (or id, or CRN) of the root key it encrypts with.
    pub key: String,
}

/// `[keystore]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// `[keystore.pkcs11]` (issue 8). The PIN is never in this file: `pin_file` or
/// `ENVAULT_PKCS11_PIN`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token holding envault's root keys.
    pub token_label: String,
    /// File holding the user PIN; empty = the `ENVAULT_PKCS11_PIN` variable.
    pub pin_file: PathBuf,
    /// How long a token call may take before requests fail with `key_backend_unavailable`.
    pub timeout: String,
}

/// `[keystore.transit]` (issue 8). The token is never in this file: `token_file` or
/// `ENVAULT_TRANSIT_TOKEN`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitConfig {
    /// Server address, e.g. "https://vault.example:8200".
    pub address: String,
    /// File holding the token; empty = the `ENVAULT_TRANSIT_TOKEN` variable.
    pub token_file: PathBuf,
    /// Mount path of the transit engine.
    pub mount: String,
    /// Prefix of envault's transit key names (`<prefix><key id>`).
    pub key_prefix: String,
    /// Per-request time limit, e.g. "5s"; requests needing the server then fail with 503.
    pub timeout: String,
    /// PEM file of CA certificates to trust for an https address; empty = the Mozilla roots.
    pub ca_file: PathBuf,
}

/// `[lifecycle]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Soft-deletion period, e.g. "9d".
    pub soft_delete_period: String,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest record value, e.g. "16MiB".
    pub max_record_size: String,
    /// Largest record key in bytes.
    pub max_record_key: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Time for a request's headers to arrive (and idle limit of a kept-alive connection),
    /// e.g. "30s". Bodies have the fixed `server::extract::BODY_TIMEOUT`.
    pub request_timeout: String,
    /// Free space the data dir's filesystem keeps: writes that would eat into it are refused
    /// with 507 `storage_full`, e.g. "64MiB".
    pub min_free_space: String,
}

/// `[backup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Backup directory; empty = `<data_dir>/backups`.
    pub dir: PathBuf,
    /// Interval of scheduled backups, e.g. "24h"; empty = off.
    pub schedule: String,
    /// Scheduled backups kept per database.
    pub retention: usize,
    /// Issue 9: `s3://BUCKET/PREFIX`; empty = the local directory `dir`.
    #[serde(default)]
    pub target: String,
    /// S3 endpoint URL (S3-compatible services); empty = AWS.
    #[serde(default)]
    pub endpoint: String,
    /// S3 region; empty = `us-east-1`.
    #[serde(default)]
    pub region: String,
    /// AWS shared-credentials file used when no credentials are in the environment.
    #[serde(default)]
    pub credentials_file: PathBuf,
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
    store: Option<toml::Table>,
    audit: Option<toml::Table>,
    metrics: Option<toml::Table>,
}

impl Config {
    /// Defaults, overlaid by `file` when given, then by `ENVAULT_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut table: toml::Table = parse_table(DEFAULT_CONFIG, "defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let origin = path.display().to_string();
            let overlay: toml::Table = parse_table(&text, &origin)?;
            // Validate the overlay's shape early so a typo'd key is reported with its file.
            overlay
                .clone()
                .try_into::<Overlay>()
                .map_err(|e| ConfigError::Parse {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
            merge(&mut table, overlay);
        }
        apply_env(&mut table, |name| std::env::var(name).ok());
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: "merged configuration".into(),
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.socket_mode()?;
        self.soft_delete_period()?;
        self.max_record_size()?;
        self.min_free_space()?;
        self.request_timeout()?;
        self.backup_schedule()?;
        self.dek_ttl()?;
        if self.cache.max_deks == 0 {
            return Err(ConfigError::Value {
                key: "cache.max_deks",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        let target = self.backup.target.trim();
        if !target.is_empty() {
            parse_s3_url(target).map_err(|_| ConfigError::Value {
                key: "backup.target",
                value: self.backup.target.clone(),
                expected: "\"s3://BUCKET/PREFIX\", or empty for the directory backup.dir",
            })?;
        }
        if !["file", "pkcs11", "transit"].contains(&self.keystore.backend.as_str()) {
            return Err(ConfigError::Value {
                key: "keystore.backend",
                value: self.keystore.backend.clone(),
                expected: "\"file\", \"pkcs11\" or \"transit\"",
            });
        }
        self.pkcs11_timeout()?;
        self.transit_timeout()?;
        self.validate_store()?;
        self.audit_sync()?;
        Ok(())
    }

    /// `[audit] data_plane_sync` with `[audit] sync_interval`. The interval is checked in both
    /// modes, so that a bad value is reported before someone switches to "interval".
    pub fn audit_sync(&self) -> Result<DataPlaneSync, ConfigError> {
        let interval = parse_duration(&self.audit.sync_interval)
            .filter(|d| !d.is_zero() && *d <= MAX_AUDIT_SYNC_INTERVAL)
            .ok_or_else(|| ConfigError::Value {
                key: "audit.sync_interval",
                value: self.audit.sync_interval.clone(),
                expected: "a duration above 0 and at most 10s, such as \"100ms\" or \"1s\"",
            })?;
        match self.audit.data_plane_sync.as_str() {
            "always" => Ok(DataPlaneSync::Always),
            "interval" => Ok(DataPlaneSync::Interval(interval)),
            _ => Err(ConfigError::Value {
                key: "audit.data_plane_sync",
                value: self.audit.data_plane_sync.clone(),
                expected: "\"always\" (fsync every event before answering) or \"interval\"",
            }),
        }
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        match self.store.backend.as_str() {
            "sled" => {}
            "postgres" if self.store.url.trim().is_empty() => {
                return Err(ConfigError::Value {
                    key: "store.url",
                    value: String::new(),
                    expected:
                        "a PostgreSQL URL (ENVAULT_STORE_URL) when store.backend = \"postgres\"",
                });
            }
            "postgres" => {}
            other => {
                return Err(ConfigError::Value {
                    key: "store.backend",
                    value: other.to_string(),
                    expected: "\"sled\" or \"postgres\"",
                });
            }
        }
        // Each cluster lock held (admin, one per running rotation) pins a connection for its
        // life, and its holder still needs connections to work: fewer would deadlock.
        if self.store.backend == "postgres" && self.store.pool_size < MIN_STORE_POOL {
            return Err(ConfigError::Value {
                key: "store.pool_size",
                value: self.store.pool_size.to_string(),
                expected: "at least 4 (cluster locks each hold a connection)",
            });
        }
        self.store_timeout()?;
        Ok(())
    }

    /// `[store] timeout`.
    pub fn store_timeout(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.store.timeout)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ConfigError::Value {
                key: "store.timeout",
                value: self.store.timeout.clone(),
                expected: "a duration such as \"5s\"",
            })
    }

    /// `[keystore.pkcs11] timeout`.
    pub fn pkcs11_timeout(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.keystore.pkcs11.timeout)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ConfigError::Value {
                key: "keystore.pkcs11.timeout",
                value: self.keystore.pkcs11.timeout.clone(),
                expected: "a duration such as \"5s\"",
            })
    }

    /// `[keystore.transit] timeout`.
    pub fn transit_timeout(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.keystore.transit.timeout)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ConfigError::Value {
                key: "keystore.transit.timeout",
                value: self.keystore.transit.timeout.clone(),
                expected: "a duration such as \"5s\"",
            })
    }

    /// Socket mode as bits.
    pub fn socket_mode(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| ConfigError::Value {
                key: "socket_mode",
                value: self.socket_mode.clone(),
                expected: "an octal mode such as \"0660\"",
            })
    }

    /// Soft-deletion period.
    pub fn soft_delete_period(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.lifecycle.soft_delete_period).ok_or_else(|| ConfigError::Value {
            key: "lifecycle.soft_delete_period",
            value: self.lifecycle.soft_delete_period.clone(),
            expected: "a duration such as \"9d\", \"12h\", \"30s\"",
        })
    }

    /// Per-request time limit.
    pub fn request_timeout(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.limits.request_timeout).ok_or_else(|| ConfigError::Value {
            key: "limits.request_timeout",
            value: self.limits.request_timeout.clone(),
            expected: "a duration such as \"30s\"",
        })
    }

    /// Free space kept on the data dir's filesystem, in bytes.
    pub fn min_free_space(&self) -> Result<u64, ConfigError> {
        parse_size(&self.limits.min_free_space)
            .map(|n| n as u64)
            .ok_or_else(|| ConfigError::Value {
                key: "limits.min_free_space",
                value: self.limits.min_free_space.clone(),
                expected: "a size such as \"64MiB\"",
            })
    }

    /// Largest record value in bytes.
    pub fn max_record_size(&self) -> Result<usize, ConfigError> {
        parse_size(&self.limits.max_record_size).ok_or_else(|| ConfigError::Value {
            key: "limits.max_record_size",
            value: self.limits.max_record_size.clone(),
            expected: "a size such as \"16MiB\", \"512KiB\", \"1048576\"",
        })
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

    /// Interval of scheduled backups, if on.
    pub fn backup_schedule(&self) -> Result<Option<Duration>, ConfigError> {
        if self.backup.schedule.trim().is_empty() {
            return Ok(None);
        }
        parse_duration(&self.backup.schedule)
            .filter(|d| !d.is_zero())
            .map(Some)
            .ok_or_else(|| ConfigError::Value {
                key: "backup.schedule",
                value: self.backup.schedule.clone(),
                expected: "a duration such as \"24h\", or empty for no schedule",
            })
    }

    /// Lifetime of a cached DEK; `None` when "0" (no expiry).
    pub fn dek_ttl(&self) -> Result<Option<Duration>, ConfigError> {
        parse_duration(&self.cache.dek_ttl)
            .map(|d| Some(d).filter(|d| !d.is_zero()))
            .ok_or_else(|| ConfigError::Value {
                key: "cache.dek_ttl",
                value: self.cache.dek_ttl.clone(),
                expected: "a duration such as \"5m\", \"1h\", or \"0\" for no expiry",
            })
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

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.to_string(),
        message: e.to_string(),
    })
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_sub)), toml::Value::Table(sub)) => merge(base_sub, sub),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `ENVAULT_SOCKET` → `socket`, `ENVAULT_SOFT_DELETE_PERIOD` → `lifecycle.soft_delete_period`…
const ENV_KEYS: &[(&str, &str, &str)] = &[
    ("ENVAULT_SOCKET", "", "socket"),
    ("ENVAULT_SOCKET_MODE", "", "socket_mode"),
    ("ENVAULT_DATA_DIR", "", "data_dir"),
    ("ENVAULT_INSTANCE", "", "instance"),
    ("ENVAULT_KEYSTORE_BACKEND", "keystore", "backend"),
    ("ENVAULT_MASTER_KEY_FILE", "keystore", "master_key_file"),
    ("ENVAULT_PKCS11_MODULE", "keystore.pkcs11", "module"),
    (
        "ENVAULT_PKCS11_TOKEN_LABEL",
        "keystore.pkcs11",
        "token_label",
    ),
    ("ENVAULT_PKCS11_PIN_FILE", "keystore.pkcs11", "pin_file"),
    ("ENVAULT_PKCS11_TIMEOUT", "keystore.pkcs11", "timeout"),
    ("ENVAULT_TRANSIT_ADDRESS", "keystore.transit", "address"),
    (
        "ENVAULT_TRANSIT_TOKEN_FILE",
        "keystore.transit",
        "token_file",
    ),
    ("ENVAULT_TRANSIT_MOUNT", "keystore.transit", "mount"),
    (
        "ENVAULT_TRANSIT_KEY_PREFIX",
        "keystore.transit",
        "key_prefix",
    ),
    ("ENVAULT_TRANSIT_TIMEOUT", "keystore.transit", "timeout"),
    ("ENVAULT_TRANSIT_CA_FILE", "keystore.transit", "ca_file"),
    (
        "ENVAULT_SOFT_DELETE_PERIOD",
        "lifecycle",
        "soft_delete_period",
    ),
    ("ENVAULT_MAX_RECORD_SIZE", "limits", "max_record_size"),
    ("ENVAULT_MAX_RECORD_KEY", "limits", "max_record_key"),
    ("ENVAULT_MAX_CONNECTIONS", "limits", "max_connections"),
    ("ENVAULT_REQUEST_TIMEOUT", "limits", "request_timeout"),
    ("ENVAULT_MIN_FREE_SPACE", "limits", "min_free_space"),
    ("ENVAULT_BACKUP_DIR", "backup", "dir"),
    ("ENVAULT_BACKUP_SCHEDULE", "backup", "schedule"),
    ("ENVAULT_BACKUP_RETENTION", "backup", "retention"),
    ("ENVAULT_CACHE_MAX_DEKS", "cache", "max_deks"),
    ("ENVAULT_CACHE_DEK_TTL", "cache", "dek_ttl"),
    ("ENVAULT_TRANSIT_LISTEN", "compat", "transit_listen"),
    ("ENVAULT_KMS_V2_SOCKET", "kms_v2", "socket"),
    ("ENVAULT_KMS_V2_KEY", "kms_v2", "key"),
    ("ENVAULT_BACKUP_TARGET", "backup", "target"),
    ("ENVAULT_BACKUP_ENDPOINT", "backup", "endpoint"),
    ("ENVAULT_BACKUP_REGION", "backup", "region"),
    (
        "ENVAULT_BACKUP_CREDENTIALS_FILE",
        "backup",
        "credentials_file",
    ),
    ("ENVAULT_STORE_BACKEND", "store", "backend"),
    ("ENVAULT_STORE_URL", "store", "url"),
    ("ENVAULT_STORE_POOL_SIZE", "store", "pool_size"),
    ("ENVAULT_STORE_TIMEOUT", "store", "timeout"),
    ("ENVAULT_AUDIT_DATA_PLANE_SYNC", "audit", "data_plane_sync"),
    ("ENVAULT_AUDIT_SYNC_INTERVAL", "audit", "sync_interval"),
    ("ENVAULT_METRICS_LISTEN", "metrics", "listen"),
];

fn apply_env(table: &mut toml::Table, get: impl Fn(&str) -> Option<String>) {
    for (var, section, key) in ENV_KEYS {
        let Some(raw) = get(var) else { continue };
        // Integers stay integers so that numeric settings deserialize.
        const NUMERIC: &[&str] = &[
            "max_record_key",
            "max_connections",
            "retention",
            "max_deks",
            "pool_size",
        ];
        let value = raw
            .parse::<i64>()
            .ok()
            .filter(|_| NUMERIC.contains(key))
            .map(toml::Value::Integer)
            .unwrap_or(toml::Value::String(raw));
        // Sections may be dotted ("keystore.transit").
        let mut target = Some(&mut *table);
        for part in section.split('.').filter(|p| !p.is_empty()) {
            target = target
                .and_then(|t| t.get_mut(part))
                .and_then(|v| v.as_table_mut());
        }
        if let Some(target) = target {
            target.insert((*key).to_string(), value);
        }
    }
}

/// Parses "100ms", "30s", "5m", "12h", "9d" (or a bare number of seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Splits an `s3://BUCKET/PREFIX` backup target into bucket and prefix (without slashes at
/// either end), or says what is wrong with it.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?} is not an s3://BUCKET/PREFIX URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(format!(
            "{url:?}: bucket names are 3-63 lowercase letters, digits, '-' or '.'"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..")
        || prefix.contains("//")
        || prefix.chars().any(|c| c.is_control())
    {
        return Err(format!("{url:?}: invalid prefix"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Parses "16MiB", "512KiB", "1GiB" or a bare byte count.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.socket, PathBuf::from("envault.sock"));
        assert_eq!(
            config.soft_delete_period().unwrap(),
            Duration::from_secs(9 * 86_400)
        );
        assert_eq!(config.max_record_size().unwrap(), 16 << 20);
        assert_eq!(config.socket_mode().unwrap(), 0o660);
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
        let mut table = parse_table(DEFAULT_CONFIG, "defaults").unwrap();
        apply_env(&mut table, |name| match name {
            "ENVAULT_SOFT_DELETE_PERIOD" => Some("5s".into()),
            "ENVAULT_MAX_RECORD_KEY" => Some("64".into()),
            "ENVAULT_SOCKET_MODE" => Some("0600".into()),
            _ => None,
        });
        let config: Config = table.try_into().unwrap();
        assert_eq!(config.soft_delete_period().unwrap(), Duration::from_secs(5));
        assert_eq!(config.limits.max_record_key, 64);
        assert_eq!(config.socket_mode().unwrap(), 0o600);
    }

    #[test]
    fn backend_sections_from_env() {
        let mut table = parse_table(DEFAULT_CONFIG, "defaults").unwrap();
        apply_env(&mut table, |name| match name {
            "ENVAULT_KEYSTORE_BACKEND" => Some("transit".into()),
            "ENVAULT_TRANSIT_ADDRESS" => Some("http://10.0.0.1:8200".into()),
            "ENVAULT_PKCS11_TOKEN_LABEL" => Some("hsm-a".into()),
            _ => None,
        });
        let config: Config = table.try_into().unwrap();
        config.validate().unwrap();
        assert_eq!(config.keystore.backend, "transit");
        assert_eq!(config.keystore.transit.address, "http://10.0.0.1:8200");
        assert_eq!(config.keystore.transit.mount, "transit");
        assert_eq!(config.keystore.pkcs11.token_label, "hsm-a");
        assert_eq!(config.transit_timeout().unwrap(), Duration::from_secs(5));
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
        assert_eq!(config.store.backend, "sled");
        assert_eq!(config.store.pool_size, 16);
        assert_eq!(config.store_timeout().unwrap(), Duration::from_secs(5));

        let mut table = parse_table(DEFAULT_CONFIG, "defaults").unwrap();
        apply_env(&mut table, |name| match name {
            "ENVAULT_STORE_BACKEND" => Some("postgres".into()),
            "ENVAULT_STORE_URL" => Some("postgres://envault:s3cret-pw@127.0.0.1/envault".into()),
            "ENVAULT_STORE_POOL_SIZE" => Some("4".into()),
            "ENVAULT_STORE_TIMEOUT" => Some("2s".into()),
            _ => None,
        });
        let config: Config = table.try_into().unwrap();
        config.validate().unwrap();
        assert_eq!(config.store.backend, "postgres");
        assert_eq!(config.store.pool_size, 4);
        assert_eq!(config.store_timeout().unwrap(), Duration::from_secs(2));
        // The password never shows through Debug.
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret-pw"), "{debug}");
        assert!(debug.contains("127.0.0.1"), "{debug}");

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
        assert!(expected.contains("\"sled\" or \"postgres\""));
        std::fs::write(&path, "[store]\ntimeout = \"soon\"\n").unwrap();
        assert_eq!(refused("bad timeout").0, "store.timeout");
        std::fs::write(
            &path,
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://u@h/db\"\npool_size = 2\n",
        )
        .unwrap();
        assert_eq!(refused("small pool").0, "store.pool_size");
    }

    #[test]
    fn audit_sync_settings() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.audit_sync().unwrap(), DataPlaneSync::Always);

        let mut table = parse_table(DEFAULT_CONFIG, "defaults").unwrap();
        apply_env(&mut table, |name| match name {
            "ENVAULT_AUDIT_DATA_PLANE_SYNC" => Some("interval".into()),
            "ENVAULT_AUDIT_SYNC_INTERVAL" => Some("250ms".into()),
            _ => None,
        });
        let config: Config = table.try_into().unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.audit_sync().unwrap(),
            DataPlaneSync::Interval(Duration::from_millis(250))
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[audit]\ndata_plane_sync = \"interval\"\n").unwrap();
        assert_eq!(
            Config::load(Some(&path)).unwrap().audit_sync().unwrap(),
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
        assert_eq!(config.soft_delete_period().unwrap(), Duration::from_secs(3));
    }
}
