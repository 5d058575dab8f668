//! `ha-detect` options from flags and `HA_DETECT_*` environment variables.
//!
//! Parsed by hand: eight flags do not justify an argument-parser
//! dependency in a crate every reference app shares.

use std::ffi::OsString;
use std::path::PathBuf;

use ha_analysis::{DetectorConfig, DetectorKind};

use super::{DetectError, DetectOptions, Emit};

/// The `--help` text.
pub const HELP: &str = "\
ha-detect: run the ha-pipeline anomaly detector over a CSV of readings.

USAGE:
    ha-detect [OPTIONS] [FILE]

Reads FILE (or stdin when FILE is absent or `-`): a CSV with the header
`device_id,seq,ts,metric,value` and rows in arrival order. Each series
(device_id, metric) is fed in seq order; a row whose seq is not newer than
the newest fed to its series is not fed (no verdict). Writes CSV to stdout:
`device_id,seq,ts,metric,value,score,anomaly_score,anomaly`, the input
fields echoed as read, `score` empty when there is no verdict.

OPTIONS (each also read from the environment variable shown; a flag wins):
    --window <N>          Values per series window, recent ones included
                          [env HA_DETECT_WINDOW] [default: 200]
    --recent <N>          Newest values left out of the baseline
                          [env HA_DETECT_RECENT] [default: 3]
    --min-history <N>     Fewest baseline values needed for a verdict
                          [env HA_DETECT_MIN_HISTORY] [default: 30]
    --false-alarm <P>     Two-sided false-alarm probability per reading, in
                          (0, 1); threshold z = Φ⁻¹(1 − P/2)
                          [env HA_DETECT_FALSE_ALARM] [default: 0.0001]
    --z <Z>               Threshold on |score| given directly (> 0); not
                          together with --false-alarm [env HA_DETECT_Z]
    --detector <KIND>     zscore (mean / standard deviation) or mad
                          (median / 1.4826·MAD) [env HA_DETECT_DETECTOR]
                          [default: zscore]
    --emit <WHAT>         anomalies (one row per anomaly) or all (one row
                          per input row) [env HA_DETECT_EMIT]
                          [default: anomalies]
    -h, --help            Print this help

A threshold flag (--z or --false-alarm) makes both threshold variables of
the environment ignored.

EXIT STATUS:
    0   success
    64  bad flags or configuration
    65  malformed input (the message names the line and the problem)
    74  input or output error
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print [`HELP`] and exit 0.
    Help,
    /// Run over the input.
    Run(DetectOptions),
}

/// Parses flags (`--flag value` or `--flag=value`) over `env` values.
/// `env` is a lookup such as `|name| std::env::var(name).ok()`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, DetectError> {
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut input: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|arg| usage(format!("argument {arg:?} is not valid UTF-8")))?;
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if let Some(flag) = arg.strip_prefix("--") {
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => {
                    let value = args
                        .next()
                        .and_then(|v| v.into_string().ok())
                        .ok_or_else(|| usage(format!("--{flag} needs a value")))?;
                    (flag.to_string(), value)
                }
            };
            if !FLAGS.contains(&name.as_str()) {
                return Err(usage(format!("unknown flag --{name}")));
            }
            flags.push((name, value));
        } else if arg.starts_with('-') && arg != "-" {
            return Err(usage(format!("unknown flag {arg}")));
        } else if input.replace(PathBuf::from(&arg)).is_some() {
            return Err(usage("more than one input file given".to_string()));
        }
    }
    let threshold_flag = flags.iter().any(|(n, _)| n == "z" || n == "false-alarm");
    let lookup = |name: &str| -> Option<(String, String)> {
        if let Some((_, value)) = flags.iter().rev().find(|(n, _)| n == name) {
            return Some((format!("--{name}"), value.clone()));
        }
        if threshold_flag && (name == "z" || name == "false-alarm") {
            return None;
        }
        let var = env_name(name);
        env(&var).map(|value| (var, value))
    };

    let defaults = DetectorConfig::default();
    let config = DetectorConfig {
        window: number(lookup("window"))?.unwrap_or(defaults.window),
        recent: number(lookup("recent"))?.unwrap_or(defaults.recent),
        min_history: number(lookup("min-history"))?.unwrap_or(defaults.min_history),
        false_alarm: number(lookup("false-alarm"))?,
        z: number(lookup("z"))?,
        kind: match lookup("detector") {
            Some((source, value)) => value
                .parse::<DetectorKind>()
                .map_err(|_| usage(format!("{source} must be zscore or mad, got `{value}`")))?,
            None => DetectorKind::ZScore,
        },
    };
    config.validate().map_err(DetectError::Config)?;
    let emit = match lookup("emit") {
        Some((_, value)) if value == "all" => Emit::All,
        Some((_, value)) if value == "anomalies" => Emit::Anomalies,
        Some((source, value)) => {
            return Err(usage(format!(
                "{source} must be anomalies or all, got `{value}`"
            )));
        }
        None => Emit::Anomalies,
    };
    let input = input.filter(|path| path.as_os_str() != "-");
    Ok(Command::Run(DetectOptions {
        config,
        emit,
        input,
    }))
}

/// Every flag taking a value.
const FLAGS: [&str; 7] = [
    "window",
    "recent",
    "min-history",
    "false-alarm",
    "z",
    "detector",
    "emit",
];

/// `--min-history` → `HA_DETECT_MIN_HISTORY`.
fn env_name(flag: &str) -> String {
    format!("HA_DETECT_{}", flag.replace('-', "_").to_uppercase())
}

fn number<T: std::str::FromStr>(found: Option<(String, String)>) -> Result<Option<T>, DetectError> {
    found
        .map(|(source, value)| {
            value
                .trim()
                .parse::<T>()
                .map_err(|_| usage(format!("{source}: `{value}` is not a valid number")))
        })
        .transpose()
}

fn usage(message: String) -> DetectError {
    DetectError::Usage(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, DetectError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(args.iter().map(OsString::from), move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn options(args: &[&str], env: &[(&str, &str)]) -> DetectOptions {
        match parse_with(args, env).unwrap() {
            Command::Run(options) => options,
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn golden_flags() {
        let o = options(
            &[
                "--window",
                "8",
                "--recent=2",
                "--min-history",
                "4",
                "--false-alarm",
                "0.01",
                "--emit",
                "all",
                "in.csv",
            ],
            &[],
        );
        assert_eq!(o.config.window, 8);
        assert_eq!(o.config.recent, 2);
        assert_eq!(o.config.min_history, 4);
        assert_eq!(o.config.false_alarm, Some(0.01));
        assert_eq!(o.emit, Emit::All);
        assert_eq!(o.input, Some(PathBuf::from("in.csv")));
    }

    #[test]
    fn defaults_and_stdin() {
        let o = options(&["-"], &[]);
        assert_eq!(o.config, DetectorConfig::default());
        assert_eq!(o.emit, Emit::Anomalies);
        assert_eq!(o.input, None);
    }

    #[test]
    fn environment_under_flags() {
        let env = [
            ("HA_DETECT_WINDOW", "50"),
            ("HA_DETECT_DETECTOR", "mad"),
            ("HA_DETECT_Z", "3"),
        ];
        let o = options(&["--window", "60"], &env);
        assert_eq!(o.config.window, 60);
        assert_eq!(o.config.kind, DetectorKind::Mad);
        assert_eq!(o.config.z, Some(3.0));
        // A threshold flag hides both threshold variables.
        let o = options(&["--false-alarm", "0.01"], &env);
        assert_eq!((o.config.false_alarm, o.config.z), (Some(0.01), None));
    }

    #[test]
    fn help() {
        assert_eq!(
            parse_with(&["--window", "8", "--help"], &[]).unwrap(),
            Command::Help
        );
        for flag in FLAGS {
            assert!(
                HELP.contains(&format!("--{flag} ")),
                "--{flag} undocumented"
            );
            assert!(HELP.contains(&env_name(flag)), "{flag}: env undocumented");
        }
    }

    #[test]
    fn rejects_bad_input_with_usage_or_config_errors() {
        let bad: [&[&str]; 9] = [
            &["--window"],
            &["--window", "x"],
            &["--windows", "8"],
            &["-w", "8"],
            &["a.csv", "b.csv"],
            &["--detector", "median"],
            &["--emit", "some"],
            &["--z", "3", "--false-alarm", "0.01"],
            &["--window", "3", "--recent", "2"],
        ];
        for args in bad {
            let err = parse_with(args, &[]).unwrap_err();
            assert_eq!(err.exit_code(), 64, "{args:?}: {err}");
        }
    }
}
