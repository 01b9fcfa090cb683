//! `envault key policy`, `key cancel-deletion` and the scheduled / dual-authorized forms of
//! `key delete`.

use super::output;
use super::{CliError, Context};
use crate::api::{DeletionApproval, KeyInfo, KeyPolicyInfo};

/// `--dual-auth on|off`.
pub(super) fn parse_switch(text: &str) -> Result<bool, String> {
    match text {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

/// `envault key policy KEY [--rotate-every 90d|off] [--dual-auth on|off]`; without flags,
/// shows.
pub(super) async fn policy(
    ctx: &Context,
    key: &str,
    rotate_every: Option<&str>,
    dual_auth: Option<bool>,
) -> Result<(), CliError> {
    let policy = if rotate_every.is_none() && dual_auth.is_none() {
        ctx.client.key_policy(key).await?
    } else {
        ctx.client
            .set_key_policy(key, rotate_every, dual_auth)
            .await?
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
    let dual = match policy.dual_auth_source.as_deref() {
        Some("instance") => "on ([lifecycle] dual_auth_delete)".to_string(),
        Some(_) => "on".into(),
        None => "off".into(),
    };
    let mut fields = vec![
        ("rotation policy", rotation),
        (
            "last rotation",
            policy.last_rotation.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "next rotation",
            policy.next_rotation.clone().unwrap_or_else(|| "-".into()),
        ),
        ("dual-auth delete", dual),
    ];
    if let (Some(by), Some(until)) = (
        &policy.deletion_authorized_by,
        &policy.deletion_authorized_until,
    ) {
        fields.push(("deletion authorized", format!("by {by} until {until}")));
    }
    fields
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

/// The answer of a first approval of a deletion under dual authorization.
pub(super) fn print_approval(approval: &DeletionApproval) -> Result<(), CliError> {
    let name = &approval.name;
    output::line(&format!(
        "deletion of key {name} authorized by {} until {}; a delete by a different operator token carries it out, `envault key cancel-deletion {name}` withdraws it",
        approval.authorized_by, approval.authorization_expires_at
    ))
}

/// The answer of a scheduled deletion: the key, unreadable until it is shredded.
pub(super) fn print_scheduled(key: &KeyInfo) -> Result<(), CliError> {
    let name = &key.name;
    output::line(&format!(
        "key {name} is {}: everything under it is unreadable now and is shredded at {}; `envault key cancel-deletion {name}` restores access before then",
        key.state,
        key.destroy_at.as_deref().unwrap_or("-")
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
        answer.name, answer.state
    ))
}
