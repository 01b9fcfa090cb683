//! The socket API's router in process: method, path, query, `Authorization`,
//! `Content-Length` and body from the fuzz input. Responses must carry a documented status
//! (never 5xx) and errors the API's error body. See `envault_fuzz::RouterFixture`.
//!
//! The vault is stateful (a successful request changes what the next one sees) and is rebuilt
//! every `ROUTER_RESET_EVERY` inputs: a crash may need some of the inputs run before it.
#![no_main]

use std::sync::Mutex;

use envault_fuzz::RouterFuzzer;

static FUZZER: Mutex<RouterFuzzer> = Mutex::new(RouterFuzzer::new());

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    FUZZER
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .run(data);
});
