//! `envault-bench put|get|mixed|wrap|unwrap|transit-encrypt|transit-decrypt`: a closed-loop
//! load generator for envault, kept out of the shipped daemon and CLI. `--clients` tasks each
//! own one connection and keep exactly one request in flight on it for `--warmup` +
//! `--duration`; requests that start inside the measured window are counted and their latency
//! goes into an HDR histogram (microseconds, 3 significant digits). Every failed request,
//! warm-up included, is an error; the command exits non-zero if there was any.
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
//! generated. `--json` prints one JSON object (see [`report::Report`]) for scripts. The daemon
//! is found as the `envault` CLI finds it: `--socket`, else the configuration's socket;
//! `--token`, else `ENVAULT_TOKEN`, else the operator token file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use envault::client::{Client, ClientError};
use envault::config::{Config, ConfigError};
use tracing_subscriber::EnvFilter;

mod args;
mod report;
mod request;
mod run;
mod transit;

/// `envault-bench [--socket PATH] [--token T] [--config PATH] [--json] OP [options]`.
// No `Debug`: it holds the bearer token.
#[derive(Parser)]
#[command(
    name = "envault-bench",
    version,
    about = "Load generator for envault: N connections kept busy for a fixed time; ops/s and \
             latency percentiles"
)]
struct Cli {
    /// Unix socket of the daemon [default: from the configuration, ENVAULT_SOCKET, envault.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Bearer token [default: ENVAULT_TOKEN, else the file <data_dir>/operator.token].
    #[arg(long, env = "ENVAULT_TOKEN", hide_env_values = true, value_name = "T")]
    token: Option<String>,
    /// The daemon's configuration file (for `socket` and `data_dir`).
    #[arg(long, env = "ENVAULT_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bench: args::BenchArgs,
}

/// Errors of the load generator; `main` prints them as `error: <message>` and exits 1.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// The daemon refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The operator token file could not be read.
    #[error("cannot read token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Stdout could not be written.
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
    /// Bad arguments, a failed setup step, or failed requests during the run.
    #[error("{0}")]
    Failed(String),
}

/// What the run needs besides its arguments.
struct Context {
    client: Client,
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match start(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped reading (`| head`) is not a failure of ours.
        Err(BenchError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {:#}", anyhow::Error::from(error));
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> Result<(), BenchError> {
    let config = Config::load(cli.config.as_deref())?;
    let socket = cli.socket.unwrap_or_else(|| config.socket.clone());
    let token = resolve_token(cli.token, &config)?;
    let ctx = Context {
        client: Client::new(socket, token),
        json: cli.json,
    };
    run::run(&ctx, cli.bench).await
}

/// `--token` / `ENVAULT_TOKEN`, else the operator token file the daemon writes at first start
/// (as the `envault` CLI does). A missing file means no token: requests then answer
/// `unauthenticated`, which the run reports.
fn resolve_token(given: Option<String>, config: &Config) -> Result<Option<String>, BenchError> {
    if let Some(token) = given
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(token));
    }
    let path = config.operator_token_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BenchError::TokenFile { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_operation() {
        for argv in [
            &[
                "envault-bench",
                "--json",
                "--socket",
                "/s",
                "get",
                "--batch",
                "4",
            ][..],
            &[
                "envault-bench",
                "get",
                "--batch",
                "4",
                "--json",
                "--socket",
                "/s",
            ][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert!(cli.json);
            assert_eq!(cli.socket.as_deref(), Some(std::path::Path::new("/s")));
            assert_eq!(cli.bench.op, args::BenchOp::Get);
            assert_eq!(cli.bench.batch, 4);
        }
    }

    #[test]
    fn an_unknown_operation_is_refused() {
        assert!(Cli::try_parse_from(["envault-bench", "delete"]).is_err());
        assert!(Cli::try_parse_from(["envault-bench"]).is_err());
    }
}
