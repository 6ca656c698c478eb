//! What the programs' tests share (feature `test-support`, enabled by their
//! dev-dependencies only): a TLS server configuration with a fresh
//! self-signed certificate, for the test receivers that stand in for
//! collectors and log stores served over HTTPS.

use std::sync::Arc;

/// A rustls server configuration with a new self-signed certificate for
/// `localhost`, and that certificate as PEM: the CA file a client under test
/// must be given to trust the server.
pub fn self_signed_localhost() -> (rustls::ServerConfig, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("generates a certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS 1.2 and 1.3")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("a valid certificate and key");
    (config, certified.cert.pem())
}
