//! Backup files: `read_front`, `read_payload` under a fixed DEK, `drain_records`.
//! See `envault_fuzz::backup_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envault_fuzz::backup_file(data));
