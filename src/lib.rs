//! # envault
//!
//! An envelope-encryption storage daemon: records are sealed by data keys (DEKs), every DEK is
//! stored only wrapped by a root key, and destroying a root key cryptoshreds what it protects.
//!
//! # Layout
//! - [`api`]: wire types of the socket API, defined once in the `envault-client` crate and
//!   re-exported here.
//! - [`backup`]: the backup file format (two key slots, STREAM payload) and its streaming I/O.
//! - [`config`]: configuration: embedded defaults, file, `ENVAULT_*` variables.
//! - [`crypto`]: secret key types, the AES-256-GCM primitive and the sealed envelope format. No I/O.
//! - [`hardening`]: non-dumpable process, no core files, memory locked against swap (the only unsafe code).
//! - [`keystore`]: root-key material behind `RootKeyBackend`; the file backend sealed by the master key.
//! - [`service`]: the rules of the product: keys, databases, records, tokens, DEK cache, durability.
//! - [`store`]: the catalog and sealed records behind the `Store` trait (fjall or PostgreSQL).
//! - [`server`]: the daemon: Unix-socket listener, routes, auth.
//! - [`client`]: the `envault-client` crate, re-exported: typed client of the socket API
//!   (HTTP/1.1 over the Unix socket) that the CLI uses.
//! - [`cli`]: the `envault` command line: clap verbs, one file per group, table/JSON output.
#![deny(unsafe_code)]

pub use envault_client::api;
pub mod backup;
pub mod cli;
pub use envault_client as client;
pub mod config;
pub mod crypto;
pub mod hardening;
pub mod keystore;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
