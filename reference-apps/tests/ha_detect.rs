//! The `ha-detect` binary end to end: the golden example of issue 3,
//! malformed input, flags.
//!
//! `cargo test -p reference-apps --test ha_detect`
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

const GOLDEN_INPUT: &str = include_str!("data/golden_input.csv");
const GOLDEN_EXPECTED: &str = include_str!("data/golden_expected.csv");

fn ha_detect(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ha-detect"))
        .args(args)
        .env_remove("HA_DETECT_WINDOW")
        .env_remove("HA_WINDOW")
        .env_remove("HA_DETECTOR")
        .env_remove("HA_EMIT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_string();
    let writer = std::thread::spawn(move || {
        // The binary may stop reading early (malformed input): ignore EPIPE.
        let _ = input.write_all(stdin.as_bytes());
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Compares CSV outputs field by field; numbers with relative tolerance.
fn assert_csv_matches(got: &str, want: &str) {
    let got: Vec<&str> = got.lines().collect();
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(got.len(), want.len(), "row count\n{}", got.join("\n"));
    assert_eq!(got[0], want[0], "header");
    for (line, (g, w)) in got.iter().zip(&want).enumerate().skip(1) {
        let g: Vec<&str> = g.split(',').collect();
        let w: Vec<&str> = w.split(',').collect();
        assert!(g.len() >= w.len(), "line {}: {g:?}", line + 1);
        // device_id, seq, ts, metric, value are echoed; anomaly is exact.
        for column in [0, 1, 2, 3, 4, 7] {
            assert_eq!(g[column], w[column], "line {} column {column}", line + 1);
        }
        for column in [5, 6] {
            match (g[column], w[column]) {
                ("", "") => {}
                (g_text, w_text) => {
                    let (a, b): (f64, f64) = (g_text.parse().unwrap(), w_text.parse().unwrap());
                    let error = (a - b).abs() / b.abs().max(f64::MIN_POSITIVE);
                    assert!(
                        error <= 1e-6 || a == b,
                        "line {} column {column}: {g_text} vs {w_text}",
                        line + 1
                    );
                }
            }
        }
    }
}

const GOLDEN_FLAGS: [&str; 10] = [
    "--window",
    "8",
    "--recent",
    "2",
    "--min-history",
    "4",
    "--false-alarm",
    "0.01",
    "--emit",
    "all",
];

#[test]
fn golden_example_from_stdin() {
    let output = ha_detect(&GOLDEN_FLAGS, GOLDEN_INPUT);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_csv_matches(&stdout(&output), GOLDEN_EXPECTED);
}

#[test]
fn golden_example_from_a_file_emitting_anomalies_only() {
    let path = std::env::temp_dir().join(format!("ha-detect-golden-{}.csv", std::process::id()));
    std::fs::write(&path, GOLDEN_INPUT).unwrap();
    let path_text = path.to_str().unwrap();
    let output = ha_detect(&[&GOLDEN_FLAGS[..8], &[path_text]].concat(), "");
    std::fs::remove_file(&path).unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let anomalies: String = GOLDEN_EXPECTED
        .lines()
        .enumerate()
        .filter(|(i, line)| *i == 0 || line.ends_with(",true"))
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    assert_eq!(anomalies.lines().count(), 3);
    assert_csv_matches(&stdout(&output), &anomalies);
}

#[test]
fn malformed_input_names_the_line_and_exits_65() {
    let header = "device_id,seq,ts,metric,value\n";
    let good = "dev-a,1,t,temp,1.0\n";
    let cases = [
        (
            format!("{header}{good}dev-a,2,t,temp\n"),
            "line 3: expected 5 columns, got 4",
        ),
        (
            format!("{header}{good}dev-a,2,t,temp,1,extra\n"),
            "line 3: expected 5 columns, got 6",
        ),
        (
            format!("{header}dev-a,x,t,temp,1\n"),
            "line 2: seq `x` is not an unsigned integer",
        ),
        (
            format!("{header}dev-a,-3,t,temp,1\n"),
            "line 2: seq `-3` is not an unsigned integer",
        ),
        (
            format!("{header}{good}{good}dev-a,3,t,temp,abc\n"),
            "line 4: value `abc` is not a number",
        ),
        (
            format!("{header}dev-a,1,t,temp,NaN\n"),
            "line 2: value `NaN` is not finite",
        ),
        (
            format!("{header}dev-a,1,t,temp,inf\n"),
            "line 2: value `inf` is not finite",
        ),
        (
            format!("{header}{good}\n"),
            "line 3: expected 5 columns, got 1",
        ),
        (
            "device_id,seq,value\n".to_string(),
            "line 1: header must be",
        ),
        (String::new(), "line 1: empty input"),
    ];
    for (input, message) in cases {
        let output = ha_detect(&[], &input);
        assert_eq!(output.status.code(), Some(65), "{input:?}");
        let err = stderr(&output);
        assert!(
            err.starts_with(&format!("ha-detect: {message}")),
            "{input:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn non_utf8_input_names_the_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ha-detect"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"device_id,seq,ts,metric,value\nd,1,t,m,\xff\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(65));
    assert!(stderr(&output).starts_with("ha-detect: line 2: not valid UTF-8"));
}

#[test]
fn bad_flags_exit_64_and_help_documents_every_flag() {
    for args in [
        &["--window", "1"][..],
        &["--z", "3", "--false-alarm", "0.1"],
        &["--bogus"],
    ] {
        let output = ha_detect(args, "");
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        assert!(stderr(&output).contains("see --help"));
    }
    let output = ha_detect(&["--help"], "");
    assert!(output.status.success());
    let help = stdout(&output);
    for flag in [
        "--window",
        "--recent",
        "--false-alarm",
        "--z",
        "--min-history",
        "--detector",
        "--emit",
    ] {
        assert!(help.contains(flag), "{flag}");
    }
}

#[test]
fn missing_file_exits_74() {
    let output = ha_detect(&["/nonexistent/readings.csv"], "");
    assert_eq!(output.status.code(), Some(74));
    assert!(stderr(&output).starts_with("ha-detect: opening the input file"));
}

#[test]
fn mad_detector_flags_the_masked_dip_more_strongly() {
    let output = ha_detect(
        &[&GOLDEN_FLAGS[..8], &["--detector", "mad"]].concat(),
        GOLDEN_INPUT,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(
        out.lines()
            .any(|l| l.starts_with("dev-a,9,") && l.ends_with(",true")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("dev-a,14,") && l.ends_with(",true")),
        "{out}"
    );
}

#[test]
fn detectors_lists_one_name_per_line() {
    let output = ha_detect(&["--detectors"], "");
    assert!(output.status.success());
    let names: Vec<String> = stdout(&output).lines().map(str::to_string).collect();
    assert!(names.contains(&"zscore".to_string()) && names.contains(&"mad".to_string()));
    for name in &names {
        let output = ha_detect(&["--detector", name, "--emit", "all"], GOLDEN_INPUT);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        assert_eq!(
            stdout(&output).lines().count(),
            GOLDEN_INPUT.lines().count()
        );
    }
}

#[test]
fn ha_names_and_deprecated_ha_detect_names() {
    let path = std::env::temp_dir().join(format!("ha-detect-env-{}.csv", std::process::id()));
    std::fs::write(&path, GOLDEN_INPUT).unwrap();
    let run = |var: &str| {
        Command::new(env!("CARGO_BIN_EXE_ha-detect"))
            .args(&GOLDEN_FLAGS[2..8])
            .arg(&path)
            .env_remove("HA_WINDOW")
            .env_remove("HA_DETECT_WINDOW")
            .env(var, "8")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let new = run("HA_WINDOW");
    assert!(new.status.success(), "{}", stderr(&new));
    assert!(stderr(&new).is_empty(), "{}", stderr(&new));
    let old = run("HA_DETECT_WINDOW");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(old.stdout, new.stdout, "the same window either way");
    assert!(old.status.success(), "{}", stderr(&old));
    assert!(
        stderr(&old).contains("warning: HA_DETECT_WINDOW is deprecated"),
        "{}",
        stderr(&old)
    );
}

/// `ha-detect eval` on two NAB series (tests/data/nab_fixture, MIT): every
/// detector at its defaults. The figures are this implementation's,
/// recorded, so that a change to a detector or to the scoring shows here.
#[test]
fn eval_scores_every_detector_on_the_nab_fixture() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nab_fixture");
    let detections = std::env::temp_dir().join(format!("ha-eval-{}.csv", std::process::id()));
    let output = ha_detect(
        &["eval", dir, "--detections", detections.to_str().unwrap()],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    for row in [
        "| nab_fixture | 2 | kestrel | 48.8 | 5 | 4 | 22 | 0.154 | 0.800 | 0.258 |",
        "| nab_fixture | 2 | zscore | 64.2 | 5 | 4 | 11 | 0.267 | 0.800 | 0.400 |",
        "| nab_fixture | 2 | mad | -78.2 | 5 | 3 | 123 | 0.024 | 0.600 | 0.046 |",
    ] {
        assert!(table.contains(row), "{row}\n{table}");
    }
    let written = std::fs::read_to_string(&detections).unwrap();
    std::fs::remove_file(&detections).unwrap();
    // One line per flagged reading (probation included) plus the header.
    let kestrel = written.lines().filter(|l| l.contains(",kestrel,")).count();
    assert!(kestrel >= 4 + 22, "{kestrel}");
    assert!(written.starts_with("corpus,series,detector,index\n"));

    let output = ha_detect(&["eval", "/nonexistent-corpus"], "");
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("/nonexistent-corpus/labels.json"));
}
