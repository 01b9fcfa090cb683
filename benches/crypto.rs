//! Criterion benches of the crypto layer: the raw AES-256-GCM primitive, record seal/open
//! through the envelope (with its record context), and DEK wrap/unwrap.
//!
//! `cipher_seal_in_place` is the group `scripts/bench-vs-openssl.sh` compares with
//! `openssl speed`; keep its name and its size ids stable.
//!
//! ```text
//! cargo bench --bench crypto                          # everything, about 2 minutes
//! cargo bench --bench crypto -- cipher_seal_in_place  # one group
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use envault::crypto::{bindings, Cipher, Envelope, EnvelopeKind, SecretKey};

/// Plaintext sizes: a small field, a typical row, a page, a STREAM chunk.
const SIZES: [usize; 4] = [64, 1024, 4096, 64 * 1024];
const DATABASE_ID: [u8; 16] = *b"bench-database-1";
const ROOT_KEY_ID: [u8; 16] = *b"bench-root-key-1";

fn cipher() -> Cipher {
    Cipher::new(&SecretKey::generate().expect("OS RNG available"))
}

/// The primitive alone. The nonce is fixed: reusing it is fine for timing (nothing is kept) and
/// keeps the OS RNG out of the figure, as `openssl speed` has none either.
fn cipher_seal_in_place(c: &mut Criterion) {
    let cipher = cipher();
    let nonce = [7u8; 12];
    let mut group = c.benchmark_group("cipher_seal_in_place");
    for size in SIZES {
        let mut buffer = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                cipher
                    .seal_in_place(&nonce, b"", black_box(&mut buffer))
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// What a record write costs in the crypto layer: context, fresh nonce from the OS RNG, header,
/// seal, allocation of the envelope.
fn record_seal(c: &mut Criterion) {
    let dek = cipher();
    let mut group = c.benchmark_group("record_seal");
    for size in SIZES {
        let value = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                let context = bindings::record_context(&DATABASE_ID, b"customers/42/email");
                Envelope(EnvelopeKind::Record)
                    .seal(&dek, 3, &context, black_box(&value))
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// What a record read costs: context, header checks, open in place. The envelope copy that
/// `open` consumes is made outside the timed section.
fn record_open(c: &mut Criterion) {
    let dek = cipher();
    let context = bindings::record_context(&DATABASE_ID, b"customers/42/email");
    let mut group = c.benchmark_group("record_open");
    for size in SIZES {
        let sealed = Envelope(EnvelopeKind::Record).seal(&dek, 3, &context, &vec![0x5a; size]);
        let sealed = sealed.expect("seal");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_batched(
                || sealed.clone(),
                |sealed| {
                    let context = bindings::record_context(&DATABASE_ID, b"customers/42/email");
                    Envelope(EnvelopeKind::Record)
                        .open(&dek, &context, sealed)
                        .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Wrapping a fresh 32-byte DEK under a root key, and unwrapping it into a `SecretKey` and an
/// expanded `Cipher` (what opening a database generation costs).
fn dek_wrap_unwrap(c: &mut Criterion) {
    let root = cipher();
    let dek = SecretKey::generate().expect("OS RNG available");
    let context = bindings::dek_context(&DATABASE_ID, 3, &ROOT_KEY_ID);
    let env = Envelope(EnvelopeKind::WrappedDek);
    let wrapped = env
        .seal(&root, 1, &context, dek.expose_secret())
        .expect("wrap");

    let mut group = c.benchmark_group("dek");
    group.throughput(Throughput::Elements(1));
    group.bench_function("wrap", |b| {
        b.iter(|| {
            env.seal(&root, 1, &context, black_box(dek.expose_secret()))
                .unwrap()
        })
    });
    group.bench_function("unwrap", |b| {
        b.iter_batched(
            || wrapped.clone(),
            |wrapped| {
                let (_, raw) = env.open(&root, &context, wrapped).unwrap();
                let dek = SecretKey::from_slice(&zeroize::Zeroizing::new(raw)).unwrap();
                Cipher::new(&dek)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = cipher_seal_in_place, record_seal, record_open, dek_wrap_unwrap
}
criterion_main!(benches);
