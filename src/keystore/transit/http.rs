//! The HTTP client of the transit backend: blocking calls with a time limit each, one retry
//! of a stale pooled connection for calls safe to repeat, the server's answers and errors, and
//! the TLS setup for a private CA.

use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::keystore::KeystoreError;

/// A small blocking client for the server: one agent (pooled connections) and the token.
pub(super) struct Http {
    pub(super) agent: ureq::Agent,
    /// For the rare calls the server may take long to answer the first time (the import
    /// wrapping key is a 4096-bit RSA key generated on first use).
    pub(super) slow_agent: ureq::Agent,
    pub(super) address: String,
    pub(super) token: Zeroizing<String>,
    pub(super) timeout: Duration,
}

/// A response: status and body (zeroized on drop: decrypt answers carry DEKs).
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Zeroizing<Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Get,
    List,
    Post,
    Delete,
}

impl Http {
    pub(super) fn call(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
        retry_stale: bool,
    ) -> Result<Answer, KeystoreError> {
        self.call_with(&self.agent, verb, path, body, retry_stale)
    }

    pub(super) fn call_with(
        &self,
        agent: &ureq::Agent,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
        retry_stale: bool,
    ) -> Result<Answer, KeystoreError> {
        match self.call_once(agent, verb, path, body) {
            // A pooled connection the server closed (e.g. after a restart) fails with an I/O
            // error; calls that are safe to repeat get one fresh attempt.
            Err(ureq::Error::Io(_)) if retry_stale => self.call_once(agent, verb, path, body),
            other => other,
        }
        .map_err(|e| self.transport_error(e))
    }

    fn call_once(
        &self,
        agent: &ureq::Agent,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, ureq::Error> {
        let url = format!("{}/v1/{path}", self.address);
        let token = self.token.as_str();
        let mut response = match verb {
            Verb::Get => agent
                .get(&url)
                .header("X-Vault-Token", token)
                .header("X-Vault-Request", "true")
                .call()?,
            Verb::List => agent
                .get(&format!("{url}?list=true"))
                .header("X-Vault-Token", token)
                .header("X-Vault-Request", "true")
                .call()?,
            Verb::Delete => agent
                .delete(&url)
                .header("X-Vault-Token", token)
                .header("X-Vault-Request", "true")
                .call()?,
            Verb::Post => agent
                .post(&url)
                .header("X-Vault-Token", token)
                .header("X-Vault-Request", "true")
                .content_type("application/json")
                .send(body.unwrap_or(b"{}"))?,
        };
        let status = response.status().as_u16();
        let body = Zeroizing::new(response.body_mut().read_to_vec()?);
        Ok(Answer { status, body })
    }

    fn transport_error(&self, err: ureq::Error) -> KeystoreError {
        let address = &self.address;
        match err {
            ureq::Error::Timeout(_) => KeystoreError::Unavailable(format!(
                "the transit server at {address} did not answer within {:?}",
                self.timeout
            )),
            other => KeystoreError::Unavailable(format!(
                "cannot reach the transit server at {address}: {other}"
            )),
        }
    }
}

impl Answer {
    /// The server's `errors` list, joined (never contains key material or the token).
    pub(super) fn errors(&self) -> String {
        #[derive(Deserialize)]
        struct Errors {
            #[serde(default)]
            errors: Vec<String>,
        }
        serde_json::from_slice::<Errors>(&self.body)
            .map(|e| e.errors.join("; "))
            .unwrap_or_default()
    }

    pub(super) fn data<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
    ) -> Result<T, KeystoreError> {
        #[derive(Deserialize)]
        struct Envelope<T> {
            data: T,
        }
        serde_json::from_slice::<Envelope<T>>(&self.body)
            .map(|e| e.data)
            .map_err(|e| KeystoreError::Backend(format!("unexpected {what} answer: {e}")))
    }
}

pub(super) fn tls_with_ca(path: &std::path::Path) -> Result<ureq::tls::TlsConfig, KeystoreError> {
    let pem = std::fs::read(path).map_err(|e| {
        KeystoreError::Config(format!(
            "cannot read keystore.transit.ca_file {}: {e}",
            path.display()
        ))
    })?;
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(KeystoreError::Config(format!(
            "keystore.transit.ca_file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
        .build())
}
