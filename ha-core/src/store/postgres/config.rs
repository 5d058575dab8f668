//! Settings of a [`PostgresStore`](super::PostgresStore) and their checks.

use std::time::Duration;

/// Settings of a [`PostgresStore`](super::PostgresStore).
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (key-value strings work
    /// too). TLS is not supported yet: use a local connection or a sidecar.
    pub url: String,
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

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
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
            && !valid_schema(s)
        {
            return Err(PostgresConfigError::Schema(s.clone()));
        }
        Ok(())
    }
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

#[cfg(test)]
mod tests {
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
    }
}
