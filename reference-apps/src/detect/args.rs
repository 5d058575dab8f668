//! `ha-detect` options: clap, with the detector flags and `HA_*` names the
//! analyzer uses ([`DetectorArgs`]). The `HA_DETECT_*` names of 0.1.0 are
//! still read for one release, with a warning.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use super::eval::EvalOptions;
use super::{DetectError, DetectOptions, Emit};
use crate::service::DetectorArgs;

const AFTER_HELP: &str = "\
Reads FILE (or stdin when FILE is absent or `-`): a CSV with the header
`device_id,seq,ts,metric,value` and rows in arrival order. Each series
(device_id, metric) is fed in seq order; a row whose seq is not newer than
the newest fed to its series is not fed (no verdict). Writes CSV to stdout:
`device_id,seq,ts,metric,value,score,anomaly_score,anomaly`, the input
fields echoed as read, `score` empty when there is no verdict.

`ha-detect eval` scores every detector on labelled corpora (see
`ha-detect eval --help` and docs/detection.md).

The HA_DETECT_* variables of 0.1.0 (HA_DETECT_WINDOW, ...) are still read,
with a warning, when neither the flag nor the HA_* variable is given; they
go away in the next release.

EXIT STATUS:
    0   success
    64  bad flags or configuration
    65  malformed input (the message names the line and the problem)
    74  input or output error";

/// `ha-detect [OPTIONS] [FILE]` or `ha-detect eval ...`.
#[derive(Debug, Parser)]
#[command(
    name = "ha-detect",
    version,
    about = "ha-detect: run the ha-pipeline anomaly detector over a CSV of readings.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    detector: DetectorArgs,
    /// anomalies (one row per anomaly) or all (one row per input row).
    #[arg(long, env = "HA_EMIT", value_enum, default_value = "anomalies")]
    emit: Emit,
    /// Print the detector names, one per line, recommended first, and exit.
    #[arg(long)]
    detectors: bool,
    /// Input CSV; absent or `-` reads stdin.
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Score every detector, at its defaults, on labelled corpora.
    Eval(EvalOptions),
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print this text (help or version) to stdout and exit 0.
    Print(String),
    /// Print the detector names, recommended first.
    Detectors,
    /// Run over the input.
    Run(DetectOptions),
    /// Evaluate detectors on labelled corpora.
    Eval(EvalOptions),
}

/// Parses the arguments (without the program name). `env` looks up the
/// deprecated `HA_DETECT_*` variables (e.g. `|n| std::env::var(n).ok()`);
/// the `HA_*` ones are read by clap from the process environment. Returns
/// the command and one warning per deprecated variable used.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Command, Vec<String>), DetectError> {
    let argv = std::iter::once(OsString::from("ha-detect")).chain(args);
    let matches = match Cli::command().try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(e) if !e.use_stderr() => return Ok((Command::Print(e.render().to_string()), vec![])),
        Err(e) => return Err(usage(e)),
    };
    let mut cli = Cli::from_arg_matches(&matches).map_err(usage)?;
    if let Some(Sub::Eval(options)) = cli.command {
        return Ok((Command::Eval(options), vec![]));
    }
    if cli.detectors {
        return Ok((Command::Detectors, vec![]));
    }
    let mut warnings = cli
        .detector
        .apply_deprecated_env(&matches, &env)
        .map_err(DetectError::Usage)?;
    if matches!(
        matches.value_source("emit"),
        None | Some(ValueSource::DefaultValue)
    ) && let Some(value) = env("HA_DETECT_EMIT")
    {
        cli.emit = match value.as_str() {
            "all" => Emit::All,
            "anomalies" => Emit::Anomalies,
            _ => {
                return Err(DetectError::Usage(format!(
                    "HA_DETECT_EMIT must be anomalies or all, got `{value}`"
                )));
            }
        };
        warnings.push(
            "HA_DETECT_EMIT is deprecated and will be removed in the next release; use HA_EMIT"
                .to_string(),
        );
    }
    let config = cli.detector.config();
    config.validate().map_err(DetectError::Config)?;
    let input = cli.file.filter(|path| path.as_os_str() != "-");
    Ok((
        Command::Run(DetectOptions {
            config,
            emit: cli.emit,
            input,
        }),
        warnings,
    ))
}

fn usage(e: clap::Error) -> DetectError {
    // clap's rendering ends with its own usage hint; keep the first line.
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    DetectError::Usage(first.trim_start_matches("error: ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_analysis::{DetectorConfig, DetectorKind};

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, DetectError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(args.iter().map(OsString::from), move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .map(|(command, _)| command)
    }

    fn options(args: &[&str], env: &[(&str, &str)]) -> DetectOptions {
        match parse_with(args, env).unwrap() {
            Command::Run(options) => options,
            other => panic!("{other:?}"),
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
    fn deprecated_environment_under_flags() {
        let env = [
            ("HA_DETECT_WINDOW", "50"),
            ("HA_DETECT_DETECTOR", "mad"),
            ("HA_DETECT_EMIT", "all"),
        ];
        let o = options(&["--window", "60"], &env);
        assert_eq!(o.config.window, 60);
        assert_eq!(o.config.kind, DetectorKind::Mad);
        assert_eq!(o.emit, Emit::All);
        let (_, warnings) = parse(std::iter::empty(), |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
    }

    #[test]
    fn help_detectors_and_eval() {
        let Command::Print(help) = parse_with(&["--window", "8", "--help"], &[]).unwrap() else {
            panic!("not help");
        };
        for flag in [
            "--window",
            "--recent",
            "--min-history",
            "--false-alarm",
            "--z",
            "--detector",
            "--emit",
            "--detectors",
        ] {
            let documented =
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"));
            assert!(documented, "{flag} undocumented");
        }
        for var in [
            "HA_WINDOW",
            "HA_RECENT",
            "HA_MIN_HISTORY",
            "HA_Z",
            "HA_EMIT",
        ] {
            assert!(help.contains(var), "{var} undocumented");
        }
        assert_eq!(
            parse_with(&["--detectors"], &[]).unwrap(),
            Command::Detectors
        );
        assert!(matches!(
            parse_with(&["eval", "corpus-dir"], &[]).unwrap(),
            Command::Eval(_)
        ));
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
