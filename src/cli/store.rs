//! `envault store migrate`: moves a data dir's sled store to the fjall store without starting
//! the daemon (the daemon also does it at its first start). Runs locally on the data dir, not
//! through the socket: stop the daemon first (the sled store's lock refuses a second user).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CliError;
use crate::config::Config;
use crate::store::fjall_store::migrate;

/// `envault store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Migrate the sled store of a data dir (written by an earlier release) to the current
    /// embedded store; nothing to do if it was migrated already.
    Migrate(MigrateArgs),
}

/// `envault store migrate [--data-dir DIR]`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The data dir [default: the configuration's data_dir].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Runs a store command.
pub fn run(config: &Config, command: StoreCommand) -> Result<(), CliError> {
    match command {
        StoreCommand::Migrate(args) => {
            // As the daemon does: the new store's files and directories are private (0600/0700).
            crate::hardening::private_umask();
            let data_dir = args.data_dir.unwrap_or_else(|| config.data_dir.clone());
            let cache = config.store.cache_size;
            let mut progress = crate::store::show_progress();
            match migrate::migrate_if_needed(&data_dir, cache, &mut progress)
                .map_err(|e| CliError::Failed(format!("store migration failed: {e}")))?
            {
                Some(done) => println!(
                    "migrated {} catalog entries and {} records to {}",
                    done.catalog,
                    done.records,
                    migrate::Layout::of(&data_dir).fjall.display()
                ),
                None => println!(
                    "nothing to migrate in {}: no sled store, or migrated already",
                    data_dir.display()
                ),
            }
            Ok(())
        }
    }
}
