//! Where backup files live: one trait, [`BackupTarget`], with a local directory
//! ([`local::LocalDirTarget`]) and an S3-compatible bucket ([`s3::S3Target`]) behind it.
//!
//! The backup format is the same on both; a target only stores opaque objects named
//! `<backup id>.evb`. Its calls block, so callers run them off the async workers
//! (`tokio::task::block_in_place`); the S3 target drives its async client from there.
//!
//! The rule every target keeps: an object is listed only once it is complete. The local
//! directory writes a hidden temp file and renames it after fsync; S3 uses a multipart upload,
//! whose object appears only when the upload completes, and is aborted on any error.

use std::io::{Read, Write};

use uuid::Uuid;

use crate::backup::format::KeySlot;

pub mod local;
pub mod s3;
mod s3_io;

/// Errors of a backup target. Messages name the target and object, never credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The target refused or failed the operation (I/O, network, permissions).
    #[error("{0}")]
    Failed(String),
    /// The target's configuration is unusable.
    #[error("invalid backup target configuration: {0}")]
    Config(String),
}

/// The ids of a backup's header, stored as object metadata where the target supports it, so
/// that a listing can tell what an object is without the local catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupObjectMeta {
    /// Backup id.
    pub backup_id: Uuid,
    /// Database backed up.
    pub database_id: Uuid,
    /// Key wrapping the backup DEK.
    pub backup_key_id: Uuid,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A finished object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Name inside the target (`<id>.evb`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// An object opened for reading.
pub struct OpenedObject {
    /// Its bytes, streamed.
    pub reader: Box<dyn Read + Send>,
    /// Its size in bytes.
    pub size: u64,
    /// Its metadata, when the target stores metadata and the object carries it.
    pub meta: Option<BackupObjectMeta>,
}

/// A new object being written. Nothing lists under its name until [`ObjectWriter::finish`]
/// succeeds; [`ObjectWriter::abort`] (or dropping it) leaves no object behind.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible; returns its size.
    fn finish(self: Box<Self>) -> Result<u64, TargetError>;
    /// Discards everything written.
    fn abort(self: Box<Self>);
}

/// A place backups are stored.
pub trait BackupTarget: Send + Sync {
    /// Where the object `name` lives, as shown to operators (the `path` of a backup).
    fn location(&self, name: &str) -> String;

    /// Whether objects this daemon did not register can appear in the target (a bucket
    /// shared with other nodes, or outliving the data dir). Such objects are adopted when
    /// they verify, never removed; a local directory's strays are removed at start.
    fn is_shared(&self) -> bool;

    /// Starts a new object `name`.
    fn create(
        &self,
        name: &str,
        meta: &BackupObjectMeta,
    ) -> Result<Box<dyn ObjectWriter>, TargetError>;

    /// Opens the object `name` for streaming reads.
    fn open(&self, name: &str) -> Result<OpenedObject, TargetError>;

    /// Every finished object whose name ends in `.evb`.
    fn list(&self) -> Result<Vec<ObjectEntry>, TargetError>;

    /// Deletes the object `name`; a missing object is not an error.
    fn delete(&self, name: &str) -> Result<(), TargetError>;

    /// Writes `slot` into key slot `index` of the object `name` (backup key rotation).
    fn write_slot(&self, name: &str, index: usize, slot: &KeySlot) -> Result<(), TargetError>;

    /// Removes leftovers of interrupted writes and objects not in `known`, where that is safe
    /// (see [`BackupTarget::is_shared`]); returns how many were removed.
    fn clean(&self, known: &std::collections::HashSet<String>) -> Result<usize, TargetError>;
}

/// The object name of a backup.
pub fn object_name(backup_id: &Uuid) -> String {
    format!("{backup_id}.evb")
}

/// The backup id an object name stands for, if it is one.
pub fn backup_id_of(name: &str) -> Option<Uuid> {
    name.strip_suffix(".evb")
        .and_then(|stem| Uuid::parse_str(stem).ok())
}

/// The target `[backup]` configures: `target = "s3://…"` or, when empty, the local directory.
/// Must be called inside a tokio runtime (the S3 client uses it).
pub fn from_config(
    config: &crate::config::Config,
) -> Result<std::sync::Arc<dyn BackupTarget>, TargetError> {
    let target = config.backup.target.trim();
    if target.is_empty() {
        return Ok(std::sync::Arc::new(local::LocalDirTarget::new(
            config.backup_dir(),
        )));
    }
    if !target.starts_with("s3://") {
        return Err(TargetError::Config(format!(
            "backup.target {target:?}: only s3://BUCKET/PREFIX (or empty for backup.dir)"
        )));
    }
    Ok(std::sync::Arc::new(s3::S3Target::new(&s3::S3Settings {
        url: target.to_string(),
        endpoint: config.backup.endpoint.clone(),
        region: config.backup.region.clone(),
        credentials_file: config.backup.credentials_file.clone(),
    })?))
}
