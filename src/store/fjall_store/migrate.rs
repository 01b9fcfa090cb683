//! Upgrade of a data dir written by the earlier sled store (`<data_dir>/store`: sled plus its
//! value log) to the fjall store (`<data_dir>/fjall`).
//!
//! Crash-safe by construction: everything is copied into `<data_dir>/fjall.migrating`, made
//! durable (`SyncAll`, then an fsync of every file and directory in it), and only then renamed
//! to `<data_dir>/fjall` (one atomic rename, then an fsync of the data dir). A crash before the
//! rename leaves the sled store untouched and a partial `fjall.migrating`, which the next
//! start deletes and rebuilds. After the rename the sled store is renamed to
//! `store.sled-migrated` (kept as a copy the operator may delete); a crash between the two
//! renames is harmless, because `fjall` existing is what says the migration is done.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::FjallStore;
use crate::store::sled_legacy::SledLegacy;
use crate::store::{CatalogKey, CatalogOp, Store, StoreError};

/// Records copied per batch (the batch is held in memory).
const BATCH: usize = 1_000;

/// Where each store lives in a data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The earlier sled store.
    pub sled: PathBuf,
    /// The fjall store.
    pub fjall: PathBuf,
    /// Being built by a migration.
    pub staging: PathBuf,
    /// The sled store once migrated.
    pub migrated: PathBuf,
}

impl Layout {
    /// The layout of `data_dir`.
    pub fn of(data_dir: &Path) -> Self {
        Self {
            sled: data_dir.join("store"),
            fjall: data_dir.join("fjall"),
            staging: data_dir.join("fjall.migrating"),
            migrated: data_dir.join("store.sled-migrated"),
        }
    }

    /// Whether a sled store waits to be migrated.
    pub fn needs_migration(&self) -> bool {
        !self.fjall.exists() && self.sled.join("db").exists()
    }
}

/// What a migration copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Catalog entries.
    pub catalog: u64,
    /// Records.
    pub records: u64,
}

/// Migrates the sled store of `data_dir` if there is one and it was not migrated yet;
/// `progress` is told (records copied so far) every [`BATCH`] records. `None` when there was
/// nothing to migrate.
pub fn migrate_if_needed(
    data_dir: &Path,
    cache_bytes: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Option<Migrated>, StoreError> {
    let layout = Layout::of(data_dir);
    if !layout.needs_migration() {
        return Ok(None);
    }
    let started = Instant::now();
    tracing::info!(from = %layout.sled.display(), to = %layout.fjall.display(), "store: migrating the sled store");
    if layout.staging.exists() {
        // A migration cut short: start it again from the untouched sled store.
        std::fs::remove_dir_all(&layout.staging).map_err(|e| io_error(&layout.staging, e))?;
    }
    let done = copy(&layout, cache_bytes, progress)?;
    sync_tree(&layout.staging)?;
    std::fs::rename(&layout.staging, &layout.fjall).map_err(|e| io_error(&layout.fjall, e))?;
    sync_dir(data_dir)?;
    if let Err(err) = std::fs::rename(&layout.sled, &layout.migrated) {
        tracing::warn!(%err, "store: the migrated sled store could not be renamed; it is unused");
    }
    eprintln!(
        "envault: store migrated to {}: {} catalog entries, {} records",
        layout.fjall.display(),
        done.catalog,
        done.records
    );
    tracing::info!(
        catalog = done.catalog,
        records = done.records,
        seconds = started.elapsed().as_secs_f64(),
        "store: migration complete"
    );
    Ok(Some(done))
}

fn copy(
    layout: &Layout,
    cache_bytes: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Migrated, StoreError> {
    let old = SledLegacy::open(&layout.sled)?;
    let new = FjallStore::open(&layout.staging, cache_bytes)?;
    let mut done = Migrated::default();
    let catalog = old.catalog()?;
    done.catalog = catalog.len() as u64;
    new.catalog_apply(
        catalog
            .into_iter()
            .map(|(k, v)| CatalogOp::Put(CatalogKey(k), v))
            .collect(),
    )?;
    let mut batch = Vec::with_capacity(BATCH);
    for item in old.records() {
        batch.push(item?);
        if batch.len() >= BATCH {
            done.records += batch.len() as u64;
            new.put_raw(std::mem::take(&mut batch))?;
            progress(done.records);
        }
    }
    done.records += batch.len() as u64;
    new.put_raw(batch)?;
    progress(done.records);
    new.persist_all()?;
    Ok(done)
}

fn io_error(path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Backend(format!("store migration: {}: {err}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// fsyncs every file and directory under `dir`: the new store is complete on disk before the
/// rename makes it the store.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| io_error(&path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_error(&path, e))?;
        }
    }
    sync_dir(dir)
}
