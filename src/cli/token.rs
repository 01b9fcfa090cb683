//! `envault token …`: bearer tokens for applications and operators.

use clap::Subcommand;

use super::output::{self, Table};
use super::{CliError, Context};

/// Token verbs.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token. Human output prints only the secret on stdout (for `$(…)`), once.
    Create {
        /// `app` tokens read and write records of the databases named; `operator` tokens
        /// manage everything else.
        #[arg(long, value_parser = ["app", "operator"])]
        role: String,
        /// Database (name or id) an app token may use; repeat for several.
        #[arg(long = "db", value_name = "DB")]
        databases: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: String,
    },
}

pub(super) async fn run(ctx: &Context, command: TokenCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        TokenCommand::Create { role, databases } => {
            let answer = client.create_token(&role, &databases).await?;
            if ctx.json {
                return output::json(&answer);
            }
            let Some(secret) = answer.get("token").and_then(|t| t.as_str()) else {
                return output::json(&answer);
            };
            output::note(&format!(
                "created {role} token {}; the secret below is shown only once",
                output::cell(&answer, "id")
            ));
            output::line(secret)
        }
        TokenCommand::List => {
            let answer = client.list_tokens().await?;
            if ctx.json {
                return output::json(&answer);
            }
            let mut table = Table::new(&["ID", "ROLE", "DATABASES", "CREATED"]);
            for t in output::items(&answer, "tokens") {
                table.row(
                    ["id", "role", "databases", "created_at"]
                        .iter()
                        .map(|c| output::cell(t, c))
                        .collect(),
                );
            }
            table.print()
        }
        TokenCommand::Revoke { id } => {
            client.revoke_token(&id).await?;
            if ctx.json {
                return Ok(());
            }
            output::line(&format!("revoked token {id}"))
        }
    }
}
