//! The ingest body parser: any bytes give an answer, never a panic, and
//! what is accepted keeps the limits.
#![no_main]

use ha_core::wire::{IngestBody, MAX_METRICS, MAX_READINGS, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::now();
    if let Ok(body) = IngestBody::parse(data, now) {
        assert!(body.readings.len() <= MAX_READINGS);
        assert!(body.readings.iter().all(|r| r.metrics.len() <= MAX_METRICS));
    }
});
