//! [`ClientError`]: what can go wrong talking to the daemon, and how an error answer is read.

use std::path::PathBuf;

use hyper::StatusCode;

use crate::api::ErrorBody;

/// Errors of the client. The CLI prints them as they display.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon answered with an error status; `code` is the API's stable snake_case code.
    #[error("{message} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable code such as `key_destroyed`.
        code: String,
        /// The daemon's human sentence.
        message: String,
    },
    /// The socket could not be opened: most often no daemon listens on it.
    #[error("cannot connect to envault at {}: is `envault serve` running? ({source})", path.display())]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while a request was in flight.
    #[error("i/o error talking to envault: {0}")]
    Io(#[source] std::io::Error),
    /// The daemon (or the caller, for headers) sent something this client cannot use: bad JSON,
    /// bad base64, an invalid header value.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The caller's input was refused before anything was sent (key material to import
    /// that is not 32 bytes).
    #[error("{0}")]
    InvalidInput(String),
}

impl ClientError {
    /// The API error code (`not_found`, `key_in_use`, …) when the daemon answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status when the daemon answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Builds the error for a non-success answer. A body in the API's error shape gives the code
    /// and message; anything else (a proxy, an extractor rejection in plain text) gets a code
    /// derived from the status and the body text as message, so callers always see a code.
    pub fn from_response(status: u16, body: &[u8]) -> Self {
        if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
            return ClientError::Api {
                status,
                code: parsed.error.code,
                message: parsed.error.message,
            };
        }
        let text = String::from_utf8_lossy(body).trim().to_string();
        let message = if text.is_empty() {
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("request failed")
                .to_string()
        } else {
            text
        };
        ClientError::Api {
            status,
            code: status_code_name(status).to_string(),
            message,
        }
    }
}

/// The API code conventionally paired with a status, for error bodies that carry none.
fn status_code_name(status: u16) -> &'static str {
    match status {
        400 | 415 | 422 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 | 405 => "not_found",
        409 => "conflict",
        413 => "too_large",
        423 => "locked",
        _ => "http_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_body_is_parsed() {
        let body = br#"{"error":{"code":"key_in_use","message":"the key protects 2 databases"}}"#;
        let error = ClientError::from_response(409, body);
        assert_eq!(error.code(), Some("key_in_use"));
        assert_eq!(error.status(), Some(409));
        assert_eq!(
            error.to_string(),
            "the key protects 2 databases (key_in_use)"
        );
    }

    #[test]
    fn other_error_bodies_get_a_code_from_the_status() {
        let error = ClientError::from_response(
            415,
            b"Expected request with `Content-Type: application/json`",
        );
        assert_eq!(error.code(), Some("bad_request"));
        assert!(error.to_string().contains("Content-Type"));
        let error = ClientError::from_response(404, b"");
        assert_eq!(error.to_string(), "Not Found (not_found)");
        let error = ClientError::from_response(500, b"{\"unexpected\":1}");
        assert_eq!(error.code(), Some("http_error"));
    }

    #[test]
    fn connect_error_names_the_socket() {
        let error = ClientError::Connect {
            path: PathBuf::from("/tmp/x.sock"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let text = error.to_string();
        assert!(text
            .starts_with("cannot connect to envault at /tmp/x.sock: is `envault serve` running?"));
        assert_eq!(error.code(), None);
    }
}
