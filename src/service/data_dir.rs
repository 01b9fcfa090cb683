//! Start-up checks of the data dir, before anything in it is created or trusted.
//!
//! - Permissions: every directory under the data dir (the data dir included) must be closed to
//!   group and others (0700): whoever can write a directory can rename or delete the keystore,
//!   the activity log or the store inside it. A directory that is not is refused, naming it and
//!   the `chmod` that fixes it. Files left readable by an earlier version (sled's files were
//!   created 0644 inside the then-private directory) are tightened to 0600 with a warning; a
//!   master key file anyone else can read is refused.
//! - Completeness: a keystore whose master key is missing, or a catalog naming root keys whose
//!   keystore is missing or lacks them, is refused before anything is created: starting on an
//!   empty keystore would accept new keys that are lost once the real file is put back.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::Catalog;
use crate::config::Config;
use crate::keystore::RootKeyBackend;
use crate::store::model::KeyState;

/// Names of the file keystore's files in the data dir.
const KEYSTORE_FILES: [&str; 2] = ["keystore.bin", "keystore.bin.tmp"];

/// Why the daemon refuses to start on this data dir.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// A directory group or others can enter, read or write.
    #[error(
        "directory {path} is open to group or others (mode {mode:04o}); anyone it admits could \
         read, rename or delete the vault's files. Fix it with `chmod 700 {path}`"
    )]
    OpenDirectory {
        /// The directory.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The master key file can be read or written by group or others.
    #[error(
        "master key file {path} is open to group or others (mode {mode:04o}). Fix it with \
         `chmod 600 {path}`"
    )]
    OpenMasterKey {
        /// The master key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A directory or file could not be created, inspected or tightened.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The keystore file exists but the master key that seals it does not.
    #[error(
        "the master key file {master} is missing, but the keystore {keystore} it seals exists; \
         nothing was created. Put the master key back (or point `keystore.master_key_file` at it)"
    )]
    MissingMasterKey {
        /// The missing master key file.
        master: String,
        /// The keystore file that needs it.
        keystore: String,
    },
    /// The catalog names root keys but the keystore file is missing.
    #[error(
        "the keystore file {path} is missing, but the catalog names {count} root key(s) (e.g. \
         {example:?}); refusing to start on an empty keystore. Put the keystore file back"
    )]
    MissingKeystore {
        /// The missing file.
        path: String,
        /// Live root keys the catalog names.
        count: usize,
        /// One of their names.
        example: String,
    },
    /// The embedded store in the data dir does not open.
    #[error("cannot open the store in {path}: {source}")]
    Store {
        /// The store directory.
        path: String,
        /// Cause.
        source: crate::store::StoreError,
    },
    /// The activity log does not match its head file (lines removed at the end, the log or
    /// the head file missing or forged): refused so that appending cannot bury the evidence.
    #[error("{0}")]
    ActivityLog(String),
    /// The keystore exists but the store is new: it was deleted or replaced.
    #[error(
        "the keystore {keystore} holds root keys but the store ({store}) is empty: it was \
         deleted or replaced. Refusing to start, which would destroy the keys; put the store back"
    )]
    StoreMissing {
        /// The store (directory, or the configured database).
        store: String,
        /// The keystore file.
        keystore: String,
    },
    /// The keystore opened but lacks root keys the catalog names (an older copy put back).
    #[error(
        "the keystore {location} lacks {count} root key(s) the catalog names (e.g. {example:?}); \
         refusing to start. Restore the keystore that holds them"
    )]
    KeystoreLacksKeys {
        /// Where the keystore is.
        location: String,
        /// How many keys are missing.
        count: usize,
        /// One of their names.
        example: String,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Creates the data dir (0700) if missing and checks every directory under it, the backup
/// directory and the master key; refuses a file keystore whose master key is missing. Runs
/// before anything else touches the data dir, so a refusal leaves it as it was.
pub fn prepare(config: &Config) -> Result<(), DataDirError> {
    let data_dir = &config.data_dir;
    create_private_dir(data_dir)?;
    // The master key first: the tree walk below would tighten it silently, and a master key
    // others could read may have been copied already, which the operator must hear about.
    if config.keystore.backend == "file" {
        let master = config.master_key_path();
        match std::fs::symlink_metadata(&master) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    return Err(DataDirError::OpenMasterKey {
                        path: master.display().to_string(),
                        mode,
                    });
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if let Some(keystore) = KEYSTORE_FILES
                    .iter()
                    .map(|name| data_dir.join(name))
                    .find(|path| path.exists())
                {
                    return Err(DataDirError::MissingMasterKey {
                        master: master.display().to_string(),
                        keystore: keystore.display().to_string(),
                    });
                }
            }
            Err(err) => return Err(io("inspect", &master)(err)),
        }
    }
    check_tree(data_dir)?;
    let backup_dir = config.backup_dir();
    if backup_dir.exists() && !backup_dir.starts_with(data_dir) {
        check_tree(&backup_dir)?;
    }
    Ok(())
}

/// Creates `dir` with mode 0700 (and any missing parents) if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), DataDirError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create", dir))
}

/// Refuses `root` or any directory below it that group or others can use; tightens files.
/// Symbolic links are not followed.
fn check_tree(root: &Path) -> Result<(), DataDirError> {
    // The earlier sled store created its directories with the process umask (0755 as a rule),
    // inside a private data dir. Refusing them would stop every upgrade, so they are tightened
    // like the files of that release, with a warning; any other open directory is refused.
    let legacy_store_dirs = [root.join("store"), root.join("store.sled-migrated")];
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mode = std::fs::symlink_metadata(&dir)
            .map_err(io("inspect", &dir))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0
            && legacy_store_dirs
                .iter()
                .any(|legacy| dir.starts_with(legacy))
        {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{mode:04o}"),
                "directory of the earlier sled store open to group or others; tightening it to 0700"
            );
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("tighten", &dir))?;
        } else if mode & 0o077 != 0 {
            return Err(DataDirError::OpenDirectory {
                path: dir.display().to_string(),
                mode,
            });
        }
        for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
            let entry = entry.map_err(io("list", &dir))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(io("inspect", &path))?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:04o}", meta.permissions().mode() & 0o7777),
                    "file open to group or others; tightening it to 0600"
                );
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io("tighten", &path))?;
            }
        }
    }
    Ok(())
}

/// Live (not shredded) root keys of the catalog, by id and name.
fn live_keys(catalog: &Catalog) -> Vec<(Uuid, &str)> {
    let mut keys: Vec<(Uuid, &str)> = catalog
        .keys
        .values()
        .filter(|k| k.state != KeyState::Destroyed)
        .map(|k| (k.id, k.name.as_str()))
        .collect();
    keys.sort_by(|a, b| a.1.cmp(b.1));
    keys
}

/// With the file keystore: refuses when the catalog names live root keys and neither the
/// keystore file nor its temp file is there. Runs before the keystore is opened, which would
/// otherwise create a master key for an empty keystore.
pub fn check_keystore_file(config: &Config, catalog: &Catalog) -> Result<(), DataDirError> {
    if config.keystore.backend != "file" {
        return Ok(());
    }
    let present = KEYSTORE_FILES
        .iter()
        .any(|name| config.data_dir.join(name).exists());
    // A store that has never been started on (no instance record) beside a keystore: the
    // store was deleted or replaced. Starting would destroy every root key as material the
    // catalog does not know (what a create that crashed before its commit leaves).
    if present && catalog.instance.is_none() && catalog.keys.is_empty() {
        return Err(DataDirError::StoreMissing {
            store: crate::store::fjall_store::migrate::Layout::of(&config.data_dir)
                .fjall
                .display()
                .to_string(),
            keystore: config
                .data_dir
                .join(KEYSTORE_FILES[0])
                .display()
                .to_string(),
        });
    }
    let live = live_keys(catalog);
    match live.first() {
        Some((_, name)) if !present => Err(DataDirError::MissingKeystore {
            path: config
                .data_dir
                .join(KEYSTORE_FILES[0])
                .display()
                .to_string(),
            count: live.len(),
            example: name.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Refuses when the opened keystore lacks root keys the catalog names as live.
pub fn check_keystore_holds_catalog_keys(
    keystore: &dyn RootKeyBackend,
    catalog: &Catalog,
) -> Result<(), super::ServiceError> {
    let held: std::collections::HashSet<Uuid> = keystore.key_ids()?.into_iter().collect();
    let missing: Vec<&str> = live_keys(catalog)
        .into_iter()
        .filter(|(id, _)| !held.contains(id))
        .map(|(_, name)| name)
        .collect();
    match missing.first() {
        Some(name) => Err(DataDirError::KeystoreLacksKeys {
            location: keystore.describe().location,
            count: missing.len(),
            example: name.to_string(),
        }
        .into()),
        None => Ok(()),
    }
}
