//! The `ha-detect` CSV rows.
//!
//! Hand-rolled instead of the `csv` crate: the input is a fixed five-column
//! format of identifiers, integers, timestamps and numbers that never need
//! quoting, and a line-by-line parser gives the exact line number and
//! problem for every malformed row with no dependency. Quoted fields are
//! rejected as malformed rather than half-supported.

/// The required header line.
pub const INPUT_HEADER: &str = "device_id,seq,ts,metric,value";

/// The first columns of the output, in this order.
pub const OUTPUT_HEADER: &str = "device_id,seq,ts,metric,value,score,anomaly_score,anomaly";

/// One input row; text fields borrow from the line, to be echoed as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// Device id, non-empty.
    pub device_id: &'a str,
    /// `seq` as written.
    pub seq_text: &'a str,
    /// `seq` parsed.
    pub seq: u64,
    /// Timestamp, passed through uninterpreted.
    pub ts: &'a str,
    /// Metric name, non-empty.
    pub metric: &'a str,
    /// Value as written.
    pub value_text: &'a str,
    /// Value parsed; always finite.
    pub value: f64,
}

/// Strips the line terminator (`\n` or `\r\n`).
pub fn trim_line_end(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// Checks the header line (a UTF-8 byte-order mark is tolerated).
pub fn check_header(line: &str) -> Result<(), String> {
    let line = trim_line_end(line);
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    if line == INPUT_HEADER {
        Ok(())
    } else {
        Err(format!("header must be `{INPUT_HEADER}`, got `{line}`"))
    }
}

/// Parses one data line (terminator already stripped).
pub fn parse_row(line: &str) -> Result<Row<'_>, String> {
    if line.contains('"') {
        return Err("quoted fields are not supported".to_string());
    }
    let fields: Vec<&str> = line.split(',').collect();
    let [device_id, seq_text, ts, metric, value_text] = fields[..] else {
        return Err(format!("expected 5 columns, got {}", fields.len()));
    };
    if device_id.is_empty() {
        return Err("device_id is empty".to_string());
    }
    if metric.is_empty() {
        return Err("metric is empty".to_string());
    }
    let seq = seq_text
        .parse::<u64>()
        .map_err(|_| format!("seq `{seq_text}` is not an unsigned integer"))?;
    let value = value_text
        .parse::<f64>()
        .map_err(|_| format!("value `{value_text}` is not a number"))?;
    if !value.is_finite() {
        return Err(format!("value `{value_text}` is not finite"));
    }
    Ok(Row {
        device_id,
        seq_text,
        seq,
        ts,
        metric,
        value_text,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_row_and_keeps_the_text() {
        let row = parse_row("dev-a,5,2026-11-26T12:00:04Z,temp,10.10").unwrap();
        assert_eq!(row.device_id, "dev-a");
        assert_eq!(row.seq, 5);
        assert_eq!(row.value_text, "10.10");
        assert_eq!(row.value, 10.1);
    }

    #[test]
    fn names_each_problem() {
        let cases = [
            ("dev-a,5,ts,temp", "expected 5 columns, got 4"),
            ("dev-a,5,ts,temp,1,2", "expected 5 columns, got 6"),
            ("", "expected 5 columns, got 1"),
            ("dev-a,-1,ts,temp,1", "seq `-1` is not an unsigned integer"),
            ("dev-a,x,ts,temp,1", "seq `x` is not an unsigned integer"),
            ("dev-a,1,ts,temp,abc", "value `abc` is not a number"),
            ("dev-a,1,ts,temp,NaN", "value `NaN` is not finite"),
            ("dev-a,1,ts,temp,-inf", "value `-inf` is not finite"),
            ("dev-a,1,ts,temp,1e999", "value `1e999` is not finite"),
            (",1,ts,temp,1", "device_id is empty"),
            ("dev-a,1,ts,,1", "metric is empty"),
            ("\"dev,a\",1,ts,temp,1", "quoted fields are not supported"),
        ];
        for (line, problem) in cases {
            assert_eq!(parse_row(line).unwrap_err(), problem, "{line}");
        }
    }

    #[test]
    fn header() {
        check_header("device_id,seq,ts,metric,value\r\n").unwrap();
        check_header("\u{feff}device_id,seq,ts,metric,value\n").unwrap();
        assert!(check_header("device,seq,ts,metric,value").is_err());
    }
}
