//! `ha-detect`: the anomaly detector over a CSV of readings.
//!
//! `cargo run --release --bin ha-detect -- --help`

use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::process::ExitCode;

use reference_apps::detect::{self, Command, DetectError};

fn main() -> ExitCode {
    let command = detect::parse(std::env::args_os().skip(1), |name| std::env::var(name).ok());
    let result = command.and_then(|command| match command {
        Command::Help => {
            print!("{}", detect::HELP);
            Ok(())
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
            }
            .map(|_| ())
        }
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
