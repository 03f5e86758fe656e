//! What the agent and the archive share about talking to Postgres (below both, so neither
//! depends on the other).

/// The server's own message when there is one, else the client error and its cause.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// TLS for tokio-postgres that trusts only `root_ca` (PEM) and, with `client`, presents that
/// certificate and key (PEM): what a replica and the tests verify the cluster's server with.
pub fn tls(
    root_ca: &str,
    client: Option<(&str, &str)>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = |pem: &str| {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("reading a certificate: {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(root_ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("adding the CA certificate: {e}"))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| format!("reading the client key: {e}"))?;
            builder
                .with_client_auth_cert(certs(cert)?, key)
                .map_err(|e| format!("the client certificate: {e}"))?
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
