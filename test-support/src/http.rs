//! One HTTP/1.1 request per connection, and Prometheus samples: enough to
//! probe a binary without an HTTP client crate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `method path` with `headers` and `body`; returns the status and body.
/// Status 0: no answer (refused, reset, timed out) — the callers' probes
/// treat that as "not yet" or assert on it.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body.as_bytes()))
        .is_err()
    {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// The sum of every sample of metric `name` on `addr`'s `/metrics`; `None`
/// when it is not exposed or the scrape failed.
pub fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    metric_where(addr, name, |_| true)
}

/// The sum of the samples of metric `name` whose label set (`{...}`, or
/// empty) passes `keep`, from one scrape.
pub fn metric_where(addr: SocketAddr, name: &str, keep: impl Fn(&str) -> bool) -> Option<f64> {
    let (status, body) = request(addr, "GET", "/metrics", &[], "");
    if status != 200 {
        return None;
    }
    samples(&body, name, keep)
}

/// [`metric_where`] over a scraped text.
pub fn samples(text: &str, name: &str, keep: impl Fn(&str) -> bool) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name{labels} v` or `name v`, not `name_more ...`.
        let (labels, value) = if rest.starts_with('{') {
            match rest.rsplit_once(' ') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if let Some(v) = rest.strip_prefix(' ') {
            ("", v)
        } else {
            continue;
        };
        let total = found.get_or_insert(0.0);
        if keep(labels)
            && let Ok(v) = value.trim().parse::<f64>()
        {
            *total += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_sum_label_sets_and_skip_longer_names() {
        let text = "# HELP x\nreqs{status=\"200\"} 3\nreqs{status=\"500\"} 2\nreqs_total 9\n";
        assert_eq!(samples(text, "reqs", |_| true), Some(5.0));
        assert_eq!(samples(text, "reqs", |l| l.contains("500")), Some(2.0));
        assert_eq!(samples(text, "reqs_total", |_| true), Some(9.0));
        assert_eq!(samples(text, "absent", |_| true), None);
    }
}
