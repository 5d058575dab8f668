//! A labelled corpus on disk, in the layout of the Numenta Anomaly
//! Benchmark: a directory of `timestamp,value` CSV files and a
//! `labels.json` mapping each file's path (relative to the directory) to
//! its anomaly windows, `[["start", "end"], ...]` as timestamps (both ends
//! inclusive). Timestamps are compared as text on their first 19
//! characters (`YYYY-MM-DD HH:MM:SS`, a `T` separator accepted), which
//! orders ISO-8601 times.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::score::Window;

/// One labelled series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its path relative to the corpus directory.
    pub name: String,
    /// The values, in file order.
    pub values: Vec<f64>,
    /// The labelled windows, as indices into `values`.
    pub windows: Vec<Window>,
}

/// Why a corpus could not be read; the message names the file and line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct CorpusError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

fn fail(path: &Path, problem: impl Into<String>) -> CorpusError {
    CorpusError {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The comparable part of a timestamp.
fn ts_key(ts: &str) -> String {
    ts.trim()
        .chars()
        .take(19)
        .map(|c| if c == 'T' { ' ' } else { c })
        .collect()
}

/// Reads every series listed in `labels` (default `dir/labels.json`), in
/// name order.
pub fn load(dir: &Path, labels: Option<&Path>) -> Result<Vec<Series>, CorpusError> {
    let labels_path = labels.map_or_else(|| dir.join("labels.json"), Path::to_path_buf);
    let text =
        std::fs::read_to_string(&labels_path).map_err(|e| fail(&labels_path, e.to_string()))?;
    let labels: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).map_err(|e| fail(&labels_path, e.to_string()))?;
    labels
        .into_iter()
        .map(|(name, windows)| load_series(dir, name, &windows))
        .collect()
}

fn load_series(
    dir: &Path,
    name: String,
    windows: &[(String, String)],
) -> Result<Series, CorpusError> {
    let path = dir.join(&name);
    let text = std::fs::read_to_string(&path).map_err(|e| fail(&path, e.to_string()))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == "timestamp,value" => {}
        _ => return Err(fail(&path, "line 1: header must be `timestamp,value`")),
    }
    let mut stamps = Vec::new();
    let mut values = Vec::new();
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (ts, value) = line
            .split_once(',')
            .ok_or_else(|| fail(&path, format!("line {}: expected 2 columns", index + 1)))?;
        let value: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| fail(&path, format!("line {}: bad value `{value}`", index + 1)))?;
        stamps.push(ts_key(ts));
        values.push(value);
    }
    let mut indexed = Vec::new();
    for (start, end) in windows {
        let (start, end) = (ts_key(start), ts_key(end));
        if start > end {
            return Err(fail(
                &path,
                format!("window {start} .. {end} ends before it starts"),
            ));
        }
        // A scan, not a binary search: a few files (NAB's
        // machine_temperature) step back in time once.
        let inside = |ts: &String| start <= *ts && *ts <= end;
        let first = stamps.iter().position(inside);
        let last = stamps.iter().rposition(inside);
        if let (Some(start), Some(end)) = (first, last) {
            indexed.push(Window { start, end });
        }
    }
    Ok(Series {
        name,
        values,
        windows: indexed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_map_to_indices_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("ha-eval-corpus-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(
            dir.join("a/s.csv"),
            "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,2\n2020-01-01 00:10:00,3.5\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("labels.json"),
            r#"{"a/s.csv": [["2020-01-01 00:04:00.000000", "2020-01-01T00:10:00"]]}"#,
        )
        .unwrap();
        let corpus = load(&dir, None).unwrap();
        assert_eq!(corpus[0].values, vec![1.0, 2.0, 3.5]);
        assert_eq!(corpus[0].windows, vec![Window { start: 1, end: 2 }]);
        std::fs::write(
            dir.join("a/s.csv"),
            "timestamp,value\n2020-01-01 00:00:00,x\n",
        )
        .unwrap();
        let err = load(&dir, None).unwrap_err();
        assert!(
            err.to_string().ends_with("s.csv: line 2: bad value `x`"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
