//! `FileKeystore::open` over a fuzzed `keystore.bin` / `keystore.bin.tmp` with a fixed master
//! key. See `envault_fuzz::KeystoreFixture::run`.
#![no_main]

use std::sync::OnceLock;

use envault_fuzz::KeystoreFixture;

static FIXTURE: OnceLock<KeystoreFixture> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| FIXTURE.get_or_init(KeystoreFixture::new).run(data));
