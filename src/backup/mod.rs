//! Backups: the file format ([`format`]) and the streaming writer and reader ([`stream_io`]).
//! The rules (delegation, registrations, restore) are in `service::backups`.

pub mod format;
pub mod stream_io;
