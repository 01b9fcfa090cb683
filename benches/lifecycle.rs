//! Rotation and shred time against record count: both must be flat, since neither touches
//! records (rotation rewraps DEKs, a shred destroys key material and flips catalog states).
//!
//! `cargo bench --bench lifecycle` runs 1,000 and 1,000,000 records (or as many as load in
//! `ENVAULT_BENCH_FILL_SECS`, default 120 s). `ENVAULT_BENCH_SIZES=1000,50000` picks sizes.
//! The key protects `ENVAULT_BENCH_DATABASES` databases (default 100); records are spread
//! evenly over them. Rotation is timed `ENVAULT_BENCH_ROTATIONS` times (default 5; the median
//! counts), the shred once. Each size also prints one `RESULT {json}` line for scripts.
//! Runs the real service in-process on a temp dir (same code as the daemon, minus the socket).

use std::sync::Arc;
use std::time::{Duration, Instant};

use envault::api::{CreateDatabaseRequest, CreateKeyRequest};
use envault::config::Config;
use envault::service::{GrantRequest, Principal, Vault};

const WRITERS: usize = 256;

async fn fill(vault: &Arc<Vault>, dbs: &[String], target: usize, budget: Duration) -> usize {
    let dbs = Arc::new(dbs.to_vec());
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let vault = Arc::clone(vault);
        let next = Arc::clone(&next);
        let dbs = Arc::clone(&dbs);
        tasks.push(tokio::spawn(async move {
            let who = Principal::system();
            let value = [0x5Au8; 100];
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= target || start.elapsed() > budget {
                    return;
                }
                vault
                    .put_record(&who, &dbs[i % dbs.len()], &format!("record-{i:09}"), &value)
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

struct Outcome {
    loaded: usize,
    load: Duration,
    /// Every rotation's time, sorted.
    rotations: Vec<Duration>,
    shred: Duration,
}

impl Outcome {
    fn rotate(&self) -> Duration {
        self.rotations[self.rotations.len() / 2]
    }
}

async fn run(size: usize, databases: usize, rotations: usize, budget: Duration) -> Outcome {
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
    let dbs: Vec<String> = (0..databases).map(|i| format!("db-{i}")).collect();
    for name in &dbs {
        vault
            .create_database(
                &who,
                CreateDatabaseRequest {
                    name: name.clone(),
                    key: Some("k".into()),
                    backup_key: None,
                    ..Default::default()
                },
            )
            .await
            .expect("db");
    }
    let load_start = Instant::now();
    let loaded = fill(&vault, &dbs, size, budget).await;
    let load = load_start.elapsed();
    let mut times = Vec::new();
    for _ in 0..rotations.max(1) {
        let rotate_start = Instant::now();
        let job = vault.start_rotation(&who, "k", true).await.expect("rotate");
        vault.run_rotation(&who, job).await.expect("rotation job");
        times.push(rotate_start.elapsed());
    }
    times.sort();
    let shred_start = Instant::now();
    vault.delete_key(&who, "k", true).await.expect("shred");
    let shred = shred_start.elapsed();
    Outcome {
        loaded,
        load,
        rotations: times,
        shred,
    }
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
    let env_number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let databases = env_number("ENVAULT_BENCH_DATABASES", if benching { 100 } else { 3 });
    let rotations = env_number("ENVAULT_BENCH_ROTATIONS", if benching { 5 } else { 1 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("{databases} databases under one key; rotation median of {rotations}");
    println!("records    load_s   rotate_ms  shred_ms");
    let mut results = Vec::new();
    for size in sizes {
        let outcome = runtime.block_on(run(size, databases, rotations, budget));
        let (loaded, rotate, shred) = (outcome.loaded, outcome.rotate(), outcome.shred);
        println!(
            "{loaded:>9}  {:>7.1}  {:>9.2}  {:>8.2}",
            outcome.load.as_secs_f64(),
            rotate.as_secs_f64() * 1e3,
            shred.as_secs_f64() * 1e3
        );
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        println!(
            "RESULT {}",
            serde_json::json!({
                "records_target": size,
                "records": loaded,
                "databases": databases,
                "load_s": outcome.load.as_secs_f64(),
                "rotate_ms": ms(&rotate),
                "rotate_all_ms": outcome.rotations.iter().map(ms).collect::<Vec<_>>(),
                "shred_ms": ms(&shred),
            })
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
