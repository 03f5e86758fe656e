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

fn certificates(pem: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading a certificate: {e}"))
}

/// Whether `cert` (the server's, then any intermediates) and `key` are a pair that a client
/// trusting `ca` accepts as `name` now: what Postgres is about to serve. Err says why not.
pub fn check_server_certificate(cert: &str, key: &str, ca: &str, name: &str) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{PrivateKeyDer, ServerName, UnixTime};
    let chain = certificates(cert)?;
    let Some((end, intermediates)) = chain.split_first() else {
        return Err("tls.crt holds no certificate".into());
    };
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| format!("tls.key is not a PEM private key ({e})"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    let pair = rustls::sign::CertifiedKey::new(chain.clone(), signing).keys_match();
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) = pair {
        return Err("tls.key is not the key of tls.crt".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for root in certificates(ca)? {
        roots.add(root).map_err(|e| format!("ca.crt: {e}"))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .map_err(|e| format!("ca.crt: {e}"))?;
    let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(end, intermediates, &server, &[], UnixTime::now())
        .map(drop)
        .map_err(|e| format!("a client trusting ca.crt refuses tls.crt as {name}: {e}"))
}

/// TLS for tokio-postgres that trusts only `root_ca` (PEM) and, with `client`, presents that
/// certificate and key (PEM): what a replica and the tests verify the cluster's server with.
pub fn tls(
    root_ca: &str,
    client: Option<(&str, &str)>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let certs = certificates;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    /// A CA's PEM, and a certificate for `names` it signed with its key's PEM.
    fn issued(names: &[&str]) -> (String, String, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca_pem = ca.clone().self_signed(&ca_key).unwrap().pem();
        let key = KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &Issuer::new(ca, &ca_key))
            .unwrap();
        (ca_pem, cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_server_certificate_is_checked_as_a_client_would_before_it_is_served() {
        let (ca, cert, key) = issued(&["orders-rw", "orders-rw.shop.svc"]);
        assert_eq!(
            check_server_certificate(&cert, &key, &ca, "orders-rw"),
            Ok(())
        );
        let (other_ca, _, other_key) = issued(&["orders-rw"]);
        let mismatch = check_server_certificate(&cert, &other_key, &ca, "orders-rw");
        assert_eq!(mismatch, Err("tls.key is not the key of tls.crt".into()));
        let stranger = check_server_certificate(&cert, &key, &other_ca, "orders-rw");
        assert!(
            stranger
                .unwrap_err()
                .contains("refuses tls.crt as orders-rw")
        );
        let misnamed = check_server_certificate(&cert, &key, &ca, "payments-rw");
        assert!(misnamed.unwrap_err().contains("payments-rw"));
        let empty = check_server_certificate("", &key, &ca, "orders-rw");
        assert_eq!(empty, Err("tls.crt holds no certificate".into()));
        assert!(check_server_certificate(&cert, "junk", &ca, "orders-rw").is_err());
    }
}
