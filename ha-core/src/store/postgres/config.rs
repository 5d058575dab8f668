//! Settings of a [`PostgresStore`](super::PostgresStore) and their checks.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Settings of a [`PostgresStore`](super::PostgresStore). `Debug` hides
/// the URL's password.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?sslmode=verify-full`
    /// (key-value strings work too). `sslmode` is one of `disable`,
    /// `prefer` (the default), `require`, `verify-ca`, `verify-full`; see
    /// the [TLS table](super#tls). `sslrootcert=PATH` names the CA file
    /// unless [`ca_file`](Self::ca_file) is set.
    pub url: String,
    /// PEM file of the CA(s) that sign the server's certificate. With it,
    /// every TLS connection verifies the chain; `verify-full` also the
    /// host name.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for servers that authenticate
    /// clients by certificate (CockroachDB's `root`), with
    /// [`client_key_file`](Self::client_key_file). `sslcert=PATH` in the
    /// URL works too.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of [`client_cert_file`](Self::client_cert_file)
    /// (`sslkey=PATH` in the URL).
    pub client_key_file: Option<PathBuf>,
    /// Put the tables in this schema (created by
    /// [`PostgresStore::migrate`](super::PostgresStore::migrate)) instead of
    /// the default `search_path`. Lowercase letters, digits, `_`.
    pub schema: Option<String>,
    /// Connections kept open, each shared by concurrent queries.
    pub pool_size: usize,
    /// Bound on establishing one connection.
    pub connect_timeout: Duration,
    /// Attempts for one operation on transient errors (first try included).
    pub attempts: u32,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &crate::redact::url(&self.url))
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            schema: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            attempts: 4,
        }
    }
}

/// Why a [`PostgresConfig`] was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresConfigError {
    /// `pool_size` is 0.
    #[error("postgres pool_size must be at least 1")]
    PoolSize,
    /// `attempts` is 0.
    #[error("postgres attempts must be at least 1")]
    Attempts,
    /// The schema name is not 1-63 characters of `[a-z0-9_]` starting with
    /// a letter or `_`.
    #[error(
        "postgres schema `{0}` must be 1-63 characters of [a-z0-9_], not starting with a digit"
    )]
    Schema(String),
    /// The URL does not parse (the source says why; it never echoes the
    /// password).
    #[error("postgres url is invalid: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// `sslmode` has a value outside the table.
    #[error(
        "postgres sslmode `{0}` is not one of disable, prefer, require, verify-ca, verify-full"
    )]
    SslMode(String),
    /// `verify-ca`/`verify-full` without a CA file to verify against.
    #[error("postgres sslmode={0} needs a CA file (ca_file or sslrootcert)")]
    CaFileNeeded(SslMode),
    /// The CA file cannot be read or holds no usable certificate.
    #[error("postgres CA file {}: {source}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why it is unusable.
        #[source]
        source: std::io::Error,
    },
    /// A client certificate without its key or the other way round.
    #[error("postgres client certificate and key go together")]
    ClientCertPair,
    /// The client certificate or key cannot be read or used.
    #[error("postgres client certificate {}: {source}", path.display())]
    ClientCert {
        /// The file.
        path: PathBuf,
        /// Why it is unusable.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the TLS settings.
    #[error("postgres TLS settings: {0}")]
    Tls(String),
}

/// How a connection uses TLS: libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain.
    #[default]
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS with the certificate chain verified against the CA file.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = PostgresConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(PostgresConfigError::SslMode(other.to_owned())),
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// A parsed URL: what tokio-postgres connects with, and the TLS settings
/// it does not know.
pub(super) struct Target {
    pub(super) connect: tokio_postgres::Config,
    pub(super) ssl_mode: SslMode,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) client_cert: Option<(PathBuf, PathBuf)>,
}

impl PostgresConfig {
    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), PostgresConfigError> {
        if self.pool_size == 0 {
            return Err(PostgresConfigError::PoolSize);
        }
        if self.attempts == 0 {
            return Err(PostgresConfigError::Attempts);
        }
        if let Some(s) = &self.schema
            && !valid_identifier(s)
        {
            return Err(PostgresConfigError::Schema(s.clone()));
        }
        self.target().map(|_| ())
    }

    /// Parses [`url`](Self::url), taking out `sslmode` and `sslrootcert`.
    pub(super) fn target(&self) -> Result<Target, PostgresConfigError> {
        let mut url = self.url.clone();
        let mode = take_param(&mut url, "sslmode");
        let root = take_param(&mut url, "sslrootcert");
        let cert = take_param(&mut url, "sslcert");
        let key = take_param(&mut url, "sslkey");
        let ssl_mode = mode.as_deref().map_or(Ok(SslMode::Prefer), str::parse)?;
        let mut connect =
            tokio_postgres::Config::from_str(&url).map_err(PostgresConfigError::Url)?;
        connect.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let ca_file = self.ca_file.clone().or(root.map(PathBuf::from));
        if ca_file.is_none() && matches!(ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) {
            return Err(PostgresConfigError::CaFileNeeded(ssl_mode));
        }
        let cert = self.client_cert_file.clone().or(cert.map(PathBuf::from));
        let key = self.client_key_file.clone().or(key.map(PathBuf::from));
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(PostgresConfigError::ClientCertPair),
        };
        Ok(Target {
            connect,
            ssl_mode,
            ca_file,
            client_cert,
        })
    }
}

/// Removes `key` from a URL's query or a key-value string and returns its
/// value. Values of these keys hold no spaces or quotes.
fn take_param(url: &mut String, key: &str) -> Option<String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (base, query) = url.split_once('?')?;
        let mut value = None;
        let rest: Vec<&str> = query
            .split('&')
            .filter(|kv| match kv.split_once('=') {
                Some((k, v)) if k == key => {
                    value = Some(v.to_owned());
                    false
                }
                _ => true,
            })
            .collect();
        let rebuilt = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        *url = rebuilt;
        return value;
    }
    let needle = format!("{key}=");
    let start = url
        .match_indices(&needle)
        .map(|(i, _)| i)
        .find(|&i| url[..i].chars().next_back().is_none_or(char::is_whitespace))?;
    let from = start + needle.len();
    let end = url[from..]
        .find(char::is_whitespace)
        .map_or(url.len(), |n| from + n);
    let value = url[from..end].to_owned();
    url.replace_range(start..end, "");
    Some(value)
}

/// A lowercase SQL identifier that needs no escaping beyond quotes.
pub(super) fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

#[cfg(test)]
mod tests {

    #[test]
    fn debug_hides_the_password() {
        let c = PostgresConfig {
            url: "postgres://ha_writer:Pa55word@db:5432/ha?sslmode=verify-full".into(),
            ..PostgresConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("Pa55word"), "{shown}");
        assert!(shown.contains("ha_writer:***@db:5432/ha"), "{shown}");
    }
    use super::*;

    #[test]
    fn each_bad_setting_has_its_error() {
        let bad = |f: fn(&mut PostgresConfig)| {
            let mut c = PostgresConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(matches!(
            bad(|c| c.pool_size = 0),
            PostgresConfigError::PoolSize
        ));
        assert!(matches!(
            bad(|c| c.attempts = 0),
            PostgresConfigError::Attempts
        ));
        assert!(matches!(
            bad(|c| c.schema = Some("9x".into())),
            PostgresConfigError::Schema(_)
        ));
        assert!(PostgresConfig::default().validate().is_ok());
        assert!(matches!(
            bad(|c| c.url = "postgres://h/db?sslmode=verify-everything".into()),
            PostgresConfigError::SslMode(_)
        ));
        assert!(matches!(
            bad(|c| c.url = "postgres://h/db?sslmode=verify-full".into()),
            PostgresConfigError::CaFileNeeded(SslMode::VerifyFull)
        ));
        assert!(matches!(
            bad(|c| c.client_cert_file = Some("/c.pem".into())),
            PostgresConfigError::ClientCertPair
        ));
        assert!(matches!(
            bad(|c| c.url = "postgres://h:notaport/db".into()),
            PostgresConfigError::Url(_)
        ));
    }

    #[test]
    fn tls_parameters_are_taken_out_of_both_url_forms() {
        let target = |url: &str| {
            PostgresConfig {
                url: url.into(),
                ..PostgresConfig::default()
            }
            .target()
            .unwrap()
        };
        let t =
            target("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/ca.pem&application_name=x");
        assert_eq!(t.ssl_mode, SslMode::VerifyCa);
        assert_eq!(t.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(t.connect.get_application_name(), Some("x"));
        let t = target("host=h user=u sslmode=require dbname=db");
        assert_eq!(t.ssl_mode, SslMode::Require);
        assert_eq!(t.connect.get_dbname(), Some("db"));
        assert_eq!(target("postgres://u@h/db").ssl_mode, SslMode::Prefer);
        // The explicit CA file wins over the URL's.
        let t = PostgresConfig {
            url: "postgres://h/db?sslmode=verify-full&sslrootcert=/a.pem".into(),
            ca_file: Some("/b.pem".into()),
            ..PostgresConfig::default()
        }
        .target()
        .unwrap();
        assert_eq!(t.ca_file, Some(PathBuf::from("/b.pem")));
    }
}
