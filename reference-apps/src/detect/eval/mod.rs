//! `ha-detect eval`: every detector, at its default settings (no
//! per-corpus threshold), on labelled corpora; prints the windowed score
//! and event precision/recall/F1 per corpus and detector as a Markdown
//! table. See [`score`] for the scoring rules and [`corpus`] for the
//! layout read.

pub mod corpus;
pub mod score;

use std::io::Write;
use std::path::PathBuf;

use ha_analysis::{DetectorConfig, DetectorKind, SeriesSet};

use super::DetectError;
use corpus::Series;
use score::Tally;

/// `ha-detect eval` options.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct EvalOptions {
    /// Corpus directories (NAB layout: `labels.json` beside `timestamp,value`
    /// CSV files); each is reported under its directory name.
    #[arg(required = true)]
    pub corpora: Vec<PathBuf>,
    /// The labels file for every corpus given [default: DIR/labels.json].
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Detectors to run, comma-separated [default: all].
    #[arg(long = "detector", value_delimiter = ',', value_parser = parse_kind)]
    pub detectors: Vec<DetectorKind>,
    /// Also write every detection as CSV `corpus,series,detector,index`.
    #[arg(long)]
    pub detections: Option<PathBuf>,
}

fn parse_kind(text: &str) -> Result<DetectorKind, String> {
    text.parse::<DetectorKind>().map_err(|e| e.to_string())
}

/// One row of the result table.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    /// Corpus name (its directory name).
    pub corpus: String,
    /// Series in the corpus.
    pub series: usize,
    /// The detector.
    pub detector: DetectorKind,
    /// Its counts and score.
    pub tally: Tally,
}

/// Flags of `kind` at its defaults over one series.
pub fn detect(kind: DetectorKind, values: &[f64]) -> Result<Vec<bool>, DetectError> {
    let config = DetectorConfig {
        kind,
        ..DetectorConfig::default()
    };
    let mut set: SeriesSet<()> = SeriesSet::new(&config).map_err(DetectError::Config)?;
    let mut flags = Vec::with_capacity(values.len());
    for (seq, &value) in (0u64..).zip(values) {
        let verdict = set
            .feed((), seq, value)
            .map_err(|e| DetectError::Usage(e.to_string()))?;
        flags.push(verdict.is_some_and(|v| v.is_anomaly));
    }
    Ok(flags)
}

/// Scores the detectors on the corpora; writes the table to `output`.
pub fn run(options: &EvalOptions, mut output: impl Write) -> Result<Vec<EvalRow>, DetectError> {
    let kinds: Vec<DetectorKind> = if options.detectors.is_empty() {
        DetectorKind::ALL.to_vec()
    } else {
        options.detectors.clone()
    };
    let mut detections = match &options.detections {
        Some(path) => {
            let mut file = std::fs::File::create(path).map_err(|source| DetectError::Io {
                context: "creating the detections file",
                source,
            })?;
            writeln!(file, "corpus,series,detector,index").map_err(write_error)?;
            Some(std::io::BufWriter::new(file))
        }
        None => None,
    };
    let mut rows = Vec::new();
    for dir in &options.corpora {
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let corpus: Vec<Series> = corpus::load(dir, options.labels.as_deref())
            .map_err(|e| DetectError::Usage(format!("corpus: {e}")))?;
        for &kind in &kinds {
            let mut tally = Tally::default();
            for series in &corpus {
                let flags = detect(kind, &series.values)?;
                tally.add(&Tally::of_series(&flags, &series.windows));
                if let Some(out) = detections.as_mut() {
                    for (index, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
                        writeln!(out, "{name},{},{kind},{index}", series.name)
                            .map_err(write_error)?;
                    }
                }
            }
            rows.push(EvalRow {
                corpus: name.clone(),
                series: corpus.len(),
                detector: kind,
                tally,
            });
        }
    }
    if let Some(mut out) = detections {
        out.flush().map_err(write_error)?;
    }
    write_table(&rows, &mut output).map_err(write_error)?;
    Ok(rows)
}

fn write_error(source: std::io::Error) -> DetectError {
    DetectError::Io {
        context: "writing output",
        source,
    }
}

/// The Markdown table.
pub fn write_table(rows: &[EvalRow], output: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        output,
        "| corpus | series | detector | windowed score | windows | detected | false positives | precision | recall | F1 |"
    )?;
    writeln!(output, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let fmt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
    };
    for row in rows {
        let t = &row.tally;
        writeln!(
            output,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.corpus,
            row.series,
            row.detector,
            fmt(t.normalised(), 1),
            t.windows,
            t.detected,
            t.false_positives,
            fmt(t.precision(), 3),
            fmt(t.recall(), 3),
            fmt(t.f1(), 3),
        )?;
    }
    output.flush()
}
