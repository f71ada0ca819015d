//! Optional TLS (rustls with the ring provider): the server's
//! configuration. Handshakes run in each connection's own task, under the
//! header timeout ([`super::conn`]), so a slow client never holds up
//! `accept`.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::server::ServerError;
use crate::storage::perms::check_mode;

/// Loads a PEM certificate chain and private key.
pub fn load_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ServerError> {
    let tls_err = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        ServerError::Tls(format!("{what} {}: {e}", path.display()))
    };
    // A private key others can read is as good as published: refuse to
    // serve with it rather than lend it credibility.
    let meta = std::fs::metadata(key).map_err(|e| tls_err("reading", key, &e))?;
    check_mode(&meta, key, "TLS private key", 0o077)
        .map_err(|e| ServerError::Tls(format!("{e} (and consider the key exposed: replace it)")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err("reading certificates from", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("reading certificates from", cert, &e))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{} holds no PEM certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err("reading the private key from", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("the certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
