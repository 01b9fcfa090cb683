//! The operations and options of `envault-bench`, checked before anything is sent.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::BenchError;

/// What `envault-bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum BenchOp {
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

/// `envault-bench OP [options]`.
// No `Debug`: it holds the transit token.
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub(crate) op: BenchOp,
    /// Concurrent connections, each with one request in flight at a time.
    #[arg(long, default_value_t = 16)]
    pub(crate) clients: usize,
    /// Measured time ("10s", "2m", or seconds).
    #[arg(long, default_value = "10s")]
    pub(crate) duration: String,
    /// Unmeasured time before it (connections opened, caches warm).
    #[arg(long, default_value = "1s")]
    pub(crate) warmup: String,
    /// Bytes per record value (put/get/mixed) or plaintext (wrap/unwrap/transit).
    #[arg(long, default_value_t = 1024)]
    pub(crate) value_size: usize,
    /// Database of put/get/mixed (created with a provider-managed key if missing).
    #[arg(long, default_value = "bench")]
    pub(crate) database: String,
    /// Distinct record keys per database (`bench-000000` …), written before get and mixed.
    #[arg(long, default_value_t = 1000)]
    pub(crate) keys: usize,
    /// Spread put/get/mixed over this many databases, `<database>-0` … (1: just `<database>`).
    #[arg(long, default_value_t = 1)]
    pub(crate) databases: usize,
    /// put/get/mixed: operations per request through the batch route (1: single-record routes).
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// Root key of wrap/unwrap (generated if missing).
    #[arg(long, default_value = "bench")]
    pub(crate) key: String,
    /// Transit engine of the transit-* operations.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8200")]
    pub(crate) transit_addr: String,
    /// Token for the transit engine.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
    pub(crate) transit_token: Option<String>,
    /// Transit key name (created if missing).
    #[arg(long, default_value = "bench")]
    pub(crate) transit_key: String,
}

/// The measured and warm-up times, once the options are known to make sense.
pub(crate) struct Window {
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
}

impl BenchArgs {
    /// Checks the options together; nothing is sent to the daemon before this passes.
    pub(crate) fn check(&self) -> Result<Window, BenchError> {
        let duration = parse_seconds("--duration", &self.duration)?;
        let warmup = parse_seconds("--warmup", &self.warmup)?;
        if self.clients == 0
            || self.keys == 0
            || self.databases == 0
            || self.batch == 0
            || duration.is_zero()
        {
            return Err(BenchError::Failed(
                "--clients, --keys, --databases, --batch and --duration must be positive".into(),
            ));
        }
        if self.batch > 1 && !matches!(self.op, BenchOp::Put | BenchOp::Get | BenchOp::Mixed) {
            return Err(BenchError::Failed(
                "--batch applies to put, get and mixed only".into(),
            ));
        }
        Ok(Window { duration, warmup })
    }
}

fn parse_seconds(flag: &str, text: &str) -> Result<Duration, BenchError> {
    envault::config::parse_duration(text)
        .ok_or_else(|| BenchError::Failed(format!("{flag}: {text:?} is not a duration like 10s")))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Only {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> BenchArgs {
        let mut full = vec!["envault-bench"];
        full.extend_from_slice(argv);
        Only::try_parse_from(full).unwrap().args
    }

    #[test]
    fn defaults_give_ten_measured_seconds_after_one_of_warm_up() {
        let args = parse(&["put"]);
        assert_eq!((args.clients, args.keys, args.batch), (16, 1000, 1));
        let window = args.check().unwrap();
        assert_eq!(window.duration, Duration::from_secs(10));
        assert_eq!(window.warmup, Duration::from_secs(1));
        let window = parse(&["get", "--duration", "2m", "--warmup", "0"])
            .check()
            .unwrap();
        assert_eq!(window.duration, Duration::from_secs(120));
        assert!(window.warmup.is_zero());
    }

    #[test]
    fn senseless_options_are_refused_before_anything_is_sent() {
        for argv in [
            &["put", "--clients", "0"][..],
            &["get", "--keys", "0"][..],
            &["mixed", "--databases", "0"][..],
            &["put", "--batch", "0"][..],
            &["put", "--duration", "0s"][..],
            &["put", "--duration", "soon"][..],
            &["get", "--warmup=-1s"][..],
            &["wrap", "--batch", "2"][..],
            &["transit-decrypt", "--batch", "8"][..],
        ] {
            let error = parse(argv).check().err();
            assert!(
                matches!(error, Some(BenchError::Failed(_))),
                "{argv:?} was accepted"
            );
        }
        assert!(parse(&["mixed", "--batch", "32"]).check().is_ok());
    }
}
