//! A throwaway certificate authority and server certificate for demos and
//! tests on localhost (never for production: the key lives in memory only).

/// PEM files of a fresh CA and a server certificate it signed for
/// `localhost` and `127.0.0.1`.
pub struct DemoTls {
    /// The CA certificate devices trust.
    pub ca_pem: String,
    /// The server certificate chain.
    pub cert_pem: String,
    /// The server's private key (PKCS#8).
    pub key_pem: String,
}

impl DemoTls {
    /// Generates the CA and the server certificate.
    pub fn generate() -> Result<Self, String> {
        let err = |e: rcgen::Error| format!("generating the demo certificate: {e}");
        let ca_key = rcgen::KeyPair::generate().map_err(err)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ha-pipeline demo CA");
        let ca = ca_params.self_signed(&ca_key).map_err(err)?;
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(err)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
        Ok(DemoTls {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
