//! Storage engine choice: envault's record workload on fjall 3, redb 4 and sled 0.34.
//!
//! `cargo bench --bench engines` runs every engine; `cargo bench --bench engines -- fjall`
//! one. Per engine, in a fresh directory under `ENGINES_DIR` (default the system temp dir):
//!
//! - durable 1 KiB PUT by 1, 16 and 64 writer threads through one group committer: writers
//!   enqueue, the committer takes everything queued, writes it and makes it durable with the
//!   engine's own sync (fjall: journal `persist(SyncData)`; redb: a commit with
//!   `Durability::Immediate`; sled: `flush`), then answers every writer of the batch;
//! - GET of random existing keys by 2 threads;
//! - a scan of `ENGINES_SCAN` records (default 1,000,000) of 1 KiB in a fresh process, whose
//!   peak RSS above its RSS after open is reported (the cache cap is 32 MiB for all three);
//! - recovery: a child process writing through the group committer is killed with SIGKILL,
//!   then the time to open the directory again is measured in a fresh process.
//!
//! Values are random bytes, as sealed records are. Keys are a 16-byte database id and a key.
//!
//! `fjall` has the store's settings (every value in a blob file); `fjall-inline` keeps values
//! under 4 KiB inline in the tables, as the store did before. `ENGINES_PUT_GET_ONLY=1` stops
//! each engine after its PUT and GET rows (to compare settings without the long scan).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const CACHE: u64 = 32 << 20;
const VALUE: usize = 1024;
const DB: [u8; 16] = [7u8; 16];

fn key(i: u64) -> Vec<u8> {
    let mut k = DB.to_vec();
    k.extend_from_slice(format!("record-{i:010}").as_bytes());
    k
}

fn value(seed: u64) -> Vec<u8> {
    // xorshift: incompressible like ciphertext, cheap to make.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(VALUE);
    while v.len() < VALUE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(VALUE);
    v
}

trait Engine: Send + Sync {
    /// Writes the batch and makes it durable (`durable`) or not (bulk loading).
    fn write(&self, batch: &[(Vec<u8>, Vec<u8>)], durable: bool);
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Reads every record, returns (count, bytes).
    fn scan(&self) -> (u64, u64);
}

struct Fjall {
    db: fjall::Database,
    records: fjall::Keyspace,
}

impl Fjall {
    /// Values of at least `separation` bytes go to blob files: 1 is the store's setting (every
    /// value in a blob file, under its own checksum), 4096 its earlier one (1 KiB values inline
    /// in the tables' blocks).
    fn open(dir: &Path, separation: u32) -> Self {
        let db = fjall::Database::builder(dir)
            .cache_size(CACHE)
            .manual_journal_persist(true)
            .open()
            .expect("open fjall");
        let records = db
            .keyspace("records", || {
                fjall::KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(8 << 20)
                    .with_kv_separation(Some(
                        fjall::KvSeparationOptions::default().separation_threshold(separation),
                    ))
            })
            .expect("keyspace");
        Fjall { db, records }
    }
}

impl Engine for Fjall {
    fn write(&self, batch: &[(Vec<u8>, Vec<u8>)], durable: bool) {
        let mut b = self.db.batch();
        for (k, v) in batch {
            b.insert(&self.records, k.as_slice(), v.as_slice());
        }
        b.commit().expect("commit");
        if durable {
            self.db
                .persist(fjall::PersistMode::SyncData)
                .expect("persist");
        }
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.records.get(key).expect("get").map(|v| v.to_vec())
    }
    fn scan(&self) -> (u64, u64) {
        let (mut n, mut bytes) = (0, 0);
        for g in self.records.iter() {
            let (_, v) = g.into_inner().expect("scan");
            n += 1;
            bytes += v.len() as u64;
        }
        (n, bytes)
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("records");

struct Redb {
    db: redb::Database,
}

impl Redb {
    fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let db = redb::Database::builder()
            .set_cache_size(CACHE as usize)
            .create(dir.join("records.redb"))
            .expect("open redb");
        Redb { db }
    }
}

impl Engine for Redb {
    fn write(&self, batch: &[(Vec<u8>, Vec<u8>)], durable: bool) {
        let mut tx = self.db.begin_write().expect("begin");
        let durability = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        tx.set_durability(durability).expect("durability");
        {
            let mut t = tx.open_table(TABLE).expect("table");
            for (k, v) in batch {
                t.insert(k.as_slice(), v.as_slice()).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().expect("read");
        let t = tx.open_table(TABLE).expect("table");
        t.get(key).expect("get").map(|v| v.value().to_vec())
    }
    fn scan(&self) -> (u64, u64) {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read().expect("read");
        let t = tx.open_table(TABLE).expect("table");
        let (mut n, mut bytes) = (0, 0);
        for e in t.iter().expect("iter") {
            let (_, v) = e.expect("scan");
            n += 1;
            bytes += v.value().len() as u64;
        }
        (n, bytes)
    }
}

struct Sled {
    db: sled::Db,
}

impl Sled {
    fn open(dir: &Path) -> Self {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE)
            .open()
            .expect("open sled");
        Sled { db }
    }
}

impl Engine for Sled {
    fn write(&self, batch: &[(Vec<u8>, Vec<u8>)], durable: bool) {
        let mut b = sled::Batch::default();
        for (k, v) in batch {
            b.insert(k.as_slice(), v.as_slice());
        }
        self.db.apply_batch(b).expect("batch");
        if durable {
            self.db.flush().expect("flush");
        }
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.db.get(key).expect("get").map(|v| v.to_vec())
    }
    fn scan(&self) -> (u64, u64) {
        let (mut n, mut bytes) = (0, 0);
        for e in self.db.iter() {
            let (_, v) = e.expect("scan");
            n += 1;
            bytes += v.len() as u64;
        }
        (n, bytes)
    }
}

fn open(engine: &str, dir: &Path) -> Box<dyn Engine> {
    match engine {
        "fjall" => Box::new(Fjall::open(dir, 1)),
        "fjall-inline" => Box::new(Fjall::open(dir, 4096)),
        "redb" => Box::new(Redb::open(dir)),
        "sled" => Box::new(Sled::open(dir)),
        other => panic!("unknown engine {other}"),
    }
}

type Job = (Vec<u8>, Vec<u8>, mpsc::SyncSender<()>);

/// The group committer: one thread drains the queue, writes a batch, syncs once.
fn committer(engine: Arc<dyn Engine>, rx: mpsc::Receiver<Job>, batches: Arc<AtomicU64>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        let batch: Vec<_> = jobs
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        engine.write(&batch, true);
        batches.fetch_add(1, Ordering::Relaxed);
        for (_, _, done) in jobs {
            let _ = done.send(());
        }
    }
}

/// Durable PUTs by `writers` threads for `secs`; returns (ops/s, p99 µs, ops per batch).
fn durable_puts(engine: Arc<dyn Engine>, writers: u64, secs: f64, base: u64) -> (f64, u64, f64) {
    let (tx, rx) = mpsc::channel::<Job>();
    let batches = Arc::new(AtomicU64::new(0));
    let c = {
        let (e, b) = (engine.clone(), batches.clone());
        std::thread::spawn(move || committer(e, rx, b))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let n = base + w * 100_000_000 + i;
                    let (dtx, drx) = mpsc::sync_channel(1);
                    let t = Instant::now();
                    tx.send((key(n), value(n), dtx)).expect("queue");
                    drx.recv().expect("ack");
                    lat.push(t.elapsed().as_micros() as u64);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    drop(tx);
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("writer"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    c.join().expect("committer");
    lat.sort_unstable();
    let ops = lat.len() as f64;
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or(0);
    let per_batch = ops / batches.load(Ordering::Relaxed).max(1) as f64;
    (ops / elapsed, p99, per_batch)
}

fn gets(engine: Arc<dyn Engine>, keys: u64, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            let (e, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut x = 0x2545_F491_4F6C_DD1Du64 ^ t;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    assert!(e.get(&key(x % keys)).is_some(), "missing key");
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let n: u64 = handles.into_iter().map(|h| h.join().expect("get")).sum();
    n as f64 / start.elapsed().as_secs_f64()
}

fn load(engine: &dyn Engine, from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let end = (i + 1000).min(to);
        let batch: Vec<_> = (i..end).map(|n| (key(n), value(n))).collect();
        engine.write(&batch, false);
        i = end;
    }
    engine.write(&[], true);
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs this program again as a child in `mode`, returning its stdout.
fn child(mode: &str, engine: &str, dir: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--child", mode, engine])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn child_output(c: std::process::Child) -> String {
    let out = c.wait_with_output().expect("child");
    assert!(out.status.success(), "child failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn run_child(mode: &str, engine: &str, dir: &Path) {
    match mode {
        "scan" => {
            let e = open(engine, dir);
            let idle = status_kib("VmRSS:");
            let t = Instant::now();
            let (n, bytes) = e.scan();
            let secs = t.elapsed().as_secs_f64();
            let peak = status_kib("VmHWM:");
            println!(
                "{n} {bytes} {secs:.2} {} {}",
                idle / 1024,
                peak.saturating_sub(idle) / 1024
            );
        }
        "write" => {
            let e: Arc<dyn Engine> = Arc::from(open(engine, dir));
            println!("ready");
            durable_puts(e, 16, 3600.0, 1 << 40);
        }
        "open" => {
            let t = Instant::now();
            let e = open(engine, dir);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let _ = e.get(&key(0));
            println!("{ms:.1}");
        }
        other => panic!("unknown mode {other}"),
    }
}

fn bench(engine: &str, root: &Path, scan_records: u64, secs: f64) {
    let dir = root.join(engine);
    let _ = std::fs::remove_dir_all(&dir);
    let e: Arc<dyn Engine> = Arc::from(open(engine, &dir));
    load(e.as_ref(), 0, 100_000);
    for writers in [1u64, 16, 64] {
        let (ops, p99, per_batch) = durable_puts(e.clone(), writers, secs, writers << 32);
        println!(
            "| {engine} | durable PUT, {writers} writers | {ops:.0} ops/s | p99 {p99} µs, {per_batch:.1} PUTs per sync |"
        );
    }
    let get = gets(e.clone(), 100_000, secs);
    println!("| {engine} | GET, 2 threads | {get:.0} ops/s | |");
    if std::env::var_os("ENGINES_PUT_GET_ONLY").is_some() {
        drop(e);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let t = Instant::now();
    load(e.as_ref(), 100_000, scan_records);
    let load_secs = t.elapsed().as_secs_f64();
    drop(e);
    let disk = du(&dir);
    let out = child_output(child("scan", engine, &dir));
    let f: Vec<&str> = out.split_whitespace().collect();
    println!(
        "| {engine} | scan of {} records (bulk load {load_secs:.0} s, {} MiB on disk) | {} s | RSS after open {} MiB, peak during scan +{} MiB |",
        f[0], disk >> 20, f[2], f[3], f[4]
    );
    // Recovery after SIGKILL of a writer.
    let mut w = child("write", engine, &dir);
    {
        use std::io::BufRead;
        let mut line = String::new();
        let stdout = w.stdout.as_mut().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready");
    }
    std::thread::sleep(Duration::from_secs(2));
    w.kill().expect("kill -9");
    let _ = w.wait();
    let ms = child_output(child("open", engine, &dir));
    println!("| {engine} | open after kill -9 of a writer ({scan_records} records) | {ms} ms | |");
    let _ = std::fs::remove_dir_all(&dir);
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += du(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child") {
        run_child(&args[1], &args[2], &PathBuf::from(&args[3]));
        return;
    }
    let root = std::env::var_os("ENGINES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("envault-engines");
    let scan_records = std::env::var("ENGINES_SCAN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let secs = std::env::var("ENGINES_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let engines: Vec<String> = if args.is_empty() {
        vec!["fjall".into(), "redb".into(), "sled".into()]
    } else {
        args
    };
    println!("| engine | workload | result | notes |\n|---|---|---|---|");
    for engine in &engines {
        bench(engine, &root, scan_records, secs);
    }
}
