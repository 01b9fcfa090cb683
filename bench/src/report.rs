//! The report of a run: throughput, latency percentiles from the HDR histogram, load average;
//! printed as text or, with `--json`, as one JSON object.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::BenchOp;
use crate::{BenchError, Context};

/// Latency percentiles, microseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50_us: u64,
    pub(crate) p90_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    pub(crate) mean_us: f64,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) op: BenchOp,
    pub(crate) clients: usize,
    pub(crate) value_size: usize,
    /// Operations per request (1: the single-record routes).
    pub(crate) batch: usize,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    /// Operations of the requests started in the measured window that succeeded (a batch
    /// request counts its operations).
    pub(crate) ops: u64,
    pub(crate) ops_per_s: f64,
    /// Failed requests, warm-up included.
    pub(crate) errors: u64,
    pub(crate) latency: Latency,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started and ended.
    pub(crate) loadavg_start: String,
    pub(crate) loadavg_end: String,
    /// The first few error messages.
    pub(crate) first_errors: Vec<String>,
}

pub(crate) fn print_report(ctx: &Context, report: &Report) -> Result<(), BenchError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let text = if ctx.json {
        serde_json::to_string(report).map_err(|e| BenchError::Failed(e.to_string()))? + "\n"
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
    out.write_all(text.as_bytes()).map_err(BenchError::Output)
}

/// Microseconds from 1 µs to one hour, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid bounds")
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
