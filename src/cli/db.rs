//! `envault db …`: databases.

use clap::Subcommand;
use serde_json::json;

use super::output::{self, Table};
use super::{CliError, Context};
use crate::api::{CreateDatabaseRequest, DatabaseInfo};

/// Database verbs. A database is named by its name or id.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create a database, under a customer key or (without --key) a provider-managed one.
    Create {
        /// Unique name.
        name: String,
        /// Root key for records (needs a `databases` → key authorization with role Reader).
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Separate root key for backups (needs the role AuthorizationDelegator too).
        #[arg(long, value_name = "KEY", alias = "backup-encryption-key-crn")]
        backup_key: Option<String>,
        /// Grant the `databases` authorizations the keys need when they are missing.
        #[arg(long)]
        create_authorization: bool,
    },
    /// List databases in every state, or in one.
    List {
        /// Only databases in this state.
        #[arg(long, value_parser = ["active", "deleted", "disabled"])]
        state: Option<String>,
    },
    /// Show a database (works in every state, shredded included).
    Show {
        /// Name or id.
        db: String,
    },
    /// Soft-delete a database: inaccessible at once, restorable within the soft-deletion period.
    Delete {
        /// Name or id.
        db: String,
    },
    /// Restore a soft-deleted database.
    Restore {
        /// Name or id.
        db: String,
    },
}

pub(super) async fn run(ctx: &Context, command: DbCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        DbCommand::Create {
            name,
            key,
            backup_key,
            create_authorization,
        } => {
            let request = CreateDatabaseRequest {
                name,
                key,
                backup_key,
                create_authorization,
            };
            let db = client.create_database_with(&request).await?;
            if ctx.json {
                return output::json(&db);
            }
            let key_name = match db.key_origin.as_str() {
                "provider" => "provider-managed".to_string(),
                _ => db.key.clone(),
            };
            output::line(&format!(
                "created database {} ({}) under key {key_name}; backups under key {}",
                db.name,
                db.id,
                db.backup_key_name.as_deref().unwrap_or(&key_name)
            ))
        }
        DbCommand::List { state: wanted } => {
            let dbs = client.list_databases_in(wanted.as_deref()).await?;
            if ctx.json {
                return output::json(&json!({ "databases": dbs }));
            }
            let mut table = Table::new(&["NAME", "STATE", "KEY", "ID"]);
            for db in &dbs {
                table.row(vec![
                    db.name.clone(),
                    state(db),
                    db.key.clone(),
                    db.id.clone(),
                ]);
            }
            table.print()
        }
        DbCommand::Show { db } => {
            let db = client.get_database(&db).await?;
            if ctx.json {
                return output::json(&db);
            }
            let optional = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            output::fields(&[
                ("id", db.id.clone()),
                ("crn", db.crn.clone()),
                ("name", db.name.clone()),
                ("state", state(&db)),
                ("key", db.key.clone()),
                ("key crn", db.key_crn.clone()),
                ("key origin", db.key_origin.clone()),
                ("backup key", optional(&db.backup_key)),
                ("backups under", optional(&db.backup_key_name)),
                ("created", db.created_at.clone()),
                ("deleted", optional(&db.deleted_at)),
                ("purge at", optional(&db.purge_at)),
            ])
        }
        DbCommand::Delete { db } => {
            let info = client.delete_database(&db).await?;
            if ctx.json {
                return output::json(&info);
            }
            let purge_at = info.purge_at.as_deref().unwrap_or("-");
            output::line(&format!(
                "deleted database {}: state {}, purge at {purge_at} (`envault db restore {}` until then)",
                info.name,
                state(&info),
                info.name
            ))
        }
        DbCommand::Restore { db } => {
            let info = client.restore_database(&db).await?;
            if ctx.json {
                return output::json(&info);
            }
            output::line(&format!(
                "restored database {}: state {}",
                info.name,
                state(&info)
            ))
        }
    }
}

/// `state` or `state (reason)`.
fn state(db: &DatabaseInfo) -> String {
    match &db.state_reason {
        Some(reason) => format!("{} ({reason})", db.state),
        None => db.state.clone(),
    }
}
