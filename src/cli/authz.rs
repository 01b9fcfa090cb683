//! `envault authz …`: authorizations letting a source service use keys.

use clap::Subcommand;

use super::output::{self, Table};
use super::{CliError, Context};
use crate::api::{AuthorizationInfo, AuthorizationList};

/// Authorization verbs.
#[derive(Debug, Subcommand)]
pub enum AuthzCommand {
    /// Let a source service use a key (or every key, with --target '*').
    Grant {
        /// The service using the key.
        #[arg(long, value_parser = ["databases", "backups"])]
        source: String,
        /// Key name, id or CRN, or `*` for all keys.
        #[arg(long, value_name = "KEY|*")]
        target: String,
        /// Role to grant; repeat for several [default: Reader].
        #[arg(long = "role", value_name = "ROLE", value_parser = ["Reader", "AuthorizationDelegator"])]
        roles: Vec<String>,
        /// Succeed, changing nothing, when an identical authorization already exists.
        #[arg(long)]
        if_missing: bool,
    },
    /// List authorizations, delegated ones included.
    List,
    /// Remove an authorization.
    Revoke {
        /// Authorization id.
        id: String,
    },
}

pub(super) async fn run(ctx: &Context, command: AuthzCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        AuthzCommand::Grant {
            source,
            target,
            mut roles,
            if_missing,
        } => {
            if roles.is_empty() {
                roles.push("Reader".into());
            }
            let (info, verb) = match client.grant(&source, &target, &roles).await {
                Ok(info) => (info, "granted"),
                Err(err) if if_missing && err.code() == Some("duplicate_policy") => (
                    existing(ctx, &source, &target, &roles).await?,
                    "already granted",
                ),
                Err(err) => return Err(err.into()),
            };
            if ctx.json {
                return output::json(&info);
            }
            output::line(&format!(
                "{verb} {} on {} to {} ({})",
                info.roles.join(","),
                info.target,
                info.source,
                info.id
            ))
        }
        AuthzCommand::List => {
            let list = client.list_authorizations().await?;
            if ctx.json {
                return output::json(&AuthorizationList {
                    authorizations: list,
                });
            }
            let mut table =
                Table::new(&["ID", "SOURCE", "TARGET", "ROLES", "CREATED_BY", "CREATED"]);
            for a in &list {
                table.row(vec![
                    a.id.clone(),
                    a.source.clone(),
                    a.target.clone(),
                    a.roles.join(","),
                    a.created_by.clone().unwrap_or_else(|| "-".into()),
                    a.created_at.clone(),
                ]);
            }
            table.print()
        }
        AuthzCommand::Revoke { id } => {
            client.revoke_authorization(&id).await?;
            if ctx.json {
                return Ok(());
            }
            output::line(&format!("revoked authorization {id}"))
        }
    }
}

/// The non-delegated authorization identical to the one asked for (`grant --if-missing`).
async fn existing(
    ctx: &Context,
    source: &str,
    target: &str,
    roles: &[String],
) -> Result<AuthorizationInfo, CliError> {
    let mut wanted: Vec<String> = roles.to_vec();
    wanted.sort();
    wanted.dedup();
    let key_crn = if target == "*" {
        "*".to_string()
    } else {
        ctx.client.get_key(target).await?.crn
    };
    ctx.client
        .list_authorizations()
        .await?
        .into_iter()
        .find(|a| {
            a.created_by.is_none() && a.source == source && a.target == key_crn && a.roles == wanted
        })
        .ok_or_else(|| {
            CliError::Failed(format!(
                "the daemon reported an identical authorization for {source} on {target}, but none is listed"
            ))
        })
}
