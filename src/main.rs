//! The `envault` binary: parse the command line, set up logging, dispatch to [`envault::cli`].

use std::process::ExitCode;

use clap::Parser as _;
use envault::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors exit 2 (clap), as in the exit-status table of docs/operations.md.
    let cli = Cli::parse();
    // RUST_LOG wins; otherwise the daemon logs at info and the client only warns.
    let default = if cli.is_serve() { "info" } else { "warn" };
    envault::telemetry::logging::init(cli.log_format, default);
    match envault::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
