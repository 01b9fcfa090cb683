//! The `envault` command line: `serve` runs the daemon, every
//! other verb is a [`Client`] of its socket. One file per verb group; [`output`] prints.
//!
//! Defaults: the socket comes from the configuration (`--config`, `ENVAULT_SOCKET`, the file,
//! the built-in `envault.sock`), the token from `--token`, else `ENVAULT_TOKEN`, else the file
//! `<data_dir>/operator.token` the daemon writes at first start.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::client::{Client, ClientError};
use crate::config::{Config, ConfigError};

mod audit;
mod authz;
mod backup;
mod db;
mod docs;
mod exit;
mod impact;
mod import_token;
mod key;
pub mod output;
mod policy;
mod record;
mod rotation;
mod store;
mod token;

/// `envault [--socket PATH] [--token T] [--config PATH] [--json] <command>`.
// No `Debug`: it holds the bearer token.
#[derive(Parser)]
#[command(
    name = "envault",
    version,
    about = "Envelope-encryption storage daemon and its client",
    long_about = None
)]
pub struct Cli {
    /// Unix socket of the daemon [default: from the configuration, ENVAULT_SOCKET, envault.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Bearer token [default: ENVAULT_TOKEN, else the file <data_dir>/operator.token].
    #[arg(
        long,
        global = true,
        env = "ENVAULT_TOKEN",
        hide_env_values = true,
        value_name = "T"
    )]
    pub token: Option<String>,
    /// Configuration file (the daemon's; clients read `socket` and `data_dir` from it).
    #[arg(long, global = true, env = "ENVAULT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the API's JSON answers instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log lines on stderr as human text or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "ENVAULT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::telemetry::logging::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether this runs the daemon (which logs at `info` by default; clients at `warn`).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve)
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon on the configured socket.
    Serve,
    /// Root keys: create, import, rotate, disable, delete (cryptoshred).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Authorizations letting databases and backups use keys.
    #[command(subcommand)]
    Authz(authz::AuthzCommand),
    /// Databases: create, list, show, soft delete, restore.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Store a record value from FILE or stdin.
    Put(record::PutArgs),
    /// Print a record value (raw bytes) to stdout.
    Get(record::GetArgs),
    /// Delete a record.
    Del(record::DelArgs),
    /// List record keys, following pages to the end.
    Ls(record::LsArgs),
    /// Backups: create, list, show, restore, delete.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Access tokens for applications and operators.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The activity log; `audit verify` checks its integrity.
    Audit(audit::AuditArgs),
    /// The data dir's embedded store: `store migrate` upgrades a sled store (daemon stopped).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page to stdout, or write one page per command into --dir.
    Man {
        /// Directory for `envault.1`, `envault-key.1`, `envault-key-create.1`, ...
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Errors of the command line; `main` prints them as `error: <message>` and exits with
/// [`CliError::exit_code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The daemon refused or could not be reached (API errors read `message (code)`).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon failed.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// An input file (record value, key to import, token file) could not be read.
    #[error("cannot read {what}: {source}")]
    Read {
        /// The file, or `stdin`.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Stdout could not be written.
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
    /// The command could not do its work (a bench run with failed requests, a bad setup).
    #[error("{0}")]
    Failed(String),
    /// An integrity check did not pass (`audit verify` found a broken chain).
    #[error("{0}")]
    Integrity(String),
}

/// What every client verb needs.
pub(crate) struct Context {
    client: Client,
    json: bool,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Completions { shell } => return quiet_broken_pipe(docs::completions(*shell)),
        Command::Man { dir } => return quiet_broken_pipe(docs::man(dir.as_deref())),
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    let result = match cli.command {
        Command::Serve => serve(config, cli.socket).await,
        Command::Store(c) => store::run(&config, c),
        Command::Audit(args) if args.offline_data_dir().is_some() => {
            let data_dir = args
                .offline_data_dir()
                .unwrap_or(&config.data_dir)
                .to_path_buf();
            audit::verify_offline(config, &data_dir, cli.json)
        }
        command => {
            let socket = cli.socket.unwrap_or_else(|| config.socket.clone());
            let token = resolve_token(cli.token, &config)?;
            let ctx = Context {
                client: Client::new(socket, token),
                json: cli.json,
            };
            dispatch(&ctx, command).await
        }
    };
    quiet_broken_pipe(result)
}

/// A reader that stopped reading (`| head`) is not a failure of ours.
fn quiet_broken_pipe(result: Result<(), CliError>) -> Result<(), CliError> {
    match result {
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

async fn dispatch(ctx: &Context, command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve | Command::Store(_) | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("serve, store, completions and man run locally, before a client is built")
        }
        Command::Key(c) => key::run(ctx, c).await,
        Command::Authz(c) => authz::run(ctx, c).await,
        Command::Db(c) => db::run(ctx, c).await,
        Command::Put(a) => record::put(ctx, a).await,
        Command::Get(a) => record::get(ctx, a).await,
        Command::Del(a) => record::del(ctx, a).await,
        Command::Ls(a) => record::ls(ctx, a).await,
        Command::Backup(c) => backup::run(ctx, c).await,
        Command::Token(c) => token::run(ctx, c).await,
        Command::Audit(a) => audit::run(ctx, a).await,
    }
}

/// `envault serve`: the `--socket` flag wins over the configuration.
async fn serve(mut config: Config, socket: Option<PathBuf>) -> Result<(), CliError> {
    if let Some(socket) = socket {
        config.socket = socket;
    }
    crate::server::run(config).await?;
    Ok(())
}

/// `--token` / `ENVAULT_TOKEN` (clap reads both), else the operator token file. A missing file
/// means no token: `health` needs none, and other routes answer `unauthenticated`.
fn resolve_token(given: Option<String>, config: &Config) -> Result<Option<String>, CliError> {
    if let Some(token) = given
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(token));
    }
    let path = config.operator_token_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "no token given and no operator token file");
            Ok(None)
        }
        Err(source) => Err(CliError::Read {
            what: format!("token file {}", path.display()),
            source,
        }),
    }
}

/// Reads a whole input: the file named, or stdin for `-` or none.
fn read_input(file: Option<&std::path::Path>) -> Result<Vec<u8>, CliError> {
    use std::io::Read as _;
    match file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read(path).map_err(|source| CliError::Read {
                what: path.display().to_string(),
                source,
            })
        }
        _ => {
            let mut buffer = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buffer)
                .map_err(|source| CliError::Read {
                    what: "stdin".into(),
                    source,
                })?;
            Ok(buffer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_parse_anywhere() {
        let cli =
            Cli::try_parse_from(["envault", "db", "list", "--json", "--socket", "/s"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket, Some(PathBuf::from("/s")));
        assert!(!cli.is_serve());
        let cli = Cli::try_parse_from(["envault", "serve", "--config", "c.toml"]).unwrap();
        assert!(cli.is_serve());
        assert_eq!(cli.config, Some(PathBuf::from("c.toml")));
    }

    #[test]
    fn verbs_of_the_contract_parse() {
        for args in [
            &["key", "create", "k1", "--import", "-"][..],
            &["key", "rotate", "k1", "--retire-old", "--dry-run"],
            &["key", "delete", "k1", "--force"],
            &["key", "delete", "k1", "--dry-run"],
            &["key", "disable", "k1", "--dry-run"],
            &["key", "enable", "k1"],
            &["db", "delete", "orders"],
            &["db", "restore", "orders"],
            &["authz", "list"],
            &[
                "authz",
                "grant",
                "--source",
                "databases",
                "--target",
                "*",
                "--role",
                "Reader",
                "--role",
                "AuthorizationDelegator",
            ],
            &["authz", "revoke", "a1"],
            &[
                "db",
                "create",
                "orders",
                "--key",
                "k1",
                "--backup-key",
                "k2",
            ],
            &["put", "orders", "a/b c", "-"],
            &["put", "orders", "r1"],
            &["get", "orders", "r1"],
            &["del", "orders", "r1"],
            &["ls", "orders", "--prefix", "a", "--limit", "5"],
            &["backup", "restore", "b1", "--into", "copy", "--key", "k1"],
            &["token", "create", "--role", "app", "--db", "a", "--db", "b"],
            &[
                "audit",
                "--action",
                "kms.secrets.delete",
                "--since",
                "2024-01-01T00:00:00Z",
                "--follow",
            ],
            &["audit", "verify"],
            &["audit", "verify", "--data-dir", "/var/lib/envault"],
        ] {
            let argv = std::iter::once("envault").chain(args.iter().copied());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{args:?}: {e}");
            }
        }
        assert!(Cli::try_parse_from([
            "envault", "authz", "grant", "--source", "x", "--target", "k"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["envault", "token", "create", "--role", "admin"]).is_err());
    }
}
