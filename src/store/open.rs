//! Opens the store the configuration names.

use std::path::Path;
use std::sync::Arc;

use super::postgres::PostgresStore;
use super::sled_store::SledStore;
use super::{Store, StoreError};
use crate::config::Config;

/// The configured store: `[store] backend = "sled"` opens (or creates) the embedded store in
/// `sled_dir`; `"postgres"` connects to `[store] url` and applies pending migrations.
pub fn open(config: &Config, sled_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    match config.store.backend.as_str() {
        "postgres" => {
            let store = PostgresStore::connect(
                &config.store.url,
                config.store.pool_size,
                config.store.timeout,
            )?;
            tracing::info!(
                url = %super::postgres::redact(&config.store.url),
                pool_size = config.store.pool_size,
                "store: PostgreSQL"
            );
            Ok(Arc::new(store))
        }
        "sled" => Ok(Arc::new(SledStore::open(sled_dir)?)),
        other => Err(StoreError::Backend(format!(
            "unknown store backend {other:?} (expected \"sled\" or \"postgres\")"
        ))),
    }
}
