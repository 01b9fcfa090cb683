//! What sled's own `flush` leaves out, done after it so an acknowledged write survives a power
//! loss, not just a process crash.
//!
//! sled 0.34 makes its log "stable" with `sync_file_range`, which writes the pages out but
//! neither flushes the device's write cache nor records a grown file's size
//! (spacejam/sled#1452, open), and it writes blob files (log items over its blob threshold)
//! with no sync at all. So after `Db::flush` we `fdatasync` sled's log file through a handle
//! of our own (fsync acts on the file, whichever descriptor names it), and fsync the blob
//! files written since the last flush and their directory. The sync of the log comes last,
//! so the blobs its entries point to are durable before they are.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::super::StoreError;

/// sled's files that need a real sync after each flush.
pub(super) struct SledFiles {
    log: File,
    blobs_dir: PathBuf,
    /// The highest blob id (sled names blob files by log sequence number) already synced.
    synced_blob: Mutex<u64>,
}

impl SledFiles {
    /// Opens the handles once, after sled has created its files in `dir`.
    pub(super) fn open(dir: &Path) -> Result<Self, StoreError> {
        let log = File::open(dir.join("db")).map_err(|e| io("open sled's log file", e))?;
        let files = Self {
            log,
            blobs_dir: dir.join("blobs"),
            synced_blob: Mutex::new(0),
        };
        // Blobs left by an earlier run were written before sled recovered past them; sync
        // them once so the baseline holds from the first flush on.
        files.sync_new_blobs()?;
        Ok(files)
    }

    /// Makes everything sled's flush wrote durable. Call right after `Db::flush`.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.sync_new_blobs()?;
        self.log
            .sync_data()
            .map_err(|e| io("fdatasync sled's log file", e))
    }

    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let mut synced = self
            .synced_blob
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            // sled creates the directory lazily, with its first blob.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("list sled's blobs", e)),
        };
        let mut newest = *synced;
        for entry in entries {
            let entry = entry.map_err(|e| io("list sled's blobs", e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            if id > *synced {
                match File::open(entry.path()) {
                    Ok(blob) => blob.sync_data().map_err(|e| io("fsync a sled blob", e))?,
                    // Removed by sled's blob collection since the listing: nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("open a sled blob", e)),
                }
                newest = newest.max(id);
            }
        }
        if newest > *synced {
            File::open(&self.blobs_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| io("fsync sled's blob directory", e))?;
            *synced = newest;
        }
        Ok(())
    }
}

fn io(what: &str, err: std::io::Error) -> StoreError {
    StoreError::Backend(format!("cannot {what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob_ids(dir: &Path) -> Vec<u64> {
        std::fs::read_dir(dir.join("blobs"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn each_sync_covers_the_blobs_written_since_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let files = SledFiles::open(dir.path()).unwrap();
        db.insert(b"small", &[1u8; 100][..]).unwrap();
        db.flush().unwrap();
        files.sync().unwrap(); // no blob yet (the directory may not even exist): fine
        assert_eq!(*files.synced_blob.lock().unwrap(), 0);

        // An item far over sled's blob threshold goes to a blob file of its own.
        db.insert(b"large", vec![7u8; 1 << 20]).unwrap();
        db.flush().unwrap();
        files.sync().unwrap();
        let first = *files.synced_blob.lock().unwrap();
        assert!(first > 0, "the blob was not seen");
        assert_eq!(Some(first), blob_ids(dir.path()).into_iter().max());

        db.insert(b"larger", vec![8u8; 1 << 20]).unwrap();
        db.flush().unwrap();
        files.sync().unwrap();
        assert!(*files.synced_blob.lock().unwrap() > first);

        // A reopened store starts from the blobs already there.
        drop(files);
        let reopened = SledFiles::open(dir.path()).unwrap();
        assert_eq!(
            Some(*reopened.synced_blob.lock().unwrap()),
            blob_ids(dir.path()).into_iter().max()
        );
    }
}
