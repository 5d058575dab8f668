//! The Basic-auth header: any header value gives an answer, never a panic.
#![no_main]

use ha_core::ingest::DeviceKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = DeviceKeys::from_keys(vec![b"fuzz-key-0123456789abcdef0123456789".to_vec()]) {
        let _ = keys.verify(Some(data));
    }
});
