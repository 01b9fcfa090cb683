//! `envault completions SHELL` and `envault man`: generated from the same clap definition the
//! parser uses, so they never drift from the real flags.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::{Cli, CliError};

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "envault", &mut out);
    std::io::stdout().write_all(&out).map_err(CliError::Output)
}

/// Writes `envault.1` to stdout, or every page (one per command and subcommand) into `dir`.
pub fn man(dir: Option<&Path>) -> Result<(), CliError> {
    let command = Cli::command();
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .map_err(CliError::Output)?;
            std::io::stdout().write_all(&out).map_err(CliError::Output)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(CliError::Output)?;
            clap_mangen::generate_to(command, dir).map_err(CliError::Output)
        }
    }
}
