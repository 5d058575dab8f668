//! `ha-detect`: the detector of `ha-analysis` run offline over a CSV of
//! readings, so users can tune thresholds on their historical data.
//!
//! Streams: one line in, at most one line out, state only per series
//! (`SeriesSet` with the configured window), so a million rows need memory
//! proportional to the number of series, not rows.

mod args;
mod csv;
pub mod eval;

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use ha_analysis::{AnalysisError, DetectorConfig, SeriesSet, Verdict};

pub use args::{Command, parse};
pub use csv::{INPUT_HEADER, OUTPUT_HEADER, Row, check_header, parse_row, trim_line_end};

/// Which rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Emit {
    /// One row per anomaly.
    #[default]
    Anomalies,
    /// One row per input row, in input order.
    All,
}

/// A validated `ha-detect` run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DetectOptions {
    /// The detector config (validated by [`parse`]; [`run`] validates too).
    pub config: DetectorConfig,
    /// Which rows to write.
    pub emit: Emit,
    /// Input file; `None` is stdin.
    pub input: Option<PathBuf>,
}

/// What a run saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Data rows read.
    pub rows: u64,
    /// Rows not fed (seq not newer than the newest of their series).
    pub not_fed: u64,
    /// Rows flagged as anomalies.
    pub anomalies: u64,
    /// Distinct series seen.
    pub series: usize,
}

/// Why `ha-detect` stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    /// Bad command line.
    #[error("{0} (see --help)")]
    Usage(String),
    /// Flags parsed but the detector config is invalid.
    #[error("{0} (see --help)")]
    Config(#[source] AnalysisError),
    /// A malformed input line; `line` counts from 1 (the header).
    #[error("line {line}: {problem}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// Reading input or writing output failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl DetectError {
    /// The process exit status for this error (sysexits: 64 usage, 65
    /// data, 74 I/O).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Config(_) => 64,
            Self::Malformed { .. } => 65,
            Self::Io { .. } => 74,
        }
    }

    /// True when the output was closed by the reader (e.g. `| head`), which
    /// is not worth an error message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Reads CSV from `input`, writes verdict CSV to `output`.
///
/// Stops at the first malformed line with [`DetectError::Malformed`]; rows
/// before it have been written. The output is flushed on success.
pub fn run(
    options: &DetectOptions,
    mut input: impl BufRead,
    mut output: impl Write,
) -> Result<Summary, DetectError> {
    let mut series: SeriesSet<(String, String)> =
        SeriesSet::new(&options.config).map_err(DetectError::Config)?;
    // Invalid UTF-8 is bad data on a known line, not an I/O failure.
    let read_error = |line: u64| {
        move |source: io::Error| {
            if source.kind() == io::ErrorKind::InvalidData {
                malformed(line, "not valid UTF-8")
            } else {
                DetectError::Io {
                    context: "reading input",
                    source,
                }
            }
        }
    };
    let write_error = |source| DetectError::Io {
        context: "writing output",
        source,
    };

    let mut line = String::new();
    let mut line_number: u64 = 1;
    if input.read_line(&mut line).map_err(read_error(1))? == 0 {
        return Err(malformed(1, "empty input: the header line is missing"));
    }
    check_header(&line).map_err(|problem| malformed(1, problem))?;
    writeln!(output, "{OUTPUT_HEADER}").map_err(write_error)?;

    let mut summary = Summary::default();
    loop {
        line.clear();
        line_number += 1;
        if input
            .read_line(&mut line)
            .map_err(read_error(line_number))?
            == 0
        {
            break;
        }
        let row = parse_row(trim_line_end(&line)).map_err(|p| malformed(line_number, p))?;
        let key = (row.device_id.to_string(), row.metric.to_string());
        let fed = series
            .feed(key, row.seq, row.value)
            .map_err(|e| malformed(line_number, e.to_string()))?;
        summary.rows += 1;
        let verdict = match fed {
            Some(verdict) => verdict,
            None => {
                summary.not_fed += 1;
                Verdict::NONE
            }
        };
        summary.anomalies += u64::from(verdict.is_anomaly);
        if verdict.is_anomaly || options.emit == Emit::All {
            write_row(&mut output, &row, &verdict).map_err(write_error)?;
        }
    }
    output.flush().map_err(write_error)?;
    summary.series = series.len();
    Ok(summary)
}

/// One output row. `f64`'s `Display` prints the shortest text that reads
/// back to the same number: full precision (≥ 9 significant digits) except
/// for values that are exactly short, such as `0` and `1`.
fn write_row(output: &mut impl Write, row: &Row<'_>, verdict: &Verdict) -> io::Result<()> {
    write!(
        output,
        "{},{},{},{},{},",
        row.device_id, row.seq_text, row.ts, row.metric, row.value_text
    )?;
    if let Some(score) = verdict.score {
        write!(output, "{score}")?;
    }
    writeln!(
        output,
        ",{},{}",
        verdict.anomaly_score(),
        verdict.is_anomaly
    )
}

fn malformed(line: u64, problem: impl Into<String>) -> DetectError {
    DetectError::Malformed {
        line,
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_all(input: &str) -> Result<String, DetectError> {
        let options = DetectOptions {
            config: DetectorConfig {
                window: 8,
                recent: 2,
                min_history: 4,
                false_alarm: Some(0.01),
                ..DetectorConfig::default()
            },
            emit: Emit::All,
            input: None,
        };
        let mut out = Vec::new();
        run(&options, input.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn echoes_fields_and_marks_not_fed_rows() {
        let out = run_all("device_id,seq,ts,metric,value\r\nd,7,t,m,1.50\r\nd,7,t,m,2\n").unwrap();
        assert_eq!(
            out,
            format!("{OUTPUT_HEADER}\nd,7,t,m,1.50,,0,false\nd,7,t,m,2,,0,false\n")
        );
    }

    #[test]
    fn malformed_lines_are_numbered() {
        let err = run_all("device_id,seq,ts,metric,value\nd,1,t,m,1\nd,2,t,m\n").unwrap_err();
        assert_eq!(err.to_string(), "line 3: expected 5 columns, got 4");
        assert_eq!(err.exit_code(), 65);
        let err = run_all("").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: empty input: the header line is missing"
        );
        let err = run_all("a,b\n").unwrap_err();
        assert!(
            err.to_string().starts_with("line 1: header must be"),
            "{err}"
        );
    }

    #[test]
    fn header_only_is_fine() {
        assert_eq!(
            run_all("device_id,seq,ts,metric,value\n").unwrap(),
            format!("{OUTPUT_HEADER}\n")
        );
    }
}
