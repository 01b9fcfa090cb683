//! `envault audit [--action A] [--since T] [--follow]` and `envault audit verify`.

use std::collections::HashSet;
use std::time::Duration;

use clap::{Args, Subcommand};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::output;
use super::{CliError, Context};
use crate::api::{AuditEvent, AuditEvents};

/// How often `--follow` asks for new events.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Audit arguments.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    /// `audit verify`.
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only events with this action, e.g. `kms.secrets.delete`; a trailing `*` matches a prefix
    /// (`kms.secrets.*`).
    #[arg(long, value_name = "A")]
    action: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Keep polling (every second) and print new events as they come; Ctrl-C stops.
    #[arg(long)]
    follow: bool,
}

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the activity log's keyed chain and its head file (so that removed lines are
    /// found); exits 7 naming the first broken line if it fails.
    Verify(VerifyArgs),
}

/// `audit verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Check the log in this data dir directly, without the daemon (which may be stopped).
    /// Needs read access to the data dir and the master key.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
}

impl AuditArgs {
    /// The data dir of `audit verify --data-dir DIR`, which needs no daemon.
    pub(super) fn offline_data_dir(&self) -> Option<&std::path::Path> {
        match &self.command {
            Some(AuditCommand::Verify(VerifyArgs { data_dir })) => data_dir.as_deref(),
            None => None,
        }
    }
}

/// `audit verify --data-dir DIR`: the same report, read from the files.
pub(super) fn verify_offline(
    mut config: crate::config::Config,
    data_dir: &std::path::Path,
    json: bool,
) -> Result<(), CliError> {
    config.data_dir = data_dir.to_path_buf();
    let report = crate::service::verify_data_dir(&config)
        .map_err(|e| CliError::Failed(format!("cannot check the activity log: {e}")))?;
    print_report(&report, json)
}

pub(super) async fn run(ctx: &Context, args: AuditArgs) -> Result<(), CliError> {
    if let Some(AuditCommand::Verify(_)) = args.command {
        return verify(ctx).await;
    }
    let action = args.action.as_deref();
    if !args.follow {
        let events = ctx.client.audit(action, args.since.as_deref()).await?;
        if ctx.json {
            return output::json(&AuditEvents { events });
        }
        return events.iter().try_for_each(print_event);
    }
    // Each poll asks again from one second before the newest event seen, and skips the events
    // the previous poll already returned (by hash, unique per event): `since` only moves
    // forward, so a poll returns nothing older than what the previous one returned. Asking from
    // a whole second, not the exact time, keeps events of the same second whatever precision
    // the daemon compares times with.
    let mut since = args.since;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let events = ctx.client.audit(action, since.as_deref()).await?;
        let mut returned = HashSet::with_capacity(events.len());
        for event in &events {
            if !seen.contains(&event.hash) {
                if ctx.json {
                    output::json_line(event)?;
                } else {
                    print_event(event)?;
                }
            }
            returned.insert(event.hash.clone());
        }
        seen = returned;
        let newest = events.iter().filter_map(|e| parse_time(&e.time)).max();
        if let Some(next) = newest.and_then(next_since) {
            let current = since.as_deref().and_then(parse_time);
            if current.is_none_or(|c| parse_time(&next).is_some_and(|n| n > c)) {
                since = Some(next);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// The whole UTC second before `newest`, as RFC 3339 without fraction.
fn next_since(newest: OffsetDateTime) -> Option<String> {
    let floor = newest
        .to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()?;
    (floor - time::Duration::seconds(1)).format(&Rfc3339).ok()
}

/// `TIME  ACTION  OUTCOME  TARGET  reason=…`, padded so that a stream stays aligned.
fn print_event(event: &AuditEvent) -> Result<(), CliError> {
    let reason = event
        .reason
        .as_deref()
        .map(|r| format!("  reason={r}"))
        .unwrap_or_default();
    output::line(&format!(
        "{:<30}  {:<22}  {:<7}  {}{reason}",
        event.time, event.action, event.outcome, event.target,
    ))
}

/// Prints the report; fails (exit 1) when the chain does not verify, naming the broken line.
async fn verify(ctx: &Context) -> Result<(), CliError> {
    let report = ctx.client.audit_verify().await?;
    print_report(&report, ctx.json)
}

fn print_report(report: &crate::api::AuditVerifyReport, json: bool) -> Result<(), CliError> {
    if json {
        output::json(&report)?;
    } else {
        output::fields(&[
            ("ok", report.ok.to_string()),
            ("events", report.events.to_string()),
            (
                "first broken line",
                report
                    .first_broken_line
                    .map_or_else(|| "-".into(), |l| l.to_string()),
            ),
            (
                "problem",
                report.problem.clone().unwrap_or_else(|| "-".into()),
            ),
            ("head", report.head.clone()),
        ])?;
    }
    if report.ok {
        return Ok(());
    }
    let line = report
        .first_broken_line
        .map_or_else(|| "an unknown line".into(), |l| format!("line {l}"));
    Err(CliError::Integrity(format!(
        "the activity log does not verify: {line} is broken ({})",
        report.problem.as_deref().unwrap_or("no detail")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_asks_from_the_whole_second_before() {
        let newest = parse_time("2024-03-01T10:00:05.52Z").unwrap();
        assert_eq!(next_since(newest).as_deref(), Some("2024-03-01T10:00:04Z"));
        let offset = parse_time("2024-03-01T12:00:00+02:00").unwrap();
        assert_eq!(next_since(offset).as_deref(), Some("2024-03-01T09:59:59Z"));
        assert!(parse_time("yesterday").is_none());
    }
}
