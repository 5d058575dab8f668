//! Settings of the alerts service.

use crate::ConfigError;
use std::path::Path;
use std::time::Duration;

/// Settings of the alerts service.
#[derive(Clone)]
pub struct AlertsConfig {
    /// The operator token every `/v1` request must present as
    /// `Authorization: Bearer <token>`. `None` serves without authentication
    /// (`--insecure-no-auth`: demos only; the binary logs a warning).
    pub api_token: Option<String>,
    /// How often a `/v1/stream` client polls the store for new anomalies.
    pub stream_poll: Duration,
    /// How many of the newest anomalies each stream poll reads (1..=1000).
    /// An anomaly is streamed when it first shows up among them; see
    /// [the live stream](crate::alerts#the-live-stream) for what that misses.
    pub stream_window: u32,
    /// Interval of the SSE keep-alive comment (keeps proxies from closing
    /// an idle stream).
    pub stream_keep_alive: Duration,
    /// Streams open at once; past it, `/v1/stream` answers `503`.
    pub max_stream_clients: usize,
    /// How far back from a device's newest `seq` `/health` searches for gaps.
    pub gap_window: u64,
    /// Most gaps `/health` reports.
    pub max_gaps: u32,
    /// Bound on each store call (`504` past it; `/readyz` fails past it).
    pub store_timeout: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            api_token: None,
            stream_poll: Duration::from_secs(1),
            stream_window: 200,
            stream_keep_alive: Duration::from_secs(15),
            max_stream_clients: 256,
            gap_window: 10_000,
            max_gaps: 100,
            store_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for AlertsConfig {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertsConfig")
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("stream_poll", &self.stream_poll)
            .field("stream_window", &self.stream_window)
            .field("stream_keep_alive", &self.stream_keep_alive)
            .field("max_stream_clients", &self.max_stream_clients)
            .field("gap_window", &self.gap_window)
            .field("max_gaps", &self.max_gaps)
            .field("store_timeout", &self.store_timeout)
            .finish()
    }
}

impl AlertsConfig {
    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.api_token.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ConfigError::new("api_token", "must not be empty"));
        }
        if self.stream_poll < Duration::from_millis(10) {
            return Err(ConfigError::new("stream_poll", "must be at least 10 ms"));
        }
        if !(1..=1000).contains(&self.stream_window) {
            return Err(ConfigError::new("stream_window", "must be 1..=1000"));
        }
        let positive = [
            ("stream_keep_alive", self.stream_keep_alive.as_nanos()),
            ("store_timeout", self.store_timeout.as_nanos()),
            ("max_stream_clients", self.max_stream_clients as u128),
            ("gap_window", self.gap_window as u128),
            ("max_gaps", self.max_gaps as u128),
        ];
        for (name, n) in positive {
            if n == 0 {
                return Err(ConfigError::new(name, "must be positive"));
            }
        }
        Ok(())
    }

    /// Reads an operator token file (`--api-token-file`): its content with
    /// surrounding whitespace trimmed. Errors never contain the token.
    pub fn read_token_file(path: &Path) -> Result<String, String> {
        let raw = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        let token = raw.trim();
        if token.is_empty() {
            return Err(format!("token file {} is empty", path.display()));
        }
        Ok(token.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        AlertsConfig::default().validate().unwrap();
        let bad = [
            AlertsConfig {
                api_token: Some(" ".into()),
                ..AlertsConfig::default()
            },
            AlertsConfig {
                stream_window: 0,
                ..AlertsConfig::default()
            },
            AlertsConfig {
                stream_poll: Duration::ZERO,
                ..AlertsConfig::default()
            },
            AlertsConfig {
                max_gaps: 0,
                ..AlertsConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn token_file_is_trimmed_and_debug_hides_the_token() {
        let path = std::env::temp_dir().join(format!("ha-alerts-token-{}", std::process::id()));
        std::fs::write(&path, "  s3cret-token\n").unwrap();
        assert_eq!(
            AlertsConfig::read_token_file(&path).unwrap(),
            "s3cret-token"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(AlertsConfig::read_token_file(&path).is_err());
        std::fs::remove_file(&path).unwrap();
        let c = AlertsConfig {
            api_token: Some("s3cret-token".into()),
            ..AlertsConfig::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
