//! `envault bench put|get|mixed|wrap|unwrap|transit-encrypt|transit-decrypt`: a closed-loop
//! load generator. `--clients` tasks each own one connection and keep exactly one request in
//! flight on it for `--warmup` + `--duration`; requests that start inside the measured window
//! are counted and their latency goes into an HDR histogram (microseconds, 3 significant
//! digits). Every failed request, warm-up included, is an error; the command exits non-zero
//! if there was any.
//!
//! - `put`: random keys among `--keys`, values of `--value-size` random bytes (durable writes).
//! - `get`: the same keys, all written before the run, so every get hits.
//! - `--databases N` spreads them over N databases (`<database>-0` …), e.g. to load 1,000
//!   databases of 1,000 records for a memory figure.
//! - `mixed`: 70 % get, 30 % put on the pre-written keys.
//! - `--batch N` (put/get/mixed): each request is one `POST …/records:batch` of N operations
//!   on one database; ops/s then counts records, and latency is per batch request.
//! - `wrap` / `unwrap`: `--value-size` bytes under root key `--key` (created if missing);
//!   unwrap opens one envelope made before the run.
//! - `transit-encrypt` / `transit-decrypt`: the same against an OpenBao/Vault transit engine
//!   (`--transit-addr`, `--transit-token` or `VAULT_TOKEN`), for side-by-side figures.
//!
//! The missing database is created with a provider-managed key; the missing root key is
//! generated. `--json` prints one JSON object (see [`Report`]) for scripts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::Serialize;

use super::bench_transit::{TransitConnection, TransitTarget};
use super::{CliError, Context};
use crate::api::RecordBatchOp;
use crate::client::{Client, ClientError};

/// What `envault bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchOp {
    /// Durable record writes.
    Put,
    /// Record reads (decryption included).
    Get,
    /// 70 % get, 30 % put.
    Mixed,
    /// `POST /v1/keys/{key}/wrap` of `--value-size` bytes.
    Wrap,
    /// `POST /v1/keys/{key}/unwrap`.
    Unwrap,
    /// OpenBao/Vault `transit/encrypt` of `--value-size` bytes (the peer of wrap).
    TransitEncrypt,
    /// OpenBao/Vault `transit/decrypt` (the peer of unwrap).
    TransitDecrypt,
}

/// `envault bench OP [options]`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    op: BenchOp,
    /// Concurrent connections, each with one request in flight at a time.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Measured time ("10s", "2m", or seconds).
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Unmeasured time before it (connections opened, caches warm).
    #[arg(long, default_value = "1s")]
    warmup: String,
    /// Bytes per record value (put/get/mixed) or plaintext (wrap/unwrap/transit).
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Database of put/get/mixed (created with a provider-managed key if missing).
    #[arg(long, default_value = "bench")]
    database: String,
    /// Distinct record keys per database (`bench-000000` …), written before get and mixed.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Spread put/get/mixed over this many databases, `<database>-0` … (1: just `<database>`).
    #[arg(long, default_value_t = 1)]
    databases: usize,
    /// put/get/mixed: operations per request through the batch route (1: single-record routes).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Root key of wrap/unwrap (generated if missing).
    #[arg(long, default_value = "bench")]
    key: String,
    /// Transit engine of the transit-* operations.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8200")]
    transit_addr: String,
    /// Token for the transit engine.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
    transit_token: Option<String>,
    /// Transit key name (created if missing).
    #[arg(long, default_value = "bench")]
    transit_key: String,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: f64,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    op: BenchOp,
    clients: usize,
    value_size: usize,
    /// Operations per request (1: the single-record routes).
    batch: usize,
    duration_s: f64,
    warmup_s: f64,
    /// Operations of the requests started in the measured window that succeeded (a batch
    /// request counts its operations).
    ops: u64,
    ops_per_s: f64,
    /// Failed requests, warm-up included.
    errors: u64,
    latency: Latency,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started and ended.
    loadavg_start: String,
    loadavg_end: String,
    /// The first few error messages.
    first_errors: Vec<String>,
}

/// What every worker shares.
struct Plan {
    op: BenchOp,
    databases: Vec<String>,
    keys: usize,
    key: String,
    value_size: usize,
    batch: usize,
    /// Made before the run: the envelope unwrap opens, the ciphertext transit-decrypt opens.
    ciphertext: String,
}

impl Plan {
    /// A random database and record key.
    fn pick(&self, rng: &mut StdRng) -> (&str, String) {
        let database = &self.databases[rng.random_range(0..self.databases.len())];
        (database, record_key(rng.random_range(0..self.keys)))
    }
}

/// One connection.
enum Worker {
    Envault(Client),
    Transit(TransitConnection),
}

/// What one worker saw.
struct Tally {
    histogram: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_errors: Vec<String>,
    last_end: Instant,
}

/// Runs the benchmark; fails (after printing the report) if any request failed.
pub async fn run(ctx: &Context, args: BenchArgs) -> Result<(), CliError> {
    let duration = parse_seconds("--duration", &args.duration)?;
    let warmup = parse_seconds("--warmup", &args.warmup)?;
    if args.clients == 0
        || args.keys == 0
        || args.databases == 0
        || args.batch == 0
        || duration.is_zero()
    {
        return Err(CliError::Failed(
            "--clients, --keys, --databases, --batch and --duration must be positive".into(),
        ));
    }
    if args.batch > 1 && !matches!(args.op, BenchOp::Put | BenchOp::Get | BenchOp::Mixed) {
        return Err(CliError::Failed(
            "--batch applies to put, get and mixed only".into(),
        ));
    }
    let transit = match args.op {
        BenchOp::TransitEncrypt | BenchOp::TransitDecrypt => {
            let token = args.transit_token.clone().ok_or_else(|| {
                CliError::Failed("transit benchmarks need --transit-token or VAULT_TOKEN".into())
            })?;
            Some(
                TransitTarget::new(&args.transit_addr, token, args.transit_key.clone())
                    .map_err(CliError::Failed)?,
            )
        }
        _ => None,
    };
    let plan = Arc::new(prepare(ctx, &args, transit.as_ref()).await?);

    let loadavg_start = loadavg();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let worker = match &transit {
            Some(target) => Worker::Transit(target.connect()),
            None => Worker::Envault(ctx.client.duplicate()),
        };
        let plan = Arc::clone(&plan);
        tasks.push(tokio::spawn(drive(worker, plan, measure_from, end)));
    }
    let mut histogram = new_histogram();
    let (mut ops, mut errors, mut first_errors) = (0u64, 0u64, Vec::new());
    let mut last_end = measure_from;
    for task in tasks {
        let tally = task
            .await
            .map_err(|e| CliError::Failed(format!("a bench task failed: {e}")))?;
        histogram
            .add(&tally.histogram)
            .map_err(|e| CliError::Failed(format!("histogram: {e}")))?;
        ops += tally.ops;
        errors += tally.errors;
        first_errors.extend(tally.first_errors);
        last_end = last_end.max(tally.last_end);
    }
    first_errors.truncate(5);
    let measured = last_end
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let report = Report {
        op: args.op,
        clients: args.clients,
        value_size: args.value_size,
        batch: args.batch,
        duration_s: measured,
        warmup_s: warmup.as_secs_f64(),
        ops,
        ops_per_s: if measured > 0.0 {
            ops as f64 / measured
        } else {
            0.0
        },
        errors,
        latency: Latency {
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        },
        loadavg_start,
        loadavg_end: loadavg(),
        first_errors,
    };
    print_report(ctx, &report)?;
    if report.errors > 0 {
        return Err(CliError::Failed(format!(
            "{} requests failed",
            report.errors
        )));
    }
    Ok(())
}

/// Creates what the operation needs and writes the records get/mixed read.
async fn prepare(
    ctx: &Context,
    args: &BenchArgs,
    transit: Option<&TransitTarget>,
) -> Result<Plan, CliError> {
    let client = &ctx.client;
    let mut plan = Plan {
        op: args.op,
        databases: if args.databases == 1 {
            vec![args.database.clone()]
        } else {
            (0..args.databases)
                .map(|i| format!("{}-{i}", args.database))
                .collect()
        },
        keys: args.keys,
        key: args.key.clone(),
        value_size: args.value_size,
        batch: args.batch,
        ciphertext: String::new(),
    };
    let plaintext = vec![0xa5u8; args.value_size];
    match args.op {
        BenchOp::Put | BenchOp::Get | BenchOp::Mixed => {
            for database in &plan.databases {
                match client.get_database(database).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some("not_found") => {
                        client.create_database(database, None, None).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if args.op != BenchOp::Put {
                prefill(
                    client,
                    &plan.databases,
                    args.keys,
                    args.value_size,
                    args.clients,
                )
                .await?;
            }
        }
        BenchOp::Wrap | BenchOp::Unwrap => {
            match client.get_key(&args.key).await {
                Ok(_) => {}
                Err(e) if e.code() == Some("not_found") => {
                    client.create_key(&args.key, None, None).await?;
                }
                Err(e) => return Err(e.into()),
            }
            plan.ciphertext = client
                .wrap(&args.key, Some(&plaintext), &[])
                .await?
                .ciphertext;
        }
        BenchOp::TransitEncrypt | BenchOp::TransitDecrypt => {
            let target = transit.ok_or_else(|| CliError::Failed("no transit target".into()))?;
            let mut connection = target.connect();
            let prepared = async {
                connection.ensure_key().await?;
                connection.encrypt(&plaintext).await
            };
            plan.ciphertext = prepared
                .await
                .map_err(|e| CliError::Failed(format!("transit setup: {e}")))?;
        }
    }
    Ok(plan)
}

/// Writes keys `0..keys` of every database with `clients` connections.
async fn prefill(
    client: &Client,
    databases: &[String],
    keys: usize,
    value_size: usize,
    clients: usize,
) -> Result<(), CliError> {
    let total = databases.len() * keys;
    let databases = Arc::new(databases.to_vec());
    let mut tasks = Vec::new();
    for first in 0..clients.min(total) {
        let client = client.duplicate();
        let databases = Arc::clone(&databases);
        tasks.push(tokio::spawn(async move {
            let value = random_bytes(value_size);
            for n in (first..total).step_by(clients) {
                let (database, k) = (&databases[n / keys], n % keys);
                client.put_record(database, &record_key(k), &value).await?;
            }
            Ok::<_, ClientError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| CliError::Failed(format!("prefill task failed: {e}")))??;
    }
    Ok(())
}

/// One connection's closed loop.
async fn drive(mut worker: Worker, plan: Arc<Plan>, measure_from: Instant, end: Instant) -> Tally {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let value = random_bytes(plan.value_size);
    let mut tally = Tally {
        histogram: new_histogram(),
        ops: 0,
        errors: 0,
        first_errors: Vec::new(),
        last_end: measure_from,
    };
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let result = one_request(&mut worker, &plan, &mut rng, &value).await;
        let finished = Instant::now();
        match result {
            Ok(()) if started >= measure_from => {
                let micros = finished.duration_since(started).as_micros();
                tally
                    .histogram
                    .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
                tally.ops += plan.batch as u64;
                tally.last_end = finished;
            }
            Ok(()) => {}
            Err(message) => {
                tally.errors += 1;
                if tally.first_errors.len() < 5 {
                    tally.first_errors.push(message);
                }
            }
        }
    }
    tally
}

async fn one_request(
    worker: &mut Worker,
    plan: &Plan,
    rng: &mut StdRng,
    value: &[u8],
) -> Result<(), String> {
    let fail = |what: &str, e: ClientError| format!("{what}: {e}");
    match worker {
        Worker::Envault(client) if plan.batch > 1 => batch_request(client, plan, rng, value).await,
        Worker::Envault(client) => match plan.op {
            BenchOp::Put => {
                let (database, rec) = plan.pick(rng);
                client
                    .put_record(database, &rec, value)
                    .await
                    .map_err(|e| fail("put", e))
            }
            BenchOp::Get => {
                let (database, rec) = plan.pick(rng);
                let got = client
                    .get_record(database, &rec)
                    .await
                    .map_err(|e| fail("get", e))?;
                check_len(got.len(), plan.value_size)
            }
            BenchOp::Mixed => {
                let (database, rec) = plan.pick(rng);
                if rng.random_range(0..10u32) < 7 {
                    let got = client
                        .get_record(database, &rec)
                        .await
                        .map_err(|e| fail("get", e))?;
                    check_len(got.len(), plan.value_size)
                } else {
                    client
                        .put_record(database, &rec, value)
                        .await
                        .map_err(|e| fail("put", e))
                }
            }
            BenchOp::Wrap => client
                .wrap(&plan.key, Some(value), &[])
                .await
                .map(drop)
                .map_err(|e| fail("wrap", e)),
            BenchOp::Unwrap => {
                let plain = client
                    .unwrap(&plan.key, &plan.ciphertext, &[])
                    .await
                    .map_err(|e| fail("unwrap", e))?;
                check_len(plain.len(), plan.value_size)
            }
            BenchOp::TransitEncrypt | BenchOp::TransitDecrypt => {
                Err("transit operation on an envault connection".into())
            }
        },
        Worker::Transit(connection) => match plan.op {
            BenchOp::TransitEncrypt => connection.encrypt(value).await.map(drop),
            BenchOp::TransitDecrypt => {
                let plain = connection.decrypt(&plan.ciphertext).await?;
                check_len(plain.len(), plan.value_size)
            }
            _ => Err("envault operation on a transit connection".into()),
        },
    }
}

/// One batch of `plan.batch` operations on one database; every operation must succeed.
async fn batch_request(
    client: &Client,
    plan: &Plan,
    rng: &mut StdRng,
    value: &[u8],
) -> Result<(), String> {
    let database = &plan.databases[rng.random_range(0..plan.databases.len())];
    let ops: Vec<RecordBatchOp> = (0..plan.batch)
        .map(|_| {
            let key = record_key(rng.random_range(0..plan.keys));
            let read = match plan.op {
                BenchOp::Get => true,
                BenchOp::Mixed => rng.random_range(0..10u32) < 7,
                _ => false,
            };
            if read {
                RecordBatchOp::Get { key }
            } else {
                RecordBatchOp::put(key, value)
            }
        })
        .collect();
    let results = client
        .record_batch(database, ops)
        .await
        .map_err(|e| format!("batch: {e}"))?;
    if results.len() != plan.batch {
        return Err(format!(
            "batch answered {} results for {} operations",
            results.len(),
            plan.batch
        ));
    }
    for result in results {
        match (result.status, &result.error) {
            (204, None) => {}
            (200, None) => {
                let got = result.value_bytes().ok_or("get without a value")?;
                check_len(got.len(), plan.value_size)?;
            }
            (status, error) => {
                return Err(format!("batch operation failed: {status} {error:?}"));
            }
        }
    }
    Ok(())
}

fn check_len(got: usize, want: usize) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("answer has {got} bytes, expected {want}"))
    }
}

fn print_report(ctx: &Context, report: &Report) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let text = if ctx.json {
        serde_json::to_string(report).map_err(|e| CliError::Failed(e.to_string()))? + "\n"
    } else {
        let l = &report.latency;
        let mut text = format!(
            "{:?} x{} clients, {} B, batch {}, {:.1} s (+{:.1} s warm-up): {} ops, {:.0} ops/s, \
             {} errors\n\
             latency us: p50 {} p90 {} p99 {} p99.9 {} max {} mean {:.0}\n\
             load average: start {}, end {}\n",
            report.op,
            report.clients,
            report.value_size,
            report.batch,
            report.duration_s,
            report.warmup_s,
            report.ops,
            report.ops_per_s,
            report.errors,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            l.mean_us,
            report.loadavg_start,
            report.loadavg_end
        );
        for error in &report.first_errors {
            text += &format!("error: {error}\n");
        }
        text
    };
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}

/// Microseconds from 1 µs to one hour, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid bounds")
}

fn parse_seconds(flag: &str, text: &str) -> Result<Duration, CliError> {
    crate::config::parse_duration(text)
        .ok_or_else(|| CliError::Failed(format!("{flag}: {text:?} is not a duration like 10s")))
}

fn record_key(k: usize) -> String {
    format!("bench-{k:06}")
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
