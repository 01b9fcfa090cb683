//! Backup and restore throughput, and the daemon's resident memory while they run.
//!
//! ```sh
//! scripts/bench-backup.sh                      # builds, starts daemons, runs this twice
//! cargo run --release --example bench_backup -- 1024 --pid $(pidof envault)
//! ```
//!
//! Against a running daemon (`ENVAULT_SOCKET`, token from `ENVAULT_TOKEN` or
//! `$ENVAULT_DATA_DIR/operator.token`, default `./data`):
//!
//! 1. creates a database with a provider-managed key and loads SIZE_MB of records with random
//!    (incompressible) values of 64 KiB to 1 MiB from concurrent writers;
//! 2. reads the daemon's idle `VmRSS` from `/proc/<pid>/status`;
//! 3. times `POST /v1/databases/{db}/backups` while a thread polls `VmRSS` every 20 ms and
//!    keeps the peak (and, when the kernel lets us reset it through `/proc/<pid>/clear_refs`,
//!    also reads the exact peak `VmHWM`);
//! 4. times `POST /v1/backups/{id}/restore` the same way, then checks the restored database:
//!    same keys, and a sample of values equal (SHA-256) to what was written.
//!
//! With `--state FILE`, the loaded database and the digests of its values are remembered in
//! FILE; a later run with the same FILE (typically against the same data dir after restarting
//! the daemon) skips step 1 and measures that database, so the idle figure is that of a daemon
//! that has not just written the data.
//!
//! Prints a final `RESULT key=value …` line that the script turns into a table. MB = 10^6
//! bytes, MiB = 2^20 bytes; throughput counts record value bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use envault::api::RecordListQuery;
use envault::client::Client;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};

#[derive(Parser, Debug)]
#[command(about = "Backup/restore throughput and daemon memory against a running envault")]
struct Args {
    /// Record value bytes to load, in MiB.
    size_mib: u64,
    /// Pid of the daemon whose memory is sampled.
    #[arg(long)]
    pid: u32,
    /// Concurrent writers while loading.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Smallest value, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    min_value: usize,
    /// Largest value, bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_value: usize,
    /// Memory sampling period, milliseconds.
    #[arg(long, default_value_t = 20)]
    sample_ms: u64,
    /// Values compared after the restore.
    #[arg(long, default_value_t = 64)]
    verify: usize,
    /// Remembers the loaded database (name, bytes, digests) in this file; when it exists,
    /// loading is skipped and that database is measured (e.g. after restarting the daemon).
    #[arg(long)]
    state: Option<PathBuf>,
}

type Digests = BTreeMap<String, [u8; 32]>;

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

    // 1. Load, unless the state file names a database loaded by an earlier run.
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let reused = match &args.state {
        Some(path) if path.exists() => Some(read_state(path)?),
        _ => None,
    };
    let phase = if reused.is_some() { "reused" } else { "loaded" };
    let (db, loaded, digests, load_mbps) = match reused {
        Some((db, loaded, digests)) => {
            println!(
                "reusing {db} from {}: {} records, {:.1} MiB",
                args.state.as_ref().expect("state given").display(),
                digests.len(),
                mib(loaded)
            );
            (db, loaded, digests, 0.0)
        }
        None => {
            let db = format!("bench-{}m-{suffix}", args.size_mib);
            client.create_database(&db, None, None).await?;
            println!(
                "loading {} MiB into {db} ({} writers, values {}..={} bytes)",
                args.size_mib, args.writers, args.min_value, args.max_value
            );
            let started = Instant::now();
            let (loaded, digests) = load(&args, &socket, &token, &db, args.size_mib << 20).await?;
            let load_s = started.elapsed().as_secs_f64();
            let load_mbps = loaded as f64 / 1e6 / load_s;
            println!(
                "loaded {} records, {:.1} MiB in {load_s:.1} s ({load_mbps:.1} MB/s)",
                digests.len(),
                mib(loaded),
            );
            if let Some(path) = &args.state {
                write_state(path, &db, loaded, &digests)?;
            }
            (db, loaded, digests, load_mbps)
        }
    };

    // 2. Idle: let the group commit and sled's flusher settle, then read a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut idle = 0;
    for _ in 0..5 {
        idle = rss_kib(args.pid)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "daemon VmRSS: at start of this run {:.1} MiB, idle before the backup {:.1} MiB",
        kib_to_mib(rss_fresh),
        kib_to_mib(idle)
    );

    // 3. Backup.
    let sampler = Sampler::start(args.pid, Duration::from_millis(args.sample_ms));
    let started = Instant::now();
    let backup = client.create_backup(&db).await?;
    let backup_s = started.elapsed().as_secs_f64();
    let backup_mem = sampler.stop();
    let backup_id = &backup.id;
    let backup_size = backup.size;
    let backup_records = backup.record_count;
    if backup_records != digests.len() as u64 {
        return Err(format!(
            "backup holds {backup_records} records, {} were written",
            digests.len()
        )
        .into());
    }
    println!(
        "backup {backup_id}: {backup_records} records, file {:.1} MiB, {backup_s:.2} s, \
         {:.1} MB/s; VmRSS peak {:.1} MiB (+{:.1} MiB over idle){}",
        mib(backup_size),
        loaded as f64 / 1e6 / backup_s,
        kib_to_mib(backup_mem.peak_kib),
        kib_to_mib(backup_mem.peak_kib.saturating_sub(idle)),
        backup_mem.hwm_note(idle),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_before_restore = rss_kib(args.pid)?;

    // 4. Restore.
    let restored = format!("{db}-restored-{suffix}");
    let sampler = Sampler::start(args.pid, Duration::from_millis(args.sample_ms));
    let started = Instant::now();
    client.restore_backup(backup_id, &restored, None).await?;
    let restore_s = started.elapsed().as_secs_f64();
    let restore_mem = sampler.stop();
    println!(
        "restore into {restored}: {restore_s:.2} s, {:.1} MB/s; VmRSS before {:.1} MiB, peak \
         {:.1} MiB (+{:.1} MiB over idle before the backup){}",
        loaded as f64 / 1e6 / restore_s,
        kib_to_mib(idle_before_restore),
        kib_to_mib(restore_mem.peak_kib),
        kib_to_mib(restore_mem.peak_kib.saturating_sub(idle)),
        restore_mem.hwm_note(idle),
    );
    verify(&client, &restored, &digests, args.verify).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(args.pid)?;
    println!(
        "verified: {} keys, {} values compared; VmRSS after {:.1} MiB",
        digests.len(),
        args.verify.min(digests.len()),
        kib_to_mib(rss_after)
    );

    println!(
        "RESULT size_mib={} data={phase} records={} loaded_mib={:.1} load_mbps={load_mbps:.1} \
         file_mib={:.1} \
         rss_fresh_mib={:.1} rss_idle_mib={:.1} backup_s={backup_s:.2} backup_mbps={:.1} \
         backup_peak_mib={:.1} backup_above_idle_mib={:.1} backup_hwm_above_idle_mib={} \
         restore_s={restore_s:.2} restore_mbps={:.1} restore_peak_mib={:.1} \
         restore_above_idle_mib={:.1} restore_hwm_above_idle_mib={} \
         restore_above_before_mib={:.1} rss_after_mib={:.1}",
        args.size_mib,
        digests.len(),
        mib(loaded),
        mib(backup_size),
        kib_to_mib(rss_fresh),
        kib_to_mib(idle),
        loaded as f64 / 1e6 / backup_s,
        kib_to_mib(backup_mem.peak_kib),
        kib_to_mib(backup_mem.peak_kib.saturating_sub(idle)),
        backup_mem.hwm_above(idle),
        loaded as f64 / 1e6 / restore_s,
        kib_to_mib(restore_mem.peak_kib),
        kib_to_mib(restore_mem.peak_kib.saturating_sub(idle)),
        restore_mem.hwm_above(idle),
        kib_to_mib(restore_mem.peak_kib.saturating_sub(idle_before_restore)),
        kib_to_mib(rss_after),
    );
    Ok(())
}

/// Writes random values until `target` bytes; returns the bytes written and each key's digest.
async fn load(
    args: &Args,
    socket: &str,
    token: &str,
    db: &str,
    target: u64,
) -> Result<(u64, Digests), Box<dyn std::error::Error>> {
    let claimed = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for writer in 0..args.writers {
        let client = Client::new(socket, Some(token.to_string()));
        let (claimed, written) = (Arc::clone(&claimed), Arc::clone(&written));
        let (db, min, max) = (db.to_string(), args.min_value, args.max_value);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::from_rng(&mut rand::rng());
            let mut digests = Digests::new();
            let mut value = Vec::with_capacity(max);
            for i in 0u64.. {
                let len = rng.random_range(min..=max);
                if claimed.fetch_add(len as u64, Ordering::Relaxed) >= target {
                    break;
                }
                value.resize(len, 0);
                rng.fill(&mut value[..]);
                let key = format!("rec/{writer:02}/{i:08}");
                client.put_record(&db, &key, &value).await?;
                digests.insert(key, Sha256::digest(&value).into());
                written.fetch_add(len as u64, Ordering::Relaxed);
            }
            Ok::<_, envault::client::ClientError>(digests)
        }));
    }
    let mut all = Digests::new();
    for task in tasks {
        all.append(&mut task.await??);
    }
    Ok((written.load(Ordering::Relaxed), all))
}

fn write_state(path: &Path, db: &str, loaded: u64, digests: &Digests) -> std::io::Result<()> {
    let mut text = format!("{db}\n{loaded}\n");
    for (key, digest) in digests {
        text += &format!("{key} {}\n", hex(digest));
    }
    std::fs::write(path, text)
}

fn read_state(path: &Path) -> Result<(String, u64, Digests), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let bad = || format!("malformed state file {}", path.display());
    let db = lines.next().ok_or_else(bad)?.to_string();
    let loaded = lines.next().ok_or_else(bad)?.parse()?;
    let mut digests = Digests::new();
    for line in lines {
        let (key, digest) = line.split_once(' ').ok_or_else(bad)?;
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(digest.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)?;
        }
        digests.insert(key.to_string(), bytes);
    }
    Ok((db, loaded, digests))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The restored database has exactly the written keys, and a spread sample of equal values.
async fn verify(
    client: &Client,
    db: &str,
    digests: &Digests,
    sample: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut keys = Vec::with_capacity(digests.len());
    let mut query = RecordListQuery {
        limit: Some(1000),
        ..RecordListQuery::default()
    };
    loop {
        let page = client.list_records(db, &query).await?;
        keys.extend(page.keys);
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    if !keys.iter().eq(digests.keys()) {
        return Err(format!(
            "restored keys differ: {} restored, {} written",
            keys.len(),
            digests.len()
        )
        .into());
    }
    let step = (digests.len() / sample.max(1)).max(1);
    for (key, digest) in digests.iter().step_by(step).take(sample) {
        let value = client.get_record(db, key).await?;
        if Sha256::digest(&value)[..] != digest[..] {
            return Err(format!("restored value of {key} differs").into());
        }
    }
    Ok(())
}

/// Peak memory seen while an operation ran.
struct Memory {
    /// Largest sampled `VmRSS`, KiB.
    peak_kib: u64,
    /// `VmHWM` after resetting it at the start, KiB, when the reset was allowed.
    hwm_kib: Option<u64>,
}

impl Memory {
    fn hwm_above(&self, idle: u64) -> String {
        self.hwm_kib.map_or("n/a".into(), |hwm| {
            format!("{:.1}", kib_to_mib(hwm.saturating_sub(idle)))
        })
    }

    fn hwm_note(&self, idle: u64) -> String {
        self.hwm_kib.map_or(String::new(), |hwm| {
            format!(
                "; exact peak VmHWM {:.1} MiB (+{} MiB)",
                kib_to_mib(hwm),
                self.hwm_above(idle)
            )
        })
    }
}

/// A thread polling `/proc/<pid>/status` and keeping the largest `VmRSS`.
struct Sampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
    hwm_reset: bool,
}

impl Sampler {
    fn start(pid: u32, period: Duration) -> Self {
        // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
        let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                if let Ok(rss) = rss_kib(pid) {
                    peak = peak.max(rss);
                }
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(period);
            }
        });
        Sampler {
            pid,
            stop,
            thread,
            hwm_reset,
        }
    }

    fn stop(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        let peak_kib = self.thread.join().expect("sampler thread");
        let hwm_kib = self
            .hwm_reset
            .then(|| status_field(self.pid, "VmHWM:").ok())
            .flatten();
        Memory { peak_kib, hwm_kib }
    }
}

fn status_field(pid: u32, field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    status_field(pid, "VmRSS:")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
