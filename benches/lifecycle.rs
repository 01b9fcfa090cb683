//! Rotation and shred time against record count: both must be flat, since neither touches
//! records (rotation rewraps DEKs, a shred destroys key material and flips catalog states).
//!
//! `cargo bench --bench lifecycle` runs 1,000 and 1,000,000 records (or as many as load in
//! `ENVAULT_BENCH_FILL_SECS`, default 120 s). `ENVAULT_BENCH_SIZES=1000,50000` picks sizes.
//! Runs the real service in-process on a temp dir (same code as the daemon, minus the socket).

use std::sync::Arc;
use std::time::{Duration, Instant};

use envault::api::{CreateDatabaseRequest, CreateKeyRequest};
use envault::config::Config;
use envault::service::{GrantRequest, Principal, Vault};

const WRITERS: usize = 256;

async fn fill(vault: &Arc<Vault>, db: &str, target: usize, budget: Duration) -> usize {
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let vault = Arc::clone(vault);
        let next = Arc::clone(&next);
        let db = db.to_string();
        tasks.push(tokio::spawn(async move {
            let who = Principal::system();
            let value = [0x5Au8; 100];
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= target || start.elapsed() > budget {
                    return;
                }
                vault
                    .put_record(&who, &db, &format!("record-{i:09}"), &value)
                    .await
                    .expect("put");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    next.load(std::sync::atomic::Ordering::Relaxed).min(target)
}

async fn run(size: usize, budget: Duration) -> (usize, Duration, Duration, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::load(None).expect("config");
    config.data_dir = dir.path().join("data");
    let vault = Arc::new(Vault::open(&config).expect("vault"));
    let who = Principal::system();
    vault
        .create_key(
            &who,
            CreateKeyRequest {
                name: "k".into(),
                ..Default::default()
            },
        )
        .await
        .expect("key");
    vault
        .grant(
            &who,
            GrantRequest {
                source: "databases".into(),
                target: "k".into(),
                roles: vec!["Reader".into()],
            },
        )
        .await
        .expect("grant");
    vault
        .create_database(
            &who,
            CreateDatabaseRequest {
                name: "db".into(),
                key: Some("k".into()),
                backup_key: None,
            },
        )
        .await
        .expect("db");
    let load_start = Instant::now();
    let loaded = fill(&vault, "db", size, budget).await;
    let load = load_start.elapsed();
    let rotate_start = Instant::now();
    let job = vault.start_rotation(&who, "k", true).await.expect("rotate");
    vault.run_rotation(&who, job).await.expect("rotation job");
    let rotate = rotate_start.elapsed();
    let shred_start = Instant::now();
    vault.delete_key(&who, "k", true).await.expect("shred");
    let shred = shred_start.elapsed();
    (loaded, load, rotate, shred)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("ENVAULT_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if benching {
                vec![1_000, 1_000_000]
            } else {
                vec![100]
            }
        });
    let budget = Duration::from_secs(
        std::env::var("ENVAULT_BENCH_FILL_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("records    load_s   rotate_ms  shred_ms");
    let mut results = Vec::new();
    for size in sizes {
        let (loaded, load, rotate, shred) = runtime.block_on(run(size, budget));
        println!(
            "{loaded:>9}  {:>7.1}  {:>9.2}  {:>8.2}",
            load.as_secs_f64(),
            rotate.as_secs_f64() * 1e3,
            shred.as_secs_f64() * 1e3
        );
        results.push((loaded, rotate, shred));
    }
    if let (Some(first), Some(last)) = (results.first(), results.last()) {
        if results.len() > 1 {
            println!(
                "ratio {}→{} records: rotate {:.2}x, shred {:.2}x",
                first.0,
                last.0,
                last.1.as_secs_f64() / first.1.as_secs_f64(),
                last.2.as_secs_f64() / first.2.as_secs_f64()
            );
        }
    }
}
