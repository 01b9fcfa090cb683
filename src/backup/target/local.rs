//! The local directory target: `<dir>/<id>.evb`, written to a hidden temp name, fsynced and
//! renamed (then the directory fsynced), so a file under its final name is always complete.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{BackupObjectMeta, BackupTarget, ObjectEntry, ObjectWriter, OpenedObject, TargetError};
use crate::backup::format::{self, KeySlot};

/// Backups as files in one directory.
pub struct LocalDirTarget {
    dir: PathBuf,
}

impl LocalDirTarget {
    /// A target writing into `dir` (created with mode 0700 on first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn failed(&self, what: &str, path: &Path, e: std::io::Error) -> TargetError {
        TargetError::Failed(format!("backup file {}: {what}: {e}", path.display()))
    }
}

fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

struct LocalWriter {
    out: Option<BufWriter<File>>,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.out.as_mut() {
            Some(out) => out.write(buf),
            None => Err(std::io::Error::other("backup file already closed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl ObjectWriter for LocalWriter {
    fn finish(mut self: Box<Self>) -> Result<u64, TargetError> {
        let fail = |what: &str, path: &Path, e: std::io::Error| {
            TargetError::Failed(format!("backup file {}: {what}: {e}", path.display()))
        };
        let out = self
            .out
            .take()
            .ok_or_else(|| TargetError::Failed("backup file already closed".into()))?;
        let file = out
            .into_inner()
            .map_err(|e| fail("write", &self.temp, e.into_error()))?;
        file.sync_all().map_err(|e| fail("fsync", &self.temp, e))?;
        let size = file
            .metadata()
            .map_err(|e| fail("stat", &self.temp, e))?
            .len();
        drop(file);
        std::fs::rename(&self.temp, &self.target).map_err(|e| fail("rename", &self.target, e))?;
        // The rename is durable once the directory is.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("fsync", &self.dir, e))?;
        Ok(size)
    }

    fn abort(self: Box<Self>) {
        // Drop does the work.
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl BackupTarget for LocalDirTarget {
    fn location(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn create(
        &self,
        name: &str,
        _meta: &BackupObjectMeta,
    ) -> Result<Box<dyn ObjectWriter>, TargetError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| self.failed("create directory", &self.dir, e))?;
        let temp = self.dir.join(temp_name(name));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| self.failed("create", &temp, e))?;
        Ok(Box::new(LocalWriter {
            out: Some(BufWriter::with_capacity(256 * 1024, file)),
            temp,
            target: self.dir.join(name),
            dir: self.dir.clone(),
        }))
    }

    fn open(&self, name: &str) -> Result<OpenedObject, TargetError> {
        let path = self.dir.join(name);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                TargetError::NotFound(format!("the backup file is missing: {}", path.display()))
            }
            _ => self.failed("open", &path, e),
        })?;
        let size = file
            .metadata()
            .map_err(|e| self.failed("stat", &path, e))?
            .len();
        Ok(OpenedObject {
            reader: Box::new(file),
            size,
            meta: None,
        })
    }

    fn list(&self) -> Result<Vec<ObjectEntry>, TargetError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.failed("list", &self.dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".evb") {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(ObjectEntry { name, size });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(self.failed("delete", &path, e))
            }
            _ => Ok(()),
        }
    }

    fn write_slot(&self, name: &str, index: usize, slot: &KeySlot) -> Result<(), TargetError> {
        let path = self.dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| self.failed("open", &path, e))?;
        format::write_slot(&mut file, index, slot)
            .map_err(|e| TargetError::Failed(format!("backup file {}: {e}", path.display())))
    }

    fn clean(&self, known: &HashSet<String>) -> Result<usize, TargetError> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let interrupted = name.starts_with('.') && name.ends_with(".evb.tmp");
            let orphan = name.ends_with(".evb") && !known.contains(&name);
            if interrupted || orphan {
                tracing::warn!(file = %name, "removing an unfinished or unregistered backup file");
                std::fs::remove_file(entry.path())
                    .map_err(|e| self.failed("delete", &entry.path(), e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
