//! Envelope headers, opening under a fixed key and `Cipher::open_in_place` with arbitrary
//! nonce and tag lengths. See `envault_fuzz::open_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envault_fuzz::open_record(data));
