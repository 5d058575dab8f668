//! The SVG plot.

use std::fmt::Write as _;

use super::rate;
use crate::results::{RunResults, StepRow};

/// The plot: acknowledged readings/s (left axis, linear) and p99 ack
/// latency (right axis, log) against offered readings/s, ours and naive.
pub fn svg(r: &RunResults) -> String {
    const W: f64 = 820.0;
    const H: f64 = 440.0;
    const L: f64 = 80.0;
    const R: f64 = 80.0;
    const T: f64 = 40.0;
    const B: f64 = 60.0;
    let series: [(&str, &[StepRow], &str); 3] = [
        ("ours, end to end", &r.ours, "#1f5fbf"),
        ("ours, ingest alone", &r.ingest_only, "#2a9d3a"),
        ("naive composition", &r.naive, "#d9731a"),
    ];
    let max_x = series
        .iter()
        .flat_map(|(_, s, _)| s.iter().map(|x| x.offered_rps * x.batch as f64))
        .fold(1.0f64, f64::max);
    let max_y = series
        .iter()
        .flat_map(|(_, s, _)| s.iter().map(|x| x.acked_rps))
        .fold(max_x, f64::max);
    let x_max = nice(max_x);
    let y_max = nice(max_y);
    // p99 axis: log10 from 0.1 ms to 10 s.
    let (lat_lo, lat_hi) = (-1.0f64, 4.0f64);
    let px = |x: f64| L + x / x_max * (W - L - R);
    let py = |y: f64| H - B - y / y_max * (H - T - B);
    let pl = |ms: f64| {
        let l = ms.max(0.1).log10().clamp(lat_lo, lat_hi);
        H - B - (l - lat_lo) / (lat_hi - lat_lo) * (H - T - B)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Acknowledged readings/s and p99 ack latency against offered load ({})</text>"#,
        W / 2.0,
        xml(&r.started)
    );
    // Grid and axes.
    for i in 0..=5 {
        let fx = x_max * i as f64 / 5.0;
        let fy = y_max * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#eee"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(fx),
            T,
            H - B,
            H - B + 16.0,
            rate(fx)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#eee"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            L,
            py(fy),
            W - R,
            L - 6.0,
            py(fy) + 4.0,
            rate(fy)
        );
    }
    for e in -1..=4 {
        let ms = 10f64.powi(e);
        let label = if ms < 1.0 {
            format!("{ms}")
        } else {
            format!("{}", ms as u64)
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{label} ms</text>"#,
            W - R + 6.0,
            pl(ms) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        W - L - R,
        H - T - B
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">offered load (readings/s, one reading per request)</text>"#,
        (L + W - R) / 2.0,
        H - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {0}) rotate(-90)" text-anchor="middle">acknowledged readings/s (solid)</text>"#,
        (T + H - B) / 2.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({0} {1}) rotate(90)" text-anchor="middle">p99 ack latency, log scale (dashed)</text>"#,
        W - 12.0,
        (T + H - B) / 2.0
    );
    // The knee bound.
    let _ = writeln!(
        s,
        r##"<line x1="{L}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#c00" stroke-dasharray="2 4"/><text x="{2}" y="{3:.1}" fill="#c00">p99 bound {4} ms</text>"##,
        pl(r.p99_bound_ms),
        W - R,
        L + 6.0,
        pl(r.p99_bound_ms) - 4.0,
        r.p99_bound_ms
    );
    for (k, (name, steps, color)) in series.iter().enumerate() {
        let pts: Vec<&StepRow> = steps.iter().filter(|x| x.batch == 1).collect();
        if pts.is_empty() {
            continue;
        }
        let thr: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.offered_rps), py(p.acked_rps)))
            .collect();
        let lat: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.offered_rps), pl(p.p99_ms)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            thr.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="6 4"/>"#,
            lat.join(" ")
        );
        for p in &pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(p.offered_rps),
                py(p.acked_rps)
            );
        }
        let ly = T + 16.0 + k as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{color}" stroke-width="2"/><text x="{3}" y="{4}">{name}</text>"#,
            L + 10.0,
            ly,
            L + 34.0,
            L + 40.0,
            ly + 4.0
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// A round axis maximum ≥ v: 1, 2 or 5 × 10^n.
pub(super) fn nice(v: f64) -> f64 {
    let v = v.max(1.0);
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

pub(super) fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
