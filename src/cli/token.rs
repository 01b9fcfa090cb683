//! `envault token …`: bearer tokens for applications and operators.

use clap::Subcommand;

use super::output::{self, Table};
use super::{CliError, Context};
use crate::api::{CreateTokenRequest, TokenList, TokenRole};

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
        /// A unique name, shown by `token list` and accepted by `token revoke`.
        #[arg(long)]
        name: Option<String>,
        /// Time to live ("30d", "12h"; 1s to 3650d). After it, the token gets 401
        /// token_expired. Without it the token never expires.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke {
        /// Token id or name.
        id: String,
    },
}

pub(super) async fn run(ctx: &Context, command: TokenCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        TokenCommand::Create {
            role,
            databases,
            name,
            ttl,
        } => {
            let role_name = role;
            let role = match role_name.as_str() {
                "operator" => TokenRole::Operator,
                _ => TokenRole::App,
            };
            let request = CreateTokenRequest {
                role,
                databases,
                name,
                ttl,
            };
            let answer = client.create_token_with(&request).await?;
            if ctx.json {
                return output::json(&answer);
            }
            let expiry = match &answer.expires_at {
                Some(at) => format!(", expiring {at}"),
                None => String::new(),
            };
            output::note(&format!(
                "created {role_name} token {}{expiry}; the secret below is shown only once",
                answer.id
            ));
            output::line(answer.token.expose_secret())
        }
        TokenCommand::List => {
            let answer = TokenList {
                tokens: client.list_tokens().await?,
            };
            if ctx.json {
                return output::json(&answer);
            }
            let answer = output::value(&answer)?;
            let mut table = Table::new(&[
                "ID",
                "NAME",
                "ROLE",
                "DATABASES",
                "CREATED",
                "LAST USED",
                "EXPIRES",
            ]);
            for t in output::items(&answer, "tokens") {
                let mut row: Vec<String> = [
                    "id",
                    "name",
                    "role",
                    "databases",
                    "created_at",
                    "last_used_at",
                    "expires_at",
                ]
                .iter()
                .map(|c| output::cell(t, c))
                .collect();
                if t.get("expired").and_then(|e| e.as_bool()) == Some(true) {
                    if let Some(expiry) = row.last_mut() {
                        expiry.push_str(" (expired)");
                    }
                }
                table.row(row);
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
