//! Backups: the file format ([`format`]), the streaming writer and reader ([`stream_io`]) and
//! where backup files are kept ([`target`]: a local directory or an S3 bucket).
//! The rules (delegation, registrations, restore) are in `service::backups`.

pub mod format;
pub mod stream_io;
pub mod target;
