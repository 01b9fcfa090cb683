//! envault's integration tests, in one test crate: each module is a suite that runs the real
//! `envault serve` binary over its real socket (or the real CLI), and the `*_support` modules
//! and `common` are the one shared harness.
//!
//! One crate links once, instead of once per suite. Run one suite with a name filter:
//! `cargo test --test suite -- core_api::`. The suites that start an outside program
//! (SoftHSM2, OpenBao, SeaweedFS, PostgreSQL, redis-cli, Python clients) compile only under
//! `--features external-suites`, which `scripts/test` turns on after installing them.

mod common;

mod access_control;
mod audit_sync;
mod backend_matrix;
#[cfg(feature = "external-suites")]
mod backend_support;
mod backup_purge;
mod backup_support;
mod backup_tamper;
mod backups;
mod bad_input;
mod client_typed;
mod core_api;
mod core_cli;
mod crash_consistency;
mod crash_support;
mod crypto_properties;
mod crypto_vectors;
mod disk_full;
mod front_ends;
mod fuzz_regressions;
mod hardening;
mod hostile_support;
mod kms_dual_auth;
mod kms_policies;
mod kms_secure_import;
mod kms_v2_plugin;
mod lifecycle_api;
mod lifecycle_cli;
mod lifecycle_rules;
mod lifecycle_support;
mod multi_node;
mod no_plaintext_on_disk;
mod operations;
mod perf_cache_bench;
mod postgres_store;
mod postgres_tls;
mod readiness_outages;
mod record_batch;
mod resp_clients;
mod resp_protocol;
mod rotation_crash;
mod s3_backups;
#[cfg(feature = "external-suites")]
mod s3_support;
mod shred_proof;
mod shredded_lifecycle;
mod store_damage;
mod store_upgrade;
mod tamper;
mod token_lifecycle;
mod transit_compat;
