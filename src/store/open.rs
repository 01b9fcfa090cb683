//! Opens the store the configuration names.

use std::path::Path;
use std::sync::Arc;

use super::fjall_store::{migrate, FjallStore};
use super::postgres::PostgresStore;
use super::{Store, StoreError};
use crate::config::Config;

/// The configured store: `[store] backend = "embedded"` (or its old name `"sled"`) opens (or
/// creates) the fjall store in `<data_dir>/fjall`, first migrating a sled store left in
/// `<data_dir>/store` by an earlier release; `"postgres"` connects to `[store] url` and
/// applies pending migrations.
pub fn open(config: &Config, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    match config.store.backend.as_str() {
        "postgres" => {
            let store = PostgresStore::connect_with_tls(
                &config.store.url,
                config.store.pool_size,
                config.store.timeout,
                config.store.ssl_mode,
                config.store.ssl_root_cert.as_deref(),
            )?;
            tracing::info!(
                url = %super::postgres::redact(&config.store.url),
                pool_size = config.store.pool_size,
                ssl_mode = %store.ssl_mode().as_str(),
                "store: PostgreSQL"
            );
            Ok(Arc::new(store))
        }
        "embedded" | "sled" => {
            let cache = config.store.cache_size;
            migrate::migrate_if_needed(data_dir, cache, &mut show_progress())?;
            let dir = migrate::Layout::of(data_dir).fjall;
            Ok(Arc::new(FjallStore::open(&dir, cache)?))
        }
        other => Err(StoreError::Backend(format!(
            "unknown store backend {other:?} (expected \"embedded\" or \"postgres\")"
        ))),
    }
}

/// Migration progress on stderr (the operator watching a start) and in the log, at most
/// every 100,000 records.
pub fn show_progress() -> impl FnMut(u64) {
    let mut shown = 0u64;
    move |copied| {
        if copied == 0 || copied >= shown + 100_000 || shown == 0 {
            shown = copied.max(1);
            eprintln!("envault: migrating the store: {copied} records copied");
            tracing::info!(copied, "store: migration progress");
        }
    }
}
