//! The detector flags shared by `analyzer` and `ha-detect`: one block, the
//! same `HA_*` names in both.
//!
//! `ha-detect` read these as `HA_DETECT_*` up to 0.1.0; those names are
//! still honoured for one release (with a warning) when the `HA_*` name and
//! the flag are both absent — see [`DetectorArgs::apply_deprecated_env`].

use clap::ArgMatches;
use clap::parser::ValueSource;
use ha_analysis::{DetectorConfig, DetectorKind};

/// Detector settings, as flags and `HA_*` environment variables (a flag
/// wins over its variable).
#[derive(Clone, Debug, clap::Args)]
pub struct DetectorArgs {
    /// Values per series window, recent ones included.
    #[arg(long, env = "HA_WINDOW", default_value_t = 200)]
    pub window: usize,
    /// Newest values left out of the baseline.
    #[arg(long, env = "HA_RECENT", default_value_t = 3)]
    pub recent: usize,
    /// Fewest baseline values needed for a verdict.
    #[arg(long, env = "HA_MIN_HISTORY", default_value_t = 30)]
    pub min_history: usize,
    /// Two-sided false-alarm probability per reading, in (0, 1); threshold
    /// z = Φ⁻¹(1 − P/2) [default: 0.0001]. A flag for either threshold
    /// makes both threshold variables ignored.
    #[arg(long, env = "HA_FALSE_ALARM")]
    pub false_alarm: Option<f64>,
    /// Threshold on |score| given directly (> 0); not with --false-alarm.
    #[arg(long, env = "HA_Z")]
    pub z: Option<f64>,
    /// Detector name (`ha-detect --detectors` lists them, recommended first).
    #[arg(long, env = "HA_DETECTOR", default_value = "zscore", value_parser = parse_kind)]
    pub detector: DetectorKind,
}

/// The field ids of [`DetectorArgs`] with their deprecated `ha-detect`
/// variable names.
pub const DEPRECATED_ENV: [(&str, &str); 6] = [
    ("window", "HA_DETECT_WINDOW"),
    ("recent", "HA_DETECT_RECENT"),
    ("min_history", "HA_DETECT_MIN_HISTORY"),
    ("false_alarm", "HA_DETECT_FALSE_ALARM"),
    ("z", "HA_DETECT_Z"),
    ("detector", "HA_DETECT_DETECTOR"),
];

fn parse_kind(text: &str) -> Result<DetectorKind, String> {
    text.parse::<DetectorKind>().map_err(|e| e.to_string())
}

impl DetectorArgs {
    /// The detector config; the caller validates it (every `ha-analysis`
    /// constructor does).
    pub fn config(&self) -> DetectorConfig {
        DetectorConfig {
            window: self.window,
            recent: self.recent,
            min_history: self.min_history,
            false_alarm: self.false_alarm,
            z: self.z,
            kind: self.detector,
        }
    }

    /// Applies what clap cannot express: a threshold flag hides the other
    /// threshold's variable, and the deprecated `HA_DETECT_*` variables
    /// (looked up with `env`) fill settings given neither as flag nor as
    /// `HA_*` variable. Returns one warning per deprecated variable used;
    /// a bad value in one is an error naming it.
    pub fn apply_deprecated_env(
        &mut self,
        matches: &ArgMatches,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, String> {
        let source = |id: &str| matches.value_source(id);
        let from_flag = |id: &str| source(id) == Some(ValueSource::CommandLine);
        let threshold_flag = from_flag("z") || from_flag("false_alarm");
        if threshold_flag {
            if !from_flag("z") {
                self.z = None;
            }
            if !from_flag("false_alarm") {
                self.false_alarm = None;
            }
        }
        let mut warnings = Vec::new();
        for (id, old) in DEPRECATED_ENV {
            let unset = matches!(source(id), None | Some(ValueSource::DefaultValue));
            let hidden = threshold_flag && (id == "z" || id == "false_alarm");
            let Some(value) = env(old).filter(|_| unset && !hidden) else {
                continue;
            };
            let bad = |e: String| format!("{old}: `{value}`: {e}");
            let number = |v: &str| v.trim().parse::<f64>().map_err(|e| bad(e.to_string()));
            let count = |v: &str| v.trim().parse::<usize>().map_err(|e| bad(e.to_string()));
            match id {
                "window" => self.window = count(&value)?,
                "recent" => self.recent = count(&value)?,
                "min_history" => self.min_history = count(&value)?,
                "false_alarm" => self.false_alarm = Some(number(&value)?),
                "z" => self.z = Some(number(&value)?),
                _ => self.detector = parse_kind(&value).map_err(bad)?,
            }
            let new = format!("HA_{}", &old["HA_DETECT_".len()..]);
            warnings.push(format!(
                "{old} is deprecated and will be removed in the next release; use {new}"
            ));
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        detector: DetectorArgs,
    }

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<(DetectorArgs, Vec<String>), String> {
        let argv = std::iter::once("test").chain(args.iter().copied());
        let matches = Cli::command()
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let warnings = cli.detector.apply_deprecated_env(&matches, lookup)?;
        Ok((cli.detector, warnings))
    }

    #[test]
    fn defaults_are_the_library_defaults() {
        let (args, warnings) = parse(&[], &[]).unwrap();
        assert_eq!(args.config(), DetectorConfig::default());
        assert!(warnings.is_empty());
    }

    #[test]
    fn deprecated_names_fill_unset_settings_with_a_warning() {
        let env = [
            ("HA_DETECT_WINDOW", "50"),
            ("HA_DETECT_DETECTOR", "mad"),
            ("HA_DETECT_Z", "3"),
        ];
        let (args, warnings) = parse(&["--window", "60"], &env).unwrap();
        assert_eq!(args.window, 60, "a flag wins");
        assert_eq!(args.detector, DetectorKind::Mad);
        assert_eq!(args.z, Some(3.0));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("HA_DETECT_DETECTOR is deprecated")
                    && w.ends_with("use HA_DETECTOR")),
            "{warnings:?}"
        );
        // A threshold flag hides both threshold variables.
        let (args, _) = parse(&["--false-alarm", "0.01"], &env).unwrap();
        assert_eq!((args.false_alarm, args.z), (Some(0.01), None));
    }

    #[test]
    fn bad_deprecated_value_is_named() {
        let err = parse(&[], &[("HA_DETECT_RECENT", "x")]).unwrap_err();
        assert!(err.starts_with("HA_DETECT_RECENT: `x`"), "{err}");
        let err = parse(&[], &[("HA_DETECT_DETECTOR", "median")]).unwrap_err();
        assert!(err.contains("HA_DETECT_DETECTOR"), "{err}");
    }

    #[test]
    fn flags_parse_and_bad_names_are_rejected() {
        let (args, _) = parse(
            &["--detector", "mad", "--z", "4", "--min-history", "9"],
            &[],
        )
        .unwrap();
        assert_eq!(
            (args.detector, args.z, args.min_history),
            (DetectorKind::Mad, Some(4.0), 9)
        );
        assert!(parse(&["--detector", "median"], &[]).is_err());
        assert!(parse(&["--window", "x"], &[]).is_err());
    }
}
