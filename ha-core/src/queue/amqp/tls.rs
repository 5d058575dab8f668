//! AMQPS settings: the CA that signs the brokers' certificates (the only
//! one trusted: no system or bundled roots) and an optional client
//! certificate, loaded once for every connection.

use std::error::Error;
use std::path::Path;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};

use super::config::AmqpConfig;
use crate::queue::{QueueError, QueueErrorKind};

/// The TLS settings of `config`, its files read; empty when no URL is
/// `amqps://`.
pub(super) fn load(config: &AmqpConfig) -> Result<OwnedTLSConfig, QueueError> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            QueueError::broker(
                QueueErrorKind::Misconfigured,
                format!("reading amqp {what} {}", path.display()),
                e,
            )
        })
    };
    let mut tls = OwnedTLSConfig::default();
    if let Some(ca) = &config.ca_file {
        let pem = read("CA file", ca)?;
        let pem = String::from_utf8(pem).map_err(|_| {
            QueueError::Misconfigured(format!("amqp CA file {} is not PEM", ca.display()))
        })?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(QueueError::Misconfigured(format!(
                "amqp CA file {} holds no PEM certificate",
                ca.display()
            )));
        }
        tls.cert_chain = Some(pem);
    }
    if let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) {
        tls.identity = Some(OwnedIdentity::PKCS8 {
            pem: read("client certificate", cert)?,
            key: read("client key", key)?,
        });
    }
    Ok(tls)
}

/// Whether a connection failed because the broker's certificate was not
/// trusted (a wrong CA, a misnamed or expired certificate): an operator's
/// fix, not a transient outage.
pub(super) fn certificate_refused(e: &(dyn Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        // rustls' error travels inside an io::Error, whose source() skips it.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn Error + 'static));
        if let Some(tls) = inner.unwrap_or(err).downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        next = err.source();
    }
    false
}
