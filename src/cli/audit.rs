//! `envault audit [--action A] [--since T] [--follow]` and `envault audit verify`.

use std::collections::HashSet;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::output;
use super::{CliError, Context};

/// How often `--follow` asks for new events.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Audit arguments.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    /// `audit verify`.
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only events with this action, e.g. `kms.secrets.delete`.
    #[arg(long, value_name = "A")]
    action: Option<String>,
    /// Only events since this RFC 3339 time.
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Keep polling (every second) and print new events as they come; Ctrl-C stops.
    #[arg(long)]
    follow: bool,
}

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's integrity; prints the daemon's JSON report.
    Verify,
}

pub(super) async fn run(ctx: &Context, args: AuditArgs) -> Result<(), CliError> {
    if let Some(AuditCommand::Verify) = args.command {
        return verify(ctx).await;
    }
    let action = args.action.as_deref();
    if !args.follow {
        let answer = ctx.client.audit(action, args.since.as_deref()).await?;
        if ctx.json {
            return output::json(&answer);
        }
        return output::items(&answer, "events")
            .iter()
            .try_for_each(print_event);
    }
    // `since` may be inclusive: events already printed at the newest time seen are skipped.
    let mut since = args.since;
    let mut printed_at_since: HashSet<String> = HashSet::new();
    loop {
        let answer = ctx.client.audit(action, since.as_deref()).await?;
        for event in output::items(&answer, "events") {
            let time = event
                .get("time")
                .and_then(Value::as_str)
                .map(str::to_string);
            let fingerprint = event.to_string();
            if time.is_some() && time == since && printed_at_since.contains(&fingerprint) {
                continue;
            }
            if ctx.json {
                output::json_line(event)?;
            } else {
                print_event(event)?;
            }
            if time.is_some() && time != since {
                since = time;
                printed_at_since.clear();
            }
            printed_at_since.insert(fingerprint);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `TIME  ACTION  OUTCOME  TARGET  initiator  reason`, padded so that a stream stays aligned.
fn print_event(event: &Value) -> Result<(), CliError> {
    let reason = event
        .get("reason")
        .filter(|r| !r.is_null())
        .map(|r| format!("  reason={}", output::show(r)))
        .unwrap_or_default();
    output::line(&format!(
        "{:<24}  {:<22}  {:<7}  {}  {}{reason}",
        output::cell(event, "time"),
        output::cell(event, "action"),
        output::cell(event, "outcome"),
        output::cell(event, "target"),
        output::cell(event, "initiator"),
    ))
}

/// Prints the report; fails (exit 1) when it says the log does not verify.
async fn verify(ctx: &Context) -> Result<(), CliError> {
    let report = ctx.client.audit_verify().await?;
    output::json(&report)?;
    let failed = ["ok", "valid", "intact"]
        .iter()
        .any(|field| report.get(field).and_then(Value::as_bool) == Some(false));
    if failed {
        return Err(CliError::Failed("the audit log does not verify".into()));
    }
    Ok(())
}
