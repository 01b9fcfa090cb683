//! Walking a data dir: the tamper, no-plaintext and purge suites look at every file the
//! daemon wrote.

use std::path::{Path, PathBuf};

/// Every regular file under `dir`, recursively, sorted. A directory that disappears while it
/// is walked (the store compacts and deletes files as it runs) is skipped, not an error; callers
/// that need files assert that the list is not empty.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files.sort();
    files
}
