//! `envault key policy`, `key cancel-deletion` and the scheduled form of `key delete`.

use serde_json::Value;

use super::output;
use super::{CliError, Context};
use crate::api::KeyInfo;
use crate::service::KeyPolicyInfo;

/// `envault key policy KEY [--rotate-every 90d|off]`; without the flag, shows.
pub(super) async fn policy(
    ctx: &Context,
    key: &str,
    rotate_every: Option<&str>,
) -> Result<(), CliError> {
    let policy = match rotate_every {
        None => ctx.client.key_policy(key).await?,
        Some(every) => ctx.client.set_key_policy(key, every).await?,
    };
    if ctx.json {
        return output::json(&policy);
    }
    output::fields(&policy_fields(&policy))
}

/// The policy lines of `key show` and `key policy`.
pub(super) fn policy_fields(policy: &KeyPolicyInfo) -> Vec<(&'static str, String)> {
    let rotation = match (policy.rotate_every_days, policy.rotation_source.as_deref()) {
        (Some(days), Some("instance")) => format!("every {days}d ([keys] rotate_every)"),
        (Some(days), _) => format!("every {days}d"),
        (None, _) => "off".into(),
    };
    vec![
        ("rotation policy", rotation),
        (
            "last rotation",
            policy.last_rotation.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "next rotation",
            policy.next_rotation.clone().unwrap_or_else(|| "-".into()),
        ),
    ]
}

/// Extra `key show` lines: policies and a scheduled destruction.
pub(super) fn show_extra(key: &KeyInfo) -> Result<(), CliError> {
    let mut fields = key.policy.as_ref().map(policy_fields).unwrap_or_default();
    if let Some(at) = &key.destroy_at {
        fields.push(("destroy at", at.clone()));
    }
    if fields.is_empty() {
        return Ok(());
    }
    output::fields(&fields)
}

/// The answer of a scheduled deletion (the key, pending destruction).
pub(super) fn print_deferred(answer: &Value) -> Result<(), CliError> {
    let name = output::cell(answer, "name");
    output::line(&format!(
        "key {name} is {}: everything under it is unreadable now and is shredded at {}; `envault key cancel-deletion {name}` restores access before then",
        output::cell(answer, "state"),
        output::cell(answer, "destroy_at")
    ))
}

/// `envault key cancel-deletion KEY`.
pub(super) async fn cancel(ctx: &Context, key: &str) -> Result<(), CliError> {
    let answer = ctx.client.cancel_key_deletion(key).await?;
    if ctx.json {
        return output::json(&answer);
    }
    output::line(&format!(
        "cancelled the deletion of key {}: state {}",
        output::cell(&answer, "name"),
        output::cell(&answer, "state")
    ))
}
