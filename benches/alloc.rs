//! Heap allocations and time per operation of the seal/open hot path at 64 B, counted with a
//! counting global allocator, to keep allocation out of the seal/open path.
//!
//! ```text
//! cargo bench --bench alloc            # prints a table and one `RESULT {json}` line
//! ```
//!
//! Fails (exit 1) if the primitive (`Cipher::seal_in_place` / `open_in_place`) allocates, or
//! if envelope seal allocates more than its output buffer or open allocates at all (the
//! sealed buffer is reused for the plaintext). Building the record context (`record_context`,
//! one `Vec`) is counted separately: the service builds it once per request.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use envault::crypto::{bindings, Cipher, Envelope, EnvelopeKind, SecretKey};

/// Counts every allocation and reallocation made through the global allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SIZE: usize = 64;
const DATABASE_ID: [u8; 16] = *b"bench-database-1";
const RECORD_KEY: &[u8] = b"customers/42/email";

/// Runs `op` `iterations` times; returns (allocations per op, ns per op).
fn measure(iterations: u64, mut op: impl FnMut()) -> (f64, f64) {
    for _ in 0..1000 {
        op(); // warm-up: lazy statics, CPU feature detection
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..iterations {
        op();
    }
    let elapsed = start.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    (
        allocations as f64 / iterations as f64,
        elapsed.as_nanos() as f64 / iterations as f64,
    )
}

fn main() {
    // `cargo test --benches` runs this too: fewer iterations then.
    let iterations = if std::env::args().any(|a| a == "--bench") {
        2_000_000
    } else {
        10_000
    };
    let cipher = Cipher::new(&SecretKey::generate().expect("OS RNG"));
    let nonce = [7u8; 12];
    let mut buffer = vec![0x5au8; SIZE];
    let value = vec![0x5au8; SIZE];
    let context = bindings::record_context(&DATABASE_ID, RECORD_KEY);
    let envelope = Envelope(EnvelopeKind::Record);
    let sealed = envelope.seal(&cipher, 1, &context, &value).expect("seal");
    let (_, tag) = {
        let mut b = value.clone();
        let tag = cipher.seal_in_place(&nonce, b"", &mut b).expect("seal");
        (b, tag)
    };

    let rows = [
        (
            "cipher_seal_in_place",
            measure(iterations, || {
                black_box(
                    cipher
                        .seal_in_place(&nonce, b"", black_box(&mut buffer))
                        .unwrap(),
                );
            }),
            0.0,
        ),
        (
            "cipher_open_in_place (tag check fails: same work)",
            measure(iterations, || {
                let _ = black_box(cipher.open_in_place(&nonce, b"", black_box(&mut buffer), &tag));
            }),
            0.0,
        ),
        (
            "envelope seal (output Vec, OS nonce)",
            measure(iterations / 4, || {
                black_box(
                    envelope
                        .seal(&cipher, 1, &context, black_box(&value))
                        .unwrap(),
                );
            }),
            1.0,
        ),
        (
            "envelope open (buffer reused)",
            measure(iterations, || {
                // The clone stands for the bytes the store hands over; it is not counted.
                let copy = sealed.clone();
                ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
                black_box(envelope.open(&cipher, &context, copy).unwrap());
            }),
            0.0,
        ),
        (
            "record_context (per request)",
            measure(iterations, || {
                black_box(bindings::record_context(
                    &DATABASE_ID,
                    black_box(RECORD_KEY),
                ));
            }),
            1.0,
        ),
    ];
    println!(
        "{:52} {:>12} {:>10} {:>8}",
        "64 B", "allocs/op", "ns/op", "allowed"
    );
    let mut failed = false;
    let mut json = Vec::new();
    for (name, (allocs, ns), allowed) in &rows {
        println!("{name:52} {allocs:>12.3} {ns:>10.1} {allowed:>8}");
        json.push(format!(
            r#"{{"op":"{name}","allocs_per_op":{allocs},"ns_per_op":{ns},"allowed":{allowed}}}"#
        ));
        failed |= allocs > allowed;
    }
    println!("RESULT [{}]", json.join(","));
    if failed {
        eprintln!("an operation allocates more than allowed");
        std::process::exit(1);
    }
}
