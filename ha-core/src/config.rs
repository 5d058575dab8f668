//! The error every `validate()` of the SDK returns: which setting cannot
//! work and what it must be.

use std::error::Error;

/// A setting that cannot work, found before anything was started or
/// connected. Displays as `<setting> <problem>`, e.g. `max_in_flight must
/// be at least 1`; [`setting`](Self::setting) names the field.
#[derive(Debug, thiserror::Error)]
#[error("{setting} {problem}")]
pub struct ConfigError {
    setting: &'static str,
    problem: String,
    #[source]
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl ConfigError {
    /// `setting` (a field name, or several joined by `and`) breaks its rule,
    /// stated by `problem` ("must be at least 1").
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            setting,
            problem: problem.into(),
            source: None,
        }
    }

    /// Keeps the error that made the setting unusable (a file that cannot
    /// be read, a nested settings block) as the [`source`](Error::source).
    pub fn with_source(mut self, source: impl Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The setting at fault, as the configuration struct names it.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// What the setting must be, or why it cannot be used.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_setting_and_keeps_the_cause() {
        let e = ConfigError::new("max_in_flight", "must be at least 1");
        assert_eq!(e.to_string(), "max_in_flight must be at least 1");
        assert_eq!(e.setting(), "max_in_flight");
        assert!(e.source().is_none());
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = ConfigError::new("ca_file", "cannot be read: gone").with_source(io);
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("gone"));
    }
}
