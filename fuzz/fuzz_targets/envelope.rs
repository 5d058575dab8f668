//! The queue envelope decoder: what decodes re-encodes to something that
//! decodes to the same readings.
#![no_main]

use ha_core::wire::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        let again = Envelope::decode(&Envelope::encode(&envelope.readings))
            .expect("an encoded envelope decodes");
        assert_eq!(again.readings, envelope.readings);
    }
});
