//! `envault key rotate KEY [--retire-old]`: starts the rotation job in the background
//! (`wait: false`), then follows `GET /v1/keys/{key}/rotation` until it completes, showing
//! progress on stderr: a progress bar on a terminal, one plain line per change otherwise (logs,
//! pipes, tests).

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::output;
use super::{CliError, Context};
use crate::api::{RotateResponse, RotationStatus};

/// How often the job's status is asked for.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// After this long without progress, the key is checked: a job whose key was shredded never
/// completes, and the status route cannot tell.
const STALL_CHECK: Duration = Duration::from_secs(2);

pub(super) async fn rotate(ctx: &Context, key: &str, retire_old: bool) -> Result<(), CliError> {
    let client = &ctx.client;
    let started = client.rotate_key(key, retire_old, false).await?;
    let version = started.version;
    let mut progress = Progress::new(key, version);
    // The 202 answer may still describe the previous job (the new one registers its progress
    // when it starts running): only statuses of this job's version count.
    let mut status = Some(started.job).filter(|s| s.target_version == version);
    let mut changed_at = Instant::now();
    let final_status = loop {
        if let Some(status) = &status {
            if progress.show(status) {
                changed_at = Instant::now();
            }
            if status.state == "completed" {
                break status.clone();
            }
        }
        if changed_at.elapsed() >= STALL_CHECK {
            changed_at = Instant::now();
            let info = client.get_key(key).await?;
            if info.state == "destroyed" {
                progress.abandon();
                return Err(CliError::Failed(format!(
                    "key {key} was destroyed during the rotation to version {version}"
                )));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = tokio::signal::ctrl_c() => {
                progress.abandon();
                return Err(CliError::Failed(format!(
                    "stopped waiting; the rotation of key {key} to version {version} continues in the daemon"
                )));
            }
        }
        let current = client.rotation_status(key).await?;
        if current.target_version > version {
            // A later rotation has started: ours completed in between.
            progress.finish();
            return report(ctx, key, version, None);
        }
        status = Some(current).filter(|s| s.target_version == version);
    };
    progress.finish();
    report(ctx, key, version, Some(final_status))
}

/// The result on stdout: the new version and the retired ones.
fn report(
    ctx: &Context,
    key: &str,
    version: u32,
    status: Option<RotationStatus>,
) -> Result<(), CliError> {
    if ctx.json {
        return match status {
            Some(job) => output::json(&RotateResponse { version, job }),
            None => output::json(&serde_json::json!({ "version": version })),
        };
    }
    let rewrapped = status.as_ref().map_or_else(String::new, |s| {
        format!(
            ": {} DEK(s) and {} backup header(s) rewrapped",
            s.done, s.backups_rewrapped
        )
    });
    output::line(&format!(
        "rotated key {key} to version {version}{rewrapped}"
    ))?;
    let retired = match &status {
        Some(s) if s.retired_versions.is_empty() => "none".to_string(),
        Some(s) => s
            .retired_versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        None => "unknown (a later rotation has started)".to_string(),
    };
    output::line(&format!("retired versions: {retired}"))
}

/// Progress display on stderr.
enum Progress {
    /// A terminal: one bar redrawn in place.
    Bar(ProgressBar),
    /// Anything else: a line whenever the state or counts change.
    Lines {
        prefix: String,
        last: Option<(String, u64, u64)>,
    },
}

impl Progress {
    fn new(key: &str, version: u32) -> Self {
        let prefix = format!("rotating key {key} to version {version}");
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { prefix, last: None };
        }
        let style =
            ProgressStyle::with_template("{prefix} [{bar:24.cyan/blue}] {pos}/{len} DEKs ({msg})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let bar = ProgressBar::new(0)
            .with_style(style)
            .with_prefix(prefix)
            .with_message("starting");
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::Bar(bar)
    }

    /// Shows `status`; returns whether anything changed since the last call.
    fn show(&mut self, status: &RotationStatus) -> bool {
        match self {
            Progress::Bar(bar) => {
                let changed = bar.length() != Some(status.total)
                    || bar.position() != status.done
                    || bar.message() != status.state;
                bar.set_length(status.total);
                bar.set_position(status.done);
                bar.set_message(status.state.clone());
                changed
            }
            Progress::Lines { prefix, last } => {
                let now = (status.state.clone(), status.done, status.total);
                if last.as_ref() == Some(&now) {
                    return false;
                }
                output::note(&format!(
                    "{prefix}: {} ({}/{} DEKs rewrapped, job {})",
                    status.state, status.done, status.total, status.job
                ));
                *last = Some(now);
                true
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }

    fn abandon(&self) {
        if let Progress::Bar(bar) = self {
            bar.abandon();
        }
    }
}
