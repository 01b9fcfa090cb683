//! The run: setup (databases, keys, pre-written records), the workers' closed loops, and the
//! merge of their tallies into one report.

use std::sync::Arc;
use std::time::Instant;

use envault::client::{Client, ClientError};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use crate::args::{BenchArgs, BenchOp};
use crate::report::{loadavg, new_histogram, print_report, Latency, Report};
use crate::request::one_request;
use crate::transit::{TransitConnection, TransitTarget};
use crate::{BenchError, Context};

/// What every worker shares.
pub(crate) struct Plan {
    pub(crate) op: BenchOp,
    pub(crate) databases: Vec<String>,
    pub(crate) keys: usize,
    pub(crate) key: String,
    pub(crate) value_size: usize,
    pub(crate) batch: usize,
    /// Made before the run: the envelope unwrap opens, the ciphertext transit-decrypt opens.
    pub(crate) ciphertext: String,
}

impl Plan {
    /// A random database and record key.
    pub(crate) fn pick(&self, rng: &mut StdRng) -> (&str, String) {
        let database = &self.databases[rng.random_range(0..self.databases.len())];
        (database, record_key(rng.random_range(0..self.keys)))
    }
}

/// One connection.
pub(crate) enum Worker {
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
pub(crate) async fn run(ctx: &Context, args: BenchArgs) -> Result<(), BenchError> {
    let window = args.check()?;
    let (duration, warmup) = (window.duration, window.warmup);
    let transit = match args.op {
        BenchOp::TransitEncrypt | BenchOp::TransitDecrypt => {
            let token = args.transit_token.clone().ok_or_else(|| {
                BenchError::Failed("transit benchmarks need --transit-token or VAULT_TOKEN".into())
            })?;
            Some(
                TransitTarget::new(&args.transit_addr, token, args.transit_key.clone())
                    .map_err(BenchError::Failed)?,
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
            .map_err(|e| BenchError::Failed(format!("a bench task failed: {e}")))?;
        histogram
            .add(&tally.histogram)
            .map_err(|e| BenchError::Failed(format!("histogram: {e}")))?;
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
        return Err(BenchError::Failed(format!(
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
) -> Result<Plan, BenchError> {
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
            let target = transit.ok_or_else(|| BenchError::Failed("no transit target".into()))?;
            let mut connection = target.connect();
            let prepared = async {
                connection.ensure_key().await?;
                connection.encrypt(&plaintext).await
            };
            plan.ciphertext = prepared
                .await
                .map_err(|e| BenchError::Failed(format!("transit setup: {e}")))?;
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
) -> Result<(), BenchError> {
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
            .map_err(|e| BenchError::Failed(format!("prefill task failed: {e}")))??;
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

pub(crate) fn record_key(k: usize) -> String {
    format!("bench-{k:06}")
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill(&mut bytes[..]);
    bytes
}
