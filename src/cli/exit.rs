//! Exit statuses by error class, so scripts can tell "not there" from "not allowed" from
//! "try again later" without parsing messages. The table is in docs/operations.md.

use super::CliError;
use crate::client::ClientError;

/// Any failure not in a class below (a failed bench run, a server error, a daemon that could
/// not start).
pub const FAILURE: u8 = 1;
/// Bad command line, bad configuration or bad input refused by the daemon (400, 413).
pub const USAGE: u8 = 2;
/// The key, database, record, backup or route does not exist (404).
pub const NOT_FOUND: u8 = 3;
/// No or bad token, or the token may not do this (401, 403).
pub const DENIED: u8 = 4;
/// The request conflicts with the current state: in use, deleted, duplicate, suspended or
/// destroyed key (409, 423).
pub const CONFLICT: u8 = 5;
/// The daemon, its store or its root-key backend cannot be reached now; retrying may work
/// (no daemon on the socket, 503, 507).
pub const UNAVAILABLE: u8 = 6;
/// Something failed an integrity check: a ciphertext or record that does not authenticate on
/// the daemon's side, or an activity log whose chain is broken (`audit verify`).
pub const INTEGRITY: u8 = 7;

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(err) => client_exit_code(err),
            CliError::Config(_) => USAGE,
            CliError::Read { .. } => USAGE,
            CliError::Integrity(_) => INTEGRITY,
            CliError::Server(_) | CliError::Output(_) | CliError::Failed(_) => FAILURE,
        }
    }
}

fn client_exit_code(err: &ClientError) -> u8 {
    match err {
        ClientError::Api { status, code, .. } => match (*status, code.as_str()) {
            (_, "integrity_error") => INTEGRITY,
            (400 | 413, _) => USAGE,
            (401 | 403, _) => DENIED,
            (404, _) => NOT_FOUND,
            (409 | 423, _) => CONFLICT,
            (503 | 507, _) => UNAVAILABLE,
            _ => FAILURE,
        },
        ClientError::Connect { .. } | ClientError::Io(_) => UNAVAILABLE,
        ClientError::InvalidInput(_) => USAGE,
        _ => FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> CliError {
        CliError::Client(ClientError::Api {
            status,
            code: code.into(),
            message: String::new(),
        })
    }

    #[test]
    fn each_class_has_its_status() {
        assert_eq!(api(400, "bad_request").exit_code(), USAGE);
        assert_eq!(api(401, "unauthenticated").exit_code(), DENIED);
        assert_eq!(api(403, "not_authorized_for_key").exit_code(), DENIED);
        assert_eq!(api(404, "not_found").exit_code(), NOT_FOUND);
        assert_eq!(api(409, "key_in_use").exit_code(), CONFLICT);
        assert_eq!(api(423, "key_destroyed").exit_code(), CONFLICT);
        assert_eq!(api(503, "key_backend_unavailable").exit_code(), UNAVAILABLE);
        assert_eq!(api(500, "integrity_error").exit_code(), INTEGRITY);
        assert_eq!(api(500, "storage_error").exit_code(), FAILURE);
        assert_eq!(CliError::Integrity("line 3".into()).exit_code(), INTEGRITY);
    }
}
