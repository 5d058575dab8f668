//! Measures the memory a [`SeriesSet`] really costs per series — resident
//! set growth, so allocator overhead and key text count — and checks it
//! against [`SeriesSet::memory_per_series`]. The analyzer's series cap is
//! derived from this figure (docs/queue-and-store.md). One test in this binary,
//! so nothing else allocates meanwhile.
#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use ha_analysis::{DetectorConfig, SeriesSet};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn resident_memory_per_series_with_analyzer_keys() {
    const N: usize = 50_000;
    let config = DetectorConfig::default();
    let mut set: SeriesSet<(String, String)> = SeriesSet::new(&config).unwrap();
    let before = rss_bytes();
    for i in 0..N {
        // Key text like the analyzer's: a device id and a metric name.
        let key = (
            format!("device-{:06}", i / 32),
            format!("metric-{:02}", i % 32),
        );
        set.feed(key, 1, 1.0).unwrap();
    }
    let per_series = (rss_bytes() - before) as f64 / N as f64;
    let estimate = set.memory_per_series() as f64;
    println!(
        "resident per series: {per_series:.0} bytes measured, {estimate:.0} estimated \
         (key text and allocator overhead not included)"
    );
    assert!(per_series > 0.8 * estimate, "{per_series} vs {estimate}");
    assert!(per_series < 2.0 * estimate, "{per_series} vs {estimate}");
    assert_eq!(set.len(), N);
}
