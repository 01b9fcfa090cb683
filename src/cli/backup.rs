//! `envault backup …`: encrypted backups of databases.

use clap::Subcommand;

use super::output::{self, Table};
use super::{CliError, Context};
use crate::api::BackupList;

/// Backup verbs.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up a database now (under its backup key, else its key).
    Create {
        /// Database name or id.
        db: String,
    },
    /// List backups.
    List,
    /// Show one backup.
    Show {
        /// Backup id.
        id: String,
    },
    /// Restore a backup into a new database.
    Restore {
        /// Backup id.
        id: String,
        /// Name of the new database.
        #[arg(long, value_name = "NAME")]
        into: String,
        /// Root key for the new database (default: as the daemon decides from the backup).
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Delete a backup file.
    Delete {
        /// Backup id.
        id: String,
    },
}

pub(super) async fn run(ctx: &Context, command: BackupCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        BackupCommand::Create { db } => {
            let backup = client.create_backup(&db).await?;
            if ctx.json {
                return output::json(&backup);
            }
            output::line(&format!(
                "created backup {} of {db} under key {} version {} ({} bytes)",
                backup.id, backup.key, backup.key_version, backup.size,
            ))
        }
        BackupCommand::List => {
            let answer = BackupList {
                backups: client.list_backups().await?,
            };
            if ctx.json {
                return output::json(&answer);
            }
            let answer = output::value(&answer)?;
            let columns = ["id", "database", "key", "key_version", "size", "created_at"];
            let mut table = Table::new(&["ID", "DATABASE", "KEY", "VERSION", "SIZE", "CREATED"]);
            for b in output::items(&answer, "backups") {
                table.row(columns.iter().map(|c| output::cell(b, c)).collect());
            }
            table.print()
        }
        BackupCommand::Show { id } => {
            let backup = client.get_backup(&id).await?;
            if ctx.json {
                return output::json(&backup);
            }
            output::fields(&output::object_fields(&output::value(&backup)?))
        }
        BackupCommand::Restore { id, into, key } => {
            let db = client.restore_backup(&id, &into, key.as_deref()).await?;
            if ctx.json {
                return output::json(&db);
            }
            output::line(&format!(
                "restored backup {id} into database {} ({}) under key {}",
                db.name, db.id, db.key
            ))
        }
        BackupCommand::Delete { id } => {
            client.delete_backup(&id).await?;
            if ctx.json {
                return Ok(());
            }
            output::line(&format!("deleted backup {id}"))
        }
    }
}
