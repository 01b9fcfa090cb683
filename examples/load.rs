//! Mixed load against a running daemon: concurrent clients for a fixed time, counting errors,
//! measuring latency per operation and sampling the daemon's resident memory every second.
//!
//! ```sh
//! scripts/load.sh                                   # builds, starts a daemon, runs 60 s
//! cargo run --release --example load -- --pid $(pidof envault) --seconds 60
//! ```
//!
//! Against a running daemon (`ENVAULT_SOCKET`, token from `ENVAULT_TOKEN` or
//! `$ENVAULT_DATA_DIR/operator.token`, default `./data`): creates a few databases with
//! provider-managed keys, fills each with `--keys` records of `--value-size` bytes, then runs
//! `--clients` tokio tasks, each with its own [`Client`] (so its own connection), doing
//! 60 % get, 30 % put, 5 % list (one page of up to 100 keys under a random prefix) and 5 %
//! delete, on random keys of random databases, until `--seconds` have passed.
//!
//! A get or delete answering `not_found` (the key was deleted by another client) is a miss, not
//! an error; anything else that is not a success is an error, and the run fails unless there
//! are none. Prints latency percentiles per operation and overall, ops/s per 10 s window, the
//! `VmRSS` series, and a final `RESULT key=value …` line.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use envault::api::RecordListQuery;
use envault::client::{Client, ClientError};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

#[derive(Parser, Debug)]
#[command(about = "Mixed concurrent load against a running envault")]
struct Args {
    /// Duration of the measured run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Pid of the daemon whose memory is sampled.
    #[arg(long)]
    pid: u32,
    /// Concurrent clients (tokio tasks with one connection each).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Databases the load spreads over.
    #[arg(long, default_value_t = 4)]
    databases: usize,
    /// Distinct record keys per database (all written before the run).
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Value size of puts, bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
}

const OPS: [&str; 4] = ["get", "put", "list", "delete"];

/// What one client saw.
#[derive(Default)]
struct Tally {
    /// Latency in microseconds of each completed operation, per kind (index in [`OPS`]).
    latency: [Vec<u32>; 4],
    misses: [u64; 4],
    errors: u64,
    first_errors: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let socket = std::env::var("ENVAULT_SOCKET").unwrap_or_else(|_| "envault.sock".into());
    let token = match std::env::var("ENVAULT_TOKEN") {
        Ok(token) => token,
        Err(_) => {
            let dir = std::env::var("ENVAULT_DATA_DIR").unwrap_or_else(|_| "data".into());
            let path = PathBuf::from(dir).join("operator.token");
            std::fs::read_to_string(&path)
                .map_err(|e| format!("no ENVAULT_TOKEN and cannot read {}: {e}", path.display()))?
        }
    };
    let token = token.trim().to_string();
    let client = Client::new(&socket, Some(token.clone()));
    client.health().await?;
    let rss_fresh = rss_kib(args.pid)?;

    // Databases, filled so that gets mostly hit.
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let databases: Arc<Vec<String>> = Arc::new(
        (0..args.databases)
            .map(|i| format!("load-{suffix}-{i}"))
            .collect(),
    );
    for db in databases.iter() {
        client.create_database(db, None, None).await?;
    }
    let started = Instant::now();
    let mut fillers = Vec::new();
    for c in 0..args.clients {
        let client = Client::new(&socket, Some(token.clone()));
        let (databases, keys, size) = (Arc::clone(&databases), args.keys, args.value_size);
        let clients = args.clients;
        fillers.push(tokio::spawn(async move {
            let value = vec![0x5au8; size];
            for db in databases.iter() {
                for k in (c..keys).step_by(clients) {
                    client.put_record(db, &key_name(k), &value).await?;
                }
            }
            Ok::<_, ClientError>(())
        }));
    }
    for filler in fillers {
        filler.await??;
    }
    println!(
        "filled {} databases x {} keys of {} bytes in {:.1} s; daemon VmRSS fresh {:.1} MiB, \
         after fill {:.1} MiB",
        args.databases,
        args.keys,
        args.value_size,
        started.elapsed().as_secs_f64(),
        kib_to_mib(rss_fresh),
        kib_to_mib(rss_kib(args.pid)?)
    );

    // The run.
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, stop, pid) = (Arc::clone(&done), Arc::clone(&stop), args.pid);
        tokio::spawn(async move {
            let mut series = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                series.push((rss_kib(pid).unwrap_or(0), done.load(Ordering::Relaxed)));
            }
            series
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let client = Client::new(&socket, Some(token.clone()));
        let (databases, done) = (Arc::clone(&databases), Arc::clone(&done));
        let (keys, size) = (args.keys, args.value_size);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::from_rng(&mut rand::rng());
            let mut tally = Tally::default();
            let mut value = vec![0u8; size];
            while Instant::now() < deadline {
                let db = &databases[rng.random_range(0..databases.len())];
                let key = key_name(rng.random_range(0..keys));
                let roll = rng.random_range(0..100u32);
                let op = match roll {
                    0..60 => 0,
                    60..90 => 1,
                    90..95 => 2,
                    _ => 3,
                };
                let t0 = Instant::now();
                let result = match op {
                    0 => client.get_record(db, &key).await.map(drop),
                    1 => {
                        rng.fill(&mut value[..]);
                        client.put_record(db, &key, &value).await
                    }
                    2 => {
                        let query = RecordListQuery {
                            prefix: Some(key[..4].to_string()),
                            limit: Some(100),
                            ..RecordListQuery::default()
                        };
                        client.list_records(db, &query).await.map(drop)
                    }
                    _ => client.delete_record(db, &key).await,
                };
                let micros = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                match result {
                    Ok(()) => tally.latency[op].push(micros),
                    Err(e) if op != 1 && e.code() == Some("not_found") => {
                        tally.misses[op] += 1;
                        tally.latency[op].push(micros);
                    }
                    Err(e) => {
                        tally.errors += 1;
                        if tally.first_errors.len() < 5 {
                            tally
                                .first_errors
                                .push(format!("{} {db}/{key}: {e}", OPS[op]));
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let mut tally = task.await?;
        for op in 0..OPS.len() {
            total.latency[op].append(&mut tally.latency[op]);
            total.misses[op] += tally.misses[op];
        }
        total.errors += tally.errors;
        total.first_errors.append(&mut tally.first_errors);
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let series = sampler.await?;

    // Report.
    let completed: usize = total.latency.iter().map(Vec::len).sum();
    println!(
        "\n{} clients, {:.1} s: {completed} operations, {:.0} ops/s, {} errors",
        args.clients,
        elapsed,
        completed as f64 / elapsed,
        total.errors
    );
    for line in &total.first_errors {
        println!("  error: {line}");
    }
    println!(
        "\n{:8} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "op", "count", "misses", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    let mut all = Vec::with_capacity(completed);
    let mut result = String::new();
    for (op, name) in OPS.iter().enumerate() {
        let lat = &mut total.latency[op];
        all.extend_from_slice(lat);
        lat.sort_unstable();
        print_row(name, lat, total.misses[op]);
        result += &format!(
            " {name}_count={} {name}_p50_ms={:.2} {name}_p99_ms={:.2}",
            lat.len(),
            pct(lat, 0.50),
            pct(lat, 0.99)
        );
    }
    all.sort_unstable();
    print_row("all", &all, total.misses.iter().sum());

    println!("\nsecond  VmRSS MiB  ops/s (over the last second)");
    let mut previous = 0;
    for (i, (kib, ops)) in series.iter().enumerate() {
        println!(
            "{:6}  {:9.1}  {:8}",
            i + 1,
            kib_to_mib(*kib),
            ops - previous
        );
        previous = *ops;
    }
    let at = |s: usize| {
        series
            .get(s.min(series.len()).saturating_sub(1))
            .map_or(0.0, |(kib, _)| kib_to_mib(*kib))
    };
    let after_warmup: Vec<u64> = series.iter().skip(10).map(|(kib, _)| *kib).collect();
    let (low, high) = (
        after_warmup.iter().min().copied().unwrap_or(0),
        after_warmup.iter().max().copied().unwrap_or(0),
    );
    println!(
        "VmRSS at 10 s {:.1} MiB, 30 s {:.1} MiB, {} s {:.1} MiB; after 10 s between {:.1} and \
         {:.1} MiB",
        at(10),
        at(30),
        series.len(),
        at(series.len()),
        kib_to_mib(low),
        kib_to_mib(high)
    );
    println!(
        "RESULT clients={} seconds={elapsed:.1} ops={completed} ops_per_s={:.0} errors={} \
         p50_ms={:.2} p99_ms={:.2}{result} rss_fresh_mib={:.1} rss_10s_mib={:.1} \
         rss_30s_mib={:.1} rss_end_mib={:.1} rss_min_after_10s_mib={:.1} \
         rss_max_after_10s_mib={:.1}",
        args.clients,
        completed as f64 / elapsed,
        total.errors,
        pct(&all, 0.50),
        pct(&all, 0.99),
        kib_to_mib(rss_fresh),
        at(10),
        at(30),
        at(series.len()),
        kib_to_mib(low),
        kib_to_mib(high)
    );
    if total.errors > 0 {
        return Err(format!("{} operations failed", total.errors).into());
    }
    Ok(())
}

fn key_name(k: usize) -> String {
    format!("k{k:05}")
}

fn print_row(name: &str, sorted: &[u32], misses: u64) {
    println!(
        "{name:8} {:>9} {misses:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        sorted.len(),
        pct(sorted, 0.50),
        pct(sorted, 0.99),
        pct(sorted, 0.999),
        sorted.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
