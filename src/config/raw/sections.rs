//! Checks of each section but the top level: units parsed, ranges enforced, one
//! [`ConfigError`] naming the setting on the first problem.

use super::{positive, value, RawAudit, RawBackup, RawCache, RawKeystore, RawLimits, RawStore};
use crate::config::units::{parse_duration, parse_s3_url, parse_size};
use crate::config::{
    AuditConfig, BackupConfig, CacheConfig, ConfigError, DataPlaneSync, KeystoreConfig,
    LimitsConfig, PgSslMode, Pkcs11Config, StoreConfig, TransitConfig, MAX_AUDIT_SYNC_INTERVAL,
    MIN_STORE_POOL,
};

impl RawLimits {
    pub(super) fn check(self) -> Result<LimitsConfig, ConfigError> {
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
    pub(super) fn check(self) -> Result<BackupConfig, ConfigError> {
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
    pub(super) fn check(self) -> Result<CacheConfig, ConfigError> {
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
    pub(super) fn check(self) -> Result<KeystoreConfig, ConfigError> {
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
    pub(super) fn check(self) -> Result<StoreConfig, ConfigError> {
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
        let ssl_mode = match self.ssl_mode.trim() {
            "" => None,
            text => Some(
                PgSslMode::parse(text)
                    .ok_or_else(|| value("store.ssl_mode", text, PgSslMode::EXPECTED))?,
            ),
        };
        let ssl_root_cert =
            (!self.ssl_root_cert.as_os_str().is_empty()).then_some(self.ssl_root_cert);
        // Only the verifying modes read the CA file; with another mode it would be a
        // check the operator believes in and that never happens.
        if let (Some(path), Some(mode)) = (&ssl_root_cert, ssl_mode) {
            if !mode.verifies() {
                return Err(value(
                    "store.ssl_root_cert",
                    &path.display().to_string(),
                    "empty unless store.ssl_mode is \"verify-ca\" or \"verify-full\"",
                ));
            }
        }
        Ok(StoreConfig {
            backend: self.backend,
            cache_size,
            url: self.url,
            pool_size: self.pool_size,
            timeout,
            ssl_mode,
            ssl_root_cert,
        })
    }
}

impl RawAudit {
    /// `data_plane_sync` with `sync_interval`. The interval is checked in both modes, so that
    /// a bad value is reported before someone switches to "interval".
    pub(super) fn check(self) -> Result<AuditConfig, ConfigError> {
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
