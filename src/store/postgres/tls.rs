//! TLS to PostgreSQL: libpq's `sslmode` values ([`PgSslMode`]) on rustls with ring, the one
//! crypto provider of the binary.
//!
//! - `disable`: no TLS. `prefer` and `require`: TLS without checking the certificate, as libpq
//!   does (the link is encrypted, but the peer may be anyone who can intercept it).
//!   `verify-ca`: the chain must end at a trusted CA, whatever host it names. `verify-full`:
//!   that, and the certificate must name the host connected to.
//! - Trusted CAs: `[store] ssl_root_cert` (PEM), else the system's trust store.
//! - The mode is set in the configuration only; `sslmode` or `sslrootcert` in the URL are
//!   refused, so that there is one place to look.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::PgSslMode;
use crate::store::StoreError;

/// The libpq parameters envault takes from `[store]` instead of the URL.
const CONFIG_ONLY: [(&str, &str); 2] = [
    ("sslmode", "ssl_mode (ENVAULT_STORE_SSL_MODE)"),
    ("sslrootcert", "ssl_root_cert (ENVAULT_STORE_SSL_ROOT_CERT)"),
];

/// Refuses a URL that sets `sslmode` or `sslrootcert` (in a `postgres://` query string or as
/// a `key=value` pair), naming the `[store]` setting to use instead. Names only the
/// parameter, never the URL (it may hold a password).
pub(super) fn refuse_url_tls_params(url: &str) -> Result<(), StoreError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    for (param, setting) in CONFIG_ONLY {
        let found = if is_url {
            url.split_once('?').is_some_and(|(_, query)| {
                query
                    .split('&')
                    .any(|pair| pair.split('=').next() == Some(param))
            })
        } else {
            url.match_indices(param).any(|(at, _)| {
                let before = url[..at].chars().next_back();
                let after = url[at + param.len()..].trim_start();
                before.is_none_or(char::is_whitespace) && after.starts_with('=')
            })
        };
        if found {
            return Err(StoreError::Backend(format!(
                "the store URL sets {param}: set [store] {setting} instead"
            )));
        }
    }
    Ok(())
}

/// Whether every host of `pg` is a Unix socket or a loopback address (no host at all means
/// the driver's local default).
pub(super) fn all_local(pg: &tokio_postgres::Config) -> bool {
    let hosts_local = pg.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    });
    hosts_local && pg.get_hostaddrs().iter().all(IpAddr::is_loopback)
}

/// The driver's `sslmode` and the TLS connector for `mode`.
pub(super) fn connector(
    mode: PgSslMode,
    root_cert: Option<&Path>,
) -> Result<(SslMode, MakeRustlsConnect), StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_setup(format!("protocol versions: {e}")))?;
    let verifying = |roots: RootCertStore| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| tls_setup(format!("certificate verifier: {e}")))
    };
    let (driver_mode, config) = match mode {
        PgSslMode::Disable | PgSslMode::Prefer | PgSslMode::Require => {
            let driver_mode = match mode {
                PgSslMode::Disable => SslMode::Disable,
                PgSslMode::Prefer => SslMode::Prefer,
                _ => SslMode::Require,
            };
            let verifier = Arc::new(EncryptOnly(provider.clone()));
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            (driver_mode, config)
        }
        PgSslMode::VerifyCa => {
            let verifier = Arc::new(ChainOnly(verifying(roots(root_cert)?)?));
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            (SslMode::Require, config)
        }
        PgSslMode::VerifyFull => {
            let config = builder
                .with_webpki_verifier(verifying(roots(root_cert)?)?)
                .with_no_client_auth();
            (SslMode::Require, config)
        }
    };
    Ok((driver_mode, MakeRustlsConnect::new(config)))
}

fn tls_setup(why: String) -> StoreError {
    StoreError::Backend(format!("PostgreSQL TLS: {why}"))
}

/// The CAs in `path`, else the system's.
fn roots(path: Option<&Path>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match path {
        Some(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls_setup(format!("cannot read the CA file {shown}: {e}")))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| tls_setup(format!("a certificate in {shown}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(tls_setup(format!("no certificate in the CA file {shown}")));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(tls_setup(
                    "no trusted CA in the system's store: set [store] ssl_root_cert".into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// `prefer` and `require`: any certificate, but the handshake itself must be signed by it
/// (so the session key is shared with whoever holds that certificate's key).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full WebPKI check, except that the certificate need not name the host.
/// The name is checked last, so a name error means the chain, dates and usage passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_in_the_url_are_refused_and_named() {
        for url in [
            "postgres://u:pw@db.example/envault?sslmode=require",
            "postgresql://u@db.example/envault?application_name=x&sslrootcert=/ca.pem",
            "host=db.example sslmode=verify-full dbname=envault",
            "host=db.example dbname=envault sslrootcert = /ca.pem",
        ] {
            let err = refuse_url_tls_params(url).unwrap_err().to_string();
            assert!(err.contains("[store] ssl_"), "{err}");
            assert!(!err.contains("pw"), "{err}");
        }
        for url in [
            "postgres://u:sslmode=x@db.example/envault",
            "host=db.example dbname=mysslmode",
            "host=/run/postgresql dbname=envault",
        ] {
            refuse_url_tls_params(url).unwrap();
        }
    }

    #[test]
    fn only_sockets_and_loopback_count_as_local() {
        let local = |url: &str| all_local(&url.parse().unwrap());
        assert!(local("host=/run/postgresql dbname=envault"));
        assert!(local("postgres://u@127.0.0.1:5432/envault"));
        assert!(local("postgres://u@localhost/envault"));
        assert!(local("postgres://u@[::1]/envault"));
        assert!(!local("postgres://u@db.example/envault"));
        assert!(!local("postgres://u@10.0.0.5/envault"));
        assert!(!local("host=localhost,db.example dbname=envault"));
        assert!(!local("host=localhost hostaddr=10.0.0.5 dbname=envault"));
    }
}
