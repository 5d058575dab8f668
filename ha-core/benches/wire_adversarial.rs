//! Parser cost under hostile bodies: every adversarial body (≤ 1 MiB, the
//! body limit) against the "normal" worst legitimate body, 1,000 readings ×
//! 32 metrics, in the same run. Target: each adversarial body ≤ 2× the
//! normal body's time (limits are enforced while parsing, so the work is
//! linear in the body and stops at the first violation).
//!
//! Run with `cargo bench -p ha-core --bench wire_adversarial` (no servers).
//! After criterion's figures, a summary prints each body's median time as
//! a ratio of the normal body's, measured in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ha_core::wire::{MAX_BODY_BYTES, Timestamp, UncheckedBody};

/// Parse and validate, as ingest does; the outcome is irrelevant here.
fn parse(body: &[u8], now: Timestamp) -> bool {
    match UncheckedBody::parse(body) {
        Ok(u) => u.validate_in(now, Duration::from_secs(30 * 86_400)).is_ok(),
        Err(_) => false,
    }
}

fn reading(seq: usize, ts: &str, metrics: &str) -> String {
    format!(r#"{{"device_id":"dev-00042","seq":{seq},"ts":"{ts}","metrics":{{{metrics}}}}}"#)
}

fn wrap(readings: &[String]) -> Vec<u8> {
    format!(r#"{{"readings":[{}]}}"#, readings.join(",")).into_bytes()
}

/// Repeats `unit` (joined by `sep`) inside `prefix … suffix` until the
/// body is just under the limit.
fn fill(prefix: &str, unit: &dyn Fn(usize) -> String, sep: &str, suffix: &str) -> Vec<u8> {
    let mut s = String::from(prefix);
    let budget = MAX_BODY_BYTES - suffix.len() - 64;
    let mut i = 0;
    loop {
        let u = unit(i);
        if s.len() + u.len() + sep.len() > budget {
            break;
        }
        if i > 0 {
            s.push_str(sep);
        }
        s.push_str(&u);
        i += 1;
    }
    s.push_str(suffix);
    s.into_bytes()
}

fn bodies(now: Timestamp) -> Vec<(&'static str, Vec<u8>)> {
    let ts = now.to_string();
    let metrics32 = (0..32)
        .map(|m| format!(r#""metric_{m:02}":{}.25"#, 60 + m))
        .collect::<Vec<_>>()
        .join(",");
    let normal = wrap(
        &(0..1000)
            .map(|i| reading(i, &ts, &metrics32))
            .collect::<Vec<_>>(),
    );
    let head =
        format!(r#"{{"readings":[{{"device_id":"dev-00042","seq":1,"ts":"{ts}","metrics":{{"#);
    let tail = "}}]}";
    let many_names = fill(&head, &|i| format!(r#""m{i}":1"#), ",", tail);
    let many_readings = fill(
        r#"{"readings":["#,
        &|i| reading(i, &ts, r#""a":1"#),
        ",",
        "]}",
    );
    let long_device_id = fill(
        r#"{"readings":[{"device_id":""#,
        &|_| "d".repeat(1024),
        "",
        &format!(r#"","seq":1,"ts":"{ts}","metrics":{{"a":1}}}}]}}"#),
    );
    let long_metric_name = fill(
        &(head.clone() + "\""),
        &|_| "n".repeat(1024),
        "",
        "\":1}}]}",
    );
    let long_ts = fill(
        r#"{"readings":[{"device_id":"dev-00042","seq":1,"ts":""#,
        &|_| "2".repeat(1024),
        "",
        r#"","metrics":{"a":1}}]}"#,
    );
    let escaped_names = fill(&head, &|i| format!(r#""\u006d{i}":1"#), ",", tail);
    let deep_nesting = fill(&(head.clone() + r#""a":"#), &|_| "[".into(), "", tail);
    let huge_number = fill(
        &(head.clone() + r#""a":1"#),
        &|_| "0".repeat(1024),
        "",
        tail,
    );
    let repeated_name = fill(&head, &|_| r#""a":1"#.into(), ",", tail);
    let unknown_fields = fill(
        r#"{"readings":[{"device_id":"dev-00042","seq":1,"#,
        &|i| format!(r#""x{i}":[1,2,3]"#),
        ",",
        r#"}]}"#,
    );
    let whitespace = fill(r#"{"readings":"#, &|_| " ".repeat(1024), "", "[]}");
    vec![
        ("normal_1000x32", normal),
        ("many_names", many_names),
        ("many_readings", many_readings),
        ("long_device_id", long_device_id),
        ("long_metric_name", long_metric_name),
        ("long_ts", long_ts),
        ("escaped_names", escaped_names),
        ("deep_nesting", deep_nesting),
        ("huge_number", huge_number),
        ("repeated_name", repeated_name),
        ("unknown_fields", unknown_fields),
        ("whitespace", whitespace),
    ]
}

/// Median time of `runs` parses of `body`.
fn median(body: &[u8], now: Timestamp, runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(parse(black_box(body), now));
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn bench(c: &mut Criterion) {
    let now = Timestamp::now();
    let bodies = bodies(now);
    assert!(
        parse(&bodies[0].1, now),
        "the normal body must be valid, or the bench measures the error path"
    );
    let mut group = c.benchmark_group("wire_adversarial");
    for (name, body) in &bodies {
        assert!(body.len() <= MAX_BODY_BYTES, "{name}: {} bytes", body.len());
        group.bench_function(*name, |b| b.iter(|| parse(black_box(body), now)));
    }
    group.finish();

    // Interleaved rounds so that machine noise hits every body alike.
    let mut sums = vec![Duration::ZERO; bodies.len()];
    for _ in 0..5 {
        for (i, (_, body)) in bodies.iter().enumerate() {
            sums[i] += median(body, now, 9);
        }
    }
    let normal = sums[0].as_secs_f64();
    println!(
        "\nwire_adversarial: median time as a ratio of normal_1000x32 (same run; target ≤ 2.0)"
    );
    for ((name, body), sum) in bodies.iter().zip(&sums) {
        println!(
            "  {name:<18} {:>8} bytes  {:>9.3} ms  {:>5.2}x  {}",
            body.len(),
            sum.as_secs_f64() / 5.0 * 1e3,
            sum.as_secs_f64() / normal,
            if parse(body, now) {
                "accepted"
            } else {
                "refused"
            }
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
