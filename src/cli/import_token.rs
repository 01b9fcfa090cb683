//! `envault key import-token …` and the secure path of `envault key create --import --secure`.

use clap::Subcommand;

use super::output;
use super::{CliError, Context};
use crate::api::ImportTokenInfo;

/// Import-token verbs.
#[derive(Debug, Subcommand)]
pub enum ImportTokenCommand {
    /// Create an import token: an RSA-4096 public key and a nonce for a secure import, valid on
    /// this daemon only, for a limited time and number of uses.
    Create {
        /// Validity ("10m"); default `[keys] import_token_ttl`.
        #[arg(long, value_name = "PERIOD")]
        ttl: Option<String>,
        /// Imports it allows; default `[keys] import_token_uses`.
        #[arg(long, value_name = "N")]
        max_uses: Option<u32>,
    },
    /// Show a live import token and its remaining uses.
    Show {
        /// Token id.
        id: String,
    },
}

pub(super) async fn run(ctx: &Context, command: ImportTokenCommand) -> Result<(), CliError> {
    let token = match command {
        ImportTokenCommand::Create { ttl, max_uses } => {
            ctx.client
                .create_import_token(ttl.as_deref(), max_uses)
                .await?
        }
        ImportTokenCommand::Show { id } => ctx.client.import_token(&id).await?,
    };
    if ctx.json {
        return output::json(&token);
    }
    show(&token)
}

fn show(token: &ImportTokenInfo) -> Result<(), CliError> {
    output::fields(&[
        ("id", token.id.clone()),
        ("crn", token.crn.clone()),
        ("algorithm", token.encryption_algorithm.clone()),
        ("nonce", token.nonce.clone()),
        ("created", token.created_at.clone()),
        ("expires", token.expires_at.clone()),
        (
            "uses left",
            format!("{} of {}", token.remaining_uses, token.max_uses),
        ),
    ])?;
    output::line(token.public_key_pem.trim_end())
}
