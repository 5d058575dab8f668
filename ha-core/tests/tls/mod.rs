//! A throwaway TLS identity for the HTTP test files (`mod tls;` in each).

use std::sync::Arc;

/// A server configuration for `localhost` from a fresh CA, and the CA (PEM).
pub fn test_tls() -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config =
        ha_core::http::load_tls(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    (config, ca.pem())
}
