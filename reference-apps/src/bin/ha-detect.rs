//! `ha-detect`: the anomaly detector over a CSV of readings, and
//! `ha-detect eval` over labelled corpora.
//!
//! `cargo run --release --bin ha-detect -- --help`

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::process::ExitCode;

use ha_analysis::DetectorKind;
use reference_apps::detect::{self, Command, DetectError};

fn main() -> ExitCode {
    let parsed = detect::parse(std::env::args_os().skip(1), |name| std::env::var(name).ok());
    let result = parsed.and_then(|(command, warnings)| {
        for warning in warnings {
            eprintln!("ha-detect: warning: {warning}");
        }
        execute(command)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is_broken_pipe() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ha-detect: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn execute(command: Command) -> Result<(), DetectError> {
    let output_error = |source| DetectError::Io {
        context: "writing output",
        source,
    };
    match command {
        Command::Print(text) => print!("{text}"),
        Command::Detectors => {
            let mut out = io::stdout().lock();
            for kind in DetectorKind::ALL {
                writeln!(out, "{kind}").map_err(output_error)?;
            }
        }
        Command::Eval(options) => {
            detect::eval::run(&options, io::stdout().lock())?;
        }
        Command::Run(options) => {
            let stdout = BufWriter::new(io::stdout().lock());
            match &options.input {
                Some(path) => {
                    let file = File::open(path).map_err(|source| DetectError::Io {
                        context: "opening the input file",
                        source,
                    })?;
                    detect::run(&options, BufReader::new(file), stdout)
                }
                None => detect::run(&options, io::stdin().lock(), stdout),
            }?;
        }
    }
    Ok(())
}
