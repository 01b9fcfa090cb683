//! The free-space floor of the data dir's filesystem.
//!
//! The embedded store does not recover from ENOSPC in place (once a journal write or sync fails,
//! fjall refuses every later write until a restart), so the daemon never lets it meet a full
//! disk: a write that would leave
//! less than the floor is refused with `storage_full` before it reaches the store. Reads,
//! deletes and shreds are never refused, and writes resume by themselves once space is freed.
//! The floor must cover what is written besides the request's own bytes: the store's journal
//! and table overhead, the catalog and the activity log, hence a default in MiB rather than bytes.

use std::path::PathBuf;

use super::ServiceError;

/// Checks the data dir's free space before writes.
pub struct DiskSpace {
    dir: PathBuf,
    floor: u64,
}

impl DiskSpace {
    pub fn new(dir: PathBuf, floor: u64) -> Self {
        Self { dir, floor }
    }

    /// No floor (for vaults assembled from parts in tests).
    pub fn unchecked() -> Self {
        Self::new(PathBuf::new(), 0)
    }

    /// Fails with `storage_full` when writing `incoming` bytes would leave less than the floor.
    /// The bytes are counted twice: the store journals a value before it flushes it to a table.
    pub fn ensure_room(&self, incoming: u64) -> Result<(), ServiceError> {
        if self.floor == 0 {
            return Ok(());
        }
        let free = free_bytes(&self.dir)?;
        let needed = self.floor.saturating_add(incoming.saturating_mul(2));
        if free < needed {
            return Err(ServiceError::StorageFull(format!(
                "the data dir's filesystem has {} free, below the {} kept free \
                 (limits.min_free_space); writes resume once space is freed",
                human(free),
                human(needed)
            )));
        }
        Ok(())
    }
}

fn free_bytes(dir: &std::path::Path) -> Result<u64, ServiceError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| {
        ServiceError::DataDir(format!("cannot read free space of {}: {e}", dir.display()))
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn human(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_refuses_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let refused = DiskSpace::new(dir.path().into(), free.saturating_add(1 << 30))
            .ensure_room(0)
            .unwrap_err();
        assert_eq!(refused.code(), "storage_full");
        assert!(refused.to_string().contains("min_free_space"), "{refused}");
        DiskSpace::new(dir.path().into(), 1).ensure_room(0).unwrap();
        DiskSpace::unchecked().ensure_room(u64::MAX).unwrap();
        // The request's own bytes count (twice; the margin absorbs other processes freeing
        // space meanwhile).
        let err = DiskSpace::new(dir.path().into(), 1)
            .ensure_room(free)
            .unwrap_err();
        assert_eq!(err.code(), "storage_full");
    }
}
