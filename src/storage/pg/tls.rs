//! The TLS connector for PostgreSQL, built from `[database] url`'s libpq
//! parameters (`config/database_tls.rs`). rustls with the ring provider:
//! no OpenSSL to link, and the same crypto the rest of the tree already
//! pulls (docs/decisions.md "TLS to PostgreSQL").
//!
//! libpq's `prefer` and `require` encrypt without checking who answers
//! (Debian's own PostgreSQL serves a self-signed "snakeoil" certificate, so
//! checking would break the default); `verify-ca` and `verify-full` check
//! the chain, and `verify-full` the host name too.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{TlsMode, TlsSettings};

/// What every pooled connection is made with.
#[derive(Clone)]
pub struct Connector(MakeRustlsConnect);

impl<S> MakeTlsConnect<S> for Connector
where
    MakeRustlsConnect: MakeTlsConnect<S>,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<Self::TlsConnect, Self::Error> {
        // The driver asks for a connector even for a unix socket (with no
        // name: ""); TLS is off there (libpq's rule,
        // `DatabaseConfig::connect_config`), so any valid name will do.
        let name = if host.is_empty() || host.starts_with('/') {
            "localhost"
        } else {
            host
        };
        self.0.make_tls_connect(name)
    }
}

/// The connector for `tls` (with `disable` it is never asked to do
/// anything).
pub fn connector(tls: &TlsSettings) -> anyhow::Result<Connector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let chain = match (tls.mode, &tls.root_cert) {
        (TlsMode::VerifyCa | TlsMode::VerifyFull, Some(file)) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(file)?), provider.clone())
                .build()
                .with_context(|| format!("sslrootcert {}", file.display()))?,
        ),
        _ => None,
    };
    let verifier = Arc::new(Verifier {
        chain,
        check_name: tls.mode == TlsMode::VerifyFull,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &tls.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .with_context(|| format!("sslcert {} with sslkey {}", cert.display(), key.display()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Connector(MakeRustlsConnect::new(config)))
}

fn certificates(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{}: cannot read PEM certificates", file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no PEM certificate in it", file.display());
    }
    Ok(certs)
}

fn roots(file: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file)? {
        roots
            .add(cert)
            .with_context(|| format!("sslrootcert {}", file.display()))?;
    }
    Ok(roots)
}

fn private_key(file: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(file)
        .with_context(|| format!("sslkey {}: cannot read a PEM private key", file.display()))
}

/// What is checked of the server's certificate: nothing (`prefer`,
/// `require`), its chain (`verify-ca`), its chain and name (`verify-full`).
/// The handshake's signatures are checked against it in every mode (the
/// session is bound to that key).
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // webpki checks the name last, after the chain: a name error means
        // the chain was good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
