//! Root-key backends: wrap/unwrap latency and throughput per backend, cold-start
//! unwrap of many databases, and record GET throughput once DEKs are cached.
//!
//! `cargo bench --bench backends` starts its own OpenBao (dev mode) and SoftHSM2 token, like
//! the tests. `ENVAULT_BENCH_BACKENDS=file,transit,pkcs11`, `ENVAULT_BENCH_OPS=2000` (wrap and
//! unwrap calls per run), `ENVAULT_BENCH_DATABASES=1000`, `ENVAULT_BENCH_GET_SECS=5`.
//! Prints a Markdown table.

// The integration tests' harness, of which this bench uses only a part.
#[allow(dead_code, unused_imports)]
#[path = "../tests/suite/backend_support/mod.rs"]
mod backend_support;
#[allow(dead_code, unused_imports)]
#[path = "../tests/suite/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_support::{Fixture, Kind};
use envault::crypto::{EnvelopeKind, SecretKey};
use envault::keystore::pkcs11::Pkcs11Keystore;
use envault::keystore::transit::TransitKeystore;
use envault::keystore::{NewKey, RootKeyBackend, RootKeyRef};

const CONCURRENCY: usize = 8;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The backend opened in this process, as the daemon opens it.
fn open_in_process(fixture: &Fixture, dir: &std::path::Path) -> Arc<dyn RootKeyBackend> {
    match fixture.kind {
        Kind::File => Arc::new(
            envault::keystore::file::FileKeystore::open(dir, &dir.join("master.key"))
                .expect("file keystore"),
        ),
        Kind::Transit => {
            let bao = fixture.bao.as_ref().expect("bao");
            let token = zeroize::Zeroizing::new(bao.token.clone());
            Arc::new(TransitKeystore::connect(&bao.config(), token).expect("transit"))
        }
        Kind::Pkcs11 => {
            let hsm = fixture.hsm.as_ref().expect("hsm");
            std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
            Arc::new(Pkcs11Keystore::connect(&hsm.config(), &hsm.pin).expect("pkcs11"))
        }
    }
}

struct Figures {
    ops_per_sec: f64,
    p99: Duration,
}

/// `ops` calls of `op` spread over `threads` threads: throughput and p99 latency.
fn measure(threads: usize, ops: usize, op: impl Fn(usize) + Sync) -> Figures {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= ops {
                            return mine;
                        }
                        let t = Instant::now();
                        op(i);
                        mine.push(t.elapsed());
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Figures {
        ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
        p99: latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)],
    }
}

fn wrap_unwrap(fixture: &Fixture, ops: usize) -> Vec<(String, Figures)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = open_in_process(fixture, dir.path());
    let key = RootKeyRef {
        key_id: uuid::Uuid::new_v4(),
        version: 1,
    };
    backend
        .create(key.key_id, NewKey::Generate)
        .expect("create");
    let dek = SecretKey::generate().expect("dek");
    let context = b"bench context".to_vec();
    let sealed = backend
        .seal(key, EnvelopeKind::WrappedDek, &context, dek.expose_secret())
        .expect("seal");
    let mut out = Vec::new();
    for threads in [1, CONCURRENCY] {
        let wrap = measure(threads, ops, |_| {
            backend
                .seal(key, EnvelopeKind::WrappedDek, &context, dek.expose_secret())
                .expect("seal");
        });
        out.push((format!("wrap, {threads} thread(s)"), wrap));
        let unwrap = measure(threads, ops, |_| {
            let plain = backend
                .open(
                    key.key_id,
                    EnvelopeKind::WrappedDek,
                    &context,
                    sealed.clone(),
                )
                .expect("open");
            assert_eq!(plain.len(), 32);
        });
        out.push((format!("unwrap, {threads} thread(s)"), unwrap));
    }
    backend.destroy(key.key_id, None).expect("destroy");
    out
}

/// Creates `databases` databases with one record each, restarts the daemon, reads every record
/// once (every read unwraps a DEK at the backend), then reads cached records for `secs`.
async fn daemon_figures(fixture: &Fixture, databases: usize, secs: u64) -> (Duration, f64) {
    let mut daemon = fixture.daemon().await;
    let client = daemon.client();
    client.create_key("root", None, None).await.expect("key");
    common::allow_databases(&client, "root").await;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let client = daemon.client();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= databases {
                    return;
                }
                let db = format!("db-{i}");
                client
                    .create_database(&db, Some("root"), None)
                    .await
                    .expect("db");
                client.put_record(&db, "r", b"value").await.expect("put");
            }
        }));
    }
    for task in tasks {
        task.await.expect("creator");
    }
    daemon.stop_graceful().await;
    daemon.restart().await;
    assert_eq!(
        daemon
            .client()
            .get_record("db-0", "r")
            .await
            .expect("warm-up read"),
        b"value"
    );

    let cold = Instant::now();
    let next = Arc::new(AtomicUsize::new(1));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let client = daemon.client();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= databases {
                    return;
                }
                client
                    .get_record(&format!("db-{i}"), "r")
                    .await
                    .expect("cold read");
            }
        }));
    }
    for task in tasks {
        task.await.expect("reader");
    }
    let cold = cold.elapsed();

    let done = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let hot = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let client = daemon.client();
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < until {
                client
                    .get_record(&format!("db-{}", i % databases), "r")
                    .await
                    .expect("hot read");
                done.fetch_add(1, Ordering::Relaxed);
                i += CONCURRENCY;
            }
        }));
    }
    for task in tasks {
        task.await.expect("reader");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / hot.elapsed().as_secs_f64();
    daemon.stop_graceful().await;
    (cold, rate)
}

fn main() {
    let backends = std::env::var("ENVAULT_BENCH_BACKENDS").unwrap_or("file,transit,pkcs11".into());
    let ops = env_usize("ENVAULT_BENCH_OPS", 2000);
    let databases = env_usize("ENVAULT_BENCH_DATABASES", 1000);
    let secs = env_usize("ENVAULT_BENCH_GET_SECS", 5) as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for name in backends.split(',') {
        let kind = match name.trim() {
            "file" => Kind::File,
            "transit" => Kind::Transit,
            "pkcs11" => Kind::Pkcs11,
            other => panic!("unknown backend {other:?}"),
        };
        let fixture = Fixture::start(kind);
        eprintln!("{name}: wrap/unwrap, {ops} calls per row");
        for (what, figures) in wrap_unwrap(&fixture, ops) {
            rows.push(format!(
                "| {name} | {what} | {:.0} ops/s | p99 {:.1} µs |",
                figures.ops_per_sec,
                figures.p99.as_secs_f64() * 1e6
            ));
        }
        eprintln!("{name}: {databases} databases through the daemon");
        let (cold, rate) = runtime.block_on(daemon_figures(&fixture, databases, secs));
        rows.push(format!(
            "| {name} | cold start: first read of {} databases ({CONCURRENCY} clients) | {:.2} s | {:.0} unwraps/s |",
            databases - 1,
            cold.as_secs_f64(),
            (databases - 1) as f64 / cold.as_secs_f64()
        ));
        rows.push(format!(
            "| {name} | record GET, DEKs cached ({CONCURRENCY} clients, {secs} s) | {rate:.0} req/s | |"
        ));
    }
    println!("| backend | measurement | result | |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
