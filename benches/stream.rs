//! Criterion benches of the backup encryption: STREAM over AES-256-GCM (`crypto::stream`), one
//! 64 KiB chunk at a time, and the backup payload writer that frames records into chunks.
//!
//! `stream_seal/65536` and `stream_open/65536` are what `scripts/bench-backup.sh` compares with
//! `openssl speed -evp aes-256-gcm -bytes 65536`; keep their names and ids stable.
//!
//! ```text
//! cargo bench --bench stream                  # everything, about 30 seconds
//! cargo bench --bench stream -- stream_seal   # one group
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use envault::backup::stream_io::PayloadWriter;
use envault::crypto::stream::{random_prefix, StreamOpener, StreamSealer, CHUNK_SIZE};
use envault::crypto::{Cipher, SecretKey};

/// What a backup binds to every chunk: bytes 0..8 of the file and its JSON header (~350 bytes).
const AAD_LEN: usize = 360;

fn cipher() -> Cipher {
    Cipher::new(&SecretKey::generate().expect("OS RNG available"))
}

/// One full chunk sealed by a long-lived sealer, as a backup does: nonce from prefix and
/// counter, seal in place, tag appended. The buffer is cut back to the chunk after each seal
/// (its capacity already holds the tag, so nothing is allocated in the loop).
fn stream_seal(c: &mut Criterion) {
    let cipher = cipher();
    let aad = vec![0x42u8; AAD_LEN];
    let mut sealer = StreamSealer::new(&cipher, random_prefix().expect("OS RNG"), &aad);
    let mut chunk = Vec::with_capacity(CHUNK_SIZE + 16);
    chunk.resize(CHUNK_SIZE, 0x5a);
    let mut group = c.benchmark_group("stream_seal");
    group.throughput(Throughput::Bytes(CHUNK_SIZE as u64));
    group.bench_function(BenchmarkId::from_parameter(CHUNK_SIZE), |b| {
        b.iter(|| {
            sealer.seal_next(black_box(&mut chunk)).unwrap();
            chunk.truncate(CHUNK_SIZE);
        })
    });
    group.finish();
}

/// One full sealed chunk opened in place (tag checked and stripped). Each iteration needs a
/// fresh opener at counter 0 and a fresh copy of the chunk: both are made outside the timing,
/// one at a time so that the chunk is in cache as in a restore, where it was just read.
fn stream_open(c: &mut Criterion) {
    let cipher = cipher();
    let aad = vec![0x42u8; AAD_LEN];
    let prefix = random_prefix().expect("OS RNG");
    let mut sealed = vec![0x5a; CHUNK_SIZE];
    StreamSealer::new(&cipher, prefix, &aad)
        .seal_next(&mut sealed)
        .unwrap();
    let mut group = c.benchmark_group("stream_open");
    group.throughput(Throughput::Bytes(CHUNK_SIZE as u64));
    group.bench_function(BenchmarkId::from_parameter(CHUNK_SIZE), |b| {
        b.iter_batched(
            || (StreamOpener::new(&cipher, prefix, &aad), sealed.clone()),
            |(mut opener, mut chunk)| {
                opener.open_next(black_box(&mut chunk), false).unwrap();
                chunk
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The backup writer without the store and the disk: 16 MiB of records of a given size framed
/// (`key len | key | value len | value`), cut into chunks, sealed and written to a sink. The
/// difference with `stream_seal` is the framing and copying cost per byte.
fn payload_writer(c: &mut Criterion) {
    const TOTAL: usize = 16 << 20;
    let cipher = cipher();
    let aad = vec![0x42u8; AAD_LEN];
    let mut group = c.benchmark_group("payload_writer");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(20);
    for value_size in [1024usize, 64 * 1024, 1 << 20] {
        let value = vec![0x5au8; value_size];
        let records = TOTAL / value_size;
        group.bench_function(BenchmarkId::from_parameter(value_size), |b| {
            b.iter(|| {
                let prefix = [1u8; 7];
                let mut writer = PayloadWriter::new(std::io::sink(), &cipher, prefix, &aad);
                for i in 0..records {
                    let key = format!("records/{i:08}");
                    writer.add(key.as_bytes(), black_box(&value)).unwrap();
                }
                writer.finish().unwrap().1
            })
        });
    }
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
    targets = stream_seal, stream_open, payload_writer
}
criterion_main!(benches);
