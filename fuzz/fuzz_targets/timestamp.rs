//! The RFC 3339 timestamp parser: what parses prints back to itself.
#![no_main]

use ha_core::wire::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(ts) = Timestamp::parse(text)
    {
        assert_eq!(Timestamp::parse(&ts.to_string()), Ok(ts));
    }
});
